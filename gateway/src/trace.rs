//! W3C Trace Context (`traceparent`) for upstream calls, so one booking is one trace
//! across the gateway and every service it calls.
//!
//! The gateway continues the caller's trace when the request carries a valid
//! `traceparent`, otherwise it starts one. It is one span of that trace: every gRPC
//! call the request makes carries `traceparent` with the request's trace id and the
//! gateway's span id as the parent.

use std::fmt::Write as _;

/// The header (HTTP) and metadata key (gRPC) defined by W3C Trace Context.
pub const TRACEPARENT: &str = "traceparent";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    /// The gateway's own span: the parent of every upstream call.
    span_id: [u8; 8],
    flags: u8,
}

impl TraceContext {
    /// The gateway's span for a request with this `traceparent` header value: the
    /// caller's trace when the value is valid, a new trace otherwise (the spec says
    /// to restart on an unparsable header rather than fail the request).
    pub fn for_request(traceparent: Option<&str>) -> Self {
        match traceparent.and_then(Incoming::parse) {
            Some(incoming) => {
                Self { trace_id: incoming.trace_id, span_id: random_span_id(), flags: incoming.flags }
            }
            None => Self::root(),
        }
    }

    /// `for_request` with the request's `traceparent` header. Each operation of a
    /// batch gets its own gateway span within the caller's trace.
    pub fn from_headers(headers: &axum::http::HeaderMap) -> Self {
        Self::for_request(headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()))
    }

    /// A new trace, sampled.
    pub fn root() -> Self {
        let mut trace_id = [0u8; 16];
        // All zeros is invalid; an OS without randomness still gets a valid (if
        // guessable) id, since tracing must never fail a request.
        if getrandom::fill(&mut trace_id).is_err() || trace_id == [0; 16] {
            trace_id = fallback_bytes();
        }
        Self { trace_id, span_id: random_span_id(), flags: 0x01 }
    }

    pub fn trace_id(&self) -> String {
        hex(&self.trace_id)
    }

    /// The `traceparent` value for a call made from the gateway's span.
    pub fn header_value(&self) -> String {
        format!("00-{}-{}-{:02x}", hex(&self.trace_id), hex(&self.span_id), self.flags)
    }
}

struct Incoming {
    trace_id: [u8; 16],
    flags: u8,
}

impl Incoming {
    /// `version-traceid-parentid-flags`; version 00 exactly, or a later version read as
    /// its first four fields (as the spec asks of version-00 parsers).
    fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let mut parts = raw.split('-');
        let version = parse_hex::<1>(parts.next()?)?;
        let trace_id = parse_hex::<16>(parts.next()?)?;
        let parent_id = parse_hex::<8>(parts.next()?)?;
        let flags = parse_hex::<1>(parts.next()?)?;
        let rest_ok = match version[0] {
            0xff => false,
            0x00 => parts.next().is_none(),
            _ => true,
        };
        if !rest_ok || trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self { trace_id, flags: flags[0] })
    }
}

/// Exactly `2 * N` lowercase hex digits.
fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn random_span_id() -> [u8; 8] {
    let mut id = [0u8; 8];
    if getrandom::fill(&mut id).is_err() || id == [0; 8] {
        id.copy_from_slice(&fallback_bytes()[..8]);
    }
    id
}

fn fallback_bytes() -> [u8; 16] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(1)
        .max(1);
    nanos.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn continues_a_valid_incoming_trace_under_a_new_span() {
        let context = TraceContext::for_request(Some(SPEC_EXAMPLE));
        let header = context.header_value();
        assert_eq!(context.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(header.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{header}");
        assert!(header.ends_with("-01"), "{header}");
        assert_ne!(&header[36..52], "00f067aa0ba902b7", "the gateway is a new span, a child of the caller's");
        assert!(Incoming::parse(&header).is_some(), "what we send is itself valid: {header}");
    }

    #[test]
    fn keeps_the_callers_sampling_flag() {
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(TraceContext::for_request(Some(unsampled)).header_value().ends_with("-00"));
    }

    #[test]
    fn starts_a_new_trace_for_a_missing_or_invalid_header() {
        for raw in [
            None,
            Some(""),
            Some("garbage"),
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            Some("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"),
        ] {
            let context = TraceContext::for_request(raw);
            assert_ne!(context.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736", "{raw:?}");
            assert!(Incoming::parse(&context.header_value()).is_some(), "{raw:?}");
        }
        assert_ne!(TraceContext::root().trace_id(), TraceContext::root().trace_id());
    }

    #[test]
    fn a_future_version_is_read_by_its_first_four_fields() {
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever";
        assert_eq!(TraceContext::for_request(Some(future)).trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
