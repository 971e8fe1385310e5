//! `nixoci files inspect | download | upload ENCLAVE ...`: an enclave's
//! files artifacts, as `kurtosis files` shows them.

use super::usage;
use clap::Subcommand;
use nixoci::enclave::{self, Enclave};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum FilesCommand {
    /// List a files artifact's files: mode, size and path.
    Inspect { enclave: String, artifact: String },
    /// Copy a files artifact's files into a directory (default: ./ARTIFACT);
    /// an existing file there is never overwritten.
    Download {
        enclave: String,
        artifact: String,
        dest: Option<PathBuf>,
    },
    /// Make a files artifact of a local file or directory (its name is
    /// kept inside, as plan.upload_files does); prints the artifact's name.
    Upload {
        enclave: String,
        path: PathBuf,
        /// The artifact's name (default: the path's name, made unique).
        #[arg(long)]
        name: Option<String>,
    },
}

fn open(name: &str) -> anyhow::Result<Enclave> {
    enclave::check_name(name).map_err(usage)?;
    Ok(Enclave::open(name)?)
}

fn artifact_dir(e: &Enclave, artifact: &str) -> anyhow::Result<PathBuf> {
    if !e.record.artifacts.iter().any(|a| a == artifact) {
        let known = if e.record.artifacts.is_empty() {
            "none".to_string()
        } else {
            e.record.artifacts.join(", ")
        };
        return Err(usage(format!(
            "enclave {} has no files artifact '{artifact}' (artifacts: {known})",
            e.name()
        )));
    }
    Ok(e.artifact_dir(artifact))
}

/// Every entry under `dir`, sorted, relative.
fn walk(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir.join(rel))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for n in names {
        let r = rel.join(n);
        out.push(r.clone());
        if std::fs::symlink_metadata(dir.join(&r))?.is_dir() {
            walk(dir, &r, out)?;
        }
    }
    Ok(())
}

pub fn run(c: FilesCommand) -> anyhow::Result<()> {
    match c {
        FilesCommand::Inspect { enclave, artifact } => {
            let e = open(&enclave)?;
            let dir = artifact_dir(&e, &artifact)?;
            let mut entries = Vec::new();
            walk(&dir, Path::new(""), &mut entries)?;
            let mut total = 0u64;
            for r in &entries {
                let m = std::fs::symlink_metadata(dir.join(r))?;
                let (kind, size, extra) = if m.file_type().is_symlink() {
                    let t = std::fs::read_link(dir.join(r))?;
                    ('l', 0, format!(" -> {}", t.display()))
                } else if m.is_dir() {
                    ('d', 0, "/".to_string())
                } else {
                    total += m.len();
                    ('-', m.len(), String::new())
                };
                println!(
                    "{kind}{:04o} {size:>10} {}{extra}",
                    m.permissions().mode() & 0o7777,
                    r.display()
                );
            }
            println!("{} entries, {total} bytes", entries.len());
            Ok(())
        }
        FilesCommand::Download {
            enclave,
            artifact,
            dest,
        } => {
            let e = open(&enclave)?;
            let dir = artifact_dir(&e, &artifact)?;
            let dest = dest.unwrap_or_else(|| PathBuf::from(&artifact));
            std::fs::create_dir_all(&dest)
                .map_err(|err| usage(format!("{}: {err}", dest.display())))?;
            let mut entries = Vec::new();
            walk(&dir, Path::new(""), &mut entries)?;
            for r in &entries {
                let to = dest.join(r);
                if std::fs::symlink_metadata(&to).is_ok() && !to.is_dir() {
                    return Err(usage(format!(
                        "{} exists; files download never overwrites (choose another destination)",
                        to.display()
                    )));
                }
            }
            for r in &entries {
                let from = dir.join(r);
                let to = dest.join(r);
                let m = std::fs::symlink_metadata(&from)?;
                if m.is_dir() {
                    std::fs::create_dir_all(&to)?;
                } else {
                    enclave::execute::copy_tree(&from, &to)
                        .map_err(|err| anyhow::anyhow!("{}: {err}", to.display()))?;
                }
            }
            println!(
                "downloaded {} entries of '{artifact}' to {}",
                entries.len(),
                dest.display()
            );
            Ok(())
        }
        FilesCommand::Upload {
            enclave,
            path,
            name,
        } => {
            let mut e = open(&enclave)?;
            let base = path
                .canonicalize()
                .map_err(|err| usage(format!("{}: {err}", path.display())))?;
            let file_name = base
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "upload".into());
            let name = match name {
                Some(n) => {
                    if e.record.artifacts.contains(&n) {
                        return Err(usage(format!(
                            "enclave {enclave} has a files artifact '{n}' already; choose another --name"
                        )));
                    }
                    n
                }
                None => {
                    let stem: String = file_name
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                                c
                            } else {
                                '-'
                            }
                        })
                        .collect();
                    let stem = stem.trim_start_matches('.').to_string();
                    let stem = if stem.is_empty() {
                        "upload".into()
                    } else {
                        stem
                    };
                    std::iter::once(stem.clone())
                        .chain((2..).map(|i| format!("{stem}-{i}")))
                        .find(|n| !e.record.artifacts.contains(n))
                        .expect("an unused name")
                }
            };
            nixoci::plan::check_artifact_name(&name).map_err(usage)?;
            let tmp = e.artifact_staging(&name)?;
            if let Err(err) = enclave::execute::copy_tree(&base, &tmp.join(&file_name)) {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(anyhow::anyhow!("{}: {err}", path.display()));
            }
            e.install_artifact(&name, &tmp)?;
            println!("{name}");
            Ok(())
        }
    }
}
