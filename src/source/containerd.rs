//! Reading an image out of containerd's content store into sinks (for
//! `nixoci push containerd:REF`): the image record's manifest (this
//! platform's, from an index), its config, and each layer the sinks lack,
//! streamed from `content.Read`.

use crate::containerd::{content, images, Client, ContainerdError, REFERRER_LABEL};
use crate::oci::reference::ImageRef;
use crate::oci::Digest;
use crate::oci::{ImageRecord, Platform};
use crate::sink::BlobSink;
use crate::source::{documents, store_documents, LoadError};
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::ReadContentRequest;
use std::io::Read;
use std::path::Path;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("containerd image {name}: {why}")]
    Invalid { name: String, why: String },
}

/// A blob of the content store as a `Read`, fed by a task.
struct BlobReader {
    rx: mpsc::Receiver<Result<Vec<u8>, String>>,
    buf: Vec<u8>,
    at: usize,
}

impl Read for BlobReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.buf.len() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(chunk)) => {
                    self.buf = chunk;
                    self.at = 0;
                }
                Some(Err(e)) => return Err(std::io::Error::other(e)),
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn reader(rt: &Handle, c: &Client, digest: &str) -> BlobReader {
    let (tx, rx) = mpsc::channel(4);
    let c = c.clone();
    let digest = digest.to_string();
    rt.spawn(async move {
        let mut cs = ContentClient::new(c.channel.clone());
        let req = c.req(ReadContentRequest {
            digest: digest.clone(),
            offset: 0,
            size: 0,
        });
        let mut stream = match cs.read(req).await {
            Ok(s) => s.into_inner(),
            Err(s) => {
                let _ = tx
                    .send(Err(format!("read {digest}: {}", s.message())))
                    .await;
                return;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(m)) => {
                    if tx.send(Ok(m.data)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(s) => {
                    let _ = tx
                        .send(Err(format!("read {digest}: {}", s.message())))
                        .await;
                    return;
                }
            }
        }
    });
    BlobReader {
        rx,
        buf: Vec::new(),
        at: 0,
    }
}

/// Put the image `name` of the client's namespace into `sinks` (aborted on
/// error). Called from outside the runtime.
pub fn export(
    rt: &Handle,
    c: &Client,
    reference: &ImageRef,
    sinks: &[&dyn BlobSink],
    want: Option<&Platform>,
) -> Result<ImageRecord, ExportError> {
    let r = export_inner(rt, c, reference, sinks, want);
    if r.is_err() {
        for s in sinks {
            s.abort();
        }
    }
    r
}

/// The image manifest `reference` names in the namespace (this machine's
/// platform, from an index): (media type, bytes, digest).
fn resolve(
    rt: &Handle,
    c: &Client,
    reference: &ImageRef,
    want: Option<&Platform>,
) -> Result<(String, Vec<u8>, Digest), ExportError> {
    let name = reference.to_string();
    let invalid = |why: String| ExportError::Invalid {
        name: name.clone(),
        why,
    };
    let image = rt.block_on(images::get(c, &name))?.ok_or_else(|| {
        invalid(format!(
            "not in namespace '{}' (see `nixoci images ls`)",
            c.namespace
        ))
    })?;
    let target = image.target.ok_or_else(|| invalid("no target".into()))?;
    let mut media_type = target.media_type.clone();
    let mut bytes = rt.block_on(content::read_all(c, &target.digest))?;
    let origin = Path::new(&name);
    let mut expected = Digest::parse(&target.digest).map_err(|e| invalid(e.to_string()))?;
    if documents::is_index(&media_type) {
        let index = documents::parse_index(
            origin,
            "the index",
            &documents::verified(origin, "index", &expected, bytes)?,
        )?;
        let entry = documents::pick_platform(origin, &index, want)?;
        media_type = entry.media_type;
        bytes = rt.block_on(content::read_all(c, &entry.digest.to_string()))?;
        expected = entry.digest;
    }
    Ok((media_type, bytes, expected))
}

/// The referrers nixoci keeps for manifest `subject` in the content
/// store (named by GC labels on it), each checked against its digest.
fn stored_referrers(
    rt: &Handle,
    c: &Client,
    origin: &Path,
    subject: &Digest,
) -> Result<Vec<crate::oci::Referrer>, ExportError> {
    let Some(info) = rt.block_on(content::info(c, subject))? else {
        return Ok(Vec::new());
    };
    let mut listed: Vec<(u64, Digest)> = info
        .labels
        .iter()
        .filter_map(|(k, v)| {
            let i = k.strip_prefix(REFERRER_LABEL)?.parse().ok()?;
            Some((i, Digest::parse(v).ok()?))
        })
        .collect();
    listed.sort();
    let mut out = Vec::new();
    for (_, d) in listed {
        let bytes = rt.block_on(content::read_all(c, &d.to_string()))?;
        let blob = crate::oci::Blob {
            media_type: crate::oci::blob::MANIFEST_MEDIA_TYPE.into(),
            digest: d,
            size: bytes.len() as u64,
        };
        if let Some(r) = documents::read_referrer(origin, subject, &blob, bytes, |b| {
            Ok::<_, ExportError>(rt.block_on(content::read_all(c, &b.to_string()))?)
        })? {
            out.push(r);
        }
    }
    Ok(out)
}

/// The manifest `reference` names and its referrers, with no layer read
/// (for `nixoci sbom`).
pub fn referrers(
    rt: &Handle,
    c: &Client,
    reference: &ImageRef,
    want: Option<&Platform>,
) -> Result<(Digest, Vec<crate::oci::Referrer>), ExportError> {
    let (_, _, digest) = resolve(rt, c, reference, want)?;
    let name = reference.to_string();
    let refs = stored_referrers(rt, c, Path::new(&name), &digest)?;
    Ok((digest, refs))
}

fn export_inner(
    rt: &Handle,
    c: &Client,
    reference: &ImageRef,
    sinks: &[&dyn BlobSink],
    want: Option<&Platform>,
) -> Result<ImageRecord, ExportError> {
    let name = reference.to_string();
    let origin = Path::new(&name);
    let (media_type, bytes, expected) = resolve(rt, c, reference, want)?;
    let referrers = stored_referrers(rt, c, origin, &expected)?;
    store_documents(
        origin,
        reference.clone(),
        media_type,
        bytes,
        Some(&expected),
        referrers,
        sinks,
        |d| Ok::<_, ExportError>(rt.block_on(content::read_all(c, &d.to_string()))?),
        |d| Ok::<Box<dyn Read>, ExportError>(Box::new(reader(rt, c, &d.to_string()))),
    )
}

/// The platforms an image of the content store has: those its index
/// lists, or its config's (for `nixoci images ls`). Unreadable content
/// gives none.
pub fn image_platforms(rt: &Handle, c: &Client, media_type: &str, digest: &str) -> Vec<Platform> {
    let Ok(bytes) = rt.block_on(content::read_all(c, digest)) else {
        return Vec::new();
    };
    let origin = Path::new(digest);
    if documents::is_index(media_type) {
        return documents::parse_index(origin, "index", &bytes)
            .map(|i| {
                i.manifests()
                    .iter()
                    .filter_map(|m| m.platform().as_ref())
                    .map(Platform::from_oci)
                    .collect()
            })
            .unwrap_or_default();
    }
    let Ok((config, _)) = documents::manifest_blobs(origin, &bytes) else {
        return Vec::new();
    };
    rt.block_on(content::read_all(c, &config.digest.to_string()))
        .ok()
        .and_then(|b| documents::parse_config(origin, &b).ok())
        .map(|cfg| vec![documents::platform_of(&cfg)])
        .unwrap_or_default()
}
