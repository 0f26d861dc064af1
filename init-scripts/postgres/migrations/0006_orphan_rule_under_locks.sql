-- The no-orphan rule moves into cinema_lock_seats, decided under the row locks of the
-- hold, and every seat function answers with a typed outcome (an enum per function
-- family) instead of a text tag.
--
-- Before, the service read the requested rows, judged the rule, and only then called
-- cinema_lock_seats: two holds racing in one row (A1-A2 and A4-A5) could both pass the
-- rule on the same snapshot and together strand A3, and every hold cost two round
-- trips. Now the rule is evaluated inside the one statement of the hold, after the
-- seats it looks at are locked.
--
-- The rule: a row splits into sections at aisles and gaps (positions that are not
-- consecutive). A free seat (available, or held past its expiry) is an orphan when no
-- seat next to it in its section is free. A hold may not create an orphan, unless no
-- block of the party's size anywhere in the showtime (free, adjacent, none of them an
-- accessible space) would create none. Seat suggestions rank blocks by the same rule
-- (services/cinema/src/seating.rs), so a suggested block is always holdable.

CREATE TYPE cinema_lock_outcome AS ENUM (
    'showtime_not_found', 'showtime_started', 'holds_closed', 'unknown', 'unavailable', 'orphan', 'held');
CREATE TYPE cinema_confirm_outcome AS ENUM ('showtime_not_found', 'unavailable', 'booked');
CREATE TYPE cinema_free_outcome AS ENUM ('showtime_not_found', 'released');
CREATE TYPE cinema_extend_outcome AS ENUM ('showtime_not_found', 'no_live_hold', 'already_extended', 'extended');
CREATE TYPE cinema_staff_outcome AS ENUM ('showtime_not_found', 'unknown', 'unavailable', 'blocked', 'unblocked');

-- A function's result type cannot be changed in place.
DROP FUNCTION cinema_lock_seats(uuid, text[], uuid, integer, integer);
DROP FUNCTION cinema_confirm_seats(uuid, uuid, text[]);
DROP FUNCTION cinema_release_seats(uuid, uuid);
DROP FUNCTION cinema_cancel_seats(uuid, uuid);
DROP FUNCTION cinema_extend_hold(uuid, uuid, integer);
DROP FUNCTION cinema_block_seats(uuid, text[]);
DROP FUNCTION cinema_unblock_seats(uuid, text[]);

-- The free seats that taking p_taking would leave alone, judged on the seats p_near
-- (the taken seats and everything up to two places either side: whether a seat is an
-- orphan depends on its two neighbours, and only a neighbour of a taken seat can
-- become one). The caller has locked p_near, so the answer stays true until commit.
CREATE FUNCTION cinema_stranded_seats(p_showtime_id uuid, p_screen_id uuid, p_taking text[], p_near text[])
RETURNS TABLE (seat_id text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
        WITH near AS (
            SELECT ss.seat_id, ss.row_label, ss.position,
                   (s.status = 'available' OR (s.status = 'held' AND s.hold_expires_at <= now())) AS free_before
              FROM showtime_seats s
              JOIN screen_seats ss ON ss.screen_id = p_screen_id AND ss.seat_id = s.seat_id
             WHERE s.showtime_id = p_showtime_id AND s.seat_id = ANY (p_near)),
        seat AS (
            SELECT n.seat_id, n.row_label, n.position, n.free_before,
                   n.free_before AND NOT (n.seat_id = ANY (p_taking)) AS free_after
              FROM near n)
        SELECT x.seat_id
          FROM seat x
          LEFT JOIN seat l ON l.row_label = x.row_label AND l.position = x.position - 1
          LEFT JOIN seat r ON r.row_label = x.row_label AND r.position = x.position + 1
         WHERE x.free_after
           AND NOT coalesce(l.free_after, false) AND NOT coalesce(r.free_after, false)
           -- An orphan before the hold is not the hold's doing.
           AND (coalesce(l.free_before, false) OR coalesce(r.free_before, false))
         ORDER BY x.seat_id;
END
$$;

-- Whether some block of p_count free adjacent ordinary (not accessible) seats strands
-- nobody; if none does, the rule gives way ("no other choice for that party size").
-- Taking a block [p, p+n-1] can only strand p-1 (when p-2 is not free) or p+n (when
-- p+n+1 is not free). Reads the whole showtime without locks: only the rare hold that
-- would strand a seat asks, and a stale answer only decides whether the rule gives way.
CREATE FUNCTION cinema_clean_block_exists(p_showtime_id uuid, p_screen_id uuid, p_count integer)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    RETURN EXISTS (
        WITH seat AS MATERIALIZED (
            SELECT ss.row_label, ss.position, NOT ss.accessible AS ordinary,
                   (s.status = 'available' OR (s.status = 'held' AND s.hold_expires_at <= now())) AS free
              FROM showtime_seats s
              JOIN screen_seats ss ON ss.screen_id = p_screen_id AND ss.seat_id = s.seat_id
             WHERE s.showtime_id = p_showtime_id),
        block AS (
            -- Positions are unique in a row, so p_count usable seats in the p_count
            -- positions from here are a whole block.
            SELECT b.row_label, b.position,
                   count(*) FILTER (WHERE b.free AND b.ordinary) OVER (
                       PARTITION BY b.row_label ORDER BY b.position
                       RANGE BETWEEN CURRENT ROW AND p_count - 1 FOLLOWING) AS usable
              FROM seat b)
        SELECT 1
          FROM block w
          LEFT JOIN seat l1 ON l1.row_label = w.row_label AND l1.position = w.position - 1
          LEFT JOIN seat l2 ON l2.row_label = w.row_label AND l2.position = w.position - 2
          LEFT JOIN seat r1 ON r1.row_label = w.row_label AND r1.position = w.position + p_count
          LEFT JOIN seat r2 ON r2.row_label = w.row_label AND r2.position = w.position + p_count + 1
         WHERE w.usable = p_count
           AND NOT (coalesce(l1.free, false) AND NOT coalesce(l2.free, false))
           AND NOT (coalesce(r1.free, false) AND NOT coalesce(r2.free, false)));
END
$$;

-- Holds every requested seat for p_booking_id, or none. Outcome rows:
--   showtime_not_found | showtime_started | holds_closed (the showtime starts within
--                                 p_cutoff_seconds; one row, seat columns NULL but
--                                 hold_expires_at, the moment holds closed)
--   unknown / unavailable         (the offending seats; nothing changed)
--   orphan                        (with p_no_orphans: the seats the hold would strand;
--                                 nothing changed)
--   held                          (every requested seat, with its price)
-- A seat is lockable when available, when its hold has expired (lazy expiry), or when
-- this booking already holds it (an idempotent retry, which refreshes the expiry and
-- keeps its extension flag).
-- Refusals are cheap under contention: the requested seats are first checked without
-- row locks and the call refuses at once when one is visibly taken, so a losing call
-- neither queues behind row locks nor writes. Locking is left to calls that can
-- succeed, and the locked re-check still decides them.
-- With p_no_orphans the seats up to two places either side of each requested seat are
-- locked too (in the same seat_id order as every seat function, so still no deadlocks):
-- two holds that could together strand a seat always share a locked seat, so the second
-- waits for the first to commit and then judges the rule on what it left.
CREATE FUNCTION cinema_lock_seats(
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
        SELECT 'unknown'::cinema_lock_outcome, r.seat_id, NULL::text, NULL::integer, NULL::text,
               NULL::bigint, NULL::text, NULL::timestamptz
          FROM unnest(p_seat_ids) AS r(seat_id)
         WHERE NOT EXISTS (SELECT 1 FROM showtime_seats s
                            WHERE s.showtime_id = p_showtime_id AND s.seat_id = r.seat_id)
        UNION ALL
        SELECT 'unavailable'::cinema_lock_outcome, s.seat_id, NULL::text, NULL::integer, NULL::text,
               NULL::bigint, NULL::text, NULL::timestamptz
          FROM showtime_seats s
         WHERE s.showtime_id = p_showtime_id AND s.seat_id = ANY (p_seat_ids)
           AND NOT (s.status = 'available'
                    OR (s.status = 'held'
                        AND (s.hold_expires_at <= now() OR s.booking_id = p_booking_id)));
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
    END IF;

    PERFORM 1 FROM showtime_seats s
     WHERE s.showtime_id = p_showtime_id AND s.seat_id = ANY (v_lock_ids)
     ORDER BY s.seat_id
       FOR UPDATE;

    RETURN QUERY
        SELECT 'unknown'::cinema_lock_outcome, r.seat_id, NULL::text, NULL::integer, NULL::text,
               NULL::bigint, NULL::text, NULL::timestamptz
          FROM unnest(p_seat_ids) AS r(seat_id)
         WHERE NOT EXISTS (SELECT 1 FROM showtime_seats s
                            WHERE s.showtime_id = p_showtime_id AND s.seat_id = r.seat_id)
        UNION ALL
        SELECT 'unavailable'::cinema_lock_outcome, s.seat_id, NULL::text, NULL::integer, NULL::text,
               NULL::bigint, NULL::text, NULL::timestamptz
          FROM showtime_seats s
         WHERE s.showtime_id = p_showtime_id AND s.seat_id = ANY (p_seat_ids)
           AND NOT (s.status = 'available'
                    OR (s.status = 'held'
                        AND (s.hold_expires_at <= now() OR s.booking_id = p_booking_id)));
    IF FOUND THEN
        RETURN;
    END IF;

    IF p_no_orphans THEN
        SELECT array_agg(o.seat_id ORDER BY o.seat_id) INTO v_stranded
          FROM cinema_stranded_seats(p_showtime_id, v_screen_id, p_seat_ids, v_lock_ids) o;
        IF v_stranded IS NOT NULL
           AND cinema_clean_block_exists(p_showtime_id, v_screen_id, cardinality(p_seat_ids)) THEN
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

-- The functions below are those of 0002 and 0004 with typed outcomes; what they do is
-- unchanged (see there).

CREATE FUNCTION cinema_confirm_seats(p_showtime_id uuid, p_booking_id uuid, p_seat_ids text[])
RETURNS TABLE (outcome cinema_confirm_outcome, seat_id text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM showtimes st WHERE st.id = p_showtime_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'showtime_not_found'::cinema_confirm_outcome, NULL::text;
        RETURN;
    END IF;

    PERFORM 1 FROM showtime_seats s
     WHERE s.showtime_id = p_showtime_id AND s.seat_id = ANY (p_seat_ids)
     ORDER BY s.seat_id
       FOR UPDATE;

    RETURN QUERY
        SELECT 'unavailable'::cinema_confirm_outcome, r.seat_id
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

    RETURN QUERY SELECT 'booked'::cinema_confirm_outcome, r.seat_id
                   FROM unnest(p_seat_ids) AS r(seat_id) ORDER BY r.seat_id;
END
$$;

CREATE FUNCTION cinema_release_seats(p_showtime_id uuid, p_booking_id uuid)
RETURNS TABLE (outcome cinema_free_outcome, seat_id text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM showtimes st WHERE st.id = p_showtime_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'showtime_not_found'::cinema_free_outcome, NULL::text;
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
        SELECT 'released'::cinema_free_outcome, r.seat_id FROM released r ORDER BY r.seat_id;
END
$$;

CREATE FUNCTION cinema_cancel_seats(p_showtime_id uuid, p_booking_id uuid)
RETURNS TABLE (outcome cinema_free_outcome, seat_id text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM showtimes st WHERE st.id = p_showtime_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'showtime_not_found'::cinema_free_outcome, NULL::text;
        RETURN;
    END IF;

    PERFORM 1 FROM showtime_seats s
     WHERE s.showtime_id = p_showtime_id
       AND (s.booking_id = p_booking_id OR s.last_booking_id = p_booking_id)
     ORDER BY s.seat_id
       FOR UPDATE;

    UPDATE showtime_seats s
       SET last_booking_id = NULL
     WHERE s.showtime_id = p_showtime_id AND s.last_booking_id = p_booking_id
       AND s.booking_id IS DISTINCT FROM p_booking_id;

    RETURN QUERY
        WITH released AS (
            UPDATE showtime_seats s
               SET status = 'available', booking_id = NULL, last_booking_id = NULL,
                   hold_expires_at = NULL, hold_extended = false
             WHERE s.showtime_id = p_showtime_id AND s.booking_id = p_booking_id
               AND s.status IN ('held', 'booked')
            RETURNING s.seat_id)
        SELECT 'released'::cinema_free_outcome, r.seat_id FROM released r ORDER BY r.seat_id;
END
$$;

CREATE FUNCTION cinema_extend_hold(p_showtime_id uuid, p_booking_id uuid, p_extension_seconds integer)
RETURNS TABLE (outcome cinema_extend_outcome, seat_id text, hold_expires_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM showtimes st WHERE st.id = p_showtime_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'showtime_not_found'::cinema_extend_outcome, NULL::text, NULL::timestamptz;
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
        RETURN QUERY SELECT 'no_live_hold'::cinema_extend_outcome, NULL::text, NULL::timestamptz;
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM showtime_seats s
                WHERE s.showtime_id = p_showtime_id AND s.booking_id = p_booking_id
                  AND s.status = 'held' AND s.hold_extended) THEN
        RETURN QUERY SELECT 'already_extended'::cinema_extend_outcome, NULL::text, NULL::timestamptz;
        RETURN;
    END IF;

    RETURN QUERY
        WITH extended AS (
            UPDATE showtime_seats s
               SET hold_expires_at = s.hold_expires_at + make_interval(secs => p_extension_seconds),
                   hold_extended = true
             WHERE s.showtime_id = p_showtime_id AND s.booking_id = p_booking_id AND s.status = 'held'
            RETURNING s.seat_id, s.hold_expires_at)
        SELECT 'extended'::cinema_extend_outcome, e.seat_id, e.hold_expires_at FROM extended e ORDER BY e.seat_id;
END
$$;

CREATE FUNCTION cinema_block_seats(p_showtime_id uuid, p_seat_ids text[])
RETURNS TABLE (outcome cinema_staff_outcome, seat_id text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM showtimes st WHERE st.id = p_showtime_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'showtime_not_found'::cinema_staff_outcome, NULL::text;
        RETURN;
    END IF;

    PERFORM 1 FROM showtime_seats s
     WHERE s.showtime_id = p_showtime_id AND s.seat_id = ANY (p_seat_ids)
     ORDER BY s.seat_id
       FOR UPDATE;

    RETURN QUERY
        SELECT 'unknown'::cinema_staff_outcome, r.seat_id
          FROM unnest(p_seat_ids) AS r(seat_id)
         WHERE NOT EXISTS (SELECT 1 FROM showtime_seats s
                            WHERE s.showtime_id = p_showtime_id AND s.seat_id = r.seat_id)
        UNION ALL
        SELECT 'unavailable'::cinema_staff_outcome, s.seat_id
          FROM showtime_seats s
         WHERE s.showtime_id = p_showtime_id AND s.seat_id = ANY (p_seat_ids)
           AND (s.status = 'booked' OR (s.status = 'held' AND s.hold_expires_at > now()));
    IF FOUND THEN
        RETURN;
    END IF;

    UPDATE showtime_seats s
       SET status = 'blocked', booking_id = NULL, hold_expires_at = NULL, hold_extended = false
     WHERE s.showtime_id = p_showtime_id AND s.seat_id = ANY (p_seat_ids) AND s.status <> 'blocked';

    RETURN QUERY SELECT 'blocked'::cinema_staff_outcome, r.seat_id
                   FROM unnest(p_seat_ids) AS r(seat_id) ORDER BY r.seat_id;
END
$$;

CREATE FUNCTION cinema_unblock_seats(p_showtime_id uuid, p_seat_ids text[])
RETURNS TABLE (outcome cinema_staff_outcome, seat_id text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM showtimes st WHERE st.id = p_showtime_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'showtime_not_found'::cinema_staff_outcome, NULL::text;
        RETURN;
    END IF;

    RETURN QUERY
        SELECT 'unknown'::cinema_staff_outcome, r.seat_id
          FROM unnest(p_seat_ids) AS r(seat_id)
         WHERE NOT EXISTS (SELECT 1 FROM showtime_seats s
                            WHERE s.showtime_id = p_showtime_id AND s.seat_id = r.seat_id);
    IF FOUND THEN
        RETURN;
    END IF;

    PERFORM 1 FROM showtime_seats s
     WHERE s.showtime_id = p_showtime_id AND s.seat_id = ANY (p_seat_ids) AND s.status = 'blocked'
     ORDER BY s.seat_id
       FOR UPDATE;

    RETURN QUERY
        WITH unblocked AS (
            UPDATE showtime_seats s
               SET status = 'available'
             WHERE s.showtime_id = p_showtime_id AND s.seat_id = ANY (p_seat_ids) AND s.status = 'blocked'
            RETURNING s.seat_id)
        SELECT 'unblocked'::cinema_staff_outcome, u.seat_id FROM unblocked u ORDER BY u.seat_id;
END
$$;

-- Generic plans, as in 0005 (which the DROPs above undid for the recreated functions).
ALTER FUNCTION cinema_lock_seats(uuid, text[], uuid, integer, integer, boolean) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION cinema_stranded_seats(uuid, uuid, text[], text[]) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION cinema_clean_block_exists(uuid, uuid, integer) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION cinema_confirm_seats(uuid, uuid, text[]) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION cinema_release_seats(uuid, uuid) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION cinema_cancel_seats(uuid, uuid) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION cinema_extend_hold(uuid, uuid, integer) SET plan_cache_mode = force_generic_plan;
