//! The full-text index (tantivy) behind Content Search.
//!
//! Layout: one tantivy document per *item*, with its copies as two aligned multi-valued fields
//! (`mailbox`, lower-case, indexed and a fast field; `folder`, stored). An item with copies in
//! many mailboxes (a chat's participants) is tokenized once, not once per copy. A hit is still a
//! copy: a search counts, per matching item, its copies in the searched mailboxes (from the
//! `mailbox` fast field, without loading documents), orders the items newest received first and
//! loads only the documents of the requested page. Deleting an item deletes its document by the
//! `id` term; an item that loses copies is re-added as it now is.
//!
//! Writing: one indexer thread owns the `IndexWriter` and applies a queue of operations in
//! the order they were sent. The store's committer sends each ingestion's items and each admin
//! change right after applying it, in log order ([`crate::search::indexer`],
//! [`crate::search::on_items_changed`]); sending costs it a channel send, not indexing.
//! - **When:** while ingestion requests are in flight (the endpoint holds
//!   [`Shared::hold_off`] for each), the queue waits. The indexer applies it once none has
//!   been for [`QUIET`], [`QUIET_CHUNK`] items at a time, and commits every [`COMMIT_EVERY`]
//!   while something is uncommitted and ingestion is quiet. So under load the
//!   CPU goes to acknowledging requests; indexing (and its commits, tens of ms) runs in the
//!   gaps and after the load. Past [`MAX_BACKLOG`] items queued, it works during the load
//!   too, so a load that never pauses does not grow the queue, the log kept for the index
//!   or the first search's wait without bound.
//! - **A search waits for nothing it should see:** it queues a sync and waits for the indexer
//!   to apply everything queued before it, commit and reload (commit-on-read), so an
//!   acknowledged item is always found. A search during a long load pays for the backlog.
//! - **Memory:** queued item records are bounded by [`QUEUE_BUDGET`]; past it, items are
//!   queued by id and read back from the store when indexed.
//!
//! Consistency with the store (crash safety):
//! - a commit records, as `logFrom`, the log segment being written when the commit began,
//!   after which it took every op sent: every write logged in an older segment is in it (a
//!   commit made with ops still waiting records the segment of the first of them). The
//!   store keeps the checkpointed segments from `logFrom` on (retired, never replayed) until
//!   the next commit;
//! - at start-up, serving starts at once; in the background, the items the kept segments name
//!   (written after the last commit: a crash) are re-indexed from the store, or, when the index
//!   is missing, unreadable, of another schema version or has no `logFrom` (a rebuild was cut
//!   off), every item is. Searches wait until that is done. No scan of the store at start-up.

use std::collections::VecDeque;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tantivy::collector::{Collector, DocSetCollector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::directory::MmapDirectory;
use tantivy::indexer::UserOperation;
use tantivy::query::{
    AllQuery, BooleanQuery, EmptyQuery, Occur, PhrasePrefixQuery, PhraseQuery, Query, RangeQuery,
    RegexQuery, TermQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, Value, FAST, INDEXED, STORED, STRING, TEXT,
};
use tantivy::{
    DocAddress, DocId, Index, IndexReader, IndexWriter, ReloadPolicy, Score, SegmentOrdinal,
    SegmentReader, TantivyDocument, Term,
};
use tracing::{error, info, warn};
use uuid::Uuid;

use super::kql::{DateField, Expr, TextField};
use crate::store::model::ItemRecord;
use crate::store::Store;

/// Bump when the schema or what is indexed changes: the index is then rebuilt.
const SCHEMA_VERSION: &str = "4";
/// Memory budget of the index writer (one indexing thread).
const WRITER_BUDGET: usize = 20_000_000;
/// How often the indexer commits while something is uncommitted (and ingestion is quiet).
pub const COMMIT_EVERY: Duration = Duration::from_secs(2);
/// How long no ingestion request must have been in flight before the indexer applies its
/// queue (a search, or a catch-up, never waits for that).
const QUIET: Duration = Duration::from_millis(5);
/// Items the indexer applies between two looks at whether ingestion is still quiet.
const QUIET_CHUNK: usize = 64;
/// Items the queue may hold before the indexer works while ingestion is in flight too: under
/// a load that never pauses, the queue (and the log kept for the index) would otherwise grow
/// with the data, and so would the first search's wait (~5 s for this many items).
const MAX_BACKLOG: usize = 250_000;
/// Estimated bytes of item records the queue holds; past it, new items are queued by id and
/// read back from the store when indexed (one read of the log record per request, for items
/// stored as a group). 32 MB held ~36 MB more at the peak than queuing every item by id, for
/// no gain in ingestion throughput (measured with `ingest-bench`, batch 1 to 100).
const QUEUE_BUDGET: usize = 8 << 20;
/// Documents handed to tantivy between two commits at most. tantivy's indexing thread takes
/// them from a channel of 10,000 batches, which a backlog fills far faster than it tokenizes:
/// a commit waits for it to empty (a backlog of 170,000 items took 200 MB more without this).
const COMMIT_DOCS: usize = 8_192;
/// Chunks a catch-up sends before it waits for the indexer to take them.
const CATCH_UP_AHEAD: usize = 8;
/// How long a search waits for the start-up catch-up (or rebuild) before it gives up.
const READY_WAIT: Duration = Duration::from_secs(60);
/// Items a catch-up or rebuild reads per pause of the store's committer.
const CATCH_UP_CHUNK: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("search index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("search index: {0}")]
    Io(#[from] std::io::Error),
    #[error("search index: {0}")]
    Directory(#[from] tantivy::directory::error::OpenDirectoryError),
    #[error("search index rebuild: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("the search index is still being brought up to date after start-up; retry")]
    NotReady,
    #[error("search index: {0}")]
    Indexer(String),
    #[error("the search index is shut down")]
    Stopped,
}

pub type Result<T> = std::result::Result<T, IndexError>;

#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    tenant: Field,
    mailbox: Field,
    folder: Field,
    kind: Field,
    itemclass: Field,
    class_sent: Field,
    class_searched: Field,
    subject: Field,
    body: Field,
    from: Field,
    to: Field,
    cc: Field,
    bcc: Field,
    participants: Field,
    /// Whole addresses (lower case, not split into words), for `from:a@b.c` and the like:
    /// the words of `bob@contoso.com` are also in `jim.bob@contoso.com`.
    from_address: Field,
    to_address: Field,
    cc_address: Field,
    bcc_address: Field,
    participant_address: Field,
    attachmentnames: Field,
    hasattachment: Field,
    sent: Field,
    received: Field,
    sender: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let date = INDEXED | FAST | STORED;
    let fields = Fields {
        id: b.add_text_field("id", STRING | STORED),
        tenant: b.add_text_field("tenant", STRING),
        mailbox: b.add_text_field("mailbox", STRING | FAST | STORED),
        folder: b.add_text_field("folder", STORED),
        kind: b.add_text_field("kind", STRING),
        itemclass: b.add_text_field("itemclass", STRING),
        class_sent: b.add_text_field("class_sent", STORED),
        class_searched: b.add_text_field("class_searched", STORED),
        subject: b.add_text_field("subject", TEXT | STORED),
        body: b.add_text_field("body", TEXT),
        from: b.add_text_field("from", TEXT),
        to: b.add_text_field("to", TEXT),
        cc: b.add_text_field("cc", TEXT),
        bcc: b.add_text_field("bcc", TEXT),
        participants: b.add_text_field("participants", TEXT),
        from_address: b.add_text_field("from_address", STRING),
        to_address: b.add_text_field("to_address", STRING),
        cc_address: b.add_text_field("cc_address", STRING),
        bcc_address: b.add_text_field("bcc_address", STRING),
        participant_address: b.add_text_field("participant_address", STRING),
        attachmentnames: b.add_text_field("attachmentnames", TEXT),
        hasattachment: b.add_text_field("hasattachment", STRING),
        sent: b.add_i64_field("sent", date.clone()),
        received: b.add_i64_field("received", date),
        sender: b.add_text_field("sender", STORED),
    };
    (b.build(), fields)
}

/// One hit: a copy of an item in a mailbox folder.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Hit {
    pub item_id: Uuid,
    pub mailbox: String,
    pub folder: String,
    pub subject: Option<String>,
    pub item_class: String,
    pub searched_item_class: String,
    pub sent: chrono::DateTime<chrono::Utc>,
    pub received: chrono::DateTime<chrono::Utc>,
    pub sender: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Results {
    pub total: usize,
    pub hits: Vec<Hit>,
}

/// Where the start-up catch-up is.
#[derive(Debug, Clone, Copy)]
enum Catching {
    /// Re-indexing every stored item.
    Everything,
    /// Re-indexing the items named by the log from this segment on.
    Since(u64),
    Done,
    /// The catch-up (or rebuild) failed: searches go on (they may miss items), commits record
    /// no `logFrom`, so the next start rebuilds the index, and the store keeps no log for it.
    Failed,
}

/// The payload of an index commit.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    /// The first log segment whose writes this commit may lack; absent during a rebuild.
    log_from: Option<u64>,
}

/// The shared part of the index: what searches read and what the indexer thread and the
/// catch-up use.
pub struct Shared {
    index: Index,
    reader: IndexReader,
    fields: Fields,
    store: Store,
    /// What commits record as `logFrom`: `None` while a rebuild runs (a crash redoes it), the
    /// segment a catch-up started from while it runs, then the store's current segment.
    state: Mutex<Catching>,
    ready: std::sync::Condvar,
    /// Bumped whenever items are sent to be indexed (for `search/wait`).
    changes: tokio::sync::watch::Sender<u64>,
    /// Estimated bytes of the item records waiting in the queue (see [`QUEUE_BUDGET`]).
    queued_bytes: AtomicUsize,
    /// Items (added or changed) waiting in the queue.
    queued_items: AtomicUsize,
    /// [`QUEUE_BUDGET`] (smaller in tests).
    queue_budget: AtomicUsize,
    /// [`COMMIT_DOCS`] (smaller in tests).
    commit_docs: AtomicUsize,
    /// [`MAX_BACKLOG`] (smaller in tests).
    max_backlog: AtomicUsize,
    /// Commits since the index was opened.
    commits: AtomicU64,
    /// Ingestion requests being answered ([`Shared::hold_off`]).
    in_flight: AtomicUsize,
    /// When the last of them ended, in microseconds since `epoch`.
    last_end: AtomicU64,
    epoch: Instant,
}

/// The full-text index. Writes go to one indexer thread, in log order, through a queue (see
/// the module notes); searches read the committed index.
pub struct SearchIndex {
    shared: Arc<Shared>,
    ops: Option<mpsc::Sender<Queued>>,
    indexer: Option<std::thread::JoinHandle<()>>,
}

impl std::ops::Deref for SearchIndex {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Drop for SearchIndex {
    /// Stops the indexer thread and waits for it (it may be writing index files).
    fn drop(&mut self) {
        self.ops.take();
        if let Some(indexer) = self.indexer.take() {
            indexer.thread().unpark();
            let _ = indexer.join();
        }
    }
}

/// What the indexer thread is asked to do, applied in the order sent. The store's committer
/// sends ingestions and admin changes in log order (from its hooks), and a catch-up sends its
/// chunks while the committer is paused, so the order of the queue is the order of the store.
enum Op {
    /// New items (an ingestion), as they were written; `usize` is their share of
    /// [`QUEUE_BUDGET`].
    Add(Vec<ItemRecord>, usize),
    /// New items sent while the queue was over its budget: read back from the store.
    AddStored(Vec<Uuid>),
    /// The documents of `ids` become `items`, read from the store when the op was sent (an id
    /// without an item loses its document): an admin change, or a catch-up chunk.
    Replace {
        ids: Vec<Uuid>,
        items: Vec<ItemRecord>,
    },
    /// Every document goes (a rebuild starts).
    DeleteAll,
    /// Answered once every op sent before it is handed to tantivy (a catch-up's pace).
    Barrier(mpsc::SyncSender<()>),
    /// Answered once every op sent before it is committed and searchable.
    Sync(mpsc::SyncSender<std::result::Result<(), String>>),
    /// The catch-up is done: commit with the current segment as `logFrom`, open searches.
    CaughtUp(mpsc::SyncSender<std::result::Result<(), String>>),
}

impl Op {
    /// Someone waits for it: the indexer does not wait for ingestion to be quiet.
    fn waited_for(&self) -> bool {
        matches!(self, Op::Barrier(_) | Op::Sync(_) | Op::CaughtUp(_))
    }

    /// It changes documents (what a commit's `logFrom` must cover).
    fn changes_items(&self) -> bool {
        matches!(self, Op::Add(..) | Op::AddStored(_) | Op::Replace { .. })
    }
}

/// An op in the queue, with the log segment being written when it was sent: for an op the
/// committer sends, the segment that logged its write.
struct Queued {
    op: Op,
    segment: u64,
}

/// The estimated memory of an item record in the queue.
fn queued_size(item: &ItemRecord) -> usize {
    let addresses = 1 + item.to.len() + item.cc.len() + item.bcc.len() + item.copies.len();
    512 + item.subject.as_ref().map_or(0, String::len)
        + item.body.as_ref().map_or(0, String::len)
        + 96 * addresses
        + 64 * item.attachments.len()
}

impl SearchIndex {
    /// Opens the index in `dir` (created when missing), starts the indexer thread and starts
    /// bringing the index up to date with `store` in the background (see the module notes).
    pub fn open(dir: &Path, store: &Store) -> Result<Arc<SearchIndex>> {
        let (schema, fields) = schema();
        let version_file = dir.join("schema-version");
        let version_ok = std::fs::read_to_string(&version_file)
            .map(|v| v.trim() == SCHEMA_VERSION)
            .unwrap_or(false);
        if !version_ok && dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        let mut fresh = !version_ok;
        let index = match Index::open_or_create(MmapDirectory::open(dir)?, schema.clone()) {
            Ok(index) => index,
            Err(e) => {
                warn!(error = %e, "the search index cannot be opened: recreating it");
                std::fs::remove_dir_all(dir)?;
                std::fs::create_dir_all(dir)?;
                fresh = true;
                Index::create_in_dir(dir, schema)?
            }
        };
        // Every text field is analysed by our word breaker (tokenizers are not stored with
        // the index: registered at each open).
        index
            .tokenizers()
            .register("default", super::words::analyzer());
        std::fs::write(&version_file, SCHEMA_VERSION)?;
        let log_from = if fresh {
            None
        } else {
            index
                .load_metas()?
                .payload
                .as_deref()
                .and_then(|p| serde_json::from_str::<Payload>(p).ok())
                .and_then(|p| p.log_from)
        };
        let writer = index.writer_with_num_threads(1, WRITER_BUDGET)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let (changes, _) = tokio::sync::watch::channel(0);
        let catching = match log_from {
            Some(from) => Catching::Since(from),
            None => Catching::Everything,
        };
        let shared = Arc::new(Shared {
            index,
            reader,
            fields,
            store: store.clone(),
            state: Mutex::new(catching),
            ready: std::sync::Condvar::new(),
            changes,
            queued_bytes: AtomicUsize::new(0),
            queued_items: AtomicUsize::new(0),
            queue_budget: AtomicUsize::new(QUEUE_BUDGET),
            commit_docs: AtomicUsize::new(COMMIT_DOCS),
            max_backlog: AtomicUsize::new(MAX_BACKLOG),
            commits: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            last_end: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        let (ops, received) = mpsc::channel();
        let indexer = Indexer {
            shared: shared.clone(),
            writer,
            ops: received,
            backlog: VecDeque::new(),
            waited_for: 0,
            dirty: false,
            uncommitted_docs: 0,
            committed_from: log_from,
            last_commit: Instant::now(),
        };
        let indexer = std::thread::Builder::new()
            .name("search-indexer".into())
            .spawn(move || indexer.run())?;
        let search = Arc::new(SearchIndex {
            shared,
            ops: Some(ops),
            indexer: Some(indexer),
        });
        // Segments from here on are fed by the committer; the catch-up covers the older ones.
        let until = store.log_segment();
        let worker = search.clone();
        std::thread::Builder::new()
            .name("search-catch-up".into())
            .spawn(move || {
                let outcome = match catching {
                    Catching::Since(from) => worker.catch_up(from, until),
                    _ => worker.rebuild(),
                };
                if let Err(e) = outcome {
                    error!(error = %e, "bringing the search index up to date failed: searches may miss items until a restart rebuilds it");
                    worker.set_state(Catching::Failed);
                    if let Err(e) = worker.store.index_committed(u64::MAX) {
                        error!(error = %e, "releasing the log kept for the search index failed");
                    }
                }
            })?;
        Ok(search)
    }

    /// Queues `op` for the indexer thread; `wake` when someone waits for it (the indexer may
    /// be waiting for ingestion to be quiet).
    fn send(&self, op: Op, wake: bool) -> Result<()> {
        let segment = self.store.log_segment();
        let sent = self
            .ops
            .as_ref()
            .is_some_and(|ops| ops.send(Queued { op, segment }).is_ok());
        if !sent {
            return Err(IndexError::Stopped);
        }
        if wake {
            if let Some(indexer) = &self.indexer {
                indexer.thread().unpark();
            }
        }
        Ok(())
    }

    /// Re-indexes `ids` from the store, a chunk at a time. Each chunk is read and queued while
    /// the store's committer is paused, so the queue holds every write applied before the
    /// read ahead of the chunk, and every later one after it: the chunk replaces what the
    /// earlier writes added, the later ones apply to what it added.
    fn reindex(&self, ids: &[Uuid]) -> Result<()> {
        for (n, chunk) in ids.chunks(CATCH_UP_CHUNK).enumerate() {
            self.store.with_committer_paused(|| -> Result<()> {
                let items = self.store.items(chunk)?;
                let ids = chunk.to_vec();
                self.queued_items.fetch_add(ids.len(), Ordering::SeqCst);
                self.send(Op::Replace { ids, items }, true)
            })?;
            if n % CATCH_UP_AHEAD == CATCH_UP_AHEAD - 1 {
                self.barrier()?;
            }
        }
        self.barrier()
    }

    /// Waits until the indexer has handed everything sent so far to tantivy.
    fn barrier(&self) -> Result<()> {
        let (done, wait) = mpsc::sync_channel(1);
        self.send(Op::Barrier(done), true)?;
        wait.recv().map_err(|_| IndexError::Stopped)
    }

    /// Sends `op` with a reply channel and waits for the answer.
    fn ask(
        &self,
        op: impl FnOnce(mpsc::SyncSender<std::result::Result<(), String>>) -> Op,
    ) -> Result<()> {
        let (answer, wait) = mpsc::sync_channel(1);
        self.send(op(answer), true)?;
        wait.recv()
            .map_err(|_| IndexError::Stopped)?
            .map_err(IndexError::Indexer)
    }

    /// Re-indexes the items named by log segments `from..until` (written after the index's
    /// last commit), commits, and opens searches.
    fn catch_up(&self, from: u64, until: u64) -> Result<()> {
        let started = Instant::now();
        let ids = self.store.logged_item_ids(from, until)?;
        self.reindex(&ids)?;
        self.ask(Op::CaughtUp)?;
        if !ids.is_empty() {
            info!(
                items = ids.len(),
                seconds = started.elapsed().as_secs_f64(),
                "search index caught up with the store"
            );
        }
        Ok(())
    }

    /// Replaces the whole index with the store's items (the committer goes on sending new ones
    /// meanwhile; searches wait), commits, and opens searches.
    pub fn rebuild(&self) -> Result<()> {
        let started = Instant::now();
        self.set_state(Catching::Everything);
        // Items written from here on come through the queue, after the deletion: the scan
        // stops at the newest item there is now (ids are time-ordered).
        let newest = self
            .store
            .with_committer_paused(|| -> Result<Option<Uuid>> {
                self.send(Op::DeleteAll, true)?;
                Ok(self.store.last_item_id()?)
            })?;
        let mut n = 0u64;
        let mut after = None;
        while let Some(newest) = newest {
            let mut ids = self.store.item_ids_after(after, CATCH_UP_CHUNK)?;
            ids.retain(|id| *id <= newest);
            let Some(last) = ids.last() else {
                break;
            };
            after = Some(*last);
            n += ids.len() as u64;
            self.reindex(&ids)?;
        }
        self.ask(Op::CaughtUp)?;
        info!(
            items = n,
            seconds = started.elapsed().as_secs_f64(),
            "search index rebuilt from the store"
        );
        Ok(())
    }

    /// Queues committed items (run by the store's committer, in log order). They are indexed
    /// when ingestion is quiet, or at once when a search asks.
    pub fn add(&self, items: Vec<ItemRecord>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let size: usize = items.iter().map(queued_size).sum();
        self.queued_items.fetch_add(items.len(), Ordering::SeqCst);
        let queued = self.queued_bytes.fetch_add(size, Ordering::SeqCst);
        let op = if queued + size <= self.queue_budget.load(Ordering::Relaxed) {
            Op::Add(items, size)
        } else {
            self.queued_bytes.fetch_sub(size, Ordering::SeqCst);
            Op::AddStored(items.iter().map(|item| item.id).collect())
        };
        self.send(op, false)?;
        self.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Brings items in step with the store by id (run by the store's committer after an admin
    /// change, in log order): their documents are removed, and those that still exist in the
    /// store (an item that lost copies, e.g. to retention) are added back as they are now.
    pub fn resync(&self, store: &Store, ids: &[Uuid]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let items = store.items(ids)?;
        self.queued_items.fetch_add(ids.len(), Ordering::SeqCst);
        self.send(
            Op::Replace {
                ids: ids.to_vec(),
                items,
            },
            false,
        )
    }

    /// Waits until everything sent before is committed and searchable.
    pub fn refresh(&self) -> Result<()> {
        self.ask(Op::Sync)
    }
}

impl Shared {
    /// What waits in the indexer's queue now.
    pub fn backlog(&self) -> Backlog {
        Backlog {
            items: self.queued_items.load(Ordering::SeqCst),
            bytes: self.queued_bytes.load(Ordering::SeqCst),
        }
    }

    /// Commits since the index was opened.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Number of items (not copies) in the committed index.
    pub fn item_count(&self) -> Result<u64> {
        Ok(self.reader.searcher().num_docs())
    }

    fn set_state(&self, to: Catching) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = to;
        self.ready.notify_all();
    }

    fn catching(&self) -> bool {
        matches!(
            *self.state.lock().unwrap_or_else(|p| p.into_inner()),
            Catching::Everything | Catching::Since(_)
        )
    }

    /// What a commit records as `logFrom` when the store writes `segment`.
    fn log_from(&self, segment: u64) -> Option<u64> {
        match *self.state.lock().unwrap_or_else(|p| p.into_inner()) {
            Catching::Done => Some(segment),
            Catching::Since(from) => Some(from),
            Catching::Everything | Catching::Failed => None,
        }
    }

    /// Until the guard is dropped, an ingestion request is being answered: the indexer's
    /// queue waits (see the module notes). Taken by the ingestion endpoint for each request.
    pub fn hold_off(&self) -> HoldOff<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        HoldOff(self)
    }

    /// How long no ingestion request has been in flight (zero while one is).
    fn quiet_for(&self) -> Duration {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_micros(self.last_end.load(Ordering::SeqCst));
        self.epoch.elapsed().saturating_sub(last)
    }

    /// Waits (up to [`READY_WAIT`]) until the start-up catch-up or rebuild is done.
    pub fn wait_ready(&self) -> Result<()> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (state, _) = self
            .ready
            .wait_timeout_while(state, READY_WAIT, |s| {
                !matches!(s, Catching::Done | Catching::Failed)
            })
            .unwrap_or_else(|p| p.into_inner());
        match *state {
            Catching::Done | Catching::Failed => Ok(()),
            _ => Err(IndexError::NotReady),
        }
    }

    /// A receiver that changes whenever items are sent to be indexed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The document of an item, none when it has no copy left (nothing to find).
    fn document(&self, item: &ItemRecord) -> Option<TantivyDocument> {
        if item.copies.is_empty() {
            return None;
        }
        let f = &self.fields;
        let mut doc = TantivyDocument::default();
        doc.add_text(f.id, item.id.to_string());
        doc.add_text(f.tenant, item.tenant.to_string());
        for copy in &item.copies {
            doc.add_text(f.mailbox, copy.mailbox.to_lowercase());
            doc.add_text(f.folder, &copy.folder);
        }
        doc.add_text(f.kind, item.kind.to_lowercase());
        doc.add_text(f.itemclass, item.item_class.to_lowercase());
        if !item
            .searched_item_class
            .eq_ignore_ascii_case(&item.item_class)
        {
            doc.add_text(f.itemclass, item.searched_item_class.to_lowercase());
        }
        doc.add_text(f.class_sent, &item.item_class);
        doc.add_text(f.class_searched, &item.searched_item_class);
        if let Some(subject) = &item.subject {
            doc.add_text(f.subject, subject);
        }
        if let Some(body) = &item.body {
            let html = item
                .body_type
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case("html"));
            if html {
                doc.add_text(f.body, super::words::html_text(body));
            } else {
                doc.add_text(f.body, body);
            }
        }
        let address = |a: &crate::store::model::AddressRecord| match &a.name {
            Some(name) => format!("{name} {}", a.address),
            None => a.address.clone(),
        };
        let whole = |a: &crate::store::model::AddressRecord| a.address.trim().to_lowercase();
        doc.add_text(f.from, address(&item.from));
        doc.add_text(f.participants, address(&item.from));
        doc.add_text(f.from_address, whole(&item.from));
        doc.add_text(f.participant_address, whole(&item.from));
        if let Some(sender) = &item.sender {
            doc.add_text(f.participants, address(sender));
            doc.add_text(f.participant_address, whole(sender));
        }
        for (field, exact, list) in [
            (f.to, f.to_address, &item.to),
            (f.cc, f.cc_address, &item.cc),
            (f.bcc, f.bcc_address, &item.bcc),
        ] {
            for a in list {
                doc.add_text(field, address(a));
                doc.add_text(f.participants, address(a));
                doc.add_text(exact, whole(a));
                doc.add_text(f.participant_address, whole(a));
            }
        }
        for a in &item.attachments {
            doc.add_text(f.attachmentnames, &a.name);
        }
        doc.add_text(
            f.hasattachment,
            if item.attachments.is_empty() {
                "false"
            } else {
                "true"
            },
        );
        doc.add_i64(f.sent, item.sent.timestamp_micros());
        doc.add_i64(f.received, item.received.timestamp_micros());
        doc.add_text(f.sender, &item.from.address);
        Some(doc)
    }
}

/// What waits in the indexer's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Items added or changed, not handed to tantivy yet.
    pub items: usize,
    /// Estimated bytes of the item records among them (the others are queued by id).
    pub bytes: usize,
}

/// An ingestion request in flight (see [`Shared::hold_off`]).
pub struct HoldOff<'a>(&'a Shared);

impl Drop for HoldOff<'_> {
    fn drop(&mut self) {
        let now = self.0.epoch.elapsed().as_micros() as u64;
        self.0.last_end.store(now, Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The indexer thread: the only user of the `IndexWriter`. It applies the queue in order:
/// at once when someone waits (a search, a catch-up), otherwise only while ingestion is quiet
/// (no request in flight for [`QUIET`]), [`QUIET_CHUNK`] items at a time, so indexing and its commits
/// take the CPU when ingestion does not need it. It commits every [`COMMIT_EVERY`] while
/// something is uncommitted and ingestion is quiet, and whenever a search asks.
struct Indexer {
    shared: Arc<Shared>,
    writer: IndexWriter<TantivyDocument>,
    ops: mpsc::Receiver<Queued>,
    /// Ops received and not applied yet, in order.
    backlog: VecDeque<Queued>,
    /// How many of them someone waits for ([`Op::waited_for`]): the backlog can hold
    /// hundreds of thousands of ops, too many to scan at every wake-up.
    waited_for: usize,
    /// Something was handed to tantivy since the last commit.
    dirty: bool,
    /// Documents handed to tantivy since the last commit (see [`COMMIT_DOCS`]).
    uncommitted_docs: usize,
    /// The `logFrom` of the last commit.
    committed_from: Option<u64>,
    last_commit: Instant,
}

/// Replies owed once the next commit is done.
#[derive(Default)]
struct Owed {
    syncs: Vec<mpsc::SyncSender<std::result::Result<(), String>>>,
    caught_up: Vec<mpsc::SyncSender<std::result::Result<(), String>>>,
}

impl Indexer {
    fn run(mut self) {
        loop {
            if !self.receive() {
                return; // the index was dropped
            }
            let urgent = self.shared.catching() || self.waited_for > 0;
            if urgent {
                self.apply_and_commit();
                continue;
            }
            let quiet = self.shared.quiet_for();
            if !self.backlog.is_empty() {
                let over = self.shared.queued_items.load(Ordering::SeqCst)
                    > self.shared.max_backlog.load(Ordering::Relaxed);
                if quiet >= QUIET || over {
                    let mut owed = Owed::default();
                    self.apply(QUIET_CHUNK, &mut owed);
                } else {
                    // Woken early by anyone who waits for an op (`SearchIndex::send`).
                    std::thread::park_timeout(QUIET - quiet);
                }
                continue;
            }
            let wait = if self.dirty {
                let due = COMMIT_EVERY.saturating_sub(self.last_commit.elapsed());
                if due.is_zero() && quiet >= QUIET {
                    self.commit_and_answer(Owed::default());
                    continue;
                }
                Some(due.max(QUIET.saturating_sub(quiet)))
            } else {
                None
            };
            let op = match wait {
                Some(wait) => match self.ops.recv_timeout(wait) {
                    Ok(op) => Some(op),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                },
                None => match self.ops.recv() {
                    Ok(op) => Some(op),
                    Err(_) => return,
                },
            };
            if let Some(op) = op {
                self.push(op);
            }
        }
    }

    fn push(&mut self, queued: Queued) {
        self.waited_for += usize::from(queued.op.waited_for());
        self.backlog.push_back(queued);
    }

    /// Moves every op sent so far to the backlog; false once the index is dropped.
    fn receive(&mut self) -> bool {
        loop {
            match self.ops.try_recv() {
                Ok(op) => self.push(op),
                Err(mpsc::TryRecvError::Empty) => return true,
                Err(mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// Applies the whole backlog; commits and answers when anyone waits for a commit.
    fn apply_and_commit(&mut self) {
        let mut owed = Owed::default();
        self.apply(usize::MAX, &mut owed);
        if !owed.syncs.is_empty() || !owed.caught_up.is_empty() {
            self.commit_and_answer(owed);
        }
    }

    /// Commits everything sent so far and answers whoever waits. `logFrom` is read first, so
    /// the ops taken after it include every write logged before it. At the end of a catch-up
    /// that is the current segment: the index then has what the catch-up did and what
    /// ingestion sent meanwhile, and searches open.
    fn commit_and_answer(&mut self, mut owed: Owed) {
        let segment = self.shared.store.log_segment();
        let from_state = self.shared.log_from(segment);
        self.receive();
        self.apply(usize::MAX, &mut owed);
        let caught_up = !owed.caught_up.is_empty();
        let committed = self.commit(if caught_up { Some(segment) } else { from_state });
        if committed.is_ok() && caught_up {
            self.shared.set_state(Catching::Done);
        }
        if let Err(e) = &committed {
            warn!(error = %e, "search index commit failed");
        }
        let answer = committed.map_err(|e| e.to_string());
        for reply in owed.syncs.into_iter().chain(owed.caught_up) {
            let _ = reply.send(answer.clone());
        }
    }

    /// Hands ops from the front of the backlog to tantivy until about `items` items are.
    fn apply(&mut self, items: usize, owed: &mut Owed) {
        let mut done = 0;
        while done < items {
            let Some(Queued { op, .. }) = self.backlog.pop_front() else {
                break;
            };
            self.waited_for -= usize::from(op.waited_for());
            let outcome = match op {
                Op::Add(records, size) => {
                    self.shared.queued_bytes.fetch_sub(size, Ordering::SeqCst);
                    self.dequeued(records.len(), &mut done);
                    self.add(&records)
                }
                Op::AddStored(ids) => {
                    self.dequeued(ids.len(), &mut done);
                    self.add_stored(&ids)
                }
                Op::Replace { ids, items } => {
                    self.dequeued(ids.len(), &mut done);
                    self.replace(&ids, &items)
                }
                Op::DeleteAll => self.delete_all(),
                Op::Barrier(reply) => {
                    let _ = reply.send(());
                    Ok(())
                }
                Op::Sync(reply) => {
                    owed.syncs.push(reply);
                    Ok(())
                }
                Op::CaughtUp(reply) => {
                    owed.caught_up.push(reply);
                    Ok(())
                }
            };
            if let Err(e) = outcome {
                // The store has them; the index misses them until the next rebuild.
                error!(error = %e, "indexing committed items failed");
            }
            if self.uncommitted_docs >= self.shared.commit_docs.load(Ordering::Relaxed) {
                if let Err(e) = self.commit(self.partial_log_from()) {
                    warn!(error = %e, "search index commit failed");
                }
            }
        }
    }

    /// `logFrom` of a commit made while part of the queue may wait: the segment of the first
    /// op still waiting that changes documents. The queue is in log order, so the index has
    /// every write of the older segments (ops still in the channel were sent after it). While
    /// a catch-up or rebuild runs, or with no such op received, the last commit's stays.
    fn partial_log_from(&self) -> Option<u64> {
        let caught_up = matches!(
            *self.shared.state.lock().unwrap_or_else(|p| p.into_inner()),
            Catching::Done
        );
        let waiting = self.backlog.iter().find(|q| q.op.changes_items());
        match (caught_up, waiting) {
            (true, Some(first)) => Some(first.segment),
            _ => self.committed_from,
        }
    }

    fn dequeued(&self, items: usize, done: &mut usize) {
        self.shared.queued_items.fetch_sub(items, Ordering::SeqCst);
        *done += items;
    }

    /// Removes every document. tantivy's `delete_all_documents` drops the flushed segments
    /// only, not what its indexing thread still holds: commit first (a rebuild has begun, so
    /// the commit records no `logFrom`).
    fn delete_all(&mut self) -> Result<()> {
        let log_from = self.shared.log_from(self.shared.store.log_segment());
        self.commit(log_from)?;
        self.writer.delete_all_documents()?;
        self.dirty = true;
        Ok(())
    }

    fn add(&mut self, items: &[ItemRecord]) -> Result<()> {
        // One batch for tantivy's indexing thread (one channel send, not one per document).
        let documents: Vec<UserOperation<TantivyDocument>> = items
            .iter()
            .filter_map(|item| self.shared.document(item))
            .map(UserOperation::Add)
            .collect();
        self.dirty = true;
        self.uncommitted_docs += documents.len();
        self.writer.run(documents)?;
        Ok(())
    }

    fn add_stored(&mut self, ids: &[Uuid]) -> Result<()> {
        let items = self.shared.store.items(ids)?;
        self.add(&items)
    }

    fn replace(&mut self, ids: &[Uuid], items: &[ItemRecord]) -> Result<()> {
        self.dirty = true;
        for id in ids {
            let id = Term::from_field_text(self.shared.fields.id, &id.to_string());
            self.writer.delete_term(id);
        }
        self.add(items)
    }

    /// Commits with `logFrom` = `log_from` and reloads the reader.
    fn commit(&mut self, log_from: Option<u64>) -> Result<()> {
        let mut prepared = self.writer.prepare_commit()?;
        prepared.set_payload(&serde_json::to_string(&Payload { log_from }).unwrap_or_default());
        prepared.commit()?;
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
        self.dirty = false;
        self.uncommitted_docs = 0;
        self.committed_from = log_from;
        self.last_commit = Instant::now();
        if let Some(from) = log_from {
            self.shared.store.index_committed(from)?;
        }
        self.shared.reader.reload()?;
        Ok(())
    }
}

impl SearchIndex {
    /// Runs `expr` in `tenant`, optionally restricted to mailboxes (lower-case UPNs): the total
    /// number of matching copies and the copies `skip..skip+top`, newest received first (the
    /// copies of one item in the order the item lists them).
    pub fn search(
        &self,
        tenant: Uuid,
        expr: &Expr,
        mailboxes: &[String],
        skip: usize,
        top: usize,
    ) -> Result<Results> {
        self.wait_ready()?;
        self.refresh()?;
        let query = self.scoped(tenant, expr, mailboxes)?;
        let searcher = self.reader.searcher();
        let scope: Vec<String> = mailboxes.iter().map(|m| m.to_lowercase()).collect();
        let (total, mut matches) = searcher.search(
            &query,
            &CopyCounter {
                scope: scope.clone(),
                keep: if top > 0 { skip.saturating_add(top) } else { 0 },
            },
        )?;
        let mut hits = Vec::with_capacity(top.min(total));
        if top == 0 {
            return Ok(Results { total, hits });
        }
        // Every match has a copy, so the page lies within the first `skip + top` matches: order
        // only those (a large result is partitioned, not sorted whole).
        let needed = skip.saturating_add(top).min(matches.len());
        if needed < matches.len() {
            matches.select_nth_unstable(needed);
            matches.truncate(needed);
        }
        matches.sort_unstable();
        let f = &self.fields;
        let mut to_skip = skip;
        for m in &matches {
            if hits.len() == top {
                break;
            }
            if to_skip >= m.copies as usize {
                to_skip -= m.copies as usize;
                continue;
            }
            let doc: TantivyDocument = searcher.doc(m.address)?;
            let text = |field: Field| {
                doc.get_first(field)
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            };
            let time = |field: Field| {
                let micros = doc.get_first(field).and_then(|v| v.as_i64()).unwrap_or(0);
                chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default()
            };
            let Some(item_id) = text(f.id).and_then(|s| Uuid::parse_str(&s).ok()) else {
                continue;
            };
            let copies = doc
                .get_all(f.mailbox)
                .zip(doc.get_all(f.folder))
                .filter_map(|(mailbox, folder)| Some((mailbox.as_str()?, folder.as_str()?)))
                .filter(|(mailbox, _)| scope.is_empty() || scope.iter().any(|s| s == mailbox))
                .skip(std::mem::take(&mut to_skip))
                .take(top - hits.len());
            for (mailbox, folder) in copies {
                hits.push(Hit {
                    item_id,
                    mailbox: mailbox.to_string(),
                    folder: folder.to_string(),
                    subject: text(f.subject),
                    item_class: text(f.class_sent).unwrap_or_default(),
                    searched_item_class: text(f.class_searched).unwrap_or_default(),
                    sent: time(f.sent),
                    received: time(f.received),
                    sender: text(f.sender).unwrap_or_default(),
                });
            }
        }
        Ok(Results { total, hits })
    }

    /// The distinct items (ids) with a copy matching `expr` in `tenant`.
    pub fn matching_items(
        &self,
        tenant: Uuid,
        expr: &Expr,
        mailboxes: &[String],
    ) -> Result<Vec<Uuid>> {
        self.wait_ready()?;
        self.refresh()?;
        let query = self.scoped(tenant, expr, mailboxes)?;
        let searcher = self.reader.searcher();
        let docs = searcher.search(&query, &DocSetCollector)?;
        let mut ids = Vec::with_capacity(docs.len());
        for address in docs {
            let doc: TantivyDocument = searcher.doc(address)?;
            if let Some(id) = doc
                .get_first(self.fields.id)
                .and_then(|v| v.as_str())
                .and_then(|s| Uuid::parse_str(s).ok())
            {
                ids.push(id);
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    fn scoped(&self, tenant: Uuid, expr: &Expr, mailboxes: &[String]) -> Result<Box<dyn Query>> {
        let f = &self.fields;
        let mut must: Vec<(Occur, Box<dyn Query>)> =
            vec![(Occur::Must, term(f.tenant, &tenant.to_string()))];
        if !mailboxes.is_empty() {
            let any: Vec<(Occur, Box<dyn Query>)> = mailboxes
                .iter()
                .map(|m| (Occur::Should, term(f.mailbox, &m.to_lowercase())))
                .collect();
            must.push((Occur::Must, Box::new(BooleanQuery::new(any))));
        }
        if *expr != Expr::All {
            must.push((Occur::Must, self.compile(expr)?));
        }
        Ok(Box::new(BooleanQuery::new(must)))
    }

    /// Compiles a KQL expression into a tantivy query. One that says nothing searchable (only
    /// punctuation, such as `&`) matches nothing.
    pub fn compile(&self, expr: &Expr) -> Result<Box<dyn Query>> {
        Ok(self
            .compile_part(expr)?
            .unwrap_or_else(|| Box::new(EmptyQuery)))
    }

    /// A part of a query; `None` when it says nothing searchable: a word of punctuation only
    /// (`budget & forecast`, `Q1 - results`) leaves the words around it to decide, as the
    /// search engine drops what its word breaker drops.
    fn compile_part(&self, expr: &Expr) -> Result<Option<Box<dyn Query>>> {
        let f = &self.fields;
        Ok(Some(match expr {
            Expr::All => Box::new(AllQuery),
            Expr::And(parts) => {
                let mut clauses = Vec::with_capacity(parts.len());
                let mut positive = false;
                for part in parts {
                    match part {
                        Expr::Not(inner) => {
                            if let Some(query) = self.compile_part(inner)? {
                                clauses.push((Occur::MustNot, query));
                            }
                        }
                        other => {
                            if let Some(query) = self.compile_part(other)? {
                                positive = true;
                                clauses.push((Occur::Must, query));
                            }
                        }
                    }
                }
                if clauses.is_empty() {
                    return Ok(None);
                }
                if !positive {
                    clauses.push((Occur::Must, Box::new(AllQuery)));
                }
                Box::new(BooleanQuery::new(clauses))
            }
            Expr::Or(parts) => {
                let mut clauses = Vec::with_capacity(parts.len());
                for part in parts {
                    if let Some(query) = self.compile_part(part)? {
                        clauses.push((Occur::Should, query));
                    }
                }
                if clauses.is_empty() {
                    return Ok(None);
                }
                Box::new(BooleanQuery::new(clauses))
            }
            Expr::Not(inner) => match self.compile_part(inner)? {
                Some(query) => Box::new(BooleanQuery::new(vec![
                    (Occur::Must, Box::new(AllQuery) as Box<dyn Query>),
                    (Occur::MustNot, query),
                ])),
                None => return Ok(None),
            },
            Expr::Kind { value, prefix } => raw(f.kind, value, *prefix)?,
            Expr::ItemClass { value, prefix } => raw(f.itemclass, value, *prefix)?,
            Expr::HasAttachment(yes) => term(f.hasattachment, if *yes { "true" } else { "false" }),
            Expr::Date { field, from, to } => {
                let field = match field {
                    DateField::Sent => f.sent,
                    DateField::Received => f.received,
                };
                let lower = match from {
                    Some(v) => Bound::Included(Term::from_field_i64(field, *v)),
                    None => Bound::Unbounded,
                };
                let upper = match to {
                    Some(v) => Bound::Excluded(Term::from_field_i64(field, *v)),
                    None => Bound::Unbounded,
                };
                Box::new(RangeQuery::new(lower, upper))
            }
            Expr::Text {
                field,
                text,
                phrase: _,
                prefix,
            } => {
                // A whole address in an address property: that address, not its words.
                let exact = match field {
                    TextField::From => Some(f.from_address),
                    TextField::To => Some(f.to_address),
                    TextField::Cc => Some(f.cc_address),
                    TextField::Bcc => Some(f.bcc_address),
                    TextField::Participants => Some(f.participant_address),
                    _ => None,
                };
                // `local@domain`, both parts given (`@contoso.com` or `bob@` are words).
                let one_address = !text.trim().contains(char::is_whitespace)
                    && text
                        .trim()
                        .split_once('@')
                        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty());
                if let Some(exact) = exact.filter(|_| one_address) {
                    let address = text.trim().to_lowercase();
                    return Ok(Some(raw(exact, &address, *prefix)?));
                }
                let fields: &[Field] = match field {
                    TextField::Any => &[f.subject, f.body, f.participants],
                    TextField::Subject => &[f.subject],
                    TextField::Body => &[f.body],
                    TextField::From => &[f.from],
                    TextField::To => &[f.to],
                    TextField::Cc => &[f.cc],
                    TextField::Bcc => &[f.bcc],
                    TextField::Participants => &[f.participants],
                    TextField::AttachmentNames => &[f.attachmentnames],
                };
                let mut clauses = Vec::with_capacity(fields.len());
                for &field in fields {
                    if let Some(query) = self.text_query(field, text, *prefix)? {
                        clauses.push((Occur::Should, query));
                    }
                }
                match clauses.len() {
                    0 => return Ok(None),
                    1 => clauses.swap_remove(0).1,
                    _ => Box::new(BooleanQuery::new(clauses)),
                }
            }
        }))
    }

    /// Words in a text field: one token is a term (or prefix), several a phrase (or a phrase
    /// whose last word is a prefix). Analysed like the indexed text (lower case, split on
    /// punctuation), so `from:alice@contoso.com` is the phrase `alice contoso com`.
    /// `None` when the text has no word at all (punctuation only).
    fn text_query(&self, field: Field, text: &str, prefix: bool) -> Result<Option<Box<dyn Query>>> {
        let mut analyzer = self.index.tokenizer_for_field(field)?;
        let mut stream = analyzer.token_stream(text);
        let mut terms = Vec::new();
        while stream.advance() {
            terms.push(Term::from_field_text(field, &stream.token().text));
        }
        Ok(Some(match (terms.len(), prefix) {
            (0, _) => return Ok(None),
            (1, false) => Box::new(TermQuery::new(
                terms.pop().unwrap(),
                IndexRecordOption::Basic,
            )),
            (1, true) => {
                let word = terms[0].value().as_str().unwrap_or_default().to_string();
                Box::new(RegexQuery::from_pattern(
                    &format!("{}.*", regex_escape(&word)),
                    field,
                )?)
            }
            (_, false) => Box::new(PhraseQuery::new(terms)),
            (_, true) => Box::new(PhrasePrefixQuery::new(terms)),
        }))
    }
}

/// A matching item: when it was received, where its document is, and how many of its copies
/// are in the searched mailboxes.
struct Match {
    received: i64,
    address: DocAddress,
    copies: u32,
}

/// Orders matches newest first (ties by document), so a max-heap of them holds the oldest of
/// those it keeps on top.
impl Ord for Match {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .received
            .cmp(&self.received)
            .then(self.address.cmp(&other.address))
    }
}

impl PartialOrd for Match {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Match {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Match {}

/// Counts the copies of the matching items in `scope` (lower-case mailboxes; empty: every
/// mailbox), from fast fields only, and keeps the `keep` newest matching items (a page lies
/// within the first `skip + top` of them: every match has a copy), so a search holds a page's
/// worth of matches per segment, not one per matching item.
struct CopyCounter {
    scope: Vec<String>,
    keep: usize,
}

struct SegmentCopyCounter {
    segment: SegmentOrdinal,
    received: Column<i64>,
    mailbox: Option<StrColumn>,
    /// Term ordinals of the searched mailboxes in this segment; `None`: every mailbox.
    scope: Option<Vec<u64>>,
    keep: usize,
    copies: usize,
    /// The newest `keep` matches so far, the oldest of them on top.
    matches: std::collections::BinaryHeap<Match>,
}

impl Collector for CopyCounter {
    type Fruit = (usize, Vec<Match>);
    type Child = SegmentCopyCounter;

    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<SegmentCopyCounter> {
        let fast = reader.fast_fields();
        let mailbox = fast.str("mailbox")?;
        let scope = match (&mailbox, self.scope.is_empty()) {
            (_, true) => None,
            (None, false) => Some(Vec::new()),
            (Some(column), false) => {
                let mut ords = Vec::with_capacity(self.scope.len());
                for m in &self.scope {
                    ords.extend(column.dictionary().term_ord(m)?);
                }
                Some(ords)
            }
        };
        Ok(SegmentCopyCounter {
            segment,
            received: fast.i64("received")?,
            mailbox,
            scope,
            keep: self.keep,
            copies: 0,
            matches: std::collections::BinaryHeap::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(
        &self,
        fruits: Vec<(usize, Vec<Match>)>,
    ) -> tantivy::Result<(usize, Vec<Match>)> {
        let copies = fruits.iter().map(|(copies, _)| copies).sum();
        let matches = fruits
            .into_iter()
            .flat_map(|(_, matches)| matches)
            .collect();
        Ok((copies, matches))
    }
}

impl SegmentCollector for SegmentCopyCounter {
    type Fruit = (usize, Vec<Match>);

    fn collect(&mut self, doc: DocId, _score: Score) {
        let Some(column) = &self.mailbox else {
            return;
        };
        let copies = column
            .term_ords(doc)
            .filter(|ord| self.scope.as_ref().is_none_or(|s| s.contains(ord)))
            .count() as u32;
        self.copies += copies as usize;
        if copies > 0 && self.keep > 0 {
            let found = Match {
                received: self.received.first(doc).unwrap_or(0),
                address: DocAddress::new(self.segment, doc),
                copies,
            };
            if self.matches.len() < self.keep {
                self.matches.push(found);
            } else if self.matches.peek().is_some_and(|oldest| found < *oldest) {
                self.matches.pop();
                self.matches.push(found);
            }
        }
    }

    fn harvest(self) -> (usize, Vec<Match>) {
        (self.copies, self.matches.into_vec())
    }
}

fn term(field: Field, value: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(
        Term::from_field_text(field, value),
        IndexRecordOption::Basic,
    ))
}

/// An exact or prefix match on an untokenised (lower-case) field.
fn raw(field: Field, value: &str, prefix: bool) -> Result<Box<dyn Query>> {
    if !prefix {
        return Ok(term(field, value));
    }
    if value.is_empty() {
        return Ok(Box::new(AllQuery));
    }
    Ok(Box::new(RegexQuery::from_pattern(
        &format!("{}.*", regex_escape(value)),
        field,
    )?))
}

fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '.'
                | '+'
                | '*'
                | '?'
                | '('
                | ')'
                | '|'
                | '['
                | ']'
                | '{'
                | '}'
                | '^'
                | '$'
                | '#'
                | '&'
                | '-'
                | '~'
                | ' '
                | '"'
                | '<'
                | '>'
                | '@'
                | '='
                | '!'
                | '%'
                | '/'
                | ':'
                | ';'
                | ','
                | '\''
                | '`'
                | '_'
        ) {
            // regex-syntax accepts escaped ASCII punctuation; escape what could be special.
            if c == ' ' || c == '_' {
                out.push(c);
                continue;
            }
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::kql::parse;
    use crate::store::model::{AddressRecord, CopyRecord};

    /// Waits (up to 10 s) until `done` holds.
    fn eventually(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// While an ingestion request is in flight nothing is indexed; a search indexes and
    /// commits the backlog first; once no request is in flight, the indexer applies and
    /// commits it by itself.
    #[test]
    fn indexing_waits_while_ingestion_is_in_flight_but_a_search_does_not() {
        let (_dir, _store, index) = ready_index();
        let t = Uuid::new_v4();
        {
            let _request = index.hold_off();
            index
                .add(vec![item(t, "held", &["a@x"]), item(t, "held", &["b@x"])])
                .unwrap();
            std::thread::sleep(QUIET * 20);
            assert_eq!(index.backlog().items, 2, "nothing indexed during a request");
            assert_eq!(
                total(&index, t, "subject:held"),
                2,
                "a search takes the backlog"
            );
            assert_eq!(index.backlog().items, 0);
            index.add(vec![item(t, "later", &["a@x"])]).unwrap();
            std::thread::sleep(QUIET * 20);
            assert_eq!(index.backlog().items, 1);
            assert_eq!(index.item_count().unwrap(), 2, "not committed either");
        }
        eventually("indexed and committed once ingestion is quiet", || {
            index.item_count().unwrap() == 3
        });
        assert_eq!(index.backlog(), Backlog { items: 0, bytes: 0 });
    }

    /// A backlog is committed every [`COMMIT_DOCS`] documents while it is applied (tantivy
    /// would otherwise buffer all of it), and its items are all found.
    #[test]
    fn a_backlog_is_committed_in_parts() {
        let (_dir, _store, index) = ready_index();
        index.commit_docs.store(10, Ordering::SeqCst);
        let t = Uuid::new_v4();
        let before = index.commits();
        {
            let _request = index.hold_off();
            for n in 0..50 {
                index
                    .add(vec![item(t, &format!("part{n}"), &["a@x"])])
                    .unwrap();
            }
            assert_eq!(total(&index, t, ""), 50);
        }
        let commits = index.commits() - before;
        assert!(commits >= 5, "{commits} commits for 50 documents");
    }

    /// Past [`MAX_BACKLOG`] items the indexer works while ingestion is in flight too, and the
    /// commits it makes meanwhile release the log segments of what they took: under a load
    /// that never pauses, neither the queue nor the log kept for the index grows with the data.
    #[test]
    fn a_backlog_over_its_limit_is_indexed_under_load_and_releases_the_log() {
        let (_dir, store, index) = ready_index();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        index.max_backlog.store(25, Ordering::SeqCst);
        index.commit_docs.store(10, Ordering::SeqCst);
        let t = Uuid::new_v4();
        let first = store.log_segment();
        eventually("the catch-up's commit", || {
            store.log_kept_for_index_from() == first
        });
        let _request = index.hold_off();
        for _ in 0..4 {
            ingest(&rt, &store, &index, t, 10, 1);
            rt.block_on(store.durable()).unwrap(); // the next writes go to a new segment
        }
        eventually(
            "the backlog brought under its limit during a request",
            || index.backlog().items <= 25,
        );
        eventually("commits made under load release the log", || {
            store.log_kept_for_index_from() > first
        });
        assert!(store.log_kept_for_index_from() <= store.log_segment());
        assert_eq!(total(&index, t, "subject:race"), 40);
    }

    /// Past its budget the queue holds ids, and those items are read back from the store.
    #[test]
    fn items_over_the_queue_budget_are_queued_by_id_and_read_from_the_store() {
        let (_dir, store, index) = ready_index();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let t = Uuid::new_v4();
        let budget = 3 * queued_size(&item(t, "race", &["a@x"]));
        index.queue_budget.store(budget, Ordering::SeqCst);
        let _request = index.hold_off();
        ingest(&rt, &store, &index, t, 20, 2);
        let backlog = index.backlog();
        assert_eq!(backlog.items, 40);
        assert!(backlog.bytes <= budget, "{backlog:?}");
        assert!(backlog.bytes > 0, "{backlog:?}");
        assert_eq!(total(&index, t, "subject:race"), 40);
        assert_eq!(index.item_count().unwrap(), 40);
    }

    fn item(tenant: Uuid, subject: &str, mailboxes: &[&str]) -> ItemRecord {
        let now = chrono::Utc::now();
        ItemRecord {
            id: Uuid::new_v4(),
            tenant,
            correlation_id: Uuid::new_v4(),
            app_id: None,
            received: now,
            item_class: "IPM.NOTE.Twitter.Tweet".into(),
            searched_item_class: "IPM.ExternalData.Twitter.Tweet".into(),
            kind: "externaldata".into(),
            source: "Twitter".into(),
            event: Some("Tweet".into()),
            subject: Some(subject.into()),
            body: None,
            body_type: None,
            from: AddressRecord {
                name: None,
                address: "x@twitter.example".into(),
            },
            sender: None,
            to: vec![],
            cc: vec![],
            bcc: vec![],
            sent: now,
            created: None,
            internet_message_id: None,
            attachments: vec![],
            extended_properties: vec![],
            from_mime: false,
            size: 1,
            copies: mailboxes
                .iter()
                .map(|m| CopyRecord {
                    mailbox: m.to_string(),
                    folder: "Recoverable Items/Purges".into(),
                })
                .collect(),
        }
    }

    fn total(index: &SearchIndex, tenant: Uuid, q: &str) -> usize {
        index
            .search(tenant, &parse(q).unwrap(), &[], 0, 10)
            .unwrap()
            .total
    }

    /// Ingests `n` requests of `per` items through the store's committer, indexed by its hook.
    fn ingest(
        rt: &tokio::runtime::Runtime,
        store: &Store,
        index: &Arc<SearchIndex>,
        tenant: Uuid,
        n: usize,
        per: usize,
    ) {
        rt.block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..n {
                let (store, index) = (store.clone(), index.clone());
                tasks.push(tokio::spawn(async move {
                    let items: Vec<ItemRecord> = (0..per)
                        .map(|_| ItemRecord {
                            id: Uuid::now_v7(),
                            ..item(tenant, "race", &["a@x"])
                        })
                        .collect();
                    let record = crate::store::model::IngestionRecord {
                        correlation_id: Uuid::now_v7(),
                        tenant,
                        app_id: None,
                        received: chrono::Utc::now(),
                        operation: "CreateItem".into(),
                        http_status: 200,
                        outcome: "Success".into(),
                        items: vec![],
                        error: None,
                    };
                    let after: crate::store::AfterApply =
                        Box::new(move |items: Vec<ItemRecord>| {
                            // A slow hook widens the window between the store having an item
                            // and the hook indexing it, in which a rebuild must not read it.
                            std::thread::sleep(std::time::Duration::from_micros(300));
                            index.add(items).expect("index");
                        });
                    store
                        .commit_ingestion(crate::store::IngestionCommit {
                            record,
                            items: items.into_iter().map(|i| (i, vec![])).collect(),
                            after: Some(after),
                        })
                        .await
                        .expect("commit");
                }));
            }
            for task in tasks {
                task.await.expect("task");
            }
        });
    }

    /// A rebuild while the committer goes on indexing new items indexes each item once.
    #[test]
    fn a_rebuild_racing_ingestion_indexes_each_item_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(&dir.path().join("store"), false, true).unwrap();
        let index = SearchIndex::open(&dir.path().join("index"), &store).unwrap();
        index.wait_ready().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .build()
            .unwrap();
        let tenant = Uuid::new_v4();
        ingest(&rt, &store, &index, tenant, 200, 5);
        for _ in 0..3 {
            let rebuilding = {
                let index = index.clone();
                std::thread::spawn(move || index.rebuild())
            };
            ingest(&rt, &store, &index, tenant, 400, 1);
            rebuilding.join().unwrap().unwrap();
        }
        let stored = store.item_ids_after(None, usize::MAX).unwrap().len();
        assert_eq!(stored, 200 * 5 + 3 * 400);
        assert_eq!(
            total(&index, tenant, "race"),
            stored,
            "one document per item"
        );
        assert_eq!(index.item_count().unwrap() as usize, stored);
    }

    /// A store and its index, ready, in a temporary directory (removed when dropped).
    fn ready_index() -> (tempfile::TempDir, Store, Arc<SearchIndex>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let index = SearchIndex::open(&dir.path().join("index"), &store).unwrap();
        index.wait_ready().unwrap();
        (dir, store, index)
    }

    /// A search right after an add finds it, even while another thread keeps asking for
    /// commits: each search waits for a commit and reload that took everything sent before it.
    #[test]
    fn an_added_item_is_found_while_another_thread_commits() {
        let (_dir, _store, index) = ready_index();
        let t = Uuid::new_v4();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let committer = {
            let (index, stop) = (index.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    index.refresh().unwrap();
                }
            })
        };
        for n in 0..300 {
            index
                .add(vec![item(t, &format!("word{n}x"), &["a@x"])])
                .unwrap();
            assert_eq!(
                total(&index, t, &format!("subject:word{n}x")),
                1,
                "item {n}"
            );
        }
        stop.store(true, Ordering::SeqCst);
        committer.join().unwrap();
    }

    #[test]
    fn add_resync_and_tenant_isolation() {
        let (_dir, store, index) = ready_index();
        let (t1, t2) = (Uuid::new_v4(), Uuid::new_v4());
        let a = item(t1, "alpha", &["a@x", "b@x"]);
        let b = item(t2, "alpha", &["c@y"]);
        index.add(vec![a.clone(), b.clone()]).unwrap();
        assert_eq!(total(&index, t1, "subject:alpha"), 2, "one hit per copy");
        assert_eq!(
            total(&index, t2, "subject:alpha"),
            1,
            "tenants are separate"
        );
        assert_eq!(index.item_count().unwrap(), 2);
        let only_b = index
            .search(t1, &parse("alpha").unwrap(), &["b@x".into()], 0, 10)
            .unwrap();
        assert_eq!(only_b.total, 1);
        assert_eq!(only_b.hits[0].mailbox, "b@x");
        // `a` is not in the store: resync removes it.
        index.resync(&store, &[a.id]).unwrap();
        assert_eq!(total(&index, t1, "subject:alpha"), 0);
        assert_eq!(total(&index, t2, "subject:alpha"), 1);
        // Uncommitted additions are removed too.
        let beta = item(t1, "beta", &["a@x"]);
        index.add(vec![beta.clone()]).unwrap();
        index.resync(&store, &[beta.id]).unwrap();
        assert_eq!(total(&index, t1, ""), 0);
        assert_eq!(total(&index, t2, ""), 1);
        index.add(vec![item(t1, "gamma", &["a@x"])]).unwrap();
        assert_eq!(total(&index, t1, "gamma"), 1, "usable after a removal");
    }

    #[test]
    fn pages_keep_only_what_they_need_and_stay_newest_first_across_segments() {
        let (_dir, _store, index) = ready_index();
        let t = Uuid::new_v4();
        let mut all = Vec::new();
        // Three segments, received times interleaved between them.
        for batch in 0..3i64 {
            let mut items = Vec::new();
            for n in 0..20i64 {
                let mut it = item(t, "paged", &["a@x"]);
                it.received -= chrono::Duration::seconds((n * 3 + batch) * 7 % 60);
                it.received -= chrono::Duration::milliseconds(n * 3 + batch);
                items.push(it);
            }
            index.add(items.clone()).unwrap();
            index.refresh().unwrap();
            all.extend(items);
        }
        all.sort_by_key(|i| std::cmp::Reverse(i.received));
        let expected: Vec<Uuid> = all.iter().map(|i| i.id).collect();
        let query = parse("paged").unwrap();
        for skip in 0..expected.len() {
            let r = index.search(t, &query, &[], skip, 1).unwrap();
            assert_eq!(r.total, expected.len());
            assert_eq!(r.hits.len(), 1, "skip {skip}");
            assert_eq!(r.hits[0].item_id, expected[skip], "skip {skip}");
        }
        let r = index.search(t, &query, &[], 50, 100).unwrap();
        let ids: Vec<Uuid> = r.hits.iter().map(|h| h.item_id).collect();
        assert_eq!(ids, expected[50..]);
    }

    #[test]
    fn an_item_is_one_document_and_pages_run_through_its_copies() {
        let (_dir, _store, index) = ready_index();
        let t = Uuid::new_v4();
        let mut older = item(t, "chat", &["a@x", "b@x", "c@x"]);
        older.received -= chrono::Duration::seconds(10);
        older.copies[2].folder = "Inbox".into();
        let newer = item(t, "chat", &["b@x"]);
        index.add(vec![older.clone(), newer.clone()]).unwrap();
        index.refresh().unwrap();
        assert_eq!(index.item_count().unwrap(), 2, "one document per item");
        let page = |mailboxes: &[&str], skip, top| {
            let scope: Vec<String> = mailboxes.iter().map(|m| m.to_string()).collect();
            let r = index
                .search(t, &parse("chat").unwrap(), &scope, skip, top)
                .unwrap();
            let hits: Vec<(Uuid, String, String)> = r
                .hits
                .into_iter()
                .map(|h| (h.item_id, h.mailbox, h.folder))
                .collect();
            (r.total, hits)
        };
        let purges = "Recoverable Items/Purges".to_string();
        let hit = |i: &ItemRecord, m: &str, f: &str| (i.id, m.to_string(), f.to_string());
        assert_eq!(
            page(&[], 0, 2),
            (
                4,
                vec![hit(&newer, "b@x", &purges), hit(&older, "a@x", &purges)]
            ),
            "newest first, then the copies of the older item in order"
        );
        assert_eq!(
            page(&[], 2, 5),
            (
                4,
                vec![hit(&older, "b@x", &purges), hit(&older, "c@x", "Inbox")]
            ),
            "a page may start inside an item's copies"
        );
        assert_eq!(page(&[], 4, 5), (4, vec![]));
        assert_eq!(
            page(&["c@x", "b@x"], 1, 5),
            (
                3,
                vec![hit(&older, "b@x", &purges), hit(&older, "c@x", "Inbox")]
            ),
            "only the copies in the searched mailboxes count and show"
        );
        assert_eq!(page(&["a@x"], 0, 0), (1, vec![]), "a count alone");
        assert_eq!(page(&["nobody@x"], 0, 5), (0, vec![]));
    }
}
