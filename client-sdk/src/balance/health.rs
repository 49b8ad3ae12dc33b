//! Client-side health checking (gRFC A17): a `grpc.health.v1.Health/Watch` stream on every open
//! connection; while the server says it is not serving, the instance takes no new calls.
//!
//! - `SERVING`: eligible. Any other status (`NOT_SERVING`, `SERVICE_UNKNOWN`, `UNKNOWN`): not
//!   eligible until the server says `SERVING` again; the table is rebuilt within a task wake-up.
//! - The call fails `UNIMPLEMENTED`: the server has no health service; the instance is used
//!   normally and the watch is not retried (as A17).
//! - The stream ends or fails otherwise: it is re-opened with exponential backoff (reset when
//!   the stream had delivered a message, so the first re-open is immediate, as A17). Meanwhile
//!   the status is unknown and the *connection's* state decides eligibility: a live connection
//!   is used. (A17 would treat the instance as failing until the stream is back. A broken health
//!   stream alone, say a proxy's idle timeout or a health service restart, does not mean calls
//!   fail; a dead connection is caught by the connection watch and keep-alives either way.)
//! - The connection closes or receives `GOAWAY`: the watch is cancelled (as A17 says), so it does
//!   not hold a draining server's connection open; the next connection starts its own.
//! - A new connection is used before its first health answer (A17 waits for it, which costs a
//!   round trip on every new connection; the call that opened the connection goes ahead).
//!
//! The messages are encoded by hand (two one-field protobuf messages), so the crate needs no
//! protobuf runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bytes::{Buf, BufMut};
use tokio::sync::Notify;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::endpoint::Liveness;

/// What the health watch says about an instance's current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HealthStatus {
    /// No answer on the current connection (not connected yet, waiting for the first answer, or
    /// the stream is being re-opened): the connection decides.
    Unknown,
    /// The server says `SERVING`.
    Serving,
    /// The server says it is not serving (`NOT_SERVING`, `SERVICE_UNKNOWN` or `UNKNOWN`): no new
    /// calls.
    NotServing,
    /// The server has no health service (`UNIMPLEMENTED`): used normally.
    Unimplemented,
    /// Health checking is off ([`HealthCheck::enabled`]).
    Disabled,
}

impl HealthStatus {
    /// A short name, e.g. `not-serving` (also the metric label).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Serving => "serving",
            Self::NotServing => "not-serving",
            Self::Unimplemented => "unimplemented",
            Self::Disabled => "disabled",
        }
    }

    const fn to_u8(self) -> u8 {
        match self {
            Self::Unknown => 0,
            Self::Serving => 1,
            Self::NotServing => 2,
            Self::Unimplemented => 3,
            Self::Disabled => 4,
        }
    }

    const fn from_u8(n: u8) -> Self {
        match n {
            1 => Self::Serving,
            2 => Self::NotServing,
            3 => Self::Unimplemented,
            4 => Self::Disabled,
            _ => Self::Unknown,
        }
    }

    /// The status a `HealthCheckResponse.status` value reports (1 is `SERVING`).
    fn from_serving_status(value: u64) -> Self {
        if value == 1 {
            Self::Serving
        } else {
            Self::NotServing
        }
    }
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An instance's health status, shared by its watch task and the table builder.
#[derive(Debug)]
pub(crate) struct HealthCell {
    status: AtomicU8,
    changed: Arc<Notify>,
}

impl HealthCell {
    pub(crate) fn new(enabled: bool, changed: Arc<Notify>) -> Self {
        let initial = if enabled {
            HealthStatus::Unknown
        } else {
            HealthStatus::Disabled
        };
        Self {
            status: AtomicU8::new(initial.to_u8()),
            changed,
        }
    }

    pub(crate) fn get(&self) -> HealthStatus {
        HealthStatus::from_u8(self.status.load(Ordering::Acquire))
    }

    /// Sets the status; wakes the table builder when eligibility changed.
    pub(crate) fn set(&self, status: HealthStatus) {
        let before = HealthStatus::from_u8(self.status.swap(status.to_u8(), Ordering::AcqRel));
        if (before == HealthStatus::NotServing) != (status == HealthStatus::NotServing) {
            self.changed.notify_one();
        }
    }
}

/// Client-side health checking (gRFC A17): a `grpc.health.v1.Health/Watch` stream on every open
/// connection.
///
/// - `SERVING`: eligible. Any other status (`NOT_SERVING`, `SERVICE_UNKNOWN`, `UNKNOWN`): no new
///   calls until the server says `SERVING` again.
/// - The call fails `UNIMPLEMENTED`: the server has no health service; the instance is used
///   normally and the watch is not retried (as A17).
/// - The stream ends or fails otherwise: it is re-opened with exponential backoff from
///   `backoff_base` to `backoff_max` (at once after a stream that had answered, as A17).
///   Meanwhile the connection's state decides: a live connection is used. *Deviation:* A17 treats
///   the instance as failing until the stream is back; a broken health stream alone (a proxy's
///   idle timeout, a restarted health service) does not mean calls fail, and a dead connection is
///   caught by the connection watch and keep-alives anyway.
/// - The connection closes or receives `GOAWAY`: the watch is cancelled (as A17).
/// - *Deviation:* a new connection is used before its first health answer. A17 waits for it,
///   which costs a round trip on every new connection; here the call that opened the connection
///   goes ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthCheck {
    /// Watch every connection. Default `true`.
    pub enabled: bool,
    /// The service name asked about; `""` is the whole server (A17's default). Default `""`.
    pub service: String,
    /// First wait before re-opening a failed stream; doubles up to `backoff_max`. Default 1 s.
    pub backoff_base: Duration,
    /// Longest wait between re-opens. Default 30 s.
    pub backoff_max: Duration,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            enabled: true,
            service: String::new(),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// How one watch stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The connection died or got `GOAWAY`: cancelled, nothing more to watch.
    Gone,
    /// The server has no health service: stop watching.
    Unimplemented,
    /// Ended or failed after at least one answer: re-open at once.
    AfterAnswers,
    /// Ended or failed before any answer: re-open after the backoff.
    Early,
}

/// The status to hold after a stream ended, and whether to watch again.
fn after_stream(ended: Ended) -> (HealthStatus, bool) {
    match ended {
        Ended::Unimplemented => (HealthStatus::Unimplemented, false),
        Ended::Gone => (HealthStatus::Unknown, false),
        Ended::AfterAnswers | Ended::Early => (HealthStatus::Unknown, true),
    }
}

/// Watches one connection until it dies or the task is aborted.
pub(crate) async fn watch(
    channel: Channel,
    settings: Arc<HealthCheck>,
    cell: Arc<HealthCell>,
    alive: Arc<Liveness>,
    seed: u64,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut delay = settings.backoff_base;
    while alive.is_alive() {
        let ended = tokio::select! {
            ended = stream_once(channel.clone(), &settings.service, &cell) => ended,
            () = alive.gone() => Ended::Gone,
        };
        let (status, again) = after_stream(ended);
        cell.set(status);
        if !again {
            return;
        }
        if ended == Ended::AfterAnswers {
            delay = settings.backoff_base;
            continue;
        }
        // Jittered (0.8–1.2×) so that the watches of a fleet do not re-open in step.
        tokio::select! {
            () = tokio::time::sleep(delay.mul_f64(0.8 + 0.4 * rng.f64())) => {}
            () = alive.gone() => return,
        }
        delay = delay.saturating_mul(2).min(settings.backoff_max);
    }
}

async fn stream_once(channel: Channel, service: &str, cell: &HealthCell) -> Ended {
    let mut grpc = tonic::client::Grpc::new(channel);
    if grpc.ready().await.is_err() {
        return Ended::Early;
    }
    let path = http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Watch");
    let request = tonic::Request::new(service.to_owned());
    let mut answered = false;
    let outcome = match grpc.server_streaming(request, path, HealthCodec).await {
        Ok(response) => {
            let mut stream = response.into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(status)) => {
                        answered = true;
                        cell.set(status);
                    }
                    Ok(None) => break Ok(()),
                    Err(status) => break Err(status),
                }
            }
        }
        Err(status) => Err(status),
    };
    match outcome {
        Err(status) if status.code() == Code::Unimplemented => Ended::Unimplemented,
        _ if answered => Ended::AfterAnswers,
        _ => Ended::Early,
    }
}

/// `HealthCheckRequest { string service = 1; }` out, `HealthCheckResponse { ServingStatus status
/// = 1; }` in.
#[derive(Debug, Clone, Copy, Default)]
struct HealthCodec;

impl Codec for HealthCodec {
    type Encode = String;
    type Decode = HealthStatus;
    type Encoder = HealthCodec;
    type Decoder = HealthCodec;

    fn encoder(&mut self) -> Self::Encoder {
        Self
    }

    fn decoder(&mut self) -> Self::Decoder {
        Self
    }
}

impl Encoder for HealthCodec {
    type Item = String;
    type Error = Status;

    fn encode(&mut self, service: String, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        if !service.is_empty() {
            dst.put_u8(0x0A); // field 1, length-delimited
            put_varint(dst, service.len() as u64);
            dst.put_slice(service.as_bytes());
        }
        Ok(())
    }
}

impl Decoder for HealthCodec {
    type Item = HealthStatus;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<HealthStatus>, Status> {
        let mut bytes = vec![0; src.remaining()];
        src.copy_to_slice(&mut bytes);
        decode_status(&bytes)
            .map(Some)
            .ok_or_else(|| Status::internal("malformed grpc.health.v1.HealthCheckResponse"))
    }
}

fn put_varint(dst: &mut impl BufMut, mut value: u64) {
    while value >= 0x80 {
        // The low 7 bits, with the continuation bit.
        dst.put_u8((value & 0x7F) as u8 | 0x80);
        value >>= 7;
    }
    dst.put_u8(value as u8);
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The `status` field of a `HealthCheckResponse` (proto3: absent means 0, `UNKNOWN`); unknown
/// fields are skipped. `None` when the bytes are not a valid message.
fn decode_status(mut bytes: &[u8]) -> Option<HealthStatus> {
    let mut status = 0;
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = varint(&mut bytes)?,
            (_, 0) => {
                varint(&mut bytes)?;
            }
            (_, 1) => bytes = bytes.get(8..)?,
            (_, 2) => {
                let len = usize::try_from(varint(&mut bytes)?).ok()?;
                bytes = bytes.get(len..)?;
            }
            (_, 5) => bytes = bytes.get(4..)?,
            _ => return None,
        }
    }
    Some(HealthStatus::from_serving_status(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_decode_as_the_proto_says() {
        assert_eq!(decode_status(&[0x08, 0x01]), Some(HealthStatus::Serving));
        assert_eq!(decode_status(&[0x08, 0x02]), Some(HealthStatus::NotServing));
        assert_eq!(decode_status(&[0x08, 0x03]), Some(HealthStatus::NotServing));
        assert_eq!(
            decode_status(&[]),
            Some(HealthStatus::NotServing),
            "UNKNOWN"
        );
        // Unknown fields of every wire type are skipped.
        let with_extras = [
            0x10, 0x96, 0x01, // field 2 varint 150
            0x1A, 0x02, b'h', b'i', // field 3 bytes
            0x25, 0, 0, 0, 0, // field 4 fixed32
            0x29, 0, 0, 0, 0, 0, 0, 0, 0, // field 5 fixed64
            0x08, 0x01,
        ];
        assert_eq!(decode_status(&with_extras), Some(HealthStatus::Serving));
        for malformed in [&[0x08][..], &[0x0A, 0x05, 1], &[0x0B], &[0xFF; 11]] {
            assert_eq!(decode_status(malformed), None, "{malformed:?}");
        }
    }

    #[test]
    fn requests_encode_the_service_name() {
        let mut out = Vec::new();
        put_varint(&mut out, 300);
        assert_eq!(out, vec![0xAC, 0x02]);
        let mut slice = &out[..];
        assert_eq!(varint(&mut slice), Some(300));
    }

    #[test]
    fn what_a_stream_end_leaves() {
        assert_eq!(
            after_stream(Ended::Unimplemented),
            (HealthStatus::Unimplemented, false)
        );
        assert_eq!(after_stream(Ended::Early), (HealthStatus::Unknown, true));
        assert_eq!(after_stream(Ended::Gone), (HealthStatus::Unknown, false));
        assert_eq!(
            after_stream(Ended::AfterAnswers),
            (HealthStatus::Unknown, true)
        );
    }

    #[test]
    fn only_eligibility_changes_wake_the_builder() {
        let notify = Arc::new(Notify::new());
        let cell = HealthCell::new(true, Arc::clone(&notify));
        assert_eq!(cell.get(), HealthStatus::Unknown);
        cell.set(HealthStatus::Serving);
        cell.set(HealthStatus::NotServing);
        assert_eq!(cell.get(), HealthStatus::NotServing);
        // One permit stored by the change to NOT_SERVING; a change between eligible states
        // stores none.
        let woken = futures_now(notify.notified());
        assert!(woken);
        cell.set(HealthStatus::NotServing);
        assert!(!futures_now(notify.notified()));
        let off = HealthCell::new(false, notify);
        assert_eq!(off.get(), HealthStatus::Disabled);
    }

    /// Whether a future is ready at its first poll.
    fn futures_now(future: impl Future) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut future = std::pin::pin!(future);
        future.as_mut().poll(&mut cx).is_ready()
    }
}
