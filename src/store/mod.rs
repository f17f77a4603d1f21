//! The store: sled trees for the directory (tenants, users, apps, consents, signing keys) and
//! the mailboxes (items, copies, ingestion records).
//!
//! Invariants:
//! - All items, copies and the ingestion record of one request are one write-ahead log record,
//!   appended before sled gets them (see [`Logged::Deferred`]), so a request is never half
//!   stored across `kill -9`: replay completes what a checkpoint flushed half of.
//! - [`Store::commit_ingestion`] returns only once the write is durable: applied to sled and
//!   appended to the write-ahead log (`wal`) with one write per group of concurrent requests
//!   (group commit), `fdatasync`ed too with `fsync`. Sled itself is flushed at checkpoints.
//! - Item removals of the admin API (and `CreateAttachment`) run on the committer in a sled
//!   transaction and are logged with the keys they wrote ([`Logged::Applied`]), so a replay
//!   never brings back a removed item and the search index's catch-up sees them.
//! - Other writers (the directory) write sled directly and then call [`Store::durable`], a
//!   checkpoint: after it no older log record can be replayed over their writes.
//! - Keys are `tenant (16 bytes) || lower-case name`, so one tenant's records are one prefix.
//! - The items of a `CreateItem` stay in its log record: sled holds one entry for them (see
//!   [`groups`]), and the log segments such entries point into are kept until none does.

mod blobs;
mod cache;
mod committer;
pub mod connectors;
mod groups;
pub mod mailbox;
pub mod model;
mod record_groups;
mod wal;

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use uuid::Uuid;

use crate::domain::TenantId;
pub(crate) use committer::Hook;
use committer::{CommitterHandle, Job, Logged, WriteJob};
pub use groups::ItemIds;
use model::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored record could not be read: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("stored item could not be read: {0}")]
    CorruptItem(#[from] postcard::Error),
    #[error("{0}")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("the store is shutting down")]
    Closed,
    /// Another process has the store open (sled locks it); or, within [`OPEN_WAIT`], a store
    /// handle of this process that was dropped is still finishing its background work.
    #[error("the store at {0} is in use by another process (another server on the same data directory?)")]
    InUse(String),
    #[error("the write-ahead log could not be written: {0}")]
    Log(String),
    #[error("an attachment file could not be read or written: {0}")]
    Attachment(String),
    /// A write that failed after part of it took effect: applied to sled but not logged (the
    /// log could not be written), or logged but not applied whole (a restart's replay completes
    /// it). Either way it may exist; the client must not be told nothing was stored.
    #[error("the write failed midway and may have been stored: {0}")]
    OutcomeUnknown(String),
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(e: TransactionError<StoreError>) -> Self {
        match e {
            TransactionError::Abort(inner) => inner,
            TransactionError::Storage(s) => StoreError::Sled(s),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What one ingestion request writes: its record and every stored item with its attachments.
pub struct IngestionCommit {
    pub record: IngestionRecord,
    pub items: Vec<(ItemRecord, Vec<Vec<u8>>)>,
    pub after: Option<AfterApply>,
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    tenants: sled::Tree,
    domains: sled::Tree,
    users: sled::Tree,
    addresses: sled::Tree,
    apps: sled::Tree,
    service_principals: sled::Tree,
    signing_keys: sled::Tree,
    items: sled::Tree,
    /// Attachments of stores older than [`blobs::BlobFiles`] (read and removed, never written).
    blobs: sled::Tree,
    /// Attachment contents.
    files: blobs::BlobFiles,
    copies: sled::Tree,
    /// Item groups: one request's items in its log record (see [`groups`]).
    groups: sled::Tree,
    /// The log segments groups point into (kept while they do).
    held: groups::Held,
    /// Open log segments, to read groups from.
    segments: groups::SegmentFiles,
    /// Ingestion records, `tenant || correlation id` (UUIDv7): also the journal, read backwards.
    ingestions: sled::Tree,
    /// The groups carrying a record, by tenant (built by the first journal read).
    record_groups: record_groups::RecordGroups,
    committer: CommitterHandle,
    wal: Arc<WalState>,
    /// Memoised directory reads; every directory write takes [`Store::directory_write`].
    cache: cache::DirectoryCache,
    /// Tenants deleted (or being deleted) since start: the committer refuses their writes.
    gone_tenants: Mutex<std::collections::HashSet<Uuid>>,
    /// Whether `gone_tenants` has any (the committer's check is then one load).
    any_gone: std::sync::atomic::AtomicBool,
    /// A reset is running: the committer refuses every ingestion and import.
    all_fenced: std::sync::atomic::AtomicBool,
}

/// The write-ahead log's current segment, shared by the committer (appends) and checkpoints
/// (rotations). Held by the committer from applying a group to appending it, so a checkpoint
/// never sees a write applied to sled but not yet in the log.
struct WalState {
    dir: PathBuf,
    segment: Mutex<wal::Segment>,
    /// The number of the segment being written (read without the lock, by index commits).
    current: AtomicU64,
    /// The first segment the search index may still need (see [`Store::index_committed`]);
    /// `u64::MAX` when no index keeps any.
    index_needs: AtomicU64,
    /// Held by a checkpoint from rotation to retiring: checkpoints run one at a time.
    checkpointing: Mutex<()>,
    /// The oldest segment holding a logged write that failed to apply to sled (an I/O
    /// error), `u64::MAX` when none did: checkpoints keep it and every later segment live, so
    /// the next start replays that write whole, and the search index never commits past it
    /// ([`Store::log_segment`]), so that start also re-indexes what it replays.
    failed_from: AtomicU64,
    /// The last append to the log failed (a full disk): writes fail until one succeeds.
    append_failing: std::sync::atomic::AtomicBool,
}

impl WalState {
    fn lock(&self) -> MutexGuard<'_, wal::Segment> {
        self.segment
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Run by the committer right after a write is applied, before any later write, while no
/// checkpoint can run: the search index is fed in log order, so an index commit covers every
/// segment older than the current one (see [`Store::log_segment`]).
/// It gets the items just written.
pub type AfterApply = Box<dyn FnOnce(Vec<ItemRecord>) + Send>;

/// Run by the committer after an admin write removed or changed items (deletion, retention,
/// reset), with their ids, in log order like [`AfterApply`]: the search index follows.
pub type OnItemsChanged = Arc<dyn Fn(&[Uuid]) + Send + Sync>;

/// Names of the trees the committer writes (the write-ahead log names trees).
const ITEMS: &str = "items";
const BLOBS: &str = "blobs";
const COPIES: &str = "copies";
const INGESTIONS: &str = "ingestions";

fn tenant_key(tenant: Uuid, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(16 + name.len());
    key.extend_from_slice(tenant.as_bytes());
    key.extend_from_slice(name.to_lowercase().as_bytes());
    key
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(value)?)
}

/// The first byte of a compact record (a JSON document never begins with it).
const COMPACT: u8 = 1;
/// The first byte of a compact record written before dates were binary (still read).
const COMPACT_TEXT_DATES: u8 = 0;

/// Item and ingestion records are most of what the store writes: they are compact (postcard
/// after a [`COMPACT`] byte: about half the size of JSON, and cheaper to write and read),
/// every other record is JSON. [`decode`] reads both, so records written as JSON before still
/// read.
fn encode_compact<T: serde::Serialize>(record: &T) -> Result<Vec<u8>> {
    // Serialised into a buffer each thread keeps (growing a new vector from one byte to an
    // item's size took a reallocation per doubling), then copied out at its exact size.
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    const KEEP_AT_MOST: usize = 1 << 20;
    SCRATCH.with(|scratch| {
        let mut buffer = std::mem::take(&mut *scratch.borrow_mut());
        buffer.clear();
        buffer.push(COMPACT);
        let buffer = postcard::to_extend(record, buffer)?;
        let encoded = buffer.as_slice().to_vec();
        if buffer.capacity() <= KEEP_AT_MOST {
            *scratch.borrow_mut() = buffer;
        }
        Ok(encoded)
    })
}

/// The correlation id of an encoded ingestion record.
fn ingestion_correlation_id(record: &[u8]) -> Result<Uuid> {
    Ok(decode::<IngestionRecord>(record)?.correlation_id)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&COMPACT, compact)) => Ok(postcard::from_bytes(compact)?),
        Some((&COMPACT_TEXT_DATES, compact)) => {
            model::compact_time::text_dates(|| Ok(postcard::from_bytes(compact)?))
        }
        _ => Ok(serde_json::from_slice(bytes)?),
    }
}

fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

/// How long opening a store waits for its lock: a store dropped in this process closes when
/// its background threads let go of it (a checkpoint in progress), a moment later.
const OPEN_WAIT: Duration = Duration::from_secs(2);

/// Opens sled in `dir`, waiting up to [`OPEN_WAIT`] for a lock held by someone else.
fn open_db(dir: &Path) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + OPEN_WAIT;
    loop {
        let opened = sled::Config::new()
            .path(dir)
            .cache_capacity(16 * 1024 * 1024)
            .flush_every_ms(None)
            .open();
        match opened {
            Err(sled::Error::Io(e)) if is_lock_conflict(&e) => {
                if std::time::Instant::now() >= deadline {
                    return Err(StoreError::InUse(dir.display().to_string()));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

/// Whether sled could not open its database because another handle holds its file lock
/// (sled 0.34 reports it as an `Other` error that names the lock).
fn is_lock_conflict(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

/// Key of one copy: tenant, mailbox, folder, newest first, item id.
fn copy_key(tenant: Uuid, copy: &CopyRecord, received: DateTime<Utc>, item: Uuid) -> Vec<u8> {
    let mut key = copy_prefix(tenant, &copy.mailbox, Some(&copy.folder));
    let micros = received.timestamp_micros().max(0) as u64;
    key.extend_from_slice(&(u64::MAX - micros).to_be_bytes());
    key.extend_from_slice(item.as_bytes());
    key
}

fn copy_prefix(tenant: Uuid, mailbox: &str, folder: Option<&str>) -> Vec<u8> {
    let mut key = tenant_key(tenant, mailbox);
    key.push(0);
    if let Some(folder) = folder {
        key.extend_from_slice(folder.to_lowercase().as_bytes());
        key.push(0);
    }
    key
}

impl Store {
    /// Opens (or creates) the store in `dir`; acknowledged writes survive a crash of the
    /// process (`kill -9`).
    pub fn open(dir: &Path) -> Result<Store> {
        Store::open_with(dir, false, false)
    }

    /// Opens (or creates) the store in `dir`, replaying the write-ahead log left by a crash.
    /// With `fsync`, each group commit is also synced to the disk (survives power loss). With
    /// `keep_log_for_index`, checkpointed log segments are kept until the search index says it
    /// has committed what they hold ([`Store::index_committed`]).
    pub fn open_with(dir: &Path, fsync: bool, keep_log_for_index: bool) -> Result<Store> {
        let db = open_db(dir)?;
        let wal_dir = dir.join("wal");
        let keep_from = if keep_log_for_index { 0 } else { u64::MAX };
        let files = blobs::BlobFiles::open(dir, fsync)?;
        let (replayed, next, with_groups) = wal::replay(&wal_dir, &db, &files, keep_from)?;
        if replayed > 0 {
            tracing::info!(records = replayed, "write-ahead log replayed");
        }
        if mailbox::drop_legacy_journal(&db)? {
            tracing::info!("the journal index of an older store was dropped (the journal is read from the ingestion records)");
        }
        let wal = Arc::new(WalState {
            segment: Mutex::new(wal::Segment::create(&wal_dir, next, fsync)?),
            current: AtomicU64::new(next),
            index_needs: AtomicU64::new(keep_from),
            checkpointing: Mutex::new(()),
            failed_from: AtomicU64::new(u64::MAX),
            append_failing: std::sync::atomic::AtomicBool::new(false),
            dir: wal_dir.clone(),
        });
        let committer = committer::Committer::start(wal.clone(), !fsync);
        let inner = Inner {
            tenants: db.open_tree("tenants")?,
            domains: db.open_tree("domains")?,
            users: db.open_tree("users")?,
            addresses: db.open_tree("addresses")?,
            apps: db.open_tree("apps")?,
            service_principals: db.open_tree("service_principals")?,
            signing_keys: db.open_tree("signing_keys")?,
            items: db.open_tree(ITEMS)?,
            blobs: db.open_tree(BLOBS)?,
            files,
            copies: db.open_tree(COPIES)?,
            groups: db.open_tree(groups::GROUPS)?,
            held: groups::Held::new(next, &with_groups),
            segments: groups::SegmentFiles::new(wal_dir.clone()),
            ingestions: db.open_tree(INGESTIONS)?,
            committer,
            wal,
            cache: cache::DirectoryCache::new(),
            gone_tenants: Mutex::new(std::collections::HashSet::new()),
            any_gone: std::sync::atomic::AtomicBool::new(false),
            record_groups: Default::default(),
            all_fenced: std::sync::atomic::AtomicBool::new(false),
            db,
        };
        let inner = Arc::new(inner);
        spawn_checkpointer(Arc::downgrade(&inner));
        let store = Store { inner };
        // Built here, before any request, for stores older than the index: built on first use,
        // it could race a connector write.
        store.partner_apps_tree()?;
        spawn_orphan_sweep(Arc::downgrade(&store.inner));
        Ok(store)
    }

    /// Removes the attachment files no item names: left by a crash between a file write and
    /// the log append of a request never acknowledged, or by a failed `CreateAttachment` or
    /// import. Each directory's files are checked against the items with the committer paused
    /// (every attachment write runs on it, file and item together), so a file being written
    /// is never taken for an orphan. Returns how many went from `dir` (one of
    /// [`blobs::BlobFiles::directories`]).
    fn sweep_orphan_attachments(&self, dir: &Path) -> Result<usize> {
        let mut removed = 0;
        let keys = blobs::BlobFiles::keys_in(dir);
        for chunk in keys.chunks(256) {
            removed += self.with_committer_paused(|| -> Result<usize> {
                // Keys are 20 bytes: item id, then the attachment's index.
                let named: Vec<(&Vec<u8>, Uuid, usize)> = chunk
                    .iter()
                    .filter_map(|key| {
                        let (id, n) = key.split_at_checked(16)?;
                        let n = u32::from_be_bytes(n.try_into().ok()?) as usize;
                        Some((key, Uuid::from_slice(id).ok()?, n))
                    })
                    .collect();
                let ids: Vec<Uuid> = named.iter().map(|(_, id, _)| *id).collect();
                // An item that cannot be read keeps its files.
                let Ok(items) = self.items(&ids) else {
                    return Ok(0);
                };
                let attachments: std::collections::HashMap<Uuid, usize> = items
                    .iter()
                    .map(|item| (item.id, item.attachments.len()))
                    .collect();
                let mut removed = 0;
                for (key, id, n) in named {
                    if attachments.get(&id).is_none_or(|count| n >= *count) {
                        self.inner.files.remove(key)?;
                        removed += 1;
                    }
                }
                Ok(removed)
            })?;
        }
        Ok(removed)
    }

    /// True when no tenant exists yet (a new store, to be seeded from fixtures).
    pub fn has_no_tenants(&self) -> bool {
        self.inner.tenants.is_empty()
    }

    /// Waits until everything written so far is on disk (a checkpoint, on a blocking thread).
    pub async fn durable(&self) -> Result<()> {
        let store = self.clone();
        crate::task::spawn_blocking(move || store.flush())
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Hands `write` to the committer thread, which applies the writes queued at that moment
    /// one after the other, appends them to the write-ahead log with one write, and then
    /// answers each.
    async fn submit(&self, write: WriteJob) -> Result<()> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let turn = self.inner.committer.enqueue(Job {
            write,
            reply,
            span: tracing::Span::current(),
        })?;
        if let Some(turn) = turn {
            // This request commits the queue: first let the other requests ready to run
            // reach it, so they are one group (one append to the log).
            tokio::task::yield_now().await;
            turn.run();
        }
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `write` on the committer and waits for it, blocking (never from an async task):
    /// for writes that read what they change, in a sled transaction, and answer the payload of
    /// what they wrote for the log, with a hook to run once it is logged (see
    /// [`Logged::Applied`]). Returns what `write` returned.
    fn apply_logged<T: Send + 'static>(
        &self,
        write: impl FnOnce() -> Result<(T, wal::Payload, Option<Hook>)> + Send + 'static,
    ) -> Result<T> {
        let slot = Arc::new(Mutex::new(None));
        let out = slot.clone();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let inner = self.inner.clone();
        let store = self.clone();
        let job: WriteJob = Box::new(move || {
            let (value, payload, after) = write()?;
            store.note_group_removals(&payload);
            *out.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
            // Attachment files go once the removal of what names them is in the log.
            let doomed = payload.removed(BLOBS);
            let if_logged = (!doomed.is_empty()).then(|| {
                Box::new(move || {
                    for key in &doomed {
                        if let Err(e) = inner.files.remove(key) {
                            tracing::warn!(error = %e, "an attachment file of a removed item stays (unused)");
                        }
                    }
                }) as Hook
            });
            Ok(Logged::Applied {
                payload,
                after,
                if_logged,
            })
        });
        if let Some(turn) = self.inner.committer.enqueue(Job {
            write: job,
            reply,
            span: tracing::Span::current(),
        })? {
            turn.run();
        }
        answer.blocking_recv().map_err(|_| StoreError::Closed)??;
        let value = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        value.ok_or(StoreError::Closed)
    }

    /// The number of the log segment being written. Every write the committer applied (and
    /// handed to its [`AfterApply`]) before this segment started is in an older one. After a
    /// logged write failed to apply, it stays the number of that write's segment: the write
    /// is not in sled (nor in the search index) until a restart replays it.
    pub fn log_segment(&self) -> u64 {
        let current = self.inner.wal.current.load(Ordering::SeqCst);
        current.min(self.inner.wal.failed_from.load(Ordering::SeqCst))
    }

    /// Whether the store takes writes as it should: `Err` with the reason after a logged
    /// write failed to apply (it is applied by the next start) or while the log cannot be
    /// written (a full disk). Served by `/healthz`.
    pub fn health(&self) -> std::result::Result<(), String> {
        let failed = self.inner.wal.failed_from.load(Ordering::SeqCst);
        if failed != u64::MAX {
            return Err(format!(
                "a logged write could not be applied to the store (log segment {failed}): it is kept in the log and applied at the next start; restart the server"
            ));
        }
        if self.inner.wal.append_failing.load(Ordering::SeqCst) {
            return Err("the write-ahead log cannot be written (is the disk full?): writes fail while it lasts".into());
        }
        Ok(())
    }

    /// The search index committed everything logged before segment `first_needed`: older
    /// checkpointed segments are no longer kept for it.
    pub fn index_committed(&self, first_needed: u64) -> Result<()> {
        self.inner
            .wal
            .index_needs
            .store(first_needed, Ordering::SeqCst);
        let held = &self.inner.held;
        let deleted = wal::prune_retired(&self.inner.wal.dir, first_needed, &|n| held.is_held(n))?;
        self.inner.segments.forget(&deleted);
        Ok(())
    }

    /// The first log segment kept for the search index (what its last commit needs).
    #[cfg(test)]
    pub fn log_kept_for_index_from(&self) -> u64 {
        self.inner.wal.index_needs.load(Ordering::SeqCst)
    }

    /// The ids of the items written (or removed) by the log records of segments
    /// `from..before`, each once: what an index committed before `from` may lack.
    pub fn logged_item_ids(&self, from: u64, before: u64) -> Result<Vec<Uuid>> {
        let keys = wal::logged_keys(&self.inner.wal.dir, ITEMS, from, before)?;
        let mut seen = std::collections::HashSet::new();
        Ok(keys
            .iter()
            .filter_map(|k| Uuid::from_slice(k).ok())
            .filter(|id| seen.insert(*id))
            .collect())
    }

    /// Up to `limit` stored item ids after `after` (all from the first when `None`), in id
    /// order (time order: ids are UUIDv7), grouped or not.
    pub fn item_ids_after(&self, after: Option<Uuid>, limit: usize) -> Result<Vec<Uuid>> {
        let own = match after {
            Some(id) => self
                .inner
                .items
                .range::<&[u8], _>((Bound::Excluded(&id.as_bytes()[..]), Bound::Unbounded)),
            None => self.inner.items.iter(),
        };
        let mut ids = Vec::new();
        for key in own.keys().take(limit) {
            ids.extend(Uuid::from_slice(&key?).ok());
        }
        // Members of groups: from the group `after` is in (its later members) on.
        let grouped = match after {
            Some(id) => self.inner.groups.range::<&[u8], _>((
                Bound::Included(&groups::group_key(&id)[..]),
                Bound::Unbounded,
            )),
            None => self.inner.groups.iter(),
        };
        let mut members = Vec::new();
        for entry in grouped {
            let (key, value) = entry?;
            let group = groups::Group::decode(&key, &value)?;
            members.extend(
                group
                    .ids()
                    .filter(|id| after.is_none_or(|after| *id > after)),
            );
            if members.len() >= limit {
                break;
            }
        }
        ids.extend(members);
        ids.sort();
        ids.truncate(limit);
        Ok(ids)
    }

    /// The greatest stored item id (the newest item: ids are UUIDv7).
    pub fn last_item_id(&self) -> Result<Option<Uuid>> {
        let own = self
            .inner
            .items
            .last()?
            .and_then(|(k, _)| Uuid::from_slice(&k).ok());
        let grouped = match self.inner.groups.last()? {
            Some((key, value)) => groups::Group::decode(&key, &value)?.ids().last(),
            None => None,
        };
        Ok(own.max(grouped))
    }

    /// Runs `f` while the committer is paused between writes: every write it applied has had
    /// its [`AfterApply`] / [`OnItemsChanged`] hook run, and none is applied until `f` returns.
    /// (The search index's catch-up reads items under it, so a write is indexed either by the
    /// catch-up or by its hook after it, never both.) `f` must not wait for the committer.
    pub fn with_committer_paused<R>(&self, f: impl FnOnce() -> R) -> R {
        let _segment = self.inner.wal.lock();
        f()
    }

    /// Bytes of the store's files on disk: sled's, the write-ahead log's and the attachment
    /// files.
    pub fn size_on_disk(&self) -> Result<u64> {
        let mut total = self.inner.db.size_on_disk()? + self.inner.files.size();
        if let Ok(entries) = std::fs::read_dir(&self.inner.wal.dir) {
            for entry in entries.flatten() {
                total += entry.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        Ok(total)
    }

    /// A checkpoint, synchronously: starts a new log segment, flushes sled (everything written
    /// so far, by the committer or directly), then deletes the older segments.
    pub fn flush(&self) -> Result<()> {
        checkpoint(&self.inner)
    }

    // ----- tenants -----

    pub fn put_tenant(&self, tenant: &TenantRecord) -> Result<()> {
        let _changing = self.directory_write();
        // A tenant created again with the id of a deleted one takes requests again.
        self.unfence_tenant(tenant.id);
        let i = &self.inner;
        (&i.tenants, &i.domains).transaction(|(tenants, domains)| {
            for domain in &tenant.domains {
                if let Some(owner) = domains.get(domain.to_lowercase().as_bytes())? {
                    if owner.as_ref() != tenant.id.as_bytes() {
                        return Err(abort(StoreError::Conflict(format!(
                            "domain {domain} already belongs to another tenant"
                        ))));
                    }
                }
            }
            if let Some(old) = tenants.get(tenant.id.as_bytes())? {
                let old: TenantRecord = decode(&old).map_err(abort)?;
                for domain in old.domains {
                    domains.remove(domain.to_lowercase().as_bytes())?;
                }
            }
            for domain in &tenant.domains {
                domains.insert(domain.to_lowercase().as_bytes(), tenant.id.as_bytes())?;
            }
            tenants.insert(tenant.id.as_bytes(), encode(tenant).map_err(abort)?)?;
            Ok(())
        })?;
        Ok(())
    }

    /// The tenant, memoised (shared: a request reads it without copying it).
    pub fn tenant(&self, id: TenantId) -> Result<Option<Arc<TenantRecord>>> {
        self.inner
            .cache
            .tenant(id.0, || match self.inner.tenants.get(id.0.as_bytes())? {
                Some(bytes) => Ok(Some(decode(&bytes)?)),
                None => Ok(None),
            })
    }

    /// Whether the tenant exists.
    pub fn has_tenant(&self, id: TenantId) -> Result<bool> {
        Ok(self.tenant(id)?.is_some())
    }

    /// Taken at the start of every write to the directory trees (tenants, domains, users,
    /// addresses, apps, consents, the partner connector index): memoised reads loaded before
    /// it is taken, or before it is dropped (after the write, or its failure), are not served
    /// again.
    fn directory_write(&self) -> cache::Changing<'_> {
        self.inner.cache.changing()
    }

    /// Finds a tenant by GUID or by any of its accepted domains.
    pub fn resolve_tenant(&self, name: &str) -> Result<Option<Arc<TenantRecord>>> {
        if let Ok(id) = Uuid::parse_str(name) {
            return self.tenant(TenantId(id));
        }
        match self.inner.domains.get(name.to_lowercase().as_bytes())? {
            Some(id) => match Uuid::from_slice(&id) {
                Ok(id) => self.tenant(TenantId(id)),
                Err(_) => Ok(None),
            },
            None => Ok(None),
        }
    }

    pub fn tenants(&self) -> Result<Vec<TenantRecord>> {
        self.inner
            .tenants
            .iter()
            .values()
            .map(|v| decode(&v?))
            .collect()
    }

    /// Deletes a tenant and everything in it: users, consents, items (through the log, like
    /// [`Store::delete_items`]; `on_change` gets their ids), records. Blocking: not from an
    /// async task.
    pub fn delete_tenant(&self, id: TenantId, on_change: Option<&OnItemsChanged>) -> Result<bool> {
        let _changing = self.directory_write();
        let Some(tenant) = self.tenant(id)? else {
            return Ok(false);
        };
        // A request that passed its tenant check before this may still be on its way to the
        // committer: from the fence on, the committer refuses the tenant's writes, and every
        // write it took before the fence is in sled for the removals below to find.
        self.fence_tenant(id.0)?;
        let deleted = self.delete_tenant_data(id, &tenant, on_change);
        if deleted.is_err() {
            // The tenant is still there (its record goes last): let it work again.
            self.unfence_tenant(id.0);
        }
        deleted
    }

    fn delete_tenant_data(
        &self,
        id: TenantId,
        tenant: &TenantRecord,
        on_change: Option<&OnItemsChanged>,
    ) -> Result<bool> {
        let i = &self.inner;
        for domain in &tenant.domains {
            i.domains.remove(domain.to_lowercase().as_bytes())?;
        }
        for tree in [&i.users, &i.addresses, &i.service_principals, &i.copies] {
            for key in tree.scan_prefix(id.0.as_bytes()).keys() {
                tree.remove(key?)?;
            }
        }
        let ids = self.item_ids_of_tenant(id)?;
        for chunk in groups::chunks_keeping_groups(&ids, 256) {
            self.remove_items(chunk, None, on_change)?;
        }
        // After the items: a group's removal writes out the ingestion record riding in it,
        // in the log; so the records go through the log too, or a replay of those removals
        // after a crash would bring them back.
        let doomed = i
            .ingestions
            .scan_prefix(id.0.as_bytes())
            .keys()
            .collect::<std::result::Result<_, _>>()?;
        self.remove_ingestions(doomed)?;
        i.record_groups.forget_tenant(id.0);
        self.delete_connectors_of(id)?;
        i.tenants.remove(id.0.as_bytes())?;
        Ok(true)
    }

    /// From when this returns, the committer refuses writes of `tenant`'s requests, and every
    /// write it took before is applied (a no-op job is queued behind them and waited for).
    fn fence_tenant(&self, tenant: Uuid) -> Result<()> {
        let i = &self.inner;
        i.gone_tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant);
        i.any_gone.store(true, Ordering::SeqCst);
        self.apply_logged(|| Ok(((), wal::Payload::default(), None)))
    }

    fn unfence_tenant(&self, tenant: Uuid) {
        let mut gone = self
            .inner
            .gone_tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        gone.remove(&tenant);
        self.inner
            .any_gone
            .store(!gone.is_empty(), Ordering::SeqCst);
    }

    /// Runs `f` (a reset) with every ingestion and import refused by the committer, and every
    /// one it took before applied: a request is then wholly before the reset (and reset with
    /// the rest) or refused, never half removed. Blocking: not from an async task.
    pub fn with_ingestion_fenced<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce() -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        struct Lift<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Lift<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::SeqCst);
            }
        }
        self.inner.all_fenced.store(true, Ordering::SeqCst);
        let _lift = Lift(&self.inner.all_fenced);
        self.apply_logged(|| Ok(((), wal::Payload::default(), None)))?;
        f()
    }

    /// Refuses (on the committer) a write for a tenant deleted since its request was checked,
    /// or any while a reset runs.
    fn check_tenant_not_gone(&self, tenant: Uuid) -> Result<()> {
        let i = &self.inner;
        if i.all_fenced.load(Ordering::SeqCst) {
            return Err(StoreError::Conflict(
                "the store was being reset: the request was refused".into(),
            ));
        }
        if i.any_gone.load(Ordering::SeqCst)
            && i.gone_tenants
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&tenant)
        {
            return Err(StoreError::NotFound(format!(
                "tenant {tenant} (deleted while the request was answered)"
            )));
        }
        Ok(())
    }

    fn item_ids_of_tenant(&self, id: TenantId) -> Result<Vec<Uuid>> {
        let mut out = Vec::new();
        for value in self.inner.items.iter().values() {
            let item: ItemRecord = decode(&value?)?;
            if item.tenant == id.0 {
                out.push(item.id);
            }
        }
        for group in self.groups() {
            let group = group?;
            if group.header.tenant == id.0 {
                out.extend(group.ids());
            }
        }
        Ok(out)
    }

    // ----- users -----

    /// Creates or replaces a user and its address index. An address already mapped to another
    /// user of the tenant is a conflict.
    pub fn put_user(&self, tenant: TenantId, user: &UserRecord) -> Result<()> {
        let _changing = self.directory_write();
        let i = &self.inner;
        let upn = user.user_principal_name.to_lowercase();
        (&i.users, &i.addresses).transaction(|(users, addresses)| {
            if let Some(old) = users.get(tenant_key(tenant.0, &upn))? {
                let old: UserRecord = decode(&old).map_err(abort)?;
                for address in old.addresses() {
                    addresses.remove(tenant_key(tenant.0, &address))?;
                }
            }
            for address in user.addresses() {
                let key = tenant_key(tenant.0, &address);
                if let Some(owner) = addresses.get(&key)? {
                    if owner.as_ref() != upn.as_bytes() {
                        return Err(abort(StoreError::Conflict(format!(
                            "address {address} already belongs to {}",
                            String::from_utf8_lossy(&owner)
                        ))));
                    }
                }
                addresses.insert(key, upn.as_bytes())?;
            }
            users.insert(tenant_key(tenant.0, &upn), encode(user).map_err(abort)?)?;
            Ok(())
        })?;
        Ok(())
    }

    pub fn user(&self, tenant: TenantId, upn: &str) -> Result<Option<UserRecord>> {
        match self.inner.users.get(tenant_key(tenant.0, upn))? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    pub fn users(&self, tenant: TenantId) -> Result<Vec<UserRecord>> {
        self.inner
            .users
            .scan_prefix(tenant.0.as_bytes())
            .values()
            .map(|v| decode(&v?))
            .collect()
    }

    pub fn delete_user(&self, tenant: TenantId, upn: &str) -> Result<bool> {
        let _changing = self.directory_write();
        let Some(user) = self.user(tenant, upn)? else {
            return Ok(false);
        };
        let i = &self.inner;
        (&i.users, &i.addresses).transaction(|(users, addresses)| {
            for address in user.addresses() {
                addresses.remove(tenant_key(tenant.0, &address))?;
            }
            users.remove(tenant_key(tenant.0, &user.user_principal_name))?;
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })?;
        Ok(true)
    }

    /// The user an address (SMTP, proxy, UPN or external identity) maps to, case-insensitively.
    pub fn user_by_address(
        &self,
        tenant: TenantId,
        address: &str,
    ) -> Result<Option<Arc<UserRecord>>> {
        let address = address.trim().to_lowercase();
        self.inner.cache.user(tenant.0, &address, || {
            match self.inner.addresses.get(tenant_key(tenant.0, &address))? {
                Some(upn) => self.user(tenant, &String::from_utf8_lossy(&upn)),
                None => Ok(None),
            }
        })
    }

    // ----- applications and consents -----

    pub fn put_app(&self, app: &AppRecord) -> Result<()> {
        let _changing = self.directory_write();
        self.inner
            .apps
            .insert(app.app_id.as_bytes(), encode(app)?)?;
        Ok(())
    }

    pub fn app(&self, app_id: Uuid) -> Result<Option<AppRecord>> {
        match self.inner.apps.get(app_id.as_bytes())? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Applications registered in `tenant`.
    pub fn apps(&self, tenant: TenantId) -> Result<Vec<AppRecord>> {
        let mut out = Vec::new();
        for value in self.inner.apps.iter().values() {
            let app: AppRecord = decode(&value?)?;
            if app.home_tenant == tenant.0 {
                out.push(app);
            }
        }
        Ok(out)
    }

    /// Deletes an app registration and every consent to it.
    pub fn delete_app(&self, app_id: Uuid) -> Result<bool> {
        let _changing = self.directory_write();
        let existed = self.inner.apps.remove(app_id.as_bytes())?.is_some();
        for entry in self.inner.service_principals.iter() {
            let (key, value) = entry?;
            let sp: ServicePrincipalRecord = decode(&value)?;
            if sp.app_id == app_id {
                self.inner.service_principals.remove(key)?;
            }
        }
        Ok(existed)
    }

    fn sp_key(tenant: TenantId, app_id: Uuid) -> Vec<u8> {
        let mut key = tenant.0.as_bytes().to_vec();
        key.extend_from_slice(app_id.as_bytes());
        key
    }

    pub fn put_service_principal(&self, sp: &ServicePrincipalRecord) -> Result<()> {
        let _changing = self.directory_write();
        self.inner
            .service_principals
            .insert(Self::sp_key(TenantId(sp.tenant), sp.app_id), encode(sp)?)?;
        Ok(())
    }

    pub fn service_principal(
        &self,
        tenant: TenantId,
        app_id: Uuid,
    ) -> Result<Option<Arc<ServicePrincipalRecord>>> {
        self.inner.cache.principal(tenant.0, app_id, || {
            match self
                .inner
                .service_principals
                .get(Self::sp_key(tenant, app_id))?
            {
                Some(bytes) => Ok(Some(decode(&bytes)?)),
                None => Ok(None),
            }
        })
    }

    pub fn service_principals(&self, tenant: TenantId) -> Result<Vec<ServicePrincipalRecord>> {
        self.inner
            .service_principals
            .scan_prefix(tenant.0.as_bytes())
            .values()
            .map(|v| decode(&v?))
            .collect()
    }

    pub fn delete_service_principal(&self, tenant: TenantId, app_id: Uuid) -> Result<bool> {
        let _changing = self.directory_write();
        let removed = self
            .inner
            .service_principals
            .remove(Self::sp_key(tenant, app_id))?
            .is_some();
        Ok(removed)
    }

    // ----- signing keys -----

    pub fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        self.inner
            .signing_keys
            .iter()
            .values()
            .map(|v| decode(&v?))
            .collect()
    }

    /// Stores `key`; when it is active, every other key becomes inactive (still published).
    /// One atomic batch.
    pub fn put_signing_key(&self, key: &SigningKeyRecord) -> Result<()> {
        let mut batch = sled::Batch::default();
        if key.active {
            for other in self.signing_keys()? {
                if other.kid != key.kid && other.active {
                    let demoted = SigningKeyRecord {
                        active: false,
                        ..other
                    };
                    batch.insert(demoted.kid.as_bytes(), encode(&demoted)?);
                }
            }
        }
        batch.insert(key.kid.as_bytes(), encode(key)?);
        self.inner.signing_keys.apply_batch(batch)?;
        self.flush()
    }

    pub fn delete_signing_key(&self, kid: &str) -> Result<bool> {
        let removed = self.inner.signing_keys.remove(kid.as_bytes())?.is_some();
        self.flush()?;
        Ok(removed)
    }

    // ----- items and ingestion records -----

    /// Writes one request's items, copies, attachments and record atomically, then waits until
    /// they are durable.
    pub async fn commit_ingestion(&self, mut commit: IngestionCommit) -> Result<()> {
        let after = commit.after.take();
        let tenant = commit.record.tenant;
        let prepared = self.prepare_ingestion(commit, true)?;
        let store = self.clone();
        self.submit(Box::new(move || {
            store.check_tenant_not_gone(tenant)?;
            let mut payload = wal::Payload::with_capacity(prepared.log_size());
            prepared.log(&mut payload);
            Ok(Logged::Deferred {
                payload,
                apply: Box::new(move |at| {
                    store.apply_ingestion(&prepared, at)?;
                    if let Some(after) = after {
                        after(prepared.records);
                    }
                    Ok(())
                }),
            })
        }))
        .await
    }

    /// Encodes everything one request writes (on the request's thread, not the committer's).
    /// With `grouped`, items of one group ([`ItemIds`]) are written as that group (see
    /// [`groups`]): only for writes applied once logged ([`Logged::Deferred`]), whose log
    /// record is then where their items are.
    fn prepare_ingestion(
        &self,
        commit: IngestionCommit,
        grouped: bool,
    ) -> Result<PreparedIngestion> {
        let encoded = commit
            .items
            .iter()
            .map(|(item, _)| encode_compact(item))
            .collect::<Result<Vec<_>>>()?;
        let group = grouped
            .then(|| {
                let items: Vec<(&ItemRecord, &[u8])> = commit
                    .items
                    .iter()
                    .zip(&encoded)
                    .map(|((item, _), bytes)| (item, bytes.as_slice()))
                    .collect();
                groups::GroupPlan::of(&items)
            })
            .flatten();
        // The ingestion record rides in the group's entry when the group is the request's
        // (its key is the correlation id's: `ItemIds::for_request`): one sled key fewer.
        let embedded = group.as_ref().is_some_and(|g| {
            g.key == groups::group_key(&commit.record.correlation_id)
                && g.header.tenant == commit.record.tenant
        });
        let ingestion = encode_compact(&commit.record)?;
        let group_header = group.as_ref().map_or_else(Vec::new, |g| {
            groups::header_value(&g.header, embedded.then_some(ingestion.as_slice()))
        });
        let mut writes = PreparedIngestion {
            group,
            embedded,
            group_header,
            items: Vec::with_capacity(commit.items.len()),
            records: Vec::with_capacity(commit.items.len()),
            blobs: Vec::new(),
            copies: Vec::new(),
            ingestion: (
                [
                    commit.record.tenant.as_bytes().as_slice(),
                    commit.record.correlation_id.as_bytes(),
                ]
                .concat(),
                ingestion,
            ),
        };
        for ((item, attachments), bytes) in commit.items.into_iter().zip(encoded) {
            if writes.group.is_none() {
                for copy in &item.copies {
                    writes
                        .copies
                        .push(copy_key(item.tenant, copy, item.received, item.id));
                }
                // (A group's members are encoded in its plan.)
                writes.items.push((item.id, bytes));
            }
            for (n, content) in attachments.into_iter().enumerate() {
                writes.blobs.push((blob_key(item.id, n), content));
            }
            writes.records.push(item);
        }
        Ok(writes)
    }

    /// Applies a prepared request to sled, after the committer appended it to the log at `at`
    /// (which is what makes it all-or-nothing across crashes: see [`Logged::Deferred`]). In
    /// the order readers follow references, so a reader never finds half a request:
    /// attachments before the items naming them, items (or their group, pointing at `at`)
    /// before the copies listing them in folders, the ingestion record and journal entry last.
    fn apply_ingestion(&self, writes: &PreparedIngestion, at: wal::RecordAt) -> Result<()> {
        let i = &self.inner;
        if writes.group.is_none() {
            // (A group's attachments stay in its log record: `Store::attachment`.)
            writes.write_files(&i.files, false)?;
        }
        match &writes.group {
            Some(group) => {
                let entry = wal::GroupRef {
                    seq: at.seq,
                    offset: at.offset,
                    header: writes.group_header.clone(),
                };
                i.held.add(at.seq);
                i.groups.insert(group.key, entry.encode())?;
                for (key, members) in &group.copies {
                    i.copies.insert(key.as_slice(), members.as_slice())?;
                }
                if writes.embedded {
                    // (The record's key: tenant || correlation id.)
                    if let Some(Ok(tenant)) = writes.ingestion.0.get(..16).map(Uuid::from_slice) {
                        i.record_groups.added(tenant, group.key);
                    }
                }
            }
            None => {
                for (id, bytes) in &writes.items {
                    i.items.insert(id.as_bytes(), bytes.as_slice())?;
                }
                for key in &writes.copies {
                    i.copies.insert(key.as_slice(), &[])?;
                }
            }
        }
        if !writes.embedded {
            i.ingestions
                .insert(writes.ingestion.0.as_slice(), writes.ingestion.1.as_slice())?;
        }
        Ok(())
    }

    /// Records a request that stored nothing (refused or faulted), for the journal: logged by
    /// the committer like an ingestion, so a `kill -9` after the answer keeps it.
    pub async fn record_ingestion(&self, record: &IngestionRecord) -> Result<()> {
        let mut key = record.tenant.as_bytes().to_vec();
        key.extend_from_slice(record.correlation_id.as_bytes());
        let value = encode_compact(record)?;
        let tenant = record.tenant;
        let store = self.clone();
        self.submit(Box::new(move || {
            store.check_tenant_not_gone(tenant)?;
            let mut payload = wal::Payload::with_capacity(key.len() + value.len() + 64);
            payload.insert(INGESTIONS, &key, &value);
            Ok(Logged::Deferred {
                payload,
                apply: Box::new(move |_| {
                    store.inner.ingestions.insert(key, value)?;
                    Ok(())
                }),
            })
        }))
        .await
    }

    pub fn ingestion(
        &self,
        tenant: TenantId,
        correlation_id: Uuid,
    ) -> Result<Option<IngestionRecord>> {
        // In the entry of the request's group (see `groups::Group::record`), or in one of its
        // own: read in that order, since a group's removal moves the record from the first
        // place to the second (in one write), never back.
        if let Some(group) = self.group(&groups::group_key(&correlation_id))? {
            if let Some(bytes) = group.record() {
                if group.header.tenant == tenant.0 {
                    let record: IngestionRecord = decode(bytes)?;
                    if record.correlation_id == correlation_id {
                        return Ok(Some(record));
                    }
                }
            }
        }
        let mut key = tenant.0.as_bytes().to_vec();
        key.extend_from_slice(correlation_id.as_bytes());
        match self.inner.ingestions.get(key)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    pub fn item(&self, id: Uuid) -> Result<Option<ItemRecord>> {
        if let Some(item) = self.grouped_item(id)? {
            return Ok(Some(item));
        }
        match self.inner.items.get(id.as_bytes())? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Attachment `n` of item `id`: (a member of a stored group) in the group's log record, or
    /// a file, or (stores of earlier versions) in sled.
    pub fn attachment(&self, id: Uuid, n: usize) -> Result<Option<Vec<u8>>> {
        let key = blob_key(id, n);
        // The group first: while it stands, an explode may be writing its attachments out as
        // files (a file met then could be part-written); once it is gone, they are written.
        if let Some(content) = self.grouped_attachment(id, &key)? {
            return Ok(Some(content));
        }
        if let Some(content) = self.inner.files.get(&key)? {
            return Ok(Some(content));
        }
        Ok(self.inner.blobs.get(key)?.map(|v| v.to_vec()))
    }

    /// Appends an attachment to a stored item (EWS `CreateAttachment`), atomically and durably
    /// (through the committer and its log, like an ingestion); `on_change` gets the item's id.
    /// Returns the attachment's index.
    pub async fn add_attachment(
        &self,
        id: Uuid,
        meta: AttachmentMeta,
        content: Vec<u8>,
        max_item_bytes: u64,
        on_change: Option<OnItemsChanged>,
    ) -> Result<usize> {
        let store = self.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Box::new(move || {
            let i = &store.inner;
            let trees = (&i.items, &i.copies, &i.groups, &i.ingestions);
            let (index, payload) = trees.transaction(|(items, copies, groups, ingestions)| {
                let mut payload = wal::Payload::default();
                store.explode_group_of(&id, [items, copies, groups, ingestions], &mut payload)?;
                let Some(bytes) = items.get(id.as_bytes())? else {
                    return Err(abort(StoreError::NotFound(format!("item {id}"))));
                };
                let mut item: ItemRecord = decode(&bytes).map_err(abort)?;
                if item.size + meta.size > max_item_bytes {
                    return Err(abort(StoreError::Conflict(format!(
                        "the item would exceed the maximum size of {max_item_bytes} bytes"
                    ))));
                }
                let index = item.attachments.len();
                item.size += meta.size;
                item.attachments.push(meta.clone());
                let blob = blob_key(id, index);
                let record = encode_compact(&item).map_err(abort)?;
                // Before the record that names it. Should the transaction fail from here, the
                // file is an orphan that the next attachment at this index overwrites.
                i.files
                    .put_synced([(blob.as_slice(), content.as_slice())])
                    .map_err(abort)?;
                items.insert(id.as_bytes(), record.as_slice())?;
                payload.insert(BLOBS, &blob, &content);
                payload.insert(ITEMS, id.as_bytes(), &record);
                Ok((index, payload))
            })?;
            store.note_group_removals(&payload);
            let _ = tx.send(index);
            Ok(Logged::Applied {
                payload,
                after: on_change.map(|on_change| -> Hook { Box::new(move || on_change(&[id])) }),
                if_logged: None,
            })
        }))
        .await?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// Number of copies in one folder of a mailbox.
    pub fn folder_count(&self, tenant: TenantId, mailbox: &str, folder: &str) -> usize {
        mailbox::copy_entries(
            &self.inner.copies,
            copy_prefix(tenant.0, mailbox, Some(folder)),
        )
        .flatten()
        .map(|(key, value)| mailbox::copies_in(&key, &value))
        .sum()
    }

    /// Whether the mailbox `upn` holds any copy.
    pub fn mailbox_has_copies(&self, tenant: TenantId, upn: &str) -> Result<bool> {
        Ok(self
            .inner
            .copies
            .scan_prefix(copy_prefix(tenant.0, upn, None))
            .keys()
            .next()
            .transpose()?
            .is_some())
    }

    /// Item ids in one folder of a mailbox, newest first.
    pub fn folder_items(
        &self,
        tenant: TenantId,
        mailbox: &str,
        folder: &str,
        skip: usize,
        top: usize,
    ) -> Result<Vec<Uuid>> {
        let mut out = Vec::new();
        let mut skipped = 0;
        for entry in mailbox::copy_entries(
            &self.inner.copies,
            copy_prefix(tenant.0, mailbox, Some(folder)),
        ) {
            let (key, value) = entry?;
            for copy in mailbox::parse_copies(&key, &value) {
                if skipped < skip {
                    skipped += 1;
                } else if out.len() < top {
                    out.push(copy.item);
                } else {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }
}

fn blob_key(item: Uuid, n: usize) -> Vec<u8> {
    let mut key = item.as_bytes().to_vec();
    key.extend_from_slice(&(n as u32).to_be_bytes());
    key
}

/// The encoded keys and values of one ingestion request.
struct PreparedIngestion {
    /// Its items as one group (`items` are then its members, `copies` empty).
    group: Option<groups::GroupPlan>,
    /// The ingestion record is written in the group's header (and entry), not on its own.
    embedded: bool,
    /// The value of the group's header operation, which its entry keeps (empty: no group).
    group_header: Vec<u8>,
    items: Vec<(Uuid, Vec<u8>)>,
    /// The items themselves, for the [`AfterApply`] hook.
    records: Vec<ItemRecord>,
    blobs: Vec<(Vec<u8>, Vec<u8>)>,
    copies: Vec<Vec<u8>>,
    ingestion: (Vec<u8>, Vec<u8>),
}

impl PreparedIngestion {
    /// Writes the attachment files: before anything that names them. `synced` for a write
    /// that sled gets before the log (see [`blobs::BlobFiles::put_synced`]).
    fn write_files(&self, files: &blobs::BlobFiles, synced: bool) -> Result<()> {
        if synced {
            return files.put_synced(
                self.blobs
                    .iter()
                    .map(|(key, content)| (key.as_slice(), content.as_slice())),
            );
        }
        for (key, content) in &self.blobs {
            files.put(key, content)?;
        }
        Ok(())
    }

    /// Writes into the transactional trees `[items, copies, ingestions]`, after
    /// [`PreparedIngestion::write_files`] (never grouped: see [`Store::prepare_ingestion`]).
    fn write(
        &self,
        [items, copies, ingestions]: [&sled::transaction::TransactionalTree; 3],
    ) -> std::result::Result<(), sled::transaction::UnabortableTransactionError> {
        for (id, bytes) in &self.items {
            items.insert(id.as_bytes(), bytes.as_slice())?;
        }
        for key in &self.copies {
            copies.insert(key.as_slice(), &[])?;
        }
        ingestions.insert(self.ingestion.0.as_slice(), self.ingestion.1.as_slice())?;
        Ok(())
    }

    /// About the size of [`PreparedIngestion::log`]'s operations (tree names, lengths included).
    fn log_size(&self) -> usize {
        const OP: usize = 32;
        let blobs: usize = self.blobs.iter().map(|(k, v)| OP + k.len() + v.len()).sum();
        let items: usize = self.items.iter().map(|(_, v)| OP + 16 + v.len()).sum();
        let copies: usize = self.copies.iter().map(|k| OP + k.len()).sum();
        let grouped: usize = self.group.as_ref().map_or(0, |g| {
            2 * OP
                + g.members.len()
                + g.copies
                    .iter()
                    .map(|(k, v)| OP + k.len() + v.len())
                    .sum::<usize>()
        });
        let record = 2 * OP + self.ingestion.0.len() + self.ingestion.1.len();
        blobs + items + copies + grouped + record + self.group_header.len()
    }

    /// The same writes, for the write-ahead log.
    fn log(&self, payload: &mut wal::Payload) {
        // A group's header is the record's first operation, its members right after it
        // (where its readers find them: see `wal::Payload::group_header`).
        if let Some(group) = &self.group {
            debug_assert!(payload.is_empty());
            payload.group_header(groups::GROUPS, &group.key, &self.group_header);
            payload.append(&group.members);
        }
        for (key, content) in &self.blobs {
            payload.insert(BLOBS, key, content);
        }
        match &self.group {
            Some(group) => {
                for (key, members) in &group.copies {
                    payload.insert(COPIES, key, members);
                }
            }
            None => {
                for (id, bytes) in &self.items {
                    payload.insert(ITEMS, id.as_bytes(), bytes);
                }
                for key in &self.copies {
                    payload.insert(COPIES, key, &[]);
                }
            }
        }
        if !self.embedded {
            payload.insert(INGESTIONS, &self.ingestion.0, &self.ingestion.1);
        }
    }
}

/// Starts a new log segment, flushes sled, and deletes the segments it covers.
fn checkpoint(inner: &Inner) -> Result<()> {
    let _one_at_a_time = inner
        .wal
        .checkpointing
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let (covered, fsync) = {
        let mut segment = inner.wal.lock();
        let covered = if segment.written() > 0 {
            let closed = segment.rotate()?;
            inner.wal.current.store(segment.seq(), Ordering::SeqCst);
            Some(closed)
        } else {
            segment.seq().checked_sub(1)
        };
        (covered, segment.fsync())
    };
    if let Some(seq) = covered {
        // Groups in sled point into these segments' records: those must be on disk first,
        // `--fsync` or not (sled's flush is synced; a checkpointed item must survive a power
        // loss as it did when sled held it).
        wal::sync_held(&inner.wal.dir, seq, &|n| inner.held.is_held(n))?;
    }
    inner.db.flush()?;
    if fsync {
        // The attachment files the covered segments wrote must outlive them.
        inner.files.sync()?;
    }
    // After a failed apply, the segments from that write's on stay live (replayed whole at
    // the next start); sled has everything older.
    let failed_from = inner.wal.failed_from.load(Ordering::SeqCst);
    if let Some(seq) = covered
        .filter(|_| failed_from > 0)
        .map(|seq| seq.min(failed_from - 1))
    {
        let keep_from = inner.wal.index_needs.load(Ordering::SeqCst);
        let held = |n| inner.held.is_held(n);
        let mut deleted = wal::retire_up_to(&inner.wal.dir, seq, keep_from, &held)?;
        deleted.extend(wal::prune_retired(&inner.wal.dir, keep_from, &held)?);
        inner.segments.forget(&deleted);
        if fsync {
            // A retired segment must not come back as live after a power loss (it would be
            // replayed over newer writes).
            wal::sync_dir(&inner.wal.dir)?;
        }
    }
    Ok(())
}

/// Every second, a checkpoint when the log has anything new (so the log stays short and a
/// restart replays little). Ends with the store.
fn spawn_checkpointer(inner: Weak<Inner>) {
    let spawned = std::thread::Builder::new()
        .name("store-checkpoint".into())
        .spawn(move || {
            // The first collection waits a second or so after the start.
            let now = std::time::Instant::now();
            let mut last_collection = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
            loop {
                std::thread::sleep(Duration::from_millis(250));
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                let (written, age) = {
                    let segment = inner.wal.lock();
                    (segment.written(), segment.age())
                };
                if written > 0
                    && (age >= Duration::from_secs(1) || written >= wal::CHECKPOINT_BYTES)
                {
                    if let Err(e) = checkpoint(&inner) {
                        tracing::error!(error = %e, "checkpoint failed");
                    }
                }
                // Segments no group points into any more go (once after the start, then after
                // groups were removed; at most every 2 s: it reads every group's entry).
                if inner.held.due() && last_collection.elapsed() >= Duration::from_secs(2) {
                    last_collection = std::time::Instant::now();
                    let store = Store {
                        inner: inner.clone(),
                    };
                    match store.collect_segments() {
                        Ok(deleted) if !deleted.is_empty() => {
                            tracing::debug!(
                                segments = deleted.len(),
                                "log segments no item group needs deleted"
                            );
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!(error = %e, "log segments could not be collected")
                        }
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "the checkpoint thread could not start: the log grows until shutdown");
    }
}

/// Once, in the background after the store opens: [`Store::sweep_orphan_attachments`].
fn spawn_orphan_sweep(inner: Weak<Inner>) {
    let spawned = std::thread::Builder::new()
        .name("attachment-sweep".into())
        .spawn(move || {
            let Some(dirs) = inner.upgrade().map(|inner| inner.files.directories()) else {
                return;
            };
            let mut removed = 0;
            for dir in dirs {
                // The store is held one directory at a time: it can close meanwhile.
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                match (Store { inner }).sweep_orphan_attachments(&dir) {
                    Ok(n) => removed += n,
                    Err(e) => {
                        tracing::warn!(error = %e, "sweeping unused attachment files failed");
                        return;
                    }
                }
            }
            if removed > 0 {
                tracing::info!(files = removed, "unused attachment files removed");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "the attachment sweep could not start");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// A store open elsewhere is refused as in use, once [`OPEN_WAIT`] has passed; a store
    /// dropped in this process opens again at once, whatever its threads still do.
    #[test]
    fn a_store_in_use_is_refused_and_a_dropped_one_opens_again() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let started = std::time::Instant::now();
        let refused = Store::open(dir.path()).err().expect("refused");
        assert!(matches!(refused, StoreError::InUse(_)), "{refused:?}");
        assert!(started.elapsed() >= OPEN_WAIT);
        assert!(refused.to_string().contains("in use"), "{refused}");
        drop(store);
        Store::open(dir.path()).expect("opened again");
    }

    /// Checkpoints asked for by several threads at once (the periodic one, `durable()` of
    /// admin writes) and index commits pruning retired segments meanwhile never fail on a
    /// segment another one already renamed or removed.
    #[test]
    fn concurrent_checkpoints_and_prunes_do_not_fail() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open_with(dir.path(), false, true).expect("store");
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || -> Result<()> {
                    for n in 0..150u32 {
                        store.apply_logged(move || {
                            let key = [&[t][..], &n.to_be_bytes()].concat();
                            store_marker(&key)
                        })?;
                        store.flush()?;
                        if n % 3 == 0 {
                            store.index_committed(store.log_segment())?;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for thread in threads {
            thread
                .join()
                .expect("thread")
                .expect("no checkpoint failed");
        }
    }

    /// A write applied in sled whose log append fails (a full disk) is answered as one that
    /// may be stored, not as one that stored nothing, and its hook (the search index's) still
    /// runs, so the index agrees with sled; the log then goes on in a new segment.
    #[test]
    fn an_applied_write_the_log_refuses_may_be_stored() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open_with(dir.path(), false, true).expect("store");
        let before = store.log_segment();
        store.inner.wal.lock().fail_writes();
        let hooked = Arc::new(AtomicBool::new(false));
        let write = |key: &'static [u8], hooked: Arc<AtomicBool>| {
            let db = store.inner.db.clone();
            move || -> Result<((), wal::Payload, Option<Hook>)> {
                db.open_tree("markers")?.insert(key, b"1")?;
                let mut payload = wal::Payload::default();
                payload.insert("markers", key, b"1");
                let hook: Hook = Box::new(move || hooked.store(true, Ordering::SeqCst));
                Ok(((), payload, Some(hook)))
            }
        };
        let refused = store
            .apply_logged(write(b"first", hooked.clone()))
            .expect_err("the log refused it");
        assert!(
            matches!(refused, StoreError::OutcomeUnknown(_)),
            "{refused:?}"
        );
        assert!(hooked.load(Ordering::SeqCst), "the hook ran");
        assert!(
            store.health().is_err(),
            "unhealthy while the log cannot be written"
        );
        let markers = store.inner.db.open_tree("markers").expect("tree");
        assert!(
            markers.get(b"first").expect("read").is_some(),
            "it is in sled"
        );
        store
            .apply_logged(write(b"second", Arc::new(AtomicBool::new(false))))
            .expect("the next write is logged, in a new segment");
        assert!(store.log_segment() > before);
        assert!(store.health().is_ok(), "healthy again");
    }

    /// A logged write that fails to apply to sled (an I/O error) is answered as one that may
    /// be stored, makes the store unhealthy, and stays in the log: later checkpoints keep its
    /// segment live and the search index never commits past it, so the next start applies it
    /// and re-indexes it.
    #[test]
    fn a_logged_write_that_fails_to_apply_is_applied_and_indexed_at_the_next_start() {
        let dir = tempfile::tempdir().expect("dir");
        let item = mailbox::tests::item(Uuid::new_v4(), &["a@failed.example"], Utc::now());
        let id = item.id;
        let failed_in = {
            let store = Store::open_with(dir.path(), false, true).expect("store");
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            let bytes = encode_compact(&item).expect("encoded");
            let failing: WriteJob = Box::new(move || {
                let mut payload = wal::Payload::default();
                payload.insert(ITEMS, id.as_bytes(), &bytes);
                Ok(Logged::Deferred {
                    payload,
                    apply: Box::new(|_| Err(StoreError::Log("injected I/O error".into()))),
                })
            });
            let answer = runtime.block_on(store.submit(failing));
            assert!(
                matches!(answer, Err(StoreError::OutcomeUnknown(_))),
                "{answer:?}"
            );
            assert!(store.health().is_err(), "unhealthy");
            let failed_in = store.log_segment();
            for key in [&b"later"[..], b"later still"] {
                store
                    .apply_logged(move || store_marker(key))
                    .expect("logged");
                store.flush().expect("checkpoint");
            }
            assert!(
                store.inner.wal.current.load(Ordering::SeqCst) > failed_in,
                "the log went on"
            );
            assert_eq!(store.log_segment(), failed_in, "the index must not pass it");
            store.index_committed(store.log_segment()).expect("index");
            assert!(store.item(id).expect("read").is_none(), "not applied");
            failed_in
        };
        let store = Store::open_with(dir.path(), false, true).expect("reopened");
        assert!(store.item(id).expect("read").is_some(), "applied by replay");
        assert!(store.health().is_ok());
        let named = store
            .logged_item_ids(failed_in, u64::MAX)
            .expect("logged ids");
        assert!(named.contains(&id), "the next catch-up re-indexes it");
        let markers = store.inner.db.open_tree("markers").expect("tree");
        assert!(markers.get(b"later still").expect("read").is_some());
    }

    /// The attachment files of a removal go only once the log has the removal: when the
    /// append fails, a crash before the next checkpoint could bring the item back.
    #[test]
    fn attachment_files_of_a_removal_the_log_refuses_stay() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open_with(dir.path(), false, true).expect("store");
        let remove = |key: &'static [u8]| {
            move || -> Result<((), wal::Payload, Option<Hook>)> {
                let mut payload = wal::Payload::default();
                payload.remove(BLOBS, key);
                Ok(((), payload, None))
            }
        };
        for key in [&b"kept"[..], b"gone"] {
            store
                .inner
                .files
                .put_synced([(key, &b"content"[..])])
                .expect("file");
        }
        store.inner.wal.lock().fail_writes();
        let refused = store.apply_logged(remove(b"kept")).expect_err("refused");
        assert!(
            matches!(refused, StoreError::OutcomeUnknown(_)),
            "{refused:?}"
        );
        assert!(
            store.inner.files.get(b"kept").expect("read").is_some(),
            "kept"
        );
        store.apply_logged(remove(b"gone")).expect("logged");
        assert!(
            store.inner.files.get(b"gone").expect("read").is_none(),
            "removed"
        );
    }

    /// A request that passed its tenant check before the tenant was deleted is refused by the
    /// committer, not stored for a tenant that no longer exists; a tenant created again with
    /// that id takes requests again. So is every request while a reset runs.
    #[test]
    fn a_write_for_a_tenant_deleted_meanwhile_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let tenant = TenantRecord {
            id: Uuid::new_v4(),
            display_name: "Gone".into(),
            domains: vec!["gone.example".into()],
            third_party_mailbox: None,
            retention_days: None,
        };
        let commit = || {
            let item = mailbox::tests::item(tenant.id, &["a@gone.example"], Utc::now());
            let id = item.id;
            let commit = IngestionCommit {
                record: mailbox::tests::record_of(&item),
                items: vec![(item, vec![])],
                after: None,
            };
            (id, runtime.block_on(store.commit_ingestion(commit)))
        };
        store.put_tenant(&tenant).expect("tenant");
        let (before, stored) = commit();
        stored.expect("stored while the tenant exists");
        assert!(store
            .delete_tenant(TenantId(tenant.id), None)
            .expect("delete"));
        assert!(
            store.item(before).expect("read").is_none(),
            "removed with the tenant"
        );
        let (after, refused) = commit();
        assert!(
            matches!(refused, Err(StoreError::NotFound(_))),
            "{refused:?}"
        );
        assert!(store.item(after).expect("read").is_none(), "nothing stored");
        store.put_tenant(&tenant).expect("created again");
        let (again, stored) = commit();
        stored.expect("stored again");
        assert!(store.item(again).expect("read").is_some());

        // While a reset runs, every ingestion is refused; after it, they are taken again.
        let during = store
            .with_ingestion_fenced(|| -> Result<_> { Ok(commit()) })
            .expect("fenced");
        assert!(
            matches!(during.1, Err(StoreError::Conflict(_))),
            "{:?}",
            during.1
        );
        assert!(
            store.item(during.0).expect("read").is_none(),
            "nothing stored"
        );
        let (after_reset, stored) = commit();
        stored.expect("taken again after the reset");
        assert!(store.item(after_reset).expect("read").is_some());
    }

    fn store_marker(key: &[u8]) -> Result<((), wal::Payload, Option<Hook>)> {
        let mut payload = wal::Payload::default();
        payload.insert("markers", key, b"1");
        Ok(((), payload, None))
    }
}
