//! A closure read straight from the local Nix store's database
//! (`/nix/var/nix/db/db.sqlite`), read-only, instead of from
//! `nix path-info --json --recursive`: after the page cache was dropped,
//! starting Nix (its binary, sixty libraries, its settings) costs 0.07–0.09 s
//! here, the query a few milliseconds, and a rebuild with one store path
//! changed otherwise waits for it.
//!
//! Used only where it says the same as Nix: the store is `/nix/store`, the
//! database is of the schema this reader knows (version 10, Nix 2.0 and
//! later), and it can be opened (as root, or by a user with access to
//! the database's lock files; not through the daemon). Anything else, any
//! error, a path the database does not hold as valid, or a path without a
//! recorded NAR size, and the caller asks Nix as before (as it does with
//! `NIXOCI_NIX_DB=off`).

use super::hash::Sha256;
use super::path_info::PathInfo;
use super::store_path::StorePath;
use rusqlite::{Connection, OpenFlags};
use std::collections::BTreeMap;
use std::path::Path;

/// The local store's database.
pub const DB: &str = "/nix/var/nix/db/db.sqlite";
/// The schema versions whose `ValidPaths` and `Refs` tables this reader
/// knows (Nix writes the number into `schema` beside the database).
const SCHEMAS: &[&str] = &["10"];

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: schema version {1:?}, which nixoci does not read")]
    Schema(String, String),
    #[error("{0}: {1}")]
    Sqlite(String, rusqlite::Error),
    #[error("'{0}' is not a valid path in the store's database")]
    NotValid(String),
    #[error("{0}: {1}")]
    Bad(String, String),
}

/// The closure of `root` from the database at `db` (with its `schema`
/// file beside it), sorted by path, in the form `nix path-info` gives.
pub fn closure(db: &Path, root: &StorePath) -> Result<Vec<PathInfo>, DbError> {
    let name = db.display().to_string();
    let schema_file = db.with_file_name("schema");
    let schema = std::fs::read_to_string(&schema_file)
        .map_err(|e| DbError::Io(schema_file.display().to_string(), e))?;
    let schema = schema.trim();
    if !SCHEMAS.contains(&schema) {
        return Err(DbError::Schema(name, schema.to_string()));
    }
    let sql = |e| DbError::Sqlite(name.clone(), e);
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql)?;
    // A reader waits only while a writer finishes a transaction; past a
    // few seconds, Nix is asked instead.
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(sql)?;
    let root_str = root.to_string();
    // Each path of the closure with each of its references (a path with
    // none: once, with NULL), from one walk of the references.
    let mut paths: BTreeMap<i64, (String, String, Option<i64>)> = BTreeMap::new();
    let mut refs: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    {
        // One statement: the paths and their references as of one moment.
        let mut q = conn
            .prepare(
                "WITH RECURSIVE closure(id) AS (
                    SELECT id FROM ValidPaths WHERE path = ?1
                    UNION SELECT r.reference FROM Refs r JOIN closure c ON r.referrer = c.id)
                 SELECT v.id, v.path, v.hash, v.narSize, r.reference
                 FROM closure c JOIN ValidPaths v ON v.id = c.id
                 LEFT JOIN Refs r ON r.referrer = c.id",
            )
            .map_err(sql)?;
        let rows = q
            .query_map([&root_str], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    (r.get(1)?, r.get(2)?, r.get(3)?),
                    r.get::<_, Option<i64>>(4)?,
                ))
            })
            .map_err(sql)?;
        for row in rows {
            let (id, info, reference) = row.map_err(sql)?;
            paths.entry(id).or_insert(info);
            refs.entry(id).or_default().extend(reference);
        }
    }
    if paths.is_empty() {
        return Err(DbError::NotValid(root_str));
    }

    let bad = |what: String| DbError::Bad(name.clone(), what);
    let mut parsed: BTreeMap<i64, StorePath> = BTreeMap::new();
    for (id, (path, _, _)) in &paths {
        let p = StorePath::parse(path).map_err(|e| bad(format!("{path:?}: {e}")))?;
        parsed.insert(*id, p);
    }
    let mut out = Vec::with_capacity(paths.len());
    for (id, (path, hash, nar_size)) in &paths {
        let hash = Sha256::parse(hash).map_err(|e| bad(format!("{path}: {e}")))?;
        let nar_size = nar_size
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| bad(format!("{path}: no NAR size recorded")))?;
        let me = &parsed[id];
        let mut references = Vec::new();
        for to in refs.get(id).map(Vec::as_slice).unwrap_or_default() {
            // Every reference of a path in the closure is in the closure.
            let r = parsed
                .get(to)
                .ok_or_else(|| bad(format!("{path}: a reference outside its closure")))?;
            if r != me {
                references.push(r.clone());
            }
        }
        references.sort();
        references.dedup();
        out.push(PathInfo {
            path: me.clone(),
            nar_hash: hash.sri(),
            nar_size,
            references,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database of Nix's schema, with `paths` (path, hex hash, size)
    /// and `refs` between their indexes.
    fn db(
        dir: &Path,
        paths: &[(&str, &str, Option<i64>)],
        refs: &[(i64, i64)],
    ) -> std::path::PathBuf {
        let p = dir.join("db.sqlite");
        std::fs::write(dir.join("schema"), "10").unwrap();
        let c = Connection::open(&p).unwrap();
        c.execute_batch(
            "CREATE TABLE ValidPaths (id integer primary key autoincrement not null,
                path text unique not null, hash text not null,
                registrationTime integer not null, deriver text, narSize integer,
                ultimate integer, sigs text, ca text);
             CREATE TABLE Refs (referrer integer not null, reference integer not null,
                primary key (referrer, reference));",
        )
        .unwrap();
        for (i, (path, hash, size)) in paths.iter().enumerate() {
            c.execute(
                "INSERT INTO ValidPaths (id, path, hash, registrationTime, narSize) VALUES (?1, ?2, ?3, 0, ?4)",
                rusqlite::params![i as i64 + 1, path, format!("sha256:{hash}"), size],
            )
            .unwrap();
        }
        for (a, b) in refs {
            c.execute("INSERT INTO Refs VALUES (?1, ?2)", [a, b])
                .unwrap();
        }
        p
    }

    const A: &str = "/nix/store/c6h2jv2bf9iav4f9jqy0n6j9b0zgl4f3-a";
    const B: &str = "/nix/store/d6h2jv2bf9iav4f9jqy0n6j9b0zgl4f3-b";
    const C: &str = "/nix/store/f6h2jv2bf9iav4f9jqy0n6j9b0zgl4f3-c";
    const H: &str = "f423dbc7e23e836f1a7c931276aa73ca771692d5ba68174b34c72b9f216ac821";

    #[test]
    fn a_closure_with_a_cycle_and_a_self_reference() {
        let d = tempfile::tempdir().unwrap();
        // a -> b, b -> a (a cycle), b -> b (dropped), c outside.
        let db = db(
            d.path(),
            &[(A, H, Some(10)), (B, H, Some(20)), (C, H, Some(30))],
            &[(1, 2), (2, 1), (2, 2)],
        );
        let infos = closure(&db, &StorePath::parse(A).unwrap()).unwrap();
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[0].path.to_string(), A);
        assert_eq!(infos[0].references, vec![StorePath::parse(B).unwrap()]);
        assert_eq!(infos[1].references, vec![StorePath::parse(A).unwrap()]);
        assert_eq!(infos[1].nar_size, 20);
        assert_eq!(
            infos[0].nar_hash,
            "sha256-9CPbx+I+g28afJMSdqpzyncWktW6aBdLNMcrnyFqyCE="
        );
    }

    #[test]
    fn what_it_cannot_vouch_for_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let db_path = db(d.path(), &[(A, H, None), (B, "xyz", Some(1))], &[]);
        let e = closure(&db_path, &StorePath::parse(A).unwrap()).unwrap_err();
        assert!(e.to_string().contains("no NAR size"), "{e}");
        let e = closure(&db_path, &StorePath::parse(B).unwrap()).unwrap_err();
        assert!(e.to_string().contains("not a SHA-256"), "{e}");
        let e = closure(&db_path, &StorePath::parse(C).unwrap()).unwrap_err();
        assert!(matches!(e, DbError::NotValid(_)), "{e}");
        std::fs::write(d.path().join("schema"), "11").unwrap();
        let e = closure(&db_path, &StorePath::parse(A).unwrap()).unwrap_err();
        assert!(matches!(e, DbError::Schema(..)), "{e}");
        let e = closure(
            &d.path().join("none/db.sqlite"),
            &StorePath::parse(A).unwrap(),
        )
        .unwrap_err();
        assert!(matches!(e, DbError::Io(..)), "{e}");
    }
}
