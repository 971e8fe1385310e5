//! Interpretation of a Kurtosis-style package: its Starlark runs with the
//! Kurtosis builtins and yields a validated [`Plan`] (a list of
//! instructions). Nothing runs here; execution is in [`crate::enclave`].

pub mod builtins;
pub mod duration;
pub mod future;
pub mod jq;
pub mod model;
pub mod package;
pub mod tabs;
pub mod template;
pub mod values;

pub use model::*;
pub use package::{Package, PackageError};

use starlark::environment::Module;
use starlark::eval::Evaluator;
use starlark::syntax::AstModule;
use std::cell::RefCell;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error("{0}")]
    Starlark(String),
    #[error("arguments: {0}")]
    Args(String),
}

/// How to call the package.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub main_file: String,
    pub main_function: String,
    /// A JSON object (or null: no arguments).
    pub args: serde_json::Value,
    /// Services that already exist in the enclave.
    pub existing_services: Vec<values::ServiceInfo>,
    /// Files artifacts that already exist in the enclave.
    pub existing_artifacts: Vec<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            main_file: "main.star".into(),
            main_function: "run".into(),
            args: serde_json::Value::Null,
            existing_services: Vec::new(),
            existing_artifacts: Vec::new(),
        }
    }
}

/// Parse package arguments given as JSON or YAML (JSON is YAML). They must
/// be a mapping.
pub fn parse_args(text: &str, what: &str) -> Result<serde_json::Value, PlanError> {
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    let v: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(json_err) => serde_yaml::from_str(text).map_err(|yaml_err| {
            PlanError::Args(format!(
                "{what} is neither JSON ({json_err}) nor YAML ({yaml_err})"
            ))
        })?,
    };
    match v {
        serde_json::Value::Object(_) | serde_json::Value::Null => Ok(v),
        other => Err(PlanError::Args(format!(
            "{what} must be an object of named arguments, such as '{{\"name\": \"x\"}}', not {other}"
        ))),
    }
}

/// `file:line:column: message` for a Starlark error.
pub fn format_error(e: &starlark::Error) -> String {
    let msg = e.without_diagnostic().to_string();
    let at = |span: &starlark::codemap::FileSpan| {
        let r = span.resolve_span();
        format!(
            "{}:{}:{}",
            span.filename(),
            r.begin.line + 1,
            r.begin.column + 1
        )
    };
    // The call sites from the outermost in, then the error's own place:
    // `main.star:11:9: github.com/o/r/lib.star:2:5: message`.
    let mut places: Vec<String> = e
        .call_stack()
        .frames
        .iter()
        .filter_map(|f| f.location.as_ref().map(at))
        .collect();
    if let Some(span) = e.span() {
        places.push(at(span));
    }
    places.dedup();
    let mut out = String::new();
    for p in places {
        // An import's message starts with the imported file's own places.
        if !msg.starts_with(&p) {
            out.push_str(&p);
            out.push_str(": ");
        }
    }
    out.push_str(msg.trim_end());
    out
}

/// Interpret the package: evaluate its main file and call the main function
/// with `plan` and the arguments.
pub fn interpret(package: &Package, opts: &RunOptions) -> Result<Plan, PlanError> {
    interpret_with(
        package,
        std::rc::Rc::new(crate::packages::NoRemote(
            "this interpretation was given no package resolver",
        )),
        opts,
    )
}

/// [`interpret`], with other packages' repositories from `resolver`.
pub fn interpret_with(
    package: &Package,
    resolver: std::rc::Rc<dyn crate::packages::Resolver>,
    opts: &RunOptions,
) -> Result<Plan, PlanError> {
    let main = package.locate_existing(&package.root.join("kurtosis.yml"), &opts.main_file)?;
    let main_name = package.display(&main);
    let text = std::fs::read_to_string(&main)
        .map_err(|e| PlanError::Starlark(format!("cannot read {}: {e}", main.display())))?;
    let text = tabs::expand_indent_tabs(&text).into_owned();
    let ast = AstModule::parse(&main_name, text.clone(), &builtins::dialect())
        .map_err(|e| PlanError::Starlark(format_error(&e)))?;
    let mut state = builtins::State::default();
    for s in &opts.existing_services {
        state.services.insert(s.name.clone(), s.clone());
    }
    state
        .artifacts
        .extend(opts.existing_artifacts.iter().cloned());
    state.importing.push(main.clone());
    state.packages.push(package.clone());
    state.files.insert(main_name.clone(), (0, main.clone()));
    let ctx = builtins::Ctx {
        root: package.clone(),
        resolver,
        globals: builtins::globals(),
        state: RefCell::new(state),
    };
    let output = Module::with_temp_heap(|module| -> Result<serde_json::Value, PlanError> {
        let mut eval = Evaluator::new(&module);
        eval.extra = Some(&ctx);
        eval.eval_module(ast, &ctx.globals)
            .map_err(|e| PlanError::Starlark(format_error(&e)))?;
        let run = module.get(&opts.main_function).ok_or_else(|| {
            PlanError::Starlark(format!(
                "{main_name}: no function '{}' (the main function; choose another with --main-function-name)",
                opts.main_function
            ))
        })?;
        let params = match run.documentation() {
            starlark::docs::DocItem::Member(starlark::docs::DocMember::Function(f)) => f.params,
            _ => {
                return Err(PlanError::Starlark(format!(
                    "{main_name}: '{}' is not a function",
                    opts.main_function
                )))
            }
        };
        let names: Vec<String> = params
            .pos_only
            .iter()
            .chain(&params.pos_or_named)
            .chain(&params.named_only)
            .map(|p| p.name.clone())
            .collect();
        if names.is_empty() {
            return Err(PlanError::Starlark(format!(
                "{main_name}: '{}' must take the plan as its first parameter: def {}(plan, ...)",
                opts.main_function, opts.main_function
            )));
        }
        let heap = module.heap();
        let plan = heap.alloc(values::PlanValue);
        let args = match &opts.args {
            serde_json::Value::Object(o) => o.clone(),
            _ => Default::default(),
        };
        let mut named: Vec<(String, starlark::values::Value)> = Vec::new();
        // `def run(plan, args)`: the whole dict; else one keyword each.
        let whole = names.len() == 2
            && names[1] == "args"
            && !(args.len() == 1 && args.contains_key("args"));
        if whole {
            named.push(("args".into(), heap.alloc(serde_json::Value::Object(args))));
        } else {
            for (k, v) in args {
                if !names.contains(&k) && params.kwargs.is_none() {
                    return Err(PlanError::Args(format!(
                        "'{k}' is not a parameter of {}({}) in {main_name}",
                        opts.main_function,
                        names.join(", ")
                    )));
                }
                named.push((k, heap.alloc(v)));
            }
        }
        // A required parameter the arguments leave out is reported at the
        // main function's `def`, as every interpretation error has a place.
        let given: Vec<&str> = named.iter().map(|(k, _)| k.as_str()).collect();
        let missing: Vec<&str> = params
            .pos_only
            .iter()
            .chain(&params.pos_or_named)
            .chain(&params.named_only)
            .skip(1)
            .filter(|p| p.default_value.is_none() && !given.contains(&p.name.as_str()))
            .map(|p| p.name.as_str())
            .collect();
        if !missing.is_empty() {
            let at = text
                .lines()
                .position(|l| {
                    l.trim_start()
                        .starts_with(&format!("def {}(", opts.main_function))
                })
                .map(|n| format!("{main_name}:{}:1", n + 1))
                .unwrap_or_else(|| main_name.clone());
            return Err(PlanError::Args(format!(
                "{at}: {}() needs the argument{} {}: give {} in the package arguments, such as '{{\"{}\": ...}}'",
                opts.main_function,
                if missing.len() > 1 { "s" } else { "" },
                missing.iter().map(|m| format!("'{m}'")).collect::<Vec<_>>().join(", "),
                if missing.len() > 1 { "them" } else { "it" },
                missing[0]
            )));
        }
        let named_refs: Vec<(&str, starlark::values::Value)> =
            named.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let out = eval
            .eval_function(run, &[plan], &named_refs)
            .map_err(|e| PlanError::Starlark(format_error(&e)))?;
        Ok(out.to_json_value().unwrap_or(serde_json::Value::Null))
    })?;
    let state = ctx.state.into_inner();
    let packages = state
        .packages
        .iter()
        .map(|p| PackageUsed {
            name: p.name.clone(),
            source: match &p.origin {
                Some(o) => match &o.version {
                    Some(v) => format!("{}@{v}", o.label),
                    None => o.label.clone(),
                },
                None => p.root.display().to_string(),
            },
            commit: p.origin.as_ref().and_then(|o| o.commit.clone()),
        })
        .collect();
    Ok(Plan {
        package: package.name.clone(),
        steps: state.steps,
        output,
        packages,
    })
}
