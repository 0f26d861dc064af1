-- Cheaper refusals under contention: cinema_lock_seats first checks the requested seats
-- without row locks and refuses at once when one is visibly taken, so a losing call
-- neither queues behind row locks nor writes (SELECT ... FOR UPDATE marks rows, which
-- makes the commit flush WAL). Locking is left to calls that can succeed, and the
-- locked re-check still decides them.

CREATE OR REPLACE FUNCTION cinema_lock_seats(
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

    -- Refuse without locking when a seat is visibly taken: losers neither queue behind
    -- the winner's row locks nor write (so no commit flush). The locked re-check below
    -- still decides every hold that goes ahead.
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
