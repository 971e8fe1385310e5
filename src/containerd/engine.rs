//! nixoci's private containerd: config, root, state, socket, pid file and
//! log under `$NIXOCI_HOME/containerd` (see [`nixoci_home`]). Only the
//! `containerd` and `runc` binaries need to be installed.
//!
//! As a user other than root it runs rootless: under rootlesskit (user,
//! mount and network namespaces; slirp4netns for the network, the builtin
//! port driver; `/etc` and `/run` copied up), after the checks of
//! [`crate::rootless::preflight`]. rootlesskit's state is
//! `containerd/rootlesskit/` and the pid file names rootlesskit.

use super::{Client, ContainerdError};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use crate::util::dirs::nixoci_home;

pub struct Engine {
    dir: PathBuf,
}

#[derive(Debug)]
pub struct EngineStatus {
    pub socket: PathBuf,
    pub pid: Option<u32>,
    pub version: Option<String>,
    pub log: PathBuf,
    /// Set when the engine runs (or would run) rootless.
    pub rootless: bool,
    /// rootlesskit's view of itself (`/v1/info`), when it answers.
    pub rootlesskit: Option<serde_json::Value>,
    /// The snapshotter images are unpacked into by default.
    pub snapshotter: Option<String>,
    /// Why overlayfs is not it, when it is not.
    pub overlay_error: Option<String>,
}

/// The longest path a Unix socket may have (`sun_path` less its NUL).
const SOCKET_PATH_MAX: usize = 107;

fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

impl Engine {
    pub fn new(home: &Path) -> Self {
        Engine {
            dir: home.join("containerd"),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }
    fn pid_file(&self) -> PathBuf {
        self.dir.join("containerd.pid")
    }
    fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    /// rootlesskit's state directory (rootless engines only).
    pub fn rootlesskit_dir(&self) -> PathBuf {
        self.dir.join("rootlesskit")
    }
    /// The engine's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Whether this engine runs rootless: nixoci runs as a user other
    /// than root.
    pub fn rootless(&self) -> bool {
        crate::rootless::unprivileged()
    }

    /// The pid of the private containerd, if the pid file names a live
    /// process that is it (containerd with this engine's config).
    pub fn pid(&self) -> Option<u32> {
        self.recorded_pid().filter(|&pid| self.is_ours(pid))
    }

    /// The live process the pid file names, whatever it is.
    fn recorded_pid(&self) -> Option<u32> {
        let pid: u32 = fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        (pid > 0 && pid_alive(pid)).then_some(pid)
    }

    /// Whether `pid` runs `containerd --config <this engine's config>`.
    fn is_ours(&self, pid: u32) -> bool {
        let args = cmdline(pid);
        let config = self.config().display().to_string();
        args.windows(2)
            .any(|w| w[0] == "--config" && w[1] == config)
    }

    fn config_text(&self) -> String {
        let q = |p: PathBuf| format!("{:?}", p.display().to_string());
        // Rootless: the CRI plugin (Kubernetes') is of no use to nixoci and
        // wants what a user namespace does not give.
        let disabled = if self.rootless() {
            "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"
        } else {
            ""
        };
        format!(
            "# Written by nixoci: its private containerd.\nversion = 2\n{disabled}root = {}\nstate = {}\n\n[grpc]\n  address = {}\n\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = {}\n",
            q(self.dir.join("root")),
            q(self.dir.join("state")),
            q(self.socket()),
            q(self.dir.join("opt")),
        )
    }

    pub async fn status(&self) -> EngineStatus {
        let client = Client::connect(
            &self.socket().display().to_string(),
            super::DEFAULT_NAMESPACE,
        )
        .await
        .ok();
        let version = match &client {
            Some(c) => c.version().await.ok(),
            None => None,
        };
        let (snapshotter, overlay_error) = match &client {
            Some(c) => match super::snapshotters(c).await {
                Ok(ok) => (Some(super::pick_snapshotter(&ok.0)), ok.1),
                Err(_) => (None, None),
            },
            None => (None, None),
        };
        let rootlesskit = if self.rootless() {
            crate::rootless::ports::info(&self.rootlesskit_dir().join("api.sock")).ok()
        } else {
            None
        };
        EngineStatus {
            socket: self.socket(),
            pid: self.pid(),
            version,
            log: self.log(),
            rootless: self.rootless(),
            rootlesskit,
            snapshotter,
            overlay_error,
        }
    }

    /// Start the private containerd unless it already answers. Returns
    /// whether it was started now.
    pub async fn start(&self) -> Result<bool, ContainerdError> {
        let sock = self.socket().display().to_string();
        if Client::connect(&sock, super::DEFAULT_NAMESPACE)
            .await
            .is_ok()
        {
            return Ok(false);
        }
        if let Some(pid) = self.pid() {
            return Err(ContainerdError::Engine(format!(
                "the private containerd (pid {pid}) is running but does not answer at {sock}; see {} or run `nixoci engine stop`",
                self.log().display()
            )));
        }
        let bin = std::env::var_os("NIXOCI_CONTAINERD").unwrap_or_else(|| "containerd".into());
        let e = |what: &str, p: &Path, err: std::io::Error| {
            ContainerdError::Engine(format!("{what} {}: {err}", p.display()))
        };
        // containerd listens on `<socket>.ttrpc` too; rootlesskit on
        // `api.sock` and slirp4netns beside it.
        let mut longest = vec![format!("{}.ttrpc", self.socket().display())];
        if self.rootless() {
            longest.push(format!(
                "{}/slirp4netns.sock",
                self.rootlesskit_dir().display()
            ));
        }
        if let Some(p) = longest.iter().find(|p| p.len() > SOCKET_PATH_MAX) {
            return Err(ContainerdError::Engine(format!(
                "the private containerd's socket {p} would be {} bytes long, over the {SOCKET_PATH_MAX} a Unix socket path may have: set $NIXOCI_HOME to a shorter directory",
                p.len()
            )));
        }
        if self.rootless() {
            crate::rootless::preflight::engine().map_err(|f| {
                ContainerdError::Engine(format!("cannot start a rootless containerd: {f}"))
            })?;
            // What a killed rootlesskit left (it removes its directory when
            // it exits); rootlesskit wants it new.
            let _ = fs::remove_dir_all(self.rootlesskit_dir());
        }
        fs::create_dir_all(&self.dir).map_err(|err| e("cannot create", &self.dir, err))?;
        fs::write(self.config(), self.config_text())
            .map_err(|err| e("cannot write", &self.config(), err))?;
        let _ = fs::remove_file(self.socket());
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .map_err(|err| e("cannot open", &self.log(), err))?;
        let mut cmd = if self.rootless() {
            let mut c = Command::new("rootlesskit");
            c.arg(format!("--state-dir={}", self.rootlesskit_dir().display()))
                .args([
                    "--net=slirp4netns",
                    "--mtu=65520",
                    "--slirp4netns-sandbox=auto",
                    "--slirp4netns-seccomp=auto",
                    "--port-driver=builtin",
                    "--copy-up=/etc",
                    "--copy-up=/run",
                    "--propagation=rslave",
                ])
                // nixoci's helper prepares the namespace, then becomes
                // containerd.
                .arg(
                    std::env::current_exe()
                        .map_err(|err| e("cannot find", Path::new("nixoci"), err))?,
                )
                .args([crate::rootless::HELPER, "containerd"])
                .arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        cmd.arg("--config")
            .arg(self.config())
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|err| e("cannot open", &self.log(), err))?,
            )
            .stderr(log);
        // SAFETY: setsid is async-signal-safe; the engine outlives nixoci and
        // must not get the terminal's Ctrl-C.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|err| {
            ContainerdError::Engine(match err.kind() {
                std::io::ErrorKind::NotFound if self.rootless() => {
                    "`rootlesskit` was not found: install it (Debian: `apt-get install rootlesskit slirp4netns uidmap`)".to_string()
                }
                std::io::ErrorKind::NotFound => format!(
                    "`{}` was not found: install containerd and runc (Debian: `apt-get install containerd runc`) or set $NIXOCI_CONTAINERD",
                    bin.to_string_lossy()
                ),
                _ => format!("cannot run {}: {err}", bin.to_string_lossy()),
            })
        })?;
        fs::write(self.pid_file(), child.id().to_string())
            .map_err(|err| e("cannot write", &self.pid_file(), err))?;
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let _ = fs::remove_file(self.pid_file());
                return Err(ContainerdError::Engine(format!(
                    "the private containerd exited at once ({status}); its log {} ends:\n{}",
                    self.log().display(),
                    tail(&self.log(), 15)
                )));
            }
            if self.socket().exists()
                && Client::connect(&sock, super::DEFAULT_NAMESPACE)
                    .await
                    .is_ok()
            {
                return Ok(true);
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(ContainerdError::Engine(format!(
                    "the private containerd did not answer at {sock} within 30 s; its log {} ends:\n{}",
                    self.log().display(),
                    tail(&self.log(), 15)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stop the private containerd: SIGTERM, then SIGKILL after 15 s.
    /// Returns whether one was running.
    pub async fn stop(&self) -> Result<bool, ContainerdError> {
        let Some(pid) = self.recorded_pid() else {
            let _ = fs::remove_file(self.pid_file());
            return Ok(false);
        };
        if !self.is_ours(pid) {
            return Err(ContainerdError::Engine(format!(
                "{} names process {pid} ({}), which is not the private containerd nixoci started (containerd --config {}); nothing was signalled. If the engine is gone, remove {}",
                self.pid_file().display(),
                cmdline(pid).join(" "),
                self.config().display(),
                self.pid_file().display()
            )));
        }
        // A rootless engine's user namespace: what lives in it (shims,
        // containers) goes too, so nothing of the user's is left running.
        let userns = fs::read_to_string(self.rootlesskit_dir().join("child_pid"))
            .ok()
            .and_then(|p| crate::rootless::ns_id(p.trim(), "user"));
        // SAFETY: plain signals to the pid we started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        wait_gone(&[pid], Duration::from_secs(15)).await;
        if let Some(ns) = userns {
            let left = processes_in_userns(&ns);
            for p in &left {
                // SAFETY: a signal to a process in the engine's namespace.
                unsafe { libc::kill(*p as i32, libc::SIGKILL) };
            }
            wait_gone(&left, Duration::from_secs(15)).await;
        }
        let _ = fs::remove_file(self.pid_file());
        Ok(true)
    }
}

/// Where rootlesskit state directories (and so port APIs) of rootless
/// engines may be: the private engine's, then nerdctl's.
pub fn rootlesskit_dirs() -> Vec<PathBuf> {
    crate::rootless::rootlesskit_dirs(Engine::new(&nixoci_home()).dir())
}

/// Wait until every pid is gone (or a zombie); SIGKILL what is left
/// after `patience`.
async fn wait_gone(pids: &[u32], patience: Duration) {
    let start = Instant::now();
    let mut killed = false;
    while pids.iter().any(|&p| pid_alive(p) && !is_zombie(p)) {
        if !killed && start.elapsed() > patience {
            for &p in pids {
                // SAFETY: a signal to a process we are stopping.
                unsafe { libc::kill(p as i32, libc::SIGKILL) };
            }
            killed = true;
        }
        if start.elapsed() > patience * 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every process whose user namespace is `ns`.
pub fn processes_in_userns(ns: &Path) -> Vec<u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| crate::rootless::ns_id(&p.to_string(), "user").as_deref() == Some(ns))
        .collect()
}

/// A process's arguments (empty when it is gone or unreadable).
fn cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signals_only_the_engine_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new(dir.path());
        fs::create_dir_all(engine.pid_file().parent().unwrap()).unwrap();
        // A live process that is not the engine: this test itself.
        fs::write(engine.pid_file(), std::process::id().to_string()).unwrap();
        assert_eq!(engine.pid(), None);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let e = rt.block_on(engine.stop()).unwrap_err().to_string();
        assert!(
            e.contains("not the private containerd") && e.contains("nothing was signalled"),
            "{e}"
        );
        assert!(
            engine.pid_file().exists(),
            "the pid file is left for the user"
        );
        // A pid file naming nothing alive is cleared.
        fs::write(engine.pid_file(), "999999999").unwrap();
        assert!(!rt.block_on(engine.stop()).unwrap());
        assert!(!engine.pid_file().exists());
    }
}
