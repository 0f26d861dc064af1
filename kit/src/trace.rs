//! W3C Trace Context (`traceparent`), so one booking is one trace across the
//! gateway and every service it reaches.
//!
//! Every hop continues the caller's trace when the request carries a valid
//! `traceparent`, otherwise it starts one, and is one span of that trace. The gRPC
//! server layer (`grpc::serve`) makes the request's context `current()` while its
//! handler runs; `outgoing` stamps a call made from there with the same trace id and
//! a new span id, a child of the handler's span. Background work with no caller
//! (sweeps, consumed events) starts a trace per unit of work with `in_new_trace`.

use std::cell::Cell;
use std::future::Future;

use tokio::task::futures::TaskLocalFuture;
use tonic::metadata::{MetadataMap, MetadataValue};
use tracing::Instrument as _;

/// The header (HTTP) and metadata key (gRPC) defined by W3C Trace Context.
pub const TRACEPARENT: &str = "traceparent";

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// One span of a trace: the trace id, this span's id and the sampling flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    /// This hop's own span: the parent of every call it makes.
    span_id: [u8; 8],
    flags: u8,
}

impl TraceContext {
    /// The span for a request with this `traceparent` value: the caller's trace when
    /// the value is valid, a new trace otherwise (the spec says to restart on an
    /// unparsable header rather than fail the request).
    pub fn for_request(traceparent: Option<&str>) -> Self {
        match traceparent.and_then(TraceParent::parse) {
            Some(incoming) => incoming.child(),
            None => Self::root(),
        }
    }

    /// `for_request` with the request's `traceparent` header (HTTP or gRPC, which
    /// share the header map type).
    pub fn from_headers(headers: &tonic::codegen::http::HeaderMap) -> Self {
        Self::for_request(headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()))
    }

    /// A new trace, sampled.
    pub fn root() -> Self {
        Self { trace_id: random_id(), span_id: random_id(), flags: 0x01 }
    }

    /// A new span in the same trace, a child of this one.
    pub fn child(&self) -> Self {
        Self { trace_id: self.trace_id, span_id: random_id(), flags: self.flags }
    }

    pub fn trace_id(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span_id)
    }

    /// The `traceparent` value for a call made from this span.
    pub fn header_value(&self) -> String {
        format!("00-{}-{}-{:02x}", hex(&self.trace_id), hex(&self.span_id), self.flags)
    }

    /// Runs `work` with this as the `current()` context.
    pub fn scope<F: Future>(self, work: F) -> TaskLocalFuture<TraceContext, F> {
        CURRENT.scope(self, work)
    }
}

/// A parsed incoming `traceparent`: the caller's trace and the caller's span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

impl TraceParent {
    /// `version-traceid-parentid-flags`; version 00 exactly, or a later version read as
    /// its first four fields (as the spec asks of version-00 parsers). `None` for
    /// anything else, including all-zero ids and upper-case hex.
    pub fn parse(raw: &str) -> Option<Self> {
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
        Some(Self { trace_id, parent_id, flags: flags[0] })
    }

    /// This hop's span: same trace and sampling decision, a new span id.
    pub fn child(&self) -> TraceContext {
        TraceContext { trace_id: self.trace_id, span_id: random_id(), flags: self.flags }
    }

    pub fn trace_id(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn parent_id(&self) -> String {
        hex(&self.parent_id)
    }
}

/// The context of the request (or unit of background work) this task serves, if any.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|context| *context).ok()
}

/// A request for an outgoing gRPC call, carrying `traceparent`: the current trace
/// and a new span id, a child of the current span (a new trace outside any).
pub fn outgoing<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    stamp(request.metadata_mut());
    request
}

/// Sets `traceparent` on outgoing metadata, as `outgoing` does.
pub fn stamp(metadata: &mut MetadataMap) {
    let context = current().map_or_else(TraceContext::root, |current| current.child());
    // The callee logs this id as its `parent.id`: this line joins the two hops' logs.
    tracing::debug!(call.span.id = %context.span_id(), "outgoing call");
    // Always ASCII hex and dashes, so the parse cannot fail; never fail a call over tracing.
    if let Ok(value) = MetadataValue::try_from(context.header_value()) {
        metadata.insert(TRACEPARENT, value);
    }
}

/// Runs `work` as the root of a new trace, inside a span that carries its id, for
/// background work no caller traced (one trace per booking swept, per event consumed).
pub async fn in_new_trace<F: Future>(work: F) -> F::Output {
    let context = TraceContext::root();
    let span = tracing::info_span!("trace", trace.id = %context.trace_id(), span.id = %context.span_id());
    context.scope(work).instrument(span).await
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
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// `N` random bytes, not all zero (an all-zero id is invalid).
///
/// Ids must be unique, not secret, so they come from a per-thread SplitMix64 stream
/// seeded once from the OS: no system call per id on every request. The stream is a
/// bijection of a counter, so one thread never repeats an id within 2^64 draws.
fn random_id<const N: usize>() -> [u8; N] {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    loop {
        let mut id = [0u8; N];
        for chunk in id.chunks_mut(8) {
            let word = STATE.with(|state| {
                let next = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
                state.set(next);
                let mut z = next;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            });
            chunk.copy_from_slice(&word.to_be_bytes()[..chunk.len()]);
        }
        if id != [0; N] {
            return id;
        }
    }
}

/// A per-thread seed from the OS; without OS randomness (tracing must never fail a
/// request) the clock and the thread, which still differ between threads.
fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_ok() {
        return u64::from_ne_bytes(bytes);
    }
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos());
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&std::thread::current().id(), &mut hasher);
    // Truncating the nanoseconds keeps their fast-moving low bits.
    (nanos as u64) ^ std::hash::Hasher::finish(&hasher)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const SPEC_EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_spec_example() {
        let parent = TraceParent::parse(SPEC_EXAMPLE).expect("valid");
        assert_eq!(parent.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.parent_id(), "00f067aa0ba902b7");
    }

    #[test]
    fn continues_a_valid_incoming_trace_under_a_new_span() {
        let context = TraceContext::for_request(Some(SPEC_EXAMPLE));
        let header = context.header_value();
        assert_eq!(context.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(header.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{header}");
        assert!(header.ends_with("-01"), "{header}");
        assert_ne!(context.span_id(), "00f067aa0ba902b7", "a new span, a child of the caller's");
        assert_eq!(&header[36..52], context.span_id());
        assert!(TraceParent::parse(&header).is_some(), "what we send is itself valid: {header}");
    }

    #[test]
    fn keeps_the_callers_sampling_flag() {
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(TraceContext::for_request(Some(unsampled)).header_value().ends_with("-00"));
        assert!(TraceContext::for_request(Some(unsampled)).child().header_value().ends_with("-00"));
    }

    #[test]
    fn starts_a_new_trace_for_a_missing_or_invalid_header() {
        for raw in [
            None,
            Some(""),
            Some("garbage"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01"),
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            Some("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g"),
        ] {
            let context = TraceContext::for_request(raw);
            assert_ne!(context.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736", "{raw:?}");
            assert!(TraceParent::parse(&context.header_value()).is_some(), "{raw:?}");
        }
        assert_ne!(TraceContext::root().trace_id(), TraceContext::root().trace_id());
    }

    #[test]
    fn ids_are_distinct_across_threads_and_never_zero() {
        let ids: Vec<Vec<String>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| (0..10_000).map(|_| TraceContext::root().header_value()).collect()))
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let all: std::collections::HashSet<&String> = ids.iter().flatten().collect();
        assert_eq!(all.len(), 40_000);
        assert!(all.iter().all(|header| TraceParent::parse(header).is_some()));
        assert_eq!(hex(&[0x00, 0x9f, 0xa0, 0xff]), "009fa0ff");
    }

    #[test]
    fn a_future_version_is_read_by_its_first_four_fields() {
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever";
        assert_eq!(TraceContext::for_request(Some(future)).trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn a_child_is_a_new_span_of_the_same_trace() {
        let parent = TraceContext::for_request(Some(SPEC_EXAMPLE));
        let child = parent.child();
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.span_id(), parent.span_id());
    }

    #[tokio::test]
    async fn outgoing_calls_are_children_of_the_current_span() {
        let context = TraceContext::for_request(Some(SPEC_EXAMPLE));
        let header = context
            .scope(async {
                assert_eq!(current(), Some(context));
                outgoing(()).metadata().get(TRACEPARENT).expect("stamped").to_str().unwrap().to_owned()
            })
            .await;
        let sent = TraceParent::parse(&header).expect("valid");
        assert_eq!(sent.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(sent.parent_id(), context.span_id(), "the call is a new span");
        assert_ne!(sent.parent_id(), "00f067aa0ba902b7");
    }

    #[tokio::test]
    async fn outside_any_trace_each_call_starts_its_own() {
        assert_eq!(current(), None);
        let trace_of = || {
            let header = outgoing(()).metadata().get(TRACEPARENT).unwrap().to_str().unwrap().to_owned();
            TraceParent::parse(&header).expect("valid").trace_id()
        };
        assert_ne!(trace_of(), trace_of());
    }

    #[tokio::test]
    async fn background_work_shares_one_new_trace() {
        let (first, second) = in_new_trace(async { (current().unwrap(), current().unwrap()) }).await;
        assert_eq!(first, second);
        let other = in_new_trace(async { current().unwrap() }).await;
        assert_ne!(first.trace_id(), other.trace_id());
    }
}
