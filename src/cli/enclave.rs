//! `nixoci enclave ls | inspect NAME | rm [-f] NAME`.

use super::{usage, ContainerdArgs};
use clap::Subcommand;
use nixoci::enclave::{self, service, Enclave};
use std::time::Duration;

#[derive(Subcommand)]
pub enum EnclaveCommand {
    /// List enclaves.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show an enclave's services, their state, images and ports.
    Inspect {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove an enclave: its tasks, containers, snapshots and state (images stay).
    Rm {
        /// Remove it even if services are running.
        #[arg(short, long)]
        force: bool,
        name: String,
    },
}

/// The state of each service of an enclave: running, stopped, or missing.
pub fn states(
    rt: &tokio::runtime::Handle,
    client: &nixoci::containerd::Client,
    e: &Enclave,
) -> anyhow::Result<Vec<(String, String)>> {
    let c = client.in_namespace(&e.record.namespace);
    let mut out = Vec::new();
    for s in e.record.services.values() {
        let state = rt.block_on(async {
            match nixoci::containerd::containers::get(&c, &s.container_id).await? {
                None => Ok::<_, anyhow::Error>("missing".to_string()),
                Some(_) => Ok(match service::exited(&c, &s.container_id).await? {
                    None => "running".to_string(),
                    Some(code) => format!("stopped (exit {code})"),
                }),
            }
        })?;
        out.push((s.name.clone(), state));
    }
    Ok(out)
}

/// Remove every container of the enclave (by label, so leftovers of a
/// killed run go too), then its state directory.
pub fn remove(
    rt: &tokio::runtime::Handle,
    client: &nixoci::containerd::Client,
    e: Enclave,
    snapshotter: &str,
) -> anyhow::Result<usize> {
    let c = client.in_namespace(&e.record.namespace);
    let name = e.record.name.clone();
    let n = rt.block_on(async {
        let list =
            nixoci::containerd::containers::list_labelled(&c, enclave::ENCLAVE_LABEL, Some(&name))
                .await?;
        for ct in &list {
            service::remove(&c, snapshotter, &ct.id, Duration::from_secs(10)).await?;
        }
        Ok::<_, anyhow::Error>(list.len())
    })?;
    if let Some(net) = &e.record.network {
        nixoci::enclave::network::teardown(&e.dir, &name, net, &e.net_host())?;
    }
    let dir = e.dir.clone();
    drop(e);
    std::fs::remove_dir_all(&dir).map_err(|err| anyhow::anyhow!("{}: {err}", dir.display()))?;
    Ok(n)
}

pub fn run(c: EnclaveCommand, args: &ContainerdArgs) -> anyhow::Result<()> {
    match c {
        EnclaveCommand::Ls { json } => {
            let names = enclave::list_names();
            let (rt, client) = args.connect(true)?;
            let mut rows = Vec::new();
            for n in names {
                let e = Enclave::open(&n)?;
                let st = states(&rt, &client, &e)?;
                let running = st.iter().filter(|(_, s)| s == "running").count();
                rows.push(serde_json::json!({
                    "name": n, "namespace": e.record.namespace, "created": e.record.created,
                    "services": st.len(), "running": running,
                }));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("NAME\tNAMESPACE\tSERVICES\tRUNNING\tCREATED");
                for r in rows {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        r["name"].as_str().unwrap_or(""),
                        r["namespace"].as_str().unwrap_or(""),
                        r["services"],
                        r["running"],
                        r["created"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(())
        }
        EnclaveCommand::Inspect { name, json } => {
            enclave::check_name(&name).map_err(usage)?;
            let e = Enclave::open(&name)?;
            let (rt, client) = args.connect(true)?;
            let st = states(&rt, &client, &e)?;
            if json {
                let mut v = serde_json::to_value(&e.record)?;
                for (s, state) in &st {
                    v["services"][s]["state"] = serde_json::json!(state);
                }
                v["dir"] = serde_json::json!(e.dir);
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "enclave {} (namespace {}, created {})",
                    e.record.name, e.record.namespace, e.record.created
                );
                println!("state: {}", e.dir.display());
                println!("SERVICE\tSTATE\tIMAGE\tADDRESS\tPORTS");
                for (s, state) in &st {
                    let r = &e.record.services[s];
                    let ports: Vec<String> = r
                        .info
                        .ports
                        .iter()
                        .map(|(id, p)| format!("{id}={}/{}", p.number, p.transport_protocol))
                        .collect();
                    println!(
                        "{s}\t{state}\t{}\t{}\t{}",
                        r.image,
                        r.info.ip_address,
                        ports.join(" ")
                    );
                }
                if !e.record.artifacts.is_empty() {
                    println!("files artifacts: {}", e.record.artifacts.join(", "));
                }
            }
            Ok(())
        }
        EnclaveCommand::Rm { force, name } => {
            enclave::check_name(&name).map_err(usage)?;
            let e = Enclave::open(&name)?;
            let (rt, client) = args.connect(true)?;
            if !force {
                let running: Vec<String> = states(&rt, &client, &e)?
                    .into_iter()
                    .filter(|(_, s)| s == "running")
                    .map(|(n, _)| n)
                    .collect();
                if !running.is_empty() {
                    return Err(usage(format!(
                        "enclave {name} has running services ({}); stop them or use `nixoci enclave rm -f {name}`",
                        running.join(", ")
                    )));
                }
            }
            let n = remove(&rt, &client, e, &client.snapshotter(&args.snapshotter))?;
            println!("removed enclave {name} ({n} containers)");
            Ok(())
        }
    }
}
