//! A store closure: a root output and every path it (transitively) refers to.

use super::path_info::PathInfo;
use super::store_path::StorePath;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum ClosureError {
    #[error("the closure of {root} does not contain the root itself")]
    NoRoot { root: StorePath },
    #[error("the closure of {root} is incomplete: {from} refers to {missing}, which nix path-info did not list")]
    Incomplete {
        root: StorePath,
        from: StorePath,
        missing: StorePath,
    },
}

#[derive(Debug, Clone)]
pub struct Closure {
    pub root: StorePath,
    pub paths: BTreeMap<StorePath, PathInfo>,
}

impl Closure {
    /// Build a closure from `nix path-info --recursive` output, checking that
    /// it is complete: every reference is itself listed. Paths that the root
    /// does not reach are dropped.
    pub fn new(root: StorePath, infos: Vec<PathInfo>) -> Result<Self, ClosureError> {
        let all: BTreeMap<StorePath, PathInfo> =
            infos.into_iter().map(|i| (i.path.clone(), i)).collect();
        if !all.contains_key(&root) {
            return Err(ClosureError::NoRoot { root });
        }
        let mut paths = BTreeMap::new();
        let mut stack = vec![root.clone()];
        while let Some(p) = stack.pop() {
            if paths.contains_key(&p) {
                continue;
            }
            let info = &all[&p];
            for r in &info.references {
                if !all.contains_key(r) {
                    return Err(ClosureError::Incomplete {
                        root,
                        from: p.clone(),
                        missing: r.clone(),
                    });
                }
                stack.push(r.clone());
            }
            paths.insert(p, info.clone());
        }
        Ok(Closure { root, paths })
    }

    pub fn root_info(&self) -> &PathInfo {
        &self.paths[&self.root]
    }

    pub fn nar_size(&self) -> u64 {
        self.paths.values().map(|i| i.nar_size).sum()
    }
}
