//! gRPC server metrics, recorded by a tower layer around every service's routes
//! (`grpc::serve` adds it):
//!
//! - `grpc_server_requests_total{service,rpc,code}`: calls finished, by the gRPC
//!   status name (`OK`, `NOT_FOUND`, `UNAVAILABLE`, …). tonic puts the status in the
//!   response headers when a call fails before answering (a "trailers-only" response,
//!   which is how a unary handler's error leaves), and in the trailers after the body
//!   otherwise, so both are read: the call is counted when the headers carry a status,
//!   else when the trailers arrive (for a stream, when it ends). A body dropped
//!   before its trailers (the client went away) counts as `CANCELLED`.
//! - `grpc_server_request_duration_seconds{service,rpc}`: a histogram of the time from
//!   the request to the response headers. For a unary call that is the handler's
//!   whole work; for a server stream (`WatchSeats`) it is the time to open it.
//!
//! Label values stay few: `service` and `rpc` come from the descriptors of Marquee's
//! own services (`marquee_proto::FILE_DESCRIPTOR_SET`), and any other path is counted
//! as `unknown`. Health checks and reflection are not recorded at all: probes every
//! few seconds would swamp the request rates and say nothing about the service's work.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::{Body, Frame, SizeHint};
use metrics::{Key, Label, Unit};
use prost::Message as _;
use tonic::Code;
use tonic::codegen::http;

use super::{META, Registry};

const REQUESTS: &str = "grpc_server_requests_total";
pub(super) const DURATION: &str = "grpc_server_request_duration_seconds";

/// Seconds: from a cached catalog read to a payment that waits on the processor.
pub(super) const DURATION_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Paths never recorded (see the module docs).
const UNRECORDED: [&str; 2] = ["/grpc.health.v1.Health/", "/grpc.reflection."];

const UNKNOWN: Rpc = Rpc { service: "unknown", method: "unknown" };

pub(super) fn describe(registry: &Registry) {
    let recorder = registry.recorder();
    metrics::Recorder::describe_counter(
        recorder,
        REQUESTS.into(),
        None,
        "gRPC calls served, by service, method and grpc-status".into(),
    );
    metrics::Recorder::describe_histogram(
        recorder,
        DURATION.into(),
        Some(Unit::Seconds),
        "Time from a gRPC request to its response headers, by service and method".into(),
    );
}

/// The labels of one RPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rpc {
    service: &'static str,
    method: &'static str,
}

/// Every RPC of Marquee's services, by path (`/marquee.booking.v1.BookingService/HoldSeats`).
static RPCS: LazyLock<HashMap<String, (String, String)>> = LazyLock::new(|| {
    let set = prost_types::FileDescriptorSet::decode(marquee_proto::FILE_DESCRIPTOR_SET).unwrap_or_default();
    let mut rpcs = HashMap::new();
    for file in &set.file {
        for service in &file.service {
            let full = format!("{}.{}", file.package(), service.name());
            for method in &service.method {
                rpcs.insert(format!("/{full}/{}", method.name()), (full.clone(), method.name().to_owned()));
            }
        }
    }
    rpcs
});

/// What a request's path is counted as; `None` for the paths never recorded.
fn rpc(path: &str) -> Option<Rpc> {
    if UNRECORDED.iter().any(|prefix| path.starts_with(prefix)) {
        return None;
    }
    Some(RPCS.get(path).map_or(UNKNOWN, |(service, method)| Rpc { service, method }))
}

/// The status name Prometheus shows, as in the gRPC spec.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn status_in(headers: &http::HeaderMap) -> Option<Code> {
    headers.get("grpc-status").map(|value| Code::from_bytes(value.as_bytes()))
}

/// The code of a response whose headers already settle it: a status in the headers
/// (trailers-only), or an HTTP error, mapped as the gRPC spec's HTTP-to-gRPC table
/// says; `None` when the trailers will tell.
fn settled_by_headers(response: &http::response::Parts) -> Option<Code> {
    if let Some(code) = status_in(&response.headers) {
        return Some(code);
    }
    match response.status.as_u16() {
        200 => None,
        400 => Some(Code::Internal),
        401 => Some(Code::Unauthenticated),
        403 => Some(Code::PermissionDenied),
        404 => Some(Code::Unimplemented),
        429 | 502 | 503 | 504 => Some(Code::Unavailable),
        _ => Some(Code::Unknown),
    }
}

/// Records gRPC server metrics on a service's `Registry` (module docs).
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    registry: Registry,
}

impl GrpcMetricsLayer {
    pub fn new(registry: &Registry) -> Self {
        Self { registry: registry.clone() }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetered<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetered { inner, registry: self.registry.clone() }
    }
}

/// The service `GrpcMetricsLayer` wraps.
#[derive(Clone)]
pub struct GrpcMetered<S> {
    inner: S,
    registry: Registry,
}

type ResponseFuture<B, E> = Pin<Box<dyn Future<Output = Result<http::Response<MeteredBody<B>>, E>> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for GrpcMetered<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    ResBody: Body + Unpin + Send + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let rpc = rpc(request.uri().path());
        let registry = self.registry.clone();
        let started = Instant::now();
        let responding = self.inner.call(request);
        Box::pin(async move {
            let result = responding.await;
            let Some(rpc) = rpc else {
                return result
                    .map(|response| response.map(|body| MeteredBody { inner: body, pending: None }));
            };
            let calls = Calls { registry, rpc };
            calls.observe(started.elapsed());
            let response = match result {
                Ok(response) => response,
                Err(error) => {
                    // The connection answers with a reset; the client sees UNKNOWN.
                    calls.finish(Code::Unknown);
                    return Err(error);
                }
            };
            let (parts, body) = response.into_parts();
            let pending = match settled_by_headers(&parts) {
                Some(code) => {
                    calls.finish(code);
                    None
                }
                None => Some(calls),
            };
            Ok(http::Response::from_parts(parts, MeteredBody { inner: body, pending }))
        })
    }
}

/// Where one call is recorded.
struct Calls {
    registry: Registry,
    rpc: Rpc,
}

impl Calls {
    fn labels(&self) -> Vec<Label> {
        vec![
            Label::from_static_parts("service", self.rpc.service),
            Label::from_static_parts("rpc", self.rpc.method),
        ]
    }

    fn observe(&self, elapsed: Duration) {
        let key = Key::from_parts(DURATION, self.labels());
        metrics::Recorder::register_histogram(self.registry.recorder(), &key, &META)
            .record(elapsed.as_secs_f64());
    }

    fn finish(&self, code: Code) {
        let mut labels = self.labels();
        labels.push(Label::from_static_parts("code", code_name(code)));
        let key = Key::from_parts(REQUESTS, labels);
        metrics::Recorder::register_counter(self.registry.recorder(), &key, &META).increment(1);
    }
}

/// A response body that counts its call when the trailers carrying its status pass.
pub struct MeteredBody<B> {
    inner: B,
    /// The call, until it is counted.
    pending: Option<Calls>,
}

impl<B> MeteredBody<B> {
    fn finish(&mut self, code: Code) {
        if let Some(calls) = self.pending.take() {
            calls.finish(code);
        }
    }
}

impl<B: Body + Unpin> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    // Trailers without a status break the protocol: the client sees UNKNOWN.
                    let code = status_in(trailers).unwrap_or(Code::Unknown);
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => self.finish(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for MeteredBody<B> {
    /// Dropped before its trailers: the client went away (or the server is stopping).
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;

    use tower::{Layer as _, ServiceExt as _};

    use super::*;

    /// A response body of fixed frames.
    struct Frames(VecDeque<Frame<&'static [u8]>>);

    impl Body for Frames {
        type Data = &'static [u8];
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn trailers(code: &'static str) -> Frame<&'static [u8]> {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static(code));
        Frame::trailers(trailers)
    }

    /// Answers `response()` to a call of `path` through the layer, reads the whole body
    /// unless `read` is false, and returns the registry's exposition.
    async fn serve(path: &str, response: impl Fn() -> http::Response<Frames>, read: bool) -> String {
        let registry = Registry::new().unwrap();
        let service = GrpcMetricsLayer::new(&registry).layer(tower::service_fn(|_: http::Request<()>| {
            std::future::ready(Ok::<_, Infallible>(response()))
        }));
        let request = http::Request::builder().uri(format!("http://service{path}")).body(()).unwrap();
        let mut body = service.oneshot(request).await.unwrap().into_body();
        if read {
            while std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await.is_some() {}
        }
        drop(body);
        registry.render()
    }

    fn ok_with_trailers(code: &'static str) -> http::Response<Frames> {
        http::Response::new(Frames(VecDeque::from([Frame::data(&b"reply"[..]), trailers(code)])))
    }

    const GET_BOOKING: &str = "/marquee.booking.v1.BookingService/GetBooking";
    const LINE: &str =
        "grpc_server_requests_total{service=\"marquee.booking.v1.BookingService\",rpc=\"GetBooking\"";

    #[tokio::test]
    async fn a_normal_response_is_counted_by_its_trailers() {
        let text = serve(GET_BOOKING, || ok_with_trailers("0"), true).await;
        assert!(text.contains(&format!("{LINE},code=\"OK\"}} 1")), "{text}");
        let text = serve(GET_BOOKING, || ok_with_trailers("14"), true).await;
        assert!(text.contains(&format!("{LINE},code=\"UNAVAILABLE\"}} 1")), "{text}");
        assert!(
            text.contains(
                "grpc_server_request_duration_seconds_count{service=\"marquee.booking.v1.BookingService\",rpc=\"GetBooking\"} 1"
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_trailers_only_response_is_counted_by_its_headers() {
        let not_found = || {
            let mut response = http::Response::new(Frames(VecDeque::new()));
            response.headers_mut().insert("grpc-status", http::HeaderValue::from_static("5"));
            response
        };
        // Counted once, whether or not the empty body is read.
        for read in [true, false] {
            let text = serve(GET_BOOKING, not_found, read).await;
            assert!(text.contains(&format!("{LINE},code=\"NOT_FOUND\"}} 1")), "{text}");
            assert!(!text.contains("code=\"CANCELLED\""), "{text}");
        }
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_trailers_is_cancelled() {
        let text = serve(GET_BOOKING, || ok_with_trailers("0"), false).await;
        assert!(text.contains(&format!("{LINE},code=\"CANCELLED\"}} 1")), "{text}");
        assert!(!text.contains("code=\"OK\""), "{text}");
    }

    #[tokio::test]
    async fn an_http_error_without_a_status_is_mapped() {
        let unavailable = || {
            let mut response = http::Response::new(Frames(VecDeque::new()));
            *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            response
        };
        let text = serve(GET_BOOKING, unavailable, true).await;
        assert!(text.contains(&format!("{LINE},code=\"UNAVAILABLE\"}} 1")), "{text}");
    }

    #[tokio::test]
    async fn labels_stay_few_and_health_checks_are_not_counted() {
        let text = serve("/scanner/probe-1234", || ok_with_trailers("12"), true).await;
        assert!(
            text.contains(
                "grpc_server_requests_total{service=\"unknown\",rpc=\"unknown\",code=\"UNIMPLEMENTED\"} 1"
            ),
            "{text}"
        );
        let text = serve("/grpc.health.v1.Health/Check", || ok_with_trailers("0"), true).await;
        assert!(!text.contains("grpc_server_requests_total{"), "{text}");
    }

    #[test]
    fn every_marquee_rpc_is_known() {
        assert_eq!(
            rpc("/marquee.cinema.v1.CinemaService/LockSeats"),
            Some(Rpc { service: "marquee.cinema.v1.CinemaService", method: "LockSeats" })
        );
        assert_eq!(
            rpc("/marquee.events.v1.EventLog/ListPublished"),
            Some(Rpc { service: "marquee.events.v1.EventLog", method: "ListPublished" })
        );
        assert!(RPCS.len() > 30, "{}", RPCS.len());
        assert_eq!(rpc("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"), None);
    }
}
