//! Unpacking an image's layers into a snapshotter: for each layer, the
//! snapshot named by its chain ID is looked up (`Stat`) and, when missing,
//! prepared on its parent, filled by `diff.Apply` (whose reported digest
//! must be the layer's diff_id) and committed.

use super::stage::{self, Staged, Stager};
use crate::containerd::{is_code, Client, ContainerdError};
use crate::image::layer::LayerContent;
use crate::oci::digest::Digest;
use crate::oci::LayerRecord;
use crate::sink::ReadyLayer;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::ApplyRequest;
use containerd_client::types::{Descriptor, Mount};
use tonic::Code;

/// The blobs committed (or found) in the content store so far: layers
/// reach the unpack as soon as their digests are known, and a layer that
/// containerd must apply itself waits here for its blob.
#[derive(Default)]
pub struct Committed {
    blobs: std::sync::Mutex<std::collections::HashSet<String>>,
    added: tokio::sync::Notify,
}

impl Committed {
    pub fn add(&self, d: &Digest) {
        self.blobs.lock().unwrap().insert(d.to_string());
        self.added.notify_waiters();
    }

    pub async fn wait(&self, d: &Digest) {
        let d = d.to_string();
        loop {
            let added = self.added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            if self.blobs.lock().unwrap().contains(&d) {
                return;
            }
            added.await;
        }
    }
}

/// What a layer's unpack may use besides containerd's differ.
#[derive(Default)]
pub struct From<'a> {
    /// The layer's entries and mtime, to fill its snapshot from the store.
    pub content: Option<(&'a LayerContent, u64)>,
    /// The blobs committed so far: containerd applies a blob once it is.
    pub committed: Option<&'a Committed>,
    /// The layer, filled ahead of the chain.
    pub staged: Option<Staged>,
    /// `staged` was extracted from the layer's blob (see [`super::extract`]).
    pub extracted: bool,
}

/// chain[0] = diff_id[0]; chain[i] = sha256(chain[i-1] + " " + diff_id[i]).
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct UnpackStats {
    /// Layers extracted by containerd's `diff.Apply`.
    pub applied: usize,
    /// Layers written into the prepared snapshot by nixoci (the fast path).
    pub filled: usize,
    /// Layers whose snapshot already existed.
    pub existing: usize,
    /// Store files of filled layers hard-linked into their snapshot (the
    /// same inode as the store's), and those copied.
    pub files_linked: usize,
    pub files_copied: usize,
    /// Store files of filled layers cloned (`FICLONE`) into their snapshot.
    pub files_cloned: usize,
    /// Filled layers that were filled ahead of the snapshot chain (see
    /// [`super::stage`]).
    pub staged: usize,
    /// Layers extracted by nixoci from their blobs as they arrived (a pull
    /// or a load; see [`super::extract`]).
    pub extracted: usize,
    /// Calls made to ask whether a snapshot exists (a run of layers that
    /// are unpacked already costs one).
    pub snapshot_lookups: usize,
}

/// How a layer got into its snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unpacked {
    Existing,
    Applied,
    Filled(super::fill::FillStats),
    Staged(super::fill::FillStats),
    Extracted,
}

pub async fn snapshot_exists(
    c: &Client,
    snapshotter: &str,
    key: &str,
) -> Result<bool, ContainerdError> {
    let mut ss = SnapshotsClient::new(c.channel.clone());
    let req = StatSnapshotRequest {
        snapshotter: snapshotter.into(),
        key: key.into(),
    };
    match ss.stat(c.req(req)).await {
        Ok(_) => Ok(true),
        Err(s) if s.code() == Code::NotFound => Ok(false),
        Err(s) => Err(c.err(format!("stat snapshot {key}"))(s)),
    }
}

/// Unpack `layers` (in order) into `snapshotter`. `c` should carry a lease.
pub async fn unpack(
    c: &Client,
    snapshotter: &str,
    layers: &[LayerRecord],
) -> Result<UnpackStats, ContainerdError> {
    let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
    let chains = chain_ids(&diff_ids);
    let mut stats = UnpackStats::default();
    for (i, layer) in layers.iter().enumerate() {
        let parent = if i == 0 { None } else { Some(&chains[i - 1]) };
        let how = ensure_layer(c, snapshotter, layer, &chains[i], parent, From::default()).await?;
        stats.snapshot_lookups += 1;
        stats.add(how);
    }
    Ok(stats)
}

impl UnpackStats {
    fn add(&mut self, how: Unpacked) {
        match how {
            Unpacked::Existing => self.existing += 1,
            Unpacked::Applied => self.applied += 1,
            Unpacked::Extracted => self.extracted += 1,
            Unpacked::Filled(f) | Unpacked::Staged(f) => {
                self.filled += 1;
                self.staged += usize::from(matches!(how, Unpacked::Staged(_)));
                self.files_linked += f.linked;
                self.files_copied += f.copied;
                self.files_cloned += f.cloned;
            }
        }
    }

    /// How many layers these stats account for.
    pub fn layers(&self) -> usize {
        self.applied + self.filled + self.existing + self.extracted
    }

    pub fn merge(&mut self, other: UnpackStats) {
        self.applied += other.applied;
        self.filled += other.filled;
        self.files_linked += other.files_linked;
        self.files_copied += other.files_copied;
        self.files_cloned += other.files_cloned;
        self.staged += other.staged;
        self.extracted += other.extracted;
        self.snapshot_lookups += other.snapshot_lookups;
    }
}

/// Make sure the snapshot `chain` exists: if not, unpack `layer` on
/// `parent`, filling the snapshot directly when `content` is known and the
/// snapshot is a local directory, else through `diff.Apply`.
pub async fn ensure_layer(
    c: &Client,
    snapshotter: &str,
    layer: &LayerRecord,
    chain: &Digest,
    parent: Option<&Digest>,
    from: From<'_>,
) -> Result<Unpacked, ContainerdError> {
    let chain = chain.to_string();
    // An existing snapshot is not leased (a write, with its fsync, per
    // layer): a snapshot made on it holds it, and the image's config
    // refers to the top one once every layer is in, after which the
    // caller checks that it is still there (`top_snapshot_kept`). New
    // snapshots are made under the client's lease.
    // A layer built now (staged) most likely has no snapshot: it is not
    // looked up; should one exist, the commit says so.
    if from.staged.is_none() && snapshot_exists(c, snapshotter, &chain).await? {
        return Ok(Unpacked::Existing);
    }
    let parent = parent.map(|p| p.to_string()).unwrap_or_default();
    apply_one(c, snapshotter, layer, &chain, &parent, from).await
}

/// After the config refers to the top snapshot of `diff_ids`: that it is
/// still there (an existing snapshot is not leased, see `ensure_layer`;
/// containerd's collector could have taken it before the reference).
pub async fn top_snapshot_kept(
    c: &Client,
    snapshotter: &str,
    diff_ids: &[Digest],
) -> Result<(), ContainerdError> {
    let Some(top) = chain_ids(diff_ids).last().map(|d| d.to_string()) else {
        return Ok(());
    };
    if snapshot_exists(c, snapshotter, &top).await? {
        Ok(())
    } else {
        Err(ContainerdError::Engine(format!(
            "containerd's garbage collector removed snapshot {top} while nixoci unpacked the image (something else deleted an image that used it at that moment): run the command again"
        )))
    }
}

/// Unpack layers as they arrive, in chain order: layer i is applied as soon
/// as it and every layer below it have arrived. Ends when all `total` are
/// applied or the sender is dropped.
pub async fn unpack_as_ready(
    c: Client,
    snapshotter: String,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<ReadyLayer>,
    committed: std::sync::Arc<Committed>,
    stager: Option<std::sync::Arc<Stager>>,
    extracted: stage::Extracted,
    planned: stage::Planned,
) -> Result<UnpackStats, ContainerdError> {
    let mut slots: Vec<Option<ReadyLayer>> = Vec::new();
    let mut staged: std::collections::HashMap<usize, Staged> = Default::default();
    let mut from_blob: std::collections::HashSet<usize> = Default::default();
    let mut chains: Vec<Digest> = Vec::new();
    let mut stats = UnpackStats::default();
    while let Some(ready) = rx.recv().await {
        let (i, total) = (ready.index, ready.total);
        if slots.len() < total {
            slots.resize(total, None);
        }
        // A layer built now is filled at once, ahead of the chain; one
        // from the cache most likely has its snapshot already.
        // (Or before it was built, when it was planned.)
        let ahead = planned.lock().unwrap().remove(&i);
        if let (Some(stager), Some(content), true) = (&stager, &ready.content, ready.built) {
            let fill = match ahead {
                Some(p) => p.staged,
                None => stager.stage(content.clone(), ready.mtime),
            };
            staged.insert(i, fill);
        } else if let Some(p) = ahead {
            tokio::spawn(p.discard());
        }
        // A layer that came as a blob may have been extracted already.
        if !ready.built {
            let dir = extracted
                .lock()
                .unwrap()
                .remove(&ready.record.blob.digest.to_string());
            if let Some(dir) = dir {
                let stats = super::fill::FillStats::default();
                staged.insert(i, tokio::spawn(async move { Ok((dir, stats)) }));
                from_blob.insert(i);
            }
        }
        slots[i] = Some(ready);
        // A run of layers that arrived unbuilt (from the layer cache, or
        // found in the content store) is most likely unpacked already. It
        // is looked up once it is whole (the layer above it has arrived, or
        // it is the top): its top snapshot first, and when that is there,
        // so is every snapshot below it (containerd removes no snapshot
        // that has children), and the run needs no call each.
        let mut run: Vec<Digest> = Vec::new();
        for (at, slot) in slots.iter().enumerate().skip(chains.len()) {
            let Some(next) = slot else { break };
            if next.built || staged.contains_key(&at) || from_blob.contains(&at) {
                break;
            }
            let chain = match run.last().or(chains.last()) {
                None => next.record.diff_id.clone(),
                Some(prev) => Digest::of(format!("{prev} {}", next.record.diff_id).as_bytes()),
            };
            run.push(chain);
        }
        let above = chains.len() + run.len();
        if !run.is_empty() && above < total && slots[above].is_none() {
            continue;
        }
        if let Some(top) = run.last() {
            stats.snapshot_lookups += 1;
            if snapshot_exists(&c, &snapshotter, &top.to_string()).await? {
                stats.existing += run.len();
                chains.extend(run);
            }
        }
        while let Some(Some(next)) = slots.get(chains.len()) {
            let layer = &next.record;
            let chain = match chains.last() {
                None => layer.diff_id.clone(),
                Some(prev) => Digest::of(format!("{prev} {}", layer.diff_id).as_bytes()),
            };
            let content = next.content.as_ref().map(|c| (c, next.mtime));
            let from = From {
                content,
                committed: Some(&committed),
                staged: staged.remove(&chains.len()),
                extracted: from_blob.remove(&chains.len()),
            };
            stats.snapshot_lookups += usize::from(from.staged.is_none());
            let how = ensure_layer(&c, &snapshotter, layer, &chain, chains.last(), from).await?;
            stats.add(how);
            chains.push(chain);
        }
        if chains.len() == total {
            break;
        }
    }
    Ok(stats)
}

async fn apply_one(
    c: &Client,
    snapshotter: &str,
    layer: &LayerRecord,
    chain: &str,
    parent: &str,
    from: From<'_>,
) -> Result<Unpacked, ContainerdError> {
    let From {
        content,
        committed,
        staged,
        extracted,
    } = from;
    let started = std::time::Instant::now();
    let mut ss = SnapshotsClient::new(c.channel.clone());
    let key = crate::containerd::unique_id("nixoci-extract") + "-" + chain;
    let prepare = PrepareSnapshotRequest {
        snapshotter: snapshotter.into(),
        key: key.clone(),
        parent: parent.into(),
        labels: Default::default(),
    };
    let mounts = ss
        .prepare(c.req(prepare))
        .await
        .map_err(c.err(format!("prepare snapshot for {chain}")))?
        .into_inner()
        .mounts;
    let result = async {
        let rootless = c.rootless.is_some();
        let target = (content.is_some() || staged.is_some())
            .then(|| super::fill::fill_target(&mounts, rootless))
            .flatten();
        let how = match (target, content, staged) {
            (Some(dir), _, Some(staged)) => {
                let fill_err =
                    |e: String| ContainerdError::Engine(format!("filling snapshot {chain}: {e}"));
                let (from, stats) = staged
                    .await
                    .map_err(|e| fill_err(e.to_string()))?
                    .map_err(|e| fill_err(e.to_string()))?;
                let d = dir.clone();
                let moved = tokio::task::spawn_blocking(move || {
                    let moved = stage::move_into(&from, &d);
                    if moved.is_err() {
                        super::fill::empty_dir(&d);
                        stage::remove(&from);
                    }
                    moved
                })
                .await
                .map_err(|e| fill_err(e.to_string()))?;
                moved.map_err(|e| {
                    fill_err(format!(
                        "moving the staged layer into {}: {e}",
                        dir.display()
                    ))
                })?;
                if extracted {
                    Unpacked::Extracted
                } else {
                    Unpacked::Staged(stats)
                }
            }
            (Some(dir), Some((content, mtime)), None) => {
                let content = content.clone();
                let d = dir.clone();
                // A rootless engine's 0 is this user: the store's files
                // (root's) would be nobody's in there, so they are copied.
                let link = super::fill::may_link(snapshotter) && !rootless;
                let filled = tokio::task::spawn_blocking(move || {
                    super::fill::fill(&d, &content, mtime, link)
                })
                .await
                .map_err(|e| ContainerdError::Engine(format!("filling snapshot {chain}: {e}")))?;
                match filled {
                    Ok(stats) => Unpacked::Filled(stats),
                    Err(e) => {
                        super::fill::empty_dir(&dir);
                        return Err(ContainerdError::Engine(format!(
                            "filling snapshot {chain} in {}: {e}",
                            dir.display()
                        )));
                    }
                }
            }
            (_, _, staged) => {
                if let Some(staged) = staged {
                    tokio::spawn(stage::discard(staged));
                }
                // containerd applies the blob: it must be committed.
                if let Some(committed) = committed {
                    committed.wait(&layer.blob.digest).await;
                }
                apply_diff(c, layer, mounts).await?;
                Unpacked::Applied
            }
        };
        let commit = CommitSnapshotRequest {
            snapshotter: snapshotter.into(),
            name: chain.into(),
            key: key.clone(),
            labels: [("containerd.io/snapshot.ref".to_string(), chain.to_string())].into(),
        };
        match ss.commit(c.req(commit)).await {
            Ok(_) => {
                tracing::debug!(
                    layer = %layer.blob.digest,
                    ?how,
                    secs = started.elapsed().as_secs_f64(),
                    "unpacked"
                );
                Ok(how)
            }
            // Another unpack committed the same chain first: fine.
            Err(s) if s.code() == Code::AlreadyExists => Err(ContainerdError::Rpc {
                address: c.address.clone(),
                op: "commit".into(),
                status: Box::new(s),
            }),
            Err(s) => Err(c.err(format!("commit snapshot {chain}"))(s)),
        }
    }
    .await;
    match result {
        Ok(how) => Ok(how),
        Err(e) => {
            let _ = ss
                .remove(c.req(RemoveSnapshotRequest {
                    snapshotter: snapshotter.into(),
                    key,
                }))
                .await;
            if is_code(&e, Code::AlreadyExists) {
                Ok(Unpacked::Existing)
            } else {
                Err(e)
            }
        }
    }
}

/// Extract the layer blob into the mounts with containerd's differ, and check
/// the digest it reports against the layer's diff_id.
async fn apply_diff(
    c: &Client,
    layer: &LayerRecord,
    mounts: Vec<Mount>,
) -> Result<(), ContainerdError> {
    let mut diff = DiffClient::new(c.channel.clone());
    let req = ApplyRequest {
        diff: Some(Descriptor {
            media_type: layer.blob.media_type.clone(),
            digest: layer.blob.digest.to_string(),
            size: layer.blob.size as i64,
            annotations: Default::default(),
        }),
        mounts,
        payloads: Default::default(),
        sync_fs: false,
    };
    let applied = diff
        .apply(c.req(req))
        .await
        .map_err(c.err(format!("apply layer {}", layer.blob.digest)))?
        .into_inner()
        .applied
        .map(|d| d.digest)
        .unwrap_or_default();
    if applied != layer.diff_id.to_string() {
        return Err(ContainerdError::DiffMismatch {
            layer: layer.blob.digest.to_string(),
            got: applied,
            want: layer.diff_id.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let chains = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chains[0], a);
        assert_eq!(chains[1], Digest::of(format!("{a} {b}").as_bytes()));
    }
}
