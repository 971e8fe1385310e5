//! The layering plan: which store paths go into which layer.
//!
//! Popularity of a store path is the number of distinct paths through the
//! reference graph from the root output to it (self-references ignored). The
//! layers, bottom to top: the most popular dependencies one layer each (in
//! descending popularity, ties by the name after the hash, then the full
//! path); one layer with the remaining dependencies; the root output alone;
//! the root layer (links into `/`, `/tmp`, `/etc/passwd`).

use crate::nix::{Closure, StorePath};
use std::collections::BTreeMap;

pub const DEFAULT_MAX_LAYERS: usize = 100;
pub const MIN_MAX_LAYERS: usize = 4;
pub const MAX_MAX_LAYERS: usize = 125;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayeringError {
    #[error("--max-layers {0} is out of range: it must be between {MIN_MAX_LAYERS} and {MAX_MAX_LAYERS}")]
    MaxLayers(usize),
    #[error("the reference graph of {0} has a cycle through {1}; Nix store closures are acyclic")]
    Cycle(StorePath, StorePath),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// One popular dependency.
    Single,
    /// Every dependency that did not get a layer of its own.
    Rest,
    /// The root output.
    RootOutput,
    /// Links into `/`, `/tmp`, `/etc/passwd` and `/etc/group`.
    RootLayer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedLayer {
    pub kind: LayerKind,
    /// Sorted by path; empty for the root layer.
    pub paths: Vec<StorePath>,
}

/// Number of distinct paths from `closure.root` to every path in the closure.
pub fn popularity(closure: &Closure) -> Result<BTreeMap<StorePath, u128>, LayeringError> {
    // Kahn's algorithm over the closure from the root; in-degree counts edges
    // (without self-references) from paths in the closure.
    let mut indegree: BTreeMap<&StorePath, usize> = closure.paths.keys().map(|p| (p, 0)).collect();
    for info in closure.paths.values() {
        for r in info.references.iter().filter(|r| **r != info.path) {
            *indegree.get_mut(r).expect("closure is complete") += 1;
        }
    }
    let mut pop: BTreeMap<StorePath, u128> = BTreeMap::new();
    let mut ready: Vec<&StorePath> = indegree
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(p, _)| *p)
        .collect();
    for p in closure.paths.keys() {
        pop.insert(p.clone(), 0);
    }
    *pop.get_mut(&closure.root).unwrap() = 1;
    let mut done = 0;
    while let Some(p) = ready.pop() {
        done += 1;
        let here = pop[p];
        for r in closure.paths[p].references.iter().filter(|r| *r != p) {
            let slot = pop.get_mut(r).unwrap();
            *slot = slot.saturating_add(here);
            let d = indegree.get_mut(r).unwrap();
            *d -= 1;
            if *d == 0 {
                ready.push(r);
            }
        }
    }
    if done != closure.paths.len() {
        let stuck = indegree
            .iter()
            .find(|(_, d)| **d > 0)
            .map(|(p, _)| (*p).clone())
            .unwrap();
        return Err(LayeringError::Cycle(closure.root.clone(), stuck));
    }
    Ok(pop)
}

/// `--max-layers` must be in `MIN_MAX_LAYERS..=MAX_MAX_LAYERS`.
pub fn check_max_layers(max_layers: usize) -> Result<(), LayeringError> {
    if (MIN_MAX_LAYERS..=MAX_MAX_LAYERS).contains(&max_layers) {
        Ok(())
    } else {
        Err(LayeringError::MaxLayers(max_layers))
    }
}

/// Plan the layers of `closure` within `max_layers` layers in total.
pub fn plan(
    closure: &Closure,
    max_layers: usize,
    root_layer: bool,
) -> Result<Vec<PlannedLayer>, LayeringError> {
    check_max_layers(max_layers)?;
    let pop = popularity(closure)?;
    let mut deps: Vec<&StorePath> = closure
        .paths
        .keys()
        .filter(|p| **p != closure.root)
        .collect();
    deps.sort_by(|a, b| {
        pop[*b]
            .cmp(&pop[*a])
            .then_with(|| a.name().cmp(b.name()))
            .then_with(|| a.cmp(b))
    });
    let fixed = 1 + usize::from(root_layer);
    let singles = if deps.len() + fixed <= max_layers {
        deps.len()
    } else {
        max_layers - fixed - 1
    };
    let mut layers: Vec<PlannedLayer> = deps[..singles]
        .iter()
        .map(|p| PlannedLayer {
            kind: LayerKind::Single,
            paths: vec![(*p).clone()],
        })
        .collect();
    if singles < deps.len() {
        let mut rest: Vec<StorePath> = deps[singles..].iter().map(|p| (*p).clone()).collect();
        rest.sort();
        layers.push(PlannedLayer {
            kind: LayerKind::Rest,
            paths: rest,
        });
    }
    layers.push(PlannedLayer {
        kind: LayerKind::RootOutput,
        paths: vec![closure.root.clone()],
    });
    if root_layer {
        layers.push(PlannedLayer {
            kind: LayerKind::RootLayer,
            paths: vec![],
        });
    }
    Ok(layers)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::nix::PathInfo;

    /// A store path for tests: the hash is derived from `seed`, the name given.
    pub fn sp(seed: char, name: &str) -> StorePath {
        StorePath::parse(&format!(
            "/nix/store/{}-{name}",
            seed.to_string().repeat(32)
        ))
        .unwrap()
    }

    /// A closure from (path, references) pairs; the first is the root.
    pub fn closure(edges: &[(&StorePath, &[&StorePath])]) -> Closure {
        let infos = edges
            .iter()
            .map(|(p, refs)| PathInfo {
                path: (*p).clone(),
                nar_hash: format!("sha256-{}", p.hash()),
                nar_size: 1,
                references: refs.iter().map(|r| (*r).clone()).collect(),
            })
            .collect();
        Closure::new(edges[0].0.clone(), infos).unwrap()
    }

    #[test]
    fn popularity_counts_distinct_paths() {
        // root -> a, b; a -> c; b -> c; c -> libc; a -> libc; root -> libc; libc -> libc (self).
        // Paths to c: root-a-c, root-b-c = 2.
        // Paths to libc: root-libc, root-a-libc, root-a-c-libc, root-b-c-libc = 4.
        let (root, a, b, c, libc) = (
            sp('r', "app"),
            sp('a', "a"),
            sp('b', "b"),
            sp('c', "c"),
            sp('l', "libc"),
        );
        let cl = closure(&[
            (&root, &[&a, &b, &libc]),
            (&a, &[&c, &libc]),
            (&b, &[&c]),
            (&c, &[&libc]),
            (&libc, &[&libc]),
        ]);
        let pop = popularity(&cl).unwrap();
        assert_eq!(pop[&root], 1);
        assert_eq!(pop[&a], 1);
        assert_eq!(pop[&b], 1);
        assert_eq!(pop[&c], 2);
        assert_eq!(pop[&libc], 4);
    }

    #[test]
    fn order_and_ties() {
        let (root, a, b, c, libc) = (
            sp('r', "app"),
            sp('a', "zeta"),
            sp('b', "alpha"),
            sp('c', "c"),
            sp('l', "libc"),
        );
        let cl = closure(&[
            (&root, &[&a, &b, &libc]),
            (&a, &[&c, &libc]),
            (&b, &[&c]),
            (&c, &[&libc]),
            (&libc, &[]),
        ]);
        let layers = plan(&cl, 100, true).unwrap();
        let names: Vec<Vec<&str>> = layers
            .iter()
            .map(|l| l.paths.iter().map(|p| p.name()).collect())
            .collect();
        // libc (4), c (2), then a and b tie at 1: "alpha" before "zeta".
        assert_eq!(
            names,
            vec![
                vec!["libc"],
                vec!["c"],
                vec!["alpha"],
                vec!["zeta"],
                vec!["app"],
                vec![]
            ]
        );
        assert_eq!(layers[4].kind, LayerKind::RootOutput);
        assert_eq!(layers[5].kind, LayerKind::RootLayer);

        // Same name, different hash: tie broken by the full path.
        let (r2, x1, x2) = (sp('r', "app"), sp('9', "dup"), sp('1', "dup"));
        let cl = closure(&[(&r2, &[&x1, &x2]), (&x1, &[]), (&x2, &[])]);
        let layers = plan(&cl, 100, true).unwrap();
        assert_eq!(layers[0].paths, vec![x2.clone()]);
        assert_eq!(layers[1].paths, vec![x1.clone()]);
    }

    #[test]
    fn max_layers_bounds_the_total() {
        let (root, a, b, c, libc) = (
            sp('r', "app"),
            sp('a', "zeta"),
            sp('b', "alpha"),
            sp('c', "c"),
            sp('l', "libc"),
        );
        let cl = closure(&[
            (&root, &[&a, &b, &libc]),
            (&a, &[&c, &libc]),
            (&b, &[&c]),
            (&c, &[&libc]),
            (&libc, &[]),
        ]);
        let layers = plan(&cl, 4, true).unwrap();
        assert_eq!(layers.len(), 4);
        assert_eq!(layers[0].paths, vec![libc.clone()]);
        assert_eq!(layers[1].kind, LayerKind::Rest);
        // The rest layer is sorted by path: hashes a…, b…, c….
        assert_eq!(layers[1].paths, vec![a.clone(), b.clone(), c.clone()]);
        // 6 layers fit exactly with no rest layer.
        let layers = plan(&cl, 6, true).unwrap();
        assert_eq!(layers.len(), 6);
        assert!(layers.iter().all(|l| l.kind != LayerKind::Rest));
        // 5 layers: 2 singles, rest of 2.
        let layers = plan(&cl, 5, true).unwrap();
        assert_eq!(layers.len(), 5);
        assert_eq!(layers[2].paths, vec![a.clone(), b.clone()]);
        // Without the root layer there is room for one more single.
        let layers = plan(&cl, 5, false).unwrap();
        assert_eq!(layers.len(), 5);
        assert!(layers.iter().all(|l| l.kind != LayerKind::Rest));
        assert_eq!(plan(&cl, 3, true).unwrap_err(), LayeringError::MaxLayers(3));
        assert_eq!(
            plan(&cl, 126, true).unwrap_err(),
            LayeringError::MaxLayers(126)
        );
    }

    #[test]
    fn lone_root() {
        let root = sp('r', "single-file");
        let cl = closure(&[(&root, &[])]);
        let layers = plan(&cl, 4, true).unwrap();
        assert_eq!(layers.len(), 2);
    }

    #[test]
    fn deep_diamonds_do_not_overflow() {
        // A chain of 200 diamonds: 2^200 paths to the bottom, saturates at u128::MAX.
        let mut nodes: Vec<StorePath> = Vec::new();
        for i in 0..401 {
            nodes.push(StorePath::parse(&format!("/nix/store/{:0>32}-n{i}", i)).unwrap());
        }
        let mut edges: Vec<(StorePath, Vec<StorePath>)> = Vec::new();
        for d in 0..200 {
            let top = &nodes[2 * d];
            edges.push((
                top.clone(),
                vec![nodes[2 * d + 1].clone(), nodes[2 * d + 2].clone()],
            ));
            edges.push((nodes[2 * d + 1].clone(), vec![nodes[2 * d + 2].clone()]));
        }
        edges.push((nodes[400].clone(), vec![]));
        let refs: Vec<Vec<&StorePath>> = edges.iter().map(|(_, r)| r.iter().collect()).collect();
        let pairs: Vec<(&StorePath, &[&StorePath])> = edges
            .iter()
            .zip(&refs)
            .map(|((p, _), r)| (p, r.as_slice()))
            .collect();
        let cl = closure(&pairs);
        let pop = popularity(&cl).unwrap();
        assert_eq!(pop[&nodes[400]], u128::MAX);
        assert_eq!(pop[&nodes[2]], 2);
        assert_eq!(pop[&nodes[4]], 4);
    }
}
