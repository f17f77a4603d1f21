//! The committer: applies the writes queued at a moment one after the other, appends them to
//! the write-ahead log with one write (and one `fdatasync` with `--fsync`), then answers them
//! all (group commit). Writers never contend for sled's transaction lock, and N concurrent
//! requests cost one write to the log.
//!
//! Who commits:
//! - without `--fsync`, the writer that finds nobody committing commits the queue itself, on
//!   its own thread (a tokio worker, for a request): a commit is a few sled inserts and a
//!   `write` to the page cache, and handing it to another thread cost more than the commit
//!   (two context switches and a wake-up per request on a loaded core, ~12% of the server's
//!   CPU at batch 1). Writers arriving meanwhile queue and are committed by it, up to
//!   [`WRITER_ROUNDS`] rounds; a longer queue goes to the committer thread, so no request
//!   waits behind an unbounded stream of others;
//! - with `--fsync`, the committer thread commits everything: an `fdatasync` takes
//!   milliseconds, which must not block a tokio worker, and the requests arriving meanwhile
//!   make the next group.

use std::sync::{Arc, Condvar, Mutex};

use super::{wal, Result, StoreError, WalState};
use std::sync::atomic::Ordering;

/// A write for the committer: checks and prepares itself, and answers what it writes.
pub(super) type WriteJob = Box<dyn FnOnce() -> Result<Logged> + Send>;

/// How a committed write reaches sled.
pub(super) enum Logged {
    /// Already applied by the job, in a sled transaction (writes that read what they update,
    /// such as a connector's totals, and must not lose a concurrent admin update); the payload
    /// is what it wrote; `after` (the search index's hook) runs once the payload is appended,
    /// so the index never has a change the log lacks, and also when the append fails (the
    /// change is in sled: the index follows the store). `if_logged` (deleting the attachment
    /// files of removed items) runs only once the log holds the write: a crash before the
    /// next checkpoint could bring the items back, and their files must still be there.
    Applied {
        payload: wal::Payload,
        after: Option<Hook>,
        if_logged: Option<Hook>,
    },
    /// Applied by the committer with plain inserts after the payload is appended to the log:
    /// the log record, whole or torn, decides whether the write exists after a crash (replay
    /// completes what a checkpoint flushed half of), so no sled transaction is needed.
    Deferred {
        payload: wal::Payload,
        apply: Box<dyn FnOnce(wal::RecordAt) -> Result<()> + Send>,
    },
}

/// What the committer does with a write once its group is appended (or not) to the log.
enum Then {
    /// Already in sled: run its hooks (see [`Logged::Applied`]).
    Applied {
        after: Option<Hook>,
        if_logged: Option<Hook>,
    },
    /// Apply it with this, if the log has it: where its record starts in the appended bytes.
    Deferred(Box<dyn FnOnce(wal::RecordAt) -> Result<()> + Send>, u64),
}

/// What runs after a [`Logged::Applied`] write is appended to the log, before later writes.
pub(crate) type Hook = Box<dyn FnOnce() + Send>;

/// A queued write and who waits for it.
pub(super) struct Job {
    pub(super) write: WriteJob,
    pub(super) reply: tokio::sync::oneshot::Sender<Result<()>>,
    /// The span of the request it writes for: the committer logs inside it, so its lines
    /// carry the request's correlation id.
    pub(super) span: tracing::Span,
}

/// Rounds of commits a writer runs for the queue before it hands it to the committer thread.
const WRITER_ROUNDS: usize = 4;

/// The queue of writes and who commits it.
pub(super) struct Committer {
    queue: Mutex<Queue>,
    /// Wakes the committer thread when it is to commit (or the store closes).
    wake: Condvar,
    wal: Arc<WalState>,
    /// Writers commit the queue themselves (no `--fsync`).
    inline: bool,
    /// The log frames of a commit, reused (only the one committing uses it).
    framed: Mutex<Vec<u8>>,
}

struct Queue {
    jobs: Vec<Job>,
    leader: Leader,
    closed: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Leader {
    /// Nobody commits: the next writer does (or wakes the thread).
    Nobody,
    /// A writer commits, on its own thread.
    Writer,
    /// The committer thread commits until the queue is empty.
    Thread,
}

/// Closes the committer when the store goes (its thread then ends).
pub(super) struct CommitterHandle(Arc<Committer>);

impl std::ops::Deref for CommitterHandle {
    type Target = Committer;
    fn deref(&self) -> &Committer {
        &self.0
    }
}

impl Drop for CommitterHandle {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.wake.notify_all();
    }
}

impl Committer {
    /// Starts the committer thread. With `inline`, writers commit themselves (see the module
    /// notes).
    pub(super) fn start(wal: Arc<WalState>, inline: bool) -> CommitterHandle {
        let committer = Arc::new(Committer {
            queue: Mutex::new(Queue {
                jobs: Vec::new(),
                leader: Leader::Nobody,
                closed: false,
            }),
            wake: Condvar::new(),
            wal,
            inline,
            framed: Mutex::new(Vec::new()),
        });
        let thread = committer.clone();
        std::thread::Builder::new()
            .name("store-committer".into())
            .spawn(move || thread.run())
            .expect("spawning the store committer thread");
        CommitterHandle(committer)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `job`; when nobody commits, the caller is to commit the queue ([`Turn::run`],
    /// inline) or the committer thread is woken. `job.reply` gets the outcome either way.
    /// Must not be called while holding the log's lock ([`super::Store::with_committer_paused`]).
    pub(super) fn enqueue(&self, job: Job) -> Result<Option<Turn<'_>>> {
        let mut queue = self.lock();
        if queue.closed {
            return Err(StoreError::Closed);
        }
        queue.jobs.push(job);
        if queue.leader != Leader::Nobody {
            return Ok(None);
        }
        if !self.inline {
            queue.leader = Leader::Thread;
            drop(queue);
            self.wake.notify_one();
            return Ok(None);
        }
        queue.leader = Leader::Writer;
        Ok(Some(Turn {
            committer: self,
            over: false,
        }))
    }

    /// The committer thread: commits whenever it leads, until the store closes.
    fn run(&self) {
        let mut queue = self.lock();
        loop {
            if queue.leader == Leader::Thread {
                if queue.jobs.is_empty() {
                    queue.leader = Leader::Nobody;
                } else {
                    let batch = std::mem::take(&mut queue.jobs);
                    drop(queue);
                    self.commit(batch);
                    queue = self.lock();
                    continue;
                }
            }
            // (Closed: no writer is left, each held the store; nothing is queued.)
            if queue.closed {
                return;
            }
            queue = self.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Commits `batch`: applies each write, appends their log frames with one write, then
    /// answers each.
    fn commit(&self, batch: Vec<Job>) {
        let wal = &*self.wal;
        let mut framed = self.framed.lock().unwrap_or_else(|p| p.into_inner());
        framed.clear();
        let framed = &mut *framed;
        let mut segment = wal.lock();
        let prepared: Vec<_> = batch
            .into_iter()
            .map(|job| {
                let entered = job.span.enter();
                let outcome = (job.write)().map(|logged| match logged {
                    Logged::Applied {
                        payload,
                        after,
                        if_logged,
                    } => {
                        payload.frame_into(framed);
                        Then::Applied { after, if_logged }
                    }
                    Logged::Deferred { payload, apply } => {
                        let start = framed.len() as u64;
                        payload.frame_into(framed);
                        Then::Deferred(apply, start)
                    }
                });
                drop(entered);
                (outcome, job.reply, job.span)
            })
            .collect();
        let appended = segment.append(framed);
        let seq = segment.seq();
        let base = appended.as_ref().map_or(0, |(_, offset)| *offset);
        wal.current.store(seq, Ordering::SeqCst);
        if !framed.is_empty() {
            wal.append_failing
                .store(appended.is_err(), Ordering::SeqCst);
        }
        let answers: Vec<_> = prepared
            .into_iter()
            .map(|(outcome, reply, span)| {
                let _entered = span.enter();
                let answer = match (outcome, &appended) {
                    (Err(e), _) => Err(e),
                    (Ok(Then::Applied { after, if_logged }), Ok(_)) => {
                        if let Some(if_logged) = if_logged {
                            if_logged();
                        }
                        if let Some(after) = after {
                            after();
                        }
                        Ok(())
                    }
                    (Ok(Then::Deferred(apply, start)), Ok(_)) => {
                        let at = wal::RecordAt {
                            seq,
                            offset: base + start,
                        };
                        apply(at).map_err(|e| {
                            // Logged but maybe half applied: the log must stay live.
                            wal.failed_from.fetch_min(seq, Ordering::SeqCst);
                            tracing::error!(error = %e, "a logged write could not be applied: the log is kept until a restart replays it");
                            StoreError::OutcomeUnknown(format!(
                                "logged, not applied ({e}); a restart completes it"
                            ))
                        })
                    }
                    (Ok(Then::Applied { after, .. }), Err(e)) => {
                        // In sled already (its transaction committed) but not in the
                        // log: the next checkpoint keeps it. Index it too, so the
                        // search index agrees with the store, and say so.
                        tracing::error!(error = %e, "a write applied to the store could not be logged");
                        if let Some(after) = after {
                            after();
                        }
                        Err(StoreError::OutcomeUnknown(format!(
                            "applied, not logged ({e})"
                        )))
                    }
                    (Ok(Then::Deferred(..)), Err(e)) => Err(StoreError::Log(e.to_string())),
                };
                (answer, reply)
            })
            .collect();
        drop(segment);
        for (answer, reply) in answers {
            let _ = reply.send(answer);
        }
        if framed.capacity() > 4 * 1024 * 1024 {
            *framed = Vec::new();
        }
    }
}

/// A writer's turn at committing the queue. Whatever ends it (its rounds, a panic in a write,
/// or the writer's task being dropped before it ran), the queue does not stay with a leader
/// that is gone.
pub(super) struct Turn<'a> {
    committer: &'a Committer,
    /// The queue was empty: the writer stood down.
    over: bool,
}

impl Turn<'_> {
    /// Commits the queue, up to [`WRITER_ROUNDS`] times while writes keep arriving; then
    /// hands what is left to the committer thread.
    pub(super) fn run(mut self) {
        for _ in 0..WRITER_ROUNDS {
            let Some(batch) = self.next_batch() else {
                return;
            };
            self.committer.commit(batch);
        }
    }

    /// The queued writes, or none (the turn is over) when the queue is empty.
    fn next_batch(&mut self) -> Option<Vec<Job>> {
        let mut queue = self.committer.lock();
        if queue.jobs.is_empty() {
            queue.leader = Leader::Nobody;
            self.over = true;
            return None;
        }
        Some(std::mem::take(&mut queue.jobs))
    }
}

impl Drop for Turn<'_> {
    /// After its rounds (or a panic in a write), a writer hands what is queued to the
    /// committer thread.
    fn drop(&mut self) {
        if self.over {
            return;
        }
        let mut queue = self.committer.lock();
        queue.leader = if queue.jobs.is_empty() {
            Leader::Nobody
        } else {
            Leader::Thread
        };
        drop(queue);
        self.committer.wake.notify_one();
    }
}
