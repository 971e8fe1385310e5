//! OCI distribution registries: a blocking client (ureq, rustls) with the
//! auth flows of the distribution spec, used by the `registry:` sink (push)
//! and by pulls into containerd.

pub mod auth;
pub mod referrers;

use crate::oci::reference::ImageRef;
use auth::{Challenge, Credentials};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{op} {url}: the registry answered {status}: {body}")]
    Status {
        op: String,
        url: String,
        status: u16,
        body: String,
    },
    #[error("{op} {url}: {why} ({})", transport_hint(.why))]
    Transport {
        op: String,
        url: String,
        why: String,
    },
    #[error("{registry} refused the credentials{given} ({op} {url}); log in (docker login) or fix the Docker config ({config})")]
    Unauthorized {
        registry: String,
        given: String,
        op: String,
        url: String,
        config: String,
    },
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error("--ca-file {path}: {why}")]
    Ca { path: PathBuf, why: String },
    #[error("{0}")]
    Other(String),
}

fn transport_hint(why: &str) -> &'static str {
    let w = why.to_ascii_lowercase();
    if w.contains("certificate") || w.contains("issuer") || w.contains("tls") {
        "the registry's TLS certificate is not trusted: pass --ca-file with its CA"
    } else {
        "is the registry running and reachable? for a plain-HTTP registry pass --insecure"
    }
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Plain HTTP (only when asked).
    pub insecure: bool,
    /// Extra CA certificates (PEM) to trust.
    pub ca_file: Option<PathBuf>,
}

/// A response with its body read.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One repository of one registry.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    pub registry: String,
    pub repo: String,
    creds: Option<Credentials>,
    /// `Authorization` to send (a bearer token, or basic when asked).
    authorization: Mutex<Option<String>>,
    /// Other repositories whose blobs we may mount (pull scope).
    pub mount_from: Mutex<Vec<String>>,
    pub push: bool,
}

/// The host that serves a registry name (Docker Hub's is another).
fn host_of(domain: &str) -> &str {
    if domain == "docker.io" {
        "registry-1.docker.io"
    } else {
        domain
    }
}

fn agent(opts: &Options) -> Result<ureq::Agent, RegistryError> {
    let mut cfg = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        .max_redirects(5);
    if let Some(path) = &opts.ca_file {
        let pem = std::fs::read(path).map_err(|e| RegistryError::Ca {
            path: path.clone(),
            why: e.to_string(),
        })?;
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            if let Ok(ureq::tls::PemItem::Certificate(c)) = item {
                certs.push(c);
            }
        }
        if certs.is_empty() {
            return Err(RegistryError::Ca {
                path: path.clone(),
                why: "no PEM certificate in it".into(),
            });
        }
        cfg = cfg.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                .build(),
        );
    }
    Ok(cfg.build().new_agent())
}

impl Client {
    pub fn new(reference: &ImageRef, opts: &Options, push: bool) -> Result<Self, RegistryError> {
        let scheme = if opts.insecure { "http" } else { "https" };
        let creds = auth::lookup(&reference.domain)?;
        Ok(Client {
            agent: agent(opts)?,
            base: format!("{scheme}://{}", host_of(&reference.domain)),
            registry: reference.domain.clone(),
            repo: reference.path.clone(),
            creds,
            authorization: Mutex::new(None),
            mount_from: Mutex::new(Vec::new()),
            push,
        })
    }

    /// Use these credentials rather than the Docker config's.
    pub fn set_credentials(&mut self, creds: Option<Credentials>) {
        self.creds = creds;
    }

    pub fn url(&self, tail: &str) -> String {
        format!("{}/v2/{}/{tail}", self.base, self.repo)
    }

    /// Resolve a `Location` header against the registry.
    pub fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}{location}", self.base)
        }
    }

    fn send_once(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let mut b = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if let Some(a) = self.authorization.lock().unwrap().as_ref() {
            b = b.header("Authorization", a.as_str());
        }
        let req = b
            .body(body.map(|b| b.to_vec()).unwrap_or_default())
            .map_err(|e| ureq::Error::BadUri(e.to_string()))?;
        self.agent.run(req)
    }

    /// Send a request; on 401, answer the challenge and send it once more.
    pub fn send(
        &self,
        op: &str,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<ureq::http::Response<ureq::Body>, RegistryError> {
        let transport = |e: ureq::Error| RegistryError::Transport {
            op: op.into(),
            url: url.into(),
            why: e.to_string(),
        };
        let r = self
            .send_once(method, url, headers, body)
            .map_err(transport)?;
        if r.status().as_u16() != 401 {
            return Ok(r);
        }
        let challenge = r
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .and_then(auth::parse_challenge);
        self.answer(op, url, challenge)?;
        let r = self
            .send_once(method, url, headers, body)
            .map_err(transport)?;
        if r.status().as_u16() == 401 {
            return Err(self.unauthorized(op, url));
        }
        Ok(r)
    }

    fn unauthorized(&self, op: &str, url: &str) -> RegistryError {
        RegistryError::Unauthorized {
            registry: self.registry.clone(),
            given: match &self.creds {
                Some(c) => format!(" of user '{}'", c.username),
                None => " (none were found)".into(),
            },
            op: op.into(),
            url: url.into(),
            config: auth::docker_config_path()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "$DOCKER_CONFIG/config.json".into()),
        }
    }

    /// Get what the challenge asks for: basic credentials, or a token.
    fn answer(
        &self,
        op: &str,
        url: &str,
        challenge: Option<Challenge>,
    ) -> Result<(), RegistryError> {
        match challenge {
            Some(Challenge::Basic) | None => {
                let c = self
                    .creds
                    .as_ref()
                    .ok_or_else(|| self.unauthorized(op, url))?;
                *self.authorization.lock().unwrap() = Some(c.basic_header());
                Ok(())
            }
            Some(Challenge::Bearer { realm, service, .. }) => {
                let actions = if self.push { "pull,push" } else { "pull" };
                let mut scopes = vec![format!("repository:{}:{actions}", self.repo)];
                for from in self.mount_from.lock().unwrap().iter() {
                    if from != &self.repo {
                        scopes.push(format!("repository:{from}:pull"));
                    }
                }
                let mut token_url = realm.clone();
                let mut sep = if realm.contains('?') { '&' } else { '?' };
                if let Some(s) = &service {
                    token_url.push_str(&format!("{sep}service={}", urlencode(s)));
                    sep = '&';
                }
                for s in &scopes {
                    token_url.push_str(&format!("{sep}scope={}", urlencode(s)));
                    sep = '&';
                }
                let mut req = self.agent.get(&token_url);
                if let Some(c) = &self.creds {
                    req = req.header("Authorization", c.basic_header());
                }
                let mut r = req.call().map_err(|e| RegistryError::Transport {
                    op: "get a token".into(),
                    url: realm.clone(),
                    why: e.to_string(),
                })?;
                let status = r.status().as_u16();
                if status == 401 || status == 403 {
                    return Err(self.unauthorized(op, url));
                }
                let body = r.body_mut().read_to_vec().unwrap_or_default();
                if status != 200 {
                    return Err(RegistryError::Status {
                        op: "get a token".into(),
                        url: realm,
                        status,
                        body: snippet(&body),
                    });
                }
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let token = v["token"]
                    .as_str()
                    .or(v["access_token"].as_str())
                    .ok_or_else(|| {
                        RegistryError::Other(format!("the token server {realm} gave no token"))
                    })?;
                *self.authorization.lock().unwrap() = Some(format!("Bearer {token}"));
                Ok(())
            }
        }
    }

    /// Send and read the whole reply.
    pub fn call(
        &self,
        op: &str,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Reply, RegistryError> {
        let mut r = self.send(op, method, url, headers, body)?;
        let status = r.status().as_u16();
        let hs = r
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = r
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .map_err(|e| RegistryError::Transport {
                op: op.into(),
                url: url.into(),
                why: e.to_string(),
            })?;
        Ok(Reply {
            status,
            headers: hs,
            body,
        })
    }

    /// Fail unless the status is one of `ok`.
    pub fn expect(
        &self,
        op: &str,
        url: &str,
        r: Reply,
        ok: &[u16],
    ) -> Result<Reply, RegistryError> {
        if ok.contains(&r.status) {
            Ok(r)
        } else if r.status == 401 || r.status == 403 {
            Err(self.unauthorized(op, url))
        } else {
            Err(RegistryError::Status {
                op: op.into(),
                url: url.into(),
                status: r.status,
                body: snippet(&r.body),
            })
        }
    }

    pub fn has_blob(&self, digest: &str) -> Result<bool, RegistryError> {
        let url = self.url(&format!("blobs/{digest}"));
        let r = self.call("HEAD", "HEAD", &url, &[], None)?;
        match r.status {
            200 => Ok(true),
            404 => Ok(false),
            _ => self.expect("HEAD", &url, r, &[200]).map(|_| true),
        }
    }

    /// Mount a blob from another repository of this registry.
    pub fn mount(&self, digest: &str, from: &str) -> Result<bool, RegistryError> {
        let url = self.url(&format!(
            "blobs/uploads/?mount={digest}&from={}",
            urlencode(from)
        ));
        let r = self.call("mount", "POST", &url, &[("Content-Length", "0")], Some(b""))?;
        if r.status == 201 {
            return Ok(true);
        }
        // 202: the registry opened an upload instead; close it.
        if let Some(loc) = r.header("location") {
            let _ = self.call("cancel upload", "DELETE", &self.absolute(loc), &[], None);
        }
        Ok(false)
    }

    /// Open an upload session; its location.
    pub fn start_upload(&self) -> Result<String, RegistryError> {
        let url = self.url("blobs/uploads/");
        let r = self.call(
            "start upload",
            "POST",
            &url,
            &[("Content-Length", "0")],
            Some(b""),
        )?;
        let r = self.expect("start upload", &url, r, &[202])?;
        let loc = r
            .header("location")
            .ok_or_else(|| RegistryError::Other(format!("{url}: no Location for the upload")))?;
        Ok(self.absolute(loc))
    }

    /// Send one chunk; the location for the next.
    pub fn patch(
        &self,
        location: &str,
        offset: u64,
        chunk: &[u8],
    ) -> Result<String, RegistryError> {
        let range = format!("{offset}-{}", offset + chunk.len() as u64 - 1);
        let len = chunk.len().to_string();
        let r = self.call(
            "upload chunk",
            "PATCH",
            location,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", &range),
                ("Content-Length", &len),
            ],
            Some(chunk),
        )?;
        let r = self.expect("upload chunk", location, r, &[202])?;
        Ok(r.header("location")
            .map(|l| self.absolute(l))
            .unwrap_or(location.to_string()))
    }

    /// Close an upload with its digest (and the last bytes, if any).
    pub fn finish_upload(
        &self,
        location: &str,
        digest: &str,
        last: &[u8],
    ) -> Result<(), RegistryError> {
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={digest}");
        let len = last.len().to_string();
        let r = self.call(
            "finish upload",
            "PUT",
            &url,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", &len),
            ],
            Some(last),
        )?;
        self.expect("finish upload", &url, r, &[201, 204])
            .map(|_| ())
    }

    pub fn cancel_upload(&self, location: &str) {
        let _ = self.call("cancel upload", "DELETE", location, &[], None);
    }

    pub fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Option<String>, RegistryError> {
        let url = self.url(&format!("manifests/{reference}"));
        let len = bytes.len().to_string();
        let r = self.call(
            "put manifest",
            "PUT",
            &url,
            &[("Content-Type", media_type), ("Content-Length", &len)],
            Some(bytes),
        )?;
        let r = self.expect("put manifest", &url, r, &[200, 201])?;
        Ok(r.header("docker-content-digest").map(String::from))
    }

    /// A manifest or index: (media type, bytes).
    pub fn get_manifest(&self, reference: &str) -> Result<(String, Vec<u8>), RegistryError> {
        let url = self.url(&format!("manifests/{reference}"));
        let accept = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
        let r = self.call("get manifest", "GET", &url, &[("Accept", accept)], None)?;
        let r = self.expect("get manifest", &url, r, &[200])?;
        let mt = r
            .header("content-type")
            .unwrap_or("application/vnd.oci.image.manifest.v1+json")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        Ok((mt, r.body))
    }

    /// A blob, streamed.
    pub fn get_blob(&self, digest: &str) -> Result<impl Read + use<>, RegistryError> {
        let url = self.url(&format!("blobs/{digest}"));
        let r = self.send("get blob", "GET", &url, &[], None)?;
        let status = r.status().as_u16();
        if status != 200 {
            let mut r = r;
            let body = r.body_mut().read_to_vec().unwrap_or_default();
            return self
                .expect(
                    "get blob",
                    &url,
                    Reply {
                        status,
                        headers: Vec::new(),
                        body,
                    },
                    &[200],
                )
                .map(|_| unreachable!());
        }
        Ok(r.into_body().into_reader())
    }
}

fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s = s.trim();
    if s.len() > 300 {
        let mut end = 300;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else if s.is_empty() {
        "(no body)".into()
    } else {
        s.to_string()
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
