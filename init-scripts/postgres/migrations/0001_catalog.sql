-- The cinema service's catalog and per-showtime seat inventory.
-- Applied by the cinema service at startup (sqlx migrations); never edit an applied file.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE movies (
    id              uuid PRIMARY KEY,
    title           text NOT NULL CHECK (length(title) BETWEEN 1 AND 300),
    synopsis        text NOT NULL DEFAULT '',
    runtime_minutes integer NOT NULL CHECK (runtime_minutes BETWEEN 1 AND 1000),
    rating          text NOT NULL DEFAULT '',
    genres          text[] NOT NULL DEFAULT '{}',
    poster_url      text NOT NULL DEFAULT '',
    release_date    date,
    languages       text[] NOT NULL DEFAULT '{}'
);
-- Keyset pagination walks (title, id); title search is a case-insensitive substring.
CREATE INDEX movies_title_id_idx ON movies (title, id);
CREATE INDEX movies_title_trgm_idx ON movies USING gin (title gin_trgm_ops);

CREATE TABLE cinemas (
    id        uuid PRIMARY KEY,
    name      text NOT NULL,
    city      text NOT NULL,
    address   text NOT NULL DEFAULT '',
    -- An unknown zone makes the expression raise, so bad zones never get in.
    time_zone text NOT NULL CHECK (('2000-01-01 00:00:00+00'::timestamptz AT TIME ZONE time_zone) IS NOT NULL)
);
CREATE INDEX cinemas_city_idx ON cinemas (lower(city));

CREATE TABLE screens (
    id        uuid PRIMARY KEY,
    cinema_id uuid NOT NULL REFERENCES cinemas (id),
    name      text NOT NULL,
    UNIQUE (cinema_id, name)
);

-- position: left-to-right place in the row counting aisles/gaps, so two seats are
-- adjacent exactly when their positions differ by one. blocked: out of sale in every
-- showtime created from the layout.
CREATE TABLE screen_seats (
    screen_id   uuid NOT NULL REFERENCES screens (id),
    seat_id     text NOT NULL,
    row_label   text NOT NULL,
    seat_number integer NOT NULL CHECK (seat_number > 0),
    category    text NOT NULL,
    position    integer NOT NULL CONSTRAINT screen_seats_position_positive CHECK (position > 0),
    accessible  boolean NOT NULL DEFAULT false,
    companion   boolean NOT NULL DEFAULT false,
    blocked     boolean NOT NULL DEFAULT false,
    PRIMARY KEY (screen_id, seat_id),
    CONSTRAINT screen_seats_row_position_key UNIQUE (screen_id, row_label, position),
    CONSTRAINT screen_seats_row_number_key UNIQUE (screen_id, row_label, seat_number)
);

CREATE TABLE showtimes (
    id        uuid PRIMARY KEY,
    movie_id  uuid NOT NULL REFERENCES movies (id),
    screen_id uuid NOT NULL REFERENCES screens (id),
    starts_at timestamptz NOT NULL,
    ends_at   timestamptz NOT NULL,
    CHECK (ends_at > starts_at),
    UNIQUE (screen_id, starts_at)
);
CREATE INDEX showtimes_starts_at_idx ON showtimes (starts_at);
CREATE INDEX showtimes_movie_starts_at_idx ON showtimes (movie_id, starts_at);
CREATE INDEX showtimes_screen_starts_at_idx ON showtimes (screen_id, starts_at);

CREATE TABLE showtime_prices (
    showtime_id  uuid NOT NULL REFERENCES showtimes (id),
    category     text NOT NULL,
    amount_minor bigint NOT NULL CHECK (amount_minor >= 0),
    currency     text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    PRIMARY KEY (showtime_id, category)
);

CREATE TABLE showtime_seats (
    showtime_id     uuid NOT NULL REFERENCES showtimes (id),
    seat_id         text NOT NULL,
    row_label       text NOT NULL,
    seat_number     integer NOT NULL,
    category        text NOT NULL,
    status          text NOT NULL DEFAULT 'available'
                    CHECK (status IN ('available', 'held', 'booked', 'blocked')),
    booking_id      uuid,
    hold_expires_at timestamptz,
    -- The booking that last held the seat survives its release (by ReleaseSeats or the
    -- sweeper), so a late confirmation can tell "still free since I held it" from
    -- "taken by someone else in the meantime".
    last_booking_id uuid,
    hold_extended   boolean NOT NULL DEFAULT false,
    PRIMARY KEY (showtime_id, seat_id),
    CONSTRAINT showtime_seats_extended_only_when_held CHECK (NOT hold_extended OR status = 'held'),
    -- A hold always has an owner and an expiry; a booking an owner only; free seats neither.
    CONSTRAINT showtime_seats_state_consistent CHECK (
        CASE status
            WHEN 'held' THEN booking_id IS NOT NULL AND hold_expires_at IS NOT NULL
            WHEN 'booked' THEN booking_id IS NOT NULL AND hold_expires_at IS NULL
            ELSE booking_id IS NULL AND hold_expires_at IS NULL
        END
    )
);
CREATE INDEX showtime_seats_booking_idx ON showtime_seats (showtime_id, booking_id)
    WHERE booking_id IS NOT NULL;
CREATE INDEX showtime_seats_hold_expiry_idx ON showtime_seats (hold_expires_at) WHERE status = 'held';
