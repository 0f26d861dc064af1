-- Live seat changes: every visible change of a seat is announced on the channel
-- cinema_seat_changes by a trigger, so the NOTIFY belongs to the changing transaction
-- and is delivered at its commit (never for a rolled-back change), in commit order.
-- Payload: showtime_id|seat_id|status|reason|changed_at (microseconds since the epoch).
-- reason: held, booked, released, expired (a lapsed hold freed), blocked, unblocked.

CREATE FUNCTION cinema_notify_seat_change() RETURNS trigger
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
    PERFORM pg_notify('cinema_seat_changes', concat_ws('|', NEW.showtime_id, NEW.seat_id, NEW.status, v_reason,
        (extract(epoch FROM clock_timestamp()) * 1000000)::bigint));
    RETURN NULL;
END
$$;

-- Extending a hold or re-locking it for the same booking changes nothing a seat map
-- shows, so it stays silent.
CREATE TRIGGER showtime_seats_notify_change
    AFTER UPDATE ON showtime_seats
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.booking_id IS DISTINCT FROM NEW.booking_id)
    EXECUTE FUNCTION cinema_notify_seat_change();

CREATE INDEX showtime_seats_hold_expiry_idx ON showtime_seats (hold_expires_at) WHERE status = 'held';

-- Frees up to p_limit lapsed holds (their seats were already free for others; this
-- makes it visible and announces it). Rows another transaction is changing are skipped
-- rather than waited for, so the sweeper never queues behind or deadlocks with a hold.
CREATE FUNCTION cinema_release_expired_holds(p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_count integer;
BEGIN
    WITH expired AS (
        SELECT s.showtime_id, s.seat_id FROM showtime_seats s
         WHERE s.status = 'held' AND s.hold_expires_at <= now()
         ORDER BY s.showtime_id, s.seat_id
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED)
    UPDATE showtime_seats s
       SET status = 'available', booking_id = NULL, hold_expires_at = NULL, hold_extended = false
      FROM expired e
     WHERE s.showtime_id = e.showtime_id AND s.seat_id = e.seat_id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
