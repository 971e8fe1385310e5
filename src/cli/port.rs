//! `nixoci port print ENCLAVE SERVICE PORT_ID`: a URL that answers from the host.

use super::usage;
use clap::Subcommand;
use nixoci::enclave::{self, Enclave};

#[derive(Subcommand)]
pub enum PortCommand {
    /// Print where a service's port answers from the host: its public port
    /// on 127.0.0.1 if it has one, else the service's own address.
    Print {
        enclave: String,
        service: String,
        port_id: String,
    },
}

pub fn run(c: PortCommand) -> anyhow::Result<()> {
    let PortCommand::Print {
        enclave: name,
        service,
        port_id,
    } = c;
    enclave::check_name(&name).map_err(usage)?;
    let e = Enclave::open(&name)?;
    let s = e.service(&service)?;
    let port = s.config.ports.get(&port_id).ok_or_else(|| {
        let known: Vec<&str> = s.config.ports.keys().map(String::as_str).collect();
        anyhow::anyhow!(
            "service '{service}' has no port '{port_id}' (ports: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )
    })?;
    let (host, number) = match s.config.public_ports.get(&port_id) {
        Some(p) => ("127.0.0.1".to_string(), p.number),
        None => (s.info.ip_address.clone(), port.number),
    };
    // A rootless engine's service addresses exist only in its network
    // namespace: from the host, only a public port answers.
    if e.record.engine.is_some() && !s.config.public_ports.contains_key(&port_id) {
        return Err(anyhow::anyhow!(
            "port '{port_id}' of service '{service}' is not public, and the enclave runs on a rootless containerd, whose service addresses ({}:{}) are reachable only inside the engine (from other services, or `nixoci service exec`): publish it with `public_ports = {{\"{port_id}\": PortSpec({})}}` in the service's ServiceConfig",
            s.info.ip_address,
            port.number,
            port.number
        ));
    }
    if port.application_protocol.is_empty() {
        println!("{host}:{number}");
    } else {
        println!("{}://{host}:{number}", port.application_protocol);
    }
    Ok(())
}
