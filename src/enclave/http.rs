//! A small HTTP/1.1 client for recipes: one request per connection
//! (`Connection: close`), plain HTTP to a service's address, bodies with
//! `Content-Length`, chunked, or until close.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub code: u16,
    pub body: String,
}

pub struct Request<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub endpoint: &'a str,
    pub headers: &'a [(String, String)],
    pub content_type: Option<&'a str>,
    pub body: &'a str,
}

pub fn send(r: &Request, timeout: Duration) -> std::io::Result<Response> {
    let addr: SocketAddr = format!("{}:{}", r.host, r.port)
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let path = if r.endpoint.starts_with('/') {
        r.endpoint.to_string()
    } else {
        format!("/{}", r.endpoint)
    };
    let mut head = format!(
        "{} {path} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\nUser-Agent: nixoci\r\n",
        r.method, r.host, r.port
    );
    for (k, v) in r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(ct) = r.content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    if r.method != "GET" || !r.body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(r.body.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse(&raw)
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

/// Parse a whole response.
pub fn parse(raw: &[u8]) -> std::io::Result<Response> {
    // Headers end at an empty line; CGI scripts often end lines with a
    // bare LF, so accept both.
    let (end, sep) = (0..raw.len())
        .find_map(|i| {
            if raw[i..].starts_with(b"\r\n\r\n") {
                Some((i, 4))
            } else if raw[i..].starts_with(b"\n\n") {
                Some((i, 2))
            } else if raw[i..].starts_with(b"\r\n\n") {
                Some((i, 3))
            } else {
                None
            }
        })
        .ok_or_else(|| bad("no end of headers in the response"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split('\n').map(|l| l.trim_end_matches('\r'));
    let status = lines.next().unwrap_or("");
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("no status code in the response"))?;
    let mut length = None;
    let mut chunked = false;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim();
            if k == "content-length" {
                length = v.parse::<usize>().ok();
            } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    let rest = &raw[end + sep..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest[..n.min(rest.len())].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        code,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut b: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("truncated chunk"))?;
        let size_text = String::from_utf8_lossy(&b[..nl]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad("bad chunk size"))?;
        b = &b[nl + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err(bad("truncated chunk"));
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lengths_chunks_and_close() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello world").unwrap();
        assert_eq!(
            r,
            Response {
                code: 200,
                body: "hello".into()
            }
        );
        let r = parse(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(
            r,
            Response {
                code: 404,
                body: "abcde".into()
            }
        );
        let r = parse(b"HTTP/1.0 201 Created\r\n\r\nuntil close").unwrap();
        assert_eq!(r.body, "until close");
        assert!(parse(b"garbage").is_err());
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\n\n{}").unwrap();
        assert_eq!(r.body, "{}");
    }
}
