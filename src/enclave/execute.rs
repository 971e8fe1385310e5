//! Execution of a plan in an enclave: every distinct Nix image is built
//! once (in parallel, bounded) into containerd, then the instructions run
//! in order, with future references resolved as their values become known.

use super::service::{self, NewService, ResolvedImage};
use super::spec::Bind;
use super::{container_id, http, network, Enclave, EnclaveError, ServiceRecord};
use crate::containerd::Client;
use crate::nix::{FlakeRef, Nix};
use crate::oci::reference::ImageRef;
use crate::pipeline::cache::LayerCache;
use crate::pipeline::{build_service_image, ServiceImage};
use crate::plan::duration::GoDuration;
use crate::plan::future::Runtime as Values;
use crate::plan::{
    Artifact, Assertion, ImageSource, Instruction, NixBuildSpec, Plan, ReadyCondition, Recipe,
    ServiceConfig,
};
use crate::sink::SinkContext;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("building image {image} (NixBuildSpec at {flake}): {source}")]
    Build {
        image: String,
        flake: String,
        source: Box<crate::pipeline::PipelineError>,
    },
    #[error("{location}: {instruction}: {source}")]
    Step {
        location: String,
        instruction: String,
        source: Box<StepError>,
    },
    #[error("image {image}: the flake directory {path} has a '#' or '?' in its path, which a flake reference cannot carry; move the package to a path without them")]
    FlakePath { image: String, path: String },
    #[error("interrupted after {ran} of {total} instructions; what ran stays in the enclave")]
    Interrupted { ran: usize, total: usize },
    #[error(transparent)]
    Enclave(#[from] EnclaveError),
}

/// Why an instruction failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Enclave(#[from] EnclaveError),
    #[error(transparent)]
    Containerd(#[from] crate::containerd::ContainerdError),
    #[error(transparent)]
    Unresolved(#[from] crate::plan::future::Unresolved),
    #[error(transparent)]
    Reference(#[from] crate::oci::reference::ReferenceError),
    #[error("image {image} is not in containerd namespace '{namespace}' and pulling it failed: {source}")]
    Pull {
        image: String,
        namespace: String,
        source: Box<crate::pipeline::PipelineError>,
    },
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("template {path}: {why}")]
    Template { path: String, why: String },
    #[error("{request}: {source}")]
    Http {
        request: String,
        source: http::HttpError,
    },
    #[error("extract '{name}': {why}")]
    Extract { name: String, why: String },
    #[error("Verification failed: {0}")]
    Verify(String),
    /// A recipe's or a service's outcome, with the lines that explain it.
    #[error("{0}")]
    Failed(String),
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> StepError + '_ {
    move |source| StepError::Io {
        path: path.into(),
        source,
    }
}

/// A step of `add_service` that changed the host, to undo on failure.
#[derive(Debug)]
enum Done {
    /// The service's network namespace and address.
    Network,
    /// The service in the enclave's record and hosts file.
    Record,
    /// The container (and task, if it started).
    Container(String),
}

pub struct Options {
    pub snapshotter: String,
    pub jobs: usize,
    pub nix: Nix,
    pub cache: LayerCache,
    /// How long a stopped service gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// How to reach registries, for images the namespace lacks.
    pub registry: crate::registry::Options,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub enclave: String,
    pub images: Vec<ServiceImage>,
    /// Instructions run, in order (their one-line descriptions).
    pub ran: Vec<String>,
    /// What the package's main function returned, references resolved.
    pub output: Value,
}

/// The flake reference of a `NixBuildSpec`. Nix 2.8 cannot point `dir=` at
/// a path flake, so the flake's own directory is the flake (a warning says
/// so when it sits below the build context).
pub fn flake_ref(spec: &NixBuildSpec) -> Result<(FlakeRef, Option<String>), ExecError> {
    let dir = spec.flake_dir.display().to_string();
    let build_err = |e: crate::nix::NixError| ExecError::Build {
        image: spec.image_name.clone(),
        flake: dir.clone(),
        source: Box::new(e.into()),
    };
    let mut s = dir.clone();
    if s.contains('#') || s.contains('?') {
        return Err(ExecError::FlakePath {
            image: spec.image_name.clone(),
            path: dir,
        });
    }
    if let Some(o) = &spec.flake_output {
        s = format!("{s}#{o}");
    }
    let warning = (spec.flake_dir != spec.context).then(|| {
        format!(
            "warning: image {}: the flake sits in {} below the build context {}; Nix 2.8 cannot give a path flake the whole context (no dir= for path: flakes), so the flake sees only its own directory",
            spec.image_name,
            spec.flake_location_dir,
            spec.context.display()
        )
    });
    // The flake was there at interpretation; it may have gone since.
    let flake = FlakeRef::parse(&s).map_err(build_err)?;
    Ok((flake, warning))
}

/// Build every Nix image of the plan, each once, at most two at a time.
pub fn build_images(
    plan: &Plan,
    ctx: &SinkContext,
    opts: &Options,
    say: &(dyn Fn(String) + Sync),
) -> Result<Vec<ServiceImage>, ExecError> {
    let specs = plan.nix_images();
    let results: Vec<std::sync::Mutex<Option<Result<ServiceImage, ExecError>>>> =
        specs.iter().map(|_| std::sync::Mutex::new(None)).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = specs.len().clamp(1, 2);
    let jobs = (opts.jobs / workers).max(1);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(spec) = specs.get(i) else { break };
                if crate::util::interrupt::interrupted() {
                    break;
                }
                let (flake, warning) = match flake_ref(spec) {
                    Ok(f) => f,
                    Err(e) => {
                        *results[i].lock().unwrap() = Some(Err(e));
                        continue;
                    }
                };
                if let Some(w) = warning {
                    say(w);
                }
                say(format!("building image {} from {}", spec.image_name, flake.installable));
                let r = ImageRef::parse(&spec.image_name)
                    .map_err(crate::pipeline::PipelineError::Reference)
                    .and_then(|reference| {
                        build_service_image(&opts.nix, &flake, &reference, ctx, &opts.cache, jobs)
                    })
                    .map_err(|e| ExecError::Build {
                        image: spec.image_name.clone(),
                        flake: flake.installable.clone(),
                        source: Box::new(e),
                    });
                if let Ok(img) = &r {
                    let unpacked = img
                        .unpack
                        .map(|u| format!(", {} unpacked, {} already unpacked", u.applied + u.filled, u.existing))
                        .unwrap_or_default();
                    say(format!(
                        "image {} ready ({} {}: {} of {} layers read from the store{unpacked}) in {:.1}s",
                        img.reference, img.how, img.store_path, img.layers_built, img.layers, img.seconds
                    ));
                }
                *results[i].lock().unwrap() = Some(r);
            });
        }
    });
    let mut out = Vec::new();
    for r in results {
        match r.into_inner().unwrap() {
            Some(r) => out.push(r?),
            None => {
                return Err(ExecError::Interrupted {
                    ran: 0,
                    total: plan.steps.len(),
                })
            }
        }
    }
    Ok(out)
}

/// Runs instructions against one enclave.
pub struct Executor<'a> {
    pub rt: &'a tokio::runtime::Handle,
    /// Where images the namespace lacks are pulled into.
    pub ctx: &'a SinkContext,
    pub client: Client,
    pub enclave: &'a mut Enclave,
    pub opts: &'a Options,
    pub values: Values,
    /// image_name of each NixBuildSpec → full reference in containerd.
    pub built: BTreeMap<String, String>,
    resolved: BTreeMap<String, ResolvedImage>,
    /// Files artifacts this run made with a content they did not have (a
    /// kept service mounting one is replaced).
    changed_artifacts: std::collections::BTreeSet<String>,
}

fn step_err(location: &str, instruction: &Instruction, source: StepError) -> ExecError {
    ExecError::Step {
        location: location.into(),
        instruction: instruction.to_string(),
        source: Box::new(source),
    }
}

impl<'a> Executor<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rt: &'a tokio::runtime::Handle,
        ctx: &'a SinkContext,
        client: Client,
        enclave: &'a mut Enclave,
        opts: &'a Options,
        images: &[ServiceImage],
        plan: &Plan,
    ) -> Self {
        let mut built = BTreeMap::new();
        for (spec, img) in plan.nix_images().iter().zip(images) {
            built.insert(spec.image_name.clone(), img.reference.clone());
        }
        Executor {
            rt,
            ctx,
            client,
            enclave,
            opts,
            values: Values::default(),
            built,
            resolved: BTreeMap::new(),
            changed_artifacts: Default::default(),
        }
    }

    /// Run the plan's instructions in order.
    pub fn run(&mut self, plan: &Plan, say: &dyn Fn(String)) -> Result<Report, ExecError> {
        let mut report = Report {
            enclave: self.enclave.name().into(),
            ..Default::default()
        };
        self.remove_leftovers()?;
        for (i, step) in plan.steps.iter().enumerate() {
            if crate::util::interrupt::interrupted() {
                return Err(ExecError::Interrupted {
                    ran: i,
                    total: plan.steps.len(),
                });
            }
            say(format!("> {}", step.instruction));
            let loc = step.location.0.as_str();
            let result = match self.step(&step.instruction, say) {
                Ok(r) => r,
                Err(_) if crate::util::interrupt::interrupted() => {
                    return Err(ExecError::Interrupted {
                        ran: i,
                        total: plan.steps.len(),
                    })
                }
                Err(m) => return Err(step_err(loc, &step.instruction, m)),
            };
            if let Some(r) = result {
                say(r);
            }
            report.ran.push(step.instruction.to_string());
        }
        report.output = self
            .values
            .resolve(&plan.output)
            .unwrap_or_else(|_| plan.output.clone());
        Ok(report)
    }

    fn image_name(&self, source: &ImageSource) -> Result<String, StepError> {
        match source {
            ImageSource::Nix(n) => {
                self.built.get(&n.image_name).cloned().ok_or_else(|| {
                    StepError::Failed(format!("image {} was not built", n.image_name))
                })
            }
            ImageSource::Named(i) => {
                if i.registry.is_some() || i.username.is_some() {
                    // Credentials only matter for pulling, which comes later.
                }
                Ok(ImageRef::parse(&i.image)?.to_string())
            }
            ImageSource::Dockerfile {
                image_name,
                build_context_dir,
            } => Err(StepError::Failed(format!(
                "image '{image_name}' is an ImageBuildSpec (a Dockerfile build in {build_context_dir}); nixoci builds images from Nix flakes and has no Docker to build Dockerfiles: give the image as a NixBuildSpec, or build it elsewhere and name it"
            ))),
        }
    }

    fn resolve_config(&self, config: &ServiceConfig) -> Result<ServiceConfig, StepError> {
        let mut c = config.clone();
        let v = &self.values;
        c.cmd = c.cmd.map(|x| v.resolve_all(&x)).transpose()?;
        c.entrypoint = c.entrypoint.map(|x| v.resolve_all(&x)).transpose()?;
        c.env_vars = c
            .env_vars
            .iter()
            .map(|(k, x)| Ok((k.clone(), v.resolve_str(x)?)))
            .collect::<Result<_, crate::plan::future::Unresolved>>()?;
        Ok(c)
    }

    fn block<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.rt.block_on(f)
    }

    fn step(
        &mut self,
        ins: &Instruction,
        say: &dyn Fn(String),
    ) -> Result<Option<String>, StepError> {
        let c = self.client.clone();
        let snap = self.opts.snapshotter.clone();
        let grace = self.opts.stop_grace;
        match ins {
            Instruction::AddService {
                name,
                config,
                id: future_id,
                force_update,
            } => {
                if let Some(kept) =
                    self.keep_service(name, config, future_id, *force_update, say)?
                {
                    return Ok(Some(kept));
                }
                self.add_or_undo(name, config, future_id, false, say)
                    .map(Some)
            }
            Instruction::SetService { name, config } => {
                // The service runs on with the new config: replaced, as
                // `add_service(force_update = True)` replaces it.
                let id = self.enclave.service(name)?.container_id.clone();
                self.block(service::remove(&c, &snap, &id, grace))?;
                self.enclave.forget_service(name)?;
                self.add_or_undo(name, config, &format!("set-{name}"), false, say)
                    .map(|_| Some(format!("Service '{name}' updated")))
            }
            Instruction::RunTask { kind, task, id } => self.run_task(kind, task, id, say).map(Some),
            Instruction::StoreServiceFiles {
                service_name,
                src,
                name,
            } => {
                let pid = self.running_pid(service_name)?;
                let n = self.store_files(pid, src, name, &format!("service '{service_name}'"))?;
                Ok(Some(format!(
                    "Files artifact '{name}' created from {src} of service '{service_name}' ({n} files)"
                )))
            }
            Instruction::RemoveService { name } => {
                let id = self.enclave.service(name)?.container_id.clone();
                self.block(service::remove(&c, &snap, &id, grace))?;
                self.enclave.forget_service(name)?;
                Ok(Some(format!("Service '{name}' removed")))
            }
            Instruction::StopService { name } => {
                let id = self.enclave.service(name)?.container_id.clone();
                self.block(service::stop_task(&c, &id, grace))?;
                Ok(Some(format!("Service '{name}' stopped")))
            }
            Instruction::StartService { name } => {
                let rec = self.enclave.service(name)?.clone();
                let log = self.enclave.log_path(name);
                self.block(async {
                    service::start_task(&c, &snap, &rec.container_id, &log).await?;
                    service::check_started(
                        &c,
                        &rec.container_id,
                        name,
                        &rec.info.ip_address,
                        &rec.config,
                        &log,
                    )
                    .await
                })?;
                if let Some(rc) = &rec.config.ready_conditions {
                    self.ready(name, rc, &log)?;
                }
                Ok(Some(format!("Service '{name}' started")))
            }
            Instruction::Exec {
                service_name,
                recipe,
                acceptable_codes,
                skip_code_check,
                id,
            } => self.checked_recipe(
                service_name,
                &Recipe::Exec(recipe.clone()),
                acceptable_codes,
                *skip_code_check,
                id,
            ),
            Instruction::Request {
                service_name,
                recipe,
                acceptable_codes,
                skip_code_check,
                id,
            } => self.checked_recipe(
                service_name,
                &Recipe::Http(recipe.clone()),
                acceptable_codes,
                *skip_code_check,
                id,
            ),
            Instruction::Wait {
                service_name,
                recipe,
                field,
                assertion,
                target_value,
                interval,
                timeout,
                id,
            } => {
                let target = self.values.resolve(target_value)?;
                let (fields, msg) = self.poll(
                    service_name,
                    recipe,
                    field,
                    *assertion,
                    &target,
                    interval,
                    timeout,
                )?;
                for (k, v) in &fields {
                    self.values.set(id, k, v.clone());
                }
                Ok(Some(msg))
            }
            Instruction::Verify {
                value,
                assertion,
                target_value,
            } => {
                let v = self.values.resolve(value)?;
                let t = self.values.resolve(target_value)?;
                match compare(&v, *assertion, &t) {
                    Ok(true) => Ok(Some(format!(
                        "Verification succeeded: {v} {} {t}",
                        assertion.as_str()
                    ))),
                    Ok(false) => Err(StepError::Verify(format!(
                        "{v} {} {t} is false",
                        assertion.as_str()
                    ))),
                    Err(e) => Err(StepError::Verify(e)),
                }
            }
            Instruction::Print { msg } => {
                let m = self.values.resolve_str(msg)?;
                println!("{m}");
                Ok(None)
            }
            Instruction::UploadFiles { name, artifact }
            | Instruction::RenderTemplates { name, artifact } => {
                let tmp = self.enclave.artifact_staging(name)?;
                let r = match artifact {
                    Artifact::Upload { src } => {
                        let base = src.file_name().map(|n| tmp.join(n)).unwrap_or(tmp.clone());
                        copy_tree(src, &base).map_err(io_at(src))
                    }
                    Artifact::Url { url } => {
                        let file = tmp.join(url_file_name(url));
                        crate::util::http::download(url, 1 << 30, Duration::from_secs(600))
                            .map_err(StepError::Failed)
                            .and_then(|b| std::fs::write(&file, b).map_err(io_at(&file)))
                    }
                    Artifact::Templates { files } => {
                        files.iter().try_for_each(|(path, (text, data))| {
                            let data = self.values.resolve(data)?;
                            let out = crate::plan::template::render(text, &data).map_err(|e| {
                                StepError::Template {
                                    path: path.clone(),
                                    why: e.to_string(),
                                }
                            })?;
                            let file = tmp.join(path);
                            if let Some(p) = file.parent() {
                                std::fs::create_dir_all(p).map_err(io_at(p))?;
                            }
                            std::fs::write(&file, out).map_err(io_at(&file))
                        })
                    }
                };
                if let Err(e) = r {
                    let _ = std::fs::remove_dir_all(&tmp);
                    return Err(e);
                }
                let made = self.put_artifact(name, &tmp)?;
                let _ = say;
                Ok(Some(format!("Files artifact '{name}' {made}")))
            }
        }
    }

    /// The image `name` in containerd, ready to run (resolved once a run).
    fn resolved_image(&mut self, name: &str) -> Result<ResolvedImage, StepError> {
        if let Some(r) = self.resolved.get(name) {
            return Ok(r.clone());
        }
        let (c, snap) = (self.client.clone(), self.opts.snapshotter.clone());
        let r = self.block(service::resolve_image(&c, &snap, name))?;
        self.resolved.insert(name.to_string(), r.clone());
        Ok(r)
    }

    /// The pid of a service's running task (its container's files are
    /// reached through `/proc/PID/root`).
    fn running_pid(&self, service_name: &str) -> Result<u32, StepError> {
        let id = &self.enclave.service(service_name)?.container_id;
        self.block(crate::containerd::containers::task(&self.client, id))?
            .filter(|p| p.status == containerd_client::types::v1::Status::Running as i32)
            .map(|p| p.pid)
            .ok_or_else(|| {
                StepError::Failed(format!(
                    "service '{service_name}' is not running, so its files cannot be copied (start it first)"
                ))
            })
    }

    /// [`Executor::add_service`], undone step by step when it fails. A
    /// `task` is recorded as one (a later run removes it if this one is
    /// killed before it does).
    fn add_or_undo(
        &mut self,
        name: &str,
        config: &ServiceConfig,
        future_id: &str,
        task: bool,
        say: &dyn Fn(String),
    ) -> Result<String, StepError> {
        let mut done = Vec::new();
        let r = self.add_service(name, config, future_id, task, say, &mut done);
        if r.is_err() {
            self.undo(name, done);
        }
        r
    }

    /// `plan.add_service`. Each step that changes the host is recorded in
    /// `done` as it succeeds, so that a failure at any later point is
    /// undone in reverse by [`Executor::undo`].
    fn add_service(
        &mut self,
        name: &str,
        config: &ServiceConfig,
        future_id: &str,
        task: bool,
        say: &dyn Fn(String),
        done: &mut Vec<Done>,
    ) -> Result<String, StepError> {
        let c = self.client.clone();
        let snap = self.opts.snapshotter.clone();
        let config = self.resolve_config(config)?;
        if let Some(gpu) = &config.gpu {
            return Err(StepError::Failed(refuse_gpu(name, gpu)));
        }
        let image = self.image_name(&config.image)?;
        if let ImageSource::Named(spec) = &config.image {
            self.pull_if_missing(&image, spec, say)?;
        }
        let resolved = self.resolved_image(&image)?;
        let id = container_id(self.enclave.name(), name);
        // A container or network of that name without a record is left
        // from a killed run: it goes.
        self.block(service::remove(&c, &snap, &id, Duration::from_secs(1)))?;
        let enclave_name = self.enclave.name().to_string();
        let dir = self.enclave.dir.clone();
        let host = self.enclave.net_host();
        let (ip, netns) = match &self.enclave.record.network {
            Some(n) => {
                network::detach(&dir, &enclave_name, n, name, &host)?;
                let public: Vec<(u16, u16, String)> = config
                    .public_ports
                    .iter()
                    .map(|(pid, p)| {
                        (
                            p.number,
                            config.ports[pid].number,
                            p.transport_protocol.clone(),
                        )
                    })
                    .collect();
                let att = network::attach(&dir, &enclave_name, n, name, &id, &public, &host)?;
                done.push(Done::Network);
                (att.ip, Some(att.netns.display().to_string()))
            }
            None => ("127.0.0.1".to_string(), None),
        };
        self.values.set(future_id, "ip_address", json!(ip));
        let config = with_own_ip(config, &ip);
        let info = crate::plan::values::ServiceInfo::new(name, &ip, &config.ports);
        let mut binds = self.file_binds(name, &config.files)?;
        self.enclave.record.services.insert(
            name.to_string(),
            ServiceRecord {
                name: name.to_string(),
                container_id: id.clone(),
                image: image.clone(),
                config: config.clone(),
                info: info.clone(),
                image_top: resolved.top.clone(),
                task,
            },
        );
        done.push(Done::Record);
        self.enclave.write_hosts()?;
        binds.push(Bind {
            destination: "/etc/hosts".into(),
            source: self.enclave.hosts_path().display().to_string(),
            read_only: true,
        });
        if Path::new("/etc/resolv.conf").is_file() {
            binds.push(Bind {
                destination: "/etc/resolv.conf".into(),
                source: "/etc/resolv.conf".into(),
                read_only: true,
            });
        }
        let log = self.enclave.log_path(name);
        let new = NewService {
            enclave: &enclave_name,
            name,
            id: &id,
            config: &config,
            image: &resolved,
            binds,
            netns,
        };
        done.push(Done::Container(id.clone()));
        self.block(async {
            service::create_container(&c, &snap, &new).await?;
            service::start_task(&c, &snap, &id, &log).await?;
            service::check_started(&c, &id, name, &ip, &config, &log).await
        })?;
        if let Some(rc) = &config.ready_conditions {
            self.ready(name, rc, &log)?;
        }
        self.enclave.save()?;
        let ports: Vec<String> = info
            .ports
            .iter()
            .map(|(id, p)| match config.public_ports.get(id) {
                Some(pp) => format!(
                    "{id}: {}/{} (127.0.0.1:{})",
                    p.number, p.transport_protocol, pp.number
                ),
                None => format!("{id}: {}/{}", p.number, p.transport_protocol),
            })
            .collect();
        Ok(format!(
            "Service '{name}' added ({image}), address {}{}",
            info.ip_address,
            if ports.is_empty() {
                String::new()
            } else {
                format!(", ports {}", ports.join(", "))
            }
        ))
    }

    /// What a killed run left: task containers (recorded or not yet), and
    /// any container of this enclave without a record. The enclave is
    /// locked, so no other run is using them.
    fn remove_leftovers(&mut self) -> Result<(), ExecError> {
        let (c, snap) = (self.client.clone(), self.opts.snapshotter.clone());
        let enclave = self.enclave.name().to_string();
        let labelled = self
            .block(crate::containerd::containers::list_labelled(
                &c,
                super::ENCLAVE_LABEL,
                Some(&enclave),
            ))
            .map_err(|e| ExecError::Enclave(e.into()))?;
        for ct in labelled {
            let service = ct
                .labels
                .get(super::SERVICE_LABEL)
                .cloned()
                .unwrap_or_default();
            let keep = self
                .enclave
                .record
                .services
                .get(&service)
                .is_some_and(|r| !r.task && r.container_id == ct.id);
            if keep {
                continue;
            }
            self.block(service::remove(
                &c,
                &snap,
                &ct.id,
                Duration::from_millis(200),
            ))?;
            if self.enclave.record.services.contains_key(&service) {
                self.enclave.forget_service(&service)?;
            } else if let Some(n) = &self.enclave.record.network {
                network::detach(
                    &self.enclave.dir,
                    &enclave,
                    n,
                    &service,
                    &self.enclave.net_host(),
                )?;
            }
        }
        let tasks: Vec<String> = self
            .enclave
            .record
            .services
            .values()
            .filter(|s| s.task)
            .map(|s| s.name.clone())
            .collect();
        for t in tasks {
            self.enclave.forget_service(&t)?;
        }
        Ok(())
    }

    /// The bind mounts of a `files` map. As in Kurtosis, a container gets
    /// its own writable copy of the artifacts it mounts (several in one
    /// directory merged, later ones over earlier ones): what it writes
    /// there changes neither the artifact nor another container's copy.
    /// Persistent directories are shared, read-write, and kept in the
    /// enclave until it goes.
    fn file_binds(
        &self,
        owner: &str,
        files: &BTreeMap<String, crate::plan::FilesSource>,
    ) -> Result<Vec<Bind>, StepError> {
        use crate::plan::FilesSource;
        let mut binds = Vec::new();
        let copies = self.enclave.dir.join("mounts").join(owner);
        let _ = std::fs::remove_dir_all(&copies);
        for (i, (mount, source)) in files.iter().enumerate() {
            for artifact in source.artifacts() {
                if !self.enclave.artifact_dir(artifact).is_dir() {
                    return Err(StepError::Failed(format!(
                        "files artifact '{artifact}' does not exist in enclave {}",
                        self.enclave.name()
                    )));
                }
            }
            let dir = match source {
                FilesSource::Artifact(_) | FilesSource::Artifacts { .. } => {
                    let dir = copies.join(i.to_string());
                    std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
                    for a in source.artifacts() {
                        let from = self.enclave.artifact_dir(a);
                        merge_tree(&from, &dir).map_err(io_at(&from))?;
                    }
                    dir
                }
                FilesSource::Persistent { persistent_key, .. } => {
                    let dir = self.enclave.dir.join("persistent").join(persistent_key);
                    std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
                    dir
                }
            };
            binds.push(Bind {
                destination: mount.clone(),
                source: dir.display().to_string(),
                read_only: false,
            });
        }
        Ok(binds)
    }

    /// Copy `src` out of the process `pid`'s container into a new files
    /// artifact `name` (complete or absent).
    fn store_files(
        &mut self,
        pid: u32,
        src: &str,
        name: &str,
        from: &str,
    ) -> Result<u64, StepError> {
        let tmp = self.enclave.artifact_staging(name)?;
        // As `docker cp`: the path's own name is kept (`/a/b` gives `b`),
        // and `DIR/.` (or `/`) gives the directory's content.
        let target = match Path::new(src).file_name() {
            Some(n) if !src.ends_with("/.") => tmp.join(n),
            _ => {
                let _ = std::fs::remove_dir(&tmp);
                tmp.clone()
            }
        };
        let n = super::copy_out::copy_out_where(pid, src, &target, &self.enclave.net_host())
            .map_err(|e| {
                let _ = std::fs::remove_dir_all(&tmp);
                StepError::Failed(format!("cannot copy {src} out of {from}: {e}"))
            })?;
        self.put_artifact(name, &tmp)?;
        Ok(n)
    }

    /// Make the complete tree `tmp` the files artifact `name` (reused when
    /// its content is unchanged: see [`Enclave::install_artifact`]).
    fn put_artifact(&mut self, name: &str, tmp: &Path) -> Result<&'static str, StepError> {
        if !self.enclave.install_artifact(name, tmp)? {
            return Ok("reused (unchanged)");
        }
        self.changed_artifacts.insert(name.to_string());
        Ok("created")
    }

    /// A re-run's `add_service` of a service the enclave has: kept as it is
    /// (its address given to the plan's references) when its config, its
    /// image and the artifacts it mounts are unchanged, it runs and no
    /// `force_update`; else removed here, to be added again.
    fn keep_service(
        &mut self,
        name: &str,
        config: &ServiceConfig,
        future_id: &str,
        force_update: bool,
        say: &dyn Fn(String),
    ) -> Result<Option<String>, StepError> {
        let Some(rec) = self.enclave.record.services.get(name).cloned() else {
            return Ok(None);
        };
        let c = self.client.clone();
        let snap = self.opts.snapshotter.clone();
        let wanted = with_own_ip(self.resolve_config(config)?, &rec.info.ip_address);
        let mut why = Vec::new();
        if force_update {
            why.push("force_update".to_string());
        }
        if wanted != rec.config {
            why.push("its config changed".into());
        }
        let changed: Vec<&String> = wanted
            .files
            .values()
            .flat_map(|f| f.artifacts())
            .filter(|a| self.changed_artifacts.contains(*a))
            .collect();
        if !changed.is_empty() {
            why.push(format!("files artifact {changed:?} changed"));
        }
        if why.is_empty() {
            let image = self.image_name(&wanted.image)?;
            if let ImageSource::Named(spec) = &wanted.image {
                self.pull_if_missing(&image, spec, say)?;
            }
            let top = self.resolved_image(&image)?.top;
            if top != rec.image_top || image != rec.image {
                why.push("its image changed".into());
            }
        }
        if why.is_empty() {
            let running = self
                .block(service::exited(&c, &rec.container_id))?
                .is_none();
            if running {
                self.values
                    .set(future_id, "ip_address", json!(rec.info.ip_address));
                return Ok(Some(format!(
                    "Service '{name}' unchanged: kept as it runs, address {}",
                    rec.info.ip_address
                )));
            }
            why.push("it is not running".into());
        }
        say(format!("Service '{name}' is replaced: {}", why.join(", ")));
        self.block(service::remove(
            &c,
            &snap,
            &rec.container_id,
            self.opts.stop_grace,
        ))?;
        self.enclave.forget_service(name)?;
        Ok(None)
    }

    /// `plan.run_sh` / `plan.run_python`: a container kept alive by
    /// `tail -f /dev/null` in the enclave's network, the command run in it
    /// (within `wait`), the `store` paths copied out; the container goes
    /// whatever happens. A non-zero exit code fails the step, as in
    /// Kurtosis.
    fn run_task(
        &mut self,
        kind: &str,
        task: &crate::plan::Task,
        future_id: &str,
        say: &dyn Fn(String),
    ) -> Result<String, StepError> {
        let c = self.client.clone();
        let snap = self.opts.snapshotter.clone();
        let name = format!("task-{}", crate::containerd::unique_id(kind));
        let config = ServiceConfig {
            cmd: Some(Vec::new()),
            entrypoint: Some(vec!["tail".into(), "-f".into(), "/dev/null".into()]),
            env_vars: task.env_vars.clone(),
            files: task.files.clone(),
            ..ServiceConfig::new(task.image.clone())
        };
        self.add_or_undo(&name, &config, &format!("{future_id}-task"), true, say)?;
        let result = self.task_body(&name, task, say);
        let id = self.enclave.service(&name)?.container_id.clone();
        let _ = self.block(service::remove(&c, &snap, &id, Duration::from_millis(200)));
        let _ = self.enclave.forget_service(&name);
        let (code, output) = result?;
        self.values.set(future_id, "output", json!(output));
        self.values.set(future_id, "code", json!(code));
        let shown = if output.contains('\n') {
            format!(
                "\n--------------------\n{}\n--------------------",
                output.trim_end()
            )
        } else {
            format!(" {output}")
        };
        Ok(format!(
            "Command returned with exit code '{code}' and the following output:{shown}"
        ))
    }

    fn task_body(
        &mut self,
        name: &str,
        task: &crate::plan::Task,
        say: &dyn Fn(String),
    ) -> Result<(i64, String), StepError> {
        if !task.packages.is_empty() {
            let mut pip = vec!["pip".to_string(), "install".into()];
            pip.extend(task.packages.iter().cloned());
            say(format!("installing {}", task.packages.join(" ")));
            let (code, out) = self.exec(name, &pip).map_err(|e| {
                StepError::Failed(format!(
                    "installing {} needs pip in the task's image (run_python's packages go through pip install): {e}",
                    task.packages.join(" ")
                ))
            })?;
            if code != 0 {
                return Err(StepError::Failed(format!(
                    "pip install {} exited with code {code}: {}",
                    task.packages.join(" "),
                    out.trim_end()
                )));
            }
        }
        let Some((code, output)) =
            self.exec_within(name, &task.command, task.wait.as_ref().map(|w| w.get()))?
        else {
            let w = task
                .wait
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            return Err(StepError::Failed(format!(
                "the task's command did not finish within its wait of {w}: give a longer wait, or wait = None for none"
            )));
        };
        if code != 0 {
            return Err(StepError::Failed(format!(
                "the task's command exited with code {code} and output {:?}",
                output
            )));
        }
        let pid = self.running_pid(name)?;
        for s in &task.store {
            self.store_files(pid, &s.src, &s.name, "the task")?;
        }
        Ok((code, output))
    }

    /// Undo what a failed [`Executor::add_service`] did, last first. Each
    /// undo is best effort: the step's own error is the one reported.
    fn undo(&mut self, name: &str, done: Vec<Done>) {
        for d in done.into_iter().rev() {
            match d {
                Done::Container(id) => {
                    let c = self.client.clone();
                    let snap = self.opts.snapshotter.clone();
                    let _ = self.block(service::remove(&c, &snap, &id, Duration::from_secs(1)));
                }
                Done::Record => {
                    self.enclave.record.services.remove(name);
                    let _ = self.enclave.write_hosts();
                }
                Done::Network => {
                    if let Some(n) = &self.enclave.record.network {
                        let _ = network::detach(
                            &self.enclave.dir,
                            self.enclave.name(),
                            n,
                            name,
                            &self.enclave.net_host(),
                        );
                    }
                }
            }
        }
    }

    fn exec(&self, service_name: &str, command: &[String]) -> Result<(i64, String), StepError> {
        self.exec_within(service_name, command, None)?
            .ok_or_else(|| {
                StepError::Failed(format!("exec in service '{service_name}' gave no result"))
            })
    }

    /// [`Executor::exec`] within `timeout`: `None` when it did not finish
    /// in time.
    fn exec_within(
        &self,
        service_name: &str,
        command: &[String],
        timeout: Option<Duration>,
    ) -> Result<Option<(i64, String)>, StepError> {
        let rec = self.enclave.service(service_name)?;
        let command = self.values.resolve_all(command)?;
        let scratch = self.enclave.dir.join("exec");
        let run = service::exec(&self.client, &rec.container_id, &command, &scratch);
        let r = match timeout {
            None => Some(self.block(run)),
            Some(t) => self
                .block(async { tokio::time::timeout(t, run).await })
                .ok(),
        };
        r.transpose().map_err(|e| {
            StepError::Failed(format!("exec {command:?} in service '{service_name}': {e}"))
        })
    }

    /// Pull a named image the namespace lacks (with the ImageSpec's
    /// credentials when given).
    fn pull_if_missing(
        &self,
        image: &str,
        spec: &crate::plan::ImageSpec,
        say: &dyn Fn(String),
    ) -> Result<(), StepError> {
        let c = &self.client;
        if self
            .block(crate::containerd::images::get(c, image))?
            .is_some()
        {
            return Ok(());
        }
        let reference = ImageRef::parse(image)?;
        say(format!("pulling {reference}"));
        let creds = match (&spec.username, &spec.password) {
            (Some(u), Some(p)) => Some(crate::registry::auth::Credentials {
                username: u.clone(),
                secret: p.expose().to_string(),
            }),
            _ => None,
        };
        let source = crate::pipeline::ImageSource::Registry(reference, creds);
        let outputs = [crate::sink::SinkSpec::Containerd(Some(c.namespace.clone()))];
        crate::pipeline::copy(&source, &outputs, self.ctx, None, None, None).map_err(|e| {
            StepError::Pull {
                image: image.to_string(),
                namespace: c.namespace.clone(),
                source: Box::new(e),
            }
        })?;
        Ok(())
    }

    /// `plan.exec` and `plan.request`: run the recipe once, keep its fields
    /// for later references, check its code.
    fn checked_recipe(
        &mut self,
        service_name: &str,
        recipe: &Recipe,
        acceptable_codes: &[i64],
        skip_code_check: bool,
        id: &str,
    ) -> Result<Option<String>, StepError> {
        let fields = self.run_recipe(service_name, recipe)?;
        let code = fields["code"].as_i64().unwrap_or(-1);
        for (k, v) in &fields {
            self.values.set(id, k, v.clone());
        }
        let (what, status, text_name, text, head) = match recipe {
            Recipe::Exec(_) => (
                "the command",
                "exit code",
                "output",
                &fields["output"],
                "Command returned with exit code",
            ),
            Recipe::Http(_) => (
                "the request",
                "status",
                "body",
                &fields["body"],
                "Request returned status",
            ),
        };
        let text = text.as_str().unwrap_or("").trim_end();
        if !skip_code_check && !acceptable_codes.contains(&code) {
            return Err(StepError::Failed(format!(
                "{what} returned {status} {code}, which is not among the acceptable codes {acceptable_codes:?}; its {text_name}:\n{text}"
            )));
        }
        Ok(Some(format!(
            "{head} '{code}' and the following {text_name}:\n{text}"
        )))
    }

    /// Run a recipe once against a service: the fields of its result.
    fn run_recipe(
        &self,
        service_name: &str,
        recipe: &Recipe,
    ) -> Result<BTreeMap<String, Value>, StepError> {
        let mut fields = BTreeMap::new();
        let text = match recipe {
            Recipe::Exec(r) => {
                let (code, output) = self.exec(service_name, &r.command)?;
                fields.insert("code".to_string(), json!(code));
                fields.insert("output".to_string(), json!(output));
                output
            }
            Recipe::Http(r) => {
                let rec = self.enclave.service(service_name)?;
                let port = rec
                    .config
                    .ports
                    .get(&r.port_id)
                    .ok_or_else(|| {
                        StepError::Failed(format!(
                            "service '{service_name}' has no port '{}'",
                            r.port_id
                        ))
                    })?
                    .number;
                let v = &self.values;
                let endpoint = v.resolve_str(&r.endpoint)?;
                let body = v.resolve_str(&r.body)?;
                let headers: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .map(|(k, x)| Ok((k.clone(), v.resolve_str(x)?)))
                    .collect::<Result<_, crate::plan::future::Unresolved>>()?;
                let req = http::Request {
                    method: &r.method,
                    host: &rec.info.ip_address,
                    port,
                    endpoint: &endpoint,
                    headers: &headers,
                    content_type: r.content_type.as_deref(),
                    body: &body,
                };
                let resp =
                    http::send_where(&req, Duration::from_secs(10), &self.enclave.net_host())
                        .map_err(|source| StepError::Http {
                            request: format!(
                                "{} http://{}:{port}{endpoint}",
                                r.method, rec.info.ip_address
                            ),
                            source,
                        })?;
                fields.insert("code".to_string(), json!(resp.code));
                fields.insert("body".to_string(), json!(resp.body));
                resp.body
            }
        };
        for (k, expr) in recipe.extract() {
            let v = crate::plan::jq::extract(expr, &text).map_err(|why| StepError::Extract {
                name: k.clone(),
                why,
            })?;
            fields.insert(format!("extract.{k}"), v);
        }
        Ok(fields)
    }

    /// Repeat a recipe until `field` satisfies the assertion, or time out.
    #[allow(clippy::too_many_arguments)]
    fn poll(
        &self,
        service_name: &str,
        recipe: &Recipe,
        field: &str,
        assertion: Assertion,
        target: &Value,
        interval: &GoDuration,
        timeout: &GoDuration,
    ) -> Result<(BTreeMap<String, Value>, String), StepError> {
        let (every, limit) = (interval.get(), timeout.get());
        let start = Instant::now();
        let mut attempts = 0;
        let mut last;
        loop {
            attempts += 1;
            match self.run_recipe(service_name, recipe) {
                Ok(fields) => {
                    let got = fields.get(field).cloned().unwrap_or(Value::Null);
                    if compare(&got, assertion, target).unwrap_or(false) {
                        let msg = format!(
                            "Wait took {attempts} tries ({:.1}s): {field} is {got}",
                            start.elapsed().as_secs_f64()
                        );
                        return Ok((fields, msg));
                    }
                    last = got.to_string();
                }
                // An HTTP service that is not up yet is a try that failed.
                Err(e) if matches!(recipe, Recipe::Http(_)) => last = e.to_string(),
                Err(e) => return Err(e),
            }
            if start.elapsed() + every > limit || crate::util::interrupt::interrupted() {
                return Err(StepError::Failed(format!(
                    "{field} did not satisfy {} {target} within {timeout} ({attempts} tries; last: {last})",
                    assertion.as_str()
                )));
            }
            std::thread::sleep(every);
        }
    }

    /// A service's ready condition, with its last log lines on failure.
    fn ready(&self, name: &str, rc: &ReadyCondition, log: &Path) -> Result<(), StepError> {
        let target = self.values.resolve(&rc.target_value)?;
        self.poll(
            name,
            &rc.recipe,
            &rc.field,
            rc.assertion,
            &target,
            &rc.interval,
            &rc.timeout,
        )
        .map(|_| ())
        .map_err(|e| {
            StepError::Failed(format!(
                "service '{name}' is not ready: {e}; its last log lines ({}):\n{}",
                log.display(),
                crate::containerd::engine::tail(log, 15)
            ))
        })
    }
}

/// Compare like Kurtosis' verify: numbers as numbers (a numeric string
/// counts as a number), strings as strings, IN/NOT_IN against a list.
pub fn compare(v: &Value, op: Assertion, target: &Value) -> Result<bool, String> {
    fn num(v: &Value) -> Option<f64> {
        match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            Value::Bool(_) => None,
            _ => None,
        }
    }
    match op {
        Assertion::In | Assertion::NotIn => {
            let list = target
                .as_array()
                .ok_or_else(|| format!("{} needs a list, got {target}", op.as_str()))?;
            let found = list
                .iter()
                .any(|t| t == v || matches!((num(t), num(v)), (Some(a), Some(b)) if a == b));
            Ok(found == (op == Assertion::In))
        }
        _ => {
            let ord = match (num(v), num(target)) {
                (Some(a), Some(b)) if !(v.is_string() && target.is_string()) => a.partial_cmp(&b),
                _ => match (v, target) {
                    (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
                    _ if matches!(op, Assertion::Eq | Assertion::Ne) => {
                        return Ok((v == target) == (op == Assertion::Eq))
                    }
                    _ => return Err(format!("cannot compare {v} with {target}")),
                },
            };
            let ord = ord.ok_or_else(|| format!("cannot compare {v} with {target}"))?;
            use std::cmp::Ordering::*;
            Ok(match op {
                Assertion::Eq => ord == Equal,
                Assertion::Ne => ord != Equal,
                Assertion::Ge => ord != Less,
                Assertion::Le => ord != Greater,
                Assertion::Gt => ord == Greater,
                Assertion::Lt => ord == Less,
                Assertion::In | Assertion::NotIn => unreachable!(),
            })
        }
    }
}

/// The config with its `private_ip_address_placeholder` replaced by `ip`
/// in `cmd`, `entrypoint` and the values of `env_vars`.
fn with_own_ip(config: ServiceConfig, ip: &str) -> ServiceConfig {
    let Some(p) = config.private_ip_address_placeholder.clone() else {
        return config;
    };
    let mut c = config;
    let swap = |v: &mut Vec<String>| v.iter_mut().for_each(|s| *s = s.replace(&p, ip));
    if let Some(x) = c.cmd.as_mut() {
        swap(x);
    }
    if let Some(x) = c.entrypoint.as_mut() {
        swap(x);
    }
    for v in c.env_vars.values_mut() {
        *v = v.replace(&p, ip);
    }
    c
}

/// The file name a downloaded URL gets: its last path segment (without
/// query), or `download`.
fn url_file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let after_host = path.splitn(4, '/').nth(3).unwrap_or("");
    match after_host.rsplit('/').next() {
        Some(n) if !n.is_empty() && n != "." && n != ".." => n.to_string(),
        _ => "download".into(),
    }
}

/// Why a service asking for a GPU does not start.
fn refuse_gpu(name: &str, gpu: &crate::plan::model::GpuConfig) -> String {
    let has = ["/dev/nvidia0", "/dev/dri"]
        .iter()
        .find(|p| Path::new(p).exists());
    let asked = match gpu.count {
        Some(n) => format!("{n} GPU(s)"),
        None => "a GPU".into(),
    };
    match has {
        None => format!("service '{name}' asks for {asked} (GpuConfig), and this host has none (no /dev/nvidia0 or /dev/dri): run it on a host with a GPU, or leave gpu out"),
        Some(dev) => format!("service '{name}' asks for {asked} (GpuConfig); this host has {dev}, but nixoci does not pass GPUs into containers yet: leave gpu out to run it on the CPU"),
    }
}

/// Copy `src`'s content into the directory `dst`, over what is there.
fn merge_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let to = dst.join(e.file_name());
        let meta = std::fs::symlink_metadata(&to);
        match meta {
            Ok(m) if m.is_dir() && e.file_type()?.is_dir() => {
                merge_tree(&e.path(), &to)?;
                continue;
            }
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&to)?,
            Ok(_) => std::fs::remove_file(&to)?,
            Err(_) => {}
        }
        copy_tree(&e.path(), &to)?;
    }
    Ok(())
}

/// Copy a file or directory tree (modes and symlinks kept).
pub fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(src)?;
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(src)?, dst)
    } else if meta.is_dir() {
        std::fs::create_dir_all(dst)?;
        let mut entries: Vec<_> = std::fs::read_dir(src)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            copy_tree(&e.path(), &dst.join(e.file_name()))?;
        }
        std::fs::set_permissions(dst, meta.permissions())
    } else {
        std::fs::copy(src, dst).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_compares_like_kurtosis() {
        let t = |v: Value, op: &str, target: Value| {
            compare(&v, Assertion::parse(op).unwrap(), &target).unwrap()
        };
        assert!(t(json!(0), "==", json!(0)));
        assert!(t(json!("0"), "==", json!(0)));
        assert!(t(json!(3), ">", json!(2)));
        assert!(!t(json!(3), "<=", json!(2)));
        assert!(t(json!("abc"), "<", json!("abd")));
        assert!(t(json!("10"), "!=", json!("9")));
        assert!(t(json!(1), "IN", json!([0, 1])));
        assert!(t(json!("x"), "NOT_IN", json!(["y"])));
        assert!(compare(&json!([1]), Assertion::Gt, &json!(0)).is_err());
    }
}
