-- When each hold was taken, so that the booking service can find the holds whose
-- booking it never wrote (its process died between LockSeats and writing the
-- booking) by asking cinema, instead of writing a record of every hold before
-- LockSeats: ListHolds lists live holds older than a grace, and the booking service
-- releases those it has no booking for. Holds taken before this migration have no
-- held_at and are never listed: they lapse at their expiry as before.
--
-- held_at means something only while the seat is held. cinema_lock_seats_unfenced is
-- 0007's cinema_lock_seats (renamed by 0008) with held_at set by the hold's update.

ALTER TABLE showtime_seats ADD COLUMN held_at timestamptz;

CREATE OR REPLACE FUNCTION cinema_lock_seats_unfenced(
    p_showtime_id uuid, p_seat_ids text[], p_booking_id uuid, p_ttl_seconds integer,
    p_cutoff_seconds integer, p_no_orphans boolean DEFAULT false)
RETURNS TABLE (
    outcome cinema_lock_outcome, seat_id text, row_label text, seat_number integer, category text,
    amount_minor bigint, currency text, hold_expires_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_starts_at timestamptz;
    v_screen_id uuid;
    v_expires_at timestamptz := now() + make_interval(secs => p_ttl_seconds);
    v_lock_ids text[] := p_seat_ids;
    v_stranded text[];
    -- Whether a clean block exists, once asked (NULL: not asked yet).
    v_clean_block boolean;
BEGIN
    SELECT st.starts_at, st.screen_id INTO v_starts_at, v_screen_id FROM showtimes st WHERE st.id = p_showtime_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'showtime_not_found'::cinema_lock_outcome, NULL::text, NULL::text, NULL::integer,
            NULL::text, NULL::bigint, NULL::text, NULL::timestamptz;
        RETURN;
    END IF;
    IF v_starts_at <= now() THEN
        RETURN QUERY SELECT 'showtime_started'::cinema_lock_outcome, NULL::text, NULL::text, NULL::integer,
            NULL::text, NULL::bigint, NULL::text, NULL::timestamptz;
        RETURN;
    END IF;
    IF v_starts_at <= now() + make_interval(secs => p_cutoff_seconds) THEN
        RETURN QUERY SELECT 'holds_closed'::cinema_lock_outcome, NULL::text, NULL::text, NULL::integer,
            NULL::text, NULL::bigint, NULL::text, v_starts_at - make_interval(secs => p_cutoff_seconds);
        RETURN;
    END IF;

    -- Refuse without locking when a seat is visibly taken.
    RETURN QUERY
        SELECT u.outcome, u.seat_id, NULL::text, NULL::integer, NULL::text, NULL::bigint, NULL::text,
               NULL::timestamptz
          FROM cinema_unlockable_seats(p_showtime_id, p_seat_ids, p_booking_id) u;
    IF FOUND THEN
        RETURN;
    END IF;

    IF p_no_orphans THEN
        SELECT p_seat_ids || array_agg(n.seat_id) INTO v_lock_ids
          FROM screen_seats n
         WHERE n.screen_id = v_screen_id
           AND EXISTS (SELECT 1 FROM screen_seats w
                        WHERE w.screen_id = v_screen_id AND w.seat_id = ANY (p_seat_ids)
                          AND w.row_label = n.row_label
                          AND n.position BETWEEN w.position - 2 AND w.position + 2);
        -- The rule judged first on what is visible, without locks, like a visibly taken
        -- seat: a hold that would strand a seat while a clean block exists is refused
        -- here, and the showtime-wide clean-block question is asked before any lock is
        -- taken (its answer may be stale; it only decides whether the rule gives way).
        SELECT array_agg(o.seat_id ORDER BY o.seat_id) INTO v_stranded
          FROM cinema_stranded_seats(p_showtime_id, v_screen_id, p_seat_ids, v_lock_ids) o;
        IF v_stranded IS NOT NULL THEN
            v_clean_block := cinema_clean_block_exists(p_showtime_id, v_screen_id, cardinality(p_seat_ids));
            IF v_clean_block THEN
                RETURN QUERY
                    SELECT 'orphan'::cinema_lock_outcome, o.seat_id, NULL::text, NULL::integer, NULL::text,
                           NULL::bigint, NULL::text, NULL::timestamptz
                      FROM unnest(v_stranded) AS o(seat_id);
                RETURN;
            END IF;
        END IF;
    END IF;

    PERFORM 1 FROM showtime_seats s
     WHERE s.showtime_id = p_showtime_id AND s.seat_id = ANY (v_lock_ids)
     ORDER BY s.seat_id
       FOR UPDATE;

    RETURN QUERY
        SELECT u.outcome, u.seat_id, NULL::text, NULL::integer, NULL::text, NULL::bigint, NULL::text,
               NULL::timestamptz
          FROM cinema_unlockable_seats(p_showtime_id, p_seat_ids, p_booking_id) u;
    IF FOUND THEN
        RETURN;
    END IF;

    IF p_no_orphans THEN
        SELECT array_agg(o.seat_id ORDER BY o.seat_id) INTO v_stranded
          FROM cinema_stranded_seats(p_showtime_id, v_screen_id, p_seat_ids, v_lock_ids) o;
        -- Decided under the locks: a hold racing this one may have changed the
        -- neighbours since the check above.
        IF v_stranded IS NOT NULL
           AND coalesce(v_clean_block,
                        cinema_clean_block_exists(p_showtime_id, v_screen_id, cardinality(p_seat_ids))) THEN
            RETURN QUERY
                SELECT 'orphan'::cinema_lock_outcome, o.seat_id, NULL::text, NULL::integer, NULL::text,
                       NULL::bigint, NULL::text, NULL::timestamptz
                  FROM unnest(v_stranded) AS o(seat_id);
            RETURN;
        END IF;
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
                   -- A repeat of a live hold by its booking is the same hold.
                   held_at = CASE WHEN s.status = 'held' AND s.booking_id = p_booking_id
                                       AND s.hold_expires_at > now()
                                  THEN coalesce(s.held_at, now()) ELSE now() END,
                   hold_extended = (s.status = 'held' AND s.booking_id = p_booking_id AND s.hold_extended)
             WHERE s.showtime_id = p_showtime_id AND s.seat_id = ANY (p_seat_ids)
            RETURNING s.seat_id, s.row_label, s.seat_number, s.category)
        SELECT 'held'::cinema_lock_outcome, h.seat_id, h.row_label, h.seat_number, h.category,
               p.amount_minor, p.currency, v_expires_at
          FROM held h
          JOIN showtime_prices p ON p.showtime_id = p_showtime_id AND p.category = h.category
         ORDER BY h.seat_id;
END
$$;
