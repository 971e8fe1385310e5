//! One service on containerd: its image resolved (and unpacked if needed),
//! its container (snapshot, runtime spec, labels), its task on runc with
//! stdout and stderr in a log file the shim writes, and exec.

use super::spec::{self, Bind, ImageDefaults};
use super::{EnclaveError, ENCLAVE_LABEL, SERVICE_LABEL};
use crate::containerd::containers::{self, RUNTIME, SPEC_TYPE};
use crate::containerd::{content, images, Client};
use crate::oci::digest::Digest;
use crate::oci::LayerRecord;
use crate::plan::ServiceConfig;
use crate::sink::containerd::unpack;
use crate::source::documents;
use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::Container;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// An image in containerd, ready to run.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub name: String,
    pub defaults: ImageDefaults,
    /// The chain ID of the top layer: the snapshot containers start from.
    pub top: String,
}

fn err(msg: impl Into<String>) -> EnclaveError {
    EnclaveError::Service(msg.into())
}

/// Find `name` in the namespace, pick this platform's manifest from an
/// index, read the config, and unpack the layers if their snapshot is
/// missing.
pub async fn resolve_image(
    c: &Client,
    snapshotter: &str,
    name: &str,
) -> Result<ResolvedImage, EnclaveError> {
    let image = images::get(c, name).await?.ok_or_else(|| {
        err(format!(
            "image {name} is not in containerd namespace '{}': build it with `nixoci build --output containerd`, load it with `nixoci load`, or import it with `ctr images import` (pulling from registries is not supported yet)",
            c.namespace
        ))
    })?;
    let target = image
        .target
        .ok_or_else(|| err(format!("image {name} has no target")))?;
    let origin = std::path::Path::new(name);
    let doc_err = |e: crate::source::LoadError| err(format!("image {name}: {e}"));
    let mut expected =
        Digest::parse(&target.digest).map_err(|e| err(format!("image {name}: {e}")))?;
    let mut bytes = documents::verified(
        origin,
        "manifest",
        &expected,
        content::read_all(c, &target.digest).await?,
    )
    .map_err(doc_err)?;
    if documents::is_index(&target.media_type) {
        let index = documents::parse_index(origin, "the index", &bytes).map_err(doc_err)?;
        expected = documents::pick_platform(origin, &index, None)
            .map_err(doc_err)?
            .digest;
        bytes = documents::verified(
            origin,
            "manifest",
            &expected,
            content::read_all(c, &expected.to_string()).await?,
        )
        .map_err(doc_err)?;
    }
    let (config, blobs) = documents::manifest_blobs(origin, &bytes).map_err(doc_err)?;
    let config_bytes = documents::verified(
        origin,
        "config",
        &config.digest,
        content::read_all(c, &config.digest.to_string()).await?,
    )
    .map_err(doc_err)?;
    let config_digest = config.digest;
    let config = documents::parse_config(origin, &config_bytes).map_err(doc_err)?;
    let diff_ids = documents::config_diff_ids(origin, &config, blobs.len(), "its manifest")
        .map_err(doc_err)?;
    let layers: Vec<LayerRecord> = documents::layer_records(blobs, diff_ids.clone());
    let Some(top) = unpack::chain_ids(&diff_ids).last().map(|d| d.to_string()) else {
        return Err(err(format!("image {name} has no layers")));
    };
    if !unpack::snapshot_exists(c, snapshotter, &top).await? {
        let lease = images::create_lease(c).await?;
        let leased = c.with_lease(Some(lease.clone()));
        let r = unpack::unpack(&leased, snapshotter, &layers).await;
        // The image config keeps the snapshots from now on; set the label
        // containerd's own unpacker sets.
        if r.is_ok() {
            let key = format!("containerd.io/gc.ref.snapshot.{snapshotter}");
            let _ = content::set_labels(c, &config_digest, &[(key, top.clone())].into()).await;
        }
        images::delete_lease(c, &lease).await?;
        r?;
    }
    Ok(ResolvedImage {
        name: name.into(),
        defaults: ImageDefaults::from_config(&config),
        top,
    })
}

/// Everything needed to create a service's container.
pub struct NewService<'a> {
    pub enclave: &'a str,
    pub name: &'a str,
    pub id: &'a str,
    pub config: &'a ServiceConfig,
    pub image: &'a ResolvedImage,
    pub binds: Vec<Bind>,
    /// The network namespace to join (None: the host's network).
    pub netns: Option<String>,
}

/// Create the container (snapshot, spec, labels). On failure nothing is left.
pub async fn create_container(
    c: &Client,
    snapshotter: &str,
    s: &NewService<'_>,
) -> Result<(), EnclaveError> {
    let args = spec::args(&s.image.defaults, s.config).map_err(|e| err(e.to_string()))?;
    let env = spec::env(&s.image.defaults, s.config);
    let (uid, gid) = spec::user(&s.image.defaults, s.config).map_err(|e| err(e.to_string()))?;
    let process = spec::process(args, env, &s.image.defaults.working_dir, uid, gid);
    let devices = s
        .config
        .devices
        .iter()
        .map(|d| spec::device(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("service '{}': {e}", s.name)))?;
    for host in s.config.bind_mounts.keys() {
        if !Path::new(host).exists() {
            return Err(err(format!(
                "service '{}': bind_mounts names {host}, which does not exist on this host",
                s.name
            )));
        }
    }
    let cgroup = match c.rootless.as_deref().map(crate::rootless::cgroup_limits) {
        None => Ok("/nixoci".to_string()),
        Some(Ok(parent)) => Ok(format!("{}/nixoci", parent.trim_end_matches('/'))),
        Some(Err(why)) => Err(why),
    };
    let mut runtime_spec = spec::runtime_spec(
        process,
        s.name,
        &format!("{}/{}", cgroup.as_deref().unwrap_or(""), s.id),
        &s.binds,
        &devices,
        s.config,
        s.netns.as_deref(),
    );
    if let Err(why) = cgroup {
        let dropped = spec::without_limits(&mut runtime_spec, s.config);
        if !dropped.is_empty() {
            eprintln!(
                "warning: service '{}': {} not enforced: the rootless containerd cannot limit its containers here ({why})",
                s.name,
                dropped.join(", ")
            );
        }
    }
    let mut labels: std::collections::HashMap<String, String> = s
        .config
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(ENCLAVE_LABEL.into(), s.enclave.into());
    labels.insert(SERVICE_LABEL.into(), s.name.into());
    // A lease holds the new snapshot until the container refers to it.
    let lease = images::create_lease(c).await?;
    let leased = c.with_lease(Some(lease.clone()));
    let result = async {
        containers::prepare(&leased, snapshotter, s.id, &s.image.top).await?;
        containers::create(
            &leased,
            Container {
                id: s.id.into(),
                labels,
                image: s.image.name.clone(),
                runtime: Some(Runtime {
                    name: RUNTIME.into(),
                    options: None,
                }),
                spec: Some(containers::any(SPEC_TYPE, &runtime_spec)),
                snapshotter: snapshotter.into(),
                snapshot_key: s.id.into(),
                ..Default::default()
            },
        )
        .await
    }
    .await;
    if result.is_err() {
        let _ = containers::remove_snapshot(c, snapshotter, s.id).await;
    }
    images::delete_lease(c, &lease).await?;
    result.map_err(Into::into)
}

/// Create and start the container's task, stdout and stderr to `log`.
pub async fn start_task(
    c: &Client,
    snapshotter: &str,
    id: &str,
    log: &Path,
) -> Result<u32, EnclaveError> {
    // A task left from an earlier start (exited) is deleted first.
    if let Some(p) = containers::task(c, id).await? {
        if p.status == containerd_client::types::v1::Status::Running as i32 {
            return Ok(p.pid);
        }
        containers::delete_task(c, id).await?;
    }
    let rootfs = containers::mounts(c, snapshotter, id).await?;
    containers::create_task(c, id, rootfs, log).await?;
    if let Err(e) = containers::start(c, id, "").await {
        let _ = containers::delete_task(c, id).await;
        return Err(e.into());
    }
    Ok(containers::task(c, id).await?.map_or(0, |p| p.pid))
}

/// The exit status if the task has stopped, else None.
pub async fn exited(c: &Client, id: &str) -> Result<Option<u32>, EnclaveError> {
    Ok(match containers::task(c, id).await? {
        Some(p) if p.status == containerd_client::types::v1::Status::Stopped as i32 => {
            Some(p.exit_status)
        }
        Some(_) => None,
        None => Some(0),
    })
}

/// Check the service keeps running: a short settle time, then each TCP
/// port with a `wait` must accept connections at `ip` in time.
pub async fn check_started(
    c: &Client,
    id: &str,
    name: &str,
    ip: &str,
    config: &ServiceConfig,
    log: &Path,
) -> Result<(), EnclaveError> {
    let addr: std::net::IpAddr = ip
        .parse()
        .map_err(|_| err(format!("service '{name}' has no address ({ip})")))?;
    let died = |code: u32| {
        err(format!(
            "service '{name}' exited at once with code {code}; its last log lines ({}):\n{}",
            log.display(),
            crate::containerd::engine::tail(log, 15)
        ))
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Some(code) = exited(c, id).await? {
        return Err(died(code));
    }
    for (port_id, p) in &config.ports {
        let Some(wait) = &p.wait else { continue };
        if p.transport_protocol != "TCP" {
            continue;
        }
        let timeout = wait.get();
        let start = Instant::now();
        loop {
            if port_opens(c, addr, p.number).await {
                break;
            }
            if let Some(code) = exited(c, id).await? {
                return Err(died(code));
            }
            if start.elapsed() >= timeout {
                return Err(err(format!(
                    "service '{name}': port '{port_id}' ({ip}:{}/TCP) did not open within {wait}; its last log lines ({}):\n{}",
                    p.number,
                    log.display(),
                    crate::containerd::engine::tail(log, 15)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Whether a TCP connection to `addr:port` opens within half a second,
/// from where the containerd's networks are (a rootless engine's
/// namespace: through a socket made there).
async fn port_opens(c: &Client, addr: std::net::IpAddr, port: u16) -> bool {
    let to = std::net::SocketAddr::from((addr, port));
    let connect = async {
        match c.rootless.as_deref() {
            None => tokio::net::TcpStream::connect(to).await.map(drop),
            Some(ns) => {
                let fd = ns.tcp_socket()?;
                // SAFETY: fcntl on a descriptor we own; tokio wants it
                // non-blocking.
                unsafe {
                    use std::os::fd::AsRawFd;
                    let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
                    libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
                }
                // SAFETY: a fresh TCP socket that nothing else owns.
                let s = unsafe {
                    <tokio::net::TcpSocket as std::os::fd::FromRawFd>::from_raw_fd(
                        std::os::fd::IntoRawFd::into_raw_fd(fd),
                    )
                };
                s.connect(to).await.map(drop)
            }
        }
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), connect).await,
        Ok(Ok(()))
    )
}

/// Stop the task: SIGTERM, then SIGKILL after `grace`; the task is deleted.
/// Its exit status, if it had a task.
pub async fn stop_task(c: &Client, id: &str, grace: Duration) -> Result<Option<u32>, EnclaveError> {
    let Some(p) = containers::task(c, id).await? else {
        return Ok(None);
    };
    if p.status != containerd_client::types::v1::Status::Stopped as i32 {
        let waiter = {
            let c = c.clone();
            let id = id.to_string();
            tokio::spawn(async move { containers::wait(&c, &id, "").await })
        };
        containers::kill(c, id, "", libc::SIGTERM as u32).await?;
        let mut waiter = waiter;
        if tokio::time::timeout(grace, &mut waiter).await.is_err() {
            containers::kill(c, id, "", libc::SIGKILL as u32).await?;
            let _ = tokio::time::timeout(Duration::from_secs(10), waiter).await;
        }
    }
    Ok(containers::delete_task(c, id).await?)
}

/// Remove a service's task, container and snapshot (whatever exists).
pub async fn remove(
    c: &Client,
    snapshotter: &str,
    id: &str,
    grace: Duration,
) -> Result<(), EnclaveError> {
    stop_task(c, id, grace).await?;
    let snapshotter = match containers::get(c, id).await? {
        Some(ct) if !ct.snapshotter.is_empty() => ct.snapshotter,
        _ => snapshotter.to_string(),
    };
    containers::delete(c, id).await?;
    containers::remove_snapshot(c, &snapshotter, id).await?;
    Ok(())
}

/// The process of a running service's container spec: what an exec starts
/// from (its user, environment, capabilities).
async fn running_process(c: &Client, id: &str) -> Result<serde_json::Value, EnclaveError> {
    if exited(c, id).await?.is_some() {
        return Err(err(
            "the service is not running (start it with `nixoci service start`)",
        ));
    }
    let container = containers::get(c, id)
        .await?
        .ok_or_else(|| err(format!("container {id} is gone")))?;
    let spec: serde_json::Value = container
        .spec
        .as_ref()
        .and_then(|s| serde_json::from_slice(&s.value).ok())
        .ok_or_else(|| err(format!("container {id} has no readable spec")))?;
    Ok(spec["process"].clone())
}

/// Start an exec'd process (its terminal resized to `size` when given) and
/// wait for its exit code; the waiter is in place before it starts, so a
/// quick exit is not missed.
async fn start_and_wait(
    c: &Client,
    id: &str,
    exec_id: &str,
    size: Option<(u16, u16)>,
) -> Result<u32, EnclaveError> {
    let waiter = {
        let c = c.clone();
        let id = id.to_string();
        let exec_id = exec_id.to_string();
        tokio::spawn(async move { containers::wait(&c, &id, &exec_id).await })
    };
    containers::start(c, id, exec_id).await?;
    if let Some((cols, rows)) = size {
        let _ = containers::resize_pty(c, id, exec_id, cols.into(), rows.into()).await;
    }
    Ok(waiter
        .await
        .map_err(|e| err(format!("waiting for {exec_id}: {e}")))??)
}

/// A FIFO at `path`, for the shim to write a process's output to or read
/// its input from.
fn make_fifo(path: &Path) -> Result<(), EnclaveError> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| err("a NUL in the scratch path"))?;
    // SAFETY: mkfifo with a valid C string.
    if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
        return Err(err(format!(
            "mkfifo {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Run `command` in the service's running task; its exit code and output
/// (stdout and stderr together).
pub async fn exec(
    c: &Client,
    id: &str,
    command: &[String],
    scratch: &Path,
) -> Result<(i64, String), EnclaveError> {
    let mut process = running_process(c, id).await?;
    process["args"] = serde_json::json!(command);
    let exec_id = crate::containerd::unique_id("exec");
    std::fs::create_dir_all(scratch).map_err(|e| err(format!("{}: {e}", scratch.display())))?;
    // FIFOs, read to their end: the shim closes them once the process has
    // exited and everything it wrote is through, so no output is lost.
    let fifos = [
        scratch.join(format!("{exec_id}.out")),
        scratch.join(format!("{exec_id}.err")),
    ];
    let mut readers = Vec::new();
    for f in &fifos {
        make_fifo(f)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let path = f.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Ok(mut file) = std::fs::File::open(&path) {
                let _ = std::io::Read::read_to_end(&mut file, &mut buf);
            }
            let _ = tx.send(buf);
        });
        readers.push(rx);
    }
    let out = fifos[0].display().to_string();
    let errp = fifos[1].display().to_string();
    let result = async {
        containers::exec(c, id, &exec_id, &process, &out, &errp).await?;
        start_and_wait(c, id, &exec_id, None).await
    }
    .await;
    let _ = containers::delete_process(c, id, &exec_id).await;
    if result.is_err() {
        // Readers still waiting for a writer: give them one that closes.
        for f in &fifos {
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(f);
        }
    }
    let mut output = Vec::new();
    for rx in readers {
        // Awaited, not blocked on: the runtime's threads stay free.
        if let Ok(Ok(bytes)) = tokio::time::timeout(Duration::from_secs(30), rx).await {
            output.extend(bytes);
        }
    }
    for f in &fifos {
        let _ = std::fs::remove_file(f);
    }
    let code = result?;
    Ok((code as i64, String::from_utf8_lossy(&output).into_owned()))
}

/// `nixoci service shell`: an interactive shell (bash where the image has
/// it, else sh) in the running service, on a terminal of `size` (columns,
/// rows). Our side of the terminal is `input` and `output`; returns the
/// shell's exit code when it ends.
pub async fn shell(
    c: &Client,
    id: &str,
    scratch: &Path,
    size: Option<(u16, u16)>,
    input: Box<dyn std::io::Read + Send>,
    output: Box<dyn std::io::Write + Send>,
) -> Result<u32, EnclaveError> {
    let mut process = running_process(c, id).await?;
    process["terminal"] = serde_json::json!(true);
    process["args"] = serde_json::json!([
        "sh",
        "-c",
        "if command -v bash >/dev/null 2>&1; then exec bash; else exec sh; fi"
    ]);
    if let Some(env) = process["env"].as_array_mut() {
        env.retain(|e| !e.as_str().is_some_and(|e| e.starts_with("TERM=")));
        env.push(serde_json::json!("TERM=xterm"));
    }
    if let Some((cols, rows)) = size {
        process["consoleSize"] = serde_json::json!({"width": cols, "height": rows});
    }
    let exec_id = crate::containerd::unique_id("shell");
    std::fs::create_dir_all(scratch).map_err(|e| err(format!("{}: {e}", scratch.display())))?;
    let fifo_in = scratch.join(format!("{exec_id}.in"));
    let fifo_out = scratch.join(format!("{exec_id}.out"));
    make_fifo(&fifo_in)?;
    make_fifo(&fifo_out)?;
    // The terminal's output, to its end (the shim closes it when the
    // shell is gone).
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    {
        let path = fifo_out.clone();
        let mut output = output;
        std::thread::spawn(move || {
            if let Ok(mut f) = std::fs::File::open(&path) {
                let _ = std::io::copy(&mut f, &mut output);
            }
            let _ = done_tx.send(());
        });
    }
    // Our input, to the terminal (a thread that ends with our input or
    // with the process).
    {
        let path = fifo_in.clone();
        let mut input = input;
        std::thread::spawn(move || {
            if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&path) {
                let mut buf = [0u8; 4096];
                while let Ok(n) = input.read(&mut buf) {
                    if n == 0 || std::io::Write::write_all(&mut f, &buf[..n]).is_err() {
                        break;
                    }
                }
            }
        });
    }
    let result = async {
        containers::exec_terminal(
            c,
            id,
            &exec_id,
            &process,
            &fifo_in.display().to_string(),
            &fifo_out.display().to_string(),
        )
        .await?;
        start_and_wait(c, id, &exec_id, size).await
    }
    .await;
    if result.is_err() {
        // Threads still waiting for the other end of a FIFO: give it them.
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo_out);
        let _ = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo_in);
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), done_rx).await;
    let _ = containers::delete_process(c, id, &exec_id).await;
    let _ = std::fs::remove_file(&fifo_in);
    let _ = std::fs::remove_file(&fifo_out);
    result
}
