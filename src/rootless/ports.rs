//! rootlesskit's port API (`api.sock` in its state directory, HTTP/1.1 over
//! a Unix socket): a port published this way listens on the host (in the
//! user's network namespace) and forwards into the engine's network
//! namespace, to `childIP:childPort` (rootlesskit's builtin port driver).

use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Duration;

/// One forwarded port (`PortSpec` in rootlesskit's API).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PortSpec {
    /// `tcp` or `udp`.
    pub proto: String,
    #[serde(rename = "parentIP", default)]
    pub parent_ip: String,
    pub parent_port: u16,
    #[serde(rename = "childIP", default, skip_serializing_if = "String::is_empty")]
    pub child_ip: String,
    pub child_port: u16,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PortStatus {
    pub id: u64,
    pub spec: PortSpec,
}

/// One request; the status code and body.
fn request(
    api: &Path,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> io::Result<(u16, Vec<u8>)> {
    let mut s = std::os::unix::net::UnixStream::connect(api).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("rootlesskit's API at {}: {e}", api.display()),
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: rootlesskit\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.take(1 << 20).read_to_end(&mut raw)?;
    parse_response(&raw).ok_or_else(|| {
        io::Error::other(format!(
            "rootlesskit's API at {} answered no HTTP",
            api.display()
        ))
    })
}

/// Status and body of an HTTP/1.1 response (plain or chunked).
fn parse_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let rest = &raw[split + 4..];
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Some((status, rest.to_vec()));
    }
    let mut body = Vec::new();
    let mut at = rest;
    loop {
        let eol = at.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&at[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at = &at[eol + 2..];
        if size == 0 {
            return Some((status, body));
        }
        body.extend_from_slice(at.get(..size)?);
        at = at.get(size + 2..)?;
    }
}

fn api_error(what: &str, status: u16, body: &[u8]) -> io::Error {
    // rootlesskit's errors: {"message": "..."}.
    let msg = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    io::Error::other(format!("rootlesskit {what}: HTTP {status}: {msg}"))
}

/// Every port forwarded now.
pub fn list(api: &Path) -> io::Result<Vec<PortStatus>> {
    let (status, body) = request(api, "GET", "/v1/ports", None)?;
    if status != 200 {
        return Err(api_error("listing ports", status, &body));
    }
    // No ports is `null`.
    serde_json::from_slice::<Option<Vec<PortStatus>>>(&body)
        .map(Option::unwrap_or_default)
        .map_err(|e| io::Error::other(format!("rootlesskit's port list: {e}")))
}

/// Forward `spec.parentIP:parentPort` on the host to the child side.
pub fn add(api: &Path, spec: &PortSpec) -> io::Result<PortStatus> {
    let body = serde_json::to_vec(spec).expect("JSON");
    let (status, body) = request(api, "POST", "/v1/ports", Some(&body))?;
    if status != 200 && status != 201 {
        return Err(api_error(
            &format!(
                "publishing {}:{}/{}",
                spec.parent_ip, spec.parent_port, spec.proto
            ),
            status,
            &body,
        ));
    }
    serde_json::from_slice(&body)
        .map_err(|e| io::Error::other(format!("rootlesskit's answer to a new port: {e}")))
}

/// Stop forwarding port `id` (one that is gone already is not an error).
pub fn remove(api: &Path, id: u64) -> io::Result<()> {
    let (status, body) = request(api, "DELETE", &format!("/v1/ports/{id}"), None)?;
    match status {
        200 | 204 | 404 => Ok(()),
        _ => Err(api_error(&format!("removing port {id}"), status, &body)),
    }
}

/// rootlesskit's own description of itself (`/v1/info`).
pub fn info(api: &Path) -> io::Result<serde_json::Value> {
    let (status, body) = request(api, "GET", "/v1/info", None)?;
    if status != 200 {
        return Err(api_error("info", status, &body));
    }
    serde_json::from_slice(&body).map_err(|e| io::Error::other(format!("rootlesskit's info: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_plain_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]";
        assert_eq!(parse_response(plain), Some((200, b"[]".to_vec())));
        let chunked = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Some((201, b"{\"a\":1}".to_vec())));
        assert_eq!(parse_response(b"garbage"), None);
        // A chunk that claims more than is there.
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nab"),
            None
        );
        let spec = PortSpec {
            proto: "tcp".into(),
            parent_ip: "127.0.0.1".into(),
            parent_port: 8080,
            child_ip: "10.199.0.2".into(),
            child_port: 80,
        };
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            serde_json::json!({"proto": "tcp", "parentIP": "127.0.0.1", "parentPort": 8080, "childIP": "10.199.0.2", "childPort": 80})
        );
    }
}
