//! Containers, their snapshots and tasks (processes run by the runc shim).

use super::{is_code, Client, ContainerdError};
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteProcessRequest, DeleteTaskRequest, ExecProcessRequest, GetContainerRequest, GetRequest,
    KillRequest, ListContainersRequest, ResizePtyRequest, StartRequest, WaitRequest,
};
use containerd_client::types::v1::Process;
use containerd_client::types::Mount;
use tonic::Code;

pub const RUNTIME: &str = "io.containerd.runc.v2";
pub const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
pub const PROCESS_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// An OCI runtime document (spec or process) as a protobuf `Any`.
pub fn any(type_url: &str, json: &impl serde::Serialize) -> prost_types::Any {
    prost_types::Any {
        type_url: type_url.into(),
        value: serde_json::to_vec(json).expect("runtime documents serialise"),
    }
}

pub async fn create(c: &Client, container: Container) -> Result<(), ContainerdError> {
    let id = container.id.clone();
    ContainersClient::new(c.channel.clone())
        .create(c.req(CreateContainerRequest {
            container: Some(container),
        }))
        .await
        .map_err(c.err(format!("create container {id}")))?;
    Ok(())
}

pub async fn get(c: &Client, id: &str) -> Result<Option<Container>, ContainerdError> {
    match ContainersClient::new(c.channel.clone())
        .get(c.req(GetContainerRequest { id: id.into() }))
        .await
    {
        Ok(r) => Ok(r.into_inner().container),
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(c.err(format!("get container {id}"))(s)),
    }
}

/// Containers with label `key` = `value`.
pub async fn list_labelled(
    c: &Client,
    key: &str,
    value: Option<&str>,
) -> Result<Vec<Container>, ContainerdError> {
    let filter = match value {
        Some(v) => format!("labels.\"{key}\"=={v}"),
        None => format!("labels.\"{key}\""),
    };
    let r = ContainersClient::new(c.channel.clone())
        .list(c.req(ListContainersRequest {
            filters: vec![filter],
        }))
        .await
        .map_err(c.err("list containers"))?;
    let mut v = r.into_inner().containers;
    v.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(v)
}

pub async fn delete(c: &Client, id: &str) -> Result<bool, ContainerdError> {
    match ContainersClient::new(c.channel.clone())
        .delete(c.req(DeleteContainerRequest { id: id.into() }))
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if s.code() == Code::NotFound => Ok(false),
        Err(s) => Err(c.err(format!("delete container {id}"))(s)),
    }
}

pub async fn prepare(
    c: &Client,
    snapshotter: &str,
    key: &str,
    parent: &str,
) -> Result<Vec<Mount>, ContainerdError> {
    let r = SnapshotsClient::new(c.channel.clone())
        .prepare(c.req(PrepareSnapshotRequest {
            snapshotter: snapshotter.into(),
            key: key.into(),
            parent: parent.into(),
            labels: Default::default(),
        }))
        .await
        .map_err(c.err(format!("prepare snapshot {key}")))?;
    Ok(r.into_inner().mounts)
}

pub async fn mounts(
    c: &Client,
    snapshotter: &str,
    key: &str,
) -> Result<Vec<Mount>, ContainerdError> {
    let r = SnapshotsClient::new(c.channel.clone())
        .mounts(c.req(MountsRequest {
            snapshotter: snapshotter.into(),
            key: key.into(),
        }))
        .await
        .map_err(c.err(format!("mounts of snapshot {key}")))?;
    Ok(r.into_inner().mounts)
}

pub async fn remove_snapshot(
    c: &Client,
    snapshotter: &str,
    key: &str,
) -> Result<bool, ContainerdError> {
    match SnapshotsClient::new(c.channel.clone())
        .remove(c.req(RemoveSnapshotRequest {
            snapshotter: snapshotter.into(),
            key: key.into(),
        }))
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if s.code() == Code::NotFound => Ok(false),
        Err(s) => Err(c.err(format!("remove snapshot {key}"))(s)),
    }
}

fn tasks(c: &Client) -> TasksClient<tonic::transport::Channel> {
    TasksClient::new(c.channel.clone())
}

/// Create the container's task; its stdout and stderr go to `log` (a file
/// the shim appends to, so the process outlives nixoci).
pub async fn create_task(
    c: &Client,
    id: &str,
    rootfs: Vec<Mount>,
    log: &std::path::Path,
) -> Result<u32, ContainerdError> {
    let uri = format!("file://{}", log.display());
    let r = tasks(c)
        .create(c.req(CreateTaskRequest {
            container_id: id.into(),
            rootfs,
            stdin: String::new(),
            stdout: uri.clone(),
            stderr: uri,
            terminal: false,
            checkpoint: None,
            options: None,
            runtime_path: String::new(),
        }))
        .await
        .map_err(c.err(format!("create task {id}")))?;
    Ok(r.into_inner().pid)
}

pub async fn start(c: &Client, id: &str, exec_id: &str) -> Result<u32, ContainerdError> {
    let r = tasks(c)
        .start(c.req(StartRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
        }))
        .await
        .map_err(c.err(format!("start {id} {exec_id}")))?;
    Ok(r.into_inner().pid)
}

/// The task's process, if there is a task.
pub async fn task(c: &Client, id: &str) -> Result<Option<Process>, ContainerdError> {
    match tasks(c)
        .get(c.req(GetRequest {
            container_id: id.into(),
            exec_id: String::new(),
        }))
        .await
    {
        Ok(r) => Ok(r.into_inner().process),
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(c.err(format!("get task {id}"))(s)),
    }
}

pub async fn kill(c: &Client, id: &str, exec_id: &str, signal: u32) -> Result<(), ContainerdError> {
    match tasks(c)
        .kill(c.req(KillRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            signal,
            // Every process of the container, found through its cgroup;
            // a rootless container may have none (its pid namespace ends
            // with its first process anyway).
            all: exec_id.is_empty() && c.rootless.is_none(),
        }))
        .await
    {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::NotFound => Ok(()),
        Err(s) => Err(c.err(format!("kill {id}"))(s)),
    }
}

/// Wait for a process to exit; its exit status.
pub async fn wait(c: &Client, id: &str, exec_id: &str) -> Result<u32, ContainerdError> {
    let r = tasks(c)
        .wait(c.req(WaitRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
        }))
        .await
        .map_err(c.err(format!("wait for {id} {exec_id}")))?;
    Ok(r.into_inner().exit_status)
}

/// Delete the task (it must have exited); its exit status if there was one.
pub async fn delete_task(c: &Client, id: &str) -> Result<Option<u32>, ContainerdError> {
    match tasks(c)
        .delete(c.req(DeleteTaskRequest {
            container_id: id.into(),
        }))
        .await
    {
        Ok(r) => Ok(Some(r.into_inner().exit_status)),
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(c.err(format!("delete task {id}"))(s)),
    }
}

/// Start an extra process in a running task; its stdout and stderr go to
/// the FIFOs (or files, with a `file://` URI) given.
pub async fn exec(
    c: &Client,
    id: &str,
    exec_id: &str,
    process: &impl serde::Serialize,
    stdout: &str,
    stderr: &str,
) -> Result<(), ContainerdError> {
    tasks(c)
        .exec(c.req(ExecProcessRequest {
            container_id: id.into(),
            stdin: String::new(),
            stdout: stdout.into(),
            stderr: stderr.into(),
            terminal: false,
            spec: Some(any(PROCESS_TYPE, process)),
            exec_id: exec_id.into(),
        }))
        .await
        .map_err(c.err(format!("exec in {id}")))?;
    Ok(())
}

/// Exec a process with a terminal: the shim makes a pseudo-terminal, reads
/// `stdin` (a FIFO) into it and writes its output to `stdout` (a FIFO).
pub async fn exec_terminal(
    c: &Client,
    id: &str,
    exec_id: &str,
    process: &impl serde::Serialize,
    stdin: &str,
    stdout: &str,
) -> Result<(), ContainerdError> {
    tasks(c)
        .exec(c.req(ExecProcessRequest {
            container_id: id.into(),
            stdin: stdin.into(),
            stdout: stdout.into(),
            stderr: String::new(),
            terminal: true,
            spec: Some(any(PROCESS_TYPE, process)),
            exec_id: exec_id.into(),
        }))
        .await
        .map_err(c.err(format!("exec in {id}")))?;
    Ok(())
}

/// Set the size of an exec'd process's terminal.
pub async fn resize_pty(
    c: &Client,
    id: &str,
    exec_id: &str,
    width: u32,
    height: u32,
) -> Result<(), ContainerdError> {
    tasks(c)
        .resize_pty(c.req(ResizePtyRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            width,
            height,
        }))
        .await
        .map_err(c.err(format!("resize the terminal of {exec_id} in {id}")))?;
    Ok(())
}

pub async fn delete_process(c: &Client, id: &str, exec_id: &str) -> Result<(), ContainerdError> {
    match tasks(c)
        .delete_process(c.req(DeleteProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
        }))
        .await
    {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::NotFound => Ok(()),
        Err(s) => Err(c.err(format!("delete process {exec_id} of {id}"))(s)),
    }
}

/// Whether an error says the object is gone.
pub fn not_found(e: &ContainerdError) -> bool {
    is_code(e, Code::NotFound)
}
