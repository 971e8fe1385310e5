//! Pulling an image from a registry into sinks (containerd): the index
//! resolved to this platform's manifest, the config read, each layer the
//! sinks lack streamed from the registry into them, then the image
//! recorded (and, for containerd, unpacked).

use crate::oci::reference::ImageRef;
use crate::oci::Digest;
use crate::oci::{ImageRecord, Platform};
use crate::registry::{Client, Options, RegistryError};
use crate::sink::BlobSink;
use crate::source::{documents, store_documents, LoadError};
use std::io::Read;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{reference}: {why}")]
    Invalid { reference: String, why: String },
}

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Pull `reference` into `sinks` (they are aborted on error).
pub fn pull(
    reference: &ImageRef,
    client: &Client,
    sinks: &[&dyn BlobSink],
    want: Option<&Platform>,
) -> Result<ImageRecord, PullError> {
    let r = pull_inner(reference, client, sinks, want);
    if r.is_err() {
        for s in sinks {
            s.abort();
        }
    }
    r
}

/// A client for pulling, with `credentials` (from an `ImageSpec`) instead
/// of the Docker config's when given.
pub fn client(
    reference: &ImageRef,
    opts: &Options,
    credentials: Option<crate::registry::auth::Credentials>,
) -> Result<Client, RegistryError> {
    let mut c = Client::new(reference, opts, false)?;
    if credentials.is_some() {
        c.set_credentials(credentials);
    }
    Ok(c)
}

/// The image manifest `reference` names (this machine's platform, from
/// an index): (origin for messages, media type, bytes, digest). Bytes
/// fetched by digest are checked against it.
fn resolve(
    reference: &ImageRef,
    client: &Client,
    want: Option<&Platform>,
) -> Result<(PathBuf, String, Vec<u8>, Option<Digest>), PullError> {
    let invalid = |why: String| PullError::Invalid {
        reference: reference.to_string(),
        why,
    };
    let by = reference
        .digest
        .clone()
        .unwrap_or_else(|| reference.tag_or_latest().to_string());
    let origin = PathBuf::from(reference.to_string());
    let (mut media_type, mut bytes) = client.get_manifest(&by)?;
    // Fetched by digest: the bytes must be what the digest names.
    let mut expected = reference
        .digest
        .as_deref()
        .map(Digest::parse)
        .transpose()
        .map_err(|e| invalid(e.to_string()))?;
    if let Some(d) = &expected {
        bytes = documents::verified(&origin, "manifest", d, bytes)?;
    }
    if INDEX_TYPES.contains(&media_type.as_str()) {
        let index = documents::parse_index(&origin, "the index", &bytes)?;
        let entry = documents::pick_platform(&origin, &index, want)?;
        (media_type, bytes) = client.get_manifest(&entry.digest.to_string())?;
        expected = Some(entry.digest);
    }
    Ok((origin, media_type, bytes, expected))
}

/// Read a small blob whole (at most a document's size).
fn small_blob(client: &Client, d: &Digest, what: &str) -> Result<Vec<u8>, PullError> {
    let mut out = Vec::new();
    client
        .get_blob(&d.to_string())?
        .take(super::MAX_DOC)
        .read_to_end(&mut out)
        .map_err(|e| PullError::Invalid {
            reference: d.to_string(),
            why: format!("reading the {what}: {e}"),
        })?;
    Ok(out)
}

/// The referrers (SBOM, provenance, ...) of manifest `subject`, each
/// document checked against its digest.
fn fetch_referrers(
    origin: &std::path::Path,
    client: &Client,
    subject: &Digest,
) -> Result<Vec<crate::oci::Referrer>, PullError> {
    let mut out = Vec::new();
    for l in client.referrers(subject)? {
        let (_, bytes) = client.get_manifest(&l.digest.to_string())?;
        let blob = crate::oci::Blob {
            media_type: l.media_type,
            digest: l.digest,
            size: l.size,
        };
        if let Some(r) = documents::read_referrer(origin, subject, &blob, bytes, |d| {
            small_blob(client, d, "referrer blob")
        })? {
            out.push(r);
        }
    }
    Ok(out)
}

/// The manifest `reference` names and its referrers, with no layer read
/// (for `nixoci sbom`).
pub fn referrers(
    reference: &ImageRef,
    client: &Client,
    want: Option<&Platform>,
) -> Result<(Digest, Vec<crate::oci::Referrer>), PullError> {
    let (origin, _, bytes, expected) = resolve(reference, client, want)?;
    let digest = expected.unwrap_or_else(|| Digest::of(&bytes));
    let refs = fetch_referrers(&origin, client, &digest)?;
    Ok((digest, refs))
}

fn pull_inner(
    reference: &ImageRef,
    client: &Client,
    sinks: &[&dyn BlobSink],
    want: Option<&Platform>,
) -> Result<ImageRecord, PullError> {
    let (origin, media_type, bytes, expected) = resolve(reference, client, want)?;
    let subject = expected.clone().unwrap_or_else(|| Digest::of(&bytes));
    let referrers = fetch_referrers(&origin, client, &subject)?;
    store_documents(
        &origin,
        reference.clone(),
        media_type,
        bytes,
        expected.as_ref(),
        referrers,
        sinks,
        |d| small_blob(client, d, "config"),
        |d| Ok::<Box<dyn Read>, PullError>(Box::new(client.get_blob(&d.to_string())?)),
    )
}
