-- The per-user hold limit, decided by the hold itself.
--
-- Until now the booking service capped a user's live holds per showtime with slot
-- documents in MongoDB (hold_slots): after cinema locked the seats it claimed a slot,
-- and over the limit it gave the seats back. Every won hold so cost a slot written and
-- later deleted, and a capped user held the seats for a moment (watchers saw them taken
-- and freed). Now the booking service passes the user and the limit to
-- cinema_lock_seats, which counts the user's live holds on the showtime before it locks
-- anything and answers 'hold_limit' when they are at the limit.
--
-- Each held seat records its holder (held_by; like held_at, it means something only
-- while the seat is held). A user's holds on one showtime take turns on an advisory
-- lock, so two concurrent holds of one user cannot both pass the count: the second
-- counts the first once it has committed. The order of locks is always the booking's
-- turn, then the user's, then the seat rows, so no two holds wait on each other in a
-- cycle. A limit of 0 (or no user) counts nothing.
--
-- The six-argument cinema_lock_seats stays, for cinema processes of the last version
-- during an upgrade: it holds without a user and without a limit, as before.

ALTER TYPE cinema_lock_outcome ADD VALUE 'hold_limit';

ALTER TABLE showtime_seats ADD COLUMN held_by uuid;
CREATE INDEX showtime_seats_holder_idx ON showtime_seats (showtime_id, held_by)
    WHERE status = 'held' AND held_by IS NOT NULL;

-- Serialises the holds of one user on one showtime (two-key form, its own key space).
CREATE FUNCTION cinema_holder_turn(p_user_id uuid, p_showtime_id uuid) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(1752134500, hashtext(p_user_id::text || p_showtime_id::text));
$$;

DROP FUNCTION cinema_lock_seats(uuid, text[], uuid, integer, integer, boolean);
DROP FUNCTION cinema_lock_seats_unfenced(uuid, text[], uuid, integer, integer, boolean);

-- 0009's cinema_lock_seats_unfenced, with the holder recorded by the hold's update.
CREATE FUNCTION cinema_lock_seats_unfenced(
    p_showtime_id uuid, p_seat_ids text[], p_booking_id uuid, p_user_id uuid, p_ttl_seconds integer,
    p_cutoff_seconds integer, p_no_orphans boolean)
RETURNS TABLE (
    outcome cinema_lock_outcome, seat_id text, row_label text, seat_number integer, category text,
    amount_minor bigint, currency text, hold_expires_at timestamptz)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
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
                   hold_expires_at = v_expires_at, held_by = p_user_id,
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

-- 0008's fencing wrapper, with the holder and the limit.
CREATE FUNCTION cinema_lock_seats(
    p_showtime_id uuid, p_seat_ids text[], p_booking_id uuid, p_user_id uuid, p_max_holds integer,
    p_ttl_seconds integer, p_cutoff_seconds integer, p_no_orphans boolean)
RETURNS TABLE (
    outcome cinema_lock_outcome, seat_id text, row_label text, seat_number integer, category text,
    amount_minor bigint, currency text, hold_expires_at timestamptz)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    v_limited boolean := p_user_id IS NOT NULL AND p_max_holds > 0;
    v_released boolean;
    v_holds bigint;
BEGIN
    PERFORM cinema_booking_turn(p_booking_id);
    IF v_limited THEN
        PERFORM cinema_holder_turn(p_user_id, p_showtime_id);
    END IF;
    -- Each statement below reads a fresh snapshot (a volatile function under READ
    -- COMMITTED): a release of this booking, or a hold of this user, that held its turn
    -- before us is visible here. One statement for both questions: the user's other
    -- live holds here (a repeat of this booking's is not another).
    SELECT EXISTS (SELECT 1 FROM released_bookings r WHERE r.booking_id = p_booking_id),
           CASE WHEN v_limited THEN
               (SELECT count(DISTINCT s.booking_id) FROM showtime_seats s
                 WHERE s.showtime_id = p_showtime_id AND s.held_by = p_user_id AND s.status = 'held'
                   AND s.hold_expires_at > now() AND s.booking_id <> p_booking_id)
           ELSE 0 END
      INTO v_released, v_holds;
    IF v_released THEN
        RETURN QUERY SELECT 'released'::cinema_lock_outcome, NULL::text, NULL::text, NULL::integer,
            NULL::text, NULL::bigint, NULL::text, NULL::timestamptz;
        RETURN;
    END IF;
    IF v_holds >= p_max_holds AND v_limited THEN
        RETURN QUERY SELECT 'hold_limit'::cinema_lock_outcome, NULL::text, NULL::text, NULL::integer,
            NULL::text, NULL::bigint, NULL::text, NULL::timestamptz;
        RETURN;
    END IF;
    RETURN QUERY
        SELECT * FROM cinema_lock_seats_unfenced(
            p_showtime_id, p_seat_ids, p_booking_id, p_user_id, p_ttl_seconds, p_cutoff_seconds, p_no_orphans);
END
$$;

-- The last version's call: no holder, no limit.
CREATE FUNCTION cinema_lock_seats(
    p_showtime_id uuid, p_seat_ids text[], p_booking_id uuid, p_ttl_seconds integer,
    p_cutoff_seconds integer, p_no_orphans boolean DEFAULT false)
RETURNS TABLE (
    outcome cinema_lock_outcome, seat_id text, row_label text, seat_number integer, category text,
    amount_minor bigint, currency text, hold_expires_at timestamptz)
LANGUAGE sql
SET plan_cache_mode = force_generic_plan
AS $$
    SELECT * FROM cinema_lock_seats(
        p_showtime_id, p_seat_ids, p_booking_id, NULL::uuid, 0, p_ttl_seconds, p_cutoff_seconds, p_no_orphans);
$$;
