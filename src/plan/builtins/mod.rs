//! Kurtosis' builtins, with Kurtosis' names and argument names. The `plan`
//! methods record instructions; constructors (`ServiceConfig`, ...) check
//! their arguments and return owned values. Every check happens here, at
//! interpretation, so a bad package fails before anything runs, with the
//! location of the call.
//!
//! - [`args`]: Starlark values to Rust values, with Kurtosis' messages;
//! - [`checks`]: names, services, ports and fields that must exist;
//! - [`types`]: the constructors (`ServiceConfig`, `PortSpec`, recipes, ...);
//! - [`plan_methods`]: the `plan` object's methods.

mod args;
mod checks;
mod plan_methods;
mod types;

pub use plan_methods::plan_methods;

use args::*;
use checks::*;
use types::*;

use super::future;
use crate::plan::model::*;
use crate::plan::package::Package;
use crate::plan::values::*;
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
    /// The package that is run (its `replace:` applies everywhere).
    pub root: Package,
    /// Where other packages' repositories come from.
    pub resolver: std::rc::Rc<dyn crate::packages::Resolver>,
    pub globals: Globals,
    pub state: RefCell<State>,
}

#[derive(Default)]
pub struct State {
    pub steps: Vec<Step>,
    /// Services that exist at this point of the plan.
    pub services: BTreeMap<String, ServiceInfo>,
    pub artifacts: BTreeSet<String>,
    /// Services and artifacts this plan adds (the others in `services` and
    /// `artifacts` were in the enclave before it: a re-run may declare them
    /// again, and execution keeps or replaces them).
    pub declared_services: BTreeSet<String>,
    pub declared_artifacts: BTreeSet<String>,
    /// Files being imported (to refuse import cycles).
    pub importing: Vec<PathBuf>,
    /// Evaluated modules, by file.
    pub modules: BTreeMap<PathBuf, starlark::environment::FrozenModule>,
    /// Every package reached; the first is the package that is run.
    pub packages: Vec<Package>,
    /// The files evaluated, by the name their locations carry: the index
    /// of their package in `packages` and their path.
    pub files: BTreeMap<String, (usize, PathBuf)>,
}

pub fn dialect() -> Dialect {
    Dialect::Extended
}

pub fn globals() -> Globals {
    use starlark::environment::LibraryExtension as L;
    GlobalsBuilder::extended_by(&[L::StructType, L::Print, L::Map, L::Filter])
        .with(types::kurtosis_globals)
        .with_namespace("json", types::json_module)
        .with_namespace("time", types::time_module)
        .build()
}

pub(super) fn ctx<'a>(eval: &Evaluator<'_, 'a, '_>) -> &'a Ctx {
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

/// The `.star` file being evaluated (locators are relative to it) and the
/// index of its package.
pub(super) fn current_file(eval: &Evaluator) -> (usize, PathBuf) {
    let c = ctx(eval);
    let st = c.state.borrow();
    eval.call_stack_top_location()
        .and_then(|span| st.files.get(span.filename()).cloned())
        .unwrap_or_else(|| (0, c.root.root.join("main.star")))
}

/// What a locator names, from the file being evaluated: a path of that
/// file's package (relative, `/`-rooted in that package, or by the
/// package's own name), or a path in another package, replaced as the run
/// package's `replace:` says and fetched through the resolver. The path
/// exists; the result is the index of its package and the path.
pub(super) fn resolve(eval: &Evaluator, locator: &str) -> anyhow::Result<(usize, PathBuf)> {
    use crate::packages::Locator;
    use crate::plan::package::{Origin, PackageError};
    let c = ctx(eval);
    let (pi, from) = current_file(eval);
    let pkg = c.state.borrow().packages[pi].clone();
    if pkg.owns(locator) || !Locator::is_remote(locator) {
        return Ok((pi, pkg.locate_existing(&from, locator)?));
    }
    let loc = Locator::parse(locator)?;
    let (label, version, base, rest, commit) = match replacement(&c.root, &loc)? {
        Replacement::Local { key, dir, rest } => (key, None, dir, rest, None),
        Replacement::Remote(l) => {
            let co = c.resolver.checkout(&l.repo, l.version.as_deref())?;
            (
                l.repo.clone(),
                l.version.clone(),
                co.dir,
                l.path.clone(),
                Some(co.commit),
            )
        }
    };
    let base = base
        .canonicalize()
        .map_err(|e| anyhow::anyhow!("locator '{locator}': {}: {e}", base.display()))?;
    let path = if rest.is_empty() {
        base.clone()
    } else {
        base.join(&rest)
    };
    let shown = match &version {
        Some(v) => format!("{label}@{v}"),
        None => label.clone(),
    };
    match path.canonicalize() {
        Ok(real) if !real.starts_with(&base) => {
            anyhow::bail!("locator '{locator}' leaves {shown} through a symbolic link")
        }
        Ok(_) => {}
        Err(_) => {
            return Err(PackageError::Missing {
                locator: locator.into(),
                path: path.clone(),
            }
            .into())
        }
    }
    // The package holding it: the nearest directory with kurtosis.yml.
    let mut dir = if path.is_dir() {
        path.clone()
    } else {
        path.parent().unwrap_or(&base).to_path_buf()
    };
    // A repository without one (files a package uploads from any
    // repository, as Kurtosis allows) is one package from its root.
    while !dir.join("kurtosis.yml").is_file() && dir != base {
        if !dir.starts_with(&base) {
            anyhow::bail!("locator '{locator}' leaves {shown}");
        }
        dir = dir.parent().unwrap_or(&base).to_path_buf();
    }
    let known = c
        .state
        .borrow()
        .packages
        .iter()
        .position(|p| p.root == dir && p.origin.as_ref().is_some_and(|o| o.version == version));
    let idx = match known {
        Some(i) => i,
        None => {
            let mut p = if dir.join("kurtosis.yml").is_file() {
                Package::open(&dir)?
            } else {
                Package::bare(&dir, &label)
            };
            p.origin = Some(Origin {
                label,
                version,
                base,
                commit,
            });
            let mut st = c.state.borrow_mut();
            st.packages.push(p);
            st.packages.len() - 1
        }
    };
    Ok((idx, path))
}

enum Replacement {
    /// A local directory stands in for the package named `key`.
    Local {
        key: String,
        dir: PathBuf,
        rest: String,
    },
    Remote(crate::packages::Locator),
}

/// Apply the run package's `replace:` to a locator: the longest package
/// name that is the locator or a prefix of it (by whole path segments).
fn replacement(root: &Package, loc: &crate::packages::Locator) -> anyhow::Result<Replacement> {
    use crate::packages::Locator;
    let full = loc.without_version();
    let hit = root
        .replace
        .iter()
        .filter(|(k, _)| {
            full == **k
                || full
                    .strip_prefix(k.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        })
        .max_by_key(|(k, _)| k.len());
    let Some((key, value)) = hit else {
        return Ok(Replacement::Remote(loc.clone()));
    };
    let rest = full[key.len()..].trim_start_matches('/').to_string();
    if Locator::is_remote(value) {
        let to = Locator::parse(value).map_err(|e| {
            anyhow::anyhow!("{}/kurtosis.yml: replace: {key}: {e}", root.root.display())
        })?;
        let path = match (to.path.as_str(), rest.as_str()) {
            ("", r) => r.to_string(),
            (p, "") => p.to_string(),
            (p, r) => format!("{p}/{r}"),
        };
        Ok(Replacement::Remote(Locator {
            repo: to.repo,
            path,
            version: to.version.or_else(|| loc.version.clone()),
        }))
    } else {
        let dir = root.root.join(value);
        if !dir.is_dir() {
            anyhow::bail!(
                "{}/kurtosis.yml: replace: {key}: {value} is not a directory ({}): a replacement is a locator (github.com/OWNER/REPO[@VERSION]) or a local directory, relative to the package",
                root.root.display(),
                dir.display()
            );
        }
        Ok(Replacement::Local {
            key: key.clone(),
            dir,
            rest,
        })
    }
}

pub(super) fn push(eval: &Evaluator, instruction: Instruction) -> usize {
    let c = ctx(eval);
    let mut st = c.state.borrow_mut();
    st.steps.push(Step {
        location: location(eval),
        instruction,
    });
    st.steps.len() - 1
}

// --- argument checks, with Kurtosis' messages -------------------------------

/// Evaluate a `.star` file of the package (for `import_module`).
pub(super) fn import(
    eval: &mut Evaluator,
    locator: &str,
) -> anyhow::Result<starlark::environment::FrozenModule> {
    let extra = eval.extra;
    let c = ctx(eval);
    let (pi, path) = resolve(eval, locator)?;
    if let Some(m) = c.state.borrow().modules.get(&path) {
        return Ok(m.clone());
    }
    let name = c.state.borrow().packages[pi].display(&path);
    if c.state.borrow().importing.contains(&path) {
        anyhow::bail!("import cycle: {name} imports itself");
    }
    c.state
        .borrow_mut()
        .files
        .insert(name.clone(), (pi, path.clone()));
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let ast = AstModule::parse(
        &name,
        super::tabs::expand_indent_tabs(&text).into_owned(),
        &dialect(),
    )
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
