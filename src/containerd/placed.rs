//! Blobs placed straight into containerd's content directory, when it is
//! on this host and this process may write it (root, or the user of a
//! rootless engine): the bytes are written once, by nixoci, and containerd
//! is told about them with a commit that carries no data.
//!
//! Streaming a blob through `content.Write` costs containerd more than the
//! whole unpack: it receives every byte over gRPC, hashes it again and
//! writes it (measured on a cold import of the medium closure: 1.7 s of
//! containerd CPU for 255 MB of zstd layers, 4.5 s for 765 MB
//! uncompressed). containerd's metadata store shares content between
//! namespaces: a `Writer` opened with an expected digest that its content
//! directory already has commits without data (the blob is added to the
//! namespace, and to the lease). nixoci uses that:
//!
//! 1. the blob is written to an unnamed file (`O_TMPFILE`) in
//!    `blobs/sha256/` of containerd's content directory (named by
//!    containerd's introspection; nothing half-written is ever visible,
//!    and a killed build leaves nothing);
//! 2. on commit it is written out (`fdatasync`, as containerd does), made
//!    read-only (0444, as containerd does) and linked under its digest;
//! 3. one `content.Write` message, COMMIT with the expected digest and
//!    size at that offset, adds it to the namespace under the build's
//!    lease.
//!
//! containerd checks this itself: when its content directory does not
//! have the blob (another mount namespace, another containerd, or its
//! garbage collector took the unreferenced file in between), its writer is
//! not a shared one, and the commit is refused (the offset is not where
//! its empty ingest is). Then the blob is streamed the usual way, from the
//! same file, and every later blob of the build is streamed too.
//! `NIXOCI_CONTENT=stream` streams always.
//!
//! containerd does not hash a placed blob: the digest given to `commit`
//! must be that of the bytes written. Every caller's is: the pipeline's
//! digests are computed from the bytes as they are written, and loads and
//! pulls go through `copy_blob` (the sources' module), which verifies the bytes
//! against their digest before anything is committed.

use super::content::Upload;
use super::{Client, ContainerdError};
use crate::oci::digest::Digest;
use crate::util::direct::DirectFile;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::{WriteAction, WriteContentRequest};
use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::runtime::Handle;
use tonic::Code;

/// containerd's content directory, when blobs can be placed in it from
/// here: named by containerd (its content plugin's `root`), present in
/// this mount namespace, and writable by this process.
pub async fn content_dir(c: &Client) -> Option<PathBuf> {
    if std::env::var("NIXOCI_CONTENT").as_deref() == Ok("stream") {
        return None;
    }
    let root = super::plugin_root(c, "io.containerd.content.v1", "content").await?;
    if !root.join("ingest").is_dir() {
        return None;
    }
    let blobs = root.join("blobs").join("sha256");
    if fs::create_dir_all(&blobs).is_err() {
        return None;
    }
    let c =
        std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(blobs.as_os_str())).ok()?;
    // SAFETY: a valid C path.
    (unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0).then_some(root)
}

/// One blob being written into containerd's content directory.
pub struct PlacedBlob {
    out: DirectFile,
    blobs: PathBuf,
    rt: Handle,
    client: Client,
    sent: Arc<AtomicU64>,
    /// Set (for the whole build) once containerd did not see a placed blob.
    refused: Arc<AtomicBool>,
}

impl PlacedBlob {
    /// An unnamed file in `dir/blobs/sha256`.
    pub fn start(
        dir: &Path,
        rt: &Handle,
        client: &Client,
        sent: Arc<AtomicU64>,
        refused: Arc<AtomicBool>,
    ) -> io::Result<Self> {
        let blobs = dir.join("blobs").join("sha256");
        let out = DirectFile::tmpfile(&blobs, 0o644)?;
        Ok(PlacedBlob {
            out,
            blobs,
            rt: rt.clone(),
            client: client.clone(),
            sent,
            refused,
        })
    }

    /// Write the blob out, name it `digest`, and add it to containerd's
    /// namespace under the lease; streamed instead where containerd does
    /// not see it. Whether it was placed (not streamed).
    pub fn commit(self, digest: &Digest) -> Result<bool, ContainerdError> {
        let io_err = |what: &str, e: io::Error| {
            ContainerdError::Engine(format!(
                "{what} blob {digest} in containerd's content directory {}: {e}",
                self.blobs.display()
            ))
        };
        let size = self.out.size();
        let file = self.out.finish().map_err(|e| io_err("writing", e))?;
        file.sync_data().map_err(|e| io_err("writing out", e))?;
        file.set_permissions(fs::Permissions::from_mode(0o444))
            .map_err(|e| io_err("protecting", e))?;
        let target = self.blobs.join(digest.hex());
        let created = match crate::util::fs::link_open_file(&file, &target) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Content-addressed: the same bytes, unless damaged.
                let there = fs::symlink_metadata(&target).map_err(|e| io_err("checking", e))?;
                if there.size() != size {
                    return Err(ContainerdError::Engine(format!(
                        "containerd's content directory has a blob {} of {} bytes where {digest} has {}: the content store is damaged; remove that file and run again",
                        target.display(),
                        there.size(),
                        size
                    )));
                }
                false
            }
            Err(e) => return Err(io_err("naming", e)),
        };
        match self
            .rt
            .block_on(commit_in_place(&self.client, digest, size))
        {
            Ok(true) => {
                self.sent.fetch_add(size, Ordering::Relaxed);
                Ok(true)
            }
            Ok(false) => {
                // containerd does not see this directory's blob: stream it.
                self.refused.store(true, Ordering::Relaxed);
                if created {
                    let _ = fs::remove_file(&target);
                }
                stream(&self.rt, &self.client, &self.sent, file, digest).map(|()| false)
            }
            Err(e) => {
                if created {
                    let _ = fs::remove_file(&target);
                }
                Err(e)
            }
        }
    }
}

/// Send a blob's file through `content.Write`.
fn stream(
    rt: &Handle,
    client: &Client,
    sent: &Arc<AtomicU64>,
    mut file: fs::File,
    digest: &Digest,
) -> Result<(), ContainerdError> {
    let mut up = Upload::start(rt, client, Arc::clone(sent));
    let copied = (|| {
        file.rewind()?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok::<_, io::Error>(());
            }
            up.write_all(&buf[..n])?;
        }
    })();
    copied.map_err(|e| ContainerdError::Engine(format!("uploading {digest}: {e}")))?;
    up.commit(digest)
}

impl Write for PlacedBlob {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Commit `digest` of `size` bytes, already in containerd's content
/// directory, into the client's namespace and lease: one COMMIT message at
/// offset `size` with no data. `Ok(false)`: containerd did not find it
/// there (its writer is a new, empty ingest and refuses that offset).
pub async fn commit_in_place(c: &Client, d: &Digest, size: u64) -> Result<bool, ContainerdError> {
    let mut cs = ContentClient::new(c.channel.clone());
    let reference = super::unique_id("nixoci-placed");
    let size =
        i64::try_from(size).map_err(|_| ContainerdError::Engine(format!("{d}: too large")))?;
    let req = WriteContentRequest {
        action: WriteAction::Commit as i32,
        r#ref: reference.clone(),
        offset: size,
        total: size,
        expected: d.to_string(),
        ..Default::default()
    };
    let op = format!("content commit {d} in place");
    let stream = tokio_stream::iter([req]);
    let result = async {
        let mut responses = cs.write(c.req(stream)).await?.into_inner();
        while let Some(m) = responses.message().await? {
            if m.action == WriteAction::Commit as i32 {
                return Ok(true);
            }
        }
        Ok::<bool, tonic::Status>(false)
    }
    .await;
    match result {
        Ok(true) => Ok(true),
        Ok(false) => Err(ContainerdError::Engine(format!(
            "{op}: the stream ended before the blob was committed"
        ))),
        // In the namespace already: the writer leased it; lease it again
        // for containerd versions that answer before leasing.
        Err(s) if s.code() == Code::AlreadyExists => {
            super::images::lease_resource(c, &d.to_string(), "content").await?;
            Ok(true)
        }
        Err(s)
            if s.code() == Code::OutOfRange
                || (s.code() == Code::Unknown || s.code() == Code::FailedPrecondition)
                    && s.message().contains("size validation") =>
        {
            let mut cs = ContentClient::new(c.channel.clone());
            let _ = cs
                .abort(c.req(containerd_client::services::v1::AbortRequest { r#ref: reference }))
                .await;
            Ok(false)
        }
        Err(s) => Err(c.err(op)(s)),
    }
}
