//! containerd plumbing over its gRPC API (containerd 1.6 and later): the
//! connection with namespace and lease headers, content, leases, images,
//! snapshots and diff, and the private containerd nixoci can start.
//!
//! Everything here is async; the sink in [`crate::sink::containerd`] bridges
//! it to the synchronous image pipeline.

pub mod address;
pub mod containers;
pub mod content;
pub mod engine;
pub mod images;
pub mod placed;

use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

pub const NAMESPACE_HEADER: &str = "containerd-namespace";
pub const LEASE_HEADER: &str = "containerd-lease";
pub const DEFAULT_NAMESPACE: &str = "default";
/// The label on an image manifest naming one of its referrers (SBOM,
/// provenance) by digest, suffixed with its index: a GC reference, so the
/// referrer lives as long as the image.
pub const REFERRER_LABEL: &str = "containerd.io/gc.ref.content.referrer.";
/// The snapshotter unless one is asked for: overlayfs where this
/// containerd could load it (a rootless one mounts it in its user
/// namespace), else native (see [`pick_snapshotter`]).
pub const DEFAULT_SNAPSHOTTER: &str = "auto";

#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("containerd at {address}: {op}: {status}")]
    Rpc {
        address: String,
        op: String,
        status: Box<Status>,
    },
    #[error("no containerd answers; tried:\n{tried}\n{hint}")]
    Unreachable { tried: String, hint: String },
    #[error("{0}")]
    Engine(String),
    #[error("containerd applied layer {layer} and reports diff {got}, but the image config says {want}: the layer is corrupt")]
    DiffMismatch {
        layer: String,
        got: String,
        want: String,
    },
    #[error("invalid namespace '{0}': a namespace is lowercase letters, digits, '-', '_' and '.', starting with a letter or digit")]
    Namespace(String),
}

/// A connection to one containerd, in one namespace, optionally under a lease.
#[derive(Clone)]
pub struct Client {
    pub channel: Channel,
    pub address: String,
    pub namespace: String,
    pub lease: Option<String>,
    /// Set when this containerd runs in other namespaces (rootless).
    pub rootless: Option<std::sync::Arc<crate::rootless::EngineNs>>,
    /// What `auto` means for this containerd (set by
    /// [`address::connect`]; overlayfs until then).
    pub auto_snapshotter: String,
}

pub fn check_namespace(ns: &str) -> Result<(), ContainerdError> {
    let ok = !ns.is_empty()
        && ns.len() <= 76
        && ns.as_bytes()[0].is_ascii_alphanumeric()
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ContainerdError::Namespace(ns.into()))
    }
}

impl Client {
    /// Connect to a socket and check that containerd answers.
    pub async fn connect(address: &str, namespace: &str) -> Result<Self, String> {
        let path = address
            .strip_prefix("unix://")
            .unwrap_or(address)
            .to_string();
        let channel =
            tokio::time::timeout(Duration::from_secs(3), containerd_client::connect(&path))
                .await
                .map_err(|_| "timed out connecting".to_string())?
                .map_err(|e| {
                    let mut s = e.to_string();
                    let mut src = std::error::Error::source(&e);
                    while let Some(inner) = src {
                        s = format!("{s}: {inner}");
                        src = inner.source();
                    }
                    s
                })?;
        let rootless = crate::rootless::EngineNs::detect(
            std::path::Path::new(&path),
            &engine::rootlesskit_dirs(),
        )
        .map(std::sync::Arc::new);
        let client = Client {
            channel,
            address: path,
            namespace: namespace.into(),
            lease: None,
            rootless,
            auto_snapshotter: "overlayfs".into(),
        };
        let mut version = containerd_client::services::v1::version_client::VersionClient::new(
            client.channel.clone(),
        );
        tokio::time::timeout(Duration::from_secs(5), version.version(Request::new(())))
            .await
            .map_err(|_| "connected, but the Version call timed out".to_string())?
            .map_err(|s| format!("connected, but the Version call failed: {}", s.message()))?;
        Ok(client)
    }

    pub fn with_lease(&self, lease: Option<String>) -> Self {
        Client {
            lease,
            ..self.clone()
        }
    }

    pub fn in_namespace(&self, namespace: &str) -> Self {
        Client {
            namespace: namespace.into(),
            ..self.clone()
        }
    }

    /// A request carrying the namespace (and lease) headers.
    pub fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        let md = r.metadata_mut();
        md.insert(
            NAMESPACE_HEADER,
            MetadataValue::try_from(self.namespace.as_str()).expect("checked namespace"),
        );
        if let Some(l) = &self.lease {
            md.insert(
                LEASE_HEADER,
                MetadataValue::try_from(l.as_str()).expect("lease ids are ASCII"),
            );
        }
        r
    }

    pub fn err(&self, op: impl Into<String>) -> impl FnOnce(Status) -> ContainerdError {
        let address = self.address.clone();
        let op = op.into();
        move |status| ContainerdError::Rpc {
            address,
            op,
            status: Box::new(status),
        }
    }

    /// The snapshotter to use when `asked` (a user's choice, or `auto`).
    pub fn snapshotter(&self, asked: &str) -> String {
        if asked == DEFAULT_SNAPSHOTTER {
            self.auto_snapshotter.clone()
        } else {
            asked.to_string()
        }
    }

    pub async fn version(&self) -> Result<String, ContainerdError> {
        let mut v = containerd_client::services::v1::version_client::VersionClient::new(
            self.channel.clone(),
        );
        let r = v
            .version(Request::new(()))
            .await
            .map_err(self.err("version"))?;
        Ok(r.into_inner().version)
    }
}

/// The snapshotters this containerd loaded, and why overlayfs did not
/// load when it did not (its own test mount failed, say).
pub async fn snapshotters(c: &Client) -> Result<(Vec<String>, Option<String>), ContainerdError> {
    let mut i = containerd_client::services::v1::introspection_client::IntrospectionClient::new(
        c.channel.clone(),
    );
    let r = i
        .plugins(Request::new(
            containerd_client::services::v1::PluginsRequest {
                filters: vec!["type==io.containerd.snapshotter.v1".into()],
            },
        ))
        .await
        .map_err(c.err("list snapshotters"))?
        .into_inner();
    let mut ok = Vec::new();
    let mut overlay_error = None;
    for p in r.plugins {
        match &p.init_err {
            None => ok.push(p.id),
            Some(e) if p.id == "overlayfs" => overlay_error = Some(e.message.clone()),
            Some(_) => {}
        }
    }
    if !ok.iter().any(|s| s == "overlayfs") && overlay_error.is_none() {
        overlay_error = Some("this containerd has no overlayfs snapshotter".into());
    }
    Ok((ok, overlay_error))
}

/// The directory containerd's plugin `id` of type `kind` works in, as its
/// introspection exports it (`root`: the content store does, overlayfs
/// does, native does not), when that plugin loaded.
pub async fn plugin_root(c: &Client, kind: &str, id: &str) -> Option<std::path::PathBuf> {
    let mut i = containerd_client::services::v1::introspection_client::IntrospectionClient::new(
        c.channel.clone(),
    );
    let r = i
        .plugins(Request::new(
            containerd_client::services::v1::PluginsRequest {
                filters: vec![format!("type=={kind},id=={id}")],
            },
        ))
        .await
        .ok()?
        .into_inner();
    let p = r
        .plugins
        .into_iter()
        .find(|p| p.id == id && p.init_err.is_none())?;
    let root = std::path::PathBuf::from(p.exports.get("root")?);
    root.is_absolute().then_some(root)
}

/// overlayfs where it loaded, else fuse-overlayfs (a proxy snapshotter of
/// that name), else native.
pub fn pick_snapshotter(ok: &[String]) -> String {
    ["overlayfs", "fuse-overlayfs"]
        .into_iter()
        .find(|s| ok.iter().any(|o| o == s))
        .unwrap_or("native")
        .to_string()
}

pub fn is_code(e: &ContainerdError, code: Code) -> bool {
    matches!(e, ContainerdError::Rpc { status, .. } if status.code() == code)
}

/// `containerd.io/gc.expire` style times: RFC 3339 UTC, `secs` from now.
pub fn expire_in(secs: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    crate::oci::time::rfc3339(now + secs)
}

/// A fresh id: `nixoci-<pid>-<nanos>-<n>`.
pub fn unique_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_overlayfs_then_fuse_overlayfs_then_native() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(pick_snapshotter(&v(&["native", "overlayfs"])), "overlayfs");
        assert_eq!(
            pick_snapshotter(&v(&["native", "fuse-overlayfs"])),
            "fuse-overlayfs"
        );
        assert_eq!(pick_snapshotter(&v(&["native"])), "native");
        assert_eq!(pick_snapshotter(&[]), "native");
    }
}
