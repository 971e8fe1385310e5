//! The root layer: the root output's top-level entries linked into `/` (as
//! nixpkgs' `copyToRoot` does), `/tmp` (mode 1777), and a minimal
//! `/etc/passwd` and `/etc/group`.

use super::layer::{write_store_prefix, Emit};
use crate::nix::StorePath;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;

pub const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n";
pub const GROUP: &str = "root:x:0:\nnobody:x:65534:\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct RootLayerOptions {
    pub links: bool,
    pub tmp: bool,
    pub etc_passwd: bool,
}

impl Default for RootLayerOptions {
    fn default() -> Self {
        RootLayerOptions {
            links: true,
            tmp: true,
            etc_passwd: true,
        }
    }
}

impl RootLayerOptions {
    pub fn any(&self) -> bool {
        self.links || self.tmp || self.etc_passwd
    }
}

enum Node {
    Dir(u32),
    Link(Vec<u8>),
    File(&'static str),
}

/// The entries of the root layer, keyed by tar name (directories end in '/').
fn entries(root: &StorePath, opts: RootLayerOptions) -> io::Result<BTreeMap<Vec<u8>, Node>> {
    let mut out: BTreeMap<Vec<u8>, Node> = BTreeMap::new();
    let root_fs = root.to_path_buf();
    if opts.links && fs::symlink_metadata(&root_fs)?.is_dir() {
        for top in fs::read_dir(&root_fs)? {
            let top = top?;
            let name = top.file_name().as_bytes().to_vec();
            let target_of = |rel: &[u8]| {
                let mut t = root.to_string().into_bytes();
                t.push(b'/');
                t.extend_from_slice(rel);
                t
            };
            if top.file_type()?.is_dir() {
                let mut dir = name.clone();
                dir.push(b'/');
                out.insert(dir.clone(), Node::Dir(0o755));
                for child in fs::read_dir(top.path())? {
                    let child = child?;
                    let mut rel = dir.clone();
                    rel.extend_from_slice(child.file_name().as_bytes());
                    out.insert(rel.clone(), Node::Link(target_of(&rel)));
                }
            } else {
                out.insert(name.clone(), Node::Link(target_of(&name)));
            }
        }
    }
    if opts.tmp {
        // /tmp is a real directory even if the output has a top-level `tmp`.
        out.remove(b"tmp".as_slice());
        out.insert(b"tmp/".to_vec(), Node::Dir(0o1777));
    }
    if opts.etc_passwd {
        // The output's own /etc/passwd or /etc/group wins over ours.
        if out.contains_key(b"etc".as_slice()) {
            tracing::warn!(
                "{root} has a top-level `etc` that is not a directory; not writing /etc/passwd"
            );
        } else {
            out.entry(b"etc/".to_vec()).or_insert(Node::Dir(0o755));
            out.entry(b"etc/passwd".to_vec())
                .or_insert(Node::File(PASSWD));
            out.entry(b"etc/group".to_vec())
                .or_insert(Node::File(GROUP));
        }
    }
    Ok(out)
}

/// Write the root layer (without the end marker).
pub fn write_root_layer<E: Emit>(
    tar: &mut E,
    root: &StorePath,
    opts: RootLayerOptions,
) -> io::Result<()> {
    let entries = entries(root, opts)?;
    // `nix/` and `nix/store/` sort among the rest.
    let mut all: Vec<(&[u8], Option<&Node>)> = entries
        .iter()
        .map(|(k, v)| (k.as_slice(), Some(v)))
        .collect();
    all.push((b"nix/", None));
    all.sort_by(|a, b| a.0.cmp(b.0));
    for (name, node) in all {
        match node {
            None => write_store_prefix(tar)?,
            Some(Node::Dir(mode)) => tar.dir(name, *mode)?,
            Some(Node::Link(target)) => tar.symlink(name, target)?,
            Some(Node::File(text)) => tar.file_bytes(name, 0o644, text.as_bytes())?,
        }
    }
    Ok(())
}
