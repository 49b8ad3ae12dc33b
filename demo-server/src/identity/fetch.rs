//! `GET` of one task metadata document: plain HTTP/1.1 to the agent's link-local endpoint, one
//! connection per request, a timeout per attempt and a short retry on transport failures and
//! 5xx answers.

use std::time::Duration;

use http::{Request, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::Error;

/// The URL of a metadata document: the endpoint URI with `/document` appended (the container's
/// own document when `document` is empty).
pub(super) fn document_url(endpoint: &str, document: &str) -> Result<Uri, Error> {
    let invalid = |reason| Error::MetadataUri {
        uri: endpoint.to_owned(),
        reason,
    };
    let base = endpoint.trim().trim_end_matches('/');
    let url = if document.is_empty() {
        base.to_owned()
    } else {
        format!("{base}/{document}")
    };
    let uri: Uri = url.parse().map_err(|_| invalid("not a URI"))?;
    if uri.scheme_str() != Some("http") {
        return Err(invalid("the task metadata endpoint is plain http://"));
    }
    if uri.host().is_none() {
        return Err(invalid("no host"));
    }
    Ok(uri)
}

/// The body of a `200` answer to `GET url`, trying up to `attempts` times.
pub(super) async fn get(url: &Uri, timeout: Duration, attempts: u32) -> Result<Vec<u8>, Error> {
    let mut attempt = 1;
    loop {
        let result = match tokio::time::timeout(timeout, get_once(url)).await {
            Ok(result) => result,
            Err(_) => Err(Error::MetadataTimeout {
                url: url.to_string(),
                after: timeout,
            }),
        };
        // Transport failures and server errors may pass; a 4xx or a bad document will not.
        let retryable = match &result {
            Err(Error::MetadataStatus { status, .. }) => *status >= 500,
            Err(Error::MetadataRequest { .. } | Error::MetadataTimeout { .. }) => true,
            _ => false,
        };
        if !retryable || attempt >= attempts {
            return result;
        }
        if let Err(error) = &result {
            tracing::warn!(%url, attempt, error = %error, "task metadata request failed; retrying");
        }
        tokio::time::sleep(Duration::from_millis(250) * attempt).await;
        attempt += 1;
    }
}

async fn get_once(url: &Uri) -> Result<Vec<u8>, Error> {
    let request_error = |source: Box<dyn std::error::Error + Send + Sync>| Error::MetadataRequest {
        url: url.to_string(),
        source,
    };
    // `document_url` checked the host.
    let host = url.host().unwrap_or_default();
    let port = url.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|error| request_error(error.into()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| request_error(error.into()))?;
    // The connection future drives the socket; it ends when the exchange is over.
    let connection = tokio::spawn(connection);

    let path = url.path_and_query().map_or("/", |path| path.as_str());
    let authority = url.authority().map_or(host, |authority| authority.as_str());
    let request = Request::get(path)
        .header(header::HOST, authority)
        .header(header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|error| request_error(error.into()))?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| request_error(error.into()))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| request_error(error.into()))?
            .to_bytes();
        if !status.is_success() {
            return Err(Error::MetadataStatus {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        Ok(body.to_vec())
    }
    .await;
    drop(sender);
    connection.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_urls_append_the_document() {
        assert_eq!(
            document_url("http://169.254.170.2/v4/abc-123", "task")
                .unwrap()
                .to_string(),
            "http://169.254.170.2/v4/abc-123/task"
        );
        assert_eq!(
            document_url("http://169.254.170.2/v4/abc-123/", "")
                .unwrap()
                .to_string(),
            "http://169.254.170.2/v4/abc-123"
        );
        assert_eq!(
            document_url("http://127.0.0.1:8080/v4/x", "task")
                .unwrap()
                .port_u16(),
            Some(8080)
        );
    }

    #[test]
    fn only_plain_http_endpoints_are_accepted() {
        for uri in [
            "https://169.254.170.2/v4/abc",
            "169.254.170.2/v4/abc",
            "not a uri",
            "/v4/abc",
        ] {
            assert!(
                matches!(document_url(uri, "task"), Err(Error::MetadataUri { .. })),
                "{uri}"
            );
        }
    }
}
