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
}

impl ImageSource {
    /// The name the image has (or gets) in containerd, as written.
    pub fn name(&self) -> &str {
        match self {
            ImageSource::Nix(n) => &n.image_name,
            ImageSource::Named(i) => &i.image,
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
    /// Mount point → files artifact name.
    pub files: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub user: Option<User>,
    pub min_cpu: Option<u64>,
    pub max_cpu: Option<u64>,
    pub min_memory: Option<u64>,
    pub max_memory: Option<u64>,
    pub ready_conditions: Option<ReadyCondition>,
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
}

impl Plan {
    /// Every Nix image the plan builds, each once, in order of first use.
    pub fn nix_images(&self) -> Vec<&NixBuildSpec> {
        let mut out: Vec<&NixBuildSpec> = Vec::new();
        for s in &self.steps {
            if let Instruction::AddService { config, .. } = &s.instruction {
                if let ImageSource::Nix(n) = &config.image {
                    if !out.iter().any(|o| o.image_name == n.image_name) {
                        out.push(n);
                    }
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
                Artifact::Templates { .. } => write!(f, "upload_files name={name:?}"),
            },
            Instruction::RenderTemplates { name, artifact } => match artifact {
                Artifact::Templates { files } => {
                    let paths: Vec<&String> = files.keys().collect();
                    write!(f, "render_templates name={name:?} files={paths:?}")
                }
                Artifact::Upload { .. } => write!(f, "render_templates name={name:?}"),
            },
        }
    }
}
