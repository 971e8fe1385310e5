use clap::Subcommand;
use nixoci::containerd::engine::{nixoci_home, Engine};

#[derive(Subcommand)]
pub enum EngineCommand {
    /// Start the private containerd (config, root, state, socket and log under $NIXOCI_HOME/containerd).
    Start,
    /// Stop the private containerd.
    Stop,
    /// Show whether the private containerd is running, and where.
    Status,
}

pub fn run(c: EngineCommand) -> anyhow::Result<()> {
    let rt = nixoci::util::runtime::handle()?;
    let engine = Engine::new(&nixoci_home());
    match c {
        EngineCommand::Start => {
            let started = rt.block_on(engine.start())?;
            let verb = if started {
                "started"
            } else {
                "already running"
            };
            println!(
                "private containerd {verb} at {} (log: {})",
                engine.socket().display(),
                engine.log().display()
            );
        }
        EngineCommand::Stop => {
            if rt.block_on(engine.stop())? {
                println!("stopped the private containerd");
            } else {
                println!("the private containerd is not running");
            }
        }
        EngineCommand::Status => {
            let s = rt.block_on(engine.status());
            match (&s.version, s.pid) {
                (Some(v), pid) => println!(
                    "running: containerd {v} at {} (pid {}, log {})",
                    s.socket.display(),
                    pid.map_or("unknown".into(), |p| p.to_string()),
                    s.log.display()
                ),
                (None, _) => println!("not running (socket {})", s.socket.display()),
            }
            if s.rootless {
                match &s.rootlesskit {
                    Some(i) => println!(
                        "rootless: yes (rootlesskit {}, network {}, port driver {}, child pid {}; state {})",
                        i["version"].as_str().unwrap_or("?"),
                        i["networkDriver"]["driver"].as_str().unwrap_or("?"),
                        i["portDriver"]["driver"].as_str().unwrap_or("?"),
                        i["childPID"],
                        engine.rootlesskit_dir().display()
                    ),
                    None => println!("rootless: yes (nixoci runs as a user other than root; starts under rootlesskit)"),
                }
            } else {
                println!("rootless: no");
            }
            if let Some(snap) = &s.snapshotter {
                match &s.overlay_error {
                    Some(why) if snap != "overlayfs" => {
                        println!("snapshotter: {snap} (overlayfs cannot be used here: {why})")
                    }
                    _ => println!("snapshotter: {snap}"),
                }
            }
        }
    }
    Ok(())
}
