//! Enclaves on containerd: a named set of services (containers labelled
//! `nixoci.enclave=<name>` in the shared namespace) plus a state directory
//! `$NIXOCI_HOME/enclaves/<name>/` holding `enclave.json`, service logs,
//! files artifacts and the hosts file. Execution of a plan is in
//! [`execute`]; one service's container and task in [`service`]; the OCI
//! runtime spec in [`spec`].

pub mod copy_out;
pub mod execute;
pub mod http;
pub mod network;
pub mod service;
pub mod spec;

use crate::containerd::ContainerdError;
use crate::plan::values::ServiceInfo;
use crate::plan::ServiceConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub const ENCLAVE_LABEL: &str = "nixoci.enclave";
pub const SERVICE_LABEL: &str = "nixoci.service";

#[derive(Debug, thiserror::Error)]
pub enum EnclaveError {
    #[error("enclave name '{0}' is invalid: use at most 40 lowercase letters, digits and '-', starting with a letter")]
    Name(String),
    #[error("no enclave '{name}' (enclaves: {known}); list them with `nixoci enclave ls`")]
    NotFound { name: String, known: String },
    #[error("enclave '{name}' has no service '{service}' (services: {known})")]
    NoService {
        name: String,
        service: String,
        known: String,
    },
    #[error("enclave '{name}' lives in containerd namespace '{namespace}', not '{asked}': pass --namespace {namespace}")]
    Namespace {
        name: String,
        namespace: String,
        asked: String,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {why}")]
    State { path: PathBuf, why: String },
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
    #[error("{0}")]
    Service(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> EnclaveError + '_ {
    move |source| EnclaveError::Io {
        path: path.into(),
        source,
    }
}

/// Are the two trees the same: names, kinds, file contents, link targets
/// and permission bits?
fn same_tree(a: &Path, b: &Path) -> io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let (ma, mb) = (fs::symlink_metadata(a)?, fs::symlink_metadata(b)?);
    if ma.file_type() != mb.file_type() || ma.permissions().mode() != mb.permissions().mode() {
        return Ok(false);
    }
    if ma.file_type().is_symlink() {
        return Ok(fs::read_link(a)? == fs::read_link(b)?);
    }
    if ma.is_file() {
        return Ok(ma.len() == mb.len() && fs::read(a)? == fs::read(b)?);
    }
    let names = |p: &Path| -> io::Result<Vec<std::ffi::OsString>> {
        let mut v: Vec<_> = fs::read_dir(p)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        v.sort();
        Ok(v)
    };
    let (na, nb) = (names(a)?, names(b)?);
    if na != nb {
        return Ok(false);
    }
    for n in na {
        if !same_tree(&a.join(&n), &b.join(&n))? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A service as the enclave records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub name: String,
    pub container_id: String,
    /// The full image reference in containerd.
    pub image: String,
    pub config: ServiceConfig,
    pub info: ServiceInfo,
    /// The chain ID of its image's top layer when it was created (a re-run
    /// replaces the service when it differs).
    #[serde(default)]
    pub image_top: String,
    /// A task's container (`run_sh`, `run_python`): removed when the task
    /// ends, or by the next run when a killed run left it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub task: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnclaveRecord {
    pub name: String,
    pub namespace: String,
    pub created: String,
    pub services: BTreeMap<String, ServiceRecord>,
    pub artifacts: Vec<String>,
    /// Its bridge and subnet.
    #[serde(default)]
    pub network: Option<network::NetRecord>,
    /// The rootless containerd whose namespaces hold its network (none
    /// for root's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineRecord>,
}

/// Which rootless engine an enclave lives in: its socket, and the pid of
/// the containerd that listened there (a restarted engine is another).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EngineRecord {
    pub socket: PathBuf,
    pub pid: u32,
}

impl EngineRecord {
    pub fn of(ns: &crate::rootless::EngineNs) -> Self {
        EngineRecord {
            socket: ns.socket.clone(),
            pid: ns.pid,
        }
    }
}

/// An enclave's state directory, locked while open.
pub struct Enclave {
    pub dir: PathBuf,
    pub record: EnclaveRecord,
    _lock: fs::File,
}

pub fn enclaves_dir() -> PathBuf {
    crate::containerd::engine::nixoci_home().join("enclaves")
}

pub fn check_name(name: &str) -> Result<(), EnclaveError> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(EnclaveError::Name(name.into()))
    }
}

/// A fresh enclave name, Kurtosis-like (`quiet-river`), not yet in use.
pub fn generate_name() -> String {
    const A: &[&str] = &[
        "amber", "bold", "calm", "dusty", "eager", "fuzzy", "gentle", "hidden", "icy", "jolly",
        "keen", "lucky", "misty", "noble", "odd", "proud", "quiet", "rapid", "shy", "tidy",
    ];
    const N: &[&str] = &[
        "acorn", "brook", "cloud", "dune", "ember", "fern", "grove", "harbor", "island", "jetty",
        "kelp", "lake", "meadow", "nest", "orchard", "pine", "quartz", "river", "stone", "tide",
    ];
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0) as usize
        ^ (std::process::id() as usize).wrapping_mul(2654435761);
    for i in 0.. {
        let x = seed.wrapping_add(i * 7919);
        let name = if i < 400 {
            format!("{}-{}", A[x % A.len()], N[(x / A.len()) % N.len()])
        } else {
            format!("enclave-{x:x}")
        };
        if !enclaves_dir().join(&name).exists() {
            return name;
        }
    }
    unreachable!()
}

fn lock(dir: &Path) -> Result<fs::File, EnclaveError> {
    let path = dir.join(".lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    // SAFETY: flock on an open file descriptor.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) } != 0 {
        return Err(EnclaveError::Io {
            path,
            source: io::Error::last_os_error(),
        });
    }
    Ok(f)
}

impl Enclave {
    /// Open an enclave, creating it (in `namespace`, with a subnet from
    /// `pool`) if it does not exist.
    /// `engine`: the rootless containerd the enclave runs on (none for
    /// root's). An enclave whose rootless engine has stopped since lost
    /// its network with it; it gets a new one in `engine`.
    pub fn open_or_create(
        name: &str,
        namespace: &str,
        pool: &str,
        engine: Option<&crate::rootless::EngineNs>,
    ) -> Result<(Self, bool), EnclaveError> {
        check_name(name)?;
        let dir = enclaves_dir().join(name);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let lock = lock(&dir)?;
        let file = dir.join("enclave.json");
        if file.exists() {
            let mut e = Self::read(dir, lock)?;
            if e.record.namespace != namespace {
                return Err(EnclaveError::Namespace {
                    name: name.into(),
                    namespace: e.record.namespace.clone(),
                    asked: namespace.into(),
                });
            }
            let now = engine.map(EngineRecord::of);
            if e.record.engine.is_some() && e.record.engine != now {
                if let Some(n) = e.record.network.clone() {
                    let _ = network::teardown(&e.dir, name, &n, &e.net_host());
                    e.record.network =
                        Some(network::reserve(pool, name, &e.dir, &net_host_of(engine))?);
                }
                e.record.engine = now;
                e.save()?;
            }
            return Ok((e, false));
        }
        let e = Enclave {
            dir,
            record: EnclaveRecord {
                name: name.into(),
                namespace: namespace.into(),
                created: crate::oci::time::rfc3339(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                ),
                services: BTreeMap::new(),
                artifacts: Vec::new(),
                network: None,
                engine: engine.map(EngineRecord::of),
            },
            _lock: lock,
        };
        let mut e = e;
        // Subnets are handed out host-wide (see `network::reserve`).
        // A refused enclave leaves no directory behind.
        match network::reserve(pool, name, &e.dir, &net_host_of(engine)) {
            Ok(net) => e.record.network = Some(net),
            Err(err) => {
                let _ = fs::remove_dir_all(&e.dir);
                return Err(err);
            }
        }
        for sub in ["logs", "artifacts", "exec"] {
            let d = e.dir.join(sub);
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        e.save()?;
        Ok((e, true))
    }

    /// Open an existing enclave.
    pub fn open(name: &str) -> Result<Self, EnclaveError> {
        check_name(name)?;
        let dir = enclaves_dir().join(name);
        if !dir.join("enclave.json").is_file() {
            let known = list_names().join(", ");
            return Err(EnclaveError::NotFound {
                name: name.into(),
                known: if known.is_empty() {
                    "none".into()
                } else {
                    known
                },
            });
        }
        let lock = lock(&dir)?;
        Self::read(dir, lock)
    }

    fn read(dir: PathBuf, lock: fs::File) -> Result<Self, EnclaveError> {
        let file = dir.join("enclave.json");
        let text = fs::read(&file).map_err(io_err(&file))?;
        let record = serde_json::from_slice(&text).map_err(|e| EnclaveError::State {
            path: file.clone(),
            why: format!(
                "unreadable enclave state ({e}); remove the enclave with `nixoci enclave rm -f`"
            ),
        })?;
        Ok(Enclave {
            dir,
            record,
            _lock: lock,
        })
    }

    pub fn save(&self) -> Result<(), EnclaveError> {
        let file = self.dir.join("enclave.json");
        let bytes = serde_json::to_vec_pretty(&self.record).expect("records serialise");
        crate::util::fs::write_atomic(&file, &bytes).map_err(|e| EnclaveError::State {
            path: file.clone(),
            why: e.source.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.record.name
    }

    pub fn log_path(&self, service: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{service}.log"))
    }

    pub fn artifact_dir(&self, artifact: &str) -> PathBuf {
        self.dir.join("artifacts").join(artifact)
    }

    /// An empty staging directory for a new content of artifact `name`,
    /// beside it: filled, then handed to [`Enclave::install_artifact`].
    pub fn artifact_staging(&self, artifact: &str) -> Result<PathBuf, EnclaveError> {
        let tmp = self.artifact_dir(artifact).with_extension("partial");
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        Ok(tmp)
    }

    /// Make the complete tree `staged` the files artifact `name`. When the
    /// enclave has one of that name with the same content (a re-run), it is
    /// kept and `staged` goes: `false`; else it is replaced and recorded:
    /// `true`.
    pub fn install_artifact(&mut self, name: &str, staged: &Path) -> Result<bool, EnclaveError> {
        let dir = self.artifact_dir(name);
        let known = self.record.artifacts.iter().any(|a| a == name);
        if known && same_tree(staged, &dir).unwrap_or(false) {
            let _ = fs::remove_dir_all(staged);
            return Ok(false);
        }
        let _ = fs::remove_dir_all(&dir);
        fs::rename(staged, &dir).map_err(io_err(&dir))?;
        if !known {
            self.record.artifacts.push(name.to_string());
        }
        self.save()?;
        Ok(true)
    }

    pub fn hosts_path(&self) -> PathBuf {
        self.dir.join("hosts")
    }

    pub fn service(&self, name: &str) -> Result<&ServiceRecord, EnclaveError> {
        self.record
            .services
            .get(name)
            .ok_or_else(|| EnclaveError::NoService {
                name: self.record.name.clone(),
                service: name.into(),
                known: {
                    let k: Vec<&str> = self.record.services.keys().map(String::as_str).collect();
                    if k.is_empty() {
                        "none".into()
                    } else {
                        k.join(", ")
                    }
                },
            })
    }

    /// Where its network lives: here, in the rootless engine it was made
    /// in, or nowhere any more (that engine has stopped).
    pub fn net_host(&self) -> network::NetHost {
        let Some(rec) = &self.record.engine else {
            return network::NetHost::Host;
        };
        let dirs = crate::containerd::engine::rootlesskit_dirs();
        match crate::rootless::EngineNs::detect(&rec.socket, &dirs) {
            Some(ns) if ns.pid == rec.pid => network::NetHost::Engine(ns),
            _ => network::NetHost::Gone,
        }
    }

    /// Drop a removed service: its network attachment, its record and its
    /// hosts entry (its container goes first, through `service::remove`).
    pub fn forget_service(&mut self, name: &str) -> Result<(), EnclaveError> {
        if let Some(n) = &self.record.network {
            network::detach(&self.dir, &self.record.name, n, name, &self.net_host())?;
        }
        self.record.services.remove(name);
        self.save()?;
        self.write_hosts()
    }

    /// Write the hosts file every service mounts: localhost, and every
    /// service's hostname at its address.
    pub fn write_hosts(&self) -> Result<(), EnclaveError> {
        let mut text =
            String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        for s in self.record.services.values() {
            text.push_str(&format!("{}\t{}\n", s.info.ip_address, s.info.hostname));
        }
        let path = self.hosts_path();
        // Rewritten in place (not renamed): bind mounts keep the inode.
        fs::write(&path, text).map_err(io_err(&path))
    }
}

fn net_host_of(engine: Option<&crate::rootless::EngineNs>) -> network::NetHost {
    match engine {
        Some(ns) => network::NetHost::Engine(ns.clone()),
        None => network::NetHost::Host,
    }
}

/// Names of the enclaves with state, sorted.
pub fn list_names() -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(enclaves_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("enclave.json").is_file())
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .collect();
    out.sort();
    out
}

/// The container id of a service: unique per enclave and service.
pub fn container_id(enclave: &str, service: &str) -> String {
    format!("nixoci-{enclave}-{service}")
}
