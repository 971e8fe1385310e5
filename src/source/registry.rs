//! Pulling an image from a registry into sinks (containerd): the index
//! resolved to this platform's manifest, the config read, each layer the
//! sinks lack streamed from the registry into them, then the image
//! recorded (and, for containerd, unpacked).

use crate::oci::reference::ImageRef;
use crate::oci::Digest;
use crate::oci::ImageRecord;
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
) -> Result<ImageRecord, PullError> {
    let r = pull_inner(reference, client, sinks);
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

fn pull_inner(
    reference: &ImageRef,
    client: &Client,
    sinks: &[&dyn BlobSink],
) -> Result<ImageRecord, PullError> {
    let invalid = |why: String| PullError::Invalid {
        reference: reference.to_string(),
        why,
    };
    let want = reference
        .digest
        .clone()
        .unwrap_or_else(|| reference.tag_or_latest().to_string());
    let origin = PathBuf::from(reference.to_string());
    let (mut media_type, mut bytes) = client.get_manifest(&want)?;
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
        let entry = documents::pick_platform(&origin, &index)?;
        (media_type, bytes) = client.get_manifest(&entry.digest.to_string())?;
        expected = Some(entry.digest);
    }
    store_documents(
        &origin,
        reference.clone(),
        media_type,
        bytes,
        expected.as_ref(),
        sinks,
        |d| {
            let mut config_bytes = Vec::new();
            client
                .get_blob(&d.to_string())?
                .take(16 << 20)
                .read_to_end(&mut config_bytes)
                .map_err(|e| invalid(format!("reading the config: {e}")))?;
            Ok(config_bytes)
        },
        |d| Ok::<Box<dyn Read>, PullError>(Box::new(client.get_blob(&d.to_string())?)),
    )
}
