//! Kurtosis' builtins, with Kurtosis' names and argument names. The `plan`
//! methods record instructions; constructors (`ServiceConfig`, ...) check
//! their arguments and return owned values. Every check happens here, at
//! interpretation, so a bad package fails before anything runs, with the
//! location of the call.

// Kurtosis' builtins take many keyword arguments.
#![allow(clippy::too_many_arguments)]

use super::future;
use super::model::*;
use super::package::Package;
use super::values::*;
use starlark::any::ProvidesStaticType;
use starlark::environment::{Globals, GlobalsBuilder, MethodsBuilder, Module};
use starlark::eval::Evaluator;
use starlark::syntax::{AstModule, Dialect};
use starlark::values::dict::{AllocDict, DictRef};
use starlark::values::list::ListRef;
use starlark::values::none::{NoneOr, NoneType};
use starlark::values::structs::AllocStruct;
use starlark::values::tuple::TupleRef;
use starlark::values::{Value, ValueLike};
use starlark_derive::starlark_module;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What interpretation accumulates; reached from builtins through
/// `Evaluator::extra`.
#[derive(ProvidesStaticType)]
pub struct Ctx {
    pub package: Package,
    pub globals: Globals,
    pub state: RefCell<State>,
}

#[derive(Default)]
pub struct State {
    pub steps: Vec<Step>,
    /// Services that exist at this point of the plan.
    pub services: BTreeMap<String, ServiceInfo>,
    pub artifacts: BTreeSet<String>,
    /// Files being imported (to refuse import cycles).
    pub importing: Vec<PathBuf>,
    /// Evaluated modules, by file.
    pub modules: BTreeMap<PathBuf, starlark::environment::FrozenModule>,
}

pub fn dialect() -> Dialect {
    Dialect::Extended
}

pub fn globals() -> Globals {
    use starlark::environment::LibraryExtension as L;
    GlobalsBuilder::extended_by(&[L::StructType, L::Json, L::Print, L::Map, L::Filter])
        .with(kurtosis_globals)
        .build()
}

fn ctx<'a>(eval: &Evaluator<'_, 'a, '_>) -> &'a Ctx {
    eval.extra
        .and_then(|e| e.downcast_ref::<Ctx>())
        .expect("the interpreter always sets its context")
}

/// `file:line:column` of the innermost Starlark call.
pub fn location(eval: &Evaluator) -> Location {
    match eval.call_stack_top_location() {
        Some(span) => {
            let r = span.resolve_span();
            Location(format!(
                "{}:{}:{}",
                span.filename(),
                r.begin.line + 1,
                r.begin.column + 1
            ))
        }
        None => Location::default(),
    }
}

/// The `.star` file being evaluated (locators are relative to it).
fn current_file(eval: &Evaluator, package: &Package) -> PathBuf {
    match eval.call_stack_top_location() {
        Some(span) => package.root.join(span.filename()),
        None => package.root.join("main.star"),
    }
}

fn push(eval: &Evaluator, instruction: Instruction) -> usize {
    let c = ctx(eval);
    let mut st = c.state.borrow_mut();
    st.steps.push(Step {
        location: location(eval),
        instruction,
    });
    st.steps.len() - 1
}

// --- argument checks, with Kurtosis' messages -------------------------------

fn type_name(v: Value) -> String {
    let t = v.get_type();
    let mut c = t.chars();
    match c.next() {
        Some(f) => format!("starlark.{}{}", f.to_ascii_uppercase(), c.as_str()),
        None => "starlark.Unknown".into(),
    }
}

fn string(arg: &str, v: Value) -> anyhow::Result<String> {
    v.unpack_str().map(String::from).ok_or_else(|| {
        anyhow::anyhow!(
            "Value for '{arg}' was expected to be a starlark.String but was '{}'",
            type_name(v)
        )
    })
}

fn nonempty(arg: &str, v: Value) -> anyhow::Result<String> {
    let s = string(arg, v)?;
    if s.is_empty() {
        anyhow::bail!("Value for '{arg}' was an empty string. This is disallowed");
    }
    Ok(s)
}

fn opt<'v, T>(
    v: Option<Value<'v>>,
    f: impl FnOnce(Value<'v>) -> anyhow::Result<T>,
) -> anyhow::Result<Option<T>> {
    match v {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => f(v).map(Some),
    }
}

fn int(arg: &str, v: Value) -> anyhow::Result<i64> {
    if let Some(i) = v.unpack_i32() {
        return Ok(i as i64);
    }
    match v.to_json_value() {
        Ok(serde_json::Value::Number(n)) if n.is_i64() => Ok(n.as_i64().expect("checked")),
        _ => anyhow::bail!(
            "Value for '{arg}' was expected to be a starlark.Int but was '{}'",
            type_name(v)
        ),
    }
}

fn unsigned(arg: &str, v: Value) -> anyhow::Result<u64> {
    let i = int(arg, v)?;
    u64::try_from(i).map_err(|_| anyhow::anyhow!("Value for '{arg}' must not be negative, got {i}"))
}

fn items<'v>(arg: &str, v: Value<'v>) -> anyhow::Result<Vec<Value<'v>>> {
    if let Some(l) = ListRef::from_value(v) {
        return Ok(l.content().to_vec());
    }
    if let Some(t) = TupleRef::from_value(v) {
        return Ok(t.content().to_vec());
    }
    anyhow::bail!(
        "Value for '{arg}' was expected to be a starlark.List but was '{}'",
        type_name(v)
    )
}

fn string_list(arg: &str, v: Value) -> anyhow::Result<Vec<String>> {
    items(arg, v)?
        .into_iter()
        .enumerate()
        .map(|(i, x)| string(&format!("{arg}[{i}]"), x))
        .collect()
}

fn entries<'v>(arg: &str, v: Value<'v>) -> anyhow::Result<Vec<(String, Value<'v>)>> {
    let d = DictRef::from_value(v).ok_or_else(|| {
        anyhow::anyhow!(
            "Value for '{arg}' was expected to be a starlark.Dict but was '{}'",
            type_name(v)
        )
    })?;
    d.iter()
        .map(|(k, x)| Ok((string(&format!("key of {arg}"), k)?, x)))
        .collect()
}

fn string_dict(arg: &str, v: Value) -> anyhow::Result<BTreeMap<String, String>> {
    entries(arg, v)?
        .into_iter()
        .map(|(k, x)| {
            let s = string(&format!("{arg}[{k:?}]"), x)?;
            Ok((k, s))
        })
        .collect()
}

fn json(arg: &str, v: Value) -> anyhow::Result<serde_json::Value> {
    v.to_json_value()
        .map_err(|e| anyhow::anyhow!("Value for '{arg}' cannot be used as data: {e}"))
}

fn downcast<'v, T: starlark::values::StarlarkValue<'v> + Clone>(
    arg: &str,
    want: &str,
    v: Value<'v>,
) -> anyhow::Result<T> {
    v.downcast_ref::<T>().cloned().ok_or_else(|| {
        anyhow::anyhow!(
            "Value for '{arg}' was expected to be a {want} but was '{}'",
            type_name(v)
        )
    })
}

fn duration(arg: &str, s: &str) -> anyhow::Result<super::duration::GoDuration> {
    super::duration::GoDuration::parse(s).map_err(|e| anyhow::anyhow!("Value for '{arg}': {e}"))
}

/// RFC 1035 labels, as Kurtosis requires of service names.
fn check_service_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_lowercase()
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        anyhow::bail!("service name '{name}' is invalid: use at most 63 lowercase letters, digits and '-', starting with a letter and not ending with '-'");
    }
    Ok(())
}

fn check_artifact_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name != "."
        && name != "..";
    if !ok {
        anyhow::bail!(
            "files artifact name '{name}' is invalid: use letters, digits, '-', '_' and '.'"
        );
    }
    Ok(())
}

fn known_service(eval: &Evaluator, name: &str) -> anyhow::Result<ServiceInfo> {
    let st = ctx(eval).state.borrow();
    st.services.get(name).cloned().ok_or_else(|| {
        let known: Vec<&str> = st.services.keys().map(String::as_str).collect();
        anyhow::anyhow!(
            "there is no service '{name}' at this point of the plan (services: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )
    })
}

/// `stop_service` and `start_service`: an instruction on a known service.
fn service_step(
    eval: &Evaluator,
    name: Value,
    make: fn(String) -> Instruction,
) -> anyhow::Result<NoneType> {
    let name = nonempty("name", name)?;
    known_service(eval, &name)?;
    push(eval, make(name));
    Ok(NoneType)
}

/// `acceptable_codes`, else `default`.
fn codes(v: Option<Value>, default: &[i64]) -> anyhow::Result<Vec<i64>> {
    Ok(opt(v, |v| {
        items("acceptable_codes", v)?
            .into_iter()
            .enumerate()
            .map(|(i, x)| int(&format!("acceptable_codes[{i}]"), x))
            .collect::<anyhow::Result<Vec<i64>>>()
    })?
    .unwrap_or_else(|| default.to_vec()))
}

fn exec_recipe(v: Value) -> anyhow::Result<ExecRecipe> {
    Ok(downcast::<ExecRecipeValue>("recipe", "ExecRecipe", v)?.0)
}

fn any_recipe(v: Value) -> anyhow::Result<Recipe> {
    if let Some(r) = v.downcast_ref::<ExecRecipeValue>() {
        return Ok(Recipe::Exec(r.0.clone()));
    }
    if let Some(r) = v.downcast_ref::<HttpRecipeValue>() {
        return Ok(Recipe::Http(r.0.clone()));
    }
    anyhow::bail!(
        "Value for 'recipe' was expected to be an ExecRecipe, GetHttpRequestRecipe or PostHttpRequestRecipe but was '{}'",
        type_name(v)
    )
}

/// An HTTP recipe must name a port of the service.
fn check_recipe_port(service: &ServiceInfo, recipe: &Recipe) -> anyhow::Result<()> {
    if let Recipe::Http(h) = recipe {
        if !service.ports.contains_key(&h.port_id) {
            let known: Vec<&str> = service.ports.keys().map(String::as_str).collect();
            anyhow::bail!(
                "service '{}' has no port '{}' (ports: {})",
                service.name,
                h.port_id,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
    }
    Ok(())
}

fn check_field(recipe: &Recipe, field: &str) -> anyhow::Result<()> {
    let fields = recipe.fields();
    if !fields.iter().any(|f| f == field) {
        anyhow::bail!(
            "field '{field}' is not a field of the recipe's result: use one of {}",
            fields.join(", ")
        );
    }
    Ok(())
}

fn extract_map(v: Option<Value>) -> anyhow::Result<BTreeMap<String, String>> {
    let extract = opt(v, |v| string_dict("extract", v))?.unwrap_or_default();
    for (k, expr) in &extract {
        super::jq::check(expr).map_err(|e| anyhow::anyhow!("extract '{k}': {e}"))?;
    }
    Ok(extract)
}

fn ready_condition(v: Value) -> anyhow::Result<ReadyCondition> {
    Ok(downcast::<ReadyConditionValue>("ready_conditions", "ReadyCondition", v)?.0)
}

fn assertion(v: Value) -> anyhow::Result<Assertion> {
    let s = string("assertion", v)?;
    Assertion::parse(&s)
        .ok_or_else(|| anyhow::anyhow!("assertion '{s}' is not one of {}", Assertion::ALL))
}

/// The value `plan.exec`, `plan.request` and `plan.wait` return: future
/// references to each field of the recipe's result.
fn recipe_result<'v>(eval: &Evaluator<'v, '_, '_>, id: &str, recipe: &Recipe) -> Value<'v> {
    let items: Vec<(String, String)> = recipe
        .fields()
        .into_iter()
        .map(|f| {
            let r = future::reference(id, &f);
            (f, r)
        })
        .collect();
    eval.heap().alloc(AllocDict(items))
}

fn nix_build_spec(
    eval: &Evaluator,
    image_name: Value,
    build_context_dir: Value,
    flake_location_dir: Option<Value>,
    flake_output: Option<Value>,
) -> anyhow::Result<NixBuildSpec> {
    let image_name = nonempty("image_name", image_name)?;
    crate::oci::reference::ImageRef::parse(&image_name)
        .map_err(|e| anyhow::anyhow!("Value for 'image_name' ('{image_name}'): {e}"))?;
    let build_context_dir = nonempty("build_context_dir", build_context_dir)?;
    let flake_location_dir =
        opt(flake_location_dir, |v| nonempty("flake_location_dir", v))?.unwrap_or(".".into());
    let flake_output = opt(flake_output, |v| nonempty("flake_output", v))?;
    let c = ctx(eval);
    let from = current_file(eval, &c.package);
    let context = c.package.locate_existing(&from, &build_context_dir)?;
    if !context.is_dir() {
        anyhow::bail!(
            "build_context_dir '{build_context_dir}' is {}, not a directory",
            context.display()
        );
    }
    // The flake dir is a path inside the context; it may not leave it.
    let inside = context.join("__ctx__");
    let flake_dir = c.package.locate(&inside, &flake_location_dir)?;
    if !flake_dir.starts_with(&context) {
        anyhow::bail!("flake_location_dir '{flake_location_dir}' leaves the build context {}: it is a directory inside build_context_dir", context.display());
    }
    if !flake_dir.join("flake.nix").is_file() {
        anyhow::bail!(
            "no flake.nix in {} (build_context_dir '{build_context_dir}', flake_location_dir '{flake_location_dir}'): put the flake there or fix the two directories",
            flake_dir.display()
        );
    }
    Ok(NixBuildSpec {
        image_name,
        build_context_dir,
        flake_location_dir,
        flake_output,
        context,
        flake_dir,
    })
}

fn port_map(arg: &str, v: Option<Value>) -> anyhow::Result<BTreeMap<String, PortSpec>> {
    let Some(v) = v.filter(|v| !v.is_none()) else {
        return Ok(BTreeMap::new());
    };
    entries(arg, v)?
        .into_iter()
        .map(|(id, p)| {
            let spec = downcast::<PortSpecValue>(&format!("{arg}[{id:?}]"), "PortSpec", p)?;
            Ok((id, spec.0))
        })
        .collect()
}

fn image_source(eval: &Evaluator, v: Value) -> anyhow::Result<ImageSource> {
    if let Some(s) = v.unpack_str() {
        if s.is_empty() {
            anyhow::bail!("Value for 'image' was an empty string. This is disallowed");
        }
        crate::oci::reference::ImageRef::parse(s)
            .map_err(|e| anyhow::anyhow!("Value for 'image' ('{s}'): {e}"))?;
        return Ok(ImageSource::Named(ImageSpec {
            image: s.into(),
            registry: None,
            username: None,
            password: None,
        }));
    }
    if let Some(n) = v.downcast_ref::<NixBuildSpecValue>() {
        let _ = eval;
        return Ok(ImageSource::Nix(n.0.clone()));
    }
    if let Some(i) = v.downcast_ref::<ImageSpecValue>() {
        return Ok(ImageSource::Named(i.0.clone()));
    }
    anyhow::bail!(
        "Value for 'image' was expected to be a starlark.String, ImageSpec or NixBuildSpec but was '{}'",
        type_name(v)
    )
}

fn add_service_checked(
    eval: &Evaluator,
    name: &str,
    config: ServiceConfig,
) -> anyhow::Result<ServiceInfo> {
    check_service_name(name)?;
    let c = ctx(eval);
    {
        let st = c.state.borrow();
        if st.services.contains_key(name) {
            anyhow::bail!(
                "a service named '{name}' already exists in this enclave; service names are unique"
            );
        }
        for (mount, artifact) in &config.files {
            if !mount.starts_with('/') {
                anyhow::bail!(
                    "files: mount point '{mount}' of service '{name}' is not an absolute path"
                );
            }
            if !st.artifacts.contains(artifact) {
                anyhow::bail!("files: service '{name}' mounts files artifact '{artifact}' at {mount}, but no artifact of that name exists at this point of the plan (make it with plan.upload_files or plan.render_templates first)");
            }
        }
    }
    if let Some(rc) = &config.ready_conditions {
        if let Recipe::Http(h) = &rc.recipe {
            if !config.ports.contains_key(&h.port_id) {
                anyhow::bail!("ready_conditions of service '{name}' use port '{}', which is not among its ports", h.port_id);
            }
        }
    }
    let id = future::id_for(c.state.borrow().steps.len());
    let info = ServiceInfo::new(name, &future::reference(&id, "ip_address"), &config.ports);
    push(
        eval,
        Instruction::AddService {
            name: name.into(),
            config: Box::new(config),
            id,
        },
    );
    c.state
        .borrow_mut()
        .services
        .insert(name.into(), info.clone());
    Ok(info)
}

fn new_artifact_name(eval: &Evaluator, name: Option<Value>, stem: &str) -> anyhow::Result<String> {
    let c = ctx(eval);
    let name = match opt(name, |v| nonempty("name", v))? {
        Some(n) => n,
        None => {
            let st = c.state.borrow();
            (1..)
                .map(|i| format!("{stem}-{i}"))
                .find(|n| !st.artifacts.contains(n))
                .expect("an unused name")
        }
    };
    check_artifact_name(&name)?;
    if c.state.borrow().artifacts.contains(&name) {
        anyhow::bail!("a files artifact named '{name}' already exists; artifact names are unique");
    }
    Ok(name)
}

/// Evaluate a `.star` file of the package (for `import_module`).
fn import(
    eval: &mut Evaluator,
    locator: &str,
) -> anyhow::Result<starlark::environment::FrozenModule> {
    let extra = eval.extra;
    let c = ctx(eval);
    let from = current_file(eval, &c.package);
    let path = c.package.locate_existing(&from, locator)?;
    if let Some(m) = c.state.borrow().modules.get(&path) {
        return Ok(m.clone());
    }
    if c.state.borrow().importing.contains(&path) {
        anyhow::bail!(
            "import cycle: {} imports itself",
            c.package.relative(&path).display()
        );
    }
    let name = c.package.relative(&path).to_string_lossy().into_owned();
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let ast = AstModule::parse(&name, text, &dialect())
        .map_err(|e| anyhow::anyhow!("{}", super::format_error(&e)))?;
    c.state.borrow_mut().importing.push(path.clone());
    let result = Module::with_temp_heap(|module| -> anyhow::Result<_> {
        {
            let mut inner = Evaluator::new(&module);
            inner.extra = extra;
            inner
                .eval_module(ast, &c.globals)
                .map_err(|e| anyhow::anyhow!("{}", super::format_error(&e)))?;
        }
        module
            .freeze()
            .map_err(|e| anyhow::anyhow!("cannot freeze {name}: {e:?}"))
    });
    c.state.borrow_mut().importing.pop();
    let frozen = result?;
    c.state.borrow_mut().modules.insert(path, frozen.clone());
    Ok(frozen)
}

#[starlark_module]
fn kurtosis_globals(builder: &mut GlobalsBuilder) {
    #[allow(non_snake_case)]
    fn ServiceConfig<'v>(
        image: Value<'v>,
        #[starlark(require = named)] ports: Option<Value<'v>>,
        #[starlark(require = named)] public_ports: Option<Value<'v>>,
        #[starlark(require = named)] files: Option<Value<'v>>,
        #[starlark(require = named)] entrypoint: Option<Value<'v>>,
        #[starlark(require = named)] cmd: Option<Value<'v>>,
        #[starlark(require = named)] env_vars: Option<Value<'v>>,
        #[starlark(require = named)] labels: Option<Value<'v>>,
        #[starlark(require = named)] user: Option<Value<'v>>,
        #[starlark(require = named)] min_cpu: Option<Value<'v>>,
        #[starlark(require = named)] max_cpu: Option<Value<'v>>,
        #[starlark(require = named)] min_memory: Option<Value<'v>>,
        #[starlark(require = named)] max_memory: Option<Value<'v>>,
        #[starlark(require = named)] ready_conditions: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<ServiceConfigValue> {
        let image = image_source(eval, image)?;
        let files = opt(files, |v| string_dict("files", v))?.unwrap_or_default();
        let user = opt(user, |v| Ok(downcast::<UserValue>("user", "User", v)?.0))?;
        let config = super::model::ServiceConfig {
            image,
            cmd: opt(cmd, |v| string_list("cmd", v))?,
            entrypoint: opt(entrypoint, |v| string_list("entrypoint", v))?,
            env_vars: opt(env_vars, |v| string_dict("env_vars", v))?.unwrap_or_default(),
            ports: port_map("ports", ports)?,
            public_ports: port_map("public_ports", public_ports)?,
            files,
            labels: opt(labels, |v| string_dict("labels", v))?.unwrap_or_default(),
            user,
            min_cpu: opt(min_cpu, |v| unsigned("min_cpu", v))?,
            max_cpu: opt(max_cpu, |v| unsigned("max_cpu", v))?,
            min_memory: opt(min_memory, |v| unsigned("min_memory", v))?,
            max_memory: opt(max_memory, |v| unsigned("max_memory", v))?,
            ready_conditions: opt(ready_conditions, ready_condition)?,
        };
        if let (Some(lo), Some(hi)) = (config.min_cpu, config.max_cpu) {
            if lo > hi {
                anyhow::bail!("min_cpu ({lo}) is above max_cpu ({hi})");
            }
        }
        if let (Some(lo), Some(hi)) = (config.min_memory, config.max_memory) {
            if lo > hi {
                anyhow::bail!("min_memory ({lo}) is above max_memory ({hi})");
            }
        }
        if config.max_memory == Some(0) || config.max_cpu == Some(0) {
            anyhow::bail!("max_cpu and max_memory must be above 0 when given");
        }
        for (id, p) in &config.public_ports {
            let Some(private) = config.ports.get(id) else {
                anyhow::bail!("public_ports: '{id}' is not one of the service's ports; public_ports publish ports by their id");
            };
            if private.transport_protocol != p.transport_protocol {
                anyhow::bail!(
                    "public_ports: '{id}' is {} but the port is {}",
                    p.transport_protocol,
                    private.transport_protocol
                );
            }
        }
        for (k, v) in &config.labels {
            if k.starts_with("nixoci.") {
                anyhow::bail!("label '{k}={v}': labels starting with 'nixoci.' are nixoci's own");
            }
        }
        Ok(ServiceConfigValue(config))
    }

    #[allow(non_snake_case)]
    fn PortSpec<'v>(
        number: Value<'v>,
        #[starlark(default = NoneOr::None)] transport_protocol: NoneOr<Value<'v>>,
        #[starlark(default = NoneOr::None)] application_protocol: NoneOr<Value<'v>>,
        wait: Option<Value<'v>>,
    ) -> anyhow::Result<PortSpecValue> {
        let n = int("number", number)?;
        let number = u16::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| anyhow::anyhow!("port number {n} is not between 1 and 65535"))?;
        let transport_protocol = match transport_protocol.into_option() {
            None => "TCP".to_string(),
            Some(v) => string("transport_protocol", v)?,
        };
        if !["TCP", "UDP", "SCTP"].contains(&transport_protocol.as_str()) {
            anyhow::bail!("transport_protocol '{transport_protocol}' is not one of TCP, UDP, SCTP");
        }
        let application_protocol = match application_protocol.into_option() {
            None => String::new(),
            Some(v) => string("application_protocol", v)?,
        };
        let wait = match wait {
            None => Some(duration("wait", "15s")?),
            Some(v) if v.is_none() => None,
            Some(v) => Some(duration("wait", &string("wait", v)?)?),
        };
        Ok(PortSpecValue(super::model::PortSpec {
            number,
            transport_protocol,
            application_protocol,
            wait,
        }))
    }

    #[allow(non_snake_case)]
    fn User<'v>(uid: Value<'v>, gid: Option<Value<'v>>) -> anyhow::Result<UserValue> {
        let id = |arg: &str, v: Value| -> anyhow::Result<u32> {
            let i = int(arg, v)?;
            u32::try_from(i)
                .map_err(|_| anyhow::anyhow!("Value for '{arg}' ({i}) is not a valid id"))
        };
        Ok(UserValue(super::model::User {
            uid: id("uid", uid)?,
            gid: opt(gid, |v| id("gid", v))?,
        }))
    }

    #[allow(non_snake_case)]
    fn ExecRecipe<'v>(
        command: Value<'v>,
        #[starlark(require = named)] extract: Option<Value<'v>>,
    ) -> anyhow::Result<ExecRecipeValue> {
        let command = string_list("command", command)?;
        if command.is_empty() {
            anyhow::bail!("Value for 'command' was an empty list. This is disallowed");
        }
        let extract = extract_map(extract)?;
        Ok(ExecRecipeValue(super::model::ExecRecipe {
            command,
            extract,
        }))
    }

    #[allow(non_snake_case)]
    fn GetHttpRequestRecipe<'v>(
        port_id: Value<'v>,
        endpoint: Value<'v>,
        #[starlark(require = named)] headers: Option<Value<'v>>,
        #[starlark(require = named)] extract: Option<Value<'v>>,
    ) -> anyhow::Result<HttpRecipeValue> {
        Ok(HttpRecipeValue(super::model::HttpRecipe {
            method: "GET".into(),
            port_id: nonempty("port_id", port_id)?,
            endpoint: string("endpoint", endpoint)?,
            headers: opt(headers, |v| string_dict("headers", v))?.unwrap_or_default(),
            content_type: None,
            body: String::new(),
            extract: extract_map(extract)?,
        }))
    }

    #[allow(non_snake_case)]
    fn PostHttpRequestRecipe<'v>(
        port_id: Value<'v>,
        endpoint: Value<'v>,
        #[starlark(require = named)] content_type: Option<Value<'v>>,
        #[starlark(require = named)] body: Option<Value<'v>>,
        #[starlark(require = named)] headers: Option<Value<'v>>,
        #[starlark(require = named)] extract: Option<Value<'v>>,
    ) -> anyhow::Result<HttpRecipeValue> {
        Ok(HttpRecipeValue(super::model::HttpRecipe {
            method: "POST".into(),
            port_id: nonempty("port_id", port_id)?,
            endpoint: string("endpoint", endpoint)?,
            headers: opt(headers, |v| string_dict("headers", v))?.unwrap_or_default(),
            content_type: Some(
                opt(content_type, |v| string("content_type", v))?
                    .unwrap_or("application/json".into()),
            ),
            body: opt(body, |v| string("body", v))?.unwrap_or_default(),
            extract: extract_map(extract)?,
        }))
    }

    #[allow(non_snake_case)]
    fn ReadyCondition<'v>(
        recipe: Value<'v>,
        field: Value<'v>,
        assertion: Value<'v>,
        target_value: Value<'v>,
        #[starlark(require = named)] interval: Option<Value<'v>>,
        #[starlark(require = named)] timeout: Option<Value<'v>>,
    ) -> anyhow::Result<ReadyConditionValue> {
        let recipe = any_recipe(recipe)?;
        let field = nonempty("field", field)?;
        check_field(&recipe, &field)?;
        let interval = opt(interval, |v| string("interval", v))?.unwrap_or("1s".into());
        let interval = duration("interval", &interval)?;
        let timeout = opt(timeout, |v| string("timeout", v))?.unwrap_or("15m".into());
        let timeout = duration("timeout", &timeout)?;
        Ok(ReadyConditionValue(super::model::ReadyCondition {
            recipe,
            field,
            assertion: self::assertion(assertion)?,
            target_value: json("target_value", target_value)?,
            interval,
            timeout,
        }))
    }

    #[allow(non_snake_case)]
    fn NixBuildSpec<'v>(
        image_name: Value<'v>,
        build_context_dir: Value<'v>,
        flake_location_dir: Option<Value<'v>>,
        flake_output: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NixBuildSpecValue> {
        Ok(NixBuildSpecValue(nix_build_spec(
            eval,
            image_name,
            build_context_dir,
            flake_location_dir,
            flake_output,
        )?))
    }

    #[allow(non_snake_case)]
    fn ImageSpec<'v>(
        image: Value<'v>,
        registry: Option<Value<'v>>,
        username: Option<Value<'v>>,
        password: Option<Value<'v>>,
    ) -> anyhow::Result<ImageSpecValue> {
        let image = nonempty("image", image)?;
        crate::oci::reference::ImageRef::parse(&image)
            .map_err(|e| anyhow::anyhow!("Value for 'image' ('{image}'): {e}"))?;
        Ok(ImageSpecValue(super::model::ImageSpec {
            image,
            registry: opt(registry, |v| nonempty("registry", v))?,
            username: opt(username, |v| string("username", v))?,
            password: opt(password, |v| string("password", v))?,
        }))
    }

    fn import_module<'v>(
        module_file: Value<'v>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<Value<'v>> {
        let locator = nonempty("module_file", module_file)?;
        let frozen = import(eval, &locator)?;
        let mut fields: Vec<(String, Value<'v>)> = Vec::new();
        for name in frozen.names() {
            let name = name.as_str().to_string();
            if name.starts_with('_') {
                continue;
            }
            if let Ok(v) = frozen.get(&name) {
                // SAFETY: `owned_frozen_value` adds the module's heap as a
                // reference of the evaluator's frozen heap, which outlives
                // every value of this evaluation.
                let fv = unsafe { v.owned_frozen_value(eval.frozen_heap()) };
                fields.push((name, fv.to_value()));
            }
        }
        Ok(eval.heap().alloc(AllocStruct(fields)))
    }

    fn read_file<'v>(src: Value<'v>, eval: &mut Evaluator<'v, '_, '_>) -> anyhow::Result<String> {
        let locator = nonempty("src", src)?;
        let c = ctx(eval);
        let path = c
            .package
            .locate_existing(&current_file(eval, &c.package), &locator)?;
        std::fs::read_to_string(&path).map_err(|e| {
            anyhow::anyhow!("read_file '{locator}': cannot read {}: {e}", path.display())
        })
    }
}

#[starlark_module]
pub fn plan_methods(builder: &mut MethodsBuilder) {
    fn add_service<'v>(
        #[starlark(this)] _this: Value<'v>,
        name: Value<'v>,
        config: Value<'v>,
        #[starlark(require = named)] description: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<ServiceValue> {
        let _ = description;
        let name = nonempty("name", name)?;
        let config = downcast::<ServiceConfigValue>("config", "ServiceConfig", config)?.0;
        Ok(ServiceValue(add_service_checked(eval, &name, config)?))
    }

    fn add_services<'v>(
        #[starlark(this)] _this: Value<'v>,
        configs: Value<'v>,
        #[starlark(require = named)] description: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<Value<'v>> {
        let _ = description;
        let mut out: Vec<(String, Value<'v>)> = Vec::new();
        for (name, config) in entries("configs", configs)? {
            let config = downcast::<ServiceConfigValue>(
                &format!("configs[{name:?}]"),
                "ServiceConfig",
                config,
            )?
            .0;
            let info = add_service_checked(eval, &name, config)?;
            out.push((name, eval.heap().alloc(ServiceValue(info))));
        }
        Ok(eval.heap().alloc(AllocDict(out)))
    }

    fn get_service<'v>(
        #[starlark(this)] _this: Value<'v>,
        name: Value<'v>,
        #[starlark(require = named)] description: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<ServiceValue> {
        let _ = description;
        let name = nonempty("name", name)?;
        Ok(ServiceValue(known_service(eval, &name)?))
    }

    fn remove_service<'v>(
        #[starlark(this)] _this: Value<'v>,
        name: Value<'v>,
        #[starlark(require = named)] description: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        let _ = description;
        let name = nonempty("name", name)?;
        known_service(eval, &name)?;
        push(eval, Instruction::RemoveService { name: name.clone() });
        ctx(eval).state.borrow_mut().services.remove(&name);
        Ok(NoneType)
    }

    fn stop_service<'v>(
        #[starlark(this)] _this: Value<'v>,
        name: Value<'v>,
        #[starlark(require = named)] description: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        let _ = description;
        service_step(eval, name, |name| Instruction::StopService { name })
    }

    fn start_service<'v>(
        #[starlark(this)] _this: Value<'v>,
        name: Value<'v>,
        #[starlark(require = named)] description: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        let _ = description;
        service_step(eval, name, |name| Instruction::StartService { name })
    }

    fn exec<'v>(
        #[starlark(this)] _this: Value<'v>,
        service_name: Value<'v>,
        recipe: Value<'v>,
        #[starlark(require = named)] acceptable_codes: Option<Value<'v>>,
        #[starlark(require = named, default = false)] skip_code_check: bool,
        #[starlark(require = named)] description: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<Value<'v>> {
        let _ = description;
        let service_name = nonempty("service_name", service_name)?;
        let recipe = exec_recipe(recipe)?;
        known_service(eval, &service_name)?;
        let acceptable_codes = codes(acceptable_codes, &[0])?;
        let n = ctx(eval).state.borrow().steps.len();
        let id = future::id_for(n);
        push(
            eval,
            Instruction::Exec {
                service_name,
                recipe: recipe.clone(),
                acceptable_codes,
                skip_code_check,
                id: id.clone(),
            },
        );
        Ok(recipe_result(eval, &id, &Recipe::Exec(recipe)))
    }

    fn request<'v>(
        #[starlark(this)] _this: Value<'v>,
        service_name: Value<'v>,
        recipe: Value<'v>,
        #[starlark(require = named)] acceptable_codes: Option<Value<'v>>,
        #[starlark(require = named, default = false)] skip_code_check: bool,
        #[starlark(require = named)] description: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<Value<'v>> {
        let _ = description;
        let service_name = nonempty("service_name", service_name)?;
        let recipe = match any_recipe(recipe)? {
            Recipe::Http(h) => h,
            Recipe::Exec(_) => anyhow::bail!("plan.request takes a GetHttpRequestRecipe or PostHttpRequestRecipe; use plan.exec for an ExecRecipe"),
        };
        let service = known_service(eval, &service_name)?;
        check_recipe_port(&service, &Recipe::Http(recipe.clone()))?;
        let acceptable_codes = codes(acceptable_codes, &[200, 201, 202, 203, 204, 205, 206])?;
        let n = ctx(eval).state.borrow().steps.len();
        let id = future::id_for(n);
        push(
            eval,
            Instruction::Request {
                service_name,
                recipe: recipe.clone(),
                acceptable_codes,
                skip_code_check,
                id: id.clone(),
            },
        );
        Ok(recipe_result(eval, &id, &Recipe::Http(recipe)))
    }

    fn wait<'v>(
        #[starlark(this)] _this: Value<'v>,
        service_name: Value<'v>,
        recipe: Value<'v>,
        field: Value<'v>,
        assertion: Value<'v>,
        target_value: Value<'v>,
        #[starlark(require = named)] interval: Option<Value<'v>>,
        #[starlark(require = named)] timeout: Option<Value<'v>>,
        #[starlark(require = named)] description: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<Value<'v>> {
        let _ = description;
        let service_name = nonempty("service_name", service_name)?;
        let recipe = any_recipe(recipe)?;
        let service = known_service(eval, &service_name)?;
        check_recipe_port(&service, &recipe)?;
        let field = nonempty("field", field)?;
        check_field(&recipe, &field)?;
        let assertion = self::assertion(assertion)?;
        let target_value = json("target_value", target_value)?;
        let interval = opt(interval, |v| string("interval", v))?.unwrap_or("1s".into());
        let interval = duration("interval", &interval)?;
        let timeout = opt(timeout, |v| string("timeout", v))?.unwrap_or("10s".into());
        let timeout = duration("timeout", &timeout)?;
        let n = ctx(eval).state.borrow().steps.len();
        let id = future::id_for(n);
        push(
            eval,
            Instruction::Wait {
                service_name,
                recipe: recipe.clone(),
                field,
                assertion,
                target_value,
                interval,
                timeout,
                id: id.clone(),
            },
        );
        Ok(recipe_result(eval, &id, &recipe))
    }

    fn verify<'v>(
        #[starlark(this)] _this: Value<'v>,
        value: Value<'v>,
        assertion: Value<'v>,
        target_value: Value<'v>,
        #[starlark(require = named)] description: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        let _ = description;
        let value = json("value", value)?;
        let assertion = self::assertion(assertion)?;
        let target_value = json("target_value", target_value)?;
        if matches!(assertion, Assertion::In | Assertion::NotIn)
            && !matches!(target_value, serde_json::Value::Array(_))
        {
            anyhow::bail!(
                "assertion {} needs a list as target_value",
                assertion.as_str()
            );
        }
        push(
            eval,
            Instruction::Verify {
                value,
                assertion,
                target_value,
            },
        );
        Ok(NoneType)
    }

    fn print<'v>(
        #[starlark(this)] _this: Value<'v>,
        msg: Value<'v>,
        #[starlark(require = named)] description: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        let _ = description;
        let msg = match msg.unpack_str() {
            Some(s) => s.to_string(),
            None => msg.to_str(),
        };
        push(eval, Instruction::Print { msg });
        Ok(NoneType)
    }

    fn upload_files<'v>(
        #[starlark(this)] _this: Value<'v>,
        src: Value<'v>,
        name: Option<Value<'v>>,
        #[starlark(require = named)] description: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<String> {
        let _ = description;
        let locator = nonempty("src", src)?;
        let c = ctx(eval);
        let path = c
            .package
            .locate_existing(&current_file(eval, &c.package), &locator)?;
        let name = new_artifact_name(eval, name, "upload")?;
        push(
            eval,
            Instruction::UploadFiles {
                name: name.clone(),
                artifact: Artifact::Upload { src: path },
            },
        );
        c.state.borrow_mut().artifacts.insert(name.clone());
        Ok(name)
    }

    fn render_templates<'v>(
        #[starlark(this)] _this: Value<'v>,
        config: Value<'v>,
        name: Option<Value<'v>>,
        #[starlark(require = named)] description: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<String> {
        let _ = description;
        let mut files = BTreeMap::new();
        for (path, spec) in entries("config", config)? {
            let rel = Path::new(&path);
            if path.is_empty()
                || rel.is_absolute()
                || rel
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                anyhow::bail!(
                    "render_templates: output path '{path}' must be a relative path without '..'"
                );
            }
            let template = spec
                .get_attr("template", eval.heap())
                .ok()
                .flatten()
                .ok_or_else(|| anyhow::anyhow!("render_templates: config[{path:?}] needs struct(template = ..., data = ...)"))?;
            let template = string(&format!("config[{path:?}].template"), template)?;
            super::template::check(&template)
                .map_err(|e| anyhow::anyhow!("render_templates: config[{path:?}].template: {e}"))?;
            let data = match spec.get_attr("data", eval.heap()).ok().flatten() {
                Some(d) => json(&format!("config[{path:?}].data"), d)?,
                None => serde_json::Value::Object(Default::default()),
            };
            files.insert(path, (template, data));
        }
        let name = new_artifact_name(eval, name, "rendered")?;
        push(
            eval,
            Instruction::RenderTemplates {
                name: name.clone(),
                artifact: Artifact::Templates { files },
            },
        );
        ctx(eval).state.borrow_mut().artifacts.insert(name.clone());
        Ok(name)
    }
}
