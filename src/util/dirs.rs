//! Where nixoci keeps things (DESIGN.md, "Where things live").

use std::path::PathBuf;

fn env_path(k: &str) -> Option<PathBuf> {
    std::env::var_os(k)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// State: `$NIXOCI_HOME`, else `$XDG_DATA_HOME/nixoci`, else
/// `~/.local/share/nixoci`.
pub fn nixoci_home() -> PathBuf {
    env_path("NIXOCI_HOME")
        .or_else(|| env_path("XDG_DATA_HOME").map(|d| d.join("nixoci")))
        .or_else(|| env_path("HOME").map(|h| h.join(".local/share/nixoci")))
        .unwrap_or_else(|| PathBuf::from("/var/lib/nixoci"))
}

/// Cache: `$XDG_CACHE_HOME/nixoci`, else `~/.cache/nixoci`.
pub fn cache_dir() -> Option<PathBuf> {
    env_path("XDG_CACHE_HOME")
        .or_else(|| env_path("HOME").map(|h| h.join(".cache")))
        .map(|d| d.join("nixoci"))
}

/// The cache directory, or `cache/` in nixoci's home when no home or
/// `XDG_CACHE_HOME` is set (caches nixoci cannot work without, such as
/// fetched packages).
pub fn cache_dir_or_home() -> PathBuf {
    cache_dir().unwrap_or_else(|| nixoci_home().join("cache"))
}
