//! What the gateway binary reads: `[telemetry]`, `[grpc]`, `[redis]`, `[auth]`,
//! `[upstream]` and its own `[gateway]` (layered by `marquee_kit::config`).

use std::path::PathBuf;

use axum::http::HeaderValue;
use marquee_auth::AuthSettings;
use marquee_kit::config::{
    Config, GrpcSettings, RedisSettings, ServerSettings, TelemetrySettings, UpstreamSettings,
};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
pub struct Settings {
    pub telemetry: TelemetrySettings,
    pub grpc: GrpcSettings,
    pub redis: RedisSettings,
    pub auth: AuthSettings,
    pub upstream: UpstreamSettings,
    pub gateway: GatewaySettings,
}

impl Config for Settings {
    fn validate(&self) -> anyhow::Result<()> {
        self.auth.validate()?;
        self.gateway.validate()
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct GatewaySettings {
    #[serde(flatten)]
    pub server: ServerSettings,
    pub graphiql: bool,
    pub max_body_bytes: usize,
    /// Operations allowed in one batched `POST /graphql` (a JSON array); 0 refuses batches.
    pub max_batch_size: usize,
    /// Schema introspection (`__schema`, `__type`); production turns it off.
    pub introspection: bool,
    /// Take the client address from the last `X-Forwarded-For` entry (set by Kong)
    /// instead of the TCP peer. Only safe behind a proxy that always sets it.
    pub trust_forwarded_for: bool,
    pub rate_limit: RateLimitSettings,
    /// Subscriptions one WebSocket connection may hold at once.
    pub max_subscriptions_per_connection: usize,
    /// The shortest time between two rounds of updates of one shared subscription
    /// (`fanout.rs`); 0 sends each update as soon as it is built.
    pub subscription_pace_ms: u64,
    /// The built web app (`web/dist`) served at `/`; relative to the working directory.
    /// A missing directory leaves the API serving and `/` answering 503.
    pub web_dir: PathBuf,
    /// How long this process keeps an answer of the logout denylist, per token
    /// (`denylist.rs`); 0 asks Redis on every request.
    pub denylist_cache_ms: u64,
    /// How long a token check waits for Redis before the request is refused as
    /// SERVICE_BUSY.
    pub denylist_timeout_ms: u64,
    pub cors: CorsSettings,
}

impl GatewaySettings {
    fn validate(&self) -> anyhow::Result<()> {
        // 0 would refuse every signed-in request whose answer is not cached.
        anyhow::ensure!(self.denylist_timeout_ms > 0, "gateway.denylist_timeout_ms must be at least 1");
        self.cors.validate()
    }
}

/// Fixed-window request limits kept in Redis, shared by every gateway replica.
#[derive(Clone, Debug, Deserialize)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub window_seconds: u64,
    /// GraphQL operations per window for one signed-in user (the token's `sub`).
    pub per_user: u64,
    /// GraphQL operations per window for one client address without a token.
    pub per_ip: u64,
}

/// `[gateway.cors]`: the other origins whose pages may call the API from a browser.
#[derive(Clone, Debug, Deserialize)]
pub struct CorsSettings {
    /// Empty: no CORS headers at all, same origin only.
    pub allowed_origins: Vec<AllowedOrigin>,
    /// Whether `"*"` may be listed; production.toml says no.
    pub allow_any_origin: bool,
}

impl CorsSettings {
    fn validate(&self) -> anyhow::Result<()> {
        let any = self.allowed_origins.contains(&AllowedOrigin::Any);
        anyhow::ensure!(
            !any || self.allow_any_origin,
            "gateway.cors.allowed_origins lists \"*\", which gateway.cors.allow_any_origin = false \
             (production) refuses: list the front ends' origins instead"
        );
        anyhow::ensure!(
            !any || self.allowed_origins.len() == 1,
            "gateway.cors.allowed_origins lists \"*\" beside other origins: either \"*\" alone or origins only"
        );
        Ok(())
    }
}

/// One entry of `gateway.cors.allowed_origins`: `"*"`, or an origin exactly as a
/// browser sends it in `Origin` (RFC 6454: `scheme://host[:port]`, lower case, no
/// default port, no path). Anything else could never match a request, so it is a
/// startup error naming the entry rather than a setting that silently does nothing.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum AllowedOrigin {
    Any,
    Exact(HeaderValue),
}

impl TryFrom<String> for AllowedOrigin {
    type Error = String;

    fn try_from(entry: String) -> Result<Self, Self::Error> {
        if entry == "*" {
            return Ok(Self::Any);
        }
        check_origin(&entry).map_err(|why| {
            format!("gateway.cors.allowed_origins: `{entry}` is not an origin as browsers send it: {why}")
        })?;
        let value = HeaderValue::from_str(&entry).map_err(|_| format!("`{entry}` is not a header value"))?;
        Ok(Self::Exact(value))
    }
}

fn check_origin(entry: &str) -> Result<(), &'static str> {
    let (scheme, authority) = entry.split_once("://").ok_or("scheme://host[:port]")?;
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return Err("the scheme is http or https, in lower case"),
    };
    if authority.contains(['/', '?', '#']) {
        return Err("an origin has no path, not even a trailing /");
    }
    if authority.contains('@') {
        return Err("an origin has no user name");
    }
    // The port's colon comes after an IPv6 literal's closing bracket.
    let host_end = authority.rfind(']').unwrap_or(0);
    let (host, port) = match authority[host_end..].rfind(':') {
        Some(colon) => (&authority[..host_end + colon], Some(&authority[host_end + colon + 1..])),
        None => (authority, None),
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok_and(|ip| ip.to_string() == v6),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        }
    };
    if !host_ok {
        return Err("the host is in lower case (punycode for other letters), IPv6 in brackets");
    }
    if let Some(port) = port {
        // Browsers write the port in plain decimal, and leave the scheme's default out.
        let number = port.parse::<u16>().ok().filter(|n| *n > 0 && n.to_string() == port);
        match number {
            None => return Err("the port is a number from 1 to 65535"),
            Some(n) if n == default_port => return Err("browsers leave the scheme's default port out"),
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(entry: &str) -> Result<AllowedOrigin, String> {
        AllowedOrigin::try_from(entry.to_owned())
    }

    #[test]
    fn origins_are_taken_only_as_browsers_send_them() {
        for good in [
            "https://app.example.com",
            "http://localhost:5173",
            "http://127.0.0.1:8081",
            "https://xn--bcher-kva.example",
            "http://[::1]:3000",
        ] {
            assert_eq!(parse(good), Ok(AllowedOrigin::Exact(HeaderValue::from_static(good))), "{good}");
        }
        assert_eq!(parse("*"), Ok(AllowedOrigin::Any));
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/graphql",
            "HTTPS://app.example.com",
            "https://App.Example.com",
            "ftp://example.com",
            "https://example.com:443",
            "http://example.com:80",
            "http://localhost:0",
            "http://localhost:08080",
            "http://localhost:99999",
            "http://localhost:",
            "https://user@example.com",
            "https://",
            "http://[::0001]:3000",
            "https://bücher.example",
        ] {
            let error = parse(bad).unwrap_err();
            assert!(error.contains(&format!("`{bad}`")), "the error names the entry: {error}");
        }
    }

    fn cors(origins: &[&str], allow_any_origin: bool) -> CorsSettings {
        let allowed_origins = origins.iter().map(|o| parse(o).unwrap()).collect();
        CorsSettings { allowed_origins, allow_any_origin }
    }

    #[test]
    fn any_origin_is_allowed_alone_and_only_where_allow_any_origin_says() {
        cors(&[], false).validate().unwrap();
        cors(&["https://app.example.com"], false).validate().unwrap();
        cors(&["*"], true).validate().unwrap();
        let error = cors(&["*"], false).validate().unwrap_err().to_string();
        assert!(error.contains("allow_any_origin = false"), "{error}");
        assert!(cors(&["*", "https://app.example.com"], true).validate().is_err());
    }

    #[test]
    fn production_refuses_any_origin_and_names_a_bad_one() {
        use figment::providers::Serialized;
        use marquee_kit::config::{extract, files, repository_dir};
        let production = || {
            files(&repository_dir(), "production")
                .merge(Serialized::default("auth.jwt_secret", "p".repeat(48)))
        };
        extract::<Settings>(&production(), "production").unwrap();
        let any = production().merge(Serialized::default("gateway.cors.allowed_origins", ["*"]));
        let error = format!("{:#}", extract::<Settings>(&any, "production").unwrap_err());
        assert!(error.contains("allow_any_origin = false"), "{error}");
        let bad = ["https://app.example.com", "https://shop.example.com/"];
        let bad = production().merge(Serialized::default("gateway.cors.allowed_origins", bad));
        let error = format!("{:#}", extract::<Settings>(&bad, "production").unwrap_err());
        assert!(error.contains("`https://shop.example.com/`"), "{error}");
    }
}
