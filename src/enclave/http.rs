//! Recipes' HTTP requests, through `ureq`: plain HTTP to a service's
//! address, any method, no redirects followed, every status a result (not
//! an error). The tests below serve the response shapes services send
//! (Content-Length, chunked, until close, and CGI scripts' bare-LF header
//! lines, as busybox httpd passes them on) and check that they are read.

use std::io::Read;
use std::time::Duration;

/// Bodies larger than this are cut (a recipe compares and extracts from
/// them; it does not download files).
const MAX_BODY: u64 = 16 << 20;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Response {
    pub code: u16,
    pub body: String,
}

#[derive(serde::Serialize)]
pub struct Request<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub endpoint: &'a str,
    pub headers: &'a [(String, String)],
    pub content_type: Option<&'a str>,
    pub body: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Request(String),
    #[error(transparent)]
    Transport(#[from] ureq::Error),
    #[error("reading the body: {0}")]
    Body(#[from] std::io::Error),
}

/// [`send`] from where the services' network is: here, or (rootless) by
/// nixoci's helper inside the engine's namespaces, the request and its
/// answer passed as JSON.
pub fn send_where(
    r: &Request,
    timeout: Duration,
    host: &super::network::NetHost,
) -> Result<Response, HttpError> {
    let ns = match host {
        super::network::NetHost::Host => return send(r, timeout),
        super::network::NetHost::Engine(ns) => ns,
        super::network::NetHost::Gone => {
            return Err(HttpError::Request(
                "the rootless containerd has stopped".into(),
            ))
        }
    };
    let mut child = ns
        .helper()
        .and_then(|mut c| {
            c.args(["http", &timeout.as_millis().to_string()])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
        })
        .map_err(|e| HttpError::Request(format!("nixoci's helper in the rootless engine: {e}")))?;
    let input = serde_json::to_vec(r).expect("JSON");
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        let _ = stdin.write_all(&input);
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(HttpError::Request(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| HttpError::Request(format!("nixoci's helper answered no response: {e}")))
}

/// The helper's side of [`send_where`]: a request as JSON in, the
/// response as JSON out.
pub fn serve_one(input: &[u8], timeout: Duration) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Owned {
        method: String,
        host: String,
        port: u16,
        endpoint: String,
        headers: Vec<(String, String)>,
        content_type: Option<String>,
        body: String,
    }
    let o: Owned = serde_json::from_slice(input).map_err(|e| e.to_string())?;
    let r = Request {
        method: &o.method,
        host: &o.host,
        port: o.port,
        endpoint: &o.endpoint,
        headers: &o.headers,
        content_type: o.content_type.as_deref(),
        body: &o.body,
    };
    let resp = send(&r, timeout).map_err(|e| e.to_string())?;
    Ok(serde_json::to_string(&resp).expect("JSON"))
}

pub fn send(r: &Request, timeout: Duration) -> Result<Response, HttpError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .user_agent("nixoci")
        .build()
        .into();
    let path = if r.endpoint.starts_with('/') {
        r.endpoint.to_string()
    } else {
        format!("/{}", r.endpoint)
    };
    let mut b = ureq::http::Request::builder()
        .method(r.method)
        .uri(format!("http://{}:{}{path}", r.host, r.port));
    for (k, v) in r.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    if let Some(ct) = r.content_type {
        b = b.header("Content-Type", ct);
    }
    let req = b
        .body(r.body.as_bytes().to_vec())
        .map_err(|e| HttpError::Request(e.to_string()))?;
    let mut resp = agent.run(req)?;
    let code = resp.status().as_u16();
    let mut body = Vec::new();
    resp.body_mut()
        .as_reader()
        .take(MAX_BODY)
        .read_to_end(&mut body)?;
    Ok(Response {
        code,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    /// Serve `raw` to one request on loopback, then close; returns the port
    /// and the request the client sent.
    fn serve(raw: &'static [u8]) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            s.write_all(raw).unwrap();
            req
        });
        (port, h)
    }

    fn get(port: u16, method: &str, body: &str) -> Result<Response, HttpError> {
        let headers = [("X-Test".to_string(), "1".to_string())];
        send(
            &Request {
                method,
                host: "127.0.0.1",
                port,
                endpoint: "status",
                headers: &headers,
                content_type: Some("application/json"),
                body,
            },
            Duration::from_secs(5),
        )
    }

    #[test]
    fn reads_the_responses_services_send() {
        let cases: [(&'static [u8], u16, &str); 5] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, "hello"),
            (
                b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n",
                404,
                "abcde",
            ),
            (b"HTTP/1.0 201 Created\r\n\r\nuntil close", 201, "until close"),
            // busybox httpd passes a CGI script's bare-LF headers on.
            (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\n\n{}", 200, "{}"),
            (b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n", 302, ""),
        ];
        for (raw, code, body) in cases {
            let (port, server) = serve(raw);
            let r = get(port, "GET", "").unwrap();
            assert_eq!(
                (r.code, r.body.as_str()),
                (code, body),
                "{}",
                String::from_utf8_lossy(raw)
            );
            let req = String::from_utf8(server.join().unwrap()).unwrap();
            assert!(req.starts_with("GET /status HTTP/1.1\r\n"), "{req}");
            assert!(req.to_ascii_lowercase().contains("x-test: 1"), "{req}");
        }
    }

    #[test]
    fn posts_a_body_and_refuses_garbage() {
        let (port, server) = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!(get(port, "POST", "{\"a\":1}").unwrap().body, "ok");
        let req = String::from_utf8(server.join().unwrap())
            .unwrap()
            .to_ascii_lowercase();
        assert!(req.starts_with("post /status"), "{req}");
        assert!(req.contains("content-type: application/json"), "{req}");
        let (port, server) = serve(b"garbage");
        assert!(get(port, "GET", "").is_err());
        server.join().unwrap();
        // Nothing listens there any more.
        assert!(get(port, "GET", "").is_err());
    }
}
