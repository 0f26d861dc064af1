-- Seat holds as SQL functions: each call is one statement, so one round trip and one
-- transaction. Every function locks the rows it may change in seat_id order, so
-- concurrent calls on overlapping seats queue up instead of deadlocking. Under READ
-- COMMITTED each statement in a function takes a fresh snapshot, so the checks after
-- the locking PERFORM see the latest committed state of the rows this call now owns.

-- Holds every requested seat for p_booking_id, or none. Outcome rows:
--   'showtime_not_found' | 'showtime_started' | 'holds_closed' (the showtime starts
--                                   within p_cutoff_seconds; one row, seat columns NULL)
--   'unknown' / 'unavailable'      (the offending seats; nothing changed)
--   'held'                         (every requested seat, with its price)
-- A seat is lockable when available, when its hold has expired (lazy expiry), or when
-- this booking already holds it (an idempotent retry, which refreshes the expiry and
-- keeps its extension flag).
-- Refusals are cheap under contention: the requested seats are first checked without
-- row locks and the call refuses at once when one is visibly taken, so a losing call
-- neither queues behind row locks nor writes (SELECT ... FOR UPDATE marks rows, which
-- makes the commit flush WAL). Locking is left to calls that can succeed, and the
-- locked re-check still decides them.
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

-- Books the requested seats if, for every one of them, this booking holds it (even
-- past the expiry: nobody took it), already booked it, or held it last and it is free
-- again (released after its hold lapsed): such seats are re-acquired. If any seat was
-- taken by another booking in the meantime, nothing changes.
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

-- Frees the seats this booking holds (never the ones it booked), clearing the extension
-- flag. Outcome rows: 'showtime_not_found' | 'released' (one per freed seat; none when
-- nothing was held).
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

-- Blocks the requested seats of a showtime, all or none, locking them in seat order
-- like the hold functions. Outcome rows: 'showtime_not_found' | 'unknown' /
-- 'unavailable' (offending seats; nothing changed) | 'blocked' (every requested seat).
-- A lapsed hold does not protect a seat.
CREATE FUNCTION cinema_block_seats(p_showtime_id uuid, p_seat_ids text[])
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
        SELECT 'unknown'::text, r.seat_id
          FROM unnest(p_seat_ids) AS r(seat_id)
         WHERE NOT EXISTS (SELECT 1 FROM showtime_seats s
                            WHERE s.showtime_id = p_showtime_id AND s.seat_id = r.seat_id)
        UNION ALL
        SELECT 'unavailable'::text, s.seat_id
          FROM showtime_seats s
         WHERE s.showtime_id = p_showtime_id AND s.seat_id = ANY (p_seat_ids)
           AND (s.status = 'booked' OR (s.status = 'held' AND s.hold_expires_at > now()));
    IF FOUND THEN
        RETURN;
    END IF;

    UPDATE showtime_seats s
       SET status = 'blocked', booking_id = NULL, hold_expires_at = NULL, hold_extended = false
     WHERE s.showtime_id = p_showtime_id AND s.seat_id = ANY (p_seat_ids) AND s.status <> 'blocked';

    RETURN QUERY SELECT 'blocked'::text, r.seat_id FROM unnest(p_seat_ids) AS r(seat_id) ORDER BY r.seat_id;
END
$$;

-- Puts the blocked ones among the requested seats back on sale. Outcome rows:
-- 'showtime_not_found' | 'unknown' (nothing changed) | 'unblocked' (the changed seats).
CREATE FUNCTION cinema_unblock_seats(p_showtime_id uuid, p_seat_ids text[])
RETURNS TABLE (outcome text, seat_id text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM showtimes st WHERE st.id = p_showtime_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'showtime_not_found'::text, NULL::text;
        RETURN;
    END IF;

    RETURN QUERY
        SELECT 'unknown'::text, r.seat_id
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
        SELECT 'unblocked'::text, u.seat_id FROM unblocked u ORDER BY u.seat_id;
END
$$;

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
