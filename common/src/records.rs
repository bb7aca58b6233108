//! The versioned JSON record store pods and containers are kept in.
//!
//! Each object is a directory `<dir>/<id>/` holding one record file; the
//! record is written before any host side effect (it is the intent log)
//! and removed last, so a directory without a readable record is debris of
//! a create that never committed or a removal cut short.
//!
//! The records live in memory behind a mutex that is only ever held for
//! map operations: writes to disk (two fsyncs each) happen outside it, off
//! the async worker threads, so a slow disk delays the calls on one object
//! and not every RPC. Each record has its own writer lock, taken (off the
//! async workers too) for the whole read, change, write and commit of
//! [`RecordStore::modify`], so two changes of one record (say a pod's own
//! step and another pod handing it a cgroup) never lose each other.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A record kept by a [`RecordStore`].
pub trait Record: Serialize + DeserializeOwned + Clone + Send + 'static {
    /// The record's file name in the object's directory.
    const FILE: &'static str;
    /// The record version this build reads and writes.
    const VERSION: u32;
    fn id(&self) -> &str;
    fn version(&self) -> u32;
}

/// What [`RecordStore::resolve`] found for an ID or prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The full ID of the one record the ID or prefix names.
    Found(String),
    NotFound,
    /// The prefix names more than one record.
    Ambiguous,
}

/// Records by ID, in memory and on disk.
pub struct RecordStore<R: Record> {
    dir: PathBuf,
    map: Mutex<BTreeMap<String, R>>,
    /// One writer lock per record being changed, dropped when unused.
    writers: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// Why a directory under the store holds no usable record.
#[derive(Debug)]
pub enum Skipped {
    /// No record, or one that does not parse: debris the caller removes
    /// (after undoing what it may have left, e.g. mounts).
    Debris { dir: PathBuf, why: String },
    /// A record of another version, left alone.
    UnknownVersion { path: PathBuf, version: u32 },
}

impl<R: Record> RecordStore<R> {
    /// Opens (making it private if needed) the store in `dir` and loads
    /// every record; returns the directories it could not use.
    pub fn open(dir: &Path) -> std::io::Result<(Self, Vec<Skipped>)> {
        crate::fs::private_dir(dir)?;
        let mut map = BTreeMap::new();
        let mut skipped = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if crate::fs::is_temp_file(&entry.file_name()) {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let path = entry.path().join(R::FILE);
            crate::fs::tighten(&entry.path(), 0o700)?;
            crate::fs::tighten(&path, 0o600)?;
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<R>(&b).map_err(|e| e.to_string()))
            {
                Ok(r) if r.version() == R::VERSION && r.id() == entry.file_name() => {
                    map.insert(r.id().to_string(), r);
                }
                Ok(r) if r.version() != R::VERSION => skipped.push(Skipped::UnknownVersion {
                    path,
                    version: r.version(),
                }),
                Ok(r) => skipped.push(Skipped::Debris {
                    dir: entry.path(),
                    why: format!("the record names another ID, {:?}", r.id()),
                }),
                Err(why) => skipped.push(Skipped::Debris {
                    dir: entry.path(),
                    why,
                }),
            }
        }
        Ok((
            RecordStore {
                dir: dir.to_path_buf(),
                map: Mutex::new(map),
                writers: Mutex::default(),
            },
            skipped,
        ))
    }

    /// The directory holding every object's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An object's directory.
    pub fn dir_of(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// The records, for reading. Hold the guard only for map operations:
    /// no I/O, no await.
    pub fn map(&self) -> MutexGuard<'_, BTreeMap<String, R>> {
        lock(&self.map)
    }

    pub fn get(&self, id: &str) -> Option<R> {
        self.map().get(id).cloned()
    }

    pub fn values(&self) -> Vec<R> {
        self.map().values().cloned().collect()
    }

    /// A full ID, or a prefix that names one record.
    pub fn resolve(&self, id: &str) -> Lookup {
        let map = self.map();
        if map.contains_key(id) {
            return Lookup::Found(id.to_string());
        }
        let mut m = map
            .range(id.to_string()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(id));
        match (m.next(), m.next()) {
            (Some(one), None) => Lookup::Found(one.clone()),
            (Some(_), Some(_)) => Lookup::Ambiguous,
            _ => Lookup::NotFound,
        }
    }

    /// Adds a new record in memory only, unless `conflicts` finds a record
    /// it clashes with (which is returned): a name is reserved before
    /// anything is written. Follow with [`Self::persist`], and
    /// [`Self::forget`] if that fails.
    pub fn reserve(&self, rec: R, conflicts: impl Fn(&R) -> bool) -> Result<(), R> {
        let mut map = self.map();
        if let Some(other) = map.values().find(|r| conflicts(r)) {
            return Err(other.clone());
        }
        map.insert(rec.id().to_string(), rec);
        Ok(())
    }

    /// Writes a new record to disk (its directory made private first),
    /// after [`Self::reserve`]. On an async worker thread the worker is
    /// handed off while the disk is waited for.
    pub fn persist(&self, rec: &R) -> std::io::Result<()> {
        blocking(|| {
            let writer = self.writer(rec.id());
            let _one_writer = lock(&writer);
            self.write(rec)
        })
    }

    fn write(&self, rec: &R) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?;
        let dir = self.dir_of(rec.id());
        // Made private on first write only: an object's directory may have
        // been opened since on purpose (search permission for a pod's
        // mapped root), which a later record write must not take back.
        {
            use std::os::unix::fs::DirBuilderExt;
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
        }
        crate::fs::write_atomic(&dir.join(R::FILE), &bytes)
    }

    fn writer(&self, id: &str) -> Arc<Mutex<()>> {
        let mut w = lock(&self.writers);
        w.retain(|_, l| Arc::strong_count(l) > 1);
        w.entry(id.to_string()).or_default().clone()
    }

    /// Changes a record: `f` edits a fresh copy, which is written to disk,
    /// then made current, and `then` runs under the map lock with the
    /// records as they now are (e.g. to send an event in the order records
    /// changed). `None` if there is no such record. Other changes of the
    /// same record wait; readers do not.
    pub fn modify<E, T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut R) -> E,
        then: impl FnOnce(&BTreeMap<String, R>, &R, E) -> T,
    ) -> Option<std::io::Result<(R, T)>> {
        blocking(|| {
            let writer = self.writer(id);
            let _one_writer = lock(&writer);
            let mut rec = self.get(id)?;
            let e = f(&mut rec);
            if let Err(err) = self.write(&rec) {
                return Some(Err(err));
            }
            let mut map = self.map();
            map.insert(id.to_string(), rec.clone());
            let t = then(&map, &rec, e);
            Some(Ok((rec, t)))
        })
    }

    /// [`Self::modify`] without a follow-up.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut R)) -> Option<std::io::Result<R>> {
        self.modify(id, f, |_, _, ()| ())
            .map(|r| r.map(|(rec, ())| rec))
    }

    /// Removes an object's directory, then forgets its record; a directory
    /// already gone is not an error.
    pub fn remove(&self, id: &str) -> std::io::Result<()> {
        let dir = self.dir_of(id);
        let removed = blocking(|| {
            let writer = self.writer(id);
            let _one_writer = lock(&writer);
            std::fs::remove_dir_all(&dir)
        });
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.forget(id);
        Ok(())
    }

    /// Moves an object's directory, record included, to `to` (outside the
    /// store, on its filesystem) and forgets the record: one rename, the
    /// durable end of the object as far as the store is concerned, while
    /// what the directory holds is undone later from `to`. The writer lock
    /// keeps a change of the record from writing it back meanwhile. Both
    /// parents are synced; if that fails the move is done all the same
    /// (and the error returned), as it may reach the disk later.
    pub fn move_out(&self, id: &str, to: &Path) -> std::io::Result<()> {
        let from = self.dir_of(id);
        blocking(|| {
            let writer = self.writer(id);
            let _one_writer = lock(&writer);
            std::fs::rename(&from, to)?;
            self.forget(id);
            std::fs::File::open(&self.dir)?.sync_all()?;
            let to_parent = to
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            std::fs::File::open(to_parent)?.sync_all()
        })
    }

    /// Drops a record from memory only.
    pub fn forget(&self, id: &str) {
        self.map().remove(id);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs blocking file work. On a multi-threaded tokio runtime the worker
/// thread is handed off first, so the runtime's other tasks keep running;
/// elsewhere (a plain thread, a single-threaded test runtime) it just runs.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    #[cfg(feature = "tokio")]
    if let Ok(h) = tokio::runtime::Handle::try_current() {
        if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
            return tokio::task::block_in_place(f);
        }
    }
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    struct Rec {
        version: u32,
        id: String,
        name: String,
    }

    impl Record for Rec {
        const FILE: &'static str = "rec.json";
        const VERSION: u32 = 2;
        fn id(&self) -> &str {
            &self.id
        }
        fn version(&self) -> u32 {
            self.version
        }
    }

    fn rec(id: &str, name: &str) -> Rec {
        Rec {
            version: 2,
            id: id.into(),
            name: name.into(),
        }
    }

    #[test]
    fn records_persist_reload_and_resolve_by_prefix() {
        let d = tempfile::tempdir().unwrap();
        let (s, skipped) = RecordStore::<Rec>::open(d.path()).unwrap();
        assert!(skipped.is_empty());
        for (id, name) in [("abc1", "a"), ("abc2", "b"), ("xyz", "c")] {
            s.reserve(rec(id, name), |r| r.name == name).unwrap();
            s.persist(&rec(id, name)).unwrap();
        }
        assert_eq!(
            s.reserve(rec("new", "a"), |r| r.name == "a")
                .unwrap_err()
                .id,
            "abc1"
        );
        let updated = s
            .update("xyz", |r| r.name = "changed".into())
            .unwrap()
            .unwrap();
        assert_eq!(updated.name, "changed");
        assert!(s.update("nope", |_| ()).is_none());
        assert_eq!(s.resolve("abc1"), Lookup::Found("abc1".into()));
        assert_eq!(s.resolve("x"), Lookup::Found("xyz".into()));
        assert_eq!(s.resolve("abc"), Lookup::Ambiguous);
        assert_eq!(s.resolve("q"), Lookup::NotFound);
        s.remove("abc2").unwrap();
        s.remove("abc2").unwrap();

        // Debris and other versions are reported, not loaded.
        std::fs::create_dir(d.path().join("empty")).unwrap();
        std::fs::create_dir(d.path().join("old")).unwrap();
        std::fs::write(
            d.path().join("old/rec.json"),
            r#"{"version":1,"id":"old","name":"o"}"#,
        )
        .unwrap();
        std::fs::create_dir(d.path().join("moved")).unwrap();
        std::fs::write(
            d.path().join("moved/rec.json"),
            r#"{"version":2,"id":"other","name":"o"}"#,
        )
        .unwrap();
        std::fs::write(d.path().join(".tmp-1-1"), b"half").unwrap();
        let (s, skipped) = RecordStore::<Rec>::open(d.path()).unwrap();
        assert_eq!(s.values(), vec![rec("abc1", "a"), rec("xyz", "changed")]);
        let mut debris: Vec<String> = skipped
            .iter()
            .filter_map(|k| match k {
                Skipped::Debris { dir, .. } => Some(dir.file_name()?.to_string_lossy().into()),
                Skipped::UnknownVersion { .. } => None,
            })
            .collect();
        debris.sort();
        assert_eq!(debris, ["empty", "moved"]);
        assert!(skipped
            .iter()
            .any(|k| matches!(k, Skipped::UnknownVersion { version: 1, .. })));
        assert!(!d.path().join(".tmp-1-1").exists());
    }

    #[test]
    fn concurrent_changes_of_one_record_are_never_lost() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = RecordStore::<Rec>::open(d.path()).unwrap();
        s.reserve(rec("a", ""), |_| false).unwrap();
        s.persist(&rec("a", "")).unwrap();
        std::thread::scope(|t| {
            for i in 0..8 {
                let s = &s;
                t.spawn(move || {
                    for j in 0..10 {
                        s.update("a", |r| r.name.push_str(&format!("{i}.{j},")))
                            .unwrap()
                            .unwrap();
                    }
                });
            }
        });
        let name = s.get("a").unwrap().name;
        assert_eq!(name.matches(',').count(), 80, "{name}");
        let (again, _) = RecordStore::<Rec>::open(d.path()).unwrap();
        assert_eq!(again.get("a").unwrap().name, name);
    }

    #[test]
    fn moved_out_records_are_gone_and_stay_gone() {
        let d = tempfile::tempdir().unwrap();
        let store = d.path().join("store");
        let out = d.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let (s, _) = RecordStore::<Rec>::open(&store).unwrap();
        s.reserve(rec("a", "x"), |_| false).unwrap();
        s.persist(&rec("a", "x")).unwrap();
        std::fs::write(store.join("a/layer"), b"data").unwrap();
        s.move_out("a", &out.join("a")).unwrap();
        assert!(s.get("a").is_none());
        assert!(!store.join("a").exists());
        assert_eq!(std::fs::read(out.join("a/layer")).unwrap(), b"data");
        assert!(out.join("a/rec.json").exists(), "the record goes with it");
        // A change racing the removal does not write the record back.
        assert!(s.update("a", |r| r.name = "y".into()).is_none());
        assert!(!store.join("a").exists());
        let (again, skipped) = RecordStore::<Rec>::open(&store).unwrap();
        assert!(again.get("a").is_none() && skipped.is_empty());
        // Nothing to move is an error, and changes nothing.
        assert!(s.move_out("a", &out.join("b")).is_err());
        assert!(!out.join("b").exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn persisting_on_a_worker_hands_the_worker_off() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = RecordStore::<Rec>::open(d.path()).unwrap();
        // Would panic if called outside a runtime context that allows it.
        s.persist(&rec("a", "x")).unwrap();
        assert!(d.path().join("a/rec.json").exists());
    }
}
