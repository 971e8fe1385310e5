//! Platforms: the one mapping between Nix systems, Rust's architecture names
//! and OCI's `architecture`/`variant`, and the one picker of a platform's
//! entry in an image index.

use oci_spec::image::{Arch, ImageIndex, Os};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Nix system '{0}' has no OCI platform nixoci knows (known: x86_64-linux, aarch64-linux, i686-linux, armv7l-linux, armv6l-linux, riscv64-linux, powerpc64le-linux, s390x-linux)")]
pub struct PlatformError(pub String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("platform '{0}' is not one nixoci knows: give linux/ARCH[/VARIANT], ARCH one of amd64, arm64, 386, arm (v6, v7), riscv64, ppc64le, s390x")]
pub struct PlatformParseError(pub String);

/// The OCI platform of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    pub variant: Option<String>,
}

/// (Nix CPU name, OCI architecture, OCI variant).
const ARCHES: &[(&str, &str, Option<&str>)] = &[
    ("x86_64", "amd64", None),
    ("aarch64", "arm64", Some("v8")),
    ("i686", "386", None),
    ("armv7l", "arm", Some("v7")),
    ("armv6l", "arm", Some("v6")),
    ("riscv64", "riscv64", None),
    ("powerpc64le", "ppc64le", None),
    ("s390x", "s390x", None),
];

impl Platform {
    /// The platform of a Nix system double (`aarch64-linux` → linux/arm64).
    pub fn from_nix_system(system: &str) -> Result<Self, PlatformError> {
        let err = || PlatformError(system.into());
        let (cpu, os) = system.split_once('-').ok_or_else(err)?;
        let &(_, architecture, variant) = ARCHES.iter().find(|a| a.0 == cpu).ok_or_else(err)?;
        if !matches!(os, "linux" | "darwin") {
            return Err(err());
        }
        Ok(Platform {
            architecture: architecture.into(),
            os: os.into(),
            variant: variant.map(Into::into),
        })
    }

    /// A platform in Docker's words (`linux/amd64`, `linux/arm64/v8`,
    /// `linux/arm/v7`): os, architecture, optional variant. A platform
    /// whose architecture has one variant in the table gets it
    /// (`linux/arm64` is `linux/arm64/v8`).
    pub fn parse(s: &str) -> Result<Self, PlatformParseError> {
        let err = || PlatformParseError(s.into());
        let mut parts = s.split('/');
        let (Some(os), Some(arch)) = (parts.next(), parts.next()) else {
            return Err(err());
        };
        let variant = parts.next().map(str::to_string);
        if parts.next().is_some() || os != "linux" {
            return Err(err());
        }
        let rows: Vec<_> = ARCHES.iter().filter(|a| a.1 == arch).collect();
        let row = match &variant {
            Some(v) => rows.iter().find(|a| a.2 == Some(v.as_str())),
            None if rows.len() == 1 => rows.first(),
            // `linux/arm`: the newest variant.
            None => rows.iter().find(|a| a.2 == Some("v7")),
        }
        .ok_or_else(err)?;
        Ok(Platform {
            architecture: arch.into(),
            os: os.into(),
            variant: row.2.map(Into::into),
        })
    }

    /// An index entry's platform, as nixoci keeps it.
    pub fn from_oci(p: &oci_spec::image::Platform) -> Self {
        Platform {
            architecture: p.architecture().to_string(),
            os: p.os().to_string(),
            variant: p.variant().clone(),
        }
    }

    /// The `platform` object of an index entry.
    pub fn to_json(&self) -> serde_json::Value {
        let mut platform = serde_json::json!({
            "architecture": self.architecture,
            "os": self.os,
        });
        if let Some(v) = &self.variant {
            platform["variant"] = v.clone().into();
        }
        platform
    }

    /// The Nix system of this platform (`linux/arm64` → `aarch64-linux`).
    pub fn nix_system(&self) -> String {
        let cpu = ARCHES
            .iter()
            .find(|a| {
                a.1 == self.architecture
                    && (a.2 == self.variant.as_deref() || self.variant.is_none())
            })
            .map_or(self.architecture.as_str(), |a| a.0);
        format!("{cpu}-{}", self.os)
    }

    /// The platform of this machine.
    pub fn host() -> Self {
        Platform::from_nix_system(&host_system()).unwrap_or_else(|_| Platform {
            architecture: std::env::consts::ARCH.into(),
            os: std::env::consts::OS.into(),
            variant: None,
        })
    }

    /// Whether an index entry's platform is this one (a missing variant on
    /// either side matches any).
    pub fn matches(&self, p: &oci_spec::image::Platform) -> bool {
        let variant_ok = match (&self.variant, p.variant()) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        p.os() == &Os::from(self.os.as_str())
            && p.architecture() == &Arch::from(self.architecture.as_str())
            && variant_ok
    }
}

/// The Nix system of this machine (`x86_64-linux`).
pub fn host_system() -> String {
    let cpu = match std::env::consts::ARCH {
        "x86" => "i686",
        "arm" => "armv7l",
        "powerpc64" => "powerpc64le",
        a => a,
    };
    format!("{cpu}-{}", std::env::consts::OS)
}

/// This machine's architecture as OCI names it (`amd64`, `arm64`).
pub fn host_arch() -> String {
    Platform::host().architecture
}

/// The entry of an index (or Docker manifest list) for `want`, else for
/// linux on this machine.
pub fn platform_entry<'a>(
    index: &'a ImageIndex,
    want: Option<&Platform>,
) -> Option<&'a oci_spec::image::Descriptor> {
    let host = Platform::host();
    let want = want.unwrap_or(&host);
    index
        .manifests()
        .iter()
        .find(|m| m.platform().as_ref().is_some_and(|p| want.matches(p)))
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systems_map_to_platforms() {
        let p = Platform::from_nix_system("aarch64-linux").unwrap();
        assert_eq!((p.architecture.as_str(), p.os.as_str()), ("arm64", "linux"));
        let p = Platform::from_nix_system("armv7l-linux").unwrap();
        assert_eq!(p.variant.as_deref(), Some("v7"));
        assert!(Platform::from_nix_system("mips-linux").is_err());
        assert!(Platform::from_nix_system("x86_64").is_err());
        assert!(Platform::from_nix_system("x86_64-windows").is_err());
        assert_eq!(Platform::host().os, "linux");
        assert_eq!(host_arch(), Platform::host().architecture);
    }

    #[test]
    fn index_entries_are_picked_by_platform() {
        let arch = host_arch();
        let other = if arch == "amd64" { "arm64" } else { "amd64" };
        let doc = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                 "digest": format!("sha256:{}", "a".repeat(64)), "size": 1,
                 "platform": {"os": "linux", "architecture": other}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                 "digest": format!("sha256:{}", "b".repeat(64)), "size": 2,
                 "platform": {"os": "linux", "architecture": arch}},
            ]
        });
        let index: ImageIndex = serde_json::from_value(doc).unwrap();
        assert_eq!(platform_entry(&index, None).unwrap().size(), 2);
        let want = Platform::parse(&format!("linux/{other}")).unwrap();
        assert_eq!(platform_entry(&index, Some(&want)).unwrap().size(), 1);
    }

    #[test]
    fn docker_platforms_and_nix_systems_agree() {
        for (docker, system, shown) in [
            ("linux/amd64", "x86_64-linux", "linux/amd64"),
            ("linux/arm64", "aarch64-linux", "linux/arm64/v8"),
            ("linux/arm64/v8", "aarch64-linux", "linux/arm64/v8"),
            ("linux/arm/v7", "armv7l-linux", "linux/arm/v7"),
            ("linux/arm", "armv7l-linux", "linux/arm/v7"),
            ("linux/arm/v6", "armv6l-linux", "linux/arm/v6"),
            ("linux/riscv64", "riscv64-linux", "linux/riscv64"),
            ("linux/386", "i686-linux", "linux/386"),
        ] {
            let p = Platform::parse(docker).unwrap();
            assert_eq!(p.nix_system(), system, "{docker}");
            assert_eq!(p.to_string(), shown);
            assert_eq!(Platform::from_nix_system(system).unwrap(), p, "{system}");
        }
        for bad in [
            "linux",
            "windows/amd64",
            "linux/mips",
            "linux/arm/v9",
            "linux/amd64/v1/x",
        ] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }
}
