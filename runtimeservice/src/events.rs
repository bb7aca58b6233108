//! Container events (`GetContainerEvents`) and the exit detection behind
//! the STOPPED ones.
//!
//! [`Events`] owns the broadcast channel every subscriber reads. Events are
//! sent by whoever changes a record, while it still holds the records lock,
//! so the order subscribers see is the order the changes were made in. A
//! send never waits: a subscriber that falls more than [`CAPACITY`] events
//! behind is told so and dropped (it can subscribe again and relist), which
//! keeps one stalled client from holding back the daemon or the others.
//!
//! [`ExitWatcher`] notices containers that exit on their own. The monitor
//! already writes `exit.json` into the container's directory by renaming a
//! temporary file, so one inotify instance with a watch per live
//! container's directory (`IN_MOVED_TO`) hears every exit the moment it is
//! recorded: no polling timer, and nothing new in the monitor's protocol. A
//! monitor that outlives a daemon restart keeps writing the same file, so
//! the restarted daemon only needs to watch the directories again (and look
//! once for exits that happened while it was down). An inotify queue
//! overflow loses names, so it triggers one look at every live container.

use gantry_common::exit::EXIT_FILE;
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

use gantry_proto::v1 as cri;
use rustix::fs::inotify;
use tokio::io::unix::AsyncFd;
use tokio::sync::broadcast;
use tracing::warn;

/// Events a subscriber may fall behind by before it is dropped.
pub const CAPACITY: usize = 1024;

/// The fan-out of container (and sandbox) events to subscribers.
pub struct Events {
    tx: broadcast::Sender<cri::ContainerEventResponse>,
    /// Set at shutdown: a subscription never ends on its own, and the gRPC
    /// server waits for open streams before it exits.
    closed: tokio::sync::watch::Sender<bool>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(CAPACITY).0,
            closed: tokio::sync::watch::channel(false).0,
        }
    }
}

impl Events {
    /// Sends to every current subscriber; with none, the event is simply
    /// not wanted.
    pub fn send(&self, event: cri::ContainerEventResponse) {
        let _ = self.tx.send(event);
    }

    /// Whether anyone subscribes: an event carries the status of its pod
    /// and of every container in it, which is not worth building for no
    /// one (kubelet subscribes only with its evented PLEG turned on).
    pub fn wanted(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub fn subscribe(&self) -> broadcast::Receiver<cri::ContainerEventResponse> {
        self.tx.subscribe()
    }

    /// Ends every subscription, now and later (the daemon is stopping).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Resolves once [`Self::close`] has been called.
    pub async fn closing(&self) {
        let mut rx = self.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }
}

/// What [`ExitWatcher::next`] reports.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// This container's `exit.json` appeared.
    Container(String),
    /// Events were lost: every watched container must be looked at.
    Rescan,
}

/// One inotify instance watching the directories of live containers.
pub struct ExitWatcher {
    fd: Arc<OwnedFd>,
    /// Watch descriptor → container ID, and back.
    watches: Mutex<(HashMap<i32, String>, HashMap<String, i32>)>,
    /// Set once nothing reads the inotify instance any more.
    disabled: std::sync::atomic::AtomicBool,
}

impl ExitWatcher {
    pub fn new() -> std::io::Result<Self> {
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
        Ok(ExitWatcher {
            fd: Arc::new(fd),
            watches: Mutex::new(Default::default()),
            disabled: Default::default(),
        })
    }

    fn watches(&self) -> std::sync::MutexGuard<'_, (HashMap<i32, String>, HashMap<String, i32>)> {
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts watching `dir`, the directory of container `id`, for its exit
    /// file. Call before looking for an exit file that may already be
    /// there, so an exit in between is not missed.
    pub fn watch(&self, id: &str, dir: &Path) -> std::io::Result<()> {
        if self.disabled.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(std::io::Error::other("the exit watcher has stopped"));
        }
        let wd = inotify::add_watch(
            self.fd.as_fd(),
            dir,
            inotify::WatchFlags::MOVED_TO
                | inotify::WatchFlags::CLOSE_WRITE
                | inotify::WatchFlags::ONLYDIR,
        )?;
        let mut w = self.watches();
        w.0.insert(wd, id.to_string());
        w.1.insert(id.to_string(), wd);
        Ok(())
    }

    /// Stops watching a container's directory (before it is removed).
    pub fn unwatch(&self, id: &str) {
        let mut w = self.watches();
        if let Some(wd) = w.1.remove(id) {
            w.0.remove(&wd);
            // The kernel drops the watch itself when the directory goes;
            // an error here only means it already has.
            let _ = inotify::remove_watch(self.fd.as_fd(), wd);
        }
    }

    pub fn is_watched(&self, id: &str) -> bool {
        self.watches().1.contains_key(id)
    }

    /// Forgets every watch and refuses new ones: once nothing reads the
    /// instance, callers must look for exit files themselves.
    pub fn disable(&self) {
        self.disabled
            .store(true, std::sync::atomic::Ordering::Relaxed);
        for id in self.watched() {
            self.unwatch(&id);
        }
    }

    /// The IDs of the containers being watched.
    pub fn watched(&self) -> Vec<String> {
        self.watches().1.keys().cloned().collect()
    }

    /// Waits for the next batch of exits. Errors are those of the inotify
    /// descriptor itself, after which no more exits can be heard.
    pub async fn next(&self, afd: &AsyncFd<Arc<OwnedFd>>) -> std::io::Result<Vec<Exit>> {
        loop {
            let mut guard = afd.readable().await?;
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
            let mut reader = inotify::Reader::new(self.fd.as_fd(), &mut buf);
            let mut out = Vec::new();
            loop {
                match reader.next() {
                    Ok(ev) => {
                        if ev.events().contains(inotify::ReadFlags::QUEUE_OVERFLOW) {
                            out.push(Exit::Rescan);
                            continue;
                        }
                        let named_exit = ev
                            .file_name()
                            .is_some_and(|n| n.to_bytes() == EXIT_FILE.as_bytes());
                        if !named_exit {
                            continue;
                        }
                        if let Some(id) = self.watches().0.get(&ev.wd()) {
                            out.push(Exit::Container(id.clone()));
                        }
                    }
                    Err(rustix::io::Errno::AGAIN) => {
                        guard.clear_ready();
                        break;
                    }
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }

    /// The descriptor registered with the tokio reactor, for [`Self::next`].
    pub fn async_fd(&self) -> std::io::Result<AsyncFd<Arc<OwnedFd>>> {
        // SAFETY: the descriptor is an OwnedFd kept alive by the Arc the
        // AsyncFd holds, and an Arc<OwnedFd> always yields that same fd.
        unsafe { AsyncFd::register_with_interest(self.fd.clone(), tokio::io::Interest::READABLE) }
            .map_err(std::io::Error::from)
    }
}

impl std::fmt::Debug for ExitWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExitWatcher").finish_non_exhaustive()
    }
}

/// Logs a watch that could not be added: that container's exit is then
/// only noticed when it is next looked at.
pub(crate) fn warn_unwatched(id: &str, e: &std::io::Error) {
    warn!(container = %id, error = %e, "cannot watch the container's exit file; its exit is noticed only when it is next looked at");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn renamed_exit_files_are_heard_and_other_names_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let w = ExitWatcher::new().unwrap();
        let afd = w.async_fd().unwrap();
        w.watch("a", &a).unwrap();
        w.watch("b", &b).unwrap();
        std::fs::write(a.join("other.json"), "{}").unwrap();
        std::fs::write(b.join("exit.tmp"), "{}").unwrap();
        std::fs::rename(b.join("exit.tmp"), b.join("exit.json")).unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), w.next(&afd))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, vec![Exit::Container("b".into())]);

        // An unwatched directory is silent; a watched one still reports.
        w.unwatch("b");
        assert_eq!(w.watched(), vec!["a".to_string()]);
        std::fs::write(b.join("exit.tmp"), "{}").unwrap();
        std::fs::rename(b.join("exit.tmp"), b.join("exit.json")).unwrap();
        std::fs::write(a.join("exit.tmp"), "{}").unwrap();
        std::fs::rename(a.join("exit.tmp"), a.join("exit.json")).unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), w.next(&afd))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, vec![Exit::Container("a".into())]);
    }

    #[tokio::test]
    async fn subscribers_get_events_in_order_and_a_lagging_one_is_told() {
        let ev = Events::default();
        assert!(!ev.wanted());
        let mut rx = ev.subscribe();
        assert!(ev.wanted());
        for i in 0..3 {
            ev.send(cri::ContainerEventResponse {
                container_id: format!("c{i}"),
                ..Default::default()
            });
        }
        for i in 0..3 {
            assert_eq!(rx.recv().await.unwrap().container_id, format!("c{i}"));
        }
        for _ in 0..CAPACITY + 5 {
            ev.send(Default::default());
        }
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(5))
        ));
        drop(rx);
        assert!(!ev.wanted(), "no one left to build events for");
    }
}
