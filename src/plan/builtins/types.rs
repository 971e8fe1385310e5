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
    anyhow::bail!(
        "Value for 'image' was expected to be a starlark.String, ImageSpec or NixBuildSpec but was '{}'",
        type_name(v)
    )
}

#[starlark_module]
pub(super) fn kurtosis_globals(builder: &mut GlobalsBuilder) {
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
        let c = ctx(eval);
        let path = c
            .package
            .locate_existing(&current_file(eval, &c.package), &locator)?;
        std::fs::read_to_string(&path).map_err(|e| {
            anyhow::anyhow!("read_file '{locator}': cannot read {}: {e}", path.display())
        })
    }
}
