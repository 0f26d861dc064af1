-- Catalog administration: movie languages, seat layouts that know aisles and special
-- seats, and staff blocking of single seats per showtime.

ALTER TABLE movies ADD COLUMN languages text[] NOT NULL DEFAULT '{}';

-- position: left-to-right place in the row counting aisles/gaps, so two seats are
-- adjacent exactly when their positions differ by one. blocked: out of sale in every
-- showtime created from the layout.
ALTER TABLE screen_seats
    ADD COLUMN position integer,
    ADD COLUMN accessible boolean NOT NULL DEFAULT false,
    ADD COLUMN companion boolean NOT NULL DEFAULT false,
    ADD COLUMN blocked boolean NOT NULL DEFAULT false;
UPDATE screen_seats SET position = seat_number WHERE position IS NULL;
ALTER TABLE screen_seats
    ALTER COLUMN position SET NOT NULL,
    ADD CONSTRAINT screen_seats_position_positive CHECK (position > 0),
    ADD CONSTRAINT screen_seats_row_position_key UNIQUE (screen_id, row_label, position),
    ADD CONSTRAINT screen_seats_row_number_key UNIQUE (screen_id, row_label, seat_number);

CREATE INDEX showtimes_screen_starts_at_idx ON showtimes (screen_id, starts_at);

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
