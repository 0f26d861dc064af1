-- Seat changes also say who holds the seat and until when, so a process can keep a
-- replica of who holds what (the cinema service's seat board) from the notifications
-- alone. Payload: showtime_id|seat_id|status|reason|changed_at|booking_id|hold_expires_at
-- (both times in microseconds since the epoch; the last two empty when not held/booked).

CREATE OR REPLACE FUNCTION cinema_notify_seat_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_reason text := CASE
        WHEN NEW.status = 'held' THEN 'held'
        WHEN NEW.status = 'booked' THEN 'booked'
        WHEN NEW.status = 'blocked' THEN 'blocked'
        WHEN OLD.status = 'blocked' THEN 'unblocked'
        WHEN OLD.status = 'held' AND OLD.hold_expires_at <= now() THEN 'expired'
        ELSE 'released'
    END;
BEGIN
    -- concat_ws skips NULLs, so absent values are written as empty fields instead.
    PERFORM pg_notify('cinema_seat_changes', concat_ws('|', NEW.showtime_id, NEW.seat_id, NEW.status, v_reason,
        (extract(epoch FROM clock_timestamp()) * 1000000)::bigint,
        coalesce(NEW.booking_id::text, ''),
        coalesce(((extract(epoch FROM NEW.hold_expires_at) * 1000000)::bigint)::text, '')));
    RETURN NULL;
END
$$;
