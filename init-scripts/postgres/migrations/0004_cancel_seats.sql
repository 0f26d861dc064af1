-- A cancelled booking gives back every seat it holds or has booked. last_booking_id is
-- cleared too: cinema_confirm_seats re-acquires a free seat for the booking that held
-- it last, which must never happen for a booking that was cancelled.
-- Outcome rows: 'showtime_not_found' | 'released' (one per freed seat; none on a repeat).
CREATE FUNCTION cinema_cancel_seats(p_showtime_id uuid, p_booking_id uuid)
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
        SELECT 'released'::text, r.seat_id FROM released r ORDER BY r.seat_id;
END
$$;
