//! Enclave networks through the standard CNI plugins (bridge, host-local,
//! loopback, portmap): one bridge and one subnet per enclave, one network
//! namespace per service, set up and torn down by running the plugins with
//! a conflist nixoci writes; host-local keeps its IPAM state in the
//! enclave's directory. Every attachment is recorded (`net/<service>.json`)
//! before anything uses it, so `enclave rm` can undo it even after a killed
//! run.
//!
//! On a rootless engine ([`NetHost::Engine`]) all of this happens inside
//! the engine's namespaces: the plugins, `ip` and nixoci's own helper (for
//! the service namespaces) run there; public ports are published on the
//! host's 127.0.0.1 through rootlesskit's port API instead of portmap; the
//! subnet registry is the engine's own.

use super::EnclaveError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where enclave subnets (/24 each) come from, unless `$NIXOCI_SUBNET_POOL`
/// or `--subnet-pool` says otherwise.
pub const DEFAULT_POOL: &str = "10.199.0.0/16";
const CNI_VERSION: &str = "0.4.0";
const PLUGINS: &[&str] = &["bridge", "host-local", "loopback", "portmap"];

/// Where an enclave's network lives.
#[derive(Debug, Clone)]
pub enum NetHost {
    /// This host's namespaces (root).
    Host,
    /// A rootless engine's namespaces.
    Engine(crate::rootless::EngineNs),
    /// The rootless engine it lived in has stopped, and its network with it.
    Gone,
}

impl NetHost {
    /// A command for `program` where the network lives.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Result<Command, EnclaveError> {
        match self {
            NetHost::Host => Ok(Command::new(program)),
            NetHost::Engine(ns) => ns.command(program).map_err(|e| err(e.to_string())),
            NetHost::Gone => Err(err(
                "the rootless containerd this enclave's network lived in has stopped: remove the enclave (`nixoci enclave rm -f NAME`) and run again",
            )),
        }
    }

    fn rootless(&self) -> Option<&crate::rootless::EngineNs> {
        match self {
            NetHost::Engine(ns) => Some(ns),
            _ => None,
        }
    }
}

/// An enclave's network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NetRecord {
    /// `10.199.3.0/24`.
    pub subnet: String,
    pub gateway: String,
    pub bridge: String,
}

/// A service's place in it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attachment {
    pub container_id: String,
    pub netns: PathBuf,
    pub ip: String,
    /// What the conflist's ADD returned (needed for DEL).
    pub result: Value,
    pub port_mappings: Vec<Value>,
    /// Ports published through rootlesskit's API (rootless engines).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rootless_ports: Vec<u64>,
}

fn err(msg: impl Into<String>) -> EnclaveError {
    EnclaveError::Service(msg.into())
}

/// `a.b.c.d/n` → (network address, prefix); the pool must leave room for /24s.
pub fn parse_pool(pool: &str) -> Result<(u32, u8), EnclaveError> {
    let bad = || {
        err(format!(
            "subnet pool '{pool}' is not an IPv4 network such as {DEFAULT_POOL} with a prefix of 8 to 24 bits"
        ))
    };
    let (addr, prefix) = pool.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    if !(8..=24).contains(&prefix) {
        return Err(bad());
    }
    let mask = u32::MAX << (32 - prefix);
    Ok((u32::from(addr) & mask, prefix))
}

/// The first /24 of the pool that no other enclave has.
pub fn allocate(pool: &str, taken: &[String], bridge: &str) -> Result<NetRecord, EnclaveError> {
    let (base, prefix) = parse_pool(pool)?;
    let count = 1u32 << (24 - prefix);
    for i in 0..count {
        let net = base + (i << 8);
        let subnet = format!("{}/24", Ipv4Addr::from(net));
        if taken.contains(&subnet) {
            continue;
        }
        return Ok(NetRecord {
            subnet,
            gateway: Ipv4Addr::from(net + 1).to_string(),
            bridge: bridge.to_string(),
        });
    }
    Err(err(format!(
        "the subnet pool {pool} is used up ({count} enclaves); remove enclaves or set $NIXOCI_SUBNET_POOL to a larger pool"
    )))
}

/// The host-wide registry of enclave subnets (every nixoci home on the
/// host shares it): `$NIXOCI_RUN_DIR`, else `/run/nixoci`. As a user other
/// than root, whose enclaves live in their own engine's network namespace,
/// it is that engine's: `run/` in nixoci's state directory.
pub fn run_dir() -> PathBuf {
    match std::env::var_os("NIXOCI_RUN_DIR") {
        Some(d) if !d.is_empty() => d.into(),
        _ if crate::rootless::unprivileged() => crate::util::dirs::nixoci_home().join("run"),
        _ => "/run/nixoci".into(),
    }
}

fn registry_entry(subnet: &str) -> PathBuf {
    run_dir().join("subnets").join(subnet.replace('/', "_"))
}

/// IPv4 networks routed where the network lives (`/proc/net/route`, or
/// the engine's).
fn routed_networks(host: &NetHost) -> Vec<(u32, u32)> {
    let file = match host.rootless() {
        Some(ns) => format!("/proc/{}/net/route", ns.pid),
        None => "/proc/net/route".into(),
    };
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dst = u32::from_str_radix(f.get(1)?, 16).ok()?.swap_bytes();
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?.swap_bytes();
            (mask != 0).then_some((dst, mask))
        })
        .collect()
}

/// A host-wide lock in the run directory, held until the file drops.
fn host_lock(name: &str) -> Result<std::fs::File, EnclaveError> {
    let dir = run_dir();
    std::fs::create_dir_all(&dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
    let path = dir.join(name);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| err(format!("{}: {e}", path.display())))?;
    // SAFETY: flock on an open descriptor; released when `lock` drops.
    unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    Ok(lock)
}

/// A host port that CNI's portmap already forwards: its rule in the
/// `CNI-HOSTPORT-DNAT` chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub port: u16,
    pub protocol: String,
    /// The CNI network (`nixoci-<enclave>` for ours) and container id.
    pub network: String,
    pub container: String,
}

/// Parse `iptables -t nat -S CNI-HOSTPORT-DNAT`: one rule per container,
/// `-p tcp -m comment --comment "dnat name: \"N\" id: \"ID\"" -m multiport --dports 80,8000:8010`.
pub fn parse_published(rules: &str) -> Vec<Published> {
    let quoted = |l: &str, key: &str| -> String {
        l.split_once(&format!("{key}: \\\""))
            .and_then(|(_, rest)| rest.split_once("\\\""))
            .map(|(v, _)| v.to_string())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for l in rules.lines().filter(|l| l.starts_with("-A ")) {
        let words: Vec<&str> = l.split_whitespace().collect();
        let after = |flag: &str| {
            words
                .iter()
                .position(|w| *w == flag)
                .and_then(|i| words.get(i + 1))
                .copied()
        };
        let (Some(protocol), Some(ports)) = (after("-p"), after("--dports")) else {
            continue;
        };
        for part in ports.split(',') {
            let (lo, hi) = part.split_once(':').unwrap_or((part, part));
            let (Ok(lo), Ok(hi)) = (lo.parse::<u16>(), hi.parse::<u16>()) else {
                continue;
            };
            for port in lo..=hi {
                out.push(Published {
                    port,
                    protocol: protocol.to_string(),
                    network: quoted(l, "name"),
                    container: quoted(l, "id"),
                });
            }
        }
    }
    out
}

/// Host ports published through CNI portmap right now (nothing if the
/// chain or iptables is missing: portmap makes both its own problem).
fn published_ports() -> Vec<Published> {
    Command::new("iptables")
        .args(["-w", "-t", "nat", "-S", "CNI-HOSTPORT-DNAT"])
        .stderr(Stdio::null())
        .output()
        .map(|o| parse_published(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or_default()
}

/// Refuse a public port that something already holds on this host: a
/// mapping of another container (which would shadow ours, or ours it) or
/// a program listening on 127.0.0.1.
fn check_ports_free(
    service: &str,
    public: &[(u16, u16, String)],
    host: &NetHost,
) -> Result<(), EnclaveError> {
    if let Some(api) = host.rootless().and_then(|ns| ns.api_socket()) {
        let taken = crate::rootless::ports::list(&api).map_err(|e| err(e.to_string()))?;
        for (port, _, proto) in public {
            let proto = proto.to_lowercase();
            if taken.iter().any(|t| {
                t.spec.parent_port == *port && t.spec.proto.trim_end_matches(['4', '6']) == proto
            }) {
                return Err(err(format!(
                    "public port {port}/{proto} of service '{service}' is already published by the rootless engine (a service of another enclave): remove that enclave or give the service another public port"
                )));
            }
        }
    }
    let published = if host.rootless().is_some() {
        Vec::new()
    } else {
        published_ports()
    };
    for (host, _, proto) in public {
        let proto = proto.to_lowercase();
        if let Some(p) = published
            .iter()
            .find(|p| p.port == *host && p.protocol == proto)
        {
            let fix = match p.network.strip_prefix("nixoci-") {
                Some(enclave) => format!("remove that enclave (`nixoci enclave rm -f {enclave}`)"),
                None => "remove that container".to_string(),
            };
            return Err(err(format!(
                "public port {host}/{proto} of service '{service}' is already published on this host by CNI network {} (container {}): {fix} or give the service another public port",
                p.network, p.container
            )));
        }
        let in_use = match proto.as_str() {
            "udp" => std::net::UdpSocket::bind(("127.0.0.1", *host)).is_err(),
            _ => std::net::TcpListener::bind(("127.0.0.1", *host)).is_err(),
        };
        if in_use {
            return Err(err(format!(
                "public port {host}/{proto} of service '{service}' is in use on 127.0.0.1 by another program: stop it or give the service another public port"
            )));
        }
    }
    Ok(())
}

/// Reserve a /24 for the enclave whose state is `dir`: not held by a live
/// enclave of any nixoci home on this host, not routed by the host.
pub fn reserve(
    pool: &str,
    enclave: &str,
    dir: &Path,
    host: &NetHost,
) -> Result<NetRecord, EnclaveError> {
    let reg = run_dir().join("subnets");
    std::fs::create_dir_all(&reg).map_err(|e| err(format!("{}: {e}", reg.display())))?;
    let _lock = host_lock("subnets.lock")?;
    let mut taken = Vec::new();
    for e in std::fs::read_dir(&reg).into_iter().flatten().flatten() {
        let owner = std::fs::read_to_string(e.path()).unwrap_or_default();
        let owner = Path::new(owner.trim());
        let live = owner.join("enclave.json").is_file() || owner == dir;
        if live {
            // Enclave names are host-wide: network and container names
            // in iptables, CNI and containerd carry them.
            if owner != dir && owner.file_name() == Some(std::ffi::OsStr::new(enclave)) {
                return Err(err(format!(
                    "an enclave named '{enclave}' already exists on this host in another nixoci home ({}): choose another name with --enclave, or remove that one",
                    owner.display()
                )));
            }
            taken.push(e.file_name().to_string_lossy().replace('_', "/"));
        } else {
            let _ = std::fs::remove_file(e.path());
        }
    }
    // A /24 that overlaps a network the host routes is taken (two networks
    // overlap when they agree under the shorter of their masks).
    let routed = routed_networks(host);
    let (base, prefix) = parse_pool(pool)?;
    for i in 0..(1u32 << (24 - prefix)) {
        let net = base + (i << 8);
        if routed.iter().any(|(dst, mask)| {
            let m = mask & 0xffff_ff00;
            net & m == dst & m
        }) {
            taken.push(format!("{}/24", Ipv4Addr::from(net)));
        }
    }
    let rec = allocate(pool, &taken, &bridge_name(dir))?;
    // A bridge of this name is left from an earlier life of this very
    // enclave directory (a reboot wipes the registry, not always links).
    delete_link(&rec.bridge, host);
    std::fs::write(registry_entry(&rec.subnet), dir.display().to_string())
        .map_err(|e| err(format!("{}: {e}", reg.display())))?;
    Ok(rec)
}

/// Give the enclave's subnet back.
pub fn release(net: &NetRecord) {
    let _ = std::fs::remove_file(registry_entry(&net.subnet));
}

/// A bridge name within IFNAMSIZ: `nxo` and a hash of the enclave's
/// directory (unique on the host, unlike its name across nixoci homes).
pub fn bridge_name(dir: &Path) -> String {
    use sha2::Digest as _;
    use std::os::unix::ffi::OsStrExt;
    let h = sha2::Sha256::digest(dir.as_os_str().as_bytes());
    format!("nxo{:02x}{:02x}{:02x}{:02x}", h[0], h[1], h[2], h[3])
}

/// Directories searched for the plugins: `$NIXOCI_CNI_PATH`, else the
/// Debian and upstream locations.
pub fn cni_path() -> Vec<PathBuf> {
    match std::env::var("NIXOCI_CNI_PATH") {
        Ok(p) if !p.is_empty() => std::env::split_paths(&p).collect(),
        _ => vec!["/usr/lib/cni".into(), "/opt/cni/bin".into()],
    }
}

fn plugin(name: &str) -> Result<PathBuf, EnclaveError> {
    cni_path()
        .iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            err(format!(
                "the CNI plugin '{name}' is not in {} (install Debian's containernetworking-plugins, or set $NIXOCI_CNI_PATH)",
                cni_path()
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":")
            ))
        })
}

/// Check that every plugin nixoci uses is there.
pub fn check_plugins() -> Result<(), EnclaveError> {
    for p in PLUGINS {
        plugin(p)?;
    }
    Ok(())
}

/// The conflist of an enclave: a bridge with masquerade, host-local IPAM
/// in `ipam_dir`, portmap for public ports (not for a rootless engine,
/// whose ports rootlesskit publishes).
pub fn conflist(enclave: &str, net: &NetRecord, ipam_dir: &Path, host: &NetHost) -> Value {
    let mut list = json!({
        "cniVersion": CNI_VERSION,
        "name": format!("nixoci-{enclave}"),
        "plugins": [
            {
                "type": "bridge",
                "bridge": net.bridge,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": net.subnet, "gateway": net.gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir,
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
        ]
    });
    if !matches!(host, NetHost::Host) {
        list["plugins"]
            .as_array_mut()
            .expect("plugins")
            .retain(|p| p["type"] != "portmap");
    }
    list
}

/// Run one plugin; its stdout as JSON (empty for DEL).
fn exec_plugin(
    command: &str,
    config: &Value,
    container_id: &str,
    netns: &Path,
    ifname: &str,
    host: &NetHost,
) -> Result<Value, EnclaveError> {
    let kind = config["type"].as_str().unwrap_or_default();
    let bin = plugin(kind)?;
    let path = std::env::join_paths(cni_path()).unwrap_or_default();
    let mut child = host
        .command(&bin)?
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot run {}: {e}", bin.display())))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(&serde_json::to_vec(config).expect("JSON"))
        .map_err(|e| err(format!("{}: {e}", bin.display())))?;
    let out = child
        .wait_with_output()
        .map_err(|e| err(format!("{}: {e}", bin.display())))?;
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    if !out.status.success() {
        let msg = parsed["msg"].as_str().unwrap_or("").to_string();
        let details = parsed["details"].as_str().unwrap_or("").to_string();
        return Err(err(format!(
            "CNI plugin {kind} {command} failed: {msg} {details} {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(parsed)
}

/// One plugin's config as the conflist runs it.
fn plugin_conf(list: &Value, p: &Value, prev: Option<&Value>, port_mappings: &[Value]) -> Value {
    let mut conf = p.clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    conf["name"] = list["name"].clone();
    if let Some(prev) = prev {
        conf["prevResult"] = prev.clone();
    }
    if p["capabilities"]["portMappings"] == true {
        conf["runtimeConfig"] = json!({"portMappings": port_mappings});
    }
    conf
}

/// A new network namespace, bind-mounted at `path` so it outlives the
/// thread that made it; in a rootless engine's namespaces, by nixoci's
/// helper there.
pub fn create_netns(path: &Path, host: &NetHost) -> Result<(), EnclaveError> {
    if !matches!(host, NetHost::Host) {
        let out = host
            .command(std::env::current_exe().map_err(|e| err(e.to_string()))?)?
            .args([crate::rootless::HELPER, "netns-create"])
            .arg(path)
            .output()
            .map_err(|e| {
                err(format!(
                    "cannot run nixoci's helper in the rootless engine: {e}"
                ))
            })?;
        if !out.status.success() {
            return Err(err(format!(
                "cannot make a network namespace at {} in the rootless engine: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        return Ok(());
    }
    // A thread of its own: the namespace it enters is its alone, and it
    // ends right after.
    let p = path.to_path_buf();
    std::thread::spawn(move || crate::rootless::make_netns_here(&p))
        .join()
        .map_err(|_| err("the thread making a network namespace panicked"))?
        .map_err(|e| {
            err(format!(
                "cannot make a network namespace at {}: {e} (nixoci needs root, or CAP_SYS_ADMIN, for enclave networks)",
                path.display()
            ))
        })
}

pub fn delete_netns(path: &Path, host: &NetHost) {
    match host {
        NetHost::Host => crate::rootless::remove_netns_here(path),
        NetHost::Engine(_) => {
            if let Ok(exe) = std::env::current_exe() {
                if let Ok(mut c) = host.command(exe) {
                    let _ = c
                        .args([crate::rootless::HELPER, "netns-delete"])
                        .arg(path)
                        .stderr(Stdio::null())
                        .status();
                }
            }
            let _ = std::fs::remove_file(path);
        }
        // Its mount went with the engine's mount namespace.
        NetHost::Gone => {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn attachment_file(dir: &Path, service: &str) -> PathBuf {
    dir.join("net").join(format!("{service}.json"))
}

/// Give `service` a namespace and an address on the enclave's bridge,
/// with `public` (host port, container port, protocol) published on
/// 127.0.0.1.
pub fn attach(
    dir: &Path,
    enclave: &str,
    net: &NetRecord,
    service: &str,
    container_id: &str,
    public: &[(u16, u16, String)],
    host: &NetHost,
) -> Result<Attachment, EnclaveError> {
    let netns = dir.join("netns").join(service);
    let file = attachment_file(dir, service);
    let port_mappings: Vec<Value> = public
        .iter()
        .map(|(host, container, proto)| {
            json!({"hostPort": host, "containerPort": container, "protocol": proto.to_lowercase(), "hostIP": "127.0.0.1"})
        })
        .collect();
    // Checked and published under one host-wide lock, so two runs never
    // both take a port.
    let _lock = if public.is_empty() {
        None
    } else {
        let lock = host_lock("ports.lock")?;
        check_ports_free(service, public, host)?;
        Some(lock)
    };
    create_netns(&netns, host)?;
    let mut att = Attachment {
        container_id: container_id.into(),
        netns: netns.clone(),
        ip: String::new(),
        result: Value::Null,
        port_mappings,
        rootless_ports: Vec::new(),
    };
    // Recorded first: a killed run leaves what `enclave rm` needs.
    write_attachment(&file, &att)?;
    let result = (|| {
        let lo = json!({"cniVersion": CNI_VERSION, "name": "lo", "type": "loopback"});
        exec_plugin("ADD", &lo, container_id, &netns, "lo", host)?;
        let list = conflist(enclave, net, &dir.join("ipam"), host);
        let mut prev: Option<Value> = None;
        for p in list["plugins"].as_array().expect("plugins") {
            let conf = plugin_conf(&list, p, prev.as_ref(), &att.port_mappings);
            prev = Some(exec_plugin(
                "ADD",
                &conf,
                container_id,
                &netns,
                "eth0",
                host,
            )?);
        }
        Ok::<Value, EnclaveError>(prev.unwrap_or(Value::Null))
    })();
    match result {
        Ok(r) => {
            let ip = r["ips"][0]["address"]
                .as_str()
                .and_then(|a| a.split('/').next())
                .ok_or_else(|| err(format!("the bridge plugin gave no address: {r}")))?
                .to_string();
            att.ip = ip;
            att.result = r;
            write_attachment(&file, &att)?;
            if let Err(e) = publish_rootless(&mut att, public, host, &file) {
                let _ = detach(dir, enclave, net, service, host);
                return Err(e);
            }
            Ok(att)
        }
        Err(e) => {
            let _ = detach(dir, enclave, net, service, host);
            Err(e)
        }
    }
}

/// On a rootless engine: publish `public` on the host's 127.0.0.1 through
/// rootlesskit, to the service's address; each recorded as it is made.
fn publish_rootless(
    att: &mut Attachment,
    public: &[(u16, u16, String)],
    host: &NetHost,
    file: &Path,
) -> Result<(), EnclaveError> {
    let Some(ns) = host.rootless() else {
        return Ok(());
    };
    if public.is_empty() {
        return Ok(());
    }
    let api = ns.api_socket().ok_or_else(|| {
        err(format!(
            "public ports need rootlesskit's port API, and the rootless containerd at {} runs under no rootlesskit nixoci knows (its own engine's, or $XDG_RUNTIME_DIR/containerd-rootless)",
            ns.socket.display()
        ))
    })?;
    for (host_port, container_port, proto) in public {
        let spec = crate::rootless::ports::PortSpec {
            proto: proto.to_lowercase(),
            parent_ip: "127.0.0.1".into(),
            parent_port: *host_port,
            child_ip: att.ip.clone(),
            child_port: *container_port,
        };
        let st = crate::rootless::ports::add(&api, &spec).map_err(|e| err(e.to_string()))?;
        att.rootless_ports.push(st.id);
        write_attachment(file, att)?;
    }
    Ok(())
}

fn write_attachment(file: &Path, att: &Attachment) -> Result<(), EnclaveError> {
    if let Some(d) = file.parent() {
        std::fs::create_dir_all(d).map_err(|e| err(format!("{}: {e}", d.display())))?;
    }
    std::fs::write(file, serde_json::to_vec_pretty(att).expect("JSON"))
        .map_err(|e| err(format!("{}: {e}", file.display())))
}

/// Undo `attach` (as far as it got): DEL through the conflist in reverse,
/// release the address, remove the namespace.
pub fn detach(
    dir: &Path,
    enclave: &str,
    net: &NetRecord,
    service: &str,
    host: &NetHost,
) -> Result<(), EnclaveError> {
    let file = attachment_file(dir, service);
    let Ok(text) = std::fs::read(&file) else {
        return Ok(());
    };
    let att: Attachment =
        serde_json::from_slice(&text).map_err(|e| err(format!("{}: {e}", file.display())))?;
    let mut first_error = None;
    if let Some(api) = host.rootless().and_then(|ns| ns.api_socket()) {
        for id in &att.rootless_ports {
            if let Err(e) = crate::rootless::ports::remove(&api, *id) {
                first_error.get_or_insert(err(e.to_string()));
            }
        }
    }
    // A stopped rootless engine took the namespace, bridge and ports with
    // it: only the address book is left to clear.
    if !matches!(host, NetHost::Gone) {
        let list = conflist(enclave, net, &dir.join("ipam"), host);
        let prev = (!att.result.is_null()).then_some(&att.result);
        for p in list["plugins"].as_array().expect("plugins").iter().rev() {
            let conf = plugin_conf(&list, p, prev, &att.port_mappings);
            if let Err(e) = exec_plugin("DEL", &conf, &att.container_id, &att.netns, "eth0", host) {
                first_error.get_or_insert(e);
            }
        }
    } else {
        let _ = std::fs::remove_dir_all(dir.join("ipam"));
    }
    delete_netns(&att.netns, host);
    let _ = std::fs::remove_file(&file);
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Detach every service recorded, then delete the bridge.
pub fn teardown(
    dir: &Path,
    enclave: &str,
    net: &NetRecord,
    host: &NetHost,
) -> Result<(), EnclaveError> {
    let mut services: Vec<String> = std::fs::read_dir(dir.join("net"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .map(String::from)
        })
        .collect();
    services.sort();
    let mut first_error = None;
    for s in services {
        if let Err(e) = detach(dir, enclave, net, &s, host) {
            first_error.get_or_insert(e);
        }
    }
    delete_link(&net.bridge, host);
    release(net);
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Delete a network link if it exists (`ip link delete`).
pub fn delete_link(name: &str, host: &NetHost) {
    match host {
        NetHost::Host if !Path::new("/sys/class/net").join(name).exists() => {}
        NetHost::Gone => {}
        _ => {
            if let Ok(mut c) = host.command("ip") {
                let _ = c
                    .args(["link", "delete", name])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_ports_are_read_from_portmap_rules() {
        // Two enclaves that published the same port (recorded from a host
        // before nixoci checked for that).
        let real = include_str!("../../fixtures/iptables/cni-hostport-dnat.txt");
        let got = parse_published(real);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            Published {
                port: 18500,
                protocol: "tcp".into(),
                network: "nixoci-na".into(),
                container: "nixoci-na-srv".into(),
            }
        );
        assert_eq!(got[1].network, "nixoci-nb");
        // Several ports, ranges, udp.
        let more = r#"-A CNI-HOSTPORT-DNAT -p udp -m comment --comment "dnat name: \"k8s\" id: \"abc\"" -m multiport --dports 53,8000:8002 -j CNI-DN-x"#;
        let ports: Vec<(u16, String)> = parse_published(more)
            .into_iter()
            .map(|p| (p.port, p.protocol))
            .collect();
        let udp = |p: u16| (p, "udp".to_string());
        assert_eq!(ports, vec![udp(53), udp(8000), udp(8001), udp(8002)]);
        assert!(parse_published("-N CNI-HOSTPORT-DNAT\n").is_empty());
    }

    #[test]
    fn subnets_come_from_the_pool_in_order() {
        let a = allocate(DEFAULT_POOL, &[], "nxoa").unwrap();
        assert_eq!(a.subnet, "10.199.0.0/24");
        assert_eq!(a.gateway, "10.199.0.1");
        let b = allocate(DEFAULT_POOL, std::slice::from_ref(&a.subnet), "nxob").unwrap();
        assert_eq!(b.subnet, "10.199.1.0/24");
        assert!(allocate("10.5.7.0/24", &["10.5.7.0/24".into()], "nxoc").is_err());
        for bad in ["10.0.0.0", "10.0.0.0/25", "x/16", "10.0.0.0/4"] {
            assert!(parse_pool(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_pool("10.1.2.3/16").unwrap(),
            (u32::from(Ipv4Addr::new(10, 1, 0, 0)), 16)
        );
        let long = bridge_name(Path::new(
            "/a/long/home/enclaves/an-enclave-with-a-long-name",
        ));
        assert!(long.len() <= 15);
        assert_ne!(
            bridge_name(Path::new("/h1/enclaves/e")),
            bridge_name(Path::new("/h2/enclaves/e"))
        );
    }
}
