-- Hold rules on top of 0002: a sales cutoff before the show, confirmation that
-- re-acquires seats a lapsed hold left free, and one ExtendHold per hold.

-- The booking that last held a seat survives the seat's release (by ReleaseSeats or a
-- sweeper), so a late confirmation can tell "still free since I held it" from "taken
-- by someone else in the meantime".
ALTER TABLE showtime_seats
    ADD COLUMN last_booking_id uuid,
    ADD COLUMN hold_extended boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT showtime_seats_extended_only_when_held CHECK (NOT hold_extended OR status = 'held');
UPDATE showtime_seats SET last_booking_id = booking_id WHERE booking_id IS NOT NULL;

DROP FUNCTION cinema_lock_seats(uuid, text[], uuid, integer);

-- As in 0002, plus: 'holds_closed' (one row) when the showtime starts within
-- p_cutoff_seconds. A repeated lock by the same booking keeps its extension flag.
CREATE FUNCTION cinema_lock_seats(
    p_showtime_id uuid, p_seat_ids text[], p_booking_id uuid, p_ttl_seconds integer,
    p_cutoff_seconds integer)
RETURNS TABLE (
    outcome text, seat_id text, row_label text, seat_number integer, category text,
    amount_minor bigint, currency text, hold_expires_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_starts_at timestamptz;
    v_expires_at timestamptz := now() + make_interval(secs => p_ttl_seconds);
BEGIN
    SELECT st.starts_at INTO v_starts_at FROM showtimes st WHERE st.id = p_showtime_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'showtime_not_found'::text, NULL::text, NULL::text, NULL::integer,
            NULL::text, NULL::bigint, NULL::text, NULL::timestamptz;
        RETURN;
    END IF;
    IF v_starts_at <= now() THEN
        RETURN QUERY SELECT 'showtime_started'::text, NULL::text, NULL::text, NULL::integer,
            NULL::text, NULL::bigint, NULL::text, NULL::timestamptz;
        RETURN;
    END IF;
    IF v_starts_at <= now() + make_interval(secs => p_cutoff_seconds) THEN
        RETURN QUERY SELECT 'holds_closed'::text, NULL::text, NULL::text, NULL::integer,
            NULL::text, NULL::bigint, NULL::text, v_starts_at - make_interval(secs => p_cutoff_seconds);
        RETURN;
    END IF;

    PERFORM 1 FROM showtime_seats s
     WHERE s.showtime_id = p_showtime_id AND s.seat_id = ANY (p_seat_ids)
     ORDER BY s.seat_id
       FOR UPDATE;

    RETURN QUERY
        SELECT 'unknown'::text, r.seat_id, NULL::text, NULL::integer, NULL::text, NULL::bigint,
               NULL::text, NULL::timestamptz
          FROM unnest(p_seat_ids) AS r(seat_id)
         WHERE NOT EXISTS (SELECT 1 FROM showtime_seats s
                            WHERE s.showtime_id = p_showtime_id AND s.seat_id = r.seat_id)
        UNION ALL
        SELECT 'unavailable'::text, s.seat_id, NULL::text, NULL::integer, NULL::text, NULL::bigint,
               NULL::text, NULL::timestamptz
          FROM showtime_seats s
         WHERE s.showtime_id = p_showtime_id AND s.seat_id = ANY (p_seat_ids)
           AND NOT (s.status = 'available'
                    OR (s.status = 'held'
                        AND (s.hold_expires_at <= now() OR s.booking_id = p_booking_id)));
    IF FOUND THEN
        RETURN;
    END IF;

    IF EXISTS (SELECT 1 FROM showtime_seats s
                WHERE s.showtime_id = p_showtime_id AND s.seat_id = ANY (p_seat_ids)
                  AND NOT EXISTS (SELECT 1 FROM showtime_prices p
                                   WHERE p.showtime_id = s.showtime_id AND p.category = s.category)) THEN
        RAISE EXCEPTION 'showtime % has seats without a price', p_showtime_id;
    END IF;

    RETURN QUERY
        WITH held AS (
            UPDATE showtime_seats s
               SET status = 'held', booking_id = p_booking_id, last_booking_id = p_booking_id,
                   hold_expires_at = v_expires_at,
                   hold_extended = (s.status = 'held' AND s.booking_id = p_booking_id AND s.hold_extended)
             WHERE s.showtime_id = p_showtime_id AND s.seat_id = ANY (p_seat_ids)
            RETURNING s.seat_id, s.row_label, s.seat_number, s.category)
        SELECT 'held'::text, h.seat_id, h.row_label, h.seat_number, h.category,
               p.amount_minor, p.currency, v_expires_at
          FROM held h
          JOIN showtime_prices p ON p.showtime_id = p_showtime_id AND p.category = h.category
         ORDER BY h.seat_id;
END
$$;

-- Books the requested seats if, for every one of them, this booking holds it (even
-- past the expiry: nobody took it), already booked it, or held it last and it is free
-- again (released after its hold lapsed): such seats are re-acquired. If any seat was
-- taken by another booking in the meantime, nothing changes.
CREATE OR REPLACE FUNCTION cinema_confirm_seats(p_showtime_id uuid, p_booking_id uuid, p_seat_ids text[])
RETURNS TABLE (outcome text, seat_id text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM showtimes st WHERE st.id = p_showtime_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'showtime_not_found'::text, NULL::text;
        RETURN;
    END IF;

    PERFORM 1 FROM showtime_seats s
     WHERE s.showtime_id = p_showtime_id AND s.seat_id = ANY (p_seat_ids)
     ORDER BY s.seat_id
       FOR UPDATE;

    RETURN QUERY
        SELECT 'unavailable'::text, r.seat_id
          FROM unnest(p_seat_ids) AS r(seat_id)
         WHERE NOT EXISTS (SELECT 1 FROM showtime_seats s
                            WHERE s.showtime_id = p_showtime_id AND s.seat_id = r.seat_id
                              AND ((s.booking_id = p_booking_id AND s.status IN ('held', 'booked'))
                                   OR (s.status = 'available' AND s.last_booking_id = p_booking_id)))
         ORDER BY r.seat_id;
    IF FOUND THEN
        RETURN;
    END IF;

    UPDATE showtime_seats s
       SET status = 'booked', booking_id = p_booking_id, hold_expires_at = NULL, hold_extended = false
     WHERE s.showtime_id = p_showtime_id AND s.seat_id = ANY (p_seat_ids) AND s.status <> 'booked';

    RETURN QUERY SELECT 'booked'::text, r.seat_id FROM unnest(p_seat_ids) AS r(seat_id) ORDER BY r.seat_id;
END
$$;

-- Same as 0002, also clearing the extension flag (the constraint above requires it).
CREATE OR REPLACE FUNCTION cinema_release_seats(p_showtime_id uuid, p_booking_id uuid)
RETURNS TABLE (outcome text, seat_id text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM showtimes st WHERE st.id = p_showtime_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'showtime_not_found'::text, NULL::text;
        RETURN;
    END IF;

    PERFORM 1 FROM showtime_seats s
     WHERE s.showtime_id = p_showtime_id AND s.booking_id = p_booking_id AND s.status = 'held'
     ORDER BY s.seat_id
       FOR UPDATE;

    RETURN QUERY
        WITH released AS (
            UPDATE showtime_seats s
               SET status = 'available', booking_id = NULL, hold_expires_at = NULL, hold_extended = false
             WHERE s.showtime_id = p_showtime_id AND s.booking_id = p_booking_id AND s.status = 'held'
            RETURNING s.seat_id)
        SELECT 'released'::text, r.seat_id FROM released r ORDER BY r.seat_id;
END
$$;

-- Pushes this booking's live hold back by p_extension_seconds, once per hold.
-- Outcome rows: 'showtime_not_found' | 'no_live_hold' (nothing held, or the hold has
-- lapsed) | 'already_extended' | 'extended' (one per seat, with the new expiry).
CREATE FUNCTION cinema_extend_hold(p_showtime_id uuid, p_booking_id uuid, p_extension_seconds integer)
RETURNS TABLE (outcome text, seat_id text, hold_expires_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM showtimes st WHERE st.id = p_showtime_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'showtime_not_found'::text, NULL::text, NULL::timestamptz;
        RETURN;
    END IF;

    PERFORM 1 FROM showtime_seats s
     WHERE s.showtime_id = p_showtime_id AND s.booking_id = p_booking_id AND s.status = 'held'
     ORDER BY s.seat_id
       FOR UPDATE;

    IF NOT EXISTS (SELECT 1 FROM showtime_seats s
                    WHERE s.showtime_id = p_showtime_id AND s.booking_id = p_booking_id
                      AND s.status = 'held')
       OR EXISTS (SELECT 1 FROM showtime_seats s
                   WHERE s.showtime_id = p_showtime_id AND s.booking_id = p_booking_id
                     AND s.status = 'held' AND s.hold_expires_at <= now()) THEN
        RETURN QUERY SELECT 'no_live_hold'::text, NULL::text, NULL::timestamptz;
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM showtime_seats s
                WHERE s.showtime_id = p_showtime_id AND s.booking_id = p_booking_id
                  AND s.status = 'held' AND s.hold_extended) THEN
        RETURN QUERY SELECT 'already_extended'::text, NULL::text, NULL::timestamptz;
        RETURN;
    END IF;

    RETURN QUERY
        WITH extended AS (
            UPDATE showtime_seats s
               SET hold_expires_at = s.hold_expires_at + make_interval(secs => p_extension_seconds),
                   hold_extended = true
             WHERE s.showtime_id = p_showtime_id AND s.booking_id = p_booking_id AND s.status = 'held'
            RETURNING s.seat_id, s.hold_expires_at)
        SELECT 'extended'::text, e.seat_id, e.hold_expires_at FROM extended e ORDER BY e.seat_id;
END
$$;
