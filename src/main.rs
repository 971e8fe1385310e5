//! The nixoci command line. Errors are reported here, with the exit codes of
//! DESIGN.md: 0 success, 1 failure, 2 usage or validation error, 130
//! interrupted (Ctrl-C or SIGTERM: the build stops at a clean point and removes what it wrote).

mod cli;

use clap::Parser;

fn main() {
    // nixoci's helper inside a rootless engine's namespaces: before
    // anything else, single-threaded.
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(nixoci::rootless::HELPER))
    {
        std::process::exit(cli::helper::main(std::env::args_os().skip(2).collect()));
    }
    let args = cli::Cli::parse();
    nixoci::util::interrupt::install();
    cli::init_tracing(args.verbose);
    let code = match cli::run(args) {
        Ok(()) => 0,
        Err(e) => {
            if let Some(cli::ExitCode(code)) = e.downcast_ref::<cli::ExitCode>() {
                std::process::exit(*code);
            }
            let code = if nixoci::util::interrupt::interrupted() {
                130
            } else if e.downcast_ref::<cli::Usage>().is_some() {
                2
            } else {
                1
            };
            // The chain, each cause once (most errors already show theirs).
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg = format!("{msg}: {c}");
                }
            }
            eprintln!("error: {msg}");
            code
        }
    };
    std::process::exit(code);
}
