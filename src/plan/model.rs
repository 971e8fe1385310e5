//! What interpretation produces: owned, validated descriptions of images,
//! services, recipes and instructions. Nothing here refers to Starlark
//! values, so a plan can be printed (`--dry-run`), stored and executed
//! without the interpreter.

use super::duration::GoDuration;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// Where in the package something was written: `main.star:12:5`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Location(pub String);

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `NixBuildSpec(image_name, build_context_dir, flake_location_dir, flake_output)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NixBuildSpec {
    pub image_name: String,
    pub build_context_dir: String,
    pub flake_location_dir: String,
    pub flake_output: Option<String>,
    /// The build context, resolved inside the package.
    pub context: PathBuf,
    /// The flake's directory, inside the context.
    pub flake_dir: PathBuf,
}

/// `ImageSpec(image, registry, username, password)`, or a plain string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ImageSpec {
    pub image: String,
    pub registry: Option<String>,
    pub username: Option<String>,
    #[serde(skip)]
    pub password: Option<Secret>,
}

/// A value never shown: `Debug` prints `***`, and it is never serialised
/// (plans, `--dry-run --json` and enclave records leave it out).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind")]
pub enum ImageSource {
    Nix(NixBuildSpec),
    Named(ImageSpec),
    /// `ImageBuildSpec`: a Dockerfile build, which nixoci does not do; kept
    /// in the plan and refused when a service or task needs the image.
    Dockerfile {
        image_name: String,
        build_context_dir: String,
    },
}

impl ImageSource {
    /// The name the image has (or gets) in containerd, as written.
    pub fn name(&self) -> &str {
        match self {
            ImageSource::Nix(n) => &n.image_name,
            ImageSource::Named(i) => &i.image,
            ImageSource::Dockerfile { image_name, .. } => image_name,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PortSpec {
    pub number: u16,
    pub transport_protocol: String,
    pub application_protocol: String,
    /// `None`: do not wait for the port.
    pub wait: Option<GoDuration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct User {
    pub uid: u32,
    pub gid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ServiceConfig {
    pub image: ImageSource,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub env_vars: BTreeMap<String, String>,
    pub ports: BTreeMap<String, PortSpec>,
    pub public_ports: BTreeMap<String, PortSpec>,
    /// Mount point → what it holds.
    pub files: BTreeMap<String, FilesSource>,
    pub labels: BTreeMap<String, String>,
    pub user: Option<User>,
    pub min_cpu: Option<u64>,
    pub max_cpu: Option<u64>,
    pub min_memory: Option<u64>,
    pub max_memory: Option<u64>,
    pub ready_conditions: Option<ReadyCondition>,
    /// Replaced by the service's own IP address in `cmd`, `entrypoint` and
    /// the values of `env_vars` when the service starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_ip_address_placeholder: Option<String>,
    /// Kubernetes scheduling: accepted and without effect on one host, as
    /// in Kurtosis' Docker backend.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selectors: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Publish the UDP ports among `public_ports` too. nixoci publishes
    /// every public port with its own protocol, so it changes nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub publish_udp: bool,
    /// All capabilities, no masked paths, every device allowed by the
    /// device cgroup.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    /// Share the host's process namespace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_pid_namespace: bool,
    /// Host path → path in the container, bound read-write.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bind_mounts: BTreeMap<String, String>,
    /// Host devices, as Docker writes them: `HOST[:CONTAINER[:PERMISSIONS]]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// `GpuConfig`: refused when the service is started (see execution).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuConfig>,
}

impl ServiceConfig {
    /// A service of `image` with nothing else set.
    pub fn new(image: ImageSource) -> Self {
        ServiceConfig {
            image,
            cmd: None,
            entrypoint: None,
            env_vars: BTreeMap::new(),
            ports: BTreeMap::new(),
            public_ports: BTreeMap::new(),
            files: BTreeMap::new(),
            labels: BTreeMap::new(),
            user: None,
            min_cpu: None,
            max_cpu: None,
            min_memory: None,
            max_memory: None,
            ready_conditions: None,
            private_ip_address_placeholder: None,
            node_selectors: BTreeMap::new(),
            tolerations: Vec::new(),
            publish_udp: false,
            privileged: false,
            host_pid_namespace: false,
            bind_mounts: BTreeMap::new(),
            devices: Vec::new(),
            gpu: None,
        }
    }
}

/// What a mount point of `ServiceConfig.files` holds: a files artifact (a
/// plain name), several artifacts merged (`Directory(artifact_names=...)`)
/// or a persistent directory (`Directory(persistent_key=...)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum FilesSource {
    Artifact(String),
    Artifacts {
        artifact_names: Vec<String>,
    },
    Persistent {
        persistent_key: String,
        /// Megabytes; a single host does not cap it (as Kurtosis' Docker
        /// backend).
        size: Option<u64>,
    },
}

impl FilesSource {
    /// The files artifacts it mounts.
    pub fn artifacts(&self) -> &[String] {
        match self {
            FilesSource::Artifact(a) => std::slice::from_ref(a),
            FilesSource::Artifacts { artifact_names } => artifact_names,
            FilesSource::Persistent { .. } => &[],
        }
    }
}

/// `Toleration(key, operator, value, effect, toleration_seconds)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Toleration {
    pub key: String,
    pub operator: String,
    pub value: String,
    pub effect: String,
    pub toleration_seconds: Option<i64>,
}

/// `GpuConfig(count, device_ids, driver, shm_size, ulimits)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct GpuConfig {
    pub count: Option<i64>,
    pub device_ids: Vec<String>,
    pub driver: Option<String>,
    pub shm_size: Option<i64>,
}

/// `StoreSpec(src, name)`: a path a task's files are copied from into a
/// files artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StoreSpec {
    pub src: String,
    pub name: String,
}

/// `plan.run_sh` / `plan.run_python`: a one-off container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Task {
    pub image: ImageSource,
    /// The process: `sh -c RUN`, or `python -c RUN ARGS...`.
    pub command: Vec<String>,
    /// Mount point → what it holds.
    pub files: BTreeMap<String, FilesSource>,
    pub env_vars: BTreeMap<String, String>,
    /// Paths copied out into files artifacts when the task ends.
    pub store: Vec<StoreSpec>,
    /// `None`: no timeout (`wait = None`).
    pub wait: Option<GoDuration>,
    /// Python packages `pip install`ed first (`run_python(packages=...)`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ExecRecipe {
    pub command: Vec<String>,
    /// Name → jq expression over the output.
    pub extract: BTreeMap<String, String>,
}

/// `GetHttpRequestRecipe` / `PostHttpRequestRecipe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HttpRecipe {
    /// `GET` or `POST`.
    pub method: String,
    pub port_id: String,
    pub endpoint: String,
    pub headers: BTreeMap<String, String>,
    pub content_type: Option<String>,
    pub body: String,
    pub extract: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind")]
pub enum Recipe {
    Exec(ExecRecipe),
    Http(HttpRecipe),
}

impl Recipe {
    pub fn extract(&self) -> &BTreeMap<String, String> {
        match self {
            Recipe::Exec(r) => &r.extract,
            Recipe::Http(r) => &r.extract,
        }
    }

    /// The fields of its result: `output`/`code` or `code`/`body`, plus
    /// `extract.NAME`.
    pub fn fields(&self) -> Vec<String> {
        let base: &[&str] = match self {
            Recipe::Exec(_) => &["output", "code"],
            Recipe::Http(_) => &["code", "body"],
        };
        base.iter()
            .map(|s| s.to_string())
            .chain(self.extract().keys().map(|k| format!("extract.{k}")))
            .collect()
    }
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recipe::Exec(r) => write!(f, "command={}", list(&r.command)),
            Recipe::Http(r) => write!(
                f,
                "{} port_id={:?} endpoint={:?}",
                r.method, r.port_id, r.endpoint
            ),
        }
    }
}

/// `ReadyCondition`: the service counts as started when the recipe's field
/// satisfies the assertion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ReadyCondition {
    pub recipe: Recipe,
    pub field: String,
    pub assertion: Assertion,
    pub target_value: serde_json::Value,
    pub interval: GoDuration,
    pub timeout: GoDuration,
}

/// An assertion of `plan.verify` and `plan.wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum Assertion {
    Eq,
    Ne,
    Ge,
    Le,
    Gt,
    Lt,
    In,
    NotIn,
}

impl Assertion {
    pub const ALL: &'static str = "==, !=, >=, <=, >, <, IN, NOT_IN";

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "==" => Assertion::Eq,
            "!=" => Assertion::Ne,
            ">=" => Assertion::Ge,
            "<=" => Assertion::Le,
            ">" => Assertion::Gt,
            "<" => Assertion::Lt,
            "IN" => Assertion::In,
            "NOT_IN" => Assertion::NotIn,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Assertion::Eq => "==",
            Assertion::Ne => "!=",
            Assertion::Ge => ">=",
            Assertion::Le => "<=",
            Assertion::Gt => ">",
            Assertion::Lt => "<",
            Assertion::In => "IN",
            Assertion::NotIn => "NOT_IN",
        }
    }
}

/// A files artifact: uploaded from the package, or rendered from templates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind")]
pub enum Artifact {
    Upload {
        /// The file or directory in the package.
        src: PathBuf,
    },
    Templates {
        /// Relative output path → (template text, data as JSON).
        files: BTreeMap<String, (String, serde_json::Value)>,
    },
    /// An `http(s)://` URL, downloaded when the step runs into a file named
    /// as the URL's last path segment.
    Url { url: String },
}

/// A device as Docker writes it: `HOST[:CONTAINER[:PERMISSIONS]]`, both
/// absolute paths, permissions of `rwm`. Its host path, container path and
/// permissions.
pub fn parse_device(d: &str) -> Result<(String, String, String), String> {
    let parts: Vec<&str> = d.split(':').collect();
    let (host, container, perms) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, c] if c.chars().all(|x| "rwm".contains(x)) && !c.is_empty() => (*h, *h, *c),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] => (*h, *c, *p),
        _ => {
            return Err(format!(
                "device '{d}' is not HOST[:CONTAINER[:PERMISSIONS]]"
            ))
        }
    };
    if !host.starts_with('/') || !container.starts_with('/') {
        return Err(format!("device '{d}': both paths must be absolute"));
    }
    if perms.is_empty() || !perms.chars().all(|x| "rwm".contains(x)) {
        return Err(format!(
            "device '{d}': permissions '{perms}' are not some of r, w, m"
        ));
    }
    Ok((host.into(), container.into(), perms.into()))
}

/// A files artifact's name: letters, digits, '-', '_' and '.', at most 128.
pub fn check_artifact_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(format!(
            "files artifact name '{name}' is invalid: use letters, digits, '-', '_' and '.'"
        ))
    }
}

/// One step of a plan, in the order the package asked for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "instruction", rename_all = "snake_case")]
pub enum Instruction {
    AddService {
        name: String,
        config: Box<ServiceConfig>,
        /// The id of its future references (`ip_address`).
        id: String,
        /// Replace the service even when its config is unchanged.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force_update: bool,
    },
    /// `plan.set_service`: the service's config for its next start.
    SetService {
        name: String,
        config: Box<ServiceConfig>,
    },
    RemoveService {
        name: String,
    },
    StopService {
        name: String,
    },
    StartService {
        name: String,
    },
    Exec {
        service_name: String,
        recipe: ExecRecipe,
        acceptable_codes: Vec<i64>,
        skip_code_check: bool,
        /// The id of its future references.
        id: String,
    },
    Request {
        service_name: String,
        recipe: HttpRecipe,
        acceptable_codes: Vec<i64>,
        skip_code_check: bool,
        id: String,
    },
    Wait {
        service_name: String,
        recipe: Recipe,
        field: String,
        assertion: Assertion,
        target_value: serde_json::Value,
        interval: GoDuration,
        timeout: GoDuration,
        id: String,
    },
    Verify {
        value: serde_json::Value,
        assertion: Assertion,
        target_value: serde_json::Value,
    },
    Print {
        msg: String,
    },
    UploadFiles {
        name: String,
        artifact: Artifact,
    },
    /// `plan.run_sh` / `plan.run_python`.
    RunTask {
        /// `sh` or `python`.
        kind: String,
        task: Box<Task>,
        id: String,
    },
    /// `plan.store_service_files`.
    StoreServiceFiles {
        service_name: String,
        src: String,
        name: String,
    },
    RenderTemplates {
        name: String,
        artifact: Artifact,
    },
}

/// An instruction with where it was written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub location: Location,
    #[serde(flatten)]
    pub instruction: Instruction,
}

/// The result of interpretation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub package: String,
    pub steps: Vec<Step>,
    /// What `run` returned, as JSON (may hold future references).
    pub output: serde_json::Value,
    /// Every package the interpretation read, the run one first.
    #[serde(default)]
    pub packages: Vec<PackageUsed>,
}

/// A package an interpretation read, and where from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PackageUsed {
    /// `name` in its kurtosis.yml.
    pub name: String,
    /// `github.com/OWNER/REPO[@VERSION]` it was fetched as, or the
    /// directory it was read from.
    pub source: String,
    /// The commit, for a fetched package.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

impl Plan {
    /// Every Nix image the plan builds, each once, in order of first use.
    pub fn nix_images(&self) -> Vec<&NixBuildSpec> {
        let mut out: Vec<&NixBuildSpec> = Vec::new();
        for s in &self.steps {
            let image = match &s.instruction {
                Instruction::AddService { config, .. } | Instruction::SetService { config, .. } => {
                    &config.image
                }
                Instruction::RunTask { task, .. } => &task.image,
                _ => continue,
            };
            if let ImageSource::Nix(n) = image {
                if !out.iter().any(|o| o.image_name == n.image_name) {
                    out.push(n);
                }
            }
        }
        out
    }
}

fn list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

impl fmt::Display for Instruction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Instruction::AddService { name, config, .. } => {
                write!(f, "add_service name={name:?} image=")?;
                match &config.image {
                    ImageSource::Nix(n) => write!(
                        f,
                        "NixBuildSpec(image_name={:?}, flake={}#{})",
                        n.image_name,
                        n.flake_dir.display(),
                        n.flake_output.as_deref().unwrap_or("default")
                    )?,
                    ImageSource::Named(i) => write!(f, "{:?}", i.image)?,
                    ImageSource::Dockerfile { image_name, .. } => {
                        write!(f, "ImageBuildSpec(image_name={image_name:?})")?
                    }
                }
                if let Some(e) = &config.entrypoint {
                    write!(f, " entrypoint={}", list(e))?;
                }
                if let Some(c) = &config.cmd {
                    write!(f, " cmd={}", list(c))?;
                }
                if !config.env_vars.is_empty() {
                    write!(f, " env_vars={:?}", config.env_vars)?;
                }
                if !config.ports.is_empty() {
                    let ports: Vec<String> = config
                        .ports
                        .iter()
                        .map(|(id, p)| format!("{id}={}/{}", p.number, p.transport_protocol))
                        .collect();
                    write!(f, " ports=[{}]", ports.join(", "))?;
                }
                if !config.files.is_empty() {
                    write!(f, " files={:?}", config.files)?;
                }
                Ok(())
            }
            Instruction::RemoveService { name } => write!(f, "remove_service name={name:?}"),
            Instruction::SetService { name, .. } => write!(f, "set_service name={name:?}"),
            Instruction::RunTask { kind, task, .. } => {
                write!(f, "run_{kind} image={:?} command={}", task.image.name(), list(&task.command))?;
                if !task.store.is_empty() {
                    let s: Vec<String> = task.store.iter().map(|s| format!("{}={}", s.name, s.src)).collect();
                    write!(f, " store=[{}]", s.join(", "))?;
                }
                Ok(())
            }
            Instruction::StoreServiceFiles {
                service_name,
                src,
                name,
            } => write!(f, "store_service_files service_name={service_name:?} src={src:?} name={name:?}"),
            Instruction::StopService { name } => write!(f, "stop_service name={name:?}"),
            Instruction::StartService { name } => write!(f, "start_service name={name:?}"),
            Instruction::Exec {
                service_name,
                recipe,
                acceptable_codes,
                skip_code_check,
                ..
            } => {
                write!(
                    f,
                    "exec service_name={service_name:?} command={}",
                    list(&recipe.command)
                )?;
                if *skip_code_check {
                    write!(f, " skip_code_check=True")
                } else {
                    write!(f, " acceptable_codes={acceptable_codes:?}")
                }
            }
            Instruction::Request {
                service_name,
                recipe,
                ..
            } => write!(
                f,
                "request service_name={service_name:?} {}",
                Recipe::Http(recipe.clone())
            ),
            Instruction::Wait {
                service_name,
                recipe,
                field,
                assertion,
                target_value,
                timeout,
                ..
            } => write!(
                f,
                "wait service_name={service_name:?} {recipe} until {field} {} {target_value} (timeout {timeout})",
                assertion.as_str()
            ),
            Instruction::Verify {
                value,
                assertion,
                target_value,
            } => write!(f, "verify {value} {} {target_value}", assertion.as_str()),
            Instruction::Print { msg } => write!(f, "print {msg:?}"),
            Instruction::UploadFiles { name, artifact } => match artifact {
                Artifact::Upload { src } => {
                    write!(f, "upload_files name={name:?} src={}", src.display())
                }
                Artifact::Url { url } => write!(f, "upload_files name={name:?} src={url}"),
                Artifact::Templates { .. } => write!(f, "upload_files name={name:?}"),
            },
            Instruction::RenderTemplates { name, artifact } => match artifact {
                Artifact::Templates { files } => {
                    let paths: Vec<&String> = files.keys().collect();
                    write!(f, "render_templates name={name:?} files={paths:?}")
                }
                Artifact::Upload { .. } | Artifact::Url { .. } => {
                    write!(f, "render_templates name={name:?}")
                }
            },
        }
    }
}
