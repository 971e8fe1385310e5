//! `nixoci run PACKAGE_DIR [ARGS]`: interpret the package, build its Nix
//! images, run its instructions in an enclave.

use super::{usage, ContainerdArgs};
use nixoci::enclave::execute::{build_images, Executor, Options};
use nixoci::enclave::{self, Enclave};
use nixoci::pipeline::cache::{default_cache_dir, LayerCache};
use nixoci::plan::{self, Package, RunOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  nixoci run ./my-package\n  nixoci run github.com/kurtosis-tech/redis-package@main\n  nixoci run ./my-package '{\"port\": 8080}' --enclave dev\n  nixoci run ./my-package --args-file args.yaml --dry-run"
)]
pub struct RunArgs {
    /// The package: a directory (kurtosis.yml and main.star) or a locator,
    /// github.com/OWNER/REPO[/PATH][@VERSION], fetched with git.
    #[arg(value_name = "PACKAGE")]
    package: String,
    /// Fetch tags, branches and default branches of remote packages again,
    /// even when the package cache has them (without it, a package fetched
    /// once is read from the cache, offline).
    #[arg(long)]
    update: bool,
    /// Arguments: a JSON or YAML object; its keys become keyword arguments
    /// (or the whole object, for `def run(plan, args)`).
    #[arg(value_name = "ARGS_JSON")]
    args: Option<String>,
    /// The enclave to run in (created if missing; default: a new name).
    #[arg(long)]
    enclave: Option<String>,
    /// Print the instructions and stop.
    #[arg(long)]
    dry_run: bool,
    /// Read the arguments from a JSON or YAML file.
    #[arg(long, value_name = "FILE")]
    args_file: Option<PathBuf>,
    /// The package's main file.
    #[arg(long, default_value = "main.star", value_name = "FILE")]
    main_file: String,
    /// The function the main file defines and nixoci calls.
    #[arg(long, default_value = "run", value_name = "NAME")]
    main_function_name: String,
    /// Print one JSON document at the end (images, instructions, output).
    #[arg(long)]
    json: bool,
    /// Where new enclaves take their /24 subnet from.
    #[arg(long, env = "NIXOCI_SUBNET_POOL", default_value = nixoci::enclave::network::DEFAULT_POOL, value_name = "CIDR")]
    subnet_pool: String,
}

pub fn run(a: RunArgs, containerd: &ContainerdArgs) -> anyhow::Result<()> {
    let args = match (&a.args, &a.args_file) {
        (Some(_), Some(_)) => {
            return Err(usage(
                "give the arguments either inline or with --args-file, not both",
            ))
        }
        (Some(s), None) => plan::parse_args(s, "the arguments").map_err(usage)?,
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| usage(format!("--args-file {}: {e}", f.display())))?;
            plan::parse_args(&text, &format!("--args-file {}", f.display())).map_err(usage)?
        }
        (None, None) => serde_json::Value::Null,
    };
    nixoci::containerd::check_namespace(&containerd.namespace).map_err(usage)?;
    nixoci::enclave::network::parse_pool(&a.subnet_pool).map_err(usage)?;
    let resolver = std::rc::Rc::new(nixoci::packages::git::GitResolver::new(
        &nixoci::util::dirs::cache_dir_or_home(),
        a.update,
    ));
    let package = open_package(&a.package, &*resolver)?;
    let name = match &a.enclave {
        Some(n) => {
            enclave::check_name(n).map_err(usage)?;
            n.clone()
        }
        None => enclave::generate_name(),
    };
    // Services and artifacts already in the enclave count for validation.
    let mut opts = RunOptions {
        main_file: a.main_file.clone(),
        main_function: a.main_function_name.clone(),
        args,
        ..Default::default()
    };
    if enclave::list_names().contains(&name) {
        let e = Enclave::open(&name)?;
        opts.existing_services = e.record.services.values().map(|s| s.info.clone()).collect();
        opts.existing_artifacts = e.record.artifacts.clone();
    }
    let plan = plan::interpret_with(&package, resolver, &opts).map_err(usage)?;
    if a.dry_run {
        if a.json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            for (i, s) in plan.steps.iter().enumerate() {
                println!("{:>3}. {}: {}", i + 1, s.location, s.instruction);
            }
            if !plan.output.is_null() {
                println!("returns {}", plan.output);
            }
        }
        return Ok(());
    }
    nixoci::enclave::network::check_plugins()?;
    let say = |m: String| eprintln!("{m}");
    let ctx = containerd.sink_context(nixoci::pipeline::source_date_epoch().map_err(usage)?);
    let client = ctx.containerd(None);
    super::print_notes(&ctx);
    let client = client?;
    let rt = ctx.runtime()?;
    let exec_opts = Options {
        snapshotter: client.snapshotter(&containerd.snapshotter),
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        nix: nixoci::nix::Nix {
            closure_cache: nixoci::nix::ClosureCache::new(default_cache_dir()),
            ..Default::default()
        },
        cache: LayerCache::new(default_cache_dir()),
        stop_grace: Duration::from_secs(10),
        registry: containerd.registry_options(),
    };
    let images = build_images(&plan, &ctx, &exec_opts, &say)?;
    let (mut enclave, created) = Enclave::open_or_create(
        &name,
        &containerd.namespace,
        &a.subnet_pool,
        client.rootless.as_deref(),
    )?;
    eprintln!(
        "{} enclave {name} (namespace {}, subnet {})",
        if created { "created" } else { "using" },
        containerd.namespace,
        enclave
            .record
            .network
            .as_ref()
            .map_or("none: host network", |n| n.subnet.as_str())
    );
    let mut exec = Executor::new(&rt, &ctx, client, &mut enclave, &exec_opts, &images, &plan);
    let report = match exec.run(&plan, &say) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "enclave {name} keeps what ran; inspect it with `nixoci enclave inspect {name}`, remove it with `nixoci enclave rm -f {name}`"
            );
            return Err(e.into());
        }
    };
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["images"] = serde_json::to_value(&images)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        eprintln!(
            "\nenclave {name}: {} services",
            enclave.record.services.len()
        );
        for s in enclave.record.services.values() {
            let ports: Vec<String> = s
                .info
                .ports
                .iter()
                .map(|(id, p)| format!("{id}={}", p.number))
                .collect();
            eprintln!(
                "  {}\t{}\t{}\t{}",
                s.name,
                s.info.ip_address,
                s.image,
                ports.join(" ")
            );
        }
        if !report.output.is_null() {
            println!("{}", serde_json::to_string_pretty(&report.output)?);
        }
    }
    Ok(())
}

/// The package to run: a directory, else a locator fetched with git.
fn open_package(arg: &str, resolver: &dyn nixoci::packages::Resolver) -> anyhow::Result<Package> {
    use nixoci::packages::Locator;
    if Path::new(arg).exists() || !Locator::is_remote(arg) {
        return Package::open(Path::new(arg)).map_err(usage);
    }
    let loc = Locator::parse(arg).map_err(usage)?;
    let co = resolver.checkout(&loc.repo, loc.version.as_deref())?;
    let dir = co.dir.join(&loc.path);
    let mut p = Package::open(&dir).map_err(|e| {
        usage(format!(
            "{arg}: {e} (at {}; a locator names the directory of kurtosis.yml)",
            co.commit
        ))
    })?;
    p.origin = Some(nixoci::plan::package::Origin {
        label: loc.repo.clone(),
        version: loc.version.clone(),
        base: co.dir.canonicalize()?,
        commit: Some(co.commit.clone()),
    });
    Ok(p)
}
