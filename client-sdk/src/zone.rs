//! The caller's own availability zone: its name and, where it can be learnt, its AZ ID.
//!
//! [`OwnZone::Detect`], the default, tries in order, once at start-up:
//!
//! 1. **ECS task metadata** (`ECS_CONTAINER_METADATA_URI_V4`, set in every ECS container):
//!    `GET ${that}/task`, field `AvailabilityZone` (Fargate platform 1.4 and later, EC2 with a
//!    recent agent). Task metadata v4 documents no zone *ID*; an `AvailabilityZoneId` field is
//!    read should the agent add one. No IAM needed.
//! 2. **EC2 instance metadata, IMDSv2** (EC2 instances, EKS nodes, ECS tasks on EC2 that may reach
//!    it): a token (`PUT /latest/api/token`), then
//!    `GET /latest/meta-data/placement/availability-zone` and `…/availability-zone-id`, each
//!    within [`imds_timeout`](crate::Options::imds_timeout). The endpoint is
//!    `AWS_EC2_METADATA_SERVICE_ENDPOINT` when set (as for the AWS SDKs), else
//!    `http://169.254.169.254`; `AWS_EC2_METADATA_DISABLED=true` skips this step. Only tried when
//!    step 1 gave nothing (so a Fargate task, which has no instance metadata, never waits for
//!    it). No IAM needed.
//! 3. Nothing: no zone, so no zone affinity. Never an error for calls.
//!
//! A Fargate task learns its zone's *name* from step 1 only. To match zones by ID across
//! accounts, give it the ID with [`Builder::local_zone_id`](crate::Builder::local_zone_id) (for
//! example from `aws ec2 describe-availability-zones` in the task's own account at start-up,
//! which needs `ec2:DescribeAvailabilityZones` on `"*"`: the action has no resource-level
//! permissions). An AWS Lambda function has no zone from either source: no affinity, unless set
//! with [`OwnZone::Fixed`].
//!
//! Without a zone ID of its own the balancer matches zones by name, which is right within one
//! account (see [`picker`](crate::picker#zones)).

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::{BoxError, Error};

/// The environment variable ECS sets to the task metadata endpoint (version 4).
pub const METADATA_URI_VAR: &str = "ECS_CONTAINER_METADATA_URI_V4";
/// The environment variable that overrides the EC2 instance metadata endpoint (as for the AWS
/// SDKs).
pub const IMDS_ENDPOINT_VAR: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";
/// The environment variable that turns the EC2 instance metadata lookup off (`true`).
pub const IMDS_DISABLED_VAR: &str = "AWS_EC2_METADATA_DISABLED";
/// The EC2 instance metadata endpoint.
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254";

/// Where the caller's own zone comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OwnZone {
    /// ECS task metadata, then EC2 instance metadata (IMDSv2), then none (see the
    /// [module docs](self)). The default.
    #[default]
    Detect,
    /// From the task metadata endpoint at this URI (what [`METADATA_URI_VAR`] holds on ECS).
    TaskMetadata(String),
    /// From EC2 instance metadata (IMDSv2) at this endpoint, e.g. [`IMDS_ENDPOINT`].
    Imds(String),
    /// This zone name, e.g. `eu-central-1a`.
    Fixed(String),
    /// No zone: calls get no zone affinity.
    Unknown,
}

/// A zone: its name (per account) and its AZ ID (the same in every account), as far as known.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Zone {
    /// The zone's name, e.g. `eu-central-1a`.
    pub name: Option<String>,
    /// The zone's AZ ID, e.g. `euc1-az2`.
    pub id: Option<String>,
}

impl Zone {
    /// A zone with this name and no known ID.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: Some(name.into()),
            id: None,
        }
    }

    fn is_known(&self) -> bool {
        self.name.is_some() || self.id.is_some()
    }
}

/// The own zone as resolved, and where it came from (for the log).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Detected {
    pub(crate) name: Option<String>,
    pub(crate) id: Option<String>,
    pub(crate) source: &'static str,
}

/// One way to learn the own zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    TaskMetadata(String),
    Imds(String),
}

/// How the balancer resolves its own zone: fixed, or steps tried in order.
#[derive(Debug, Clone)]
pub(crate) struct Detection {
    pub(crate) fixed: Option<Zone>,
    pub(crate) steps: Vec<Step>,
    /// An ID given by the user: it wins over a detected one.
    pub(crate) id: Option<String>,
    pub(crate) metadata_timeout: Duration,
    pub(crate) imds_timeout: Duration,
}

impl Detection {
    /// The detection `zone` asks for, reading the environment for [`OwnZone::Detect`].
    pub(crate) fn new(
        zone: OwnZone,
        id: Option<String>,
        metadata_timeout: Duration,
        imds_timeout: Duration,
    ) -> Self {
        let (fixed, steps) = match zone {
            OwnZone::Detect => {
                let env = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
                let mut steps = Vec::new();
                if let Some(uri) = env(METADATA_URI_VAR) {
                    steps.push(Step::TaskMetadata(uri));
                }
                let disabled =
                    env(IMDS_DISABLED_VAR).is_some_and(|v| v.eq_ignore_ascii_case("true"));
                if !disabled {
                    let endpoint =
                        env(IMDS_ENDPOINT_VAR).unwrap_or_else(|| IMDS_ENDPOINT.to_owned());
                    steps.push(Step::Imds(endpoint));
                }
                (None, steps)
            }
            OwnZone::TaskMetadata(uri) => (None, vec![Step::TaskMetadata(uri)]),
            OwnZone::Imds(endpoint) => (None, vec![Step::Imds(endpoint)]),
            OwnZone::Fixed(name) => (Some(Zone::named(name)), Vec::new()),
            OwnZone::Unknown => (Some(Zone::default()), Vec::new()),
        };
        Self {
            fixed,
            steps,
            id,
            metadata_timeout,
            imds_timeout,
        }
    }

    /// Resolves the zone; each failing step is logged and the next one tried.
    pub(crate) async fn resolve(&self, log: impl Fn(&'static str, &Error)) -> Detected {
        let (mut zone, mut source) = match &self.fixed {
            Some(zone) => (zone.clone(), "configuration"),
            None => (Zone::default(), "none"),
        };
        for step in &self.steps {
            let (found, name) = match step {
                Step::TaskMetadata(uri) => (
                    task_metadata_zone(uri, self.metadata_timeout).await,
                    "ECS task metadata",
                ),
                Step::Imds(endpoint) => (
                    from_imds(endpoint, self.imds_timeout).await,
                    "EC2 instance metadata",
                ),
            };
            match found {
                Ok(found) if found.is_known() => {
                    zone = found;
                    source = name;
                    break;
                }
                Ok(_) => {}
                Err(error) => log(name, &error),
            }
        }
        if self.id.is_some() {
            zone.id.clone_from(&self.id);
        }
        Detected {
            name: zone.name,
            id: zone.id,
            source,
        }
    }
}

/// Reads the task's availability zone from the task metadata endpoint at `metadata_uri`
/// (`GET {metadata_uri}/task`, field `AvailabilityZone`). `Ok(None)` when the response has no
/// zone; an error when the endpoint cannot be reached in `timeout` or answers with something
/// else than task metadata. Tries three times within `timeout` (the agent may still be starting).
pub async fn from_task_metadata(
    metadata_uri: &str,
    timeout: Duration,
) -> Result<Option<String>, Error> {
    task_metadata_zone(metadata_uri, timeout)
        .await
        .map(|zone| zone.name)
}

/// [`from_task_metadata`], with the zone ID should the response carry `AvailabilityZoneId`.
async fn task_metadata_zone(metadata_uri: &str, timeout: Duration) -> Result<Zone, Error> {
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
        let outcome = tokio::time::timeout(remaining, request(http::Method::GET, &uri, &[])).await;
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
    let field = |name: &str| {
        metadata
            .get(name)
            .and_then(serde_json::Value::as_str)
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
    };
    Ok(Zone {
        name: field("AvailabilityZone"),
        id: field("AvailabilityZoneId"),
    })
}

/// Reads the zone name and ID from EC2 instance metadata (IMDSv2) at `endpoint`: a session
/// token first, then the two placement paths, all within `timeout`.
pub async fn from_imds(endpoint: &str, timeout: Duration) -> Result<Zone, Error> {
    let fail = |reason: &'static str, source: Option<BoxError>| Error::ZoneDetection {
        uri: endpoint.to_owned(),
        reason,
        source,
    };
    let base = endpoint.trim_end_matches('/');
    let uri = |path: &str| -> Result<http::Uri, Error> {
        format!("{base}{path}")
            .parse()
            .map_err(|e| fail("not a URI", Some(Box::new(e))))
    };
    let token_uri = uri("/latest/api/token")?;
    let name_uri = uri("/latest/meta-data/placement/availability-zone")?;
    let id_uri = uri("/latest/meta-data/placement/availability-zone-id")?;
    let lookup = async {
        let (status, token) = request(
            http::Method::PUT,
            &token_uri,
            &[("x-aws-ec2-metadata-token-ttl-seconds", "60")],
        )
        .await
        .map_err(|e| fail("request failed", Some(e)))?;
        if !status.is_success() {
            return Err(fail(
                "the token request was refused",
                Some(format!("HTTP {status}").into()),
            ));
        }
        let token = String::from_utf8_lossy(&token).trim().to_owned();
        let get = |uri: http::Uri| {
            let token = token.clone();
            async move {
                let (status, body) = request(
                    http::Method::GET,
                    &uri,
                    &[("x-aws-ec2-metadata-token", &token)],
                )
                .await
                .map_err(|e| fail("request failed", Some(e)))?;
                Ok::<_, Error>(
                    status
                        .is_success()
                        .then(|| String::from_utf8_lossy(&body).trim().to_owned())
                        .filter(|v| !v.is_empty()),
                )
            }
        };
        Ok(Zone {
            name: get(name_uri).await?,
            id: get(id_uri).await?,
        })
    };
    tokio::time::timeout(timeout, lookup)
        .await
        .map_err(|elapsed| fail("timed out", Some(Box::new(elapsed))))?
}

/// One plain HTTP/1.1 request (the metadata endpoints are link-local HTTP).
async fn request(
    method: http::Method,
    uri: &http::Uri,
    headers: &[(&str, &str)],
) -> Result<(http::StatusCode, Bytes), BoxError> {
    let host = uri.host().ok_or("the URI has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host, port)).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let authority = uri.authority().map_or(host, http::uri::Authority::as_str);
    let mut builder = http::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    drop(sender);
    // The connection ends with the request; its outcome adds nothing.
    let _ = connection.await;
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};

    use super::*;

    /// An HTTP/1.1 stand-in on 127.0.0.1:0 that answers every request on a path ending in one of
    /// `routes` with its body, and everything else with 404.
    fn stand_in(routes: &'static [(&'static str, &'static str)]) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let path = line.split(' ').nth(1).unwrap_or("").to_owned();
                    // Skip the headers.
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap() <= 2 {
                            break;
                        }
                    }
                    let found = routes.iter().find(|(p, _)| path.ends_with(p));
                    let (status, body) =
                        found.map_or(("404 Not Found", ""), |(_, b)| ("200 OK", *b));
                    let mut stream = stream;
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        format!("http://{addr}")
    }

    fn detection(steps: Vec<Step>) -> Detection {
        Detection {
            fixed: None,
            steps,
            id: None,
            metadata_timeout: Duration::from_secs(2),
            imds_timeout: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn the_chain_falls_through_to_instance_metadata_and_logs_each_miss() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let nobody = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let imds = stand_in(&[
            ("/latest/api/token", "token"),
            ("/placement/availability-zone", "eu-west-1b"),
            ("/placement/availability-zone-id", "euw1-az1"),
        ]);
        let misses = std::sync::Mutex::new(Vec::new());
        let found = detection(vec![Step::TaskMetadata(nobody), Step::Imds(imds)])
            .resolve(|step, _| misses.lock().unwrap().push(step))
            .await;
        assert_eq!(
            found,
            Detected {
                name: Some("eu-west-1b".into()),
                id: Some("euw1-az1".into()),
                source: "EC2 instance metadata",
            }
        );
        assert_eq!(*misses.lock().unwrap(), vec!["ECS task metadata"]);
    }

    #[tokio::test]
    async fn the_first_source_that_knows_wins_and_a_given_id_wins_over_it() {
        let metadata = stand_in(&[(
            "/task",
            r#"{"AvailabilityZone": "eu-west-1c", "AvailabilityZoneId": "euw1-az3"}"#,
        )]);
        let unused = stand_in(&[]);
        let mut chain = detection(vec![Step::TaskMetadata(metadata), Step::Imds(unused)]);
        let found = chain.resolve(|_, _| panic!("no step should fail")).await;
        assert_eq!(
            (found.name.as_deref(), found.id.as_deref(), found.source),
            (Some("eu-west-1c"), Some("euw1-az3"), "ECS task metadata")
        );
        chain.id = Some("euw1-az9".into());
        let found = chain.resolve(|_, _| {}).await;
        assert_eq!(found.id.as_deref(), Some("euw1-az9"));
        // Nothing anywhere: no zone, no error.
        let empty = detection(Vec::new()).resolve(|_, _| {}).await;
        assert_eq!(
            empty,
            Detected {
                name: None,
                id: None,
                source: "none"
            }
        );
    }

    #[test]
    fn detect_reads_the_environment_once() {
        // Without ECS's variable, Detect goes straight to instance metadata (the default
        // endpoint, or the SDK's override).
        let chain = Detection::new(OwnZone::Detect, None, Duration::ZERO, Duration::ZERO);
        if std::env::var(METADATA_URI_VAR).is_err() && std::env::var(IMDS_DISABLED_VAR).is_err() {
            let endpoint =
                std::env::var(IMDS_ENDPOINT_VAR).unwrap_or_else(|_| IMDS_ENDPOINT.into());
            assert_eq!(chain.steps, vec![Step::Imds(endpoint)]);
        }
        let fixed = Detection::new(
            OwnZone::Fixed("x".into()),
            None,
            Duration::ZERO,
            Duration::ZERO,
        );
        assert!(fixed.steps.is_empty());
        assert_eq!(fixed.fixed, Some(Zone::named("x")));
    }
}
