//! EC2, as far as the Lambda reads it: a subnet's zone ID ([`DescribeSubnets`](subnets)) and the
//! account's zone name → zone ID map ([`DescribeAvailabilityZones`](zones)), each one SigV4-signed
//! call of EC2's query protocol.
//!
//! Not through `aws-sdk-ec2`: that crate is the largest of the AWS SDK (over 1,000 operations),
//! and compiling it, in debug for the tests and in release for the binary, added about half an
//! hour to CI on two cores for these reads. The calls here use the SDK's own parts instead, so
//! they behave like the other clients:
//!
//! - credentials and region from the same [`SdkConfig`] (the function's role in Lambda);
//! - the same HTTPS connector (rustls), with a 3 s connect and a 5 s read timeout;
//! - the endpoint from `AWS_ENDPOINT_URL_EC2`, else `AWS_ENDPOINT_URL` (the local stack), else
//!   `https://ec2.{region}.amazonaws.com` (`.amazonaws.com.cn` in the China regions).
//!
//! One attempt per lookup, no SDK retries: the zone ID is enrichment, and a failed lookup is
//! made again on a later event or reconciliation (see [`zone_ids`](crate::handler)), never in a
//! loop. Each operation lives in a file of its own with its `SERVICE` and `OPERATION` constants,
//! which the deploy rehearsal reads to check the function's role grants it.

mod subnets;
mod zones;

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;
use aws_smithy_xml::decode::{Document, ScopedDecoder, try_data};

use super::errors::{THROTTLING_CODES, classify_answer};
use crate::error::{BoxError, ErrorKind, SyncError};
use crate::ports::{ZoneIdGap, ZoneIdLookupError, Zones};

/// SigV4's name for EC2.
const SIGNING_NAME: &str = "ec2";
/// EC2's query API version (the current one since 2016).
const API_VERSION: &str = "2016-11-15";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Error codes of a subnet EC2 does not know.
const NOT_FOUND_CODES: &[&str] = &["InvalidSubnetID.NotFound", "InvalidSubnetID.Malformed"];
/// Error codes of a missing permission.
const DENIED_CODES: &[&str] = &[
    "UnauthorizedOperation",
    "AccessDenied",
    "AccessDeniedException",
];

/// EC2, as far as the Lambda reads it.
#[derive(Debug, Clone)]
pub struct Ec2 {
    endpoint: String,
    region: Option<String>,
    credentials: Option<SharedCredentialsProvider>,
    connector: Option<SharedHttpConnector>,
}

impl Ec2 {
    /// EC2 with the SDK configuration's region, credentials and endpoint override.
    pub fn new(sdk: &SdkConfig) -> Self {
        let region = sdk.region().map(|r| r.as_ref().to_owned());
        let override_url = std::env::var("AWS_ENDPOINT_URL_EC2")
            .ok()
            .filter(|url| !url.trim().is_empty())
            .or_else(|| sdk.endpoint_url().map(str::to_owned));
        let settings = HttpConnectorSettings::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build();
        Self {
            endpoint: endpoint(override_url.as_deref(), region.as_deref()),
            region,
            credentials: sdk.credentials_provider(),
            connector: aws_smithy_http_client::default_connector(&settings, sdk.sleep_impl()),
        }
    }

    /// The signed request of `action` with `params` (`Name=value` pairs joined by `&`, already
    /// form-encoded).
    async fn request(&self, action: &str, params: &str) -> Result<HttpRequest, BoxError> {
        let region = self
            .region
            .as_deref()
            .ok_or("no AWS region is configured")?;
        let credentials = self
            .credentials
            .as_ref()
            .ok_or("no AWS credentials are configured")?
            .provide_credentials()
            .await?;
        let identity = credentials.into();
        let mut body = format!("Action={action}&Version={API_VERSION}");
        if !params.is_empty() {
            body.push('&');
            body.push_str(params);
        }
        let uri: http::Uri = format!("{}/", self.endpoint).parse()?;
        let host = uri
            .authority()
            .ok_or("the EC2 endpoint has no host")?
            .as_str();
        let headers = [
            ("host", host),
            (
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
        ];
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(SIGNING_NAME)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()?
            .into();
        let signable = SignableRequest::new(
            "POST",
            uri.to_string(),
            headers.iter().copied(),
            SignableBody::Bytes(body.as_bytes()),
        )?;
        let (instructions, _signature) = sign(signable, &params)?.into_parts();
        let mut request = http::Request::post(uri.clone());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let mut request = request.body(SdkBody::from(body))?;
        instructions.apply_to_request_http1x(&mut request);
        Ok(HttpRequest::try_from(request)?)
    }

    /// The call: EC2's status and body, or why there was none.
    async fn call(&self, action: &str, params: &str) -> Result<(u16, String), BoxError> {
        let connector = self
            .connector
            .as_ref()
            .ok_or("no HTTPS connector is available")?;
        let response = connector.call(self.request(action, params).await?).await?;
        let status = response.status().as_u16();
        let body = ByteStream::new(response.into_body()).collect().await?;
        Ok((
            status,
            String::from_utf8_lossy(&body.into_bytes()).into_owned(),
        ))
    }
}

impl Zones for Ec2 {
    async fn zone_id(&self, subnet_id: &str) -> Result<String, ZoneIdLookupError> {
        self.subnet_zone_id(subnet_id).await
    }

    async fn zone_ids(&self) -> Result<HashMap<String, String>, ZoneIdLookupError> {
        self.zone_ids_by_name().await
    }
}

/// One operation's answer read: the parsed value, or why the zone ID stays unknown. `what`
/// names what was looked up (for the error); `parse` reads a 200 answer, `None` meaning EC2 does
/// not know it (`missing`).
fn read_answer<T>(
    (service, operation): (&'static str, &'static str),
    what: &str,
    outcome: Result<(u16, String), BoxError>,
    parse: impl FnOnce(&str) -> Result<Option<T>, BoxError>,
    missing: ZoneIdGap,
) -> Result<T, ZoneIdLookupError> {
    let failed = |gap, source| ZoneIdLookupError {
        what: what.to_owned(),
        gap,
        source,
    };
    let unavailable = |source: BoxError| SyncError::Aws {
        service,
        operation,
        kind: ErrorKind::Retryable,
        code: None,
        source,
    };
    match outcome {
        Ok((200, xml)) => match parse(&xml) {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(failed(missing, None)),
            Err(error) => Err(failed(
                ZoneIdGap::Unavailable,
                Some(unavailable(
                    format!("EC2 answered {operation} unreadably: {error}").into(),
                )),
            )),
        },
        Ok((status, xml)) => {
            let answer = ErrorAnswer::read(status, &xml);
            let gap = gap(answer.code.as_deref(), Some(status));
            let error = SyncError::Aws {
                service,
                operation,
                kind: classify_answer(status, answer.code.as_deref()),
                code: answer.code.clone(),
                source: Box::new(answer),
            };
            Err(failed(gap, Some(error)))
        }
        Err(error) => Err(failed(ZoneIdGap::Unavailable, Some(unavailable(error)))),
    }
}

/// The endpoint's base URL, without a trailing slash.
fn endpoint(override_url: Option<&str>, region: Option<&str>) -> String {
    match (override_url.map(str::trim), region) {
        (Some(url), _) if !url.is_empty() => url.trim_end_matches('/').to_owned(),
        (_, Some(region)) if region.starts_with("cn-") => {
            format!("https://ec2.{region}.amazonaws.com.cn")
        }
        (_, region) => format!(
            "https://ec2.{}.amazonaws.com",
            region.unwrap_or("us-east-1")
        ),
    }
}

fn text(field: &mut ScopedDecoder<'_, '_>) -> Result<String, BoxError> {
    Ok(try_data(field).map(Cow::into_owned)?)
}

/// An error answer: EC2's `Response/Errors/Error` or the awsQuery `ErrorResponse/Error` shape.
#[derive(Debug, thiserror::Error)]
#[error("EC2 answered {status}{}{}", code.as_deref().map(|c| format!(": {c}")).unwrap_or_default(), message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
struct ErrorAnswer {
    status: u16,
    code: Option<String>,
    message: Option<String>,
}

impl ErrorAnswer {
    /// Reads what it can; an unreadable body leaves the code unknown (the status still counts).
    fn read(status: u16, xml: &str) -> Self {
        let mut answer = Self {
            status,
            code: None,
            message: None,
        };
        let mut doc = Document::new(xml);
        let Ok(mut root) = doc.root_element() else {
            return answer;
        };
        while let Some(mut child) = root.next_tag() {
            if child.start_el().matches("Errors") {
                while let Some(mut error) = child.next_tag() {
                    if error.start_el().matches("Error") {
                        answer.fill(&mut error);
                        return answer;
                    }
                }
            } else if child.start_el().matches("Error") {
                answer.fill(&mut child);
                return answer;
            }
        }
        answer
    }

    fn fill(&mut self, error: &mut ScopedDecoder<'_, '_>) {
        while let Some(mut field) = error.next_tag() {
            if field.start_el().matches("Code") {
                self.code = text(&mut field).ok().filter(|c| !c.trim().is_empty());
            } else if field.start_el().matches("Message") {
                self.message = text(&mut field).ok();
            }
        }
    }
}

/// Why a failed call leaves the zone ID unknown: by the error code when the answer had a readable
/// one, else by the HTTP status (403: access; 429: throttling), else unavailable.
fn gap(code: Option<&str>, status: Option<u16>) -> ZoneIdGap {
    match (code, status) {
        (Some(code), _) if NOT_FOUND_CODES.contains(&code) => ZoneIdGap::SubnetNotFound,
        (Some(code), _) if DENIED_CODES.contains(&code) => ZoneIdGap::AccessDenied,
        (Some(code), _) if THROTTLING_CODES.contains(&code) => ZoneIdGap::Throttled,
        (None, Some(403)) => ZoneIdGap::AccessDenied,
        (None, Some(429)) => ZoneIdGap::Throttled,
        _ => ZoneIdGap::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_by_code_then_status() {
        use ZoneIdGap::*;
        assert_eq!(
            gap(Some("InvalidSubnetID.NotFound"), Some(400)),
            SubnetNotFound
        );
        assert_eq!(gap(Some("UnauthorizedOperation"), Some(403)), AccessDenied);
        assert_eq!(gap(Some("RequestLimitExceeded"), Some(503)), Throttled);
        assert_eq!(gap(Some("InternalError"), Some(500)), Unavailable);
        assert_eq!(gap(None, Some(403)), AccessDenied);
        assert_eq!(gap(None, Some(429)), Throttled);
        assert_eq!(gap(None, Some(500)), Unavailable);
        assert_eq!(gap(None, None), Unavailable, "timeouts, connection errors");
    }

    #[test]
    fn the_endpoint_is_the_override_else_the_regional_one() {
        assert_eq!(
            endpoint(Some("http://127.0.0.1:5000/"), Some("eu-central-1")),
            "http://127.0.0.1:5000"
        );
        assert_eq!(
            endpoint(Some("  "), Some("eu-central-1")),
            "https://ec2.eu-central-1.amazonaws.com"
        );
        assert_eq!(
            endpoint(None, Some("cn-north-1")),
            "https://ec2.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(endpoint(None, None), "https://ec2.us-east-1.amazonaws.com");
    }

    #[test]
    fn error_answers_of_both_query_shapes_are_read() {
        let ec2 = r#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>InvalidSubnetID.NotFound</Code><Message>The subnet ID 'subnet-1' does not exist</Message></Error></Errors><RequestID>r</RequestID></Response>"#;
        let answer = ErrorAnswer::read(400, ec2);
        assert_eq!(answer.code.as_deref(), Some("InvalidSubnetID.NotFound"));
        assert_eq!(
            answer.to_string(),
            "EC2 answered 400: InvalidSubnetID.NotFound: The subnet ID 'subnet-1' does not exist"
        );
        let query = "<ErrorResponse><Error><Type>Sender</Type><Code>RequestLimitExceeded</Code>\
                     <Message>slow down</Message></Error></ErrorResponse>";
        assert_eq!(
            ErrorAnswer::read(503, query).code.as_deref(),
            Some("RequestLimitExceeded")
        );
        let unreadable = ErrorAnswer::read(502, "<html>Bad Gateway");
        assert_eq!(unreadable.code, None);
        assert_eq!(unreadable.to_string(), "EC2 answered 502");
    }
}
