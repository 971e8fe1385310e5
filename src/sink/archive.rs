//! `oci-archive:FILE` (a tar of an OCI layout) and `docker-archive:FILE`
//! (what `docker save` writes and `docker load` reads: `manifest.json`, the
//! config, and one uncompressed `<id>/layer.tar` per layer).
//!
//! Blobs are staged in a directory beside FILE; the archive is written to a
//! temporary name and renamed over FILE at the end, so a failed build leaves
//! neither a partial archive nor the staging directory.

use super::oci_dir::{check_output_path, tmp_name, OciDir, CONTAINERD_NAME, REF_NAME};
use super::{BlobSink, BlobWriter, ImageRecord, IndexRecord, LayerForm, SinkError};
use crate::image::tar::TarWriter;
use crate::oci::blob::{canonical_json, INDEX_MEDIA_TYPE};
use crate::oci::digest::Digest;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    Oci,
    Docker,
}

pub struct ArchiveSink {
    kind: ArchiveKind,
    path: PathBuf,
    staging: OciDir,
    mtime: u64,
}

impl ArchiveSink {
    pub fn open(kind: ArchiveKind, path: &Path, mtime: u64) -> Result<Self, SinkError> {
        check_output_path(path)?;
        if path.is_dir() {
            return Err(SinkError::Invalid(format!(
                "{} is a directory; an archive output is a file path",
                path.display()
            )));
        }
        let staging_path = tmp_name(&path.with_extension("nixoci-staging"));
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(SinkError::io(parent))?;
        }
        let form = match kind {
            ArchiveKind::Oci => LayerForm::Compressed,
            ArchiveKind::Docker => LayerForm::Uncompressed,
        };
        Ok(ArchiveSink {
            kind,
            path: path.into(),
            staging: OciDir::open(&staging_path, form)?,
            mtime,
        })
    }

    fn blob(
        &self,
        tar: &mut TarWriter<impl Write>,
        name: &[u8],
        d: &Digest,
        buf: &mut [u8],
    ) -> Result<(), SinkError> {
        let p = self.staging.blob_path(d);
        let mut f = File::open(&p).map_err(SinkError::io(&p))?;
        let size = f.metadata().map_err(SinkError::io(&p))?.len();
        tar.file(name, 0o644, size, &mut f, buf)
            .map_err(SinkError::io(&self.path))
    }

    fn write(&self, image: &ImageRecord, out: &mut TarWriter<impl Write>) -> Result<(), SinkError> {
        match self.kind {
            ArchiveKind::Oci => self.write_oci(
                &image.reference,
                &image.manifest,
                Some(&image.platform),
                std::slice::from_ref(image),
                out,
            ),
            ArchiveKind::Docker => self.write_docker(image, out),
        }
    }

    /// An OCI layout as a tar: `top` (a manifest, or an index over
    /// `images`) under its name, the referrers of `images` beside it, and
    /// every blob they use.
    fn write_oci(
        &self,
        reference: &crate::oci::ImageRef,
        top: &crate::oci::Blob,
        platform: Option<&crate::oci::Platform>,
        images: &[ImageRecord],
        out: &mut TarWriter<impl Write>,
    ) -> Result<(), SinkError> {
        let io = |e| SinkError::Io {
            path: self.path.clone(),
            source: e,
        };
        let mut buf = vec![0u8; 1 << 20];
        let full = format!("{}:{}", reference.name(), reference.tag_or_latest());
        let mut entry = serde_json::json!({
            "mediaType": top.media_type,
            "digest": top.digest,
            "size": top.size,
            "annotations": { REF_NAME: reference.tag_or_latest(), CONTAINERD_NAME: full },
        });
        if let Some(p) = platform {
            entry["platform"] = p.to_json();
        }
        let mut manifests = vec![entry];
        // Referrers beside the image, with no ref.name, as in a layout.
        manifests.extend(
            images
                .iter()
                .flat_map(|i| &i.referrers)
                .map(|r| r.index_entry()),
        );
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": manifests,
        });
        out.file_bytes(b"oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(io)?;
        out.file_bytes(b"index.json", 0o644, &canonical_json(&index))
            .map_err(io)?;
        out.dir(b"blobs/", 0o755).map_err(io)?;
        out.dir(b"blobs/sha256/", 0o755).map_err(io)?;
        let mut digests: Vec<&Digest> = vec![&top.digest];
        for image in images {
            digests.extend(image.layers.iter().map(|l| &l.blob.digest));
            digests.push(&image.config.digest);
            digests.push(&image.manifest.digest);
            for r in &image.referrers {
                digests.push(&r.manifest.digest);
                digests.extend(r.blobs.iter().map(|(b, _)| &b.digest));
            }
        }
        digests.sort();
        digests.dedup();
        for d in digests {
            self.blob(
                out,
                format!("blobs/sha256/{}", d.hex()).as_bytes(),
                d,
                &mut buf,
            )?;
        }
        Ok(())
    }

    fn write_docker(
        &self,
        image: &ImageRecord,
        out: &mut TarWriter<impl Write>,
    ) -> Result<(), SinkError> {
        let io = |e| SinkError::Io {
            path: self.path.clone(),
            source: e,
        };
        let mut buf = vec![0u8; 1 << 20];
        let layers: Vec<String> = image
            .layers
            .iter()
            .map(|l| format!("{}/layer.tar", l.diff_id.hex()))
            .collect();
        let manifest = serde_json::json!([{
            "Config": format!("{}.json", image.config.digest.hex()),
            "RepoTags": [image.reference.familiar()],
            "Layers": layers,
        }]);
        out.file_bytes(b"manifest.json", 0o644, &canonical_json(&manifest))
            .map_err(io)?;
        let cfg = format!("{}.json", image.config.digest.hex());
        out.file_bytes(cfg.as_bytes(), 0o644, &image.config_bytes)
            .map_err(io)?;
        let mut seen = std::collections::BTreeSet::new();
        for l in &image.layers {
            if seen.insert(&l.diff_id) {
                out.dir(format!("{}/", l.diff_id.hex()).as_bytes(), 0o755)
                    .map_err(io)?;
                self.blob(
                    out,
                    format!("{}/layer.tar", l.diff_id.hex()).as_bytes(),
                    &l.diff_id,
                    &mut buf,
                )?;
            }
        }
        Ok(())
    }
}

impl ArchiveSink {
    /// Write the archive under a temporary name and rename it into place;
    /// the staging directory goes either way.
    fn write_file(
        &self,
        write: impl FnOnce(&mut TarWriter<BufWriter<File>>) -> Result<(), SinkError>,
    ) -> Result<(), SinkError> {
        let tmp = tmp_name(&self.path);
        let result = (|| {
            let f = File::create(&tmp).map_err(SinkError::io(&tmp))?;
            let mut tar = TarWriter::new(BufWriter::with_capacity(1 << 20, f), self.mtime);
            write(&mut tar)?;
            let w = tar.finish().map_err(SinkError::io(&tmp))?;
            w.into_inner().map_err(|e| SinkError::Io {
                path: tmp.clone(),
                source: e.into_error(),
            })?;
            fs::rename(&tmp, &self.path).map_err(SinkError::io(&self.path))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        let _ = fs::remove_dir_all(self.staging.root());
        result
    }
}

impl BlobSink for ArchiveSink {
    fn describe(&self) -> String {
        match self.kind {
            ArchiveKind::Oci => format!("oci-archive:{}", self.path.display()),
            ArchiveKind::Docker => format!("docker-archive:{}", self.path.display()),
        }
    }
    fn layer_form(&self) -> LayerForm {
        self.staging.layer_form()
    }
    fn has_blob(&self, digest: &Digest) -> bool {
        self.staging.has_blob(digest)
    }
    fn begin_blob(&self) -> Result<Box<dyn BlobWriter>, SinkError> {
        self.staging.begin_blob()
    }
    fn finish(&self, image: &ImageRecord) -> Result<(), SinkError> {
        self.write_file(|tar| self.write(image, tar))
    }
    fn finish_index(&self, index: &IndexRecord) -> Result<(), SinkError> {
        if self.kind == ArchiveKind::Docker {
            let _ = fs::remove_dir_all(self.staging.root());
            return Err(SinkError::Invalid(format!(
                "{} holds one platform (docker load reads no index); build one --system into it",
                self.describe()
            )));
        }
        self.staging
            .put_blob(&index.index.digest, &index.index_bytes)?;
        self.write_file(|tar| {
            self.write_oci(&index.reference, &index.index, None, &index.images, tar)
        })
    }
    fn abort(&self) {
        let _ = fs::remove_dir_all(self.staging.root());
    }
}

impl Drop for ArchiveSink {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(self.staging.root());
    }
}
