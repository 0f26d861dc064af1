-- Seat holds as SQL functions: each call is one statement, so one round trip and one
-- transaction. Every function locks the rows it may change in seat_id order, so
-- concurrent calls on overlapping seats queue up instead of deadlocking. Under READ
-- COMMITTED each statement in a function takes a fresh snapshot, so the checks after
-- the locking PERFORM see the latest committed state of the rows this call now owns.

-- Holds every requested seat for p_booking_id, or none. Outcome rows:
--   'showtime_not_found' | 'showtime_started'   (one row, seat columns NULL)
--   'unknown' / 'unavailable'                   (the offending seats; nothing changed)
--   'held'                                       (every requested seat, with its price)
-- A seat is lockable when available, when its hold has expired (lazy expiry), or when
-- this booking already holds it (an idempotent retry, which refreshes the expiry).
CREATE FUNCTION cinema_lock_seats(
    p_showtime_id uuid, p_seat_ids text[], p_booking_id uuid, p_ttl_seconds integer)
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

    -- A priceless seat is a catalog bug: fail the whole call rather than hold it.
    IF EXISTS (SELECT 1 FROM showtime_seats s
                WHERE s.showtime_id = p_showtime_id AND s.seat_id = ANY (p_seat_ids)
                  AND NOT EXISTS (SELECT 1 FROM showtime_prices p
                                   WHERE p.showtime_id = s.showtime_id AND p.category = s.category)) THEN
        RAISE EXCEPTION 'showtime % has seats without a price', p_showtime_id;
    END IF;

    RETURN QUERY
        WITH held AS (
            UPDATE showtime_seats s
               SET status = 'held', booking_id = p_booking_id, hold_expires_at = v_expires_at
             WHERE s.showtime_id = p_showtime_id AND s.seat_id = ANY (p_seat_ids)
            RETURNING s.seat_id, s.row_label, s.seat_number, s.category)
        SELECT 'held'::text, h.seat_id, h.row_label, h.seat_number, h.category,
               p.amount_minor, p.currency, v_expires_at
          FROM held h
          JOIN showtime_prices p ON p.showtime_id = p_showtime_id AND p.category = h.category
         ORDER BY h.seat_id;
END
$$;

-- Books the requested seats if this booking holds (or already booked) every one of
-- them, even past the hold's expiry: a hold still owned by the booking was not taken.
-- Outcome rows: 'showtime_not_found' | 'unavailable' (offending seats, nothing changed)
-- | 'booked' (every requested seat).
CREATE FUNCTION cinema_confirm_seats(p_showtime_id uuid, p_booking_id uuid, p_seat_ids text[])
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
                              AND s.booking_id = p_booking_id AND s.status IN ('held', 'booked'))
         ORDER BY r.seat_id;
    IF FOUND THEN
        RETURN;
    END IF;

    UPDATE showtime_seats s
       SET status = 'booked', hold_expires_at = NULL
     WHERE s.showtime_id = p_showtime_id AND s.seat_id = ANY (p_seat_ids) AND s.status = 'held';

    RETURN QUERY SELECT 'booked'::text, r.seat_id FROM unnest(p_seat_ids) AS r(seat_id) ORDER BY r.seat_id;
END
$$;

-- Frees the seats this booking holds (never the ones it booked). Outcome rows:
-- 'showtime_not_found' | 'released' (one per freed seat; none when nothing was held).
CREATE FUNCTION cinema_release_seats(p_showtime_id uuid, p_booking_id uuid)
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
               SET status = 'available', booking_id = NULL, hold_expires_at = NULL
             WHERE s.showtime_id = p_showtime_id AND s.booking_id = p_booking_id AND s.status = 'held'
            RETURNING s.seat_id)
        SELECT 'released'::text, r.seat_id FROM released r ORDER BY r.seat_id;
END
$$;
