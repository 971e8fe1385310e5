//! `nixoci __in-engine OP ARGS`: what nixoci does inside a rootless
//! engine's namespaces, run there by [`nixoci::rootless::EngineNs::helper`]
//! (a fork that joined them before `exec`). Not for users; errors go to
//! stderr, the result to stdout.

use std::ffi::OsString;
use std::path::Path;

pub fn main(args: Vec<OsString>) -> i32 {
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let op = arg(0);
    let r: Result<String, String> = match op.to_str() {
        // rootlesskit's command: inside the new namespaces, before the
        // engine starts (see `nixoci::rootless::prepare_engine_namespace`).
        Some("containerd") => {
            nixoci::rootless::prepare_engine_namespace();
            let mut cmd = std::process::Command::new(arg(1));
            cmd.args(&args[2.min(args.len())..]);
            let e = std::os::unix::process::CommandExt::exec(&mut cmd);
            Err(format!("cannot run {}: {e}", arg(1).to_string_lossy()))
        }
        Some("netns-create") => nixoci::rootless::make_netns_here(Path::new(&arg(1)))
            .map(|()| String::new())
            .map_err(|e| e.to_string()),
        Some("netns-delete") => {
            nixoci::rootless::remove_netns_here(Path::new(&arg(1)));
            Ok(String::new())
        }
        Some("http") => {
            let ms = arg(1)
                .to_str()
                .and_then(|m| m.parse::<u64>().ok())
                .unwrap_or(10_000);
            let mut input = Vec::new();
            match std::io::Read::read_to_end(&mut std::io::stdin(), &mut input) {
                Ok(_) => {
                    nixoci::enclave::http::serve_one(&input, std::time::Duration::from_millis(ms))
                }
                Err(e) => Err(e.to_string()),
            }
        }
        Some("copy-out") => match arg(1).to_str().and_then(|p| p.parse::<u32>().ok()) {
            Some(pid) => nixoci::enclave::copy_out::copy_out(
                pid,
                &arg(2).to_string_lossy(),
                Path::new(&arg(3)),
            )
            .map(|n| n.to_string())
            .map_err(|e| e.to_string()),
            None => Err(format!(
                "copy-out: '{}' is no pid",
                arg(1).to_string_lossy()
            )),
        },
        _ => Err(format!(
            "{} is nixoci's own helper inside a rootless engine; unknown operation '{}'",
            nixoci::rootless::HELPER,
            op.to_string_lossy()
        )),
    };
    match r {
        Ok(out) => {
            println!("{out}");
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}
