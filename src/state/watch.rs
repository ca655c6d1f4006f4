//! Data versions without the file system on the query path. A table's version is read from disk
//! (a directory listing and a `statx` per file) only when something may have changed. An inotify
//! instance watches every table's folder and the folders below it; before each version lookup the
//! events the kernel has queued are taken in (one non-blocking `read`, no file-system call), and
//! any event bumps a change generation. A version read at the current generation is reused. The
//! kernel queues an event before the write that caused it returns, so an answer reflects every
//! write that finished before the request: cached answers are exactly as fresh as before, without
//! listing a folder.
//!
//! Where inotify is unavailable (not Linux, no instance or watch left, a read error), every
//! request reads the versions as before; and the periodic re-scan of the data (`--reload-ms`)
//! bumps the generation whenever it finds a version the cache holds otherwise (a network file
//! system, whose remote writes inotify does not see; a queue overflow).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::versions::table_version;
use crate::catalog::Catalog;
use crate::semantic::QueryError;

pub struct DataWatch {
    /// Bumped by every change event (and whenever the watcher cannot vouch for the cache).
    generation: AtomicU64,
    /// The watcher works: cached versions may be trusted until the generation moves.
    live: AtomicBool,
    /// (table, its path) -> (generation read at, version).
    cache: Mutex<HashMap<(String, PathBuf), (u64, String)>>,
    /// How many times a table's files were listed (for `/healthz` and the tests).
    scans: AtomicU64,
    watched: Mutex<HashSet<PathBuf>>,
    #[cfg(target_os = "linux")]
    watcher: Mutex<Option<linux::Watcher>>,
}

impl DataWatch {
    /// Starts watching (where the platform can).
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
        match linux::Watcher::start() {
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

    /// Takes in the events the kernel has queued: every write that finished before this call
    /// is accounted for, so the versions read after it are current.
    fn drain(&self) {
        #[cfg(target_os = "linux")]
        {
            let mut watcher = self.watcher.lock().expect("watcher");
            let Some(w) = watcher.as_mut() else { return };
            match w.drain() {
                Ok(d) => {
                    if !d.gone.is_empty() {
                        let mut watched = self.watched.lock().expect("watched");
                        for dir in &d.gone {
                            watched.remove(dir);
                        }
                    }
                    if d.changed {
                        self.changed();
                    }
                }
                Err(e) => {
                    *watcher = None;
                    drop(watcher);
                    self.lost(&format!("reading its events failed: {e}"));
                }
            }
        }
    }

    /// The table's data version: the cached one while nothing changed, else read from disk.
    pub fn version(&self, catalog: &Catalog, table: &str) -> Result<String, QueryError> {
        self.drain();
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
        let version = table_version(catalog, table)?;
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
    use std::io::ErrorKind;
    use std::path::{Path, PathBuf};

    use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

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

    /// What a drain of the pending events found.
    #[derive(Default)]
    pub struct Drained {
        /// Some event arrived: something under a watched folder changed.
        pub changed: bool,
        /// Watched folders that were removed or moved away.
        pub gone: Vec<PathBuf>,
    }

    /// An inotify instance (non-blocking) and the folder each of its watches is on.
    pub struct Watcher {
        inotify: Inotify,
        dirs: HashMap<WatchDescriptor, PathBuf>,
        buffer: Vec<u8>,
    }

    impl Watcher {
        pub fn start() -> std::io::Result<Self> {
            Ok(Self {
                inotify: Inotify::init()?,
                dirs: HashMap::new(),
                buffer: vec![0; 16 * 1024],
            })
        }

        /// Reads every event the kernel has queued (one `read` when there is none). Folders
        /// created inside a watched one are watched before this returns.
        pub fn drain(&mut self) -> std::io::Result<Drained> {
            let mut drained = Drained::default();
            loop {
                let mut new_dirs = Vec::new();
                let events = match self.inotify.read_events(&mut self.buffer) {
                    Ok(events) => events,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(drained),
                    Err(e) => return Err(e),
                };
                for event in events {
                    drained.changed = true;
                    if event
                        .mask
                        .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF)
                        && let Some(dir) = self.dirs.remove(&event.wd)
                    {
                        drained.gone.push(dir);
                    }
                    if event.mask.contains(EventMask::ISDIR)
                        && event
                            .mask
                            .intersects(EventMask::CREATE | EventMask::MOVED_TO)
                        && let (Some(name), Some(parent)) = (event.name, self.dirs.get(&event.wd))
                    {
                        new_dirs.push(parent.join(name));
                    }
                }
                for dir in new_dirs {
                    self.add_tree(&dir)?;
                }
            }
        }

        /// Watches a folder and every folder below it.
        pub fn add_tree(&mut self, dir: &Path) -> std::io::Result<()> {
            let wd = self.inotify.watches().add(dir, mask())?;
            self.dirs.insert(wd, dir.to_path_buf());
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
