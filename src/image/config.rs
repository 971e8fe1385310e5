//! The image configuration: runtime settings from the CLI (or a plan), the
//! platform from the Nix system, diff_ids and history from the layers.

use crate::oci::blob::canonical_json;
use crate::oci::digest::Digest;
use crate::oci::platform::Platform;
use oci_spec::image::{
    Arch, ConfigBuilder, HistoryBuilder, ImageConfigurationBuilder, Os, RootFsBuilder,
};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--expose '{0}': expected PORT or PORT/tcp|udp|sctp with PORT in 1..=65535")]
    Expose(String),
    #[error("{flag} '{value}': expected KEY=VALUE")]
    KeyValue { flag: &'static str, value: String },
    #[error("building the image config: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
}

/// Runtime settings of the image.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RuntimeConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// In order; a later key replaces an earlier one.
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// `80/tcp` form.
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// `--expose 80` → `80/tcp`.
pub fn parse_expose(s: &str) -> Result<String, ConfigError> {
    let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let proto = proto.to_ascii_lowercase();
    match (port.parse::<u16>(), proto.as_str()) {
        (Ok(p), "tcp" | "udp" | "sctp") if p > 0 => Ok(format!("{p}/{proto}")),
        _ => Err(ConfigError::Expose(s.into())),
    }
}

pub fn parse_key_value(flag: &'static str, s: &str) -> Result<(String, String), ConfigError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.into(), v.into())),
        _ => Err(ConfigError::KeyValue {
            flag,
            value: s.into(),
        }),
    }
}

/// `--entrypoint` and `--cmd`: a JSON array, or a string split on whitespace.
pub fn parse_command(s: &str) -> Vec<String> {
    if s.trim_start().starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(s) {
            return v;
        }
    }
    s.split_whitespace().map(Into::into).collect()
}

/// One history entry per layer.
#[derive(Debug, Clone)]
pub struct LayerHistory {
    pub created_by: String,
    pub comment: Option<String>,
}

/// The config blob's bytes (canonical JSON).
pub fn config_json(
    platform: &Platform,
    runtime: &RuntimeConfig,
    created: &str,
    diff_ids: &[Digest],
    history: &[LayerHistory],
) -> Result<Vec<u8>, ConfigError> {
    let mut env: Vec<(String, String)> = Vec::new();
    for (k, v) in &runtime.env {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    let mut c = ConfigBuilder::default();
    if !env.is_empty() {
        c = c.env(
            env.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        );
    }
    if let Some(e) = &runtime.entrypoint {
        c = c.entrypoint(e.clone());
    }
    if let Some(cmd) = &runtime.cmd {
        c = c.cmd(cmd.clone());
    }
    if let Some(w) = &runtime.workdir {
        c = c.working_dir(w.clone());
    }
    if let Some(u) = &runtime.user {
        c = c.user(u.clone());
    }
    if !runtime.exposed_ports.is_empty() {
        c = c.exposed_ports(runtime.exposed_ports.clone());
    }
    if !runtime.labels.is_empty() {
        c = c.labels(
            runtime
                .labels
                .clone()
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    let history = history
        .iter()
        .map(|h| {
            let mut b = HistoryBuilder::default()
                .created(created.to_string())
                .created_by(h.created_by.clone());
            if let Some(cm) = &h.comment {
                b = b.comment(cm.clone());
            }
            b.build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>())
        .build()?;
    let mut b = ImageConfigurationBuilder::default()
        .created(created.to_string())
        .architecture(Arch::from(platform.architecture.as_str()))
        .os(Os::from(platform.os.as_str()))
        .config(c.build()?)
        .rootfs(rootfs)
        .history(history);
    if let Some(v) = &platform.variant {
        b = b.variant(v.clone());
    }
    Ok(canonical_json(&b.build()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        assert_eq!(parse_expose("80").unwrap(), "80/tcp");
        assert_eq!(parse_expose("53/UDP").unwrap(), "53/udp");
        assert!(parse_expose("0").is_err());
        assert!(parse_expose("80/icmp").is_err());
        assert_eq!(
            parse_command(r#"["/bin/web","--port","80"]"#),
            ["/bin/web", "--port", "80"]
        );
        assert_eq!(
            parse_command("/bin/web  --port 80"),
            ["/bin/web", "--port", "80"]
        );
        assert_eq!(
            parse_key_value("--env", "A=b=c").unwrap(),
            ("A".into(), "b=c".into())
        );
        assert!(parse_key_value("--env", "=x").is_err());
    }

    #[test]
    fn config_is_canonical() {
        let p = Platform::from_nix_system("x86_64-linux").unwrap();
        let mut rt = RuntimeConfig {
            env: vec![("PATH".into(), "/bin".into()), ("PATH".into(), "/x".into())],
            ..Default::default()
        };
        for i in 0..20 {
            rt.labels.insert(format!("l{i}"), "v".into());
        }
        let d = [Digest::of(b"x")];
        let h = [LayerHistory {
            created_by: "x".into(),
            comment: None,
        }];
        let a = config_json(&p, &rt, "1970-01-01T00:00:01Z", &d, &h).unwrap();
        let b = config_json(&p, &rt, "1970-01-01T00:00:01Z", &d, &h).unwrap();
        assert_eq!(a, b);
        let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["config"]["Env"], serde_json::json!(["PATH=/x"]));
        assert_eq!(v["architecture"], "amd64");
        assert_eq!(v["rootfs"]["diff_ids"][0], d[0].to_string());
    }
}
