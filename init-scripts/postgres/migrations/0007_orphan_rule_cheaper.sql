-- The no-orphan rule of 0006, made cheap enough for a rush with the rule on (the
-- production default). Measured with scripts/bench --orphan-rule (BENCHMARKS.md): 0006
-- ran at 13-17 bookings/s against 28-39 before it, because every hold that would strand
-- a seat asked cinema_clean_block_exists, which read and windowed the whole showtime
-- (~70 ms for a 10,000-seat hall here) while holding the hold's row locks, and the
-- holds of the same seats and their neighbours queued behind it. Two changes, the rule
-- itself unchanged:
--   1. cinema_clean_block_exists goes row by row and stops at the first row with a
--      clean block: ~1 ms when the hall has free seats (one row of ~100 seats decides),
--      up to ~110 ms for a nearly full hall (every row read).
--   2. cinema_lock_seats judges the rule first without locks, as it already refuses a
--      visibly taken seat, and asks the clean-block question there; under the locks it
--      judges again and reuses that answer.

CREATE OR REPLACE FUNCTION cinema_clean_block_exists(p_showtime_id uuid, p_screen_id uuid, p_count integer)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_row text;
BEGIN
    -- The rows in order, each found by one index probe (screen_id, row_label, position).
    SELECT min(ss.row_label) INTO v_row FROM screen_seats ss WHERE ss.screen_id = p_screen_id;
    WHILE v_row IS NOT NULL LOOP
        IF EXISTS (
            -- One pass over the row in position order: a block of p_count usable seats
            -- starting here (positions are unique, so p_count usable seats in the
            -- p_count positions from here are a whole block), and the seats one and two
            -- places either side of it (a neighbour exists only at the position next to
            -- it; lag/lead find it when it does).
            SELECT 1
              FROM (SELECT count(*) FILTER (WHERE b.free AND b.ordinary) OVER (
                               ORDER BY b.position RANGE BETWEEN CURRENT ROW AND p_count - 1 FOLLOWING) AS usable,
                           lag(b.position, 1) OVER o = b.position - 1 AND lag(b.free, 1) OVER o AS l1_free,
                           lag(b.position, 2) OVER o = b.position - 2 AND lag(b.free, 2) OVER o AS l2_free,
                           lead(b.position, p_count) OVER o = b.position + p_count
                               AND lead(b.free, p_count) OVER o AS r1_free,
                           lead(b.position, p_count + 1) OVER o = b.position + p_count + 1
                               AND lead(b.free, p_count + 1) OVER o AS r2_free
                      FROM (SELECT ss.position, NOT ss.accessible AS ordinary,
                                   (s.status = 'available'
                                    OR (s.status = 'held' AND s.hold_expires_at <= now())) AS free
                              FROM screen_seats ss
                              JOIN showtime_seats s ON s.showtime_id = p_showtime_id AND s.seat_id = ss.seat_id
                             WHERE ss.screen_id = p_screen_id AND ss.row_label = v_row) b
                    WINDOW o AS (ORDER BY b.position)) w
             WHERE w.usable = p_count
               -- Taking the block strands the seat before it (its other side taken) or
               -- the seat after it: not a clean block.
               AND NOT (coalesce(w.l1_free, false) AND NOT coalesce(w.l2_free, false))
               AND NOT (coalesce(w.r1_free, false) AND NOT coalesce(w.r2_free, false))) THEN
            RETURN true;
        END IF;
        SELECT min(ss.row_label) INTO v_row FROM screen_seats ss WHERE ss.screen_id = p_screen_id AND ss.row_label > v_row;
    END LOOP;
    RETURN false;
END
$$;

-- The requested seats p_booking_id cannot hold: unknown ones, and those neither
-- available, nor held past their expiry, nor already this booking's. Asked twice by a
-- hold: before its locks (a visibly taken seat is refused at once) and under them (what
-- decides).
CREATE FUNCTION cinema_unlockable_seats(p_showtime_id uuid, p_seat_ids text[], p_booking_id uuid)
RETURNS TABLE (outcome cinema_lock_outcome, seat_id text)
LANGUAGE sql AS $$
    SELECT 'unknown'::cinema_lock_outcome, r.seat_id
      FROM unnest(p_seat_ids) AS r(seat_id)
     WHERE NOT EXISTS (SELECT 1 FROM showtime_seats s
                        WHERE s.showtime_id = p_showtime_id AND s.seat_id = r.seat_id)
    UNION ALL
    SELECT 'unavailable'::cinema_lock_outcome, s.seat_id
      FROM showtime_seats s
     WHERE s.showtime_id = p_showtime_id AND s.seat_id = ANY (p_seat_ids)
       AND NOT (s.status = 'available'
                OR (s.status = 'held' AND (s.hold_expires_at <= now() OR s.booking_id = p_booking_id)));
$$;

-- The hold judges the rule once on what is visible before it locks anything (refusing
-- there as it refuses a visibly taken seat), so the clean-block question is normally
-- asked without locks; under the locks the rule is judged again on the locked seats, and
-- the clean-block answer is reused, or asked only when the first look found nothing to
-- strand. Otherwise as in 0006.
CREATE OR REPLACE FUNCTION cinema_lock_seats(
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
