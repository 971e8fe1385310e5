//! The image configuration: runtime settings from the CLI (or a plan), the
//! platform from the Nix system, diff_ids and history from the layers.

use super::digest::Digest;
use super::manifest::canonical_json;
use oci_spec::image::{
    Arch, ConfigBuilder, HistoryBuilder, ImageConfigurationBuilder, Os, RootFsBuilder,
};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("Nix system '{0}' has no OCI platform nixoci knows (known: x86_64-linux, aarch64-linux, i686-linux, armv7l-linux, armv6l-linux, riscv64-linux, powerpc64le-linux, s390x-linux)")]
    System(String),
    #[error("--expose '{0}': expected PORT or PORT/tcp|udp|sctp with PORT in 1..=65535")]
    Expose(String),
    #[error("{flag} '{value}': expected KEY=VALUE")]
    KeyValue { flag: &'static str, value: String },
    #[error("--created '{0}': expected 'now', seconds since the epoch, or an RFC 3339 UTC time like 2024-01-02T03:04:05Z")]
    Created(String),
    #[error("building the image config: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
}

/// The OCI platform of a Nix system double.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn from_nix_system(system: &str) -> Result<Self, ConfigError> {
        let (arch, os) = system
            .split_once('-')
            .ok_or_else(|| ConfigError::System(system.into()))?;
        let (architecture, variant) = match arch {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "i686" => ("386", None),
            "armv7l" => ("arm", Some("v7")),
            "armv6l" => ("arm", Some("v6")),
            "riscv64" => ("riscv64", None),
            "powerpc64le" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            _ => return Err(ConfigError::System(system.into())),
        };
        if !matches!(os, "linux" | "darwin") {
            return Err(ConfigError::System(system.into()));
        }
        Ok(Platform {
            architecture: architecture.into(),
            os: os.into(),
            variant: variant.map(Into::into),
        })
    }
}

/// Runtime settings of the image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

/// Seconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `--created`: `now`, epoch seconds, or RFC 3339 (kept as given).
pub fn parse_created(s: &str) -> Result<String, ConfigError> {
    if s == "now" {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        return Ok(rfc3339(now));
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(rfc3339(secs));
    }
    let b = s.as_bytes();
    let shape = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && s.ends_with('Z');
    if shape {
        Ok(s.into())
    } else {
        Err(ConfigError::Created(s.into()))
    }
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
    fn dates() {
        assert_eq!(rfc3339(1), "1970-01-01T00:00:01Z");
        assert_eq!(rfc3339(951782400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1700000000), "2023-11-14T22:13:20Z");
        assert_eq!(parse_created("1").unwrap(), "1970-01-01T00:00:01Z");
        assert!(parse_created("yesterday").is_err());
        assert!(parse_created("now").unwrap().ends_with('Z'));
    }

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
        assert_eq!(
            Platform::from_nix_system("aarch64-linux")
                .unwrap()
                .architecture,
            "arm64"
        );
        assert!(Platform::from_nix_system("mips-linux").is_err());
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
