//! The constructors Kurtosis predeclares (`ServiceConfig`, `PortSpec`,
//! `User`, the recipes, `ReadyCondition`, `NixBuildSpec`, `ImageSpec`) and
//! `import_module`/`read_file`, with the value conversions they share.

#![allow(clippy::too_many_arguments)]

use super::*;

/// Limits a host can carry out: 1000 CPUs, 16 TiB.
const MAX_MILLICORES: u64 = 1_000_000;
const MAX_MEGABYTES: u64 = 16 << 20;

/// A resource limit in `0..=max` (0 or absent: none).
fn limit(v: Option<Value>, arg: &str, max: u64, unit: &str) -> anyhow::Result<Option<u64>> {
    Ok(opt(v, |v| ranged(arg, v, 0, max, unit))?.filter(|n| *n > 0))
}

pub(super) fn exec_recipe(v: Value) -> anyhow::Result<ExecRecipe> {
    Ok(downcast::<ExecRecipeValue>("recipe", "ExecRecipe", v)?.0)
}

pub(super) fn any_recipe(v: Value) -> anyhow::Result<Recipe> {
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

pub(super) fn ready_condition(v: Value) -> anyhow::Result<ReadyCondition> {
    Ok(downcast::<ReadyConditionValue>("ready_conditions", "ReadyCondition", v)?.0)
}

/// The value `plan.exec`, `plan.request` and `plan.wait` return: future
/// references to each field of the recipe's result.
pub(super) fn recipe_result<'v>(
    eval: &Evaluator<'v, '_, '_>,
    id: &str,
    recipe: &Recipe,
) -> Value<'v> {
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

pub(super) fn nix_build_spec(
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
    let (pi, context) = resolve(eval, &build_context_dir)?;
    let package = ctx(eval).state.borrow().packages[pi].clone();
    if !context.is_dir() {
        anyhow::bail!(
            "build_context_dir '{build_context_dir}' is {}, not a directory",
            context.display()
        );
    }
    // The flake dir is a path inside the context; it may not leave it.
    let inside = context.join("__ctx__");
    let flake_dir = package.locate(&inside, &flake_location_dir)?;
    if !flake_dir.starts_with(&context) {
        anyhow::bail!("flake_location_dir '{flake_location_dir}' leaves the build context {}: it is a directory inside build_context_dir", context.display());
    }
    if flake_dir.to_string_lossy().contains(['#', '?']) {
        anyhow::bail!(
            "the flake directory {} has a '#' or '?' in its path, which a flake reference cannot carry: move the package to a path without them",
            flake_dir.display()
        );
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

pub(super) fn port_map(arg: &str, v: Option<Value>) -> anyhow::Result<BTreeMap<String, PortSpec>> {
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

pub(super) fn image_source(eval: &Evaluator, v: Value) -> anyhow::Result<ImageSource> {
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
    if let Some(i) = v.downcast_ref::<ImageBuildSpecValue>() {
        return Ok(i.0.clone());
    }
    anyhow::bail!(
        "Value for 'image' was expected to be a starlark.String, ImageSpec, NixBuildSpec or ImageBuildSpec but was '{}'",
        type_name(v)
    )
}

/// An `http://` or `https://` URL, which `read_file` and `upload_files`
/// fetch.
pub(super) fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// An optional bool argument (absent: false).
pub(super) fn flag(arg: &str, v: Option<Value>) -> anyhow::Result<bool> {
    Ok(opt(v, |v| {
        v.unpack_bool().ok_or_else(|| {
            anyhow::anyhow!(
                "Value for '{arg}' was expected to be a starlark.Bool but was '{}'",
                type_name(v)
            )
        })
    })?
    .unwrap_or(false))
}

/// `files` of a service or task: mount point → an artifact name or a
/// `Directory`.
pub(super) fn files_map(arg: &str, v: Value) -> anyhow::Result<BTreeMap<String, FilesSource>> {
    entries(arg, v)?
        .into_iter()
        .map(|(mount, v)| {
            if !mount.starts_with('/') {
                anyhow::bail!("{arg}: mount point '{mount}' is not an absolute path");
            }
            let source = if let Some(name) = v.unpack_str() {
                if name.is_empty() {
                    anyhow::bail!("{arg}[{mount:?}] is an empty artifact name");
                }
                FilesSource::Artifact(name.into())
            } else if let Some(d) = v.downcast_ref::<DirectoryValue>() {
                d.0.clone()
            } else {
                anyhow::bail!(
                    "Value for '{arg}[{mount:?}]' was expected to be a starlark.String (a files artifact name) or a Directory but was '{}'",
                    type_name(v)
                )
            };
            Ok((mount, source))
        })
        .collect()
}

/// `tolerations`: a list of `Toleration`.
pub(super) fn tolerations(v: Option<Value>) -> anyhow::Result<Vec<crate::plan::model::Toleration>> {
    opt(v, |v| {
        items("tolerations", v)?
            .into_iter()
            .map(|t| Ok(downcast::<TolerationValue>("tolerations[]", "Toleration", t)?.0))
            .collect()
    })
    .map(Option::unwrap_or_default)
}

/// `store` of a task: paths, or `StoreSpec(src, name)`s.
pub(super) fn store_list(v: Option<Value>) -> anyhow::Result<Vec<(String, Option<String>)>> {
    opt(v, |v| {
        items("store", v)?
            .into_iter()
            .map(|x| {
                if let Some(src) = x.unpack_str() {
                    return Ok((src.to_string(), None));
                }
                let s = downcast::<StoreSpecValue>("store[]", "StoreSpec", x)?.0;
                Ok((s.src, Some(s.name)))
            })
            .collect()
    })
    .map(Option::unwrap_or_default)
}

/// Go's `json.Indent` (which starlark-go's `json.indent` is): the same
/// tokens, keys in their order, one per line; `{}` and `[]` stay as they
/// are.
pub(super) fn json_indent(text: &str, prefix: &str, indent: &str) -> anyhow::Result<String> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| anyhow::anyhow!("json.indent: not valid JSON: {e}"))?;
    let mut out = String::new();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = text.trim().chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(prefix);
        for _ in 0..depth {
            out.push_str(indent);
        }
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            ' ' | '\t' | '\n' | '\r' => {}
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('}') | Some(']')) {
                    out.push(chars.next().expect("peeked"));
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            _ => out.push(c),
        }
    }
    Ok(out)
}

/// Time as starlark-go's `time` module shows it: a struct of its fields.
fn time_value<'v>(heap: starlark::values::Heap<'v>, nanos: i128) -> Value<'v> {
    let secs = nanos.div_euclid(1_000_000_000) as i64;
    let nano = nanos.rem_euclid(1_000_000_000) as i64;
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = crate::oci::time::civil_from_days(secs.div_euclid(86_400));
    heap.alloc(AllocStruct([
        ("unix", heap.alloc(secs)),
        ("unix_nano", heap.alloc(nanos as i64)),
        ("year", heap.alloc(year)),
        ("month", heap.alloc(month)),
        ("day", heap.alloc(day)),
        ("hour", heap.alloc(rem / 3600)),
        ("minute", heap.alloc(rem / 60 % 60)),
        ("second", heap.alloc(rem % 60)),
        ("nanosecond", heap.alloc(nano)),
    ]))
}

#[starlark_module]
pub(super) fn json_module(builder: &mut GlobalsBuilder) {
    fn encode<'v>(x: Value<'v>) -> anyhow::Result<String> {
        x.to_json()
    }

    fn decode<'v>(x: &str, eval: &mut Evaluator<'v, '_, '_>) -> anyhow::Result<Value<'v>> {
        let v: serde_json::Value = serde_json::from_str(x)
            .map_err(|e| anyhow::anyhow!("json.decode: not valid JSON: {e}"))?;
        Ok(eval.heap().alloc(v))
    }

    fn indent(
        x: &str,
        #[starlark(require = named, default = "")] prefix: &str,
        #[starlark(require = named, default = "\t")] indent: &str,
    ) -> anyhow::Result<String> {
        json_indent(x, prefix, indent)
    }
}

#[starlark_module]
pub(super) fn time_module(builder: &mut GlobalsBuilder) {
    const nanosecond: i64 = 1;
    const microsecond: i64 = 1_000;
    const millisecond: i64 = 1_000_000;
    const second: i64 = 1_000_000_000;
    const minute: i64 = 60_000_000_000;
    const hour: i64 = 3_600_000_000_000;

    /// The time now: a non-deterministic value, as in Kurtosis.
    fn now<'v>(eval: &mut Evaluator<'v, '_, '_>) -> anyhow::Result<Value<'v>> {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(time_value(eval.heap(), d.as_nanos() as i128))
    }

    fn from_timestamp<'v>(
        sec: i64,
        nsec: Option<i64>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<Value<'v>> {
        Ok(time_value(
            eval.heap(),
            i128::from(sec) * 1_000_000_000 + i128::from(nsec.unwrap_or(0)),
        ))
    }

    /// A Go duration (`1h30m`) in nanoseconds.
    fn parse_duration(d: &str) -> anyhow::Result<i64> {
        let parsed = crate::plan::duration::GoDuration::parse(d)
            .map_err(|e| anyhow::anyhow!("time.parse_duration: {e}"))?;
        Ok(parsed.get().as_nanos() as i64)
    }
}

#[starlark_module]
pub(super) fn kurtosis_globals(builder: &mut GlobalsBuilder) {
    #[allow(non_snake_case)]
    fn Directory<'v>(
        #[starlark(require = named)] artifact_names: Option<Value<'v>>,
        #[starlark(require = named)] persistent_key: Option<Value<'v>>,
        #[starlark(require = named)] size: Option<Value<'v>>,
    ) -> anyhow::Result<DirectoryValue> {
        let names = opt(artifact_names, |v| string_list("artifact_names", v))?;
        let key = opt(persistent_key, |v| nonempty("persistent_key", v))?;
        let size = opt(size, |v| ranged("size", v, 1, MAX_MEGABYTES, "megabytes"))?;
        Ok(DirectoryValue(match (names, key) {
            (Some(names), None) => {
                if names.is_empty() || names.iter().any(String::is_empty) {
                    anyhow::bail!("Directory: artifact_names must name at least one files artifact, and no name may be empty");
                }
                if size.is_some() {
                    anyhow::bail!("Directory: size goes with persistent_key, not artifact_names");
                }
                FilesSource::Artifacts {
                    artifact_names: names,
                }
            }
            (None, Some(key)) => {
                if !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    || key.starts_with('.')
                {
                    anyhow::bail!("Directory: persistent_key '{key}' may hold only letters, digits, '-', '_' and '.', and may not start with '.'");
                }
                FilesSource::Persistent {
                    persistent_key: key,
                    size,
                }
            }
            _ => anyhow::bail!(
                "Directory takes either artifact_names (files artifacts) or persistent_key (a persistent directory), exactly one of them"
            ),
        }))
    }

    #[allow(non_snake_case)]
    fn StoreSpec<'v>(src: Value<'v>, name: Value<'v>) -> anyhow::Result<StoreSpecValue> {
        let src = nonempty("src", src)?;
        let name = nonempty("name", name)?;
        check_artifact_name(&name).map_err(anyhow::Error::msg)?;
        Ok(StoreSpecValue(crate::plan::model::StoreSpec { src, name }))
    }

    #[allow(non_snake_case)]
    fn Toleration<'v>(
        #[starlark(require = named)] key: Option<Value<'v>>,
        #[starlark(require = named)] operator: Option<Value<'v>>,
        #[starlark(require = named)] value: Option<Value<'v>>,
        #[starlark(require = named)] effect: Option<Value<'v>>,
        #[starlark(require = named)] toleration_seconds: Option<Value<'v>>,
    ) -> anyhow::Result<TolerationValue> {
        let s = |arg: &str, v: Option<Value>| -> anyhow::Result<String> {
            Ok(opt(v, |v| string(arg, v))?.unwrap_or_default())
        };
        let operator = s("operator", operator)?;
        if !["", "Equal", "Exists"].contains(&operator.as_str()) {
            anyhow::bail!("Toleration: operator '{operator}' is not Equal or Exists");
        }
        let effect = s("effect", effect)?;
        if !["", "NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect.as_str()) {
            anyhow::bail!(
                "Toleration: effect '{effect}' is not NoSchedule, PreferNoSchedule or NoExecute"
            );
        }
        Ok(TolerationValue(crate::plan::model::Toleration {
            key: s("key", key)?,
            operator,
            value: s("value", value)?,
            effect,
            toleration_seconds: opt(toleration_seconds, |v| int("toleration_seconds", v))?,
        }))
    }

    #[allow(non_snake_case)]
    fn GpuConfig<'v>(
        #[starlark(require = named)] count: Option<Value<'v>>,
        #[starlark(require = named)] device_ids: Option<Value<'v>>,
        #[starlark(require = named)] driver: Option<Value<'v>>,
        #[starlark(require = named)] shm_size: Option<Value<'v>>,
        #[starlark(require = named)] ulimits: Option<Value<'v>>,
    ) -> anyhow::Result<GpuConfigValue> {
        let _ = ulimits;
        Ok(GpuConfigValue(crate::plan::model::GpuConfig {
            count: opt(count, |v| int("count", v))?,
            device_ids: opt(device_ids, |v| string_list("device_ids", v))?.unwrap_or_default(),
            driver: opt(driver, |v| string("driver", v))?,
            shm_size: opt(shm_size, |v| int("shm_size", v))?,
        }))
    }

    #[allow(non_snake_case)]
    fn ImageBuildSpec<'v>(
        image_name: Value<'v>,
        build_context_dir: Value<'v>,
        #[starlark(require = named)] target_stage: Option<Value<'v>>,
        #[starlark(require = named)] build_args: Option<Value<'v>>,
    ) -> anyhow::Result<ImageBuildSpecValue> {
        let _ = (target_stage, build_args);
        Ok(ImageBuildSpecValue(ImageSource::Dockerfile {
            image_name: nonempty("image_name", image_name)?,
            build_context_dir: nonempty("build_context_dir", build_context_dir)?,
        }))
    }

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
        #[starlark(require = named)] private_ip_address_placeholder: Option<Value<'v>>,
        #[starlark(require = named)] node_selectors: Option<Value<'v>>,
        #[starlark(require = named)] tolerations: Option<Value<'v>>,
        #[starlark(require = named)] gpu: Option<Value<'v>>,
        #[starlark(require = named)] publish_udp: Option<Value<'v>>,
        #[starlark(require = named)] tty_enabled: Option<Value<'v>>,
        #[starlark(require = named)] privileged: Option<Value<'v>>,
        #[starlark(require = named)] host_pid_namespace: Option<Value<'v>>,
        #[starlark(require = named)] bind_mounts: Option<Value<'v>>,
        #[starlark(require = named)] devices: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<ServiceConfigValue> {
        // A terminal changes how a program buffers and colours its output;
        // logs are collected the same either way.
        let _ = tty_enabled;
        let image = image_source(eval, image)?;
        let files = opt(files, |v| files_map("files", v))?.unwrap_or_default();
        let user = opt(user, |v| Ok(downcast::<UserValue>("user", "User", v)?.0))?;
        let config = crate::plan::model::ServiceConfig {
            image,
            cmd: opt(cmd, |v| string_list("cmd", v))?,
            entrypoint: opt(entrypoint, |v| string_list("entrypoint", v))?,
            env_vars: opt(env_vars, |v| string_dict("env_vars", v))?.unwrap_or_default(),
            ports: port_map("ports", ports)?,
            public_ports: port_map("public_ports", public_ports)?,
            files,
            labels: opt(labels, |v| string_dict("labels", v))?.unwrap_or_default(),
            user,
            // 0 means no limit, as in Kurtosis.
            min_cpu: limit(min_cpu, "min_cpu", MAX_MILLICORES, "millicores")?,
            max_cpu: limit(max_cpu, "max_cpu", MAX_MILLICORES, "millicores")?,
            min_memory: limit(min_memory, "min_memory", MAX_MEGABYTES, "megabytes")?,
            max_memory: limit(max_memory, "max_memory", MAX_MEGABYTES, "megabytes")?,
            ready_conditions: opt(ready_conditions, ready_condition)?,
            private_ip_address_placeholder: opt(private_ip_address_placeholder, |v| {
                nonempty("private_ip_address_placeholder", v)
            })?,
            node_selectors: opt(node_selectors, |v| string_dict("node_selectors", v))?
                .unwrap_or_default(),
            tolerations: self::tolerations(tolerations)?,
            gpu: opt(gpu, |v| {
                Ok(downcast::<GpuConfigValue>("gpu", "GpuConfig", v)?.0)
            })?,
            publish_udp: flag("publish_udp", publish_udp)?,
            privileged: flag("privileged", privileged)?,
            host_pid_namespace: flag("host_pid_namespace", host_pid_namespace)?,
            bind_mounts: opt(bind_mounts, |v| string_dict("bind_mounts", v))?.unwrap_or_default(),
            devices: opt(devices, |v| string_list("devices", v))?.unwrap_or_default(),
        };
        for (host, inside) in &config.bind_mounts {
            if !host.starts_with('/') || !inside.starts_with('/') {
                anyhow::bail!("bind_mounts: '{host}: {inside}' must map an absolute host path to an absolute path in the container");
            }
        }
        for d in &config.devices {
            crate::plan::model::parse_device(d).map_err(anyhow::Error::msg)?;
        }
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
        Ok(PortSpecValue(crate::plan::model::PortSpec {
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
        Ok(UserValue(crate::plan::model::User {
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
        Ok(ExecRecipeValue(crate::plan::model::ExecRecipe {
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
        Ok(HttpRecipeValue(crate::plan::model::HttpRecipe {
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
        Ok(HttpRecipeValue(crate::plan::model::HttpRecipe {
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
        Ok(ReadyConditionValue(crate::plan::model::ReadyCondition {
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
        Ok(ImageSpecValue(crate::plan::model::ImageSpec {
            image,
            registry: opt(registry, |v| nonempty("registry", v))?,
            username: opt(username, |v| string("username", v))?,
            password: opt(password, |v| string("password", v))?.map(Secret::new),
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
        if is_url(&locator) {
            let bytes = ctx(eval).resolver.read_url(&locator)?;
            return String::from_utf8(bytes).map_err(|_| {
                anyhow::anyhow!("read_file '{locator}': the content is not UTF-8 text")
            });
        }
        let (_, path) = resolve(eval, &locator)?;
        std::fs::read_to_string(&path).map_err(|e| {
            anyhow::anyhow!("read_file '{locator}': cannot read {}: {e}", path.display())
        })
    }
}
