//! The caller's own availability zone.
//!
//! On ECS, every container gets `ECS_CONTAINER_METADATA_URI_V4`; `GET ${that}/task` returns the
//! task metadata, whose `AvailabilityZone` field names the zone (Fargate platform 1.4 and later,
//! and the EC2 launch type with a recent agent). [`OwnZone::Detect`], the default, reads it once
//! at start-up; [`OwnZone::Fixed`] overrides it. When the variable is unset (not on ECS), the
//! endpoint fails or the field is missing, the zone is unknown and calls get no zone affinity:
//! never an error for calls.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::{BoxError, Error};

/// The environment variable ECS sets to the task metadata endpoint (version 4).
pub const METADATA_URI_VAR: &str = "ECS_CONTAINER_METADATA_URI_V4";

/// Where the caller's own zone comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OwnZone {
    /// From the ECS task metadata endpoint named by [`METADATA_URI_VAR`], read when the balancer
    /// is built; unknown when the variable is unset. The default.
    #[default]
    Detect,
    /// From the task metadata endpoint at this URI (what [`METADATA_URI_VAR`] holds on ECS).
    TaskMetadata(String),
    /// This zone, e.g. `eu-central-1a`.
    Fixed(String),
    /// No zone: calls get no zone affinity.
    Unknown,
}

/// Reads the task's availability zone from the task metadata endpoint at `metadata_uri`
/// (`GET {metadata_uri}/task`, field `AvailabilityZone`). `Ok(None)` when the response has no
/// zone; an error when the endpoint cannot be reached in `timeout` or answers with something
/// else than task metadata. Tries three times within `timeout` (the agent may still be starting).
pub async fn from_task_metadata(
    metadata_uri: &str,
    timeout: Duration,
) -> Result<Option<String>, Error> {
    let fail = |reason: &'static str, source: Option<BoxError>| Error::ZoneDetection {
        uri: metadata_uri.to_owned(),
        reason,
        source,
    };
    let uri: http::Uri = format!("{}/task", metadata_uri.trim_end_matches('/'))
        .parse()
        .map_err(|e| fail("not a URI", Some(Box::new(e))))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut attempt = 0u32;
    let body = loop {
        attempt += 1;
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let outcome = tokio::time::timeout(remaining, get(&uri)).await;
        match outcome {
            Ok(Ok((status, body))) if status.is_success() => break body,
            Ok(Ok((status, _))) if attempt >= 3 => {
                return Err(fail(
                    "the endpoint answered with an error status",
                    Some(format!("HTTP {status}").into()),
                ));
            }
            Ok(Err(error)) if attempt >= 3 => return Err(fail("request failed", Some(error))),
            Err(elapsed) => return Err(fail("timed out", Some(Box::new(elapsed)))),
            Ok(_) => {
                let pause = Duration::from_millis(100) * attempt;
                if tokio::time::Instant::now() + pause >= deadline {
                    return Err(fail("timed out", None));
                }
                tokio::time::sleep(pause).await;
            }
        }
    };
    let metadata: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| fail("the response is not JSON", Some(Box::new(e))))?;
    Ok(metadata
        .get("AvailabilityZone")
        .and_then(serde_json::Value::as_str)
        .map(str::trim)
        .filter(|zone| !zone.is_empty())
        .map(str::to_owned))
}

/// One plain HTTP/1.1 GET (the metadata endpoint is link-local HTTP).
async fn get(uri: &http::Uri) -> Result<(http::StatusCode, Bytes), BoxError> {
    let host = uri.host().ok_or("the URI has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host, port)).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let authority = uri.authority().map_or(host, http::uri::Authority::as_str);
    let request = http::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    drop(sender);
    // The connection ends with the request; its outcome adds nothing.
    let _ = connection.await;
    Ok((status, body))
}
