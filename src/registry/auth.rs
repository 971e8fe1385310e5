//! Credentials and challenges: the Docker config (`auths`, `credHelpers`,
//! `credsStore` through the `docker-credential-*` protocol), and the
//! `WWW-Authenticate` challenges of the distribution spec (Basic, and
//! Bearer with a token from the realm). Secrets never go into messages.

pub use crate::util::base64::{base64_decode, base64_encode};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A user name and a secret. `Debug` does not show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            base64_encode(format!("{}:{}", self.username, self.secret).as_bytes())
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{path}: {why}")]
    Config { path: PathBuf, why: String },
    #[error("credential helper docker-credential-{helper} for {registry}: {why}")]
    Helper {
        helper: String,
        registry: String,
        why: String,
    },
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(serde::Deserialize, Default)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// The keys a registry may have in `auths` (Docker Hub's is a URL).
fn keys_for(registry: &str) -> Vec<String> {
    let mut keys = vec![
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
        format!("https://{registry}/v1/"),
        format!("https://{registry}/v2/"),
    ];
    if registry == "docker.io" || registry == "registry-1.docker.io" {
        keys.insert(0, "https://index.docker.io/v1/".into());
        keys.push("index.docker.io".into());
    }
    keys
}

/// Credentials for `registry` (a host[:port], as in image references), from
/// the Docker config; None when it has none.
pub fn lookup(registry: &str) -> Result<Option<Credentials>, AuthError> {
    let Some(path) = docker_config_path() else {
        return Ok(None);
    };
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(AuthError::Config {
                path,
                why: e.to_string(),
            })
        }
    };
    match from_config(&path, &text, registry)? {
        Found::Credentials(c) => Ok(Some(c)),
        Found::Helper(h) => helper_get(&h, registry),
        Found::Nothing => Ok(None),
    }
}

/// What a Docker config says about a registry.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    Credentials(Credentials),
    /// Ask `docker-credential-<name>`.
    Helper(String),
    Nothing,
}

/// Read a Docker config's text (`path` names it in errors): a credential
/// helper for the registry first, then its `auths` entry, then the
/// `credsStore`.
pub fn from_config(path: &Path, text: &[u8], registry: &str) -> Result<Found, AuthError> {
    let cfg: DockerConfig = serde_json::from_slice(text).map_err(|e| AuthError::Config {
        path: path.to_path_buf(),
        why: format!("not a Docker config: {e}"),
    })?;
    let keys = keys_for(registry);
    if let Some(helper) = keys.iter().find_map(|k| cfg.cred_helpers.get(k)) {
        return Ok(Found::Helper(helper.clone()));
    }
    for k in &keys {
        if let Some(e) = cfg.auths.get(k) {
            if let Some(c) = entry_credentials(e) {
                return Ok(Found::Credentials(c));
            }
        }
    }
    Ok(match &cfg.creds_store {
        Some(store) => Found::Helper(store.clone()),
        None => Found::Nothing,
    })
}

fn entry_credentials(e: &AuthEntry) -> Option<Credentials> {
    if let Some(a) = &e.auth {
        let decoded = base64_decode(a.trim())?;
        let text = String::from_utf8(decoded).ok()?;
        let (u, p) = text.split_once(':')?;
        return Some(Credentials {
            username: u.into(),
            secret: p.into(),
        });
    }
    match (&e.username, &e.password, &e.identitytoken) {
        (Some(u), Some(p), _) => Some(Credentials {
            username: u.clone(),
            secret: p.clone(),
        }),
        (_, _, Some(t)) => Some(Credentials {
            username: "<token>".into(),
            secret: t.clone(),
        }),
        _ => None,
    }
}

/// `docker-credential-<helper> get`, the server on stdin, JSON on stdout.
fn helper_get(helper: &str, registry: &str) -> Result<Option<Credentials>, AuthError> {
    let err = |why: String| AuthError::Helper {
        helper: helper.into(),
        registry: registry.into(),
        why,
    };
    let bin = format!("docker-credential-{helper}");
    let mut child = Command::new(&bin)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot run {bin}: {e}")))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(registry.as_bytes())
        .map_err(|e| err(e.to_string()))?;
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if msg.contains("credentials not found") {
            return Ok(None);
        }
        // The helper's own message, never the secret (it gave none).
        return Err(err(format!("it failed ({}): {msg}", out.status)));
    }
    #[derive(serde::Deserialize)]
    struct Reply {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let r: Reply = serde_json::from_slice(&out.stdout)
        .map_err(|_| err("it printed something that is not {\"Username\", \"Secret\"}".into()))?;
    Ok(Some(Credentials {
        username: r.username,
        secret: r.secret,
    }))
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parse `Bearer realm="...",service="...",scope="..."` or `Basic realm=...`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = BTreeMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (k, after) = s.split_once('=')?;
        let k = k.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (q[..end].to_string(), &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(k, v);
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn base64_round_trips_and_secrets_stay_hidden() {
        for s in ["", "a", "ab", "abc", "user:pa:ss", "ünïcode"] {
            assert_eq!(
                base64_decode(&base64_encode(s.as_bytes())).unwrap(),
                s.as_bytes()
            );
        }
        assert_eq!(base64_encode(b"user:pass"), "dXNlcjpwYXNz");
        let c = Credentials {
            username: "u".into(),
            secret: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn docker_config_auths_and_helpers() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("config.json"),
            r#"{"auths": {"127.0.0.1:5000": {"auth": "dXNlcjpwYXNz"}, "https://other:443": {"username": "o", "password": "p"}}}"#,
        )
        .unwrap();
        // SAFETY: tests of this module do not run Docker config lookups concurrently.
        unsafe { std::env::set_var("DOCKER_CONFIG", d.path()) };
        let c = lookup("127.0.0.1:5000").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.secret.as_str()), ("user", "pass"));
        assert_eq!(lookup("other:443").unwrap().unwrap().username, "o");
        assert_eq!(lookup("nowhere:1").unwrap(), None);
        unsafe { std::env::remove_var("DOCKER_CONFIG") };
    }
}
