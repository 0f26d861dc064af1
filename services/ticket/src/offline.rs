//! The offline scanner behind `marquee-checkin`: a local file with the showtime's
//! public keys, its revoked tickets and the scans made on this device. `scan` decides
//! from that file alone (signature, showtime, validity window, revocation, a ticket
//! this device already admitted); `sync` brings keys and revocations up to date
//! through the gateway (revocations incrementally, from the last cursor); `upload`
//! sends the queued scans with their nonces and original times and reports the
//! tickets this device admitted that the server had already admitted elsewhere.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::domain::{self, Outcome};
use crate::keys::{PublicKey, PublicKeys};

/// One scan made on this device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalScan {
    pub nonce: String,
    pub code: String,
    pub ticket_id: Option<Uuid>,
    pub seat_id: Option<String>,
    pub scanned_at: DateTime<Utc>,
    /// What this device decided.
    pub outcome: Outcome,
    /// What the server answered on upload (`None`: not uploaded yet).
    pub server_outcome: Option<Outcome>,
    pub server_checked_in_at: Option<DateTime<Utc>>,
}

/// Everything the scanner keeps between runs, as JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScannerState {
    pub showtime_id: Option<Uuid>,
    pub keys: Vec<PublicKey>,
    /// Ticket ids revoked as of the last sync.
    pub revoked: BTreeSet<Uuid>,
    /// Where the next sync continues the revocation feed.
    pub cursor: String,
    pub synced_at: Option<DateTime<Utc>>,
    pub scans: Vec<LocalScan>,
}

/// A ticket this device admitted that another device (or an earlier scan) had
/// already admitted: two people may have got in on one ticket.
#[derive(Clone, Debug, PartialEq)]
pub struct DoubleAdmission {
    pub ticket_id: Uuid,
    pub seat_id: String,
    pub admitted_here_at: DateTime<Utc>,
    pub first_admitted_at: Option<DateTime<Utc>>,
}

/// What an upload did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UploadReport {
    pub uploaded: usize,
    pub double_admissions: Vec<DoubleAdmission>,
    /// Admitted here but revoked on the server (a cancellation after the last sync).
    pub admitted_but_revoked: Vec<Uuid>,
}

impl ScannerState {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        if !path.exists() {
            return Ok(Self::default());
        }
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a scanner state file", path.display()))
    }

    /// Writes a new file and renames it over the old one, so a crash never leaves a
    /// half-written state (and never loses a scan already recorded).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let partial = path.with_extension("partial");
        let text = serde_json::to_string_pretty(self).context("cannot encode the scanner state")?;
        std::fs::write(&partial, text).with_context(|| format!("cannot write {}", partial.display()))?;
        std::fs::rename(&partial, path).with_context(|| format!("cannot replace {}", path.display()))
    }

    pub fn verifier(&self) -> anyhow::Result<PublicKeys> {
        PublicKeys::from_published(self.keys.clone())
    }

    /// Decides one scan from local knowledge only and records it with a fresh nonce.
    pub fn scan(&mut self, keys: &PublicKeys, code: &str, at: DateTime<Utc>) -> anyhow::Result<&LocalScan> {
        let showtime_id = self.showtime_id.context("not synced yet: run `marquee-checkin sync` first")?;
        let claims = keys.verify(code.trim()).ok();
        let outcome = match &claims {
            None => Outcome::Invalid,
            Some(claims) => domain::screen(claims, showtime_id, at).unwrap_or_else(|| {
                if self.revoked.contains(&claims.ticket_id) {
                    Outcome::Revoked
                } else if self.admitted_here(claims.ticket_id) {
                    Outcome::AlreadyCheckedIn
                } else {
                    Outcome::Admitted
                }
            }),
        };
        self.scans.push(LocalScan {
            nonce: Uuid::new_v4().to_string(),
            code: code.trim().to_owned(),
            ticket_id: claims.as_ref().map(|c| c.ticket_id),
            seat_id: claims.map(|c| c.seat_id),
            scanned_at: at,
            outcome,
            server_outcome: None,
            server_checked_in_at: None,
        });
        self.scans.last().context("the scan was just recorded")
    }

    fn admitted_here(&self, ticket_id: Uuid) -> bool {
        self.scans.iter().any(|s| s.ticket_id == Some(ticket_id) && s.outcome == Outcome::Admitted)
    }
}

/// GraphQL over HTTP to the gateway, as a STAFF user.
pub struct Gateway {
    http: reqwest::Client,
    graphql_url: String,
    token: String,
}

const KEYS: &str = "{ ticketKeys { id algorithm publicKey validFrom validUntil } }";
const REVOKED: &str = "query($id: ID!, $after: String) { revokedTickets(showtimeId: $id, after: $after) { tickets { ticketId } cursor hasMore } }";
const CHECK_IN: &str = "mutation($input: CheckInInput!) { checkIn(input: $input) { outcome checkedInAt } }";

fn outcome_of(raw: &str) -> anyhow::Result<Outcome> {
    serde_json::from_value(Value::String(raw.to_owned())).with_context(|| format!("unknown outcome {raw:?}"))
}

impl Gateway {
    pub fn new(graphql_url: &str, token: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self { http, graphql_url: graphql_url.to_owned(), token: token.to_owned() })
    }

    async fn graphql(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(&self.graphql_url)
            .bearer_auth(&self.token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .context("the gateway is unreachable")?;
        let body: Value = response.json().await.context("the gateway answered something else than JSON")?;
        if let Some(errors) = body.get("errors") {
            anyhow::bail!("the gateway refused: {errors}");
        }
        body.get("data").cloned().context("the gateway answered no data")
    }

    /// Fetches the keys and the revocations since the last sync (all of them when the
    /// showtime changes); returns how many revocations were new.
    pub async fn sync(&self, state: &mut ScannerState, showtime_id: Uuid) -> anyhow::Result<usize> {
        if state.showtime_id != Some(showtime_id) {
            state.revoked.clear();
            state.cursor.clear();
            state.showtime_id = Some(showtime_id);
        }
        let keys = self.graphql(KEYS, json!({})).await?;
        let keys: Vec<PublicKey> =
            serde_json::from_value(keys["ticketKeys"].clone()).context("unexpected ticketKeys")?;
        PublicKeys::from_published(keys.clone())?;
        state.keys = keys;
        let mut fresh = 0;
        loop {
            let variables = json!({ "id": showtime_id.to_string(), "after": state.cursor });
            let page = self.graphql(REVOKED, variables).await?["revokedTickets"].clone();
            for ticket in page["tickets"].as_array().context("unexpected revokedTickets")? {
                let id = ticket["ticketId"].as_str().and_then(|id| Uuid::parse_str(id).ok());
                if state.revoked.insert(id.context("a revoked ticket without an id")?) {
                    fresh += 1;
                }
            }
            state.cursor = page["cursor"].as_str().unwrap_or_default().to_owned();
            if page["hasMore"] != json!(true) {
                break;
            }
        }
        state.synced_at = Some(Utc::now());
        Ok(fresh)
    }

    /// Uploads every scan not uploaded yet, each with its nonce and original time (a
    /// repeated upload is answered the same, so an interrupted upload is simply run
    /// again), and compares the server's answers with this device's.
    pub async fn upload(&self, state: &mut ScannerState) -> anyhow::Result<UploadReport> {
        let showtime_id = state.showtime_id.context("not synced yet")?;
        let mut report = UploadReport::default();
        for scan in state.scans.iter_mut().filter(|s| s.server_outcome.is_none()) {
            let input = json!({
                "code": scan.code,
                "showtimeId": showtime_id.to_string(),
                "nonce": scan.nonce,
                "scannedAt": scan.scanned_at.to_rfc3339(),
            });
            let answer = self.graphql(CHECK_IN, json!({ "input": input })).await?["checkIn"].clone();
            let server = outcome_of(answer["outcome"].as_str().unwrap_or_default())?;
            let checked_in_at = answer["checkedInAt"].as_str().and_then(|t| t.parse().ok());
            scan.server_outcome = Some(server);
            scan.server_checked_in_at = checked_in_at;
            report.uploaded += 1;
            if let (Outcome::Admitted, Some(ticket_id)) = (scan.outcome, scan.ticket_id) {
                match server {
                    Outcome::AlreadyCheckedIn => report.double_admissions.push(DoubleAdmission {
                        ticket_id,
                        seat_id: scan.seat_id.clone().unwrap_or_default(),
                        admitted_here_at: scan.scanned_at,
                        first_admitted_at: checked_in_at,
                    }),
                    Outcome::Revoked => report.admitted_but_revoked.push(ticket_id),
                    _ => {}
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::codec::{self, TicketClaims};

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn setup() -> (ScannerState, PublicKeys, SigningKey, Uuid) {
        use base64::Engine as _;
        let key = SigningKey::from_bytes(&[4; 32]);
        let published = PublicKey {
            id: "k".to_owned(),
            algorithm: crate::keys::ALGORITHM.to_owned(),
            public_key: base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(key.verifying_key().as_bytes()),
            valid_from: at(0),
            valid_until: at(4_000_000_000),
        };
        let showtime = Uuid::new_v4();
        let state = ScannerState { showtime_id: Some(showtime), keys: vec![published], ..Default::default() };
        let keys = state.verifier().unwrap();
        (state, keys, key, showtime)
    }

    fn code(key: &SigningKey, showtime: Uuid) -> (Uuid, String) {
        let claims = TicketClaims {
            ticket_id: Uuid::new_v4(),
            booking_id: Uuid::new_v4(),
            showtime_id: showtime,
            seat_id: "B4".to_owned(),
            valid_from: at(1_000),
            valid_until: at(2_000),
            key_id: "k".to_owned(),
        };
        (claims.ticket_id, codec::encode(&claims, key).unwrap())
    }

    #[test]
    fn an_offline_scan_decides_from_the_local_file() {
        let (mut state, keys, key, showtime) = setup();
        let (ticket, good) = code(&key, showtime);
        assert_eq!(state.scan(&keys, &good, at(1_500)).unwrap().outcome, Outcome::Admitted);
        assert_eq!(state.scan(&keys, &good, at(1_501)).unwrap().outcome, Outcome::AlreadyCheckedIn);
        assert_eq!(state.scan(&keys, &good, at(999)).unwrap().outcome, Outcome::NotYetValid);
        assert_eq!(state.scan(&keys, &good, at(2_000)).unwrap().outcome, Outcome::Expired);
        assert_eq!(state.scan(&keys, "forged", at(1_500)).unwrap().outcome, Outcome::Invalid);
        let (_, elsewhere) = code(&key, Uuid::new_v4());
        assert_eq!(state.scan(&keys, &elsewhere, at(1_500)).unwrap().outcome, Outcome::WrongShowtime);
        let (revoked_id, revoked) = code(&key, showtime);
        state.revoked.insert(revoked_id);
        assert_eq!(state.scan(&keys, &revoked, at(1_500)).unwrap().outcome, Outcome::Revoked);
        let stranger = SigningKey::from_bytes(&[5; 32]);
        let (_, foreign) = code(&stranger, showtime);
        assert_eq!(state.scan(&keys, &foreign, at(1_500)).unwrap().outcome, Outcome::Invalid);
        let nonces: BTreeSet<&str> = state.scans.iter().map(|s| s.nonce.as_str()).collect();
        assert_eq!(nonces.len(), state.scans.len(), "a nonce per scan");
        assert_eq!(state.scans[0].ticket_id, Some(ticket));
    }

    #[test]
    fn the_state_survives_a_save_and_load() {
        let (mut state, keys, key, showtime) = setup();
        let (_, good) = code(&key, showtime);
        state.scan(&keys, &good, at(1_500)).unwrap();
        let path = std::env::temp_dir().join(format!("checkin-{}.json", Uuid::new_v4().simple()));
        state.save(&path).unwrap();
        let loaded = ScannerState::load(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(loaded.unwrap(), state);
    }

    #[test]
    fn scanning_before_a_sync_is_refused() {
        let mut state = ScannerState::default();
        assert!(state.scan(&PublicKeys::default(), "x", at(0)).is_err());
    }
}
