//! A lean unary gRPC client for load generation: requests go straight onto HTTP/2
//! streams of one connection (the `h2` crate), without tonic's client stack.
//!
//! tonic's `Channel` passes every call through a buffer task and hyper's dispatch task
//! before it reaches the connection; on a 2-core machine that also runs the server and
//! PostgreSQL, those hops cost the service under test about as much CPU as it spends
//! itself. This client does what a dedicated load tool (h2load, ghz) does: frame the
//! message, open a stream, read the status. Replies are judged by their `grpc-status`
//! (and error details); reply bodies are drained, not decoded.

use std::net::SocketAddr;

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request};
use tokio::net::TcpStream;

/// One HTTP/2 connection; clones share it and may call concurrently.
#[derive(Clone)]
pub struct LeanChannel {
    send: h2::client::SendRequest<Bytes>,
    authority: String,
}

impl LeanChannel {
    /// Connects to a plaintext gRPC server (TCP_NODELAY, like tonic's default).
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
        tcp.set_nodelay(true)?;
        let (send, connection) = h2::client::handshake(tcp).await.context("HTTP/2 handshake failed")?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                eprintln!("lean gRPC connection ended: {error}");
            }
        });
        Ok(Self { send, authority: addr.to_string() })
    }

    /// Calls `path` (e.g. `/pkg.Service/Method`) with `message`; `Ok(())` for an OK
    /// status, the status otherwise.
    pub async fn unary(
        &self,
        path: &str,
        message: &impl prost::Message,
    ) -> anyhow::Result<Result<(), tonic::Status>> {
        let mut frame = BytesMut::with_capacity(5 + message.encoded_len());
        frame.put_u8(0); // not compressed
        frame.put_u32(u32::try_from(message.encoded_len()).context("message too large")?);
        message.encode(&mut frame).context("cannot encode the request")?;

        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{}{path}", self.authority))
            .header(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"))
            .header(http::header::TE, HeaderValue::from_static("trailers"))
            .body(())
            .context("cannot build the request")?;
        let mut send = self.send.clone().ready().await.context("connection closed")?;
        let (response, mut stream) = send.send_request(request, false).context("cannot open a stream")?;
        stream.send_data(frame.freeze(), true).context("cannot send the request")?;

        let response = response.await.context("no response")?;
        // An error is usually "trailers-only": the status is in the response headers.
        if let Some(status) = status_of(response.headers()) {
            return Ok(status);
        }
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.context("response body failed")?;
            body.flow_control().release_capacity(chunk.len()).context("flow control")?;
        }
        let trailers = body.trailers().await.context("response trailers failed")?.unwrap_or_default();
        status_of(&trailers).context("the response carried no grpc-status")
    }
}

fn status_of(headers: &HeaderMap) -> Option<Result<(), tonic::Status>> {
    let status = tonic::Status::from_header_map(headers)?;
    Some(if status.code() == tonic::Code::Ok { Ok(()) } else { Err(status) })
}
