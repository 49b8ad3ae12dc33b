//! A fault-injecting HTTP/1.1 reverse proxy for tests: put it between an AWS SDK client and moto
//! to make chosen operations fail (throttling, server errors) and to count the calls each
//! operation received.
//!
//! ```no_run
//! # fn demo() -> Result<(), local_stack::Error> {
//! use local_stack::fault::{Fault, FaultProxy};
//!
//! let moto = local_stack::MotoServer::shared();
//! let proxy = FaultProxy::start(moto.endpoint())?;
//! // Point a client at the proxy instead of moto.
//! let config = aws_sdk_servicediscovery::config::Builder::from(&moto.sdk_config())
//!     .endpoint_url(proxy.endpoint())
//!     .build();
//! let cloudmap = aws_sdk_servicediscovery::Client::from_conf(config);
//!
//! proxy.fail("RegisterInstance", Fault::Throttle);   // every call, until cleared
//! proxy.fail_times("GetInstance", Fault::ServerError, 1); // the next call only
//! // ... run the code under test ...
//! assert_eq!(proxy.count("RegisterInstance"), 1);
//! // What each request carried (JSON protocols: the parameters).
//! let bodies: Vec<String> = proxy.bodies("RegisterInstance");
//! proxy.clear();
//! # Ok(()) }
//! ```
//!
//! The operation of a request is read the way AWS routes it: the `X-Amz-Target` header (JSON
//! protocols: Cloud Map, ECS), the `/service/…/operation/NAME` path (Smithy RPC v2 CBOR:
//! CloudWatch), or the `Action=` form field (query protocol). Anything else is counted as
//! `METHOD /path`. A fault answer is spelled in the request's protocol (JSON, CBOR or XML) with
//! the error code in `x-amzn-ErrorType` too, so SDKs classify it as they would AWS's.
//!
//! The proxy serves on `127.0.0.1:0` from plain threads (no async runtime needed, so a test on
//! any runtime, or a separate process such as the Lambda under `cargo lambda watch`, can use it).
//! It keeps client connections alive and opens one upstream connection per request.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::Error;

/// How a faulted request is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 400 `ThrottlingException` (what Cloud Map and ECS answer when throttling).
    Throttle,
    /// 500 `InternalFailure`.
    ServerError,
    /// Any status and error code.
    Status {
        /// HTTP status.
        status: u16,
        /// AWS error code, e.g. `AccessDeniedException`.
        code: String,
    },
}

impl Fault {
    fn status_and_code(&self) -> (u16, &str) {
        match self {
            Self::Throttle => (400, "ThrottlingException"),
            Self::ServerError => (500, "InternalFailure"),
            Self::Status { status, code } => (*status, code),
        }
    }
}

#[derive(Debug)]
struct Rule {
    operation: String,
    fault: Fault,
    /// `None`: until cleared.
    remaining: Option<u32>,
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<Rule>,
    counts: BTreeMap<String, u64>,
    faults: BTreeMap<String, u64>,
    /// Request bodies by operation, in arrival order.
    bodies: BTreeMap<String, Vec<String>>,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    state: Mutex<State>,
    stopping: AtomicBool,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts and records the request and returns the fault to answer it with, if any.
    fn admit(&self, operation: &str, body: &[u8]) -> Option<Fault> {
        let mut state = self.state();
        *state.counts.entry(operation.to_owned()).or_insert(0) += 1;
        state
            .bodies
            .entry(operation.to_owned())
            .or_default()
            .push(String::from_utf8_lossy(body).into_owned());
        let index = state.rules.iter().position(|r| r.operation == operation)?;
        let rule = &mut state.rules[index];
        let fault = rule.fault.clone();
        if let Some(remaining) = &mut rule.remaining {
            *remaining -= 1;
            if *remaining == 0 {
                state.rules.remove(index);
            }
        }
        *state.faults.entry(operation.to_owned()).or_insert(0) += 1;
        Some(fault)
    }
}

/// The proxy. Stops accepting connections when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:0` in front of `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> Result<Self, Error> {
        let upstream_addr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse::<SocketAddr>()
            .map_err(|e| Error::Start {
                detail: format!("fault proxy upstream {upstream:?} is not http://IP:PORT: {e}"),
            })?;
        let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(|source| Error::Http {
            what: "binding the fault proxy".into(),
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| Error::Http {
            what: "the fault proxy's address".into(),
            source,
        })?;
        let shared = Arc::new(Shared {
            upstream: upstream_addr,
            state: Mutex::new(State::default()),
            stopping: AtomicBool::new(false),
        });
        let accepting = Arc::clone(&shared);
        let acceptor = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if accepting.stopping.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let shared = Arc::clone(&accepting);
                    let _ = std::thread::Builder::new()
                        .name("fault-proxy-conn".into())
                        .spawn(move || serve(&shared, stream));
                }
            })
            .map_err(|source| Error::Http {
                what: "starting the fault proxy thread".into(),
                source,
            })?;
        Ok(Self {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The endpoint URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers every request for `operation` with `fault` until [`FaultProxy::clear`].
    pub fn fail(&self, operation: &str, fault: Fault) {
        self.add(operation, fault, None);
    }

    /// Answers the next `times` requests for `operation` with `fault`.
    pub fn fail_times(&self, operation: &str, fault: Fault, times: u32) {
        if times > 0 {
            self.add(operation, fault, Some(times));
        }
    }

    fn add(&self, operation: &str, fault: Fault, remaining: Option<u32>) {
        let mut state = self.shared.state();
        state.rules.retain(|r| r.operation != operation);
        state.rules.push(Rule {
            operation: operation.to_owned(),
            fault,
            remaining,
        });
    }

    /// Removes every fault: all requests are forwarded again.
    pub fn clear(&self) {
        self.shared.state().rules.clear();
    }

    /// Requests received for `operation` (forwarded or faulted) since the start or the last
    /// [`FaultProxy::reset_counts`].
    pub fn count(&self, operation: &str) -> u64 {
        self.shared
            .state()
            .counts
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// Requests received, by operation.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.shared.state().counts.clone()
    }

    /// Requests answered with a fault, by operation.
    pub fn faults_served(&self) -> BTreeMap<String, u64> {
        self.shared.state().faults.clone()
    }

    /// The bodies of the requests received for `operation` (forwarded or faulted), in arrival
    /// order, as text (for the JSON protocols, the call's parameters), since the start or the
    /// last [`FaultProxy::reset_counts`].
    pub fn bodies(&self, operation: &str) -> Vec<String> {
        self.shared
            .state()
            .bodies
            .get(operation)
            .cloned()
            .unwrap_or_default()
    }

    /// Sets every count to zero and forgets the recorded bodies.
    pub fn reset_counts(&self) {
        let mut state = self.shared.state();
        state.counts.clear();
        state.faults.clear();
        state.bodies.clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        // Wake the acceptor so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// One HTTP/1.1 message (request or response) as read off the wire.
#[derive(Debug)]
struct Message {
    start_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Serves one client connection until it closes.
fn serve(shared: &Shared, stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while !shared.stopping.load(Ordering::Relaxed) {
        let Ok(Some(request)) = read_message(&mut reader, true) else {
            break;
        };
        let operation = operation(&request);
        let response = match shared.admit(&operation, &request.body) {
            Some(fault) => fault_response(&request, &fault),
            None => forward(shared.upstream, &request).unwrap_or_else(|e| {
                plain_response(
                    502,
                    "Bad Gateway",
                    &format!("fault proxy: upstream failed: {e}"),
                )
            }),
        };
        let close = request
            .header("Connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if write_response(&mut writer, &response, close).is_err() || close {
            break;
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
}

/// The AWS operation a request calls.
fn operation(request: &Message) -> String {
    if let Some(target) = request.header("X-Amz-Target") {
        return target
            .rsplit('.')
            .next()
            .unwrap_or(target)
            .trim()
            .to_owned();
    }
    let path = request.start_line.split_whitespace().nth(1).unwrap_or("/");
    if let Some((_, op)) = path.split_once("/operation/") {
        return op.split(['?', '/']).next().unwrap_or(op).to_owned();
    }
    let body = String::from_utf8_lossy(&request.body);
    if let Some(action) = body
        .split('&')
        .find_map(|pair| pair.strip_prefix("Action="))
    {
        return action.to_owned();
    }
    let method = request.start_line.split_whitespace().next().unwrap_or("?");
    format!("{method} {}", path.split('?').next().unwrap_or(path))
}

/// Reads one message; `Ok(None)` at a clean end of stream before a message starts.
fn read_message(reader: &mut impl BufRead, request: bool) -> std::io::Result<Option<Message>> {
    let mut start_line = String::new();
    if reader.read_line(&mut start_line)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    let mut message = Message {
        start_line: start_line.trim_end().to_owned(),
        headers,
        body: Vec::new(),
    };
    let chunked = message
        .header("Transfer-Encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        message.body = read_chunked(reader)?;
    } else if let Some(length) = message.header("Content-Length") {
        let length: usize = length
            .parse()
            .map_err(|_| std::io::Error::other("bad Content-Length"))?;
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        message.body = body;
    } else if !request {
        // A response without a length ends with the connection.
        reader.read_to_end(&mut message.body)?;
    }
    Ok(Some(message))
}

fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line)?;
        let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
            .map_err(|_| std::io::Error::other("bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf)?;
    }
}

/// Sends the request upstream on a fresh connection and reads the whole answer.
fn forward(upstream: SocketAddr, request: &Message) -> std::io::Result<Message> {
    let mut stream = TcpStream::connect(upstream)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = end_to_end_head(request);
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        request.body.len()
    ));
    stream.write_all(head.as_bytes())?;
    stream.write_all(&request.body)?;
    let mut reader = BufReader::new(stream);
    read_message(&mut reader, false)?.ok_or_else(|| std::io::ErrorKind::UnexpectedEof.into())
}

/// The start line and the end-to-end headers of `message`; the framing headers (length,
/// connection) are the caller's, as this proxy re-frames every message.
fn end_to_end_head(message: &Message) -> String {
    let mut head = format!("{}\r\n", message.start_line);
    for (name, value) in &message.headers {
        let hop_by_hop = [
            "connection",
            "keep-alive",
            "transfer-encoding",
            "content-length",
        ]
        .contains(&name.to_ascii_lowercase().as_str());
        if !hop_by_hop {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head
}

fn write_response(writer: &mut impl Write, response: &Message, close: bool) -> std::io::Result<()> {
    let mut head = end_to_end_head(response);
    head.push_str(&format!("Content-Length: {}\r\n", response.body.len()));
    head.push_str(if close {
        "Connection: close\r\n\r\n"
    } else {
        "Connection: keep-alive\r\n\r\n"
    });
    writer.write_all(head.as_bytes())?;
    writer.write_all(&response.body)?;
    writer.flush()
}

fn plain_response(status: u16, reason: &str, text: &str) -> Message {
    Message {
        start_line: format!("HTTP/1.1 {status} {reason}"),
        headers: vec![("Content-Type".into(), "text/plain".into())],
        body: text.as_bytes().to_vec(),
    }
}

/// An AWS error answer in the request's protocol.
fn fault_response(request: &Message, fault: &Fault) -> Message {
    let (status, code) = fault.status_and_code();
    let message = format!("injected by the fault proxy: {code}");
    let reason = if status >= 500 {
        "Server Error"
    } else {
        "Client Error"
    };
    let (content_type, body) = if request.header("X-Amz-Target").is_some() {
        let body = format!(r#"{{"__type":"{code}","message":"{message}"}}"#);
        ("application/x-amz-json-1.1", body.into_bytes())
    } else if request
        .header("smithy-protocol")
        .is_some_and(|p| p.eq_ignore_ascii_case("rpc-v2-cbor"))
    {
        (
            "application/cbor",
            cbor_text_map(&[("__type", code), ("message", &message)]),
        )
    } else {
        let body = format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>\
             <Message>{message}</Message></Error><RequestId>fault-proxy</RequestId></ErrorResponse>"
        );
        ("text/xml", body.into_bytes())
    };
    let mut headers = vec![
        ("Content-Type".to_owned(), content_type.to_owned()),
        ("x-amzn-ErrorType".to_owned(), code.to_owned()),
        ("x-amzn-RequestId".to_owned(), "fault-proxy".to_owned()),
    ];
    if content_type == "application/cbor" {
        headers.push(("smithy-protocol".into(), "rpc-v2-cbor".into()));
    }
    Message {
        start_line: format!("HTTP/1.1 {status} {reason}"),
        headers,
        body,
    }
}

/// A CBOR map of text keys to text values (RFC 8949 major types 5 and 3), enough for an error
/// body.
fn cbor_text_map(pairs: &[(&str, &str)]) -> Vec<u8> {
    fn head(out: &mut Vec<u8>, major: u8, len: usize) {
        let major = major << 5;
        match len {
            0..=23 => out.push(major | u8::try_from(len).unwrap_or(0)),
            24..=0xff => out.extend([major | 24, u8::try_from(len).unwrap_or(0)]),
            _ => {
                out.push(major | 25);
                out.extend(u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
            }
        }
    }
    let mut out = Vec::new();
    head(&mut out, 5, pairs.len());
    for (key, value) in pairs {
        for text in [key, value] {
            head(&mut out, 3, text.len());
            out.extend(text.as_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(start: &str, headers: &[(&str, &str)], body: &str) -> Message {
        Message {
            start_line: start.into(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn operations_by_protocol() {
        let json = request(
            "POST / HTTP/1.1",
            &[("x-amz-target", "Route53AutoNaming_v20170314.GetInstance")],
            "{}",
        );
        assert_eq!(operation(&json), "GetInstance");
        let cbor = request(
            "POST /service/GraniteServiceVersion20100801/operation/GetMetricData HTTP/1.1",
            &[],
            "",
        );
        assert_eq!(operation(&cbor), "GetMetricData");
        let query = request(
            "POST / HTTP/1.1",
            &[],
            "Action=DescribeSubnets&Version=2016-11-15",
        );
        assert_eq!(operation(&query), "DescribeSubnets");
        let other = request("GET /moto-api/data.json?x=1 HTTP/1.1", &[], "");
        assert_eq!(operation(&other), "GET /moto-api/data.json");
    }

    #[test]
    fn cbor_error_body() {
        // {"a": "bc"}
        assert_eq!(
            cbor_text_map(&[("a", "bc")]),
            [0xa1, 0x61, b'a', 0x62, b'b', b'c']
        );
        let long = "x".repeat(30);
        let encoded = cbor_text_map(&[("k", &long)]);
        assert_eq!(&encoded[..5], &[0xa1, 0x61, b'k', 0x78, 30]);
    }

    #[test]
    fn chunked_bodies_are_joined() {
        let wire = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer: x\r\n\r\n";
        let body = read_chunked(&mut &wire[..]).unwrap();
        assert_eq!(body, b"Wikipedia");
    }
}
