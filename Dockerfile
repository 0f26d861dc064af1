# One image with every Marquee binary; docker-compose picks the one to run.
# Build: docker build -t marquee .

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
      -p marquee-user -p marquee-cinema -p marquee-booking -p marquee-payment \
      -p marquee-notification -p marquee-ticket -p marquee-gateway -p marquee-kit \
 && mkdir -p /out \
 && cp target/release/marquee-user target/release/marquee-cinema target/release/marquee-booking \
       target/release/marquee-payment target/release/marquee-notification \
       target/release/marquee-ticket target/release/marquee-checkin \
       target/release/marquee-gateway target/release/marquee-healthcheck /out/

# The web app the gateway serves at / (gateway.web_dir).
FROM node:20-bookworm AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY web/ ./
RUN npm run build

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 marquee
COPY --from=build /out/ /usr/local/bin/
COPY config/ /etc/marquee/config/
COPY --from=web /web/dist/ /usr/share/marquee/web/
ENV MARQUEE_CONFIG_DIR=/etc/marquee/config \
    MARQUEE_ENV=production \
    MARQUEE_GATEWAY__WEB_DIR=/usr/share/marquee/web
USER marquee
