//! HTTP helpers for tests against a real server on 127.0.0.1: raw HTTP/1.1 over a
//! [`TcpStream`] (a delivery's request head, writing, reading until the server closes, parsing
//! the answer into a [`RawResponse`]), the stalled-body check both adapters run, and a
//! `reqwest` [`client`] that posts conformance cases, whole or in chunks, and
//! [`status_and_body`] for the `http::Response` a tower service gives.
//!
//! Behind the `http` feature. Everything runs on tokio (actix's runtime is tokio too).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use airmy_verify::testing::{Case, Delivery};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::fixtures::{PATH, json_of, valid};

/// A listener on a free 127.0.0.1 port, and its address.
///
/// # Panics
///
/// When no port can be bound.
pub async fn loopback() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

/// Writes all of `bytes` to `stream`.
///
/// # Panics
///
/// When the write fails.
pub async fn write_all(stream: &TcpStream, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        stream.writable().await.expect("writable");
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(err) => panic!("write: {err}"),
        }
    }
}

/// Reads until the server closes the connection: `Ok` with everything read, or `Err` with
/// what was read when `limit` passed with the connection still open. A reset counts as
/// closing.
///
/// # Panics
///
/// When a read fails otherwise.
pub async fn read_to_close(stream: &TcpStream, limit: Duration) -> Result<Vec<u8>, Vec<u8>> {
    let deadline = Instant::now() + limit;
    let mut read = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.readable()).await {
            Err(_) => return Err(read),
            Ok(ready) => ready.expect("readable"),
        }
        match stream.try_read(&mut buf) {
            Ok(0) => return Ok(read),
            Ok(n) => read.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            // A reset closes the connection too.
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return Ok(read),
            Err(err) => panic!("read: {err}"),
        }
    }
}

/// A response read off the wire: status, lowercase header lines, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    /// The status code of the status line.
    pub status: u16,
    /// The header lines, names lowercased, names and values trimmed.
    pub headers: Vec<(String, String)>,
    /// Everything after the head.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// Parses a whole response.
    ///
    /// # Panics
    ///
    /// When `raw` has no complete head or no status line.
    #[must_use]
    pub fn parse(raw: &[u8]) -> Self {
        let text = String::from_utf8_lossy(raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no complete response head in {text:?}"));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"));
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        Self {
            status,
            headers,
            body: body.as_bytes().to_vec(),
        }
    }

    /// The value of the first header named `name` (lowercase).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    ///
    /// # Panics
    ///
    /// When it is not JSON.
    #[must_use]
    pub fn json(&self) -> Value {
        json_of(&self.body)
    }
}

/// The request head of a delivery posted to [`PATH`], declaring `content_length` bytes of
/// body, with `Connection: close` when `close`.
#[must_use]
pub fn head(d: &Delivery, content_length: usize, close: bool) -> Vec<u8> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!(
        "POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         X-AIRMY-Signature: {}\r\nContent-Length: {content_length}\r\n{connection}\r\n",
        d.signature
    )
    .into_bytes()
}

/// Posts a delivery on a fresh connection (`Connection: close`) and reads the whole answer.
///
/// # Panics
///
/// When the connection fails or no complete answer comes within 20 s.
pub async fn raw_post(addr: SocketAddr, d: &Delivery) -> RawResponse {
    let stream = TcpStream::connect(addr).await.expect("connect");
    write_all(&stream, &head(d, d.body.len(), true)).await;
    write_all(&stream, &d.body).await;
    let raw = read_to_close(&stream, Duration::from_secs(20))
        .await
        .unwrap_or_else(|partial| {
            panic!(
                "no complete answer within 20 s: {:?}",
                String::from_utf8_lossy(&partial)
            )
        });
    RawResponse::parse(&raw)
}

/// Sends the server at `addr`, whose verifier has a body timeout of `timeout`, the head of
/// [`valid`] promising 500 bytes and 10 of them, then stalls with the connection open; checks
/// the answer is `408 {"error":"body_timeout"}` (JSON, `Connection: close`), not before
/// `timeout` and well before the default 5 s, and that the server closes the connection.
///
/// # Panics
///
/// When any of that does not hold.
pub async fn a_stalled_body_gets_408_and_the_connection_is_closed(
    addr: SocketAddr,
    timeout: Duration,
) {
    let d = valid();
    let stream = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    write_all(&stream, &head(&d, 500, false)).await;
    write_all(&stream, &d.body[..10]).await;
    let raw = read_to_close(&stream, Duration::from_secs(20))
        .await
        .unwrap_or_else(|partial| {
            panic!(
                "the server kept the connection open: {:?}",
                String::from_utf8_lossy(&partial)
            )
        });
    let waited = started.elapsed();
    let response = RawResponse::parse(&raw);
    assert_eq!(response.status, 408, "{:?}", String::from_utf8_lossy(&raw));
    assert_eq!(response.body, br#"{"error":"body_timeout"}"#);
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(response.header("content-type"), Some("application/json"));
    // Not before the configured timeout, and well before the default 5 s.
    assert!(waited >= timeout, "answered after {waited:?}");
    assert!(waited < Duration::from_secs(4), "answered after {waited:?}");
}

/// `bytes` as a stream of `chunk`-byte pieces (the last one shorter), for a streamed body.
pub fn chunks(
    bytes: &[u8],
    chunk: usize,
) -> futures_util::stream::Iter<std::vec::IntoIter<Result<Bytes, Infallible>>> {
    let chunks: Vec<Result<Bytes, Infallible>> = bytes
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures_util::stream::iter(chunks)
}

/// A client with a 20 s timeout that never uses a proxy.
///
/// # Panics
///
/// When it cannot be built.
#[must_use]
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .no_proxy()
        .build()
        .expect("client")
}

/// `bytes` as a streamed request body (no `Content-Length`) of `chunk`-byte pieces.
#[must_use]
pub fn chunked(bytes: &[u8], chunk: usize) -> reqwest::Body {
    reqwest::Body::wrap_stream(chunks(bytes, chunk))
}

/// Posts `body` to [`PATH`] on `addr` with the case's signature headers; the status and
/// body of the answer.
///
/// # Panics
///
/// When a signature is no valid header value or no answer comes.
pub async fn post_case(
    client: &reqwest::Client,
    addr: SocketAddr,
    case: &Case,
    body: reqwest::Body,
) -> (u16, Bytes) {
    let mut request = client.post(format!("http://{addr}{PATH}")).body(body);
    for value in &case.signatures {
        request = request.header(
            "x-airmy-signature",
            reqwest::header::HeaderValue::from_bytes(value).expect("valid header value"),
        );
    }
    let response = request.send().await.expect("response");
    let status = response.status().as_u16();
    (status, response.bytes().await.expect("body"))
}

/// Checks an answer to `case` from a route answering `{"id", "type"}` of the verified event:
/// the case's status, and its exact error body or that JSON.
///
/// # Panics
///
/// When the answer differs, naming the case.
pub fn assert_answers_case(case: &Case, status: u16, body: &[u8]) {
    assert_eq!(status, case.status, "{}", case.name);
    if let Some(expected) = case.error_body() {
        assert_eq!(body, expected.as_bytes(), "{}", case.name);
    } else {
        let got: Value = serde_json::from_slice(body).expect("JSON");
        let (id, event_type) = case.event.clone().expect("event");
        assert_eq!(
            got,
            json!({ "id": id, "type": event_type }),
            "{}",
            case.name
        );
    }
}

/// The status and the whole body of a response (from a tower service, such as an axum
/// router).
///
/// # Panics
///
/// When the body fails.
pub async fn status_and_body<B>(response: http::Response<B>) -> (http::StatusCode, Bytes)
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let status = response.status();
    (status, body_bytes(response.into_body()).await)
}

/// The whole of `body`.
///
/// # Panics
///
/// When the body fails.
pub async fn body_bytes<B>(body: B) -> Bytes
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    use http_body_util::BodyExt;
    body.collect().await.expect("body").to_bytes()
}
