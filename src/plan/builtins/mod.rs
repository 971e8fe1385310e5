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
        .with(types::kurtosis_globals)
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

/// The `.star` file being evaluated (locators are relative to it).
pub(super) fn current_file(eval: &Evaluator, package: &Package) -> PathBuf {
    match eval.call_stack_top_location() {
        Some(span) => package.root.join(span.filename()),
        None => package.root.join("main.star"),
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
