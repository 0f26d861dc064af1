//! The ticket code: a compact binary payload signed with Ed25519, base64url without
//! padding, short enough for a QR code a phone camera reads off a screen. Pure: no
//! I/O, no clock; the README's "Ticket codes" section is the same layout in prose.
//!
//! Version 1, big-endian, every field at a fixed place or length-prefixed:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version, `1` |
//! | 16 | ticket id (UUID) |
//! | 16 | booking id (UUID) |
//! | 16 | showtime id (UUID) |
//! | 1 + n | seat id: length n (1 to 16), then n ASCII bytes |
//! | 4 | valid from, u32 seconds since the Unix epoch |
//! | 4 | valid until, u32 seconds since the Unix epoch |
//! | 1 + k | key id: length k (1 to 32), then k ASCII bytes |
//! | 64 | Ed25519 signature (RFC 8032) of every byte before it |
//!
//! Parsing refuses an unknown version, a short or long input, and any byte after the
//! signature, before a signature is ever checked.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use uuid::Uuid;

pub const VERSION: u8 = 1;
pub const MAX_SEAT_ID_BYTES: usize = 16;
pub const MAX_KEY_ID_BYTES: usize = 32;
const SIGNATURE_BYTES: usize = 64;
/// The fixed part: version, three UUIDs, two times, two length bytes.
const FIXED_BYTES: usize = 1 + 16 * 3 + 4 * 2 + 2;
/// The longest code, decoded.
pub const MAX_CODE_BYTES: usize = FIXED_BYTES + MAX_SEAT_ID_BYTES + MAX_KEY_ID_BYTES + SIGNATURE_BYTES;

/// What a code states about its ticket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketClaims {
    pub ticket_id: Uuid,
    pub booking_id: Uuid,
    pub showtime_id: Uuid,
    pub seat_id: String,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    pub key_id: String,
}

/// Why a code could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("seat id {0:?} is not 1 to 16 printable ASCII bytes")]
    SeatId(String),
    #[error("key id {0:?} is not 1 to 32 printable ASCII bytes")]
    KeyId(String),
    #[error("{0} is outside the code's time range (1970 to 2106)")]
    Time(DateTime<Utc>),
}

/// Why a string is not a well-formed code (its signature is checked separately).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Malformed {
    #[error("not base64url")]
    Encoding,
    #[error("unknown version {0}")]
    Version(u8),
    #[error("too short")]
    Truncated,
    #[error("bytes after the signature")]
    TrailingBytes,
    #[error("a field is out of range")]
    Field,
}

/// A parsed code: its claims, the bytes they were signed as, and the signature.
#[derive(Clone, Debug)]
pub struct SignedCode {
    pub claims: TicketClaims,
    message: Vec<u8>,
    signature: Signature,
}

impl SignedCode {
    /// True when `key` signed exactly these bytes (strict: no malleable signatures, no
    /// weak keys).
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        key.verify_strict(&self.message, &self.signature).is_ok()
    }

    /// The signed bytes.
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }
}

fn printable(value: &str, max: usize) -> bool {
    !value.is_empty() && value.len() <= max && value.bytes().all(|b| b.is_ascii_graphic())
}

fn seconds(at: DateTime<Utc>) -> Result<u32, EncodeError> {
    u32::try_from(at.timestamp()).map_err(|_| EncodeError::Time(at))
}

/// The signed bytes of `claims` (everything before the signature).
fn payload(claims: &TicketClaims) -> Result<Vec<u8>, EncodeError> {
    if !printable(&claims.seat_id, MAX_SEAT_ID_BYTES) {
        return Err(EncodeError::SeatId(claims.seat_id.clone()));
    }
    if !printable(&claims.key_id, MAX_KEY_ID_BYTES) {
        return Err(EncodeError::KeyId(claims.key_id.clone()));
    }
    let mut out = Vec::with_capacity(MAX_CODE_BYTES);
    out.push(VERSION);
    out.extend_from_slice(claims.ticket_id.as_bytes());
    out.extend_from_slice(claims.booking_id.as_bytes());
    out.extend_from_slice(claims.showtime_id.as_bytes());
    // Lengths were checked above: they fit a byte.
    out.push(claims.seat_id.len() as u8);
    out.extend_from_slice(claims.seat_id.as_bytes());
    out.extend_from_slice(&seconds(claims.valid_from)?.to_be_bytes());
    out.extend_from_slice(&seconds(claims.valid_until)?.to_be_bytes());
    out.push(claims.key_id.len() as u8);
    out.extend_from_slice(claims.key_id.as_bytes());
    Ok(out)
}

/// Signs `claims` with `key` (whose id must be `claims.key_id`) into a code.
pub fn encode(claims: &TicketClaims, key: &SigningKey) -> Result<String, EncodeError> {
    let mut bytes = payload(claims)?;
    let signature = key.sign(&bytes);
    bytes.extend_from_slice(&signature.to_bytes());
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Reads fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        self.take(N)?.try_into().map_err(|_| Malformed::Truncated)
    }

    fn uuid(&mut self) -> Result<Uuid, Malformed> {
        Ok(Uuid::from_bytes(self.array()?))
    }

    fn text(&mut self, max: usize) -> Result<String, Malformed> {
        let [len] = self.array()?;
        let raw = self.take(usize::from(len))?;
        let text = std::str::from_utf8(raw).map_err(|_| Malformed::Field)?;
        if !printable(text, max) {
            return Err(Malformed::Field);
        }
        Ok(text.to_owned())
    }

    fn time(&mut self) -> Result<DateTime<Utc>, Malformed> {
        let secs = u32::from_be_bytes(self.array()?);
        DateTime::from_timestamp(i64::from(secs), 0).ok_or(Malformed::Field)
    }
}

/// Parses a code without checking its signature (see `SignedCode::verify`).
pub fn parse(code: &str) -> Result<SignedCode, Malformed> {
    // A longer string cannot be a code; refuse it before decoding anything.
    if code.len() > MAX_CODE_BYTES.div_ceil(3) * 4 {
        return Err(Malformed::TrailingBytes);
    }
    let bytes = URL_SAFE_NO_PAD.decode(code.trim()).map_err(|_| Malformed::Encoding)?;
    let mut reader = Reader(&bytes);
    let [version] = reader.array()?;
    if version != VERSION {
        return Err(Malformed::Version(version));
    }
    let claims = TicketClaims {
        ticket_id: reader.uuid()?,
        booking_id: reader.uuid()?,
        showtime_id: reader.uuid()?,
        seat_id: reader.text(MAX_SEAT_ID_BYTES)?,
        valid_from: reader.time()?,
        valid_until: reader.time()?,
        key_id: reader.text(MAX_KEY_ID_BYTES)?,
    };
    let signed_len = bytes.len() - reader.0.len();
    let signature = Signature::from_bytes(&reader.array::<SIGNATURE_BYTES>()?);
    if !reader.0.is_empty() {
        return Err(Malformed::TrailingBytes);
    }
    Ok(SignedCode { claims, message: bytes[..signed_len].to_vec(), signature })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn claims() -> TicketClaims {
        TicketClaims {
            ticket_id: Uuid::from_u128(1),
            booking_id: Uuid::from_u128(2),
            showtime_id: Uuid::from_u128(3),
            seat_id: "E12".to_owned(),
            valid_from: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            valid_until: DateTime::from_timestamp(1_800_010_000, 0).unwrap(),
            key_id: "k1".to_owned(),
        }
    }

    fn bytes_of(code: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(code).unwrap()
    }

    fn code_of(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn a_code_round_trips_and_verifies_with_its_key_only() {
        let code = encode(&claims(), &key(7)).unwrap();
        let parsed = parse(&code).unwrap();
        assert_eq!(parsed.claims, claims());
        assert!(parsed.verify(&key(7).verifying_key()));
        assert!(!parsed.verify(&key(8).verifying_key()));
        assert!(code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{code}");
    }

    #[test]
    fn a_code_is_short_enough_for_a_small_qr_code() {
        let code = encode(&claims(), &key(7)).unwrap();
        // 1 + 48 + 1 + 3 + 8 + 1 + 2 + 64 bytes.
        assert_eq!(bytes_of(&code).len(), 128);
        assert_eq!(code.len(), 171);
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let bytes = bytes_of(&encode(&claims(), &key(7)).unwrap());
        assert_eq!(bytes[0], 1);
        assert_eq!(&bytes[1..17], Uuid::from_u128(1).as_bytes());
        assert_eq!(&bytes[33..49], Uuid::from_u128(3).as_bytes());
        assert_eq!(&bytes[49..53], b"\x03E12");
        assert_eq!(&bytes[53..57], &1_800_000_000u32.to_be_bytes());
        assert_eq!(&bytes[61..64], b"\x02k1");
        let signature = Signature::from_bytes(&bytes[64..].try_into().unwrap());
        key(7).verifying_key().verify_strict(&bytes[..64], &signature).unwrap();
    }

    #[test]
    fn every_truncation_and_every_extra_byte_is_refused() {
        let bytes = bytes_of(&encode(&claims(), &key(7)).unwrap());
        for len in 0..bytes.len() {
            assert!(parse(&code_of(&bytes[..len])).is_err(), "truncated to {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(parse(&code_of(&longer)).unwrap_err(), Malformed::TrailingBytes);
    }

    #[test]
    fn any_flipped_bit_fails_verification_or_parsing() {
        let bytes = bytes_of(&encode(&claims(), &key(7)).unwrap());
        let public = key(7).verifying_key();
        for index in 0..bytes.len() {
            for bit in 0..8 {
                let mut tampered = bytes.clone();
                tampered[index] ^= 1 << bit;
                let accepted = parse(&code_of(&tampered)).is_ok_and(|signed| signed.verify(&public));
                assert!(!accepted, "byte {index} bit {bit}");
            }
        }
    }

    #[test]
    fn unknown_versions_and_bad_fields_are_malformed() {
        let mut bytes = bytes_of(&encode(&claims(), &key(7)).unwrap());
        bytes[0] = 2;
        assert_eq!(parse(&code_of(&bytes)).unwrap_err(), Malformed::Version(2));
        bytes[0] = 1;
        bytes[50] = b' ';
        assert_eq!(parse(&code_of(&bytes)).unwrap_err(), Malformed::Field);
        assert_eq!(parse("not a code!").unwrap_err(), Malformed::Encoding);
        assert_eq!(parse("").unwrap_err(), Malformed::Truncated);
        assert!(parse(&"A".repeat(10_000)).is_err());
    }

    #[test]
    fn a_re_signed_code_names_the_other_key_and_fails_with_the_original() {
        let mut forged = claims();
        forged.seat_id = "A1".to_owned();
        let code = encode(&forged, &key(9)).unwrap();
        assert!(!parse(&code).unwrap().verify(&key(7).verifying_key()));
    }

    #[test]
    fn fields_that_cannot_be_encoded_are_refused() {
        let mut bad = claims();
        bad.seat_id = "X".repeat(17);
        assert!(matches!(encode(&bad, &key(1)), Err(EncodeError::SeatId(_))));
        let mut bad = claims();
        bad.key_id = String::new();
        assert!(matches!(encode(&bad, &key(1)), Err(EncodeError::KeyId(_))));
        let mut bad = claims();
        bad.valid_until = DateTime::from_timestamp(-1, 0).unwrap();
        assert!(matches!(encode(&bad, &key(1)), Err(EncodeError::Time(_))));
    }
}
