//! The OCI runtime spec of a service's container, from the image's config
//! and the service's `ServiceConfig`: arguments (Docker's rules for
//! entrypoint and cmd), environment, user, limits, mounts. Pure; the
//! defaults (mounts, capabilities, devices, masked paths) follow those of
//! containerd's own default spec.

use crate::plan::ServiceConfig;
use serde_json::{json, Value};

/// A bind mount into the container.
#[derive(Debug, Clone)]
pub struct Bind {
    pub destination: String,
    pub source: String,
    pub read_only: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("the image has no entrypoint and no cmd, and the service gives none: set cmd or entrypoint in its ServiceConfig")]
    NoCommand,
    #[error("the image's user '{0}' is a name; nixoci needs numeric ids there: give the service User(uid = ..., gid = ...)")]
    UserName(String),
    #[error("{0}")]
    Device(String),
}

/// What the image config says (`config` of the OCI image config).
#[derive(Debug, Clone, Default)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

impl ImageDefaults {
    /// From an OCI (or Docker) image config document.
    pub fn from_config(doc: &oci_spec::image::ImageConfiguration) -> Self {
        let Some(c) = doc.config() else {
            return ImageDefaults::default();
        };
        ImageDefaults {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().unwrap_or_default(),
            user: c.user().clone().unwrap_or_default(),
        }
    }
}

/// Docker's rules: the service's entrypoint replaces the image's (and then
/// the image's cmd is dropped); the service's cmd replaces the image's.
pub fn args(image: &ImageDefaults, service: &ServiceConfig) -> Result<Vec<String>, SpecError> {
    let entrypoint = service
        .entrypoint
        .clone()
        .unwrap_or_else(|| image.entrypoint.clone());
    let cmd = match (&service.cmd, &service.entrypoint) {
        (Some(c), _) => c.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => image.cmd.clone(),
    };
    let all: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if all.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(all)
}

/// The image's environment, then the service's (a key given again wins);
/// PATH defaults to the usual one.
pub fn env(image: &ImageDefaults, service: &ServiceConfig) -> Vec<String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| {
        if let Some(e) = out.iter_mut().find(|(ek, _)| ek == k) {
            e.1 = v.into();
        } else {
            out.push((k.into(), v.into()));
        }
    };
    for e in &image.env {
        let (k, v) = e.split_once('=').unwrap_or((e, ""));
        set(k, v);
    }
    for (k, v) in &service.env_vars {
        set(k, v);
    }
    if !out.iter().any(|(k, _)| k == "PATH") {
        out.insert(
            0,
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
        );
    }
    out.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// (uid, gid) from the service's `User`, else the image's numeric user.
pub fn user(image: &ImageDefaults, service: &ServiceConfig) -> Result<(u32, u32), SpecError> {
    if let Some(u) = service.user {
        return Ok((u.uid, u.gid.unwrap_or(u.uid)));
    }
    let u = image.user.trim();
    if u.is_empty() || u == "root" {
        return Ok((0, 0));
    }
    let (uid, gid) = u.split_once(':').unwrap_or((u, ""));
    let uid: u32 = uid.parse().map_err(|_| SpecError::UserName(u.into()))?;
    let gid: u32 = if gid.is_empty() {
        uid
    } else {
        gid.parse().map_err(|_| SpecError::UserName(u.into()))?
    };
    Ok((uid, gid))
}

const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability, by number (a privileged service's, as far as this
/// process's bounding set holds them).
pub const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capabilities of [`ALL_CAPS`] this process may hand on: its bounding
/// set (`CapBnd`), as containerd gives privileged containers the current
/// capabilities; a host without some (a container host) has fewer.
pub fn current_caps() -> Vec<&'static str> {
    let mask = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    ALL_CAPS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1u64 << i) != 0)
        .map(|(_, c)| *c)
        .collect()
}

/// A host device a service is given: its node in the container and the
/// device cgroup rule that allows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub path: String,
    /// `c` or `b`.
    pub kind: char,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub access: String,
}

/// Look up `HOST[:CONTAINER[:PERMISSIONS]]` on this host.
pub fn device(spec: &str) -> Result<Device, SpecError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let (host, container, access) =
        crate::plan::model::parse_device(spec).map_err(SpecError::Device)?;
    let m =
        std::fs::metadata(&host).map_err(|e| SpecError::Device(format!("device {host}: {e}")))?;
    let kind = if m.file_type().is_char_device() {
        'c'
    } else if m.file_type().is_block_device() {
        'b'
    } else {
        return Err(SpecError::Device(format!("{host} is not a device")));
    };
    let rdev = m.rdev();
    Ok(Device {
        path: container,
        kind,
        major: libc::major(rdev) as u64,
        minor: libc::minor(rdev) as u64,
        mode: m.mode() & 0o777,
        access,
    })
}

/// The process part (also used, with other args, for `exec`).
pub fn process(args: Vec<String>, env: Vec<String>, cwd: &str, uid: u32, gid: u32) -> Value {
    json!({
        "terminal": false,
        "user": {"uid": uid, "gid": gid},
        "args": args,
        "env": env,
        "cwd": if cwd.is_empty() { "/" } else { cwd },
        "capabilities": {
            "bounding": CAPS, "effective": CAPS, "permitted": CAPS,
        },
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": true
    })
}

/// CPU and memory limits: millicores and megabytes, as Kurtosis counts them.
pub fn resources(service: &ServiceConfig) -> Value {
    let mut r = json!({
        "devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 7, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 8, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 9, "access": "rwm"},
            {"allow": true, "type": "c", "major": 5, "minor": 0, "access": "rwm"},
            {"allow": true, "type": "c", "major": 5, "minor": 2, "access": "rwm"},
            {"allow": true, "type": "c", "major": 136, "access": "rwm"}
        ]
    });
    let mb = 1024 * 1024;
    if service.max_memory.is_some() || service.min_memory.is_some() {
        let mut m = json!({});
        if let Some(max) = service.max_memory {
            m["limit"] = json!(max * mb);
        }
        if let Some(min) = service.min_memory {
            m["reservation"] = json!(min * mb);
        }
        r["memory"] = m;
    }
    if service.max_cpu.is_some() || service.min_cpu.is_some() {
        let mut c = json!({});
        if let Some(max) = service.max_cpu {
            // 1000 millicores = one CPU = a quota of one period.
            c["period"] = json!(100_000u64);
            c["quota"] = json!(max * 100);
        }
        if let Some(min) = service.min_cpu {
            c["shares"] = json!((min * 1024 / 1000).max(2));
        }
        r["cpu"] = c;
    }
    r
}

/// The whole runtime spec: the container joins the network namespace at
/// `netns` (else shares the host's network) and gets its own hostname.
pub fn runtime_spec(
    mut process: Value,
    hostname: &str,
    cgroups_path: &str,
    binds: &[Bind],
    devices: &[Device],
    service: &ServiceConfig,
    netns: Option<&str>,
) -> Value {
    if service.privileged {
        let caps = current_caps();
        process["capabilities"] = json!({
            "bounding": caps, "effective": caps, "permitted": caps,
        });
        process["noNewPrivileges"] = json!(false);
    }
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
    ];
    for b in binds {
        let mut options = vec!["rbind", "rprivate"];
        if b.read_only {
            options.push("ro");
        }
        mounts.push(json!({
            "destination": b.destination, "type": "bind", "source": b.source, "options": options
        }));
    }
    for (host, inside) in &service.bind_mounts {
        mounts.push(json!({
            "destination": inside, "type": "bind", "source": host, "options": ["rbind", "rprivate"]
        }));
    }
    if service.privileged {
        // A writable /sys.
        for m in mounts.iter_mut().filter(|m| m["destination"] == "/sys") {
            m["options"] = json!(["nosuid", "noexec", "nodev"]);
        }
    }
    let mut namespaces = vec![json!({"type": "ipc"})];
    if !service.host_pid_namespace {
        namespaces.push(json!({"type": "pid"}));
    }
    namespaces.extend([json!({"type": "uts"}), json!({"type": "mount"})]);
    if let Some(path) = netns {
        namespaces.push(json!({"type": "network", "path": path}));
    }
    let mut res = resources(service);
    if service.privileged {
        res["devices"] = json!([{"allow": true, "access": "rwm"}]);
    } else if let Some(rules) = res["devices"].as_array_mut() {
        for d in devices {
            rules.push(json!({
                "allow": true, "type": d.kind.to_string(), "major": d.major, "minor": d.minor, "access": d.access
            }));
        }
    }
    let nodes: Vec<Value> = devices
        .iter()
        .map(|d| {
            json!({
                "path": d.path, "type": d.kind.to_string(), "major": d.major, "minor": d.minor,
                "fileMode": d.mode, "uid": 0, "gid": 0
            })
        })
        .collect();
    let (masked, readonly) = if service.privileged {
        (json!([]), json!([]))
    } else {
        (
            json!([
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/proc/scsi",
                "/sys/firmware"
            ]),
            json!([
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger"
            ]),
        )
    };
    json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": "rootfs", "readonly": false},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {
            "resources": res,
            "cgroupsPath": cgroups_path,
            "namespaces": namespaces,
            "devices": nodes,
            "maskedPaths": masked,
            "readonlyPaths": readonly
        }
    })
}

/// For a rootless engine that cannot limit its containers: the spec
/// without cgroup path and resources (rootless runc fails on them
/// otherwise); returns the limits the service asked for and will not get.
pub fn without_limits(spec: &mut Value, service: &ServiceConfig) -> Vec<String> {
    if let Some(linux) = spec["linux"].as_object_mut() {
        linux.remove("resources");
        linux.remove("cgroupsPath");
    }
    let mut dropped = Vec::new();
    for (name, v) in [
        ("max_cpu", service.max_cpu),
        ("min_cpu", service.min_cpu),
        ("max_memory", service.max_memory),
        ("min_memory", service.min_memory),
    ] {
        if let Some(v) = v {
            dropped.push(format!("{name} = {v}"));
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ImageSource, ImageSpec, User};

    fn service() -> ServiceConfig {
        ServiceConfig::new(ImageSource::Named(ImageSpec {
            image: "x".into(),
            registry: None,
            username: None,
            password: None,
        }))
    }

    #[test]
    fn limits_left_out_are_named() {
        let mut svc = service();
        svc.max_memory = Some(64);
        svc.min_cpu = Some(250);
        let mut spec = runtime_spec(json!({}), "h", "/nixoci/x", &[], &[], &svc, None);
        assert_eq!(
            spec["linux"]["resources"]["memory"]["limit"],
            json!(64u64 << 20)
        );
        let dropped = without_limits(&mut spec, &svc);
        assert_eq!(dropped, vec!["min_cpu = 250", "max_memory = 64"]);
        assert!(spec["linux"].get("resources").is_none());
        assert!(spec["linux"].get("cgroupsPath").is_none());
        assert!(spec["linux"]["namespaces"].is_array());
        assert!(without_limits(&mut spec, &service()).is_empty());
    }

    fn image() -> ImageDefaults {
        ImageDefaults {
            entrypoint: vec!["/bin/web".into()],
            cmd: vec!["--port".into(), "80".into()],
            env: vec!["PATH=/bin".into(), "MODE=prod".into()],
            working_dir: String::new(),
            user: String::new(),
        }
    }

    #[test]
    fn arguments_follow_docker() {
        let mut s = service();
        assert_eq!(args(&image(), &s).unwrap(), ["/bin/web", "--port", "80"]);
        s.cmd = Some(vec!["--port".into(), "8080".into()]);
        assert_eq!(args(&image(), &s).unwrap(), ["/bin/web", "--port", "8080"]);
        s.cmd = None;
        s.entrypoint = Some(vec!["/bin/sh".into()]);
        assert_eq!(args(&image(), &s).unwrap(), ["/bin/sh"]);
        assert_eq!(
            args(&ImageDefaults::default(), &service()),
            Err(SpecError::NoCommand)
        );
    }

    #[test]
    fn service_env_overrides_image_env() {
        let mut s = service();
        s.env_vars.insert("MODE".into(), "test".into());
        s.env_vars.insert("EXTRA".into(), "1".into());
        assert_eq!(env(&image(), &s), ["PATH=/bin", "MODE=test", "EXTRA=1"]);
        assert!(env(&ImageDefaults::default(), &s)[0].starts_with("PATH=/usr/local/sbin"));
    }

    #[test]
    fn users_and_limits() {
        let mut s = service();
        let mut i = image();
        assert_eq!(user(&i, &s).unwrap(), (0, 0));
        i.user = "1000:100".into();
        assert_eq!(user(&i, &s).unwrap(), (1000, 100));
        i.user = "nobody".into();
        assert!(user(&i, &s).is_err());
        s.user = Some(User { uid: 7, gid: None });
        assert_eq!(user(&i, &s).unwrap(), (7, 7));
        s.max_cpu = Some(500);
        s.min_cpu = Some(250);
        s.max_memory = Some(64);
        let r = resources(&s);
        assert_eq!(r["cpu"]["quota"], 50_000);
        assert_eq!(r["cpu"]["period"], 100_000);
        assert_eq!(r["cpu"]["shares"], 256);
        assert_eq!(r["memory"]["limit"], 64 * 1024 * 1024);
    }

    #[test]
    fn privileged_host_pid_devices_and_binds() {
        let mut svc = service();
        svc.privileged = true;
        svc.host_pid_namespace = true;
        svc.bind_mounts.insert("/srv".into(), "/data".into());
        let null = device("/dev/null:/dev/n:rw").unwrap();
        assert_eq!((null.kind, null.major, null.minor), ('c', 1, 3));
        assert_eq!(null.path, "/dev/n");
        let spec = runtime_spec(json!({}), "h", "/x", &[], &[null], &svc, None);
        assert_eq!(spec["linux"]["maskedPaths"], json!([]));
        assert_eq!(
            spec["linux"]["resources"]["devices"],
            json!([{"allow": true, "access": "rwm"}])
        );
        assert!(!spec["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "pid"));
        assert_eq!(spec["linux"]["devices"][0]["path"], "/dev/n");
        assert!(spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["destination"] == "/data" && m["source"] == "/srv"));
        assert!(
            spec["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len()
                > 14
        );
        let plain = runtime_spec(json!({}), "h", "/x", &[], &[], &service(), None);
        assert!(plain["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "pid"));
        assert_eq!(plain["linux"]["maskedPaths"].as_array().unwrap().len(), 10);
        for bad in ["dev/null", "/dev/null:/x:rwx", "/dev/null:dev"] {
            assert!(device(bad).is_err(), "{bad}");
        }
        assert!(device("/etc/passwd").is_err());
    }
}
