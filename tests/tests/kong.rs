//! What `deck validate` cannot check in kong.yml: plugin settings that matter to
//! Marquee, references between entities, agreement of the jwt secret with the user
//! service's issuer and key, and that a token the real user service issues passes
//! Kong's jwt plugin rules (Kong 3.9: `alg` equals the secret's algorithm, `iss`
//! names the secret's key, `exp` is a number within `maximum_expiration`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use base64::Engine;
use marquee_auth::JwtAlgorithm;
use marquee_e2e::MeshSettings as Settings;
use marquee_kit::Config as _;
use serde_json::Value;

fn kong() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kong.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn list<'a>(v: &'a Value, key: &str) -> Vec<&'a Value> {
    v.get(key).and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default()
}

fn plugins<'a>(kong: &'a Value, name: &str) -> Vec<&'a Value> {
    list(kong, "plugins").into_iter().filter(|p| p["name"] == name).collect()
}

fn routes(kong: &Value) -> Vec<&Value> {
    list(kong, "services").into_iter().flat_map(|s| list(s, "routes")).collect()
}

fn route<'a>(kong: &'a Value, name: &str) -> &'a Value {
    routes(kong).into_iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("no route {name}"))
}

fn jwt_secret(kong: &Value) -> &Value {
    let secrets: Vec<&Value> =
        list(kong, "consumers").into_iter().flat_map(|c| list(c, "jwt_secrets")).collect();
    assert_eq!(secrets.len(), 1, "one issuer, one jwt secret");
    secrets[0]
}

#[test]
fn every_reference_points_at_an_existing_entity() {
    let kong = kong();
    let route_names: Vec<&str> = routes(&kong).iter().filter_map(|r| r["name"].as_str()).collect();
    let service_names: Vec<&str> =
        list(&kong, "services").iter().filter_map(|s| s["name"].as_str()).collect();
    let consumers: Vec<&str> =
        list(&kong, "consumers").iter().filter_map(|c| c["username"].as_str()).collect();
    for plugin in list(&kong, "plugins") {
        for (key, known) in [("route", &route_names), ("service", &service_names), ("consumer", &consumers)] {
            if let Some(name) = plugin.get(key).and_then(Value::as_str) {
                assert!(known.contains(&name), "plugin {} names unknown {key} {name}", plugin["name"]);
            }
        }
    }
    for service in list(&kong, "services") {
        assert_eq!(service["url"], "http://gateway:8080", "Kong fronts only the GraphQL gateway");
    }
    assert!(route(&kong, "graphql")["paths"].as_array().unwrap().contains(&"/graphql".into()));
    // The web app's pages and assets reach the gateway too, read-only.
    assert_eq!(route(&kong, "web")["paths"], serde_json::json!(["/"]));
    assert_eq!(route(&kong, "web")["methods"], serde_json::json!(["GET", "HEAD"]));
}

#[test]
fn plugin_settings_match_what_the_gateway_expects() {
    let kong = kong();
    let settings = Settings::for_tests().unwrap();

    let jwt = plugins(&kong, "jwt");
    assert_eq!(jwt.len(), 1);
    let config = &jwt[0]["config"];
    assert_eq!(jwt[0]["route"], "graphql");
    assert_eq!(config["key_claim_name"], "iss", "the consumer is the token issuer");
    assert!(
        config["claims_to_verify"].as_array().unwrap().contains(&"exp".into()),
        "Kong checks exp only if told"
    );
    assert!(config["header_names"].as_array().unwrap().contains(&"authorization".into()));
    let anonymous =
        config["anonymous"].as_str().expect("browsing without a token needs an anonymous consumer");
    assert!(list(&kong, "consumers").iter().any(|c| c["username"] == anonymous));
    assert!(
        config["maximum_expiration"].as_i64().unwrap() >= settings.auth.access_token_ttl_seconds,
        "Kong must accept the access-token lifetime the user service issues"
    );

    // CORS must run where preflight arrives.
    for cors in plugins(&kong, "cors") {
        let methods = &route(&kong, cors["route"].as_str().unwrap())["methods"];
        assert!(methods.as_array().unwrap().contains(&"OPTIONS".into()), "cors on a route without OPTIONS");
    }
    assert!(!plugins(&kong, "cors").is_empty());

    // Per end user or per IP, never per consumer: all tokens share one consumer.
    let limits = plugins(&kong, "rate-limiting");
    assert!(limits.iter().any(|p| p["config"]["limit_by"] == "ip"));
    for limit in &limits {
        let config = &limit["config"];
        assert_ne!(config["limit_by"], "consumer", "every token maps to the issuer consumer");
        if config["limit_by"] == "header" {
            assert_eq!(config["header_name"], "Authorization");
        }
        assert_eq!(config["policy"], "redis", "limits shared by every Kong node");
        assert!(config["redis"]["host"].as_str().is_some_and(|h| !h.is_empty()), "3.6+ nested redis.host");
    }
    // The edge allows what the gateway allows behind it: per address for anonymous
    // requests, per token for signed-in ones (a minute each).
    let gateway = Settings::for_tests().unwrap().gateway.rate_limit;
    assert_eq!(gateway.window_seconds, 60, "the comparison below is per minute");
    let per_minute = |by: &str| -> Vec<u64> {
        limits
            .iter()
            .filter(|p| p["config"]["limit_by"] == by)
            .map(|p| p["config"]["minute"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(per_minute("ip"), vec![gateway.per_ip]);
    assert_eq!(per_minute("header"), vec![gateway.per_user]);

    let size = plugins(&kong, "request-size-limiting");
    assert_eq!(size.len(), 1);
    let unit = match size[0]["config"]["size_unit"].as_str().unwrap() {
        "bytes" => 1,
        "kilobytes" => 1024,
        "megabytes" => 1024 * 1024,
        other => panic!("unknown size unit {other}"),
    };
    let kong_limit = size[0]["config"]["allowed_payload_size"].as_u64().unwrap() * unit;
    assert_eq!(
        kong_limit, settings.gateway.max_body_bytes as u64,
        "Kong and gateway agree on the body limit"
    );

    let correlation = plugins(&kong, "correlation-id");
    assert_eq!(correlation[0]["config"]["header_name"], "Kong-Request-ID");
    assert_eq!(plugins(&kong, "prometheus").len(), 1);
}

#[test]
fn the_jwt_secret_is_the_user_services_issuer_and_key() {
    let kong = kong();
    let settings = Settings::for_tests().unwrap();
    let secret = jwt_secret(&kong);
    assert_eq!(secret["key"], settings.auth.issuer.as_str());
    let algorithm = match settings.auth.algorithm {
        JwtAlgorithm::Hs256 => "HS256",
        JwtAlgorithm::Rs256 => "RS256",
    };
    assert_eq!(secret["algorithm"], algorithm, "Kong rejects tokens whose alg differs");
    match settings.auth.algorithm {
        JwtAlgorithm::Hs256 => assert_eq!(secret["secret"], settings.auth.jwt_secret.expose().as_str()),
        JwtAlgorithm::Rs256 => {
            let path = settings.auth.rsa_public_key_path.as_ref().expect("RS256 needs a public key");
            let pem = std::fs::read_to_string(path).unwrap();
            assert_eq!(secret["rsa_public_key"].as_str().map(str::trim), Some(pem.trim()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_the_user_service_passes_kongs_jwt_rules() {
    let kong = kong();
    let secret = jwt_secret(&kong);
    let max_expiration = plugins(&kong, "jwt")[0]["config"]["maximum_expiration"].as_i64().unwrap();

    let mesh = marquee_e2e::Mesh::start().await.unwrap();
    let token = mesh.register("kong").await.unwrap();

    let mut parts = token.split('.');
    let (header, claims) = (parts.next().unwrap(), parts.next().unwrap());
    let decode = |part: &str| -> Value {
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap())
            .unwrap()
    };
    let (header, claims) = (decode(header), decode(claims));
    assert_eq!(header["alg"], secret["algorithm"], "Kong requires alg == the secret's algorithm");
    assert_eq!(claims["iss"], secret["key"], "Kong finds the secret by iss");
    let exp = claims["exp"].as_i64().expect("exp must be a number for claims_to_verify");
    let now = chrono::Utc::now().timestamp();
    assert!(exp > now && exp - now <= max_expiration, "exp {exp} within maximum_expiration");

    // The signature verifies with the secret Kong holds.
    let key = jsonwebtoken::DecodingKey::from_secret(secret["secret"].as_str().unwrap().as_bytes());
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_exp = false;
    validation.set_required_spec_claims::<&str>(&[]);
    jsonwebtoken::decode::<Value>(&token, &key, &validation).expect("Kong verifies the signature");
}
