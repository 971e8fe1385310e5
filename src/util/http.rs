//! Downloading a URL whole (package files that name `http(s)://` URLs).

use std::io::Read;
use std::time::Duration;

/// The body of a `GET url` (redirects followed), at most `limit` bytes; a
/// status other than 2xx, a longer body or a transport failure is an error
/// naming the URL.
pub fn download(url: &str, limit: u64, timeout: Duration) -> Result<Vec<u8>, String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("{url}: only http:// and https:// URLs are fetched"));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(5)
        .timeout_global(Some(timeout))
        .user_agent("nixoci")
        .build()
        .into();
    let mut resp = agent.get(url).call().map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("{url}: the server answered {status}"));
    }
    let mut body = Vec::new();
    resp.body_mut()
        .as_reader()
        .take(limit + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("{url}: reading the body: {e}"))?;
    if body.len() as u64 > limit {
        return Err(format!("{url}: the body is over {limit} bytes"));
    }
    Ok(body)
}
