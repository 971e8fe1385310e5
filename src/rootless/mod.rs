//! Rootless containerd: a containerd that runs as an unprivileged user in
//! a user, mount and network namespace of rootlesskit's making (nixoci's
//! private engine as a user, or nerdctl's `containerd-rootless.sh`).
//!
//! - [`EngineNs`]: which containerd lives in other namespaces (found from
//!   the socket itself: the listening process's user namespace differs
//!   from ours), and commands that run inside them. A multithreaded
//!   process cannot join a user namespace, so nixoci never enters: the
//!   child it forks does, before `exec` (`setns` of user, mount and network
//!   namespace, as `nsenter -U -m -n` would).
//! - [`ports`]: rootlesskit's port API (public ports on the host).
//! - [`preflight`]: the checks before a rootless engine starts, each with
//!   the command that fixes it.

pub mod ports;
pub mod preflight;

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether this process runs as a user other than root.
pub fn unprivileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() != 0 }
}

/// A containerd in other namespaces than ours: its pid, and rootlesskit's
/// state directory when one is known (the port API lives there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineNs {
    /// containerd's socket.
    pub socket: PathBuf,
    /// The process that listens on it (pid in our pid namespace).
    pub pid: u32,
    /// rootlesskit's state directory (`api.sock`, `child_pid`).
    pub rootlesskit: Option<PathBuf>,
}

/// The pid of the process listening on the Unix socket `path`
/// (`SO_PEERCRED` of a connection: the credentials of the process that
/// called `listen`).
pub fn socket_owner(path: &Path) -> io::Result<u32> {
    let s = std::os::unix::net::UnixStream::connect(path)?;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt into a ucred of the size given; checked.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    if cred.pid <= 0 {
        return Err(io::Error::other(
            "the socket's owner is in no pid namespace we see",
        ));
    }
    Ok(cred.pid as u32)
}

/// The namespace `kind` (`user`, `mnt`, `net`) of a process, as the
/// kernel names it (`user:[4026531837]`).
pub fn ns_id(pid: &str, kind: &str) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok()
}

/// rootlesskit state directories where an engine's port API may be:
/// nixoci's private engine's, then nerdctl's layout.
pub fn rootlesskit_dirs(private_engine_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![private_engine_dir.join("rootlesskit")];
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        dirs.push(Path::new(&x).join("containerd-rootless"));
    }
    dirs
}

impl EngineNs {
    /// The namespaces of the containerd listening on `socket`, when they
    /// are not ours; `None` for a containerd in our user namespace (root's,
    /// or any we cannot see into).
    pub fn detect(socket: &Path, rootlesskit_dirs: &[PathBuf]) -> Option<EngineNs> {
        let pid = socket_owner(socket).ok()?;
        let theirs = ns_id(&pid.to_string(), "user")?;
        if Some(&theirs) == ns_id("self", "user").as_ref() {
            return None;
        }
        // The rootlesskit whose child shares containerd's user namespace.
        let rootlesskit = rootlesskit_dirs
            .iter()
            .find(|d| {
                std::fs::read_to_string(d.join("child_pid"))
                    .ok()
                    .and_then(|p| ns_id(p.trim(), "user"))
                    .as_ref()
                    == Some(&theirs)
            })
            .cloned();
        Some(EngineNs {
            socket: socket.to_path_buf(),
            pid,
            rootlesskit,
        })
    }

    /// Whether the engine process is still the one recorded.
    pub fn alive(&self) -> bool {
        ns_id(&self.pid.to_string(), "user").is_some()
    }

    /// rootlesskit's API socket, if this engine runs under a known one.
    pub fn api_socket(&self) -> Option<PathBuf> {
        self.rootlesskit.as_ref().map(|d| d.join("api.sock"))
    }

    /// A command that runs `program` inside the engine's user, mount and
    /// network namespaces (as root of the user namespace: the user itself,
    /// mapped). Paths are absolute there: the working directory becomes
    /// the namespace's root.
    pub fn command(&self, program: impl AsRef<OsStr>) -> io::Result<Command> {
        let open = |kind: &str| {
            File::open(format!("/proc/{}/ns/{kind}", self.pid)).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot open the {kind} namespace of the rootless containerd (pid {}): {e}; is it still running? (`nixoci engine status`)",
                        self.pid
                    ),
                )
            })
        };
        let fds = [
            (open("user")?, libc::CLONE_NEWUSER),
            (open("mnt")?, libc::CLONE_NEWNS),
            (open("net")?, libc::CLONE_NEWNET),
        ];
        let mut cmd = Command::new(program);
        cmd.current_dir("/");
        // SAFETY: only setns, an async-signal-safe system call, runs between
        // fork and exec; the forked child is single-threaded, as joining a
        // user namespace requires. The descriptors live as long as `cmd`.
        unsafe {
            cmd.pre_exec(move || {
                for (f, kind) in &fds {
                    if libc::setns(f.as_raw_fd(), *kind) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        Ok(cmd)
    }

    /// An unconnected IPv4 TCP socket of the engine's network namespace:
    /// a forked child joins the namespaces, makes it and hands it back over
    /// a socket pair (`SCM_RIGHTS`). A socket keeps the namespace it was
    /// made in, so any thread of nixoci may then connect it to a service.
    pub fn tcp_socket(&self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::{FromRawFd, OwnedFd};
        let user = File::open(format!("/proc/{}/ns/user", self.pid))?;
        let net = File::open(format!("/proc/{}/ns/net", self.pid))?;
        let mut sv = [0i32; 2];
        // SAFETY: socketpair into a two-element array; checked.
        if unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                0,
                sv.as_mut_ptr(),
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptors owned here.
        let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };
        // Everything the child touches is made before the fork: after it,
        // the child only makes system calls (it is a copy of a
        // multithreaded process) and leaves with _exit.
        let mut byte = [0u8; 1];
        let mut cmsg = [0u64; 4];
        let cmsg_len = unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) } as usize;
        let (user_fd, net_fd, their_fd) = (user.as_raw_fd(), net.as_raw_fd(), theirs.as_raw_fd());
        // SAFETY: fork; the child runs only async-signal-safe system calls
        // on memory prepared above, then _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            unsafe {
                if libc::setns(user_fd, libc::CLONE_NEWUSER) != 0
                    || libc::setns(net_fd, libc::CLONE_NEWNET) != 0
                {
                    libc::_exit(1);
                }
                let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                if s < 0 {
                    libc::_exit(2);
                }
                let mut iov = libc::iovec {
                    iov_base: byte.as_mut_ptr() as *mut libc::c_void,
                    iov_len: 1,
                };
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = &mut iov;
                msg.msg_iovlen = 1;
                msg.msg_control = cmsg.as_mut_ptr() as *mut libc::c_void;
                msg.msg_controllen = cmsg_len;
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as usize;
                std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut i32, s);
                if libc::sendmsg(their_fd, &msg, 0) != 1 {
                    libc::_exit(3);
                }
                libc::_exit(0);
            }
        }
        drop(theirs);
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            return Err(io::Error::other(format!(
                "could not make a socket in the rootless engine's network (pid {}): step {} failed",
                self.pid,
                libc::WEXITSTATUS(status)
            )));
        }
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr() as *mut libc::c_void,
            iov_len: 1,
        };
        // SAFETY: recvmsg into the buffers above; the descriptor it carries
        // is read only when the kernel says one arrived.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cmsg.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = cmsg_len;
            if libc::recvmsg(ours.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) != 1 {
                return Err(io::Error::last_os_error());
            }
            let c = libc::CMSG_FIRSTHDR(&msg);
            if c.is_null() || (*c).cmsg_type != libc::SCM_RIGHTS {
                return Err(io::Error::other(
                    "no socket came back from the rootless engine's network",
                ));
            }
            let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const i32);
            Ok(OwnedFd::from_raw_fd(fd))
        }
    }

    /// A command that runs this very program (nixoci) inside the engine's
    /// namespaces, as the hidden helper `nixoci __in-engine ARGS`.
    pub fn helper(&self) -> io::Result<Command> {
        let exe = std::env::current_exe()?;
        let mut cmd = self.command(exe)?;
        cmd.arg(HELPER);
        Ok(cmd)
    }

    /// Run the helper with `args`; its stdout, or an error with its stderr.
    pub fn run_helper(&self, args: &[&OsStr]) -> io::Result<String> {
        let out = self.helper()?.args(args).output()?;
        if !out.status.success() {
            return Err(io::Error::other(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Where a rootless engine's containers can be limited: the cgroup (v2,
/// relative to the cgroup root) below which their cgroups go, when the
/// user was delegated the memory and cpu controllers there (systemd's
/// `Delegate=yes`); else why not. cgroup v1 delegates nothing to users.
pub fn cgroup_limits(ns: &EngineNs) -> Result<String, String> {
    cgroup_limits_in(Path::new("/sys/fs/cgroup"), ns.pid)
}

fn cgroup_limits_in(root: &Path, pid: u32) -> Result<String, String> {
    if !root.join("cgroup.controllers").is_file() {
        return Err("this host has cgroup v1, which gives a user no cgroups of their own".into());
    }
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|e| e.to_string())?;
    let own = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("the engine is in no cgroup v2 group")?
        .trim();
    // The engine's cgroup has processes, so containers go beside it.
    let parent = Path::new(own).parent().unwrap_or(Path::new("/"));
    let dir = root.join(parent.strip_prefix("/").unwrap_or(parent));
    let controllers =
        std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
    let writable = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map(|c| unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0)
        .unwrap_or(false);
    if writable && has("memory") && has("cpu") {
        Ok(parent.display().to_string())
    } else {
        Err(format!(
            "the memory and cpu controllers are not delegated to this user at {} (with systemd: `Delegate=cpu memory` for user@.service)",
            dir.display()
        ))
    }
}

/// In a new engine's mount namespace, before containerd starts: what
/// rootlesskit copied up from the host's `/run` as links to the host's
/// own files is unlinked (only the links; the host's files stay), so the
/// engine makes its own: `/run/containerd` (shim sockets, runc state)
/// and `/run/xtables.lock` (iptables'), which a root containerd or
/// iptables on the host leave root's. As `containerd-rootless.sh` does.
pub fn prepare_engine_namespace() {
    for p in ["/run/containerd", "/run/xtables.lock"] {
        if std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()) {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The hidden subcommand of the helper (see [`EngineNs::helper`]).
pub const HELPER: &str = "__in-engine";

/// In the calling thread (a thread of its own, or the helper inside the
/// engine's namespaces): a new network namespace, bind-mounted at `path`
/// so it outlives the thread.
pub fn make_netns_here(path: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    File::create(path)?;
    let target = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("NUL in a path"))?;
    let src = std::ffi::CString::new("/proc/thread-self/ns/net").expect("no NUL");
    // SAFETY: unshare and mount with valid C strings; the namespace is the
    // calling thread's alone, which ends right after.
    let r = unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            -1
        } else {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        }
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

/// Unmount a network namespace made by [`make_netns_here`] and remove its
/// file.
pub fn remove_netns_here(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(p) = std::ffi::CString::new(path.as_os_str().as_bytes()) {
        // SAFETY: umount2 with a valid C string.
        unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
    }
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_containerd_in_our_user_namespace_is_not_rootless() {
        // A socket this process listens on: same user namespace.
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert_eq!(socket_owner(&sock).unwrap(), std::process::id());
        assert_eq!(EngineNs::detect(&sock, &[]), None);
        assert!(socket_owner(&d.path().join("none.sock")).is_err());
    }
}
