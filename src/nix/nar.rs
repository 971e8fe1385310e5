//! The NAR serialisation's SHA-256, as Nix computes a path's `narHash`:
//! used for the locked hash of a `path:` flake's source, which Nix does not
//! print during evaluation.

use super::hash::Sha256;
use sha2::{Digest as _, Sha256 as Hasher};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The hash of `path`'s NAR serialisation (directories, regular files with
/// the executable bit, symlinks), as `nix hash path` computes it.
pub fn nar_hash(path: &Path) -> io::Result<Sha256> {
    let mut h = Hasher::new();
    string(&mut h, b"nix-archive-1");
    node(&mut h, path)?;
    Ok(Sha256(h.finalize().into()))
}

fn string(h: &mut Hasher, s: &[u8]) {
    h.update((s.len() as u64).to_le_bytes());
    h.update(s);
    let pad = (8 - s.len() % 8) % 8;
    h.update(&[0u8; 8][..pad]);
}

fn node(h: &mut Hasher, path: &Path) -> io::Result<()> {
    let md = std::fs::symlink_metadata(path)?;
    string(h, b"(");
    string(h, b"type");
    let ft = md.file_type();
    if ft.is_symlink() {
        string(h, b"symlink");
        string(h, b"target");
        string(h, std::fs::read_link(path)?.as_os_str().as_bytes());
    } else if ft.is_file() {
        string(h, b"regular");
        if md.permissions().mode() & 0o100 != 0 {
            string(h, b"executable");
            string(h, b"");
        }
        string(h, b"contents");
        let len = md.len();
        h.update(len.to_le_bytes());
        let mut f = std::fs::File::open(path)?;
        let mut buf = vec![0u8; 1 << 16];
        let mut seen = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            seen += n as u64;
            h.update(&buf[..n]);
        }
        if seen != len {
            return Err(io::Error::other(format!(
                "{} changed size while being hashed",
                path.display()
            )));
        }
        let pad = ((8 - len % 8) % 8) as usize;
        h.update(&[0u8; 8][..pad]);
    } else if ft.is_dir() {
        string(h, b"directory");
        let mut names: Vec<_> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            string(h, b"entry");
            string(h, b"(");
            string(h, b"name");
            string(h, name.as_bytes());
            string(h, b"node");
            node(h, &path.join(&name))?;
            string(h, b")");
        }
    } else {
        return Err(io::Error::other(format!(
            "{}: Nix cannot serialise this kind of file (a socket, device or fifo)",
            path.display()
        )));
    }
    string(h, b")");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Our hash equals `nix hash path`'s on a tree with every kind of entry
    /// and contents of lengths around the 8-byte padding.
    #[test]
    fn equals_nix_hash_path() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("src");
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        for n in 0..10 {
            std::fs::write(root.join(format!("f{n}")), "x".repeat(n * 3)).unwrap();
        }
        std::fs::write(root.join("sub/run"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(root.join("sub/run"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink("../f1", root.join("sub/link")).unwrap();
        std::fs::write(root.join("B"), "upper case sorts first").unwrap();
        let ours = nar_hash(&root).unwrap();
        let Ok(out) = std::process::Command::new("nix")
            .args([
                "--extra-experimental-features",
                "nix-command",
                "hash",
                "path",
                "--type",
                "sha256",
            ])
            .arg(&root)
            .output()
        else {
            return; // no Nix here: the SBOM tests of tests/build.rs use it
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(ours.sri(), String::from_utf8_lossy(&out.stdout).trim());
        std::fs::write(root.join("f0"), "changed").unwrap();
        assert_ne!(nar_hash(&root).unwrap(), ours);
    }
}
