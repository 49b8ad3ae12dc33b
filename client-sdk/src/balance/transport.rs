//! Transport failures: what a failed attempt's error says about whether the server's application
//! saw the request (so whether it may be retried transparently), and the status a caller sees,
//! which always names the instance and its address.
//!
//! | failure | reached the application? | caller sees (when not retried) |
//! |---|---|---|
//! | connecting failed, or the connection was already gone (the connector refused tonic's reconnect) | no | `UNAVAILABLE`, "could not connect" / "connection gone" |
//! | hyper cancelled the request before sending it | no | `UNAVAILABLE` |
//! | the server reset the stream with `REFUSED_STREAM` | no | `UNAVAILABLE` |
//! | the server sent `GOAWAY` (`NO_ERROR`) before processing the stream | no | `UNAVAILABLE` |
//! | the connection broke, or the server reset the stream otherwise, after sending | maybe | `UNAVAILABLE` (a reset's reason maps as gRPC's HTTP/2 spec says: `CANCEL` → `CANCELLED`, `ENHANCE_YOUR_CALM` → `RESOURCE_EXHAUSTED`, `INADEQUATE_SECURITY` → `PERMISSION_DENIED`, protocol errors → `INTERNAL`) |

use std::error::Error as StdError;

use tonic::{Code, Status};

use super::endpoint::{ConnectionGone, Endpoint};
use super::state::Shared;
use crate::error::Error;

/// What a failed attempt's transport error says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Nothing was sent: a connection could not be made, or it was gone.
    NotSent {
        /// A real connection attempt failed (the instance is ejected), rather than an old
        /// connection found gone.
        connect: bool,
    },
    /// The server's HTTP/2 layer refused the stream before its application saw it.
    Refused,
    /// It may have reached the application.
    Broken,
}

fn chain<'a>(
    error: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |&e| e.source())
}

/// Reads a transport error.
pub(crate) fn classify(error: &(dyn StdError + 'static)) -> Failure {
    let mut connect = false;
    for e in chain(error) {
        if e.is::<ConnectionGone>() {
            return Failure::NotSent { connect: false };
        }
        if e.is::<tonic::ConnectError>() {
            connect = true;
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            let refused = h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR));
            return if refused {
                Failure::Refused
            } else {
                Failure::Broken
            };
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>()
            && hyper.is_canceled()
        {
            return Failure::NotSent { connect: false };
        }
    }
    if connect {
        Failure::NotSent { connect: true }
    } else {
        Failure::Broken
    }
}

/// The gRPC code of a stream the server reset with a reason (gRPC's HTTP/2 spec), `UNAVAILABLE`
/// for everything else: a broken connection, an I/O error, a `GOAWAY`.
fn code_of(error: &(dyn StdError + 'static)) -> Code {
    let reset = chain(error)
        .filter_map(|e| e.downcast_ref::<h2::Error>())
        .find(|h2| h2.is_reset() && h2.is_remote())
        .and_then(h2::Error::reason);
    match reset {
        Some(h2::Reason::CANCEL) => Code::Cancelled,
        Some(h2::Reason::ENHANCE_YOUR_CALM) => Code::ResourceExhausted,
        Some(h2::Reason::INADEQUATE_SECURITY) => Code::PermissionDenied,
        Some(
            h2::Reason::PROTOCOL_ERROR
            | h2::Reason::INTERNAL_ERROR
            | h2::Reason::FLOW_CONTROL_ERROR
            | h2::Reason::SETTINGS_TIMEOUT
            | h2::Reason::FRAME_SIZE_ERROR
            | h2::Reason::COMPRESSION_ERROR
            | h2::Reason::CONNECT_ERROR,
        ) => Code::Internal,
        _ => Code::Unavailable,
    }
}

/// The status of an attempt that failed before its response, naming the instance.
pub(crate) fn attempt_failed(
    shared: &Shared,
    endpoint: &Endpoint,
    failure: Failure,
    error: Box<dyn StdError + Send + Sync + 'static>,
) -> Status {
    let what = match failure {
        Failure::NotSent { .. } => "the request could not be sent",
        Failure::Refused => "the server refused the stream before processing it",
        Failure::Broken => "the connection failed before the response",
    };
    let code = match failure {
        Failure::Broken => code_of(&*error),
        _ => Code::Unavailable,
    };
    Error::Transport {
        instance: endpoint.id().to_owned(),
        addr: endpoint.addr(),
        service: shared.ident.service.clone(),
        code,
        what,
        source: error,
    }
    .into()
}

/// The status of a committed call whose response body failed, naming the instance.
pub(crate) fn broken_mid_call(shared: &Shared, endpoint: &Endpoint, status: &Status) -> Status {
    let code = code_of(status);
    Error::Transport {
        instance: endpoint.id().to_owned(),
        addr: endpoint.addr(),
        service: shared.ident.service.clone(),
        code,
        what: "the call broke while the response was streaming",
        source: Box::new(status.clone()),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("wrapper")]
    struct Wrap(#[source] Box<dyn StdError + Send + Sync>);

    #[test]
    fn what_the_error_chain_says() {
        assert_eq!(
            classify(&Wrap(Box::new(ConnectionGone))),
            Failure::NotSent { connect: false }
        );
        let refused: h2::Error = h2::Reason::REFUSED_STREAM.into();
        assert_eq!(classify(&Wrap(Box::new(refused))), Failure::Refused);
        let reset: h2::Error = h2::Reason::CANCEL.into();
        assert_eq!(classify(&Wrap(Box::new(reset))), Failure::Broken);
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        assert_eq!(classify(&Wrap(Box::new(io))), Failure::Broken);
    }

    #[test]
    fn codes_of_broken_calls() {
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe");
        assert_eq!(code_of(&Wrap(Box::new(io))), Code::Unavailable);
        // A reason the *library* reports (not a reset received) is a broken connection.
        let local: h2::Error = h2::Reason::CANCEL.into();
        assert_eq!(code_of(&Wrap(Box::new(local))), Code::Unavailable);
    }
}
