//! Data versions without the file system on the query path. A table's version is read from disk
//! (a directory listing and a `statx` per file) only when something may have changed: an inotify
//! watch on every table's folder bumps a change generation on any event there, and a version is
//! reused while the generation it was read at is still current. The version is read before the
//! generation is compared again, so a change that lands during a read is seen by the next request.
//! Where inotify is unavailable (not Linux, no watch left, a queue overflow), every request reads
//! the versions as before; and the periodic re-scan of the data (`--reload-ms`) bumps the
//! generation whenever it finds a version the watcher missed (a network file system, say).
//! An answer is therefore never staler than the data on disk by more than the watcher's latency.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::catalog::{Catalog, data_version};
use crate::semantic::QueryError;

pub struct DataWatch {
    /// Bumped by every change event (and whenever the watcher cannot vouch for the cache).
    generation: AtomicU64,
    /// The watcher runs: cached versions may be trusted until the generation moves.
    live: AtomicBool,
    /// (table, its path) -> (generation read at, version).
    cache: Mutex<HashMap<(String, PathBuf), (u64, String)>>,
    /// How many times a table's files were listed (for `/healthz` and the tests).
    scans: AtomicU64,
    watched: Mutex<HashSet<PathBuf>>,
    #[cfg(target_os = "linux")]
    watcher: Mutex<Option<linux::Watcher>>,
}

impl Drop for DataWatch {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some(w) = self.watcher.lock().expect("watcher").as_mut() {
            w.stop();
        }
    }
}

impl DataWatch {
    /// Starts the watcher thread (where the platform has one).
    pub fn start() -> Arc<Self> {
        let watch = Arc::new(Self {
            generation: AtomicU64::new(0),
            live: AtomicBool::new(false),
            cache: Mutex::new(HashMap::new()),
            scans: AtomicU64::new(0),
            watched: Mutex::new(HashSet::new()),
            #[cfg(target_os = "linux")]
            watcher: Mutex::new(None),
        });
        #[cfg(target_os = "linux")]
        match linux::Watcher::start(Arc::downgrade(&watch)) {
            Ok(w) => {
                *watch.watcher.lock().expect("watcher") = Some(w);
                watch.live.store(true, Ordering::Release);
            }
            Err(e) => {
                tracing::warn!(error = %e, "no inotify: data versions are read on every request")
            }
        }
        watch
    }

    /// Whether cached versions are trusted (the watcher is running).
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    pub fn scans(&self) -> u64 {
        self.scans.load(Ordering::Relaxed)
    }

    /// Something under a watched folder changed, or may have.
    pub fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The watcher cannot vouch for anything any more: every request reads versions again.
    fn lost(&self, why: &str) {
        tracing::warn!(
            why,
            "data watcher stopped: data versions are read on every request"
        );
        self.live.store(false, Ordering::Release);
        self.changed();
    }

    /// Watches every table's folder (a folder table: it and its subfolders; a file: its folder).
    pub fn watch_tables(&self, catalog: &Catalog) {
        for source in catalog.tables.values() {
            let dir = if source.path.is_dir() {
                source.path.clone()
            } else {
                match source.path.parent() {
                    Some(p) => p.to_path_buf(),
                    None => continue,
                }
            };
            self.watch_dir(&dir);
        }
    }

    fn watch_dir(&self, dir: &Path) {
        if !self
            .watched
            .lock()
            .expect("watched")
            .insert(dir.to_path_buf())
        {
            return;
        }
        #[cfg(target_os = "linux")]
        if let Some(w) = self.watcher.lock().expect("watcher").as_mut()
            && let Err(e) = w.add_tree(dir)
        {
            self.lost(&format!("cannot watch {}: {e}", dir.display()));
        }
    }

    /// The table's data version: the cached one while nothing changed, else read from disk.
    pub fn version(&self, catalog: &Catalog, table: &str) -> Result<String, QueryError> {
        let source = &catalog.tables[table];
        let key = (table.to_string(), source.path.clone());
        let generation = self.generation.load(Ordering::Acquire);
        if self.is_live()
            && let Some((g, v)) = self.cache.lock().expect("version cache").get(&key)
            && *g == generation
        {
            return Ok(v.clone());
        }
        self.scans.fetch_add(1, Ordering::Relaxed);
        let version = data_version(&source.path, source.format)
            .map_err(|e| QueryError::internal(format!("table '{table}' is unreadable: {e}")))?;
        self.cache
            .lock()
            .expect("version cache")
            .insert(key, (generation, version.clone()));
        Ok(version)
    }

    /// The periodic re-scan's check: a version it read that the cache holds otherwise means the
    /// watcher missed a change.
    pub fn reconcile(&self, catalog: &Catalog, data: &[(String, String)]) {
        let cache = self.cache.lock().expect("version cache");
        let missed = data.iter().any(|(t, v)| {
            let key = (t.clone(), catalog.tables[t].path.clone());
            cache.get(&key).is_some_and(|(_, cached)| cached != v)
        });
        drop(cache);
        if missed {
            tracing::info!("a data change the watcher did not report; versions are read again");
            self.changed();
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::HashMap;
    use std::ffi::OsStr;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex, Weak};

    use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};

    use super::DataWatch;

    fn mask() -> WatchMask {
        WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MODIFY
            | WatchMask::CLOSE_WRITE
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::ATTRIB
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF
    }

    /// The inotify instance's watches, and which folder each descriptor is (to watch folders
    /// created inside a watched one).
    pub struct Watcher {
        watches: Watches,
        dirs: Arc<Mutex<HashMap<WatchDescriptor, PathBuf>>>,
    }

    impl Watcher {
        pub fn start(owner: Weak<DataWatch>) -> std::io::Result<Self> {
            let mut inotify = Inotify::init()?;
            let dirs: Arc<Mutex<HashMap<WatchDescriptor, PathBuf>>> = Arc::default();
            let watcher = Watcher {
                watches: inotify.watches(),
                dirs: dirs.clone(),
            };
            let mut adder = Watcher {
                watches: inotify.watches(),
                dirs,
            };
            std::thread::Builder::new()
                .name("kpilens-data-watch".into())
                .spawn(move || {
                    let mut buffer = [0u8; 16 * 1024];
                    loop {
                        let events = match inotify.read_events_blocking(&mut buffer) {
                            Ok(e) => e,
                            Err(e) => {
                                if let Some(w) = owner.upgrade() {
                                    w.lost(&format!("reading events failed: {e}"));
                                }
                                return;
                            }
                        };
                        let Some(watch) = owner.upgrade() else { return };
                        let mut new_dirs = Vec::new();
                        let mut gone = Vec::new();
                        for event in events {
                            // A watched folder removed or moved: the next data state watches
                            // it again (it is rebuilt on that very change).
                            if event
                                .mask
                                .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF)
                                && let Some(dir) =
                                    adder.dirs.lock().expect("dirs").remove(&event.wd)
                            {
                                gone.push(dir);
                            }
                            if event.mask.contains(EventMask::Q_OVERFLOW) {
                                tracing::warn!("inotify queue overflow: versions are read again");
                            }
                            if event.mask.contains(EventMask::ISDIR)
                                && event
                                    .mask
                                    .intersects(EventMask::CREATE | EventMask::MOVED_TO)
                                && let Some(name) = event.name
                                && let Some(parent) =
                                    adder.dirs.lock().expect("dirs").get(&event.wd).cloned()
                            {
                                new_dirs.push(parent.join(name));
                            }
                        }
                        if !gone.is_empty() {
                            let mut watched = watch.watched.lock().expect("watched");
                            for dir in &gone {
                                watched.remove(dir);
                            }
                        }
                        for dir in new_dirs {
                            if let Err(e) = adder.add_tree(&dir) {
                                watch.lost(&format!("cannot watch {}: {e}", dir.display()));
                            }
                        }
                        // After the new folders are watched: a file written into one right
                        // away is then seen either by this bump's re-read or by its own event.
                        watch.changed();
                    }
                })?;
            Ok(watcher)
        }

        /// Stops watching: the reader thread wakes on the last watch's removal and ends, which
        /// closes the inotify instance.
        pub fn stop(&mut self) {
            let wds: Vec<WatchDescriptor> =
                self.dirs.lock().expect("dirs").keys().cloned().collect();
            for wd in wds {
                let _ = self.watches.remove(wd);
            }
        }

        /// Watches a folder and every folder below it.
        pub fn add_tree(&mut self, dir: &Path) -> std::io::Result<()> {
            let wd = self.watches.add(dir, mask())?;
            self.dirs
                .lock()
                .expect("dirs")
                .insert(wd, dir.to_path_buf());
            for entry in std::fs::read_dir(dir)? {
                let path = entry?.path();
                let hidden = path
                    .file_name()
                    .and_then(OsStr::to_str)
                    .is_some_and(|n| n.starts_with('.'));
                if path.is_dir() && !hidden {
                    self.add_tree(&path)?;
                }
            }
            Ok(())
        }
    }
}
