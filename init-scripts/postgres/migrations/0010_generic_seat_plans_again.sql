-- The generic plans of 0005 and 0006, given back to the hold's functions. A function's
-- SET clauses are part of its definition: 0007's CREATE OR REPLACE of cinema_lock_seats
-- and cinema_clean_block_exists dropped theirs, 0008's fencing wrappers
-- (cinema_lock_seats, cinema_release_seats) were created without one, and 0009's
-- replacement of cinema_lock_seats_unfenced has none. Since 0007 every hold has let
-- PL/pgSQL choose, and it plans `seat_id = ANY ($2)` afresh on every call (0005 found a
-- third of the database's CPU under seat contention in the planner).
--
-- A function's SET lasts for its call, nested calls included, so the setting on the
-- wrappers covers the functions they call; the callees get it too, for direct callers.
ALTER FUNCTION cinema_lock_seats(uuid, text[], uuid, integer, integer, boolean)
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION cinema_lock_seats_unfenced(uuid, text[], uuid, integer, integer, boolean)
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION cinema_clean_block_exists(uuid, uuid, integer) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION cinema_release_seats(uuid, uuid) SET plan_cache_mode = force_generic_plan;
