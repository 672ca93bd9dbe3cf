//! The durable store: one [redb](https://docs.rs/redb) file,
//! `<data-dir>/routes.redb`.
//!
//! redb is an embedded, ACID, copy-on-write B-tree store: a commit either
//! lands whole or not at all, also across `kill -9` and power loss. Every
//! commit here is `Durability::Immediate` (fsync before `commit` returns)
//! with two-phase commit (the commit slot is never trusted on checksums
//! alone).
//!
//! Layout (format 1):
//! - table `sandboxes`: name -> JSON of [`StoredSandbox`];
//! - table `meta`: `format` -> 1, `version` -> the table version, written in
//!   the same transaction as the sandboxes it describes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::model::StoredSandbox;
use crate::store::{Batch, Committed, Store, StoreError, Stored};

const SANDBOXES: TableDefinition<&str, &[u8]> = TableDefinition::new("sandboxes");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const FORMAT_KEY: &str = "format";
const VERSION_KEY: &str = "version";
const FORMAT: u64 = 1;

/// The file name inside the data directory.
pub const FILE_NAME: &str = "routes.redb";

/// The durable store.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens (creating if needed) `<data_dir>/routes.redb`. Repairs the file
    /// after a crash, which redb does by itself on open. Fails if another
    /// process has it open.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Other(format!(
                "cannot create data dir {}: {e}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(FILE_NAME);
        let db = Database::create(&path)
            .map_err(|e| StoreError::Other(format!("cannot open {}: {e}", path.display())))?;
        let store = RedbStore { db, path };
        store.init()?;
        Ok(store)
    }

    /// Creates the tables and the format marker in a fresh file; refuses a
    /// file of another format.
    fn init(&self) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(StoreError::backend)?;
        txn.set_durability(Durability::Immediate)
            .map_err(StoreError::backend)?;
        txn.set_two_phase_commit(true);
        {
            let mut meta = txn.open_table(META).map_err(StoreError::backend)?;
            let format = meta
                .get(FORMAT_KEY)
                .map_err(StoreError::backend)?
                .map(|v| v.value());
            match format {
                None => {
                    meta.insert(FORMAT_KEY, FORMAT)
                        .map_err(StoreError::backend)?;
                }
                Some(FORMAT) => {}
                Some(other) => {
                    return Err(StoreError::Other(format!(
                        "{} has storage format {other}; this routeservice reads format {FORMAT}",
                        self.path.display()
                    )))
                }
            }
            txn.open_table(SANDBOXES).map_err(StoreError::backend)?;
        }
        txn.commit().map_err(StoreError::backend)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Store for RedbStore {
    fn load(&self) -> Result<Stored, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::backend)?;
        let meta = txn.open_table(META).map_err(StoreError::backend)?;
        let version = meta
            .get(VERSION_KEY)
            .map_err(StoreError::backend)?
            .map_or(0, |v| v.value());
        let table = txn.open_table(SANDBOXES).map_err(StoreError::backend)?;
        let mut sandboxes = BTreeMap::new();
        for entry in table.iter().map_err(StoreError::backend)? {
            let (name, json) = entry.map_err(StoreError::backend)?;
            let name = name.value().to_owned();
            let sandbox: StoredSandbox =
                serde_json::from_slice(json.value()).map_err(|e| StoreError::Corrupt {
                    key: name.clone(),
                    problem: e.to_string(),
                })?;
            sandboxes.insert(name, sandbox);
        }
        Ok(Stored { version, sandboxes })
    }

    fn commit(&self, batch: &Batch) -> Result<Committed, StoreError> {
        // Serialise before the transaction starts: nothing can fail half-way
        // for a reason of ours.
        let mut upserts = Vec::with_capacity(batch.upserts.len());
        for (name, sandbox) in &batch.upserts {
            let json = serde_json::to_vec(sandbox).map_err(StoreError::backend)?;
            upserts.push((name.as_str(), json));
        }
        let mut txn = self.db.begin_write().map_err(StoreError::backend)?;
        txn.set_durability(Durability::Immediate)
            .map_err(StoreError::backend)?;
        txn.set_two_phase_commit(true);
        {
            let mut table = txn.open_table(SANDBOXES).map_err(StoreError::backend)?;
            for (name, json) in &upserts {
                table
                    .insert(*name, json.as_slice())
                    .map_err(StoreError::backend)?;
            }
            for name in &batch.deletes {
                table.remove(name.as_str()).map_err(StoreError::backend)?;
            }
            let mut meta = txn.open_table(META).map_err(StoreError::backend)?;
            meta.insert(VERSION_KEY, batch.version)
                .map_err(StoreError::backend)?;
        }
        // Dropping an uncommitted transaction (any `?` above) aborts it.
        txn.commit().map_err(StoreError::backend)?;
        Ok(Committed::Applied)
    }

    fn describe(&self) -> String {
        format!("redb {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SandboxRoute, SandboxSpec};

    fn sandbox(key: &str, version: u64) -> StoredSandbox {
        StoredSandbox {
            spec: SandboxSpec {
                routing_key: key.into(),
                routes: vec![SandboxRoute {
                    baseline: "a.ns.svc.cluster.local".into(),
                    target: "a-x.ns.svc.cluster.local".into(),
                }],
            },
            version,
        }
    }

    #[test]
    fn commits_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RedbStore::open(dir.path()).unwrap();
            assert_eq!(store.load().unwrap(), Stored::default());
            store
                .commit(&Batch {
                    version: 1,
                    upserts: vec![
                        ("a".into(), sandbox("ka", 1)),
                        ("b".into(), sandbox("kb", 1)),
                    ],
                    deletes: vec![],
                })
                .unwrap();
            store
                .commit(&Batch {
                    version: 2,
                    upserts: vec![],
                    deletes: vec!["a".into()],
                })
                .unwrap();
        }
        let store = RedbStore::open(dir.path()).unwrap();
        let stored = store.load().unwrap();
        assert_eq!(stored.version, 2);
        assert_eq!(
            stored.sandboxes.into_iter().collect::<Vec<_>>(),
            vec![("b".to_string(), sandbox("kb", 1))]
        );
    }

    #[test]
    fn a_second_open_of_the_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = RedbStore::open(dir.path()).unwrap();
        let err = RedbStore::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("cannot open"), "{err}");
    }

    #[test]
    fn another_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RedbStore::open(dir.path()).unwrap();
            let txn = store.db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(FORMAT_KEY, 99)
                .unwrap();
            txn.commit().unwrap();
        }
        let err = RedbStore::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("storage format 99"), "{err}");
    }
}
