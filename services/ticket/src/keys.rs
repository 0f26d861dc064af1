//! The signing keys from configuration, and the public keys that verify codes.
//!
//! The service holds a `Signer` (the one active key) and `PublicKeys` (every listed
//! key, active or retired); a scanner only ever holds `PublicKeys`, fetched from the
//! service. A code verifies while the key that signed it is listed.

use std::collections::HashMap;

use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::codec::{self, EncodeError, Malformed, TicketClaims};
use crate::settings::TicketSettings;

pub const ALGORITHM: &str = "Ed25519";

/// A published key: what `ticketKeys` and `/.well-known/marquee/ticket-keys.json` list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicKey {
    pub id: String,
    pub algorithm: String,
    /// The raw 32-byte key, base64url without padding.
    pub public_key: String,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
}

/// Why a code is not a ticket of ours. Every case is the outcome INVALID.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Invalid {
    #[error("malformed code: {0}")]
    Malformed(#[from] Malformed),
    #[error("signed by a key that is not listed")]
    UnknownKey,
    #[error("bad signature")]
    BadSignature,
}

/// The keys that verify codes.
#[derive(Clone, Debug, Default)]
pub struct PublicKeys {
    keys: HashMap<String, VerifyingKey>,
    listed: Vec<PublicKey>,
}

impl PublicKeys {
    /// From published keys (a scanner's sync); a key that does not decode is refused.
    pub fn from_published(listed: Vec<PublicKey>) -> anyhow::Result<Self> {
        let mut keys = HashMap::new();
        for key in &listed {
            anyhow::ensure!(key.algorithm == ALGORITHM, "key {} uses {}", key.id, key.algorithm);
            let raw: [u8; 32] = URL_SAFE_NO_PAD
                .decode(&key.public_key)
                .ok()
                .and_then(|raw| raw.try_into().ok())
                .with_context(|| format!("key {} is not 32 bytes of base64url", key.id))?;
            let verifying = VerifyingKey::from_bytes(&raw)
                .with_context(|| format!("key {} is not a valid key", key.id))?;
            keys.insert(key.id.clone(), verifying);
        }
        Ok(Self { keys, listed })
    }

    pub fn listed(&self) -> &[PublicKey] {
        &self.listed
    }

    /// The raw 32 bytes of a listed key.
    pub fn raw(&self, id: &str) -> Option<[u8; 32]> {
        self.keys.get(id).map(VerifyingKey::to_bytes)
    }

    /// The claims of `code` when a listed key signed it.
    pub fn verify(&self, code: &str) -> Result<TicketClaims, Invalid> {
        let signed = codec::parse(code)?;
        let key = self.keys.get(&signed.claims.key_id).ok_or(Invalid::UnknownKey)?;
        if !signed.verify(key) {
            return Err(Invalid::BadSignature);
        }
        Ok(signed.claims)
    }
}

impl PublicKeys {
    /// `verify` for many codes at once: the well-formed codes of listed keys are
    /// checked in one Ed25519 batch verification (about twice as fast per code); if
    /// the batch fails, each is checked alone to tell which. For a scanner working
    /// through a backlog; one scan at a time uses `verify`.
    pub fn verify_many(&self, codes: &[&str]) -> Vec<Result<TicketClaims, Invalid>> {
        let mut results: Vec<Result<TicketClaims, Invalid>> = Vec::with_capacity(codes.len());
        let mut pending = Vec::new();
        for code in codes {
            let parsed = codec::parse(code).map_err(Invalid::from).and_then(|signed| {
                let key = *self.keys.get(&signed.claims.key_id).ok_or(Invalid::UnknownKey)?;
                Ok((signed, key))
            });
            match parsed {
                Ok(found) => {
                    pending.push((results.len(), found));
                    results.push(Err(Invalid::BadSignature));
                }
                Err(invalid) => results.push(Err(invalid)),
            }
        }
        let messages: Vec<&[u8]> = pending.iter().map(|(_, (signed, _))| signed.message()).collect();
        let signatures: Vec<_> = pending.iter().map(|(_, (signed, _))| *signed.signature()).collect();
        let keys: Vec<VerifyingKey> = pending.iter().map(|(_, (_, key))| *key).collect();
        let all_good = ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok();
        for (index, (signed, key)) in pending {
            if all_good || signed.verify(&key) {
                results[index] = Ok(signed.claims);
            }
        }
        results
    }
}

/// The active key, which signs new tickets.
#[derive(Clone)]
pub struct Signer {
    id: String,
    key: SigningKey,
}

impl Signer {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Signs `claims` (their key id is set to this key's).
    pub fn sign(&self, mut claims: TicketClaims) -> Result<String, EncodeError> {
        claims.key_id.clone_from(&self.id);
        codec::encode(&claims, &self.key)
    }
}

/// Reads every configured key (inline seeds or seed files); checks the rules first.
pub fn load(settings: &TicketSettings) -> anyhow::Result<(Signer, PublicKeys)> {
    settings.validate()?;
    let mut signer = None;
    let mut listed = Vec::new();
    for key in &settings.signing_keys {
        let seed = match (&key.seed, &key.seed_file) {
            (Some(seed), _) => seed.expose().trim().to_owned(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read ticket key {} from {}", key.id, path.display()))?
                .trim()
                .to_owned(),
            (None, None) => anyhow::bail!("ticket key {} has no seed", key.id),
        };
        let seed: [u8; 32] = URL_SAFE_NO_PAD
            .decode(seed)
            .ok()
            .and_then(|raw| raw.try_into().ok())
            .with_context(|| format!("ticket key {}: the seed is not 32 bytes of base64url", key.id))?;
        let signing = SigningKey::from_bytes(&seed);
        listed.push(PublicKey {
            id: key.id.clone(),
            algorithm: ALGORITHM.to_owned(),
            public_key: URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes()),
            valid_from: key.valid_from,
            valid_until: key.valid_until,
        });
        if key.active {
            signer = Some(Signer { id: key.id.clone(), key: signing });
        }
    }
    let signer = signer.context("no active ticket signing key")?;
    Ok((signer, PublicKeys::from_published(listed)?))
}

#[cfg(test)]
mod tests {
    use crate::Settings;
    use marquee_kit::Config as _;
    use uuid::Uuid;

    use super::*;

    fn claims() -> TicketClaims {
        TicketClaims {
            ticket_id: Uuid::new_v4(),
            booking_id: Uuid::new_v4(),
            showtime_id: Uuid::new_v4(),
            seat_id: "A1".to_owned(),
            valid_from: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            valid_until: DateTime::from_timestamp(1_800_009_000, 0).unwrap(),
            key_id: String::new(),
        }
    }

    #[test]
    fn the_configured_key_signs_and_its_public_key_verifies() {
        let settings = Settings::for_tests().unwrap();
        let (signer, public) = load(&settings.ticket).unwrap();
        let code = signer.sign(claims()).unwrap();
        let verified = public.verify(&code).unwrap();
        assert_eq!(verified.key_id, signer.id());
        assert_eq!(public.listed().len(), 1);
        // Published and read back, as a scanner does.
        let again = PublicKeys::from_published(public.listed().to_vec()).unwrap();
        assert_eq!(again.verify(&code).unwrap(), verified);
    }

    #[test]
    fn a_code_of_an_unlisted_key_or_a_foreign_signature_is_invalid() {
        let settings = Settings::for_tests().unwrap();
        let (_, public) = load(&settings.ticket).unwrap();
        let mut claims = claims();
        claims.key_id = "other".to_owned();
        let stranger = codec::encode(&claims, &SigningKey::from_bytes(&[3; 32])).unwrap();
        assert_eq!(public.verify(&stranger).unwrap_err(), Invalid::UnknownKey);
        claims.key_id = settings.ticket.signing_keys[0].id.clone();
        let forged = codec::encode(&claims, &SigningKey::from_bytes(&[3; 32])).unwrap();
        assert_eq!(public.verify(&forged).unwrap_err(), Invalid::BadSignature);
        assert!(matches!(public.verify("garbage"), Err(Invalid::Malformed(_))));
    }

    #[test]
    fn many_codes_verify_at_once_and_a_bad_one_is_singled_out() {
        let settings = Settings::for_tests().unwrap();
        let (signer, public) = load(&settings.ticket).unwrap();
        let good: Vec<String> = (0..5).map(|_| signer.sign(claims()).unwrap()).collect();
        let mut forged_claims = claims();
        forged_claims.key_id = signer.id().to_owned();
        let forged = codec::encode(&forged_claims, &SigningKey::from_bytes(&[3; 32])).unwrap();
        let mut codes: Vec<&str> = good.iter().map(String::as_str).collect();
        assert!(public.verify_many(&codes).iter().all(Result::is_ok));
        codes.insert(2, &forged);
        codes.push("garbage");
        let results = public.verify_many(&codes);
        assert_eq!(results[2], Err(Invalid::BadSignature));
        assert!(matches!(results[6], Err(Invalid::Malformed(_))));
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 5);
        assert!(public.verify_many(&[]).is_empty());
    }

    #[test]
    fn seeds_are_read_from_files_too() {
        let mut settings = Settings::for_tests().unwrap().ticket;
        let path = std::env::temp_dir().join(format!("ticket-seed-{}", Uuid::new_v4().simple()));
        std::fs::write(&path, format!("{}\n", URL_SAFE_NO_PAD.encode([5u8; 32]))).unwrap();
        settings.signing_keys[0].seed = None;
        settings.signing_keys[0].seed_file = Some(path.clone());
        let loaded = load(&settings);
        std::fs::remove_file(&path).unwrap();
        let (signer, public) = loaded.unwrap();
        assert_eq!(
            public.listed()[0].public_key,
            URL_SAFE_NO_PAD.encode(SigningKey::from_bytes(&[5; 32]).verifying_key().as_bytes())
        );
        assert!(public.verify(&signer.sign(claims()).unwrap()).is_ok());
    }
}
