//! Mutating RPCs that outlive their callers, and the answer a retry gets.
//!
//! Kubelet gives every CRI call a deadline (2 min for RunPodSandbox, less
//! for others) and the client may hang up at any moment; tonic then drops
//! the handler's future wherever it was suspended. A half-run
//! `RunPodSandbox` would keep its name with a pod nobody can see, and a CNI
//! plugin killed in the middle of ADD would leave an address allocated. So
//! every mutation runs in a task of its own ([`detached`]) and always ends
//! in its own success or its own rollback.
//!
//! A caller that gave up then retries with the very same request. For the
//! calls that create something named (`RunPodSandbox`, `CreateContainer`)
//! or move it forward (`StartContainer`), [`Replays`] remembers recent
//! requests and what they made; an identical request, whether it comes
//! while the first still runs or after it ended, gets that answer as if its
//! first call had not been cut. The daemon cannot tell a cut caller from
//! one that got its answer (the answer may be lost on the way, and a reset
//! stream is read after the next request), so it does not try: creating
//! the same object with the same request is answered with the same object
//! while that object exists. A different request for the same name meets
//! the usual `AlreadyExists`, and a failed attempt is not replayed (it
//! rolled back; the retry starts afresh).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tonic::Status;

/// Runs a mutation to its end whatever happens to the caller.
pub async fn detached<T, F>(what: &'static str, fut: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: Future<Output = Result<T, Status>> + Send + 'static,
{
    match tokio::spawn(fut).await {
        Ok(r) => r,
        Err(e) => Err(Status::internal(format!("{what}: the task ended: {e}"))),
    }
}

/// How long the answer of a finished call is kept for a retry. Kubelet
/// retries within its next sync (seconds to a minute); after this the
/// object stays, as with containerd, for kubelet to find in a list.
const KEEP: Duration = Duration::from_secs(600);

/// Finished answers kept at most, by count and by the size of their
/// requests (a hostile client's large pod specs must not pile up); the
/// oldest go first. Calls in flight are not counted: they are bounded by
/// the calls the socket admits.
const MAX_KEPT: usize = 1024;
const MAX_KEPT_BYTES: usize = 16 << 20;

/// `None` while the attempt runs; then the ID it made, or `None` if it
/// failed.
type Outcome = Option<Option<String>>;

struct Slot<R> {
    request: R,
    /// The request's encoded size, for [`MAX_KEPT_BYTES`].
    size: usize,
    finished_at: Option<Instant>,
    outcome: watch::Receiver<Outcome>,
    /// Tells a slot from a later one under the same key.
    serial: u64,
}

struct Table<R> {
    slots: HashMap<String, Slot<R>>,
    serial: u64,
}

impl<R> Table<R> {
    fn remove_if(&mut self, key: &str, serial: u64) {
        if self.slots.get(key).is_some_and(|s| s.serial == serial) {
            self.slots.remove(key);
        }
    }
}

/// Recent requests and their answers, per key (a pod's or a container's
/// name, or a container's ID).
pub struct Replays<R> {
    table: Arc<Mutex<Table<R>>>,
}

impl<R> Default for Replays<R> {
    fn default() -> Self {
        Replays {
            table: Arc::new(Mutex::new(Table {
                slots: HashMap::new(),
                serial: 0,
            })),
        }
    }
}

/// What a caller does with its request.
pub enum Claim<R> {
    /// Run it, and record the outcome.
    Run(Recorder<R>),
    /// Run it without a record: a different request for the same key is
    /// under way or made something, so the usual checks decide.
    Untracked,
    /// An identical request made this object.
    Replay(String),
}

/// Writes the outcome of an attempt, even one whose caller went away.
pub struct Recorder<R> {
    table: Arc<Mutex<Table<R>>>,
    key: String,
    serial: u64,
    tx: watch::Sender<Outcome>,
}

impl<R> Recorder<R> {
    pub fn record<E>(self, result: &Result<String, E>) {
        let made = result.as_ref().ok().cloned();
        if let Ok(mut t) = self.table.lock() {
            if made.is_none() {
                // Rolled back: nothing to hand a retry.
                t.remove_if(&self.key, self.serial);
            } else if let Some(s) = t.slots.get_mut(&self.key) {
                if s.serial == self.serial {
                    s.finished_at = Some(Instant::now());
                }
            }
        }
        self.tx.send_replace(Some(made));
    }
}

impl<R: PartialEq + Clone> Replays<R> {
    /// Looks the request up. `exists` tells whether an object an earlier
    /// attempt made is still there (it may have been removed since).
    pub async fn claim(
        &self,
        key: &str,
        request: &R,
        size: usize,
        exists: impl Fn(&str) -> bool,
    ) -> Claim<R> {
        loop {
            let (mut outcome, serial) = {
                let Ok(mut t) = self.table.lock() else {
                    return Claim::Untracked;
                };
                expire(&mut t, Instant::now());
                match t.slots.get(key) {
                    Some(s) if s.request == *request => (s.outcome.clone(), s.serial),
                    Some(_) => return Claim::Untracked,
                    None => {
                        t.serial += 1;
                        let serial = t.serial;
                        let (tx, rx) = watch::channel(None);
                        t.slots.insert(
                            key.to_string(),
                            Slot {
                                request: request.clone(),
                                size,
                                finished_at: None,
                                outcome: rx,
                                serial,
                            },
                        );
                        return Claim::Run(Recorder {
                            table: self.table.clone(),
                            key: key.to_string(),
                            serial,
                            tx,
                        });
                    }
                }
            };
            // The identical attempt may still be running: its answer is
            // this one's.
            let made = match outcome.wait_for(|o| o.is_some()).await {
                Ok(o) => o.clone().flatten(),
                Err(_) => None,
            };
            match made {
                Some(id) if exists(&id) => return Claim::Replay(id),
                // It failed and rolled back, or its object is gone since: a
                // fresh attempt.
                _ => {
                    if let Ok(mut t) = self.table.lock() {
                        t.remove_if(key, serial);
                    }
                }
            }
        }
    }
}

impl<R> Replays<R> {
    /// Drops what is kept for objects that are gone: answers naming
    /// `removed`, and keys `forget_key` picks. Keeps a long soak of
    /// create-and-remove cycles from holding requests until they expire.
    pub fn forget(&self, removed: &[String], forget_key: impl Fn(&str) -> bool) {
        let Ok(mut t) = self.table.lock() else {
            return;
        };
        t.slots.retain(|key, s| {
            if s.finished_at.is_none() {
                return true;
            }
            let answer = s.outcome.borrow().clone().flatten();
            !(forget_key(key) || answer.is_some_and(|a| removed.contains(&a)))
        });
    }
}

fn expire<R>(t: &mut Table<R>, now: Instant) {
    t.slots.retain(|_, s| {
        s.finished_at
            .is_none_or(|at| now.duration_since(at) <= KEEP)
    });
    let mut finished: Vec<(Instant, String, usize)> = t
        .slots
        .iter()
        .filter_map(|(k, s)| s.finished_at.map(|at| (at, k.clone(), s.size)))
        .collect();
    let mut bytes: usize = finished.iter().map(|f| f.2).sum();
    let mut count = finished.len();
    if count <= MAX_KEPT && bytes <= MAX_KEPT_BYTES {
        return;
    }
    finished.sort();
    for (_, k, size) in finished {
        if count <= MAX_KEPT && bytes <= MAX_KEPT_BYTES {
            break;
        }
        t.slots.remove(&k);
        count -= 1;
        bytes -= size;
    }
}

/// Runs a creating call: a replayed answer, or the attempt in its own task
/// with its outcome recorded for a retry.
pub async fn run_once<R, F, Fut>(
    replays: &Replays<R>,
    what: &'static str,
    key: &str,
    request: &R,
    size: usize,
    exists: impl Fn(&str) -> bool,
    attempt: F,
) -> Result<String, Status>
where
    R: PartialEq + Clone + Send + 'static,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<String, Status>> + Send + 'static,
{
    let recorder = match replays.claim(key, request, size, exists).await {
        Claim::Replay(id) => {
            tracing::info!(key, id = %id, "{what}: an identical request made it; answering with it");
            return Ok(id);
        }
        Claim::Untracked => None,
        Claim::Run(r) => Some(r),
    };
    let fut = attempt();
    detached(what, async move {
        let r = fut.await;
        if let Some(rec) = recorder {
            rec.record(&r);
        }
        r
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn always(_: &str) -> bool {
        true
    }

    #[tokio::test]
    async fn an_identical_request_gets_the_same_object_a_different_one_does_not() {
        let r: Replays<u32> = Replays::default();
        let runs = AtomicUsize::new(0);
        for _ in 0..2 {
            let id = run_once(&r, "t", "k", &1, 4, always, || {
                runs.fetch_add(1, Ordering::SeqCst);
                async { Ok("a".to_string()) }
            })
            .await
            .unwrap();
            assert_eq!(id, "a");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the second was answered");
        assert!(matches!(
            r.claim("k", &2, 4, always).await,
            Claim::Untracked
        ));
        // Once the object is gone, the same request makes a new one.
        let id = run_once(
            &r,
            "t",
            "k",
            &1,
            4,
            |_| false,
            || async { Ok("b".to_string()) },
        )
        .await
        .unwrap();
        assert_eq!(id, "b");
    }

    #[tokio::test]
    async fn a_cut_attempt_finishes_and_its_retry_gets_the_answer() {
        let r: Arc<Replays<u32>> = Arc::new(Replays::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let first = {
            let r = r.clone();
            let runs = runs.clone();
            tokio::spawn(async move {
                run_once(&r, "t", "k", &7, 4, always, move || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let _ = go_rx.await;
                    Ok("made".to_string())
                })
                .await
            })
        };
        while runs.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // The caller is cut while the attempt runs.
        first.abort();
        let _ = first.await;
        let retry = {
            let r = r.clone();
            let runs = runs.clone();
            tokio::spawn(async move {
                run_once(&r, "t", "k", &7, 4, always, move || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok("second".to_string())
                })
                .await
            })
        };
        tokio::task::yield_now().await;
        go_tx.send(()).unwrap();
        assert_eq!(retry.await.unwrap().unwrap(), "made");
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "the retry ran nothing itself"
        );
    }

    #[tokio::test]
    async fn removed_objects_are_forgotten() {
        let r: Replays<u32> = Replays::default();
        for (key, id) in [("pod/a", "1"), ("pod/b", "2"), ("other/c", "3")] {
            run_once(&r, "t", key, &0, 4, always, move || async move {
                Ok(id.to_string())
            })
            .await
            .unwrap();
        }
        r.forget(&["3".to_string()], |k| k.starts_with("pod/a"));
        let left: Vec<String> = r.table.lock().unwrap().slots.keys().cloned().collect();
        assert_eq!(left, ["pod/b"]);
    }

    #[tokio::test]
    async fn a_failed_attempt_is_not_replayed() {
        let r: Replays<u32> = Replays::default();
        let Claim::Run(rec) = r.claim("k", &1, 4, always).await else {
            panic!("the first claim runs")
        };
        rec.record::<()>(&Err(()));
        assert!(matches!(r.claim("k", &1, 4, always).await, Claim::Run(_)));
    }

    #[tokio::test]
    async fn a_waiting_retry_of_a_failed_attempt_runs_afresh() {
        let r: Arc<Replays<u32>> = Arc::new(Replays::default());
        let Claim::Run(rec) = r.claim("k", &1, 4, always).await else {
            panic!("the first claim runs")
        };
        let second = {
            let r = r.clone();
            tokio::spawn(async move { matches!(r.claim("k", &1, 4, always).await, Claim::Run(_)) })
        };
        tokio::task::yield_now().await;
        rec.record::<()>(&Err(()));
        assert!(second.await.unwrap());
    }

    #[tokio::test]
    async fn detached_work_finishes_when_its_caller_is_dropped() {
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let caller = tokio::spawn(detached("t", async move {
            let _ = rx.await;
            d.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Status>(())
        }));
        tokio::task::yield_now().await;
        caller.abort();
        let _ = caller.await;
        tx.send(()).unwrap();
        for _ in 0..100 {
            if done.load(Ordering::SeqCst) == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the detached work did not finish");
    }

    fn finished_table(n: usize, size: usize, at: Instant) -> Table<u32> {
        let mut t = Table {
            slots: HashMap::new(),
            serial: 0,
        };
        for i in 0..n {
            let (_tx, rx) = watch::channel(Some(Some(format!("{i}"))));
            t.slots.insert(
                format!("k{i}"),
                Slot {
                    request: 0,
                    size,
                    finished_at: Some(at + Duration::from_millis(i as u64)),
                    outcome: rx,
                    serial: i as u64,
                },
            );
        }
        t
    }

    #[test]
    fn kept_answers_are_bounded_by_count_bytes_and_age() {
        let now = Instant::now();
        let mut t = finished_table(MAX_KEPT + 10, 1, now);
        expire(&mut t, now);
        assert_eq!(t.slots.len(), MAX_KEPT);
        assert!(!t.slots.contains_key("k0"), "the oldest go first");

        let mut t = finished_table(20, MAX_KEPT_BYTES / 10, now);
        expire(&mut t, now);
        assert_eq!(t.slots.len(), 10);

        let mut t = finished_table(5, 1, now);
        expire(&mut t, now + KEEP + Duration::from_secs(1));
        assert!(t.slots.is_empty());
    }
}
