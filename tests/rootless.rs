//! Rootless: nixoci as an unprivileged user the tests create (a subuid
//! range, in `nix-users`, no capability), from copies of the binary and
//! fixtures that user can read (a CI clone may sit where only root can
//! enter). Real rootlesskit, slirp4netns, containerd, runc and Nix daemon;
//! what the user's engine made is checked from outside, as root, with
//! `nsenter`, `ctr` and `ip`.

mod common;

use common::{assert_identical_trees, copy_dir, free_port, show};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The user every rootless test runs as.
const USER: &str = "nixoci-rl";
/// A user without subordinate ids (the preflight test).
const NO_SUBIDS: &str = "nixoci-rl-nosub";

/// Test users are made once, under a lock (tests run in parallel).
fn user(name: &str, subids: bool) -> (u32, u32) {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/nixoci-test-users.lock")
        .unwrap();
    // SAFETY: flock on an open file, released when it closes.
    unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    let id = |flag: &str| -> Option<u32> {
        let o = Command::new("id").args([flag, name]).output().ok()?;
        String::from_utf8_lossy(&o.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let o = Command::new("useradd")
            .args([
                "-M",
                "-d",
                "/nonexistent",
                "-s",
                "/usr/sbin/nologin",
                "-G",
                "nix-users",
                name,
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "useradd {name}: {}", show(&o));
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let has = text.lines().any(|l| l.starts_with(&format!("{name}:")));
        if subids && !has {
            // Debian's useradd gives new users a range; this one was made
            // before that was configured, say.
            let flag = if file.ends_with("uid") {
                "--add-subuids"
            } else {
                "--add-subgids"
            };
            let o = Command::new("usermod")
                .args([flag, "3000000000-3000065535", name])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", show(&o));
        } else if !subids && has {
            let kept: String = text
                .lines()
                .filter(|l| !l.starts_with(&format!("{name}:")))
                .map(|l| format!("{l}\n"))
                .collect();
            let tmp = format!("{file}.nixoci-test");
            std::fs::write(&tmp, kept).unwrap();
            std::fs::rename(&tmp, file).unwrap();
        }
    }
    (id("-u").unwrap(), id("-g").unwrap())
}

/// The Nix daemon, started here when nothing answers (scripts/setup.sh
/// starts it too; a user builds through it).
fn nix_daemon() {
    let answers = || {
        Command::new("nix")
            .args(["store", "ping", "--store", "daemon"])
            .env("NIX_CONFIG", "experimental-features = nix-command flakes")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if answers() {
        return;
    }
    let mut c = Command::new("nix-daemon");
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid between fork and exec: the daemon outlives the test.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut c, || {
            libc::setsid();
            Ok(())
        });
    }
    // It stays (as a system's daemon would), for every later test.
    let daemon = c.spawn().expect("nix-daemon (nix-bin) is installed");
    std::mem::forget(daemon);
    let start = Instant::now();
    while !answers() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "nix-daemon did not answer"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One user's working directory: a copy of nixoci, fixtures, its
/// NIXOCI_HOME and caches; the engine is stopped on drop.
struct Session {
    user: String,
    uid: u32,
    gid: u32,
    dir: tempfile::TempDir,
}

fn chown_tree(p: &Path, uid: u32, gid: u32) {
    let o = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(p)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
}

impl Session {
    fn new(user_name: &str, subids: bool) -> Self {
        nix_daemon();
        let (uid, gid) = user(user_name, subids);
        // Short: containerd's socket path must stay under 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("nxrl")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_nixoci"), dir.path().join("bin/nixoci")).unwrap();
        chown_tree(dir.path(), uid, gid);
        Session {
            user: user_name.into(),
            uid,
            gid,
            dir,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn home(&self) -> PathBuf {
        self.path("h")
    }

    /// A fixture (package or flake) copied in, busybox beside its flake.
    fn fixture(&self, kind: &str, name: &str) -> PathBuf {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(kind)
            .join(name);
        let dst = self.path(name);
        copy_dir(&src, &dst);
        for d in [dst.join("nix"), dst.clone()] {
            if d.join("flake.nix").is_file() {
                std::fs::create_dir_all(d.join("bb")).unwrap();
                std::fs::copy("/bin/busybox", d.join("bb/busybox")).unwrap();
            }
        }
        chown_tree(&dst, self.uid, self.gid);
        dst
    }

    /// nixoci as the user: no capability, a clean environment.
    fn nixoci(&self) -> Command {
        let mut c = Command::new("/usr/bin/setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .args(["--init-groups", "--inh-caps=-all", "--"])
            .arg(self.path("bin/nixoci"))
            .env_clear()
            .env("HOME", self.dir.path())
            .env("USER", &self.user)
            .env(
                "PATH",
                "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
            )
            .env("NIXOCI_HOME", self.home())
            .env("XDG_CACHE_HOME", self.path("cache"))
            .current_dir(self.dir.path());
        c
    }

    fn out(&self, args: &[&str]) -> Output {
        self.nixoci().args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.out(args);
        assert!(
            o.status.success(),
            "nixoci {args:?} as {}:\n{}",
            self.user,
            show(&o)
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }

    /// rootlesskit's child: the process whose namespaces are the engine's.
    fn engine_child(&self) -> u32 {
        std::fs::read_to_string(self.home().join("containerd/rootlesskit/child_pid"))
            .expect("the rootless engine runs")
            .trim()
            .parse()
            .unwrap()
    }

    fn socket(&self) -> String {
        self.home()
            .join("containerd/containerd.sock")
            .display()
            .to_string()
    }

    /// A command run as root inside the engine's namespaces.
    fn inside(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.args([
            "-t",
            &self.engine_child().to_string(),
            "-U",
            "-m",
            "-n",
            "--",
        ])
        .arg(program);
        c
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.nixoci().args(["engine", "stop"]).output();
    }
}

fn userns(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/user")).ok()
}

/// Live (not zombie) processes whose user namespace is `ns`.
fn live_in(ns: &Path) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| userns(p).as_deref() == Some(ns))
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let state = stat.rsplit(')').next()?.trim_start().chars().next()?;
            (state != 'Z').then(|| format!("{p} {}", cmdline(p)))
        })
        .collect()
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Live processes whose command line names `dir`.
fn live_naming(dir: &Path) -> Vec<String> {
    let d = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            cmdline(p).contains(&d)
                && std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .map(|s| {
                        !s.rsplit(')')
                            .next()
                            .unwrap_or("")
                            .trim_start()
                            .starts_with('Z')
                    })
                    .unwrap_or(false)
        })
        .map(|p| format!("{p} {}", cmdline(p)))
        .collect()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "waited 20 s for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn http_get(url_host_port: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(url_host_port).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    r
}

/// A server on the host's loopback that answers every request with `body`.
fn host_server(body: &'static str) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn an_unprivileged_user_builds_runs_and_leaves_nothing() {
    let s = Session::new(USER, true);
    assert!(s.ok(&["engine", "status"]).contains("rootless: yes"));
    // A flake into containerd: the private engine starts rootless, and
    // the layers are filled directly, copied (the store is root's).
    let flake = s.fixture("flakes", "hello");
    let o = s.out(&[
        "build",
        flake.to_str().unwrap(),
        "--output",
        "containerd",
        "--json",
    ]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("started nixoci's private containerd"),
        "{}",
        show(&o)
    );
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let unpack = &doc["outputs"][0]["unpack"];
    assert!(unpack["filled"].as_u64().unwrap() > 0, "{doc}");
    assert_eq!(unpack["applied"], 0, "{doc}");
    assert_eq!(unpack["files_linked"], 0, "{doc}");
    let status = s.ok(&["engine", "status"]);
    for want in [
        "rootless: yes (rootlesskit 1.1",
        "network slirp4netns",
        "port driver builtin",
        "snapshotter: overlayfs",
    ] {
        assert!(status.contains(want), "wanted {want:?}:\n{status}");
    }
    // The engine runs as the user, in its own user namespace.
    let child = s.engine_child();
    let ns = userns(child).unwrap();
    assert_ne!(Some(&ns), userns(std::process::id()).as_ref());
    let owner = std::fs::metadata(format!("/proc/{child}"))
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    assert_eq!(owner, s.uid);
    // The image runs, through ctr and runc inside the engine.
    let ran = s
        .inside("ctr")
        .args([
            "--address",
            &s.socket(),
            "run",
            "--rm",
            // No cgroup and no CPU shares (ctr's default is 1024): cgroup
            // v1 gives a user none.
            "--cgroup",
            "",
            "--cpu-shares",
            "0",
            "docker.io/library/hello-app:latest",
            "rl-hello",
        ])
        .output()
        .unwrap();
    assert!(ran.status.success(), "{}", show(&ran));
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "hello from nix\n");

    // A package: two services by name and address, a recipe, a public
    // port, the host's loopback through slirp4netns' gateway.
    let pkg = s.fixture("packages", "rootless");
    let (public, outside) = (free_port(), host_server("from the host\n"));
    let args = format!(r#"{{"public": {public}, "outside": {outside}}}"#);
    let o = s.out(&["run", pkg.to_str().unwrap(), &args, "--enclave", "rl"]);
    assert!(o.status.success(), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for want in [
        "Verification succeeded: \"hello from srv\\n\" == \"hello from srv\\n\"",
        "Files artifact 'stored' created",
    ] {
        assert!(err.contains(want), "wanted {want:?}:\n{err}");
    }
    if !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        // cgroup v1: one warning, naming the service and the limit.
        let warning = "warning: service 'srv': max_memory = 64 not enforced";
        assert_eq!(err.matches(warning).count(), 1, "{err}");
    }
    let url = s.ok(&["port", "print", "rl", "srv", "http"]);
    assert_eq!(url.trim(), format!("http://127.0.0.1:{public}"));
    let page = http_get(&format!("127.0.0.1:{public}"), "/hello.txt");
    assert!(page.ends_with("hello from srv\n"), "{page}");
    let o = s.out(&["port", "print", "rl", "srv", "admin"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("reachable only inside the engine"),
        "{}",
        show(&o)
    );
    // Files copied out of the service, as the user's own.
    let dl = s.path("dl");
    s.ok(&["files", "download", "rl", "stored", dl.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(dl.join("out/note.txt")).unwrap(),
        "kept\n"
    );
    // Service commands.
    assert!(s
        .ok(&["service", "logs", "rl", "srv"])
        .contains("srv: serving"));
    let hosts = s.ok(&["service", "exec", "rl", "peer", "--", "cat", "/etc/hosts"]);
    assert!(hosts.contains("\tsrv\n"), "{hosts}");
    let whoami = s.ok(&["service", "exec", "rl", "peer", "--", "id", "-u"]);
    assert_eq!(whoami.trim(), "0");
    s.ok(&["service", "stop", "rl", "peer"]);
    s.ok(&["service", "rm", "rl", "peer"]);
    let inspect = s.ok(&["enclave", "inspect", "rl"]);
    assert!(!inspect.contains("peer"), "{inspect}");

    // enclave rm: no container process, namespace mount, link or port.
    let engine_mounts =
        |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    assert!(engine_mounts(child).contains("/enclaves/rl/netns/srv"));
    s.ok(&["enclave", "rm", "-f", "rl"]);
    assert!(!engine_mounts(child).contains("/enclaves/rl/"));
    let links = common::run(s.inside("ip").args(["-o", "link"]));
    let names: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(str::trim)
        .collect();
    assert!(names.iter().all(|n| *n == "lo" || *n == "tap0"), "{links}");
    // What is left in the engine's user namespace is the engine itself:
    // no shim, no container process.
    let left: Vec<String> = live_in(&ns)
        .into_iter()
        .filter(|p| {
            let cmd = p.split_once(' ').map_or("", |x| x.1);
            !(cmd.starts_with("/proc/self/exe --state-dir=")
                || cmd.starts_with("slirp4netns ")
                || cmd.starts_with("containerd --config "))
        })
        .collect();
    assert!(left.is_empty(), "{left:#?}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", public)).is_err());

    // engine stop: no process, namespace or mount of the user's engine.
    s.ok(&["engine", "stop"]);
    wait_until("the engine's processes to go", || live_in(&ns).is_empty());
    assert!(
        live_naming(s.dir.path()).is_empty(),
        "{:#?}",
        live_naming(s.dir.path())
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&s.dir.path().display().to_string()),
        "{mounts}"
    );
    assert!(s.ok(&["engine", "status"]).contains("not running"));
}

#[test]
fn a_rootless_fill_equals_containerds_own_apply() {
    let s = Session::new(USER, true);
    let flake = s.fixture("flakes", "edge");
    let f = flake.to_str().unwrap();
    let build = |ns: &str, apply: bool| -> serde_json::Value {
        let mut c = s.nixoci();
        if apply {
            c.env("NIXOCI_UNPACK", "apply");
        }
        let o = c
            .args(["build", f, "--json", "--compression", "gzip", "-o"])
            .arg(format!("containerd:{ns}"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", show(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let fast = build("fill", false);
    let slow = build("apply", true);
    assert_eq!(fast["manifest"], slow["manifest"]);
    let layers = fast["layers"].as_array().unwrap().len();
    assert_eq!(fast["outputs"][0]["unpack"]["filled"], layers, "{fast}");
    assert_eq!(slow["outputs"][0]["unpack"]["applied"], layers, "{slow}");
    // Both mounted inside the engine, as a container sees them, and
    // compared from here through the engine's root: same names, types,
    // modes, owners (the user, who is 0 in there), times and contents.
    let child = s.engine_child();
    let mount = |ns: &str, at: &Path| {
        std::fs::create_dir_all(at).unwrap();
        common::run(
            s.inside("ctr")
                .args(["--address", &s.socket(), "-n", ns, "images", "mount"])
                .arg("docker.io/library/edge-cases:latest")
                .arg(at),
        );
    };
    // The same image loaded from an OCI layout: its layers extracted by
    // nixoci as they arrive, as this user.
    let layout = s.path("layout");
    let o = s
        .nixoci()
        .args([
            "build",
            f,
            "--compression",
            "gzip",
            "--tag",
            "edge-cases",
            "-o",
        ])
        .arg(format!("oci:{}", layout.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let o = s
        .nixoci()
        .args(["load", "--json", "-o", "containerd:extract"])
        .arg(format!("oci:{}", layout.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let loaded: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        loaded["outputs"][0]["unpack"]["extracted"], layers,
        "{loaded}"
    );
    let (m1, m2, m3) = (s.path("m-fill"), s.path("m-apply"), s.path("m-extract"));
    mount("fill", &m1);
    mount("apply", &m2);
    mount("extract", &m3);
    let seen = |p: &Path| PathBuf::from(format!("/proc/{child}/root{}", p.display()));
    let check = std::panic::catch_unwind(|| {
        assert_identical_trees(&seen(&m2), &seen(&m1));
        assert_identical_trees(&seen(&m2), &seen(&m3));
        let md = std::fs::metadata(seen(&m1).join("bin")).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&md), s.uid);
    });
    for (ns, m) in [("fill", &m1), ("apply", &m2), ("extract", &m3)] {
        let _ = s
            .inside("ctr")
            .args(["--address", &s.socket(), "-n", ns, "images", "unmount"])
            .arg(m)
            .output();
    }
    check.unwrap();
}

#[test]
fn each_preflight_failure_says_what_to_do() {
    let s = Session::new(USER, true);
    let start = |env: &[(&str, &str)]| -> String {
        let mut c = s.nixoci();
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.args(["engine", "start"]).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", show(&o));
        assert!(!s.home().join("containerd/rootlesskit").exists());
        assert!(live_naming(s.dir.path()).is_empty());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    // newuidmap missing: a PATH with rootlesskit and slirp4netns only.
    let bin = s.path("few");
    std::fs::create_dir_all(&bin).unwrap();
    for p in ["rootlesskit", "slirp4netns"] {
        std::os::unix::fs::symlink(format!("/usr/bin/{p}"), bin.join(p)).unwrap();
    }
    let e = start(&[("PATH", bin.to_str().unwrap())]);
    assert!(
        e.contains("check 'programs' failed: `newuidmap` is not on $PATH"),
        "{e}"
    );
    assert!(e.contains("fix: sudo apt-get install uidmap"), "{e}");
    // No subordinate gids (a file without the user).
    let empty = s.path("subgid");
    std::fs::write(&empty, "someone:100000:65536\n").unwrap();
    let e = start(&[("NIXOCI_SUBGID_FILE", empty.to_str().unwrap())]);
    assert!(
        e.contains(&format!(
            "check 'subordinate gids' failed: {} grants user {USER}",
            empty.display()
        )),
        "{e}"
    );
    assert!(e.contains("fix: sudo usermod --add-subgids"), "{e}");
    // User namespaces disabled (Debian's sysctl).
    let sys = s.path("sys");
    std::fs::create_dir_all(sys.join("kernel")).unwrap();
    std::fs::write(sys.join("kernel/unprivileged_userns_clone"), "0\n").unwrap();
    let e = start(&[("NIXOCI_PROC_SYS", sys.to_str().unwrap())]);
    assert!(
        e.contains("check 'user namespaces' failed: unprivileged user namespaces are disabled"),
        "{e}"
    );
    assert!(
        e.contains("fix: sudo sysctl -w kernel.unprivileged_userns_clone=1"),
        "{e}"
    );
    // A tun device the user cannot open (root's, 0600).
    let tun = s.path("tun");
    std::fs::write(&tun, "").unwrap();
    std::fs::set_permissions(&tun, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&tun, Some(0), Some(0)).unwrap();
    let e = start(&[("NIXOCI_TUN_DEVICE", tun.to_str().unwrap())]);
    assert!(
        e.contains(&format!(
            "check 'tun device' failed: {} cannot be opened by this user",
            tun.display()
        )),
        "{e}"
    );
    assert!(
        e.contains(&format!("fix: sudo chmod 0666 {}", tun.display())),
        "{e}"
    );
    // No Nix daemon: the build says why and how.
    let flake = s.fixture("flakes", "hello");
    let o = s
        .nixoci()
        .env("NIX_DAEMON_SOCKET_PATH", s.path("no-daemon.sock"))
        .args(["build", flake.to_str().unwrap(), "--output"])
        .arg(format!("oci:{}", s.path("oci").display()))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("check 'nix daemon' failed: no Nix daemon answers at"),
        "{e}"
    );
    assert!(e.contains("fix: start the daemon"), "{e}");
    assert!(!s.path("oci").join("index.json").exists());
    // A user without any subordinate range.
    let n = Session::new(NO_SUBIDS, false);
    let o = n.out(&["engine", "start"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains(&format!(
            "check 'subordinate uids' failed: /etc/subuid grants user {NO_SUBIDS}"
        )),
        "{e}"
    );
    assert!(e.contains("--add-subuids"), "{e}");
    // And a home too deep for a Unix socket.
    let deep = s.path(&"d".repeat(90));
    let o = s
        .nixoci()
        .env("NIXOCI_HOME", &deep)
        .args(["engine", "start"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(
            "over the 107 a Unix socket path may have: set $NIXOCI_HOME to a shorter directory"
        ),
        "{}",
        show(&o)
    );
}

#[test]
fn a_rootless_containerd_the_user_already_runs_is_used() {
    // nerdctl's layout: containerd at $XDG_RUNTIME_DIR/containerd, its
    // rootlesskit's state at $XDG_RUNTIME_DIR/containerd-rootless.
    let s = Session::new(USER, true);
    let run = s.path("xdg");
    let cfg = s.path("theirs.toml");
    std::fs::create_dir_all(run.join("containerd")).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "version = 2\nroot = \"{0}/theirs/root\"\nstate = \"{0}/theirs/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{1}/containerd/containerd.sock\"\n",
            s.dir.path().display(),
            run.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    chown_tree(s.dir.path(), s.uid, s.gid);
    let mut rk = Command::new("/usr/bin/setpriv");
    rk.arg(format!("--reuid={}", s.uid))
        .arg(format!("--regid={}", s.gid))
        .args(["--init-groups", "--", "rootlesskit"])
        .arg(format!("--state-dir={}/containerd-rootless", run.display()))
        .args([
            "--net=slirp4netns",
            "--port-driver=builtin",
            "--copy-up=/etc",
            "--copy-up=/run",
            "--propagation=rslave",
        ])
        // As containerd-rootless.sh: the links rootlesskit copied up for
        // the host's /run/containerd and xtables lock go first.
        .args([
            "sh",
            "-c",
            "rm -f /run/containerd /run/xtables.lock; exec containerd --config \"$0\"",
        ])
        .arg(&cfg)
        .env_clear()
        .env("HOME", s.dir.path())
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut theirs = rk.spawn().unwrap();
    let sock = run.join("containerd/containerd.sock");
    wait_until("their containerd", || {
        sock.exists() && run.join("containerd-rootless/child_pid").exists()
    });
    let pkg = s.fixture("packages", "rootless");
    let public = free_port();
    let o = s
        .nixoci()
        .env("XDG_RUNTIME_DIR", &run)
        .args([
            "run",
            pkg.to_str().unwrap(),
            &format!(r#"{{"public": {public}}}"#),
            "--enclave",
            "theirs",
        ])
        .output()
        .unwrap();
    let found = o.status.success() && !s.home().join("containerd/containerd.pid").exists();
    let page = found.then(|| http_get(&format!("127.0.0.1:{public}"), "/hello.txt"));
    let _ = s
        .nixoci()
        .env("XDG_RUNTIME_DIR", &run)
        .args(["enclave", "rm", "-f", "theirs"])
        .output();
    // SAFETY: a signal to the rootlesskit this test started.
    unsafe { libc::kill(theirs.id() as i32, libc::SIGTERM) };
    let _ = theirs.wait();
    assert!(
        found,
        "nixoci used their containerd and started none:\n{}",
        show(&o)
    );
    assert!(page.unwrap().ends_with("hello from srv\n"));
}
