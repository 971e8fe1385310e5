//! Test harness: fixture flakes copied to a temp dir with busybox beside them
//! (inside the checkout Nix would ignore the untracked busybox), the nixoci
//! binary with a private cache, and tree comparison for unpacked images.
#![allow(dead_code)]

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Fixture {
    pub tmp: tempfile::TempDir,
}

impl Fixture {
    /// Copy `fixtures/flakes/<name>` and /bin/busybox (as `bb/busybox`).
    pub fn flake(name: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/flakes")
            .join(name);
        copy_dir(&src, &tmp.path().join("flake"));
        let bb = tmp.path().join("flake/bb");
        std::fs::create_dir_all(&bb).unwrap();
        std::fs::copy("/bin/busybox", bb.join("busybox")).expect("busybox-static is installed");
        Fixture { tmp }
    }

    pub fn dir(&self) -> PathBuf {
        self.tmp.path().join("flake")
    }

    pub fn out(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// `nixoci` with a cache private to this fixture.
    pub fn nixoci(&self) -> Command {
        nixoci_with_cache(&self.tmp.path().join("cache"))
    }

    /// Run nixoci in the flake directory; panics with its output on failure.
    pub fn build_ok(&self, args: &[&str]) -> String {
        let out = self
            .nixoci()
            .current_dir(self.dir())
            .arg("build")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nixoci build {args:?} failed:\n{}",
            show(&out)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn build_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.build_ok(&a)).unwrap()
    }
}

pub fn nixoci_with_cache(cache: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nixoci"));
    c.env("XDG_CACHE_HOME", cache)
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("RUST_LOG");
    c
}

pub fn show(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}:\n{}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Compare a tree in the store with its copy in an unpacked image: the same
/// names (as bytes), types, permission bits, contents and link targets.
pub fn assert_same_tree(store: &Path, copy: &Path) {
    let a = std::fs::symlink_metadata(store).unwrap();
    let b = std::fs::symlink_metadata(copy).unwrap_or_else(|e| panic!("{}: {e}", copy.display()));
    assert_eq!(a.file_type(), b.file_type(), "{}", copy.display());
    if a.file_type().is_symlink() {
        assert_eq!(
            std::fs::read_link(store).unwrap().as_os_str().as_bytes(),
            std::fs::read_link(copy).unwrap().as_os_str().as_bytes(),
            "{}",
            copy.display()
        );
        return;
    }
    assert_eq!(
        a.permissions().mode() & 0o7777,
        b.permissions().mode() & 0o7777,
        "mode of {}",
        copy.display()
    );
    if a.is_file() {
        assert_eq!(
            std::fs::read(store).unwrap(),
            std::fs::read(copy).unwrap(),
            "{}",
            copy.display()
        );
        return;
    }
    let names = |p: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let (na, nb) = (names(store), names(copy));
    assert_eq!(na, nb, "entries of {}", copy.display());
    for n in na {
        assert_same_tree(&store.join(&n), &copy.join(&n));
    }
}

/// `umoci unpack` an image of an OCI layout into `bundle`; returns the rootfs.
pub fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle));
    bundle.join("rootfs")
}

/// Every store path of the closure in `rootfs`, compared with the store, and
/// nothing else under `rootfs/nix/store`.
pub fn assert_closure_in_rootfs(closure: &[String], rootfs: &Path) {
    let mut in_image: Vec<String> = std::fs::read_dir(rootfs.join("nix/store"))
        .unwrap()
        .map(|e| format!("/nix/store/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    in_image.sort();
    let mut want = closure.to_vec();
    want.sort();
    assert_eq!(in_image, want);
    for p in closure {
        assert_same_tree(Path::new(p), &rootfs.join(&p[1..]));
    }
}

/// The closure of a store path, by asking Nix directly.
pub fn nix_closure(path: &str) -> Vec<String> {
    let out = run(Command::new("nix-store").args(["--query", "--requisites", path]));
    out.lines().map(String::from).collect()
}

pub fn skopeo_inspect(transport_ref: &str, config: bool) -> serde_json::Value {
    let mut c = Command::new("skopeo");
    c.arg("inspect");
    if config {
        c.arg("--config");
    }
    serde_json::from_str(&run(c.arg(transport_ref))).unwrap()
}

/// `ctr run --rm IMAGE` (with a new container id) through `ctr`, and what
/// the process printed. The shim writes the output to a file in `log_dir`,
/// read once the task has exited: `ctr run`'s own copy through FIFOs can
/// lose a quick process's last write.
pub fn ctr_run(
    mut ctr: Command,
    log_dir: &Path,
    image: &str,
    platform: Option<&str>,
    args: &[&str],
) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let id = format!(
        "t{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let log = log_dir.join(format!("{id}.log"));
    ctr.args(["run", "--rm", "--log-uri"])
        .arg(format!("file://{}", log.display()));
    if let Some(p) = platform {
        ctr.args(["--platform", p]);
    }
    run(ctr.args([image, &id]).args(args));
    std::fs::read_to_string(&log).unwrap_or_default()
}

/// A private containerd for one test: its own config, root, state and socket
/// under a temp dir; stopped by PID when dropped.
pub struct Containerd {
    pub dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Containerd {
    pub fn start() -> Self {
        Self::start_on(|_| {})
    }

    /// Start one after `prepare` has seen its directory (to mount
    /// something on `root`, say).
    pub fn start_on(prepare: impl FnOnce(&Path)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        prepare(d);
        let config = format!(
            "version = 2\nroot = {:?}\nstate = {:?}\n[grpc]\n  address = {:?}\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = {:?}\n",
            d.join("root").display().to_string(),
            d.join("state").display().to_string(),
            d.join("containerd.sock").display().to_string(),
            d.join("opt").display().to_string(),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd is installed");
        let c = Containerd { dir, child };
        let start = std::time::Instant::now();
        loop {
            let ok = c
                .ctr("default")
                .arg("version")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                return c;
            }
            assert!(
                start.elapsed().as_secs() < 30,
                "containerd did not start: {}",
                std::fs::read_to_string(c.dir.path().join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    pub fn socket(&self) -> String {
        self.dir
            .path()
            .join("containerd.sock")
            .display()
            .to_string()
    }

    pub fn ctr(&self, namespace: &str) -> Command {
        let mut c = Command::new("ctr");
        c.args(["--address", &self.socket(), "--namespace", namespace]);
        c
    }

    /// `ctr run --rm IMAGE`, returning its stdout.
    pub fn run_image(&self, namespace: &str, image: &str, args: &[&str]) -> String {
        self.run_image_on(namespace, image, None, args)
    }

    /// [`Containerd::run_image`] for `platform` (`linux/arm64`: through
    /// qemu under binfmt).
    pub fn run_image_on(
        &self,
        namespace: &str,
        image: &str,
        platform: Option<&str>,
        args: &[&str],
    ) -> String {
        ctr_run(self.ctr(namespace), self.dir.path(), image, platform, args)
    }

    /// Names of the snapshots in the overlayfs snapshotter.
    pub fn snapshots(&self, namespace: &str) -> Vec<String> {
        run(self.ctr(namespace).args(["snapshot", "ls"]))
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = std::time::Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            if start.elapsed().as_secs() > 10 {
                let _ = self.child.kill();
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// A private `docker-registry` (the reference distribution server) on a free
/// port of 127.0.0.1, storage under a temp dir; `auth` is YAML appended to
/// its config. Stopped when dropped.
pub struct Registry {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<std::process::Child>,
}

impl Registry {
    pub fn start(auth: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Registry {
            dir,
            port,
            child: None,
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
            r.dir.path().join("data").display()
        );
        std::fs::write(r.dir.path().join("config.yml"), config).unwrap();
        r.restart();
        r
    }

    /// Start (again, on the same storage and port).
    pub fn restart(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry is installed");
        self.child = Some(child);
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed().as_secs() < 20,
                "registry did not start: {}",
                std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Two trees are identical: names (as bytes), types, modes, owners, mtimes,
/// link targets and contents. The roots' own mtimes are not compared: the
/// root is the snapshot directory, made by containerd when it was prepared,
/// and is in no layer.
pub fn assert_identical_trees(a: &std::path::Path, b: &std::path::Path) {
    assert_identical_below(a, b, true)
}

fn assert_identical_below(a: &std::path::Path, b: &std::path::Path, root: bool) {
    use std::os::unix::fs::MetadataExt;
    let (ma, mb) = (
        std::fs::symlink_metadata(a).unwrap(),
        std::fs::symlink_metadata(b).unwrap(),
    );
    let what = b.display();
    assert_eq!(ma.file_type(), mb.file_type(), "type of {what}");
    assert_eq!(ma.mode(), mb.mode(), "mode of {what}");
    assert_eq!(
        (ma.uid(), ma.gid()),
        (mb.uid(), mb.gid()),
        "owner of {what}"
    );
    if !root {
        assert_eq!(ma.mtime(), mb.mtime(), "mtime of {what}");
    }
    if ma.file_type().is_symlink() {
        assert_eq!(
            std::fs::read_link(a).unwrap(),
            std::fs::read_link(b).unwrap(),
            "{what}"
        );
    } else if ma.is_file() {
        assert_eq!(ma.size(), mb.size(), "size of {what}");
        assert_eq!(
            std::fs::read(a).unwrap(),
            std::fs::read(b).unwrap(),
            "content of {what}"
        );
    } else if ma.is_dir() {
        let names = |p: &std::path::Path| {
            let mut v: Vec<_> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            v.sort();
            v
        };
        let (na, nb) = (names(a), names(b));
        assert_eq!(na, nb, "entries of {what}");
        for n in na {
            assert_identical_below(&a.join(&n), &b.join(&n), false);
        }
    }
}

/// [`assert_identical_trees`], and more: nanoseconds of mtimes, link
/// counts and extended attributes (for trees that must be made alike, not
/// only look alike).
pub fn assert_identical_trees_strictly(a: &std::path::Path, b: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    assert_identical_trees(a, b);
    fn xattrs(p: &std::path::Path) -> Vec<(String, Vec<u8>)> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        let mut names = vec![0u8; 4096];
        // SAFETY: a C path and a buffer of its length.
        let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        assert!(n >= 0, "listxattr {}", p.display());
        let mut out = Vec::new();
        for name in names[..n as usize]
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
        {
            let cn = std::ffi::CString::new(name).unwrap();
            let mut v = vec![0u8; 4096];
            // SAFETY: C path and name, and a buffer of its length.
            let m =
                unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
            assert!(m >= 0, "getxattr {}", p.display());
            v.truncate(m as usize);
            out.push((String::from_utf8_lossy(name).into_owned(), v));
        }
        out.sort();
        out
    }
    fn walk(a: &std::path::Path, b: &std::path::Path, root: bool) {
        let (ma, mb) = (
            std::fs::symlink_metadata(a).unwrap(),
            std::fs::symlink_metadata(b).unwrap(),
        );
        if !root {
            assert_eq!(ma.mtime_nsec(), mb.mtime_nsec(), "mtime of {}", b.display());
        }
        assert_eq!(ma.nlink(), mb.nlink(), "links of {}", b.display());
        assert_eq!(xattrs(a), xattrs(b), "xattrs of {}", b.display());
        if ma.is_dir() {
            for e in std::fs::read_dir(a).unwrap() {
                let n = e.unwrap().file_name();
                walk(&a.join(&n), &b.join(&n), false);
            }
        }
    }
    walk(a, b, true);
}

/// Build the flake in `dir` with nix (so a later build of it is only the
/// image work); its out path.
pub fn realise(dir: &Path) -> String {
    let out = run(Command::new("nix").current_dir(dir).args([
        "--extra-experimental-features",
        "nix-command flakes",
        "build",
        "--json",
        "--no-link",
        "path:.",
    ]));
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    doc[0]["outputs"]["out"].as_str().unwrap().to_string()
}

/// A host port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
