//! The Nix daemon, as a user without root needs it: multi-user Nix is how
//! such a user builds (Nix talks to the daemon when the store is not the
//! user's to write). When a build fails for want of it, the error says so
//! and what fixes it.

use std::io;
use std::path::{Path, PathBuf};

/// Where the Nix daemon listens (Nix's own override, else its default).
pub fn nix_daemon_socket() -> PathBuf {
    match std::env::var_os("NIX_DAEMON_SOCKET_PATH") {
        Some(v) if !v.is_empty() => v.into(),
        _ => "/nix/var/nix/daemon-socket/socket".into(),
    }
}

/// Why this user cannot build, when they need the Nix daemon (the store
/// is not theirs to write) and it does not answer: the check, what was
/// found and the command that fixes it.
pub fn unreachable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return None;
    }
    // Nix picks the daemon when the store is not the user's (`auto`); a
    // store the user owns (single-user Nix) needs none.
    let remote = std::env::var("NIX_REMOTE").unwrap_or_default();
    if remote.is_empty() && writable(Path::new("/nix/var/nix/db")) {
        return None;
    }
    if !remote.is_empty() && remote != "daemon" && !remote.starts_with("unix://") {
        return None;
    }
    let sock = match remote.strip_prefix("unix://") {
        Some(p) => PathBuf::from(p),
        None => nix_daemon_socket(),
    };
    match std::os::unix::net::UnixStream::connect(&sock) {
        Ok(_) => None,
        Err(e) => {
            let name = std::env::var("USER").unwrap_or_else(|_| "$USER".into());
            let fix = match e.kind() {
                io::ErrorKind::PermissionDenied => format!(
                    "sudo usermod -aG nix-users {name}, then log in again (the socket's directory admits that group)"
                ),
                _ => "start the daemon: `sudo systemctl start nix-daemon`, or where there is no init system, as root: `nix-daemon &` (scripts/setup.sh does this)".to_string(),
            };
            Some(format!(
                "check 'nix daemon' failed: no Nix daemon answers at {} ({e}); a user without root builds through it\n  fix: {fix}",
                sock.display()
            ))
        }
    }
}

fn writable(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: access with a valid C string.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}
