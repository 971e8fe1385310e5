//! `nixoci service logs [-f] | exec | stop | start | rm ENCLAVE SERVICE`.

use super::{usage, ContainerdArgs};
use clap::Subcommand;
use nixoci::enclave::{self, service, Enclave};
use std::io::{Read, Seek, Write};
use std::time::Duration;

#[derive(Subcommand)]
pub enum ServiceCommand {
    /// Print a service's output (stdout and stderr); -f follows it.
    Logs {
        #[arg(short, long)]
        follow: bool,
        enclave: String,
        service: String,
    },
    /// Run a command in a running service; exits with its exit code.
    Exec {
        enclave: String,
        service: String,
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// An interactive shell in a running service (bash where the image has
    /// it, else sh), on a terminal; exits with the shell's exit code.
    Shell { enclave: String, service: String },
    /// Stop a service (SIGTERM, then SIGKILL after 10 s); it can be started again.
    Stop { enclave: String, service: String },
    /// Start a stopped service.
    Start { enclave: String, service: String },
    /// Remove a service from its enclave.
    Rm { enclave: String, service: String },
}

/// A command's own exit code, passed through by `main`.
#[derive(Debug, thiserror::Error)]
#[error("the command exited with code {0}")]
pub struct ExitCode(pub i32);

fn open(enclave_name: &str, service_name: &str) -> anyhow::Result<Enclave> {
    enclave::check_name(enclave_name).map_err(usage)?;
    let e = Enclave::open(enclave_name)?;
    e.service(service_name)?;
    Ok(e)
}

/// The enclave, its service's record, and containerd in its namespace.
fn connected(
    enclave_name: &str,
    service_name: &str,
    args: &ContainerdArgs,
) -> anyhow::Result<(
    Enclave,
    nixoci::enclave::ServiceRecord,
    tokio::runtime::Handle,
    nixoci::containerd::Client,
)> {
    let e = open(enclave_name, service_name)?;
    let (rt, client) = args.connect(true)?;
    let client = client.in_namespace(&e.record.namespace);
    let r = e.service(service_name)?.clone();
    Ok((e, r, rt, client))
}

pub fn run(c: ServiceCommand, args: &ContainerdArgs) -> anyhow::Result<()> {
    match c {
        ServiceCommand::Logs {
            follow,
            enclave,
            service: s,
        } => {
            let e = open(&enclave, &s)?;
            let path = e.log_path(&s);
            let id = e.service(&s)?.container_id.clone();
            let ns = e.record.namespace.clone();
            drop(e);
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound && !follow => return Ok(()),
                Err(err) => return Err(anyhow::anyhow!("{}: {err}", path.display())),
            };
            let mut out = std::io::stdout();
            std::io::copy(&mut f, &mut out)?;
            out.flush()?;
            if follow {
                let (rt, client) = args.connect(true)?;
                let client = client.in_namespace(&ns);
                let mut buf = Vec::new();
                loop {
                    if nixoci::util::interrupt::interrupted() {
                        return Ok(());
                    }
                    buf.clear();
                    f.read_to_end(&mut buf)?;
                    if buf.is_empty() {
                        if rt.block_on(service::exited(&client, &id))?.is_some() {
                            return Ok(());
                        }
                        std::thread::sleep(Duration::from_millis(200));
                        // A truncated file starts over.
                        let len = f.metadata()?.len();
                        if f.stream_position()? > len {
                            f.seek(std::io::SeekFrom::Start(0))?;
                        }
                        continue;
                    }
                    out.write_all(&buf)?;
                    out.flush()?;
                }
            }
            Ok(())
        }
        ServiceCommand::Exec {
            enclave,
            service: s,
            command,
        } => {
            let (e, r, rt, client) = connected(&enclave, &s, args)?;
            let scratch = e.dir.join("exec");
            let (code, output) =
                rt.block_on(service::exec(&client, &r.container_id, &command, &scratch))?;
            print!("{output}");
            std::io::stdout().flush()?;
            if code != 0 {
                return Err(ExitCode(code as i32).into());
            }
            Ok(())
        }
        ServiceCommand::Shell {
            enclave,
            service: s,
        } => {
            let (e, r, rt, client) = connected(&enclave, &s, args)?;
            let scratch = e.dir.join("exec");
            drop(e);
            let raw = RawTerminal::enter();
            let size = raw.as_ref().and_then(|t| t.size());
            let code = rt.block_on(service::shell(
                &client,
                &r.container_id,
                &scratch,
                size,
                Box::new(std::io::stdin()),
                Box::new(std::io::stdout()),
            ));
            drop(raw);
            let code = code?;
            if code != 0 {
                return Err(ExitCode(code as i32).into());
            }
            Ok(())
        }
        ServiceCommand::Stop {
            enclave,
            service: s,
        } => {
            let (_e, r, rt, client) = connected(&enclave, &s, args)?;
            let grace = Duration::from_secs(10);
            match rt.block_on(service::stop_task(&client, &r.container_id, grace))? {
                Some(code) => println!("stopped {s} (exit {code})"),
                None => println!("{s} was not running"),
            }
            Ok(())
        }
        ServiceCommand::Start {
            enclave,
            service: s,
        } => {
            let (e, r, rt, client) = connected(&enclave, &s, args)?;
            let log = e.log_path(&s);
            rt.block_on(async {
                service::start_task(
                    &client,
                    &client.snapshotter(&args.snapshotter),
                    &r.container_id,
                    &log,
                )
                .await?;
                service::check_started(
                    &client,
                    &r.container_id,
                    &s,
                    &r.info.ip_address,
                    &r.config,
                    &log,
                )
                .await
            })?;
            println!("started {s}");
            Ok(())
        }
        ServiceCommand::Rm {
            enclave,
            service: s,
        } => {
            let (mut e, r, rt, client) = connected(&enclave, &s, args)?;
            rt.block_on(service::remove(
                &client,
                &client.snapshotter(&args.snapshotter),
                &r.container_id,
                Duration::from_secs(10),
            ))?;
            e.forget_service(&s)?;
            println!("removed {s}");
            Ok(())
        }
    }
}

/// Our terminal in raw mode while a shell runs (keys go through as typed;
/// the container's terminal echoes and edits), restored on drop. `None`
/// when standard input is no terminal.
struct RawTerminal {
    saved: libc::termios,
}

impl RawTerminal {
    fn enter() -> Option<Self> {
        // SAFETY: isatty, tcgetattr and tcsetattr on fd 0 with a termios
        // owned here; results are checked.
        unsafe {
            if libc::isatty(0) != 1 {
                return None;
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return None;
            }
            Some(RawTerminal { saved })
        }
    }

    /// Columns and rows of the terminal on standard output (or input).
    fn size(&self) -> Option<(u16, u16)> {
        for fd in [1, 0] {
            // SAFETY: TIOCGWINSZ into a winsize owned here.
            let mut w: libc::winsize = unsafe { std::mem::zeroed() };
            if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut w) } == 0 && w.ws_col > 0 {
                return Some((w.ws_col, w.ws_row));
            }
        }
        None
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read in `enter`.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.saved);
        }
    }
}
