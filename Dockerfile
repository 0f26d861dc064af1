# One image with every Marquee binary; docker-compose picks the one to run.
# Build: docker build -t marquee .

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
      -p marquee-user -p marquee-cinema -p marquee-booking -p marquee-payment \
      -p marquee-notification -p marquee-ticket -p marquee-gateway -p marquee-common \
 && mkdir -p /out \
 && cp target/release/marquee-user target/release/marquee-cinema target/release/marquee-booking \
       target/release/marquee-payment target/release/marquee-notification \
       target/release/marquee-ticket target/release/marquee-checkin \
       target/release/marquee-gateway target/release/marquee-healthcheck /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 marquee
COPY --from=build /out/ /usr/local/bin/
COPY config/ /etc/marquee/config/
ENV MARQUEE_CONFIG_DIR=/etc/marquee/config \
    MARQUEE_ENV=production
USER marquee
