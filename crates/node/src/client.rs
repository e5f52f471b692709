//! A tiny blocking HTTP/1.1 client for the node's API: one request per connection
//! (`Connection: close`), enough for the CLI and the tests without a heavy HTTP stack.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest response accepted, in bytes; a larger one is an error rather than unbounded memory.
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Why a request got no HTTP response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The node address is not `http://host:port` (caller's fault).
    #[error("invalid node address {address:?}: {reason}")]
    Address {
        /// The address given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The node could not be reached (not running, wrong port, timeout).
    #[error("cannot reach node at {address}: {source}")]
    Connect {
        /// The address dialled.
        address: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The connection broke or timed out during the exchange.
    #[error("request to {address} failed: {source}")]
    Io {
        /// The address dialled.
        address: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The node answered something that is not valid HTTP/1.1 (the node's fault).
    #[error("malformed HTTP response from {address}: {reason}")]
    Malformed {
        /// The address dialled.
        address: String,
        /// What is wrong.
        reason: String,
    },
}

/// An HTTP response: status and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body (chunked encoding already removed).
    pub body: Vec<u8>,
}

impl Response {
    /// The body parsed as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A client for one node's API.
#[derive(Clone, Debug)]
pub struct HttpClient {
    host_port: String,
    address: SocketAddr,
    timeout: Duration,
}

impl HttpClient {
    /// A client for `base` (`http://127.0.0.1:7001` or `127.0.0.1:7001`); every request (connect,
    /// send, receive) must finish within `timeout`.
    pub fn new(base: &str, timeout: Duration) -> Result<HttpClient, ClientError> {
        let bad = |reason: &str| ClientError::Address { address: base.to_owned(), reason: reason.to_owned() };
        if base.starts_with("https://") {
            return Err(bad("https is not supported by this client; use http://"));
        }
        let rest = base.strip_prefix("http://").unwrap_or(base);
        let host_port = rest.split('/').next().unwrap_or_default().to_owned();
        if !host_port.contains(':') {
            return Err(bad("expected http://host:port"));
        }
        let address = host_port
            .to_socket_addrs()
            .map_err(|error| bad(&error.to_string()))?
            .next()
            .ok_or_else(|| bad("the host name resolves to no address"))?;
        Ok(HttpClient { host_port, address, timeout })
    }

    /// The node's `host:port`.
    pub fn host_port(&self) -> &str {
        &self.host_port
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Response, ClientError> {
        self.request("GET", path, None)
    }

    /// Sends `method path` with an optional JSON body and reads the whole response.
    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Response, ClientError> {
        self.request_with_headers(method, path, &[], body)
    }

    /// Like [`HttpClient::request`], with extra headers (e.g. `Idempotency-Key`).
    pub fn request_with_headers(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response, ClientError> {
        let io = |source| ClientError::Io { address: self.host_port.clone(), source };
        let mut stream = TcpStream::connect_timeout(&self.address, self.timeout)
            .map_err(|source| ClientError::Connect { address: self.host_port.clone(), source })?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", self.host_port);
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body {
            head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body.unwrap_or_default());
        // A server may answer (e.g. 413) and close before reading all of a large body: a failed
        // write is not the end, the response may already be waiting.
        let write_result = stream.write_all(&request);
        let mut received = Vec::new();
        let read_result = (&mut stream).take(RESPONSE_BYTES_MAX as u64 + 1).read_to_end(&mut received);
        if received.is_empty() {
            write_result.map_err(io)?;
            read_result.map_err(io)?;
        }
        if received.len() > RESPONSE_BYTES_MAX {
            return Err(self.malformed(format!("response exceeds {RESPONSE_BYTES_MAX} bytes")));
        }
        self.parse(&received)
    }

    fn malformed(&self, reason: String) -> ClientError {
        ClientError::Malformed { address: self.host_port.clone(), reason }
    }

    fn parse(&self, received: &[u8]) -> Result<Response, ClientError> {
        let split = received
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .ok_or_else(|| self.malformed("no end of headers".into()))?;
        let head = std::str::from_utf8(&received[..split])
            .map_err(|_| self.malformed("headers not UTF-8".into()))?;
        let body = &received[split + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| self.malformed(format!("bad status line {status_line:?}")))?;
        let mut chunked = false;
        let mut length = None;
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
                if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                } else if name == "content-length" {
                    length = value.parse::<usize>().ok();
                }
            }
        }
        let body = if chunked {
            self.dechunk(body)?
        } else {
            let end = length.unwrap_or(body.len()).min(body.len());
            body[..end].to_vec()
        };
        Ok(Response { status, body })
    }

    fn dechunk(&self, mut rest: &[u8]) -> Result<Vec<u8>, ClientError> {
        let mut body = Vec::new();
        loop {
            let line_end = rest
                .windows(2)
                .position(|window| window == b"\r\n")
                .ok_or_else(|| self.malformed("truncated chunk size".into()))?;
            let size_text = std::str::from_utf8(&rest[..line_end]).unwrap_or_default();
            let size_text = size_text.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| self.malformed(format!("bad chunk size {size_text:?}")))?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                return Ok(body);
            }
            if rest.len() < size {
                return Err(self.malformed("truncated chunk".into()));
            }
            body.extend_from_slice(&rest[..size]);
            rest = rest.get(size + 2..).unwrap_or_default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> HttpClient {
        HttpClient::new("http://127.0.0.1:1", Duration::from_secs(1)).unwrap()
    }

    #[test]
    fn parses_content_length_and_chunked_bodies() {
        let plain = client().parse(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!(plain, Response { status: 200, body: b"{}".to_vec() });
        let chunked = client()
            .parse(b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            .unwrap();
        assert_eq!(chunked, Response { status: 404, body: b"abcde".to_vec() });
    }

    #[test]
    fn refuses_bad_addresses_and_responses() {
        assert!(matches!(
            HttpClient::new("https://x:1", Duration::from_secs(1)),
            Err(ClientError::Address { .. })
        ));
        assert!(matches!(
            HttpClient::new("localhost", Duration::from_secs(1)),
            Err(ClientError::Address { .. })
        ));
        assert!(matches!(client().parse(b"garbage"), Err(ClientError::Malformed { .. })));
    }
}
