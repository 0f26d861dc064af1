-- A booking whose seats were released can never hold seats afterwards.
--
-- Found by the replica chaos test (CI, 2026-12-05): a hold of a booking the booking
-- service never wrote kept two seats until its expiry. cinema_lock_seats runs as one
-- autocommit statement, and PostgreSQL finishes a statement whose client has gone (a
-- cinema replica killed mid-call, a caller's deadline). The booking service, not
-- knowing whether the lock took, released the booking's seats at once; the release
-- ran while the lock statement still queued for its row locks, found nothing held and
-- returned, and then the lock committed. Nothing recorded that hold any more.
--
-- Now a lock and a release of the same booking take the same transaction-level
-- advisory lock first, so they run one after the other, never interleaved, and a
-- release leaves a record (released_bookings) that refuses any later lock of that
-- booking ('released'). Booking ids are never reused for a second hold, so the record
-- only ever refuses such a late lock. Records are dropped after a day by the hold
-- sweeper: no statement waits that long.

ALTER TYPE cinema_lock_outcome ADD VALUE 'released';

CREATE TABLE released_bookings (
    booking_id uuid PRIMARY KEY,
    released_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX released_bookings_released_at_idx ON released_bookings (released_at);

-- Serialises the seat calls of one booking (two-key form: its own key space, apart
-- from the migrator's one-key lock). Held until the transaction ends.
CREATE FUNCTION cinema_booking_turn(p_booking_id uuid) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(1835365733, hashtext(p_booking_id::text));
$$;

ALTER FUNCTION cinema_lock_seats(uuid, text[], uuid, integer, integer, boolean)
    RENAME TO cinema_lock_seats_unfenced;
ALTER FUNCTION cinema_release_seats(uuid, uuid) RENAME TO cinema_release_seats_unfenced;

CREATE FUNCTION cinema_lock_seats(
    p_showtime_id uuid, p_seat_ids text[], p_booking_id uuid, p_ttl_seconds integer,
    p_cutoff_seconds integer, p_no_orphans boolean DEFAULT false)
RETURNS TABLE (
    outcome cinema_lock_outcome, seat_id text, row_label text, seat_number integer, category text,
    amount_minor bigint, currency text, hold_expires_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM cinema_booking_turn(p_booking_id);
    -- Each statement below reads a fresh snapshot (a volatile function under READ
    -- COMMITTED): a release that held the turn before us is visible here.
    IF EXISTS (SELECT 1 FROM released_bookings r WHERE r.booking_id = p_booking_id) THEN
        RETURN QUERY SELECT 'released'::cinema_lock_outcome, NULL::text, NULL::text, NULL::integer,
            NULL::text, NULL::bigint, NULL::text, NULL::timestamptz;
        RETURN;
    END IF;
    RETURN QUERY
        SELECT * FROM cinema_lock_seats_unfenced(
            p_showtime_id, p_seat_ids, p_booking_id, p_ttl_seconds, p_cutoff_seconds, p_no_orphans);
END
$$;

CREATE FUNCTION cinema_release_seats(p_showtime_id uuid, p_booking_id uuid)
RETURNS TABLE (outcome cinema_free_outcome, seat_id text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    -- A lock of this booking still running commits before we go on, so its seats are
    -- visible to the release below.
    PERFORM cinema_booking_turn(p_booking_id);
    INSERT INTO released_bookings (booking_id) VALUES (p_booking_id) ON CONFLICT DO NOTHING;
    RETURN QUERY SELECT * FROM cinema_release_seats_unfenced(p_showtime_id, p_booking_id);
END
$$;

-- Forgets release records older than a day, at most p_limit of them; returns how many.
CREATE FUNCTION cinema_forget_released_bookings(p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_count integer;
BEGIN
    DELETE FROM released_bookings r
     WHERE r.booking_id IN (SELECT o.booking_id FROM released_bookings o
                             WHERE o.released_at < now() - interval '1 day'
                             LIMIT p_limit);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
