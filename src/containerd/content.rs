//! The content store: blob existence, labels, and streaming uploads through
//! `content.Write` (STAT, WRITE chunks, COMMIT with the expected digest and
//! size). An upload is fed from a synchronous thread through a bounded
//! channel, so the layer pipeline streams into containerd with no temp file.

use super::{is_code, Client, ContainerdError};
use crate::oci::digest::Digest;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::{
    AbortRequest, Info, InfoRequest, ListContentRequest, ReadContentRequest, UpdateRequest,
    WriteAction, WriteContentRequest,
};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tonic::Code;

const CHUNK: usize = 1 << 20;

pub async fn info(c: &Client, d: &Digest) -> Result<Option<Info>, ContainerdError> {
    let mut cs = ContentClient::new(c.channel.clone());
    match cs
        .info(c.req(InfoRequest {
            digest: d.to_string(),
        }))
        .await
    {
        Ok(r) => Ok(r.into_inner().info),
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(c.err(format!("content info {d}"))(s)),
    }
}

/// Digests asked of containerd in one `List` call (its filters are
/// alternatives): a request stays a few kilobytes.
const LIST_AT_ONCE: usize = 64;

/// How many calls `infos` makes for `n` digests.
pub fn calls_for(n: usize) -> usize {
    n.div_ceil(LIST_AT_ONCE)
}

/// Which of `digests` the content store has, with their info: one `List`
/// call per 64, instead of an `Info` call (a round trip) each.
pub async fn infos(
    c: &Client,
    digests: &[Digest],
) -> Result<HashMap<String, Info>, ContainerdError> {
    let mut out = HashMap::new();
    for some in digests.chunks(LIST_AT_ONCE) {
        let mut cs = ContentClient::new(c.channel.clone());
        let filters = some.iter().map(|d| format!("digest==\"{d}\"")).collect();
        let op = || format!("content list of {} blobs", some.len());
        let mut stream = cs
            .list(c.req(ListContentRequest { filters }))
            .await
            .map_err(c.err(op()))?
            .into_inner();
        while let Some(m) = stream.message().await.map_err(c.err(op()))? {
            for info in m.info {
                // Only what was asked (the filters are containerd's to apply).
                if some.iter().any(|d| d.to_string() == info.digest) {
                    out.insert(info.digest.clone(), info);
                }
            }
        }
    }
    Ok(out)
}

/// Read a (small) blob whole: manifests, configs, indexes.
pub async fn read_all(c: &Client, d: &str) -> Result<Vec<u8>, ContainerdError> {
    let mut cs = ContentClient::new(c.channel.clone());
    let mut stream = cs
        .read(c.req(ReadContentRequest {
            digest: d.into(),
            offset: 0,
            size: 0,
        }))
        .await
        .map_err(c.err(format!("read {d}")))?
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.message().await.map_err(c.err(format!("read {d}")))? {
        out.extend_from_slice(&chunk.data);
    }
    Ok(out)
}

/// Add (or replace) labels on a blob.
pub async fn set_labels(
    c: &Client,
    d: &Digest,
    labels: &BTreeMap<String, String>,
) -> Result<(), ContainerdError> {
    if labels.is_empty() {
        return Ok(());
    }
    let mut cs = ContentClient::new(c.channel.clone());
    let req = UpdateRequest {
        info: Some(Info {
            digest: d.to_string(),
            labels: labels.clone().into_iter().collect(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: labels.keys().map(|k| format!("labels.{k}")).collect(),
        }),
    };
    cs.update(c.req(req))
        .await
        .map_err(c.err(format!("content update {d}")))?;
    Ok(())
}

/// One blob being uploaded. `Write` from a non-async thread; `commit` blocks
/// until containerd has committed it.
pub struct Upload {
    tx: Option<mpsc::Sender<WriteContentRequest>>,
    done: Option<oneshot::Receiver<Result<(), ContainerdError>>>,
    buf: Vec<u8>,
    offset: i64,
    reference: String,
    sent: Arc<AtomicU64>,
    rt: Handle,
    client: Client,
}

impl Upload {
    /// Start an upload; `sent` counts the bytes sent.
    pub fn start(rt: &Handle, client: &Client, sent: Arc<AtomicU64>) -> Self {
        let reference = super::unique_id("nixoci-upload");
        let (tx, rx) = mpsc::channel::<WriteContentRequest>(4);
        let (done_tx, done_rx) = oneshot::channel();
        let c = client.clone();
        let r = reference.clone();
        // STAT first: containerd opens the ingest and answers with its status.
        let stat = WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: reference.clone(),
            ..Default::default()
        };
        tx.try_send(stat).expect("a new channel has room");
        rt.spawn(async move {
            let result = run(&c, &r, rx).await;
            if result.is_err() {
                let mut cs = ContentClient::new(c.channel.clone());
                let _ = cs.abort(c.req(AbortRequest { r#ref: r.clone() })).await;
            }
            let _ = done_tx.send(result);
        });
        Upload {
            tx: Some(tx),
            done: Some(done_rx),
            buf: Vec::with_capacity(CHUNK),
            offset: 0,
            reference,
            sent,
            rt: rt.clone(),
            client: client.clone(),
        }
    }

    fn send(&mut self, req: WriteContentRequest) -> io::Result<()> {
        let tx = self.tx.as_ref().expect("not committed");
        if tx.blocking_send(req).is_err() {
            // The task ended early: its result says why.
            let why = self
                .done
                .take()
                .and_then(|d| d.blocking_recv().ok())
                .and_then(|r| r.err())
                .map(|e| e.to_string())
                .unwrap_or_else(|| "containerd closed the write stream".into());
            return Err(io::Error::other(why));
        }
        Ok(())
    }

    fn flush_chunk(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let len = data.len();
        self.send(WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: self.reference.clone(),
            offset: self.offset,
            data,
            ..Default::default()
        })?;
        self.offset += len as i64;
        self.sent.fetch_add(len as u64, Ordering::Relaxed);
        Ok(())
    }

    pub fn commit(mut self, digest: &Digest) -> Result<(), ContainerdError> {
        let io_err = |e: io::Error| ContainerdError::Engine(format!("uploading {digest}: {e}"));
        self.flush_chunk().map_err(io_err)?;
        // Lease the digest before committing: then the blob is protected
        // whether this commit writes it or finds it already there (perhaps
        // left by an aborted import and about to be collected).
        self.rt.block_on(super::images::lease_resource(
            &self.client,
            &digest.to_string(),
            "content",
        ))?;
        self.send(WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: self.reference.clone(),
            // containerd truncates a write whose offset is 0 once data is
            // in: the commit must say where the data ends.
            offset: self.offset,
            total: self.offset,
            expected: digest.to_string(),
            ..Default::default()
        })
        .map_err(io_err)?;
        self.tx = None;
        let result = self
            .done
            .take()
            .expect("committed once")
            .blocking_recv()
            .unwrap_or_else(|_| Err(ContainerdError::Engine("the upload task ended".into())));
        match result {
            // Already there, and under the lease since before the commit.
            Err(e) if is_code(&e, Code::AlreadyExists) => Ok(()),
            Err(ContainerdError::Rpc { status, .. })
                if status.code() == Code::FailedPrecondition
                    && status.message().contains("digest") =>
            {
                Err(ContainerdError::Engine(format!(
                    "containerd reports a digest mismatch for {digest}: {}",
                    status.message()
                )))
            }
            other => other,
        }
    }
}

impl io::Write for Upload {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush_chunk()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

async fn run(
    c: &Client,
    reference: &str,
    rx: mpsc::Receiver<WriteContentRequest>,
) -> Result<(), ContainerdError> {
    let mut cs = ContentClient::new(c.channel.clone());
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let op = format!("content write {reference}");
    let mut responses = cs
        .write(c.req(stream))
        .await
        .map_err(c.err(op.clone()))?
        .into_inner();
    while let Some(m) = responses.message().await.map_err(c.err(op.clone()))? {
        if m.action == WriteAction::Commit as i32 {
            return Ok(());
        }
    }
    Err(ContainerdError::Engine(format!(
        "{op}: the stream ended before the blob was committed"
    )))
}
