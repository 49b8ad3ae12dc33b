//! A minimal blocking HTTP/1.1 exchange for moto's own API (`/moto-api/...`) and the EC2 query
//! calls the local stack needs. Loopback only, one request per connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::Error;

/// Sends one request and returns the status code and the body.
pub(crate) fn exchange(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String), Error> {
    let what = format!("{method} {path}");
    let io = |source| Error::Http {
        what: what.clone(),
        source,
    };
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io)?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(io)?;

    let unexpected = |detail: &str| Error::Unexpected {
        what: what.clone(),
        detail: detail.into(),
    };
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| unexpected("no end of headers"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| unexpected("no status code"))?;
    Ok((status, body.to_owned()))
}
