-- Demo catalog for local development and tests. Run by the cinema service at startup
-- when cinema.seed_demo is set, after the migrations. Idempotent: fixed ids for the
-- catalog and ids derived from (screen, local start time) for showtimes, all inserted
-- with ON CONFLICT DO NOTHING, so a rerun on the same day adds nothing and a rerun on a
-- later day only adds the days that came into the 7-day window. Seat states are never
-- touched by a rerun.

INSERT INTO movies (id, title, synopsis, runtime_minutes, rating, genres, poster_url, release_date) VALUES
    ('a0000000-0000-4000-8000-000000000001', 'The Last Projectionist',
     'A small-town projectionist keeps a shuttered cinema running for one final summer.',
     118, 'PG-13', '{Drama}', 'https://img.marquee.example/posters/last-projectionist.jpg', '2026-03-13'),
    ('a0000000-0000-4000-8000-000000000002', 'Orbit of Ashes',
     'The crew of a failing orbital station race to bring a dying colony home.',
     142, 'PG-13', '{Science Fiction,Thriller}', 'https://img.marquee.example/posters/orbit-of-ashes.jpg', '2026-06-05'),
    ('a0000000-0000-4000-8000-000000000003', 'Paper Lanterns',
     'Two siblings follow a trail of paper lanterns through a city that only exists at night.',
     96, 'G', '{Animation,Family}', 'https://img.marquee.example/posters/paper-lanterns.jpg', '2026-07-24'),
    ('a0000000-0000-4000-8000-000000000004', 'Nightshift at the Marquee',
     'An usher, a critic and a lost reel of film: one very long night at the movies.',
     104, 'PG', '{Comedy}', 'https://img.marquee.example/posters/nightshift.jpg', NULL)
ON CONFLICT DO NOTHING;

INSERT INTO cinemas (id, name, city, address, time_zone) VALUES
    ('b0000000-0000-4000-8000-000000000001', 'Marquee Kreuzberg', 'Berlin',
     'Oranienstraße 42, 10999 Berlin', 'Europe/Berlin'),
    ('b0000000-0000-4000-8000-000000000002', 'Marquee Chiado', 'Lisbon',
     'Rua Garrett 19, 1200-203 Lisboa', 'Europe/Lisbon')
ON CONFLICT DO NOTHING;

INSERT INTO screens (id, cinema_id, name) VALUES
    ('c0000000-0000-4000-8000-000000000001', 'b0000000-0000-4000-8000-000000000001', 'Saal 1'),
    ('c0000000-0000-4000-8000-000000000002', 'b0000000-0000-4000-8000-000000000001', 'Saal 2'),
    ('c0000000-0000-4000-8000-000000000003', 'b0000000-0000-4000-8000-000000000002', 'Sala 1')
ON CONFLICT DO NOTHING;

-- Layouts: rows x seats per row without aisles, the back rows premium.
INSERT INTO screen_seats (screen_id, seat_id, row_label, seat_number, position, category)
SELECT layout.screen_id::uuid, chr(64 + r) || n, chr(64 + r), n, n,
       CASE WHEN r > layout.rows - layout.premium_rows THEN 'premium' ELSE 'standard' END
  FROM (VALUES ('c0000000-0000-4000-8000-000000000001', 10, 12, 3),
               ('c0000000-0000-4000-8000-000000000002', 8, 14, 2),
               ('c0000000-0000-4000-8000-000000000003', 10, 10, 2))
       AS layout(screen_id, rows, seats_per_row, premium_rows)
 CROSS JOIN LATERAL generate_series(1, layout.rows) AS r
 CROSS JOIN LATERAL generate_series(1, layout.seats_per_row) AS n
ON CONFLICT DO NOTHING;

-- Four daily slots per screen for the next 7 days, in each cinema's local time. The
-- movie of a slot depends on its local date and slot only, so a rerun agrees with itself.
INSERT INTO showtimes (id, movie_id, screen_id, starts_at, ends_at)
SELECT md5('marquee-demo-showtime/' || sc.id || '/' || local_start::text)::uuid,
       m.id, sc.id, starts_at, starts_at + make_interval(mins => m.runtime_minutes)
  FROM screens sc
  JOIN cinemas c ON c.id = sc.cinema_id
 CROSS JOIN generate_series(0, 6) AS d(day_offset)
 CROSS JOIN (VALUES (0, time '11:00'), (1, time '14:30'), (2, time '18:00'), (3, time '21:30'))
       AS slot(slot_no, local_time)
 CROSS JOIN LATERAL (SELECT (now() AT TIME ZONE c.time_zone)::date + d.day_offset AS local_date) ld
 CROSS JOIN LATERAL (SELECT ld.local_date + slot.local_time AS local_start) ls
 CROSS JOIN LATERAL (SELECT ls.local_start AT TIME ZONE c.time_zone AS starts_at) st
 CROSS JOIN LATERAL (
       SELECT mv.id, mv.runtime_minutes
         FROM movies mv
        WHERE mv.id = (ARRAY['a0000000-0000-4000-8000-000000000001',
                             'a0000000-0000-4000-8000-000000000002',
                             'a0000000-0000-4000-8000-000000000003',
                             'a0000000-0000-4000-8000-000000000004']::uuid[])
                      [1 + (ld.local_date - date '2000-01-01' + slot.slot_no + right(sc.id::text, 1)::int) % 4]
       ) m
 WHERE sc.id IN ('c0000000-0000-4000-8000-000000000001',
                 'c0000000-0000-4000-8000-000000000002',
                 'c0000000-0000-4000-8000-000000000003')
   AND st.starts_at > now()
ON CONFLICT DO NOTHING;

INSERT INTO showtime_prices (showtime_id, category, amount_minor, currency)
SELECT st.id, price.category, price.amount_minor, price.currency
  FROM showtimes st
  JOIN screens sc ON sc.id = st.screen_id
  JOIN (VALUES ('b0000000-0000-4000-8000-000000000001'::uuid, 'standard', 1150::bigint, 'EUR'),
               ('b0000000-0000-4000-8000-000000000001'::uuid, 'premium', 1590::bigint, 'EUR'),
               ('b0000000-0000-4000-8000-000000000002'::uuid, 'standard', 850::bigint, 'EUR'),
               ('b0000000-0000-4000-8000-000000000002'::uuid, 'premium', 1200::bigint, 'EUR'))
       AS price(cinema_id, category, amount_minor, currency) ON price.cinema_id = sc.cinema_id
 WHERE st.starts_at > now()
ON CONFLICT DO NOTHING;

INSERT INTO showtime_seats (showtime_id, seat_id, row_label, seat_number, category)
SELECT st.id, ss.seat_id, ss.row_label, ss.seat_number, ss.category
  FROM showtimes st
  JOIN screen_seats ss ON ss.screen_id = st.screen_id
 WHERE st.screen_id IN ('c0000000-0000-4000-8000-000000000001',
                        'c0000000-0000-4000-8000-000000000002',
                        'c0000000-0000-4000-8000-000000000003')
   AND st.starts_at > now()
ON CONFLICT DO NOTHING;
