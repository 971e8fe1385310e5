//! What a rootless engine needs of the machine, checked before it starts:
//! each failure names the check, what was found and the command that
//! fixes it. The files and devices read can be pointed elsewhere
//! (`$NIXOCI_SUBUID_FILE`, `$NIXOCI_SUBGID_FILE`, `$NIXOCI_PROC_SYS`,
//! `$NIXOCI_TUN_DEVICE`), which is how
//! the tests provoke each failure without touching the machine.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A failed check.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("rootless check '{check}' failed: {found}\n  fix: {fix}")]
pub struct Failed {
    pub check: &'static str,
    pub found: String,
    pub fix: String,
}

fn env_path(var: &str, default: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => v.into(),
        _ => default.into(),
    }
}

/// This user's name (from the password database) and uid.
pub fn whoami() -> (String, u32) {
    // SAFETY: getuid has no preconditions; getpwuid's result is read at
    // once, before any other call could reuse its buffer.
    unsafe {
        let uid = libc::getuid();
        let pw = libc::getpwuid(uid);
        let name = if pw.is_null() || (*pw).pw_name.is_null() {
            uid.to_string()
        } else {
            std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned()
        };
        (name, uid)
    }
}

/// The number of subordinate ids `/etc/subuid`-style `text` grants
/// `name` (or `uid`).
pub fn subordinate_ids(text: &str, name: &str, uid: u32) -> u64 {
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (who, _start, count) = (f.next()?, f.next()?, f.next()?);
            (who == name || who == uid.to_string())
                .then(|| count.trim().parse::<u64>().ok())
                .flatten()
        })
        .sum()
}

fn check_subids(kind: &'static str, var: &str, default: &str) -> Result<(), Failed> {
    let (name, uid) = whoami();
    let file = env_path(var, default);
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    // 65536: enough for the ids images use (nobody is 65534).
    let n = subordinate_ids(&text, &name, uid);
    if n >= 65536 {
        return Ok(());
    }
    let flag = if kind == "subuid" {
        "--add-subuids"
    } else {
        "--add-subgids"
    };
    Err(Failed {
        check: if kind == "subuid" {
            "subordinate uids"
        } else {
            "subordinate gids"
        },
        found: format!(
            "{} grants user {name} (uid {uid}) {n} subordinate ids; a rootless engine needs 65536",
            file.display()
        ),
        fix: format!(
            "sudo usermod {flag} {lo}-{hi} {name}   (a range no other user has)",
            lo = 100000 + u64::from(uid) * 65536,
            hi = 100000 + u64::from(uid) * 65536 + 65535
        ),
    })
}

/// A program on `$PATH`.
pub fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn check_program(program: &str, package: &str) -> Result<PathBuf, Failed> {
    on_path(program).ok_or_else(|| Failed {
        check: "programs",
        found: format!("`{program}` is not on $PATH"),
        fix: format!("sudo apt-get install {package}"),
    })
}

fn check_userns() -> Result<(), Failed> {
    let sys = env_path("NIXOCI_PROC_SYS", "/proc/sys");
    let read = |p: &str| {
        std::fs::read_to_string(sys.join(p))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let fix = "sudo sysctl -w kernel.unprivileged_userns_clone=1 user.max_user_namespaces=28633 (and the same lines in /etc/sysctl.d/ to keep them)";
    if read("kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return Err(Failed {
            check: "user namespaces",
            found: format!(
                "unprivileged user namespaces are disabled ({} is 0)",
                sys.join("kernel/unprivileged_userns_clone").display()
            ),
            fix: fix.into(),
        });
    }
    if read("user/max_user_namespaces").as_deref() == Some("0") {
        return Err(Failed {
            check: "user namespaces",
            found: format!(
                "user namespaces are disabled ({} is 0)",
                sys.join("user/max_user_namespaces").display()
            ),
            fix: fix.into(),
        });
    }
    // And for real: a child that makes one.
    let mut cmd = Command::new("/bin/true");
    // SAFETY: only unshare, a system call, between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match cmd.stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(Failed {
            check: "user namespaces",
            found: format!("a process could not run in a new user namespace ({s})"),
            fix: fix.into(),
        }),
        Err(e) => Err(Failed {
            check: "user namespaces",
            found: format!("this user cannot make a user namespace: {e} (an AppArmor or SELinux policy, or a sysctl, forbids it)"),
            fix: format!("{fix}; on Ubuntu 24.04 and later also: sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"),
        }),
    }
}

fn check_tun() -> Result<(), Failed> {
    let dev = env_path("NIXOCI_TUN_DEVICE", "/dev/net/tun");
    match std::fs::OpenOptions::new().read(true).write(true).open(&dev) {
        Ok(_) => Ok(()),
        Err(e) => Err(Failed {
            check: "tun device",
            found: format!(
                "{} cannot be opened by this user ({e}); slirp4netns gives the engine its network through it",
                dev.display()
            ),
            fix: format!(
                "sudo chmod 0666 {}   (as distributions ship it)",
                dev.display()
            ),
        }),
    }
}

/// Everything a rootless engine needs before it starts, first failure
/// first.
pub fn engine() -> Result<(), Failed> {
    check_program("rootlesskit", "rootlesskit")?;
    check_program("slirp4netns", "slirp4netns")?;
    check_program("newuidmap", "uidmap")?;
    check_program("newgidmap", "uidmap")?;
    check_subids("subuid", "NIXOCI_SUBUID_FILE", "/etc/subuid")?;
    check_subids("subgid", "NIXOCI_SUBGID_FILE", "/etc/subgid")?;
    check_userns()?;
    check_tun()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_by_name_or_uid() {
        let text = "dev:100000:65536\n1001:200000:1000\n1001:300000:70000\nother:1:2\nbroken\n";
        assert_eq!(subordinate_ids(text, "dev", 1000), 65536);
        assert_eq!(subordinate_ids(text, "x", 1001), 71000);
        assert_eq!(subordinate_ids(text, "nobody", 5), 0);
    }
}
