//! The `plan` object's methods: each checks its arguments and records an
//! instruction; results are future references.

#![allow(clippy::too_many_arguments)]

use super::*;

/// The steps `plan.exec`, `plan.request` and `plan.wait` share: the service
/// must exist at this point of the plan and have the recipe's port; the
/// instruction `make` builds (given its future-reference id) is recorded;
/// the result is the recipe's fields as future references.
pub(super) fn recipe_step<'v>(
    eval: &Evaluator<'v, '_, '_>,
    service_name: &str,
    recipe: &Recipe,
    make: impl FnOnce(String) -> Instruction,
) -> anyhow::Result<Value<'v>> {
    let service = known_service(eval, service_name)?;
    check_recipe_port(&service, recipe)?;
    let id = future::id_for(ctx(eval).state.borrow().steps.len());
    push(eval, make(id.clone()));
    Ok(recipe_result(eval, &id, recipe))
}

/// `stop_service` and `start_service`: an instruction on a known service.
pub(super) fn service_step(
    eval: &Evaluator,
    name: Value,
    make: fn(String) -> Instruction,
) -> anyhow::Result<NoneType> {
    let name = nonempty("name", name)?;
    known_service(eval, &name)?;
    push(eval, make(name));
    Ok(NoneType)
}

/// Every files artifact a `files` map mounts must exist at this point.
pub(super) fn check_files(
    eval: &Evaluator,
    who: &str,
    files: &BTreeMap<String, FilesSource>,
) -> anyhow::Result<()> {
    let st = ctx(eval).state.borrow();
    for (mount, source) in files {
        for artifact in source.artifacts() {
            if !st.artifacts.contains(artifact) {
                anyhow::bail!("files: {who} mounts files artifact '{artifact}' at {mount}, but no artifact of that name exists at this point of the plan (make it with plan.upload_files, plan.render_templates, plan.store_service_files or a task's store first)");
            }
        }
    }
    Ok(())
}

pub(super) fn add_service_checked(
    eval: &Evaluator,
    name: &str,
    config: ServiceConfig,
    force_update: bool,
) -> anyhow::Result<ServiceInfo> {
    check_service_name(name)?;
    let c = ctx(eval);
    if c.state.borrow().declared_services.contains(name) {
        anyhow::bail!(
            "a service named '{name}' is already added by this plan; service names are unique"
        );
    }
    // A service the enclave has from an earlier run may be declared again:
    // execution keeps it when its config is unchanged, else replaces it.
    check_files(eval, &format!("service '{name}'"), &config.files)?;
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
            force_update,
        },
    );
    {
        let mut st = c.state.borrow_mut();
        st.services.insert(name.into(), info.clone());
        st.declared_services.insert(name.into());
    }
    Ok(info)
}

/// What `run_sh` and `run_python` share.
pub(super) struct TaskArgs<'v> {
    default_image: &'static str,
    command: Vec<String>,
    packages: Vec<String>,
    image: Option<Value<'v>>,
    files: Option<Value<'v>>,
    store: Option<Value<'v>>,
    wait: Option<Value<'v>>,
    env_vars: Option<Value<'v>>,
    tolerations: Option<Value<'v>>,
    node_selectors: Option<Value<'v>>,
}

/// Record a task; its result: `output` and `code` as future references,
/// `files_artifacts` as the names of the artifacts its `store` makes.
pub(super) fn task_step<'v>(
    eval: &mut Evaluator<'v, '_, '_>,
    kind: &str,
    a: TaskArgs<'v>,
) -> anyhow::Result<Value<'v>> {
    let image = match a.image.filter(|v| !v.is_none()) {
        Some(v) => image_source(eval, v)?,
        None => image_source(eval, eval.heap().alloc(a.default_image))?,
    };
    let files = opt(a.files, |v| files_map("files", v))?.unwrap_or_default();
    check_files(eval, &format!("run_{kind}"), &files)?;
    let env_vars = opt(a.env_vars, |v| string_dict("env_vars", v))?.unwrap_or_default();
    // Accepted, and without effect on one host (as in Kurtosis' Docker
    // backend); checked all the same.
    tolerations(a.tolerations)?;
    opt(a.node_selectors, |v| string_dict("node_selectors", v))?;
    let wait = match a.wait {
        None => Some(duration("wait", "180s")?),
        Some(v) if v.is_none() => None,
        Some(v) => Some(duration("wait", &string("wait", v)?)?),
    };
    let mut store = Vec::new();
    for (src, name) in store_list(a.store)? {
        if !src.starts_with('/') {
            anyhow::bail!("store: '{src}' is not an absolute path in the task's container");
        }
        let name = new_artifact_name(
            eval,
            name.map(|n| eval.heap().alloc(n)),
            &format!("task-{kind}-files"),
            true,
        )?;
        ctx(eval).state.borrow_mut().artifacts.insert(name.clone());
        store.push(StoreSpec { src, name });
    }
    let id = future::id_for(ctx(eval).state.borrow().steps.len());
    let names: Vec<String> = store.iter().map(|s| s.name.clone()).collect();
    push(
        eval,
        Instruction::RunTask {
            kind: kind.into(),
            task: Box::new(Task {
                image,
                command: a.command,
                files,
                env_vars,
                store,
                wait,
                packages: a.packages,
            }),
            id: id.clone(),
        },
    );
    let heap = eval.heap();
    Ok(heap.alloc(AllocStruct([
        ("output", heap.alloc(future::reference(&id, "output"))),
        ("code", heap.alloc(future::reference(&id, "code"))),
        (
            "files_artifacts",
            heap.alloc(starlark::values::list::AllocList(names)),
        ),
    ])))
}

#[starlark_module]
pub fn plan_methods(builder: &mut MethodsBuilder) {
    fn add_service<'v>(
        #[starlark(this)] _this: Value<'v>,
        name: Value<'v>,
        config: Value<'v>,
        #[starlark(require = named)] description: Option<Value<'v>>,
        #[starlark(require = named, default = false)] force_update: bool,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<ServiceValue> {
        let _ = description;
        let name = nonempty("name", name)?;
        let config = downcast::<ServiceConfigValue>("config", "ServiceConfig", config)?.0;
        Ok(ServiceValue(add_service_checked(
            eval,
            &name,
            config,
            force_update,
        )?))
    }

    fn set_service<'v>(
        #[starlark(this)] _this: Value<'v>,
        name: Value<'v>,
        config: Value<'v>,
        #[starlark(require = named)] description: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        let _ = description;
        let name = nonempty("name", name)?;
        let config = downcast::<ServiceConfigValue>("config", "ServiceConfig", config)?.0;
        let old = known_service(eval, &name)?;
        check_files(eval, &format!("service '{name}'"), &config.files)?;
        let info = ServiceInfo::new(&name, &old.ip_address, &config.ports);
        push(
            eval,
            Instruction::SetService {
                name: name.clone(),
                config: Box::new(config),
            },
        );
        ctx(eval).state.borrow_mut().services.insert(name, info);
        Ok(NoneType)
    }

    fn get_services<'v>(
        #[starlark(this)] _this: Value<'v>,
        #[starlark(require = named)] description: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<Value<'v>> {
        let _ = description;
        let services: Vec<ServiceInfo> = ctx(eval)
            .state
            .borrow()
            .services
            .values()
            .cloned()
            .collect();
        let heap = eval.heap();
        Ok(heap.alloc(starlark::values::list::AllocList(
            services.into_iter().map(|s| heap.alloc(ServiceValue(s))),
        )))
    }

    /// Kurtosis packages branch on it; nixoci runs services on one host's
    /// containerd, as Kurtosis' Docker backend does, so "docker".
    fn get_cluster_type<'v>(#[starlark(this)] _this: Value<'v>) -> anyhow::Result<&'static str> {
        Ok("docker")
    }

    fn get_files_artifact<'v>(
        #[starlark(this)] _this: Value<'v>,
        name: Value<'v>,
        #[starlark(require = named)] description: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<String> {
        let _ = description;
        let name = nonempty("name", name)?;
        if !ctx(eval).state.borrow().artifacts.contains(&name) {
            anyhow::bail!(
                "no files artifact named '{name}' exists in the enclave at this point of the plan"
            );
        }
        Ok(name)
    }

    fn store_service_files<'v>(
        #[starlark(this)] _this: Value<'v>,
        service_name: Value<'v>,
        src: Value<'v>,
        name: Option<Value<'v>>,
        #[starlark(require = named)] description: Option<Value<'v>>,
        #[starlark(require = named)] depends_on: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<String> {
        let _ = (description, depends_on);
        let service_name = nonempty("service_name", service_name)?;
        known_service(eval, &service_name)?;
        let src = nonempty("src", src)?;
        if !src.starts_with('/') {
            anyhow::bail!(
                "store_service_files: src '{src}' is not an absolute path in the service"
            );
        }
        let name = new_artifact_name(eval, name, "service-files", true)?;
        push(
            eval,
            Instruction::StoreServiceFiles {
                service_name,
                src,
                name: name.clone(),
            },
        );
        ctx(eval).state.borrow_mut().artifacts.insert(name.clone());
        Ok(name)
    }

    fn run_sh<'v>(
        #[starlark(this)] _this: Value<'v>,
        run: Value<'v>,
        #[starlark(require = named)] name: Option<Value<'v>>,
        #[starlark(require = named)] image: Option<Value<'v>>,
        #[starlark(require = named)] files: Option<Value<'v>>,
        #[starlark(require = named)] store: Option<Value<'v>>,
        #[starlark(require = named)] wait: Option<Value<'v>>,
        #[starlark(require = named)] env_vars: Option<Value<'v>>,
        #[starlark(require = named)] description: Option<Value<'v>>,
        #[starlark(require = named)] tolerations: Option<Value<'v>>,
        #[starlark(require = named)] node_selectors: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<Value<'v>> {
        let _ = (name, description);
        // Kurtosis runs the script as one line: newlines become spaces.
        let run = nonempty("run", run)?.replace('\n', " ");
        task_step(
            eval,
            "sh",
            TaskArgs {
                default_image: "badouralix/curl-jq",
                command: vec!["sh".into(), "-c".into(), run],
                packages: Vec::new(),
                image,
                files,
                store,
                wait,
                env_vars,
                tolerations,
                node_selectors,
            },
        )
    }

    fn run_python<'v>(
        #[starlark(this)] _this: Value<'v>,
        run: Value<'v>,
        #[starlark(require = named)] args: Option<Value<'v>>,
        #[starlark(require = named)] packages: Option<Value<'v>>,
        #[starlark(require = named)] name: Option<Value<'v>>,
        #[starlark(require = named)] image: Option<Value<'v>>,
        #[starlark(require = named)] files: Option<Value<'v>>,
        #[starlark(require = named)] store: Option<Value<'v>>,
        #[starlark(require = named)] wait: Option<Value<'v>>,
        #[starlark(require = named)] env_vars: Option<Value<'v>>,
        #[starlark(require = named)] description: Option<Value<'v>>,
        #[starlark(require = named)] tolerations: Option<Value<'v>>,
        #[starlark(require = named)] node_selectors: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<Value<'v>> {
        let _ = (name, description);
        let run = nonempty("run", run)?;
        let mut command = vec!["python".into(), "-c".into(), run];
        command.extend(opt(args, |v| string_list("args", v))?.unwrap_or_default());
        task_step(
            eval,
            "python",
            TaskArgs {
                default_image: "python:3.11-alpine",
                command,
                packages: opt(packages, |v| string_list("packages", v))?.unwrap_or_default(),
                image,
                files,
                store,
                wait,
                env_vars,
                tolerations,
                node_selectors,
            },
        )
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
            let info = add_service_checked(eval, &name, config, false)?;
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
        let mut st = ctx(eval).state.borrow_mut();
        st.services.remove(&name);
        st.declared_services.remove(&name);
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
        let acceptable_codes = codes(acceptable_codes, &[0])?;
        recipe_step(
            eval,
            &service_name.clone(),
            &Recipe::Exec(recipe.clone()),
            |id| Instruction::Exec {
                service_name,
                recipe,
                acceptable_codes,
                skip_code_check,
                id,
            },
        )
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
        let acceptable_codes = codes(acceptable_codes, &[200, 201, 202, 203, 204, 205, 206])?;
        recipe_step(
            eval,
            &service_name.clone(),
            &Recipe::Http(recipe.clone()),
            |id| Instruction::Request {
                service_name,
                recipe,
                acceptable_codes,
                skip_code_check,
                id,
            },
        )
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
        let field = nonempty("field", field)?;
        check_field(&recipe, &field)?;
        let assertion = self::assertion(assertion)?;
        let target_value = json("target_value", target_value)?;
        let interval = opt(interval, |v| string("interval", v))?.unwrap_or("1s".into());
        let interval = duration("interval", &interval)?;
        let timeout = opt(timeout, |v| string("timeout", v))?.unwrap_or("10s".into());
        let timeout = duration("timeout", &timeout)?;
        recipe_step(eval, &service_name.clone(), &recipe.clone(), |id| {
            Instruction::Wait {
                service_name,
                recipe,
                field,
                assertion,
                target_value,
                interval,
                timeout,
                id,
            }
        })
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
        let artifact = if is_url(&locator) {
            Artifact::Url {
                url: locator.clone(),
            }
        } else {
            Artifact::Upload {
                src: resolve(eval, &locator)?.1,
            }
        };
        let name = new_artifact_name(eval, name, "upload", false)?;
        push(
            eval,
            Instruction::UploadFiles {
                name: name.clone(),
                artifact,
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
            crate::plan::template::check(&template)
                .map_err(|e| anyhow::anyhow!("render_templates: config[{path:?}].template: {e}"))?;
            let data = match spec.get_attr("data", eval.heap()).ok().flatten() {
                Some(d) => json(&format!("config[{path:?}].data"), d)?,
                None => serde_json::Value::Object(Default::default()),
            };
            files.insert(path, (template, data));
        }
        let name = new_artifact_name(eval, name, "rendered", false)?;
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
