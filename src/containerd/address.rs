//! Which containerd to talk to: the first that answers of `--containerd-address`,
//! `$CONTAINERD_ADDRESS`, the private containerd's socket,
//! `$XDG_RUNTIME_DIR/containerd/containerd.sock` and
//! `/run/containerd/containerd.sock`. When none answers, the private one is
//! started (and the caller says so).

use super::engine::Engine;
use super::{check_namespace, Client, ContainerdError};
use std::path::Path;

#[derive(Debug, Clone)]
pub struct Connect {
    pub address: Option<String>,
    pub namespace: String,
    /// Start the private containerd when none answers.
    pub autostart: bool,
}

pub struct Connected {
    pub client: Client,
    /// Set when the private containerd was started for this call.
    pub started: Option<String>,
}

pub fn candidates(explicit: Option<&str>, home: &Path) -> Vec<String> {
    let mut c = Vec::new();
    if let Some(a) = explicit {
        c.push(a.to_string());
    }
    if let Some(a) = std::env::var_os("CONTAINERD_ADDRESS").filter(|v| !v.is_empty()) {
        c.push(a.to_string_lossy().into_owned());
    }
    c.push(Engine::new(home).socket().display().to_string());
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        c.push(
            Path::new(&x)
                .join("containerd/containerd.sock")
                .display()
                .to_string(),
        );
    }
    c.push("/run/containerd/containerd.sock".into());
    c.dedup();
    c
}

/// The client, knowing what `auto` means for its containerd.
async fn with_auto_snapshotter(mut client: Client) -> Client {
    if let Ok((ok, _)) = super::snapshotters(&client).await {
        client.auto_snapshotter = super::pick_snapshotter(&ok);
    }
    client
}

pub async fn connect(opts: &Connect, home: &Path) -> Result<Connected, ContainerdError> {
    check_namespace(&opts.namespace)?;
    let mut tried = Vec::new();
    for a in candidates(opts.address.as_deref(), home) {
        match Client::connect(&a, &opts.namespace).await {
            Ok(client) => {
                return Ok(Connected {
                    client: with_auto_snapshotter(client).await,
                    started: None,
                })
            }
            Err(why) => tried.push(format!("  {a}: {why}")),
        }
    }
    let engine = Engine::new(home);
    if !opts.autostart {
        return Err(ContainerdError::Unreachable {
            tried: tried.join("\n"),
            hint: "start one with `nixoci engine start`".into(),
        });
    }
    match engine.start().await {
        Ok(_) => {
            let sock = engine.socket().display().to_string();
            let client = Client::connect(&sock, &opts.namespace)
                .await
                .map_err(|why| {
                    ContainerdError::Engine(format!(
                        "the private containerd started but {sock}: {why}"
                    ))
                })?;
            Ok(Connected {
                client: with_auto_snapshotter(client).await,
                started: Some(format!(
                    "no containerd answered; started nixoci's private containerd at {sock} (log: {})",
                    engine.log().display()
                )),
            })
        }
        Err(e) => Err(ContainerdError::Unreachable {
            tried: tried.join("\n"),
            hint: format!("and the private containerd could not be started: {e}"),
        }),
    }
}
