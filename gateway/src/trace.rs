//! W3C Trace Context (`traceparent`) for upstream calls, so one booking is one trace
//! across the gateway and every service it calls.
//!
//! The gateway continues the caller's trace when the request carries a valid
//! `traceparent`, otherwise it starts one. It is one span of that trace: every gRPC
//! call the request makes carries `traceparent` with the request's trace id and the
//! gateway's span id as the parent. Parsing and formatting are the service kit's, so
//! the gateway and the services share one implementation.

pub use marquee_kit::trace::{TRACEPARENT, TraceContext};
