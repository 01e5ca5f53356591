//! The relay's side of the brotli copies: the [`Dashboard`] holds the copies made from
//! the files as they are now; a background thread, woken when a request finds a file
//! without a fresh copy, settles, drops stale copies, loads fresh ones from the cache
//! directory and runs `stepwatch precompress` for the rest. It also warns once per
//! version of index.html that is a dev build.

use super::devbuild::is_dev_build;
use super::files::{compressible, scan};
use super::precompress::cache_name;
use super::stamp::Stamp;
use actix_web::web;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::Duration;

/// The brotli copies of the dashboard's files and the state that keeps them fresh.
pub struct Dashboard {
    pub(super) dist: PathBuf,
    cache: PathBuf,
    brotli: RwLock<HashMap<String, Compressed>>,
    /// Set when a request saw a file without a fresh copy; wakes the background thread.
    dirty: Mutex<bool>,
    wake: Condvar,
    /// The index.html last checked for a dev build.
    index_seen: Mutex<Option<Stamp>>,
    /// The last `stepwatch precompress` failed (warned once until one succeeds).
    child_failed: AtomicBool,
}

/// A brotli copy of one file, as it was when its `stamp` was taken.
struct Compressed {
    stamp: Stamp,
    /// `None`: brotli would not make it smaller (or could not be made); serve it plain.
    br: Option<web::Bytes>,
}

/// How long a woken background thread waits for a rebuild to finish writing.
const SETTLE: Duration = Duration::from_millis(300);
/// How long it waits after the child failed before trying again.
const BACKOFF: Duration = Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Dashboard {
    /// Serves `dist`; keeps brotli copies under `cache`, made in a child process by a
    /// background thread at start and whenever a file changes. Warns now if dist holds a
    /// dev build.
    pub fn new(dist: PathBuf, cache: PathBuf) -> Arc<Dashboard> {
        let d = Arc::new(Dashboard {
            dist,
            cache,
            brotli: RwLock::new(HashMap::new()),
            dirty: Mutex::new(true),
            wake: Condvar::new(),
            index_seen: Mutex::new(None),
            child_failed: AtomicBool::new(false),
        });
        d.check_index();
        let bg = d.clone();
        let _ = std::thread::Builder::new()
            .name("stepwatch-brotli".into())
            .spawn(move || loop {
                bg.next_round();
                if !bg.refresh() {
                    std::thread::sleep(BACKOFF);
                }
            });
        d
    }

    /// Asks the background thread for fresh brotli copies.
    pub(super) fn mark_dirty(&self) {
        let mut dirty = lock(&self.dirty);
        if !*dirty {
            *dirty = true;
            self.wake.notify_one();
        }
    }

    /// Waits until a copy is wanted, then a little longer for a rebuild to finish.
    fn next_round(&self) {
        let mut dirty = lock(&self.dirty);
        while !*dirty {
            dirty = self.wake.wait(dirty).unwrap_or_else(|e| e.into_inner());
        }
        drop(dirty);
        std::thread::sleep(SETTLE);
        *lock(&self.dirty) = false;
    }

    /// Brings the brotli copies in line with dist: drops those of changed or deleted
    /// files, loads fresh ones from the cache directory, and runs the child for the rest.
    /// `false`: the child could not run.
    fn refresh(&self) -> bool {
        self.check_index();
        let files: HashMap<String, Stamp> = scan(&self.dist)
            .into_iter()
            .filter(|(rel, _)| compressible(rel))
            .map(|(rel, meta)| (rel, Stamp::of(&meta)))
            .collect();
        if let Ok(mut map) = self.brotli.write() {
            map.retain(|rel, c| files.get(rel) == Some(&c.stamp));
        }
        let mut missing = Vec::new();
        for (rel, stamp) in &files {
            if self.has_copy(rel, *stamp) {
                continue;
            }
            if !self.load(rel, *stamp) {
                missing.push((rel, *stamp));
            }
        }
        if missing.is_empty() {
            return true;
        }
        if !self.run_child() {
            if !self.child_failed.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "could not make brotli copies of the dashboard; serving it with gzip for now"
                );
            }
            return false;
        }
        self.child_failed.store(false, Ordering::Relaxed);
        for (rel, stamp) in missing {
            if self.load(rel, stamp) {
                continue;
            }
            let now = std::fs::metadata(self.dist.join(rel)).map(|m| Stamp::of(&m));
            if now.as_ref().ok() == Some(&stamp) {
                // The child made none (unreadable?): serve it plain rather than retry.
                if let Ok(mut map) = self.brotli.write() {
                    map.insert(rel.clone(), Compressed { stamp, br: None });
                }
            } else {
                self.mark_dirty();
            }
        }
        true
    }

    fn has_copy(&self, rel: &str, stamp: Stamp) -> bool {
        self.brotli
            .read()
            .is_ok_and(|m| m.get(rel).is_some_and(|c| c.stamp == stamp))
    }

    /// Takes the cache directory's copy of `rel` if it was made from version `stamp`.
    fn load(&self, rel: &str, stamp: Stamp) -> bool {
        let Ok(data) = std::fs::read(self.cache.join(cache_name(rel))) else {
            return false;
        };
        let Some(nl) = data.iter().position(|&b| b == b'\n') else {
            return false;
        };
        let header = std::str::from_utf8(&data[..nl]).ok().and_then(Stamp::parse);
        if header != Some(stamp) {
            return false;
        }
        let body = web::Bytes::from(data).slice(nl + 1..);
        // Kept only when smaller than the file.
        let br = ((body.len() as u64) < stamp.len).then_some(body);
        if let Ok(mut map) = self.brotli.write() {
            map.insert(rel.to_string(), Compressed { stamp, br });
        }
        true
    }

    fn run_child(&self) -> bool {
        // On Linux the running image itself: it still runs after an upgrade replaced or
        // deleted the file the relay was started from (current_exe() would then name a
        // missing or different program).
        let proc_exe = Path::new("/proc/self/exe");
        let exe = if proc_exe.exists() {
            Some(proc_exe.to_path_buf())
        } else {
            std::env::current_exe().ok()
        };
        let ran = exe.and_then(|exe| {
            std::process::Command::new(exe)
                .arg("precompress")
                .arg("--dist")
                .arg(&self.dist)
                .arg("--out")
                .arg(&self.cache)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .ok()
        });
        ran.is_some_and(|s| s.success())
    }

    fn check_index(&self) {
        if let Ok(meta) = std::fs::metadata(self.dist.join("index.html")) {
            self.note_index(Stamp::of(&meta));
        }
    }

    /// Warns once per version of index.html that is a dev build.
    pub(super) fn note_index(&self, stamp: Stamp) {
        let mut seen = lock(&self.index_seen);
        if *seen == Some(stamp) {
            return;
        }
        *seen = Some(stamp);
        let index = self.dist.join("index.html");
        if std::fs::read(&index).is_ok_and(|html| is_dev_build(&html)) {
            tracing::warn!(
                "{} is a trunk dev build (autoreload snippet): run `trunk build --release` \
                 for the dashboard the relay serves (`trunk serve` writes its dev build into \
                 the same dist/); serving it without the snippet, which only trunk's dev \
                 server can answer",
                index.display()
            );
        }
    }

    /// The brotli copy of `rel` made from version `stamp`: `Some(None)` when it is
    /// served plain, `None` when there is no fresh copy (yet).
    pub(super) fn fresh_copy(&self, rel: &str, stamp: Stamp) -> Option<Option<web::Bytes>> {
        self.brotli.read().ok().and_then(|m| {
            m.get(rel)
                .filter(|c| c.stamp == stamp)
                .map(|c| c.br.clone())
        })
    }
}
