//! ImageFsInfo's figures, kept in memory. Walking the image store and the
//! containers' writable layers costs tens of milliseconds on a full node,
//! and kubelet asks every 10 s; so, as containerd's snapshot syncer does,
//! the walk is repeated in the background and a call answers from the last
//! one. A call that follows a change (an image stored or removed, a
//! container created, started, stopped or removed) measures afresh, so
//! that what a caller just did is in the answer it gets next; and once
//! changes have settled for [`SETTLE`], the walk is redone in the
//! background, so that such a call seldom finds the figures out of date.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::warn;

use crate::error::Result;
use crate::store::{FsUsage, ImageStore};

/// How old figures may get before a call has them measured again in the
/// background (containerd's default stats collection period).
pub const REFRESH_AFTER: Duration = Duration::from_secs(10);

/// How long a change must have settled (no further change) before the
/// figures are walked again in the background, so that the call after
/// pods came and went seldom has to walk itself.
pub const SETTLE: Duration = Duration::from_secs(1);

/// Where container writable layers live and how much they use, for
/// `ImageFsInfo.container_filesystems`: the runtime side knows, the image
/// side answers.
pub trait ContainerFsUsage: Send + Sync + 'static {
    /// The directory, and its bytes and inodes in use. Called on a
    /// blocking thread.
    fn container_fs_usage(&self) -> (PathBuf, u64, u64);
    /// Changes whenever a container is created, started, stopped or
    /// removed: figures measured at another generation are out of date.
    fn generation(&self) -> u64;
}

/// One measurement of both trees.
#[derive(Debug, Clone)]
pub struct Figures {
    /// When it was measured, in nanoseconds since the epoch.
    pub timestamp: i64,
    pub images: FsUsage,
    pub containers: Option<(PathBuf, u64, u64)>,
}

struct Entry {
    /// The image store's and the containers' generations just before
    /// the walk began: a change during it makes the entry stale at once.
    generations: (u64, Option<u64>),
    measured: Instant,
    figures: Arc<Figures>,
}

pub struct FsInfoCache {
    store: Arc<ImageStore>,
    containers: Option<Arc<dyn ContainerFsUsage>>,
    last: Mutex<Option<Entry>>,
    /// One walk at a time: callers arriving during one wait for it.
    walking: tokio::sync::Mutex<()>,
    refreshing: AtomicBool,
    refresh_after: Duration,
    settle: Duration,
}

impl FsInfoCache {
    pub fn new(store: Arc<ImageStore>, containers: Option<Arc<dyn ContainerFsUsage>>) -> Self {
        FsInfoCache {
            store,
            containers,
            last: Mutex::new(None),
            walking: tokio::sync::Mutex::new(()),
            refreshing: AtomicBool::new(false),
            refresh_after: REFRESH_AFTER,
            settle: SETTLE,
        }
    }

    /// Starts the background walk after changes (see [`SETTLE`]), the
    /// first one a settle period after the start, so that not even the
    /// first call walks; it ends with the cache.
    pub fn watch_changes(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let cache = Arc::downgrade(self);
        let settle = self.settle;
        runtime.spawn(async move {
            let mut seen = None;
            loop {
                tokio::time::sleep(settle).await;
                let Some(this) = cache.upgrade() else {
                    return;
                };
                let now = this.generations();
                let stale = this
                    .last
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .is_none_or(|e| e.generations != now);
                if stale && seen == Some(now) {
                    if let Ok(_walking) = this.walking.try_lock() {
                        if let Err(e) = this.clone().walk().await {
                            warn!(error = %e, "measuring the image and container filesystems");
                        }
                    }
                }
                seen = Some(now);
            }
        });
    }

    fn generations(&self) -> (u64, Option<u64>) {
        (
            self.store.generation(),
            self.containers.as_ref().map(|c| c.generation()),
        )
    }

    /// The last figures if nothing changed since they were measured, and
    /// whether they are old enough to be measured again.
    fn current(&self) -> Option<(Arc<Figures>, bool)> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let e = last.as_ref()?;
        (e.generations == self.generations()).then(|| {
            (
                e.figures.clone(),
                e.measured.elapsed() >= self.refresh_after,
            )
        })
    }

    /// The figures to answer with: the last ones while they hold (asking
    /// for a background walk once they are old), or new ones.
    pub async fn figures(self: &Arc<Self>) -> Result<Arc<Figures>> {
        if let Some((figures, old)) = self.current() {
            if old {
                self.refresh_in_background();
            }
            return Ok(figures);
        }
        let _walking = self.walking.lock().await;
        // Measured by the walk this call waited for.
        if let Some((figures, _)) = self.current() {
            return Ok(figures);
        }
        self.clone().walk().await
    }

    fn refresh_in_background(self: &Arc<Self>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            // A walk under way (a caller's) does the refresh already.
            if let Ok(_walking) = this.walking.try_lock() {
                if let Err(e) = this.clone().walk().await {
                    warn!(error = %e, "measuring the image and container filesystems");
                }
            }
            this.refreshing.store(false, Ordering::Release);
        });
    }

    /// Walks both trees on a blocking thread; the caller holds `walking`.
    async fn walk(self: Arc<Self>) -> Result<Arc<Figures>> {
        let this = self.clone();
        let entry = tokio::task::spawn_blocking(move || -> Result<Entry> {
            let generations = this.generations();
            let images = this.store.usage()?;
            let containers = this.containers.as_ref().map(|c| c.container_fs_usage());
            Ok(Entry {
                generations,
                measured: Instant::now(),
                figures: Arc::new(Figures {
                    timestamp: gantry_common::time::now_nanos(),
                    images,
                    containers,
                }),
            })
        })
        .await
        .map_err(|e| crate::error::Error::Internal(format!("the usage walk failed: {e}")))??;
        let figures = entry.figures.clone();
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(entry);
        Ok(figures)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;
    use crate::{ImageConfig, ImageMetrics};

    /// Counts its walks; its generation is set by the test.
    #[derive(Default)]
    struct Layers {
        walks: AtomicU64,
        generation: AtomicU64,
    }

    impl ContainerFsUsage for Arc<Layers> {
        fn container_fs_usage(&self) -> (PathBuf, u64, u64) {
            let n = self.walks.fetch_add(1, Ordering::SeqCst) + 1;
            (PathBuf::from("/containers"), n * 4096, n)
        }
        fn generation(&self) -> u64 {
            self.generation.load(Ordering::SeqCst)
        }
    }

    fn cache(refresh_after: Duration) -> (tempfile::TempDir, Arc<Layers>, Arc<FsInfoCache>) {
        let dir = tempfile::tempdir().unwrap();
        let config = ImageConfig {
            root: dir.path().to_path_buf(),
            ..Default::default()
        };
        let metrics = ImageMetrics::new(&prometheus::Registry::new()).unwrap();
        let store = Arc::new(ImageStore::open(config, metrics).unwrap());
        let layers = Arc::new(Layers::default());
        let mut cache = FsInfoCache::new(store, Some(Arc::new(layers.clone())));
        cache.refresh_after = refresh_after;
        (dir, layers, Arc::new(cache))
    }

    fn walked(f: &Figures) -> u64 {
        f.containers.as_ref().unwrap().2
    }

    #[tokio::test]
    async fn unchanged_answers_from_memory_and_changes_measure_again() {
        let (_dir, layers, cache) = cache(Duration::from_secs(3600));
        assert_eq!(walked(&cache.figures().await.unwrap()), 1);
        assert_eq!(walked(&cache.figures().await.unwrap()), 1);
        // A container event.
        layers.generation.fetch_add(1, Ordering::SeqCst);
        assert_eq!(walked(&cache.figures().await.unwrap()), 2);
        assert_eq!(walked(&cache.figures().await.unwrap()), 2);
        // A change in the image store (any holder of its write lock).
        cache.store.release_owner("nobody").await.unwrap();
        assert_eq!(walked(&cache.figures().await.unwrap()), 3);
        assert_eq!(layers.walks.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn settled_changes_are_walked_before_anyone_asks() {
        let (_dir, layers, cache) = cache(Duration::from_secs(3600));
        let mut cache = Arc::into_inner(cache).unwrap();
        cache.settle = Duration::from_millis(10);
        let cache = Arc::new(cache);
        cache.watch_changes();
        assert_eq!(walked(&cache.figures().await.unwrap()), 1);
        layers.generation.fetch_add(1, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while layers.walks.load(Ordering::SeqCst) < 2 {
            assert!(
                Instant::now() < deadline,
                "no walk after the change settled"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Walked already: the call answers from memory.
        while cache.current().is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(walked(&cache.figures().await.unwrap()), 2);
        // Nothing changed since: no more walks.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(layers.walks.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn old_figures_are_answered_while_a_walk_renews_them() {
        let (_dir, layers, cache) = cache(Duration::ZERO);
        assert_eq!(walked(&cache.figures().await.unwrap()), 1);
        // Old at once: answered as they are, renewed behind the call.
        assert_eq!(walked(&cache.figures().await.unwrap()), 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while layers.walks.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline, "no background walk");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        while cache.refreshing.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(walked(&cache.figures().await.unwrap()), 2);
    }
}
