-- The seat functions' statements always have the same shape (one showtime, a few seats
-- by primary key, or one booking's seats by its index), so one generic plan per
-- statement serves every call. Left to choose, PL/pgSQL kept planning each statement
-- afresh on every call (custom plans looked cheaper for `seat_id = ANY ($2)`): a third
-- of the database's CPU under seat contention went to the planner.
ALTER FUNCTION cinema_lock_seats(uuid, text[], uuid, integer, integer) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION cinema_confirm_seats(uuid, uuid, text[]) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION cinema_release_seats(uuid, uuid) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION cinema_cancel_seats(uuid, uuid) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION cinema_extend_hold(uuid, uuid, integer) SET plan_cache_mode = force_generic_plan;
