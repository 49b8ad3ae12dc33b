//! A scripted HTTP/2 peer on 127.0.0.1:0: it speaks just enough HTTP/2 (the connection preface,
//! `SETTINGS` and `PING` acknowledgements) for a real hyper/tonic client to connect, and answers
//! every request as its script says: a stream reset, a `GOAWAY`, a closed socket, or silence.
//! The transport errors a client then sees are the ones the real libraries produce, which the
//! classifier's tests need (their constructors are private to tonic, hyper and h2).
//!
//! Used by `src/balance/transport.rs`'s unit tests and by the component tests.

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the peer does with each request (a `HEADERS` frame opening a stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// `RST_STREAM` on the request's stream with this error code; the connection stays up.
    Reset(u32),
    /// `GOAWAY` with last stream ID 0 (no stream processed) and this error code; the socket stays
    /// open until the client closes it.
    GoAway(u32),
    /// Closes the socket.
    Close,
    /// Nothing: the stream stays open; pings are still answered.
    Silent,
    /// Nothing, and pings go unanswered too: a connection that stopped responding.
    Deaf,
    /// Response headers (`200`, `application/grpc`), then nothing: a call the server committed
    /// to and is still working on.
    Respond,
    /// A `DATA` frame on the request's stream before any response headers: a protocol error
    /// that ends the connection (the client answers `GOAWAY(PROTOCOL_ERROR)`).
    DataFirst,
    /// Response headers that are malformed (a request's `:method` pseudo-header): a protocol
    /// error on that stream only (the client resets it).
    Malformed,
}

/// HTTP/2 error codes (RFC 9113 section 7).
pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const INTERNAL_ERROR: u32 = 0x2;
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// A running scripted peer. Stops accepting when dropped.
pub struct ScriptedPeer {
    pub addr: SocketAddr,
    /// Requests (streams opened) seen so far, over every connection.
    requests: Arc<AtomicUsize>,
    /// Connections accepted so far.
    connections: Arc<AtomicUsize>,
    /// The error codes of the `RST_STREAM`s the client sent.
    resets: Arc<Mutex<Vec<u32>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedPeer {
    /// Starts a peer on the current runtime.
    pub async fn start(script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let resets = Arc::new(Mutex::new(Vec::new()));
        let (seen, accepted) = (Arc::clone(&requests), Arc::clone(&connections));
        let reset = Arc::clone(&resets);
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(socket, script, Arc::clone(&seen), Arc::clone(&reset)));
            }
        });
        Self {
            addr,
            requests,
            connections,
            resets,
            task,
        }
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The error codes of the streams the client reset, in order.
    pub fn resets(&self) -> Vec<u32> {
        self.resets.lock().unwrap().clone()
    }
}

impl Drop for ScriptedPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// HPACK for `:status: 200` (static entry 8) and `content-type: application/grpc` (a literal
/// with the static name 31, not Huffman-coded).
const RESPONSE: [u8; 19] = [
    0x88, 0x5f, 0x10, b'a', b'p', b'p', b'l', b'i', b'c', b'a', b't', b'i', b'o', b'n', b'/', b'g',
    b'r', b'p', b'c',
];

async fn serve(
    mut socket: TcpStream,
    script: Script,
    requests: Arc<AtomicUsize>,
    resets: Arc<Mutex<Vec<u32>>>,
) {
    let _ = socket.set_nodelay(true);
    let mut preface = [0u8; 24];
    if socket.read_exact(&mut preface).await.is_err() {
        return;
    }
    if socket.write_all(&frame(SETTINGS, 0, 0, &[])).await.is_err() {
        return;
    }
    loop {
        let mut header = [0u8; 9];
        if socket.read_exact(&mut header).await.is_err() {
            return;
        }
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let (kind, flags) = (header[3], header[4]);
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        if socket.read_exact(&mut payload).await.is_err() {
            return;
        }
        let reply = match kind {
            SETTINGS if flags & ACK == 0 => Some(frame(SETTINGS, ACK, 0, &[])),
            PING if flags & ACK == 0 && script != Script::Deaf => {
                Some(frame(PING, ACK, 0, &payload))
            }
            RST_STREAM if payload.len() == 4 => {
                let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                resets.lock().unwrap().push(code);
                None
            }
            HEADERS => {
                requests.fetch_add(1, Ordering::SeqCst);
                match script {
                    Script::Reset(code) => Some(frame(RST_STREAM, 0, stream, &code.to_be_bytes())),
                    Script::GoAway(code) => {
                        let mut body = 0u32.to_be_bytes().to_vec();
                        body.extend_from_slice(&code.to_be_bytes());
                        Some(frame(GOAWAY, 0, 0, &body))
                    }
                    Script::Close => return,
                    Script::DataFirst => Some(frame(DATA, 0, stream, &[0])),
                    // HPACK: 0x82 is the static table's `:method: GET`.
                    Script::Malformed => Some(frame(HEADERS, END_HEADERS, stream, &[0x82])),
                    Script::Silent | Script::Deaf => None,
                    Script::Respond => Some(frame(HEADERS, END_HEADERS, stream, &RESPONSE)),
                }
            }
            // Request bodies, window updates, resets from the client: nothing to answer.
            _ => None,
        };
        if let Some(reply) = reply
            && socket.write_all(&reply).await.is_err()
        {
            return;
        }
    }
}
