//! Mailbox inspection and maintenance over the stored items: deletion (subject to litigation
//! holds), mailbox and folder listings, the ingestion journal (newest first), reset and the
//! retention sweep with its records.
//!
//! The ingestion journal is the `ingestions` tree itself, read backwards: its keys are
//! `tenant (16) || correlation id (16)`, and correlation ids are UUIDv7, made when a request
//! arrives (monotonic in a process), so a tenant's records sort by arrival. (Stores before
//! this kept a second tree, `ingestion_journal`, ordered by received time: one more sled
//! key per request; it is dropped when such a store is opened, see [`drop_legacy_journal`].)
//! The record of a request that stored an item group rides in the group's entry instead
//! (`groups::Group::record`, keyed by the correlation id's first 14 bytes) until the group
//! is removed, which writes it out to `ingestions`: the journal merges both, newest first.
//!
//! Trees of this module (besides `items`, `blobs`, `copies` and `ingestions`):
//! - `retention_sweeps`: `tenant (16) || (u64::MAX - started micros) (8, BE) || sweep id (16)`
//!   -> [`SweepRecord`] (JSON).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::{
    ConflictableTransactionError, TransactionalTree, UnabortableTransactionError,
};
use sled::Transactional;
use uuid::Uuid;

use super::model::*;
use super::{
    abort, blob_key, copy_key, copy_prefix, decode, encode, encode_compact, groups, wal, Hook,
    OnItemsChanged, Result, Store, StoreError, BLOBS, COPIES, INGESTIONS, ITEMS,
};
use crate::domain::TenantId;

/// Items removed per transaction by bulk operations (reset, retention).
const CHUNK: usize = 256;
/// The journal index of stores made before the journal was read from `ingestions`.
const LEGACY_JOURNAL_TREE: &str = "ingestion_journal";
const SWEEPS_TREE: &str = "retention_sweeps";
const META_TREE: &str = "mailbox_meta";
/// The marker of [`LEGACY_JOURNAL_TREE`] being built.
const LEGACY_JOURNAL_BUILT: &[u8] = b"journal-built";

/// Drops the journal index of a store made before the journal was read from `ingestions`
/// (after the log's replay, which may have written to it). Returns whether there was one.
pub(super) fn drop_legacy_journal(db: &sled::Db) -> Result<bool> {
    let had = db
        .tree_names()
        .iter()
        .any(|name| name.as_ref() == LEGACY_JOURNAL_TREE.as_bytes());
    if had {
        db.drop_tree(LEGACY_JOURNAL_TREE)?;
    }
    db.open_tree(META_TREE)?.remove(LEGACY_JOURNAL_BUILT)?;
    Ok(had)
}

/// What [`Store::delete_items`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeleteOutcome {
    /// Items removed (copies, attachments and record).
    pub deleted: Vec<Uuid>,
    /// Items that lost their copies in the mailboxes the deletion was limited to, and keep
    /// their copies in other mailboxes.
    pub changed: Vec<Uuid>,
    /// Copies removed (of deleted and changed items).
    pub copies_removed: usize,
    /// Items kept because a copy is in the mailbox of a user on litigation hold (that mailbox).
    pub held: Vec<(Uuid, String)>,
}

/// What [`Store::reset`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResetOutcome {
    /// Number of items removed.
    pub removed: usize,
    /// Ids of the removed items.
    pub removed_ids: Vec<Uuid>,
    /// Items kept because a copy is under hold, with that mailbox.
    pub kept_under_hold: Vec<(Uuid, String)>,
    /// Ingestion records removed.
    pub ingestions_removed: usize,
}

/// One copy removed by a retention sweep.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SweptCopy {
    pub item_id: Uuid,
    pub mailbox: String,
    pub folder: String,
    pub received: DateTime<Utc>,
}

/// The recorded result of one retention sweep of one tenant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SweepRecord {
    pub id: Uuid,
    pub tenant: Uuid,
    /// `scheduled` (the periodic sweep) or `manual` (the admin API).
    pub trigger: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    /// The tenant's retention when the sweep ran (None when the cutoff was given explicitly).
    pub retention_days: Option<u32>,
    /// Copies received before this instant were due.
    pub cutoff: DateTime<Utc>,
    /// Copies removed (at most [`SweepRecord::LISTED`] listed in `removed`).
    pub copies_removed: usize,
    /// Items removed entirely (no copy left).
    pub items_removed: usize,
    /// Due copies kept because their mailbox is on litigation hold.
    pub copies_kept_under_hold: usize,
    pub removed: Vec<SweptCopy>,
    /// Ids of the items removed entirely (at most [`SweepRecord::LISTED`]).
    pub removed_item_ids: Vec<Uuid>,
    /// Ids of the items that lost copies but still exist (at most [`SweepRecord::LISTED`]).
    pub changed_item_ids: Vec<Uuid>,
}

impl SweepRecord {
    /// How many copies and item ids a record lists (the counts are always complete).
    pub const LISTED: usize = 1000;
}

/// What a sweep did, with every removed item id (for the search index).
pub struct SweepOutcome {
    pub record: SweepRecord,
    pub removed_item_ids: Vec<Uuid>,
    pub changed_item_ids: Vec<Uuid>,
}

/// A folder of a mailbox as the copies index knows it (paths lower case).
#[derive(Debug, Clone, PartialEq)]
pub struct CopyEntry {
    pub mailbox: String,
    pub folder: String,
    pub received_micros: u64,
    pub item: Uuid,
}

/// The copies an entry of the `copies` tree lists: one (`copy_key`: the key ends with the
/// item's id), or those of the members of an item group in one folder
/// (`groups::copy_group_key`: the key ends with the group's key, the value lists the members).
pub(super) fn parse_copies(key: &[u8], value: &[u8]) -> Vec<CopyEntry> {
    parse_copies_with(key, value).unwrap_or_default()
}

fn parse_copies_with(key: &[u8], value: &[u8]) -> Option<Vec<CopyEntry>> {
    // tenant (16) || mailbox \0 folder \0 || inverted micros (8) || item id (16) | group key
    let mut parts = key.get(16..)?.splitn(3, |b| *b == 0);
    let mailbox = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let folder = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let tail = parts.next()?;
    let inverted = u64::from_be_bytes(tail.get(..8)?.try_into().ok()?);
    let entry = |item| CopyEntry {
        mailbox: mailbox.clone(),
        folder: folder.clone(),
        received_micros: u64::MAX - inverted,
        item,
    };
    match tail.len() - 8 {
        16 => Some(vec![entry(Uuid::from_slice(&tail[8..]).ok()?)]),
        groups::KEY_LEN => {
            let group: groups::GroupKey = tail[8..].try_into().ok()?;
            Some(
                groups::member_indices(value)
                    .map(|n| entry(groups::member_id(&group, n)))
                    .collect(),
            )
        }
        _ => None,
    }
}

/// The entries of the `copies` tree under `prefix`, in key order, each copy once.
///
/// A change to one member of a group explodes the group in one transaction: its members get
/// entries of their own, whose keys are the group's entry's key and two bytes (so they sort
/// right after it), and the group's entry goes. A sled iterator reads a leaf at a time, so one
/// that read the group's entry before the change can read the members' new entries after it,
/// in the next leaf: they are skipped, since the group's entry listed them (both never exist
/// together in the tree).
pub(super) fn copy_entries(
    copies: &sled::Tree,
    prefix: impl AsRef<[u8]>,
) -> OncePerCopy<sled::Iter> {
    OncePerCopy {
        inner: copies.scan_prefix(prefix),
        group: None,
    }
}

/// See [`copy_entries`].
pub(super) struct OncePerCopy<I> {
    inner: I,
    /// The key of the last group entry read.
    group: Option<sled::IVec>,
}

impl<I: Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> Iterator for OncePerCopy<I> {
    type Item = sled::Result<(sled::IVec, sled::IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (key, value) = match self.inner.next()? {
                Ok(entry) => entry,
                Err(e) => return Some(Err(e)),
            };
            let listed = self
                .group
                .as_ref()
                .is_some_and(|group| key.len() == group.len() + 2 && key.starts_with(group));
            if listed {
                continue;
            }
            // (A group's entry lists its members; a copy's own entry is empty.)
            if !value.is_empty() {
                self.group = Some(key.clone());
            }
            return Some(Ok((key, value)));
        }
    }
}

/// Whether a key of the `copies` tree is an entry of the group `group`.
pub(super) fn is_entry_of_group(key: &[u8], group: &groups::GroupKey) -> bool {
    let mut parts = key.get(16..).unwrap_or_default().splitn(3, |b| *b == 0);
    let tail = parts.nth(2).unwrap_or_default();
    tail.len() == 8 + groups::KEY_LEN && tail.ends_with(group)
}

/// How many copies an entry of the `copies` tree lists (see [`parse_copies`]).
pub(super) fn copies_in(key: &[u8], value: &[u8]) -> usize {
    // A group's entry ends with its 14-byte key, a copy's own with a 16-byte id; a group's
    // value lists two bytes a member, a copy's own is empty.
    if value.is_empty() {
        usize::from(key.len() >= 16 + 2 + 24)
    } else {
        value.len() / 2
    }
}

/// A journal entry before decoding: the group key (or a record's own key's first 14 bytes),
/// the value, and whether it is a group's entry.
type JournalEntry = Result<JournalRow>;
type JournalRow = (groups::GroupKey, sled::IVec, bool);

/// Whether a correlation id is a v7 UUID (its first bytes are its time: the journal's order).
fn is_time_ordered(id: &[u8]) -> bool {
    id.len() == 16 && id[6] >> 4 == 7
}

/// The most group entries (and records of their own) read in one window of the journal
/// ([`Store::ingestions_newest_first`]).
const JOURNAL_WINDOW: usize = 256;

/// Where a journal read is ([`Store::ingestions_newest_first`]).
struct JournalRead<'a> {
    /// The group entries carrying the tenant's records, newest first.
    in_groups: Box<dyn Iterator<Item = JournalEntry> + 'a>,
    /// The most group entries, and records of their own, a window reads.
    size: usize,
    /// Group entries read, not listed yet (newest first), and whether all are read.
    pending: std::collections::VecDeque<JournalRow>,
    all_read: bool,
    /// Where the last window ended (exclusive); `None` before the first.
    upper: Option<groups::GroupKey>,
    /// The last window is read (or a read failed).
    finished: bool,
}

/// One window of the journal: its group entries and its records of their own, each newest
/// first, merged; a record read in both places (its group's removal moved it between the
/// two reads) once.
fn merge_journal_window(in_groups: Vec<JournalRow>, own: Vec<JournalRow>) -> Vec<JournalRow> {
    let mut merged = Vec::with_capacity(in_groups.len() + own.len());
    let mut own = own.into_iter().peekable();
    for group in in_groups {
        while let Some(newer) = own.next_if(|(key, ..)| *key > group.0) {
            merged.push(newer);
        }
        match own.next_if(|(key, ..)| *key == group.0) {
            Some(same) => merged.push(same),
            None => merged.push(group),
        }
    }
    merged.extend(own);
    merged
}

/// Ingestion records, newest first by `received` (see [`Store::ingestions_newest_first`]).
fn newest_received_first(values: Vec<sled::IVec>) -> Result<Vec<IngestionRecord>> {
    let mut records = values
        .iter()
        .map(|value| decode::<IngestionRecord>(value))
        .collect::<Result<Vec<_>>>()?;
    records.sort_by_key(|r| std::cmp::Reverse(r.received));
    Ok(records)
}

fn newest_first_key(tenant: Uuid, at: DateTime<Utc>, id: Uuid) -> Vec<u8> {
    let mut key = tenant.as_bytes().to_vec();
    let micros = at.timestamp_micros().max(0) as u64;
    key.extend_from_slice(&(u64::MAX - micros).to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

fn ingestion_key(tenant: Uuid, correlation_id: Uuid) -> Vec<u8> {
    let mut key = tenant.as_bytes().to_vec();
    key.extend_from_slice(correlation_id.as_bytes());
    key
}

impl Store {
    fn sweeps_tree(&self) -> Result<sled::Tree> {
        Ok(self.inner.db.open_tree(SWEEPS_TREE)?)
    }

    // ----- holds -----

    /// Every address (lower case) of the users of `tenant` on litigation hold.
    pub fn held_addresses(&self, tenant: TenantId) -> Result<HashSet<String>> {
        let mut out = HashSet::new();
        for user in self.users(tenant)? {
            if user.litigation_hold {
                out.extend(user.addresses());
            }
        }
        Ok(out)
    }

    /// The first mailbox on litigation hold that holds a copy of `item`, if any.
    pub fn hold_on(&self, item: &ItemRecord) -> Result<Option<String>> {
        let held = self.held_addresses(TenantId(item.tenant))?;
        Ok(held_copy(item, &held))
    }

    // ----- deletion -----

    /// Removes items of `tenant` (their copies, attachment bytes and records) in one
    /// transaction, except items with a copy in the mailbox of a user on litigation hold
    /// (unless `force`), reported in `held`. With `within` (lower-case user principal names),
    /// only the copies in those mailboxes go, as a purge of a search limited to those
    /// mailboxes does: an item that has copies elsewhere stays with them (`changed`), and only
    /// a held copy among those mailboxes keeps an item. Unknown ids and items of another
    /// tenant are ignored (in no list). Logged (durable against `kill -9`) when this returns;
    /// `on_change` gets the deleted and changed ids. Blocking: not from an async task.
    pub fn delete_items(
        &self,
        tenant: TenantId,
        ids: &[Uuid],
        force: bool,
        within: Option<&HashSet<String>>,
        on_change: Option<&OnItemsChanged>,
    ) -> std::result::Result<DeleteOutcome, StoreError> {
        let held_addresses = if force {
            HashSet::new()
        } else {
            self.held_addresses(tenant)?
        };
        let in_scope = |mailbox: &str| within.is_none_or(|w| w.contains(&mailbox.to_lowercase()));
        let mut outcome = DeleteOutcome::default();
        let mut doomed: Vec<Uuid> = Vec::new();
        let mut seen = HashSet::new();
        for &id in ids {
            if !seen.insert(id) {
                continue;
            }
            let item = match self.item(id) {
                Ok(Some(item)) => item,
                Ok(None) => continue,
                Err(e) => {
                    // A group whose log record cannot be read (a damaged segment) holds
                    // nothing that could be read or exported: it goes when asked for.
                    let group = self.group(&groups::group_key(&id))?;
                    if group.is_some_and(|g| g.header.tenant == tenant.0) {
                        tracing::error!(error = %e, item = %id, "an item that cannot be read is deleted");
                        doomed.push(id);
                        continue;
                    }
                    return Err(e);
                }
            };
            if item.tenant != tenant.0 {
                continue;
            }
            let held = item.copies.iter().find(|c| {
                in_scope(&c.mailbox) && held_addresses.contains(&c.mailbox.to_lowercase())
            });
            if let Some(copy) = held {
                outcome.held.push((id, copy.mailbox.clone()));
                continue;
            }
            doomed.push(id);
        }
        let removed = self.remove_items(&doomed, within.cloned(), on_change)?;
        outcome.deleted = removed.deleted;
        outcome.changed = removed.changed;
        outcome.copies_removed = removed.copies_removed;
        Ok(outcome)
    }

    /// Removes the given items (copies, blobs, record) in one transaction on the committer,
    /// logged with the keys it removed (so neither a replay nor the search index's start-up
    /// catch-up can bring them back); `on_change` gets the ids removed or changed, in log
    /// order. With `within` (lower-case user principal names), only the copies in those
    /// mailboxes go, and an item keeps its other copies. Reports those that existed.
    pub(super) fn remove_items(
        &self,
        ids: &[Uuid],
        within: Option<HashSet<String>>,
        on_change: Option<&OnItemsChanged>,
    ) -> Result<DeleteOutcome> {
        if ids.is_empty() {
            return Ok(DeleteOutcome::default());
        }
        let store = self.clone();
        let ids = ids.to_vec();
        let on_change = on_change.cloned();
        self.apply_logged(move || {
            let i = &store.inner;
            let wanted: HashSet<Uuid> = ids.iter().copied().collect();
            // (Read before the transaction: a read of a tree waits for one running on it.)
            let unreadable = store.unreadable_groups(&ids)?;
            let trees = (&i.items, &i.blobs, &i.copies, &i.groups, &i.ingestions);
            let (outcome, payload) = trees.transaction(|(items, blobs, copies, groups, ingestions)| {
                let mut outcome = DeleteOutcome::default();
                let mut payload = wal::Payload::default();
                for id in &ids {
                    if within.is_none() {
                        let trees = [items, blobs, copies, groups, ingestions];
                        let all_wanted =
                            |group: &groups::Group| group.ids().all(|m| wanted.contains(&m));
                        let whole = store.remove_whole_group(
                            id,
                            trees,
                            &mut payload,
                            &all_wanted,
                            &|_| true,
                            Some(&unreadable),
                        )?;
                        if let Some(members) = whole {
                            if members.is_empty() {
                                // Dropped, unreadable: the ids asked for that were in it.
                                let key = groups::group_key(id);
                                let dropped = ids.iter().filter(|m| groups::group_key(m) == key);
                                outcome.deleted.extend(dropped.copied());
                            }
                            for member in members {
                                outcome.copies_removed += member.copies.len();
                                outcome.deleted.push(member.id);
                            }
                            continue;
                        }
                    }
                    if let Some(w) = &within {
                        // A member with no copy in those mailboxes changes nothing: its group
                        // stays whole. (One that cannot be read is left as it is.)
                        match store.grouped_item_in(groups, id)? {
                            Some(Ok(item))
                                if !item
                                    .copies
                                    .iter()
                                    .any(|c| w.contains(&c.mailbox.to_lowercase())) =>
                            {
                                continue
                            }
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, item = %id, "an item whose group cannot be read is not deleted");
                                continue;
                            }
                            _ => {}
                        }
                    }
                    store.explode_group_of(id, [items, copies, groups, ingestions], &mut payload)?;
                    // Read inside the transaction: an attachment may have been added since.
                    let Some(bytes) = items.get(id.as_bytes())? else {
                        continue;
                    };
                    let mut item: ItemRecord = decode(&bytes).map_err(abort)?;
                    let (go, stay): (Vec<CopyRecord>, Vec<CopyRecord>) =
                        item.copies.iter().cloned().partition(|c| {
                            within
                                .as_ref()
                                .is_none_or(|w| w.contains(&c.mailbox.to_lowercase()))
                        });
                    if go.is_empty() {
                        continue;
                    }
                    for copy in &go {
                        remove_copy(copies, &item, copy, &mut payload)?;
                    }
                    outcome.copies_removed += go.len();
                    if stay.is_empty() {
                        remove_item(items, blobs, &item, &mut payload)?;
                        outcome.deleted.push(item.id);
                    } else {
                        item.copies = stay;
                        let bytes = encode_compact(&item).map_err(abort)?;
                        items.insert(item.id.as_bytes(), bytes.as_slice())?;
                        payload.insert(ITEMS, item.id.as_bytes(), &bytes);
                        outcome.changed.push(item.id);
                    }
                }
                Ok::<_, ConflictableTransactionError<StoreError>>((outcome, payload))
            })?;
            let touched: Vec<Uuid> = outcome
                .deleted
                .iter()
                .chain(&outcome.changed)
                .copied()
                .collect();
            let after = match on_change {
                Some(on_change) if !touched.is_empty() => {
                    Some(Box::new(move || on_change(&touched)) as Hook)
                }
                _ => None,
            };
            Ok((outcome, payload, after))
        })
    }

    /// In a removal's transaction: when `id` is a member of a stored group, every member of
    /// which `removable` says goes whole, removes the group whole (every member's copies,
    /// attachments and record, logged as for an item of its own) without writing it out
    /// first, and returns the members removed. `ids_removable` is asked first, from the ids
    /// alone (the log is read only if it says yes). A group whose log record cannot be read
    /// (a damaged segment) is dropped, key and the copy entries `unreadable` lists for it
    /// ([`Store::unreadable_groups`]), when it is there, and returned as no member: a removal
    /// of what cannot be read must not fail for ever.
    #[allow(clippy::too_many_arguments)]
    fn remove_whole_group(
        &self,
        id: &Uuid,
        [items, blobs, copies, groups, ingestions]: [&TransactionalTree; 5],
        payload: &mut wal::Payload,
        ids_removable: &dyn Fn(&groups::Group) -> bool,
        removable: &dyn Fn(&ItemRecord) -> bool,
        unreadable: Option<&HashMap<groups::GroupKey, Vec<Vec<u8>>>>,
    ) -> std::result::Result<Option<Vec<ItemRecord>>, ConflictableTransactionError<StoreError>>
    {
        let key = groups::group_key(id);
        let Some(value) = groups.get(key)? else {
            return Ok(None);
        };
        let group = groups::Group::decode(&key, &value).map_err(abort)?;
        if !ids_removable(&group) {
            return Ok(None);
        }
        let members = match self.group_items(&group) {
            Ok(members) => members,
            Err(e) if unreadable.is_some_and(|u| u.contains_key(&key)) => {
                tracing::error!(error = %e, "an item group whose log record cannot be read is removed");
                for copy_key in unreadable.and_then(|u| u.get(&key)).into_iter().flatten() {
                    copies.remove(copy_key.as_slice())?;
                    payload.remove(COPIES, copy_key);
                }
                for member in group.ids() {
                    payload.remove(ITEMS, member.as_bytes());
                }
                Store::remove_group(&group, [groups, ingestions], payload)?;
                return Ok(Some(Vec::new()));
            }
            Err(e) => return Err(abort(e)),
        };
        if !members.iter().all(removable) {
            return Ok(None);
        }
        let mut copy_groups = BTreeSet::new();
        for member in &members {
            for copy in &member.copies {
                copy_groups.insert(groups::copy_group_key(
                    member.tenant,
                    copy,
                    member.received,
                    &key,
                ));
            }
            remove_item(items, blobs, member, payload)?;
        }
        for copy_group in copy_groups {
            copies.remove(copy_group.as_slice())?;
            payload.remove(COPIES, &copy_group);
        }
        Store::remove_group(&group, [groups, ingestions], payload)?;
        Ok(Some(members))
    }

    // ----- mailboxes and folders -----

    /// Copy counts of every mailbox of `tenant` that holds copies: mailbox -> folder -> count
    /// (both lower case, as the copies index keys them).
    pub fn mailbox_counts(
        &self,
        tenant: TenantId,
    ) -> Result<BTreeMap<String, BTreeMap<String, usize>>> {
        let mut out: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        for entry in copy_entries(&self.inner.copies, tenant.0.as_bytes()) {
            let (key, value) = entry?;
            let n = copies_in(&key, &value);
            if let Some(copy) = parse_copies(&key, &value).into_iter().next() {
                *out.entry(copy.mailbox)
                    .or_default()
                    .entry(copy.folder)
                    .or_default() += n;
            }
        }
        Ok(out)
    }

    /// Copy counts per folder (lower case) of one mailbox.
    pub fn folder_counts(
        &self,
        tenant: TenantId,
        mailbox: &str,
    ) -> Result<BTreeMap<String, usize>> {
        let mut out: BTreeMap<String, usize> = BTreeMap::new();
        for entry in copy_entries(&self.inner.copies, copy_prefix(tenant.0, mailbox, None)) {
            let (key, value) = entry?;
            let n = copies_in(&key, &value);
            if let Some(copy) = parse_copies(&key, &value).into_iter().next() {
                *out.entry(copy.folder).or_default() += n;
            }
        }
        Ok(out)
    }

    /// Copies of one mailbox, in one folder (`Some`) or all of them, newest first, paged.
    /// Returns the page and the total number of copies that matched.
    pub fn mailbox_page(
        &self,
        tenant: TenantId,
        mailbox: &str,
        folder: Option<&str>,
        skip: usize,
        top: usize,
    ) -> Result<(Vec<CopyEntry>, usize)> {
        let entries = copy_entries(&self.inner.copies, copy_prefix(tenant.0, mailbox, folder));
        match folder {
            Some(_) => {
                // One folder: the index is already newest first.
                let mut page = Vec::new();
                let mut total = 0;
                for entry in entries {
                    let (key, value) = entry?;
                    let n = copies_in(&key, &value);
                    if total + n > skip && page.len() < top {
                        let copies = parse_copies(&key, &value);
                        let from = skip.saturating_sub(total);
                        page.extend(copies.into_iter().skip(from).take(top - page.len()));
                    }
                    total += n;
                }
                Ok((page, total))
            }
            None => {
                let mut all = Vec::new();
                for entry in entries {
                    let (key, value) = entry?;
                    all.extend(parse_copies(&key, &value));
                }
                let total = all.len();
                all.sort_by(|a, b| {
                    b.received_micros
                        .cmp(&a.received_micros)
                        .then(a.folder.cmp(&b.folder))
                        .then(a.item.cmp(&b.item))
                });
                Ok((all.into_iter().skip(skip).take(top).collect(), total))
            }
        }
    }

    // ----- the ingestion journal -----

    /// Ingestion records of `tenant`, newest first (by correlation id: arrival order). They
    /// are in two places, each in that order: entries of their own in `ingestions` (keyed by
    /// tenant and correlation id), and the entries of the item groups their requests stored
    /// (keyed by the correlation id's first 14 bytes, unique per request: see
    /// `groups::Group::record`); the two are merged by that key. Records of stores from
    /// before correlation ids were v7 (time-ordered) have v4 ids, in no order: they come
    /// after every v7 one, newest first by `received`.
    ///
    /// A group's removal moves its record to `ingestions` while this reads, never back. So
    /// the merge goes by windows: the next group entries first (as many as the page needs, at
    /// most [`JOURNAL_WINDOW`]), then the records of their own in the same key range (as
    /// many at most). A record that the groups' read found gone is in `ingestions` when its
    /// range is read; one read in both places is listed once.
    pub fn ingestions_newest_first(
        &self,
        tenant: TenantId,
        skip: usize,
        top: usize,
    ) -> Result<Vec<IngestionRecord>> {
        if top == 0 {
            return Ok(Vec::new());
        }
        let mut reading = JournalRead {
            in_groups: self.groups_with_records_of(tenant)?,
            // As many group entries a window as the page needs, within bounds.
            size: skip.saturating_add(top).min(JOURNAL_WINDOW),
            pending: std::collections::VecDeque::new(),
            all_read: false,
            upper: None,
            finished: false,
        };
        // Records with ids that are not v7, set aside as the windows pass them.
        let legacy_seen = std::cell::RefCell::new(Vec::new());
        let mut window = Vec::new().into_iter();
        let merged = std::iter::from_fn(|| loop {
            if let Some(row) = window.next() {
                return Some(Ok(row));
            }
            if reading.finished {
                return None;
            }
            match self.next_journal_window(tenant, &mut reading, &legacy_seen) {
                Ok(rows) => window = rows.into_iter(),
                Err(e) => {
                    // A page reaching this window fails (what was read of it, without the
                    // rest, would be another list).
                    reading.finished = true;
                    return Some(Err(e));
                }
            }
        });
        // Decoded only if a page reaches past the v7 records (every window is read by then).
        let legacy = std::iter::once_with(|| newest_received_first(legacy_seen.take())).flat_map(
            |records| -> Vec<Result<Listed>> {
                match records {
                    Ok(records) => records.into_iter().map(|r| Ok(Listed::Read(r))).collect(),
                    Err(e) => vec![Err(e)],
                }
            },
        );
        enum Listed {
            Own(sled::IVec),
            InGroup(groups::GroupKey, sled::IVec),
            Read(IngestionRecord),
        }
        merged
            .map(|entry| {
                entry.map(|(key, value, in_group)| match in_group {
                    true => Listed::InGroup(key, value),
                    false => Listed::Own(value),
                })
            })
            .chain(legacy)
            // An error fails the page even where it falls among the skipped entries.
            .take(skip.saturating_add(top))
            .enumerate()
            .filter(|(n, listed)| *n >= skip || listed.is_err())
            .map(|(_, listed)| listed)
            .map(|listed| match listed? {
                Listed::Own(value) => decode(&value),
                Listed::InGroup(key, value) => {
                    let group = groups::Group::decode(&key, &value)?;
                    decode(group.record().unwrap_or_default())
                }
                Listed::Read(record) => Ok(record),
            })
            .collect()
    }

    /// The next window of a journal read: group entries first, then the records of their own
    /// of the same key range (read after them, and at most `size`), merged; the window ends
    /// where either part does, and the group entries past its end wait for the next one.
    fn next_journal_window(
        &self,
        tenant: TenantId,
        reading: &mut JournalRead<'_>,
        legacy: &std::cell::RefCell<Vec<sled::IVec>>,
    ) -> Result<Vec<JournalRow>> {
        while !reading.all_read && reading.pending.len() < reading.size {
            match reading.in_groups.next().transpose()? {
                Some(row) => reading.pending.push_back(row),
                None => reading.all_read = true,
            }
        }
        let lower = match reading.pending.back() {
            Some((key, ..)) if !reading.all_read => Some(*key),
            _ => None,
        };
        let own = self.own_ingestions_within(tenant, lower, reading.upper, reading.size, legacy)?;
        let end = match own.last() {
            Some((key, ..)) if own.len() == reading.size => Some(*key),
            _ => lower,
        };
        let ready = reading
            .pending
            .iter()
            .position(|(key, ..)| end.is_some_and(|end| *key < end))
            .unwrap_or(reading.pending.len());
        let in_window: Vec<JournalRow> = reading.pending.drain(..ready).collect();
        (reading.finished, reading.upper) = (end.is_none(), end);
        Ok(merge_journal_window(in_window, own))
    }

    /// The newest `most` records of `tenant` with entries of their own whose key (a
    /// correlation id's first 14 bytes) is at least `lower` and below `upper` (unbounded when
    /// `None`), newest first, setting aside in `legacy` those with ids that are not v7.
    fn own_ingestions_within(
        &self,
        tenant: TenantId,
        lower: Option<groups::GroupKey>,
        upper: Option<groups::GroupKey>,
        most: usize,
        legacy: &std::cell::RefCell<Vec<sled::IVec>>,
    ) -> Result<Vec<JournalRow>> {
        // (Keys are tenant || correlation id, 32 bytes: a bound is a key prefix + 00 00.)
        let bound = |key: &groups::GroupKey| [tenant.0.as_bytes(), &key[..], &[0, 0]].concat();
        let lo = lower
            .as_ref()
            .map_or_else(|| tenant.0.as_bytes().to_vec(), bound);
        let entries: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
            match upper.as_ref().map(bound) {
                Some(hi) => Box::new(self.inner.ingestions.range(lo..hi).rev()),
                None => Box::new(
                    self.inner
                        .ingestions
                        .scan_prefix(tenant.0.as_bytes())
                        .rev()
                        .take_while(move |entry| {
                            entry
                                .as_ref()
                                .map_or(true, |(key, _)| key.as_ref() >= lo.as_slice())
                        }),
                ),
            };
        let mut own = Vec::new();
        for entry in entries {
            if own.len() == most {
                break;
            }
            let (key, value) = entry?;
            let Some(id) = key.get(16..) else { continue };
            if !is_time_ordered(id) {
                legacy.borrow_mut().push(value);
                continue;
            }
            if let Some(order) = id
                .get(..groups::KEY_LEN)
                .and_then(|k| groups::GroupKey::try_from(k).ok())
            {
                own.push((order, value, false));
            }
        }
        Ok(own)
    }

    /// The entries of the groups carrying a record of `tenant`, newest first: through the
    /// listing of [`record_groups`](super::record_groups) (built here by the first read), or,
    /// while another read builds it, by a scan of every group.
    fn groups_with_records_of(
        &self,
        tenant: TenantId,
    ) -> Result<Box<dyn Iterator<Item = JournalEntry> + '_>> {
        let listed = &self.inner.record_groups;
        if !listed.is_built() {
            if let Some(build) = listed.start_building() {
                match self.scan_groups_with_records() {
                    Ok(found) => listed.finish(build, found),
                    Err(e) => {
                        listed.abandon(build);
                        return Err(e);
                    }
                }
            }
        }
        if !listed.is_built() {
            return Ok(Box::new(self.inner.groups.iter().rev().filter_map(
                move |entry| -> Option<JournalEntry> {
                    // (Tested on the entry's bytes: the scan passes other tenants' groups.)
                    let read = || -> Result<Option<(groups::GroupKey, sled::IVec, bool)>> {
                        let (key, value) = entry?;
                        if !groups::entry_has_record_of(&value, tenant.0) {
                            return Ok(None);
                        }
                        let key = groups::GroupKey::try_from(key.as_ref()).map_err(|_| {
                            StoreError::Log("an item group's key is unreadable".into())
                        })?;
                        Ok(Some((key, value, true)))
                    };
                    read().transpose()
                },
            )));
        }
        // Listed keys, a few at a time, each checked against the store (a removed group stays
        // listed until a read like this one finds it gone).
        let mut batch: Vec<groups::GroupKey> = Vec::new();
        let mut before: Option<groups::GroupKey> = None;
        let mut done = false;
        Ok(Box::new(std::iter::from_fn(move || loop {
            if batch.is_empty() {
                if done {
                    return None;
                }
                batch = listed.below(tenant.0, before.as_ref(), 32);
                batch.reverse(); // popped newest first
                if batch.len() < 32 {
                    done = true;
                }
                match batch.first() {
                    Some(oldest) => before = Some(*oldest),
                    None => return None,
                }
            }
            let key = batch.pop()?;
            match self.inner.groups.get(key) {
                Err(e) => return Some(Err(e.into())),
                Ok(Some(value)) if groups::entry_has_record_of(&value, tenant.0) => {
                    return Some(Ok((key, value, true)));
                }
                Ok(_) => listed.forget(tenant.0, &key),
            }
        })))
    }

    /// Every group carrying a record, with its tenant (one scan of the groups).
    fn scan_groups_with_records(&self) -> Result<Vec<(Uuid, groups::GroupKey)>> {
        let mut found = Vec::new();
        for entry in self.inner.groups.iter() {
            let (key, value) = entry?;
            if let (Some(tenant), Ok(key)) = (
                groups::record_tenant(&value),
                groups::GroupKey::try_from(key.as_ref()),
            ) {
                found.push((tenant, key));
            }
        }
        Ok(found)
    }

    /// Removes these ingestion records through the log (a few thousand a write); how many
    /// there were.
    pub(super) fn remove_ingestions(&self, keys: Vec<sled::IVec>) -> Result<usize> {
        let mut removed = 0;
        for chunk in keys.chunks(CHUNK * 16) {
            let store = self.clone();
            let chunk = chunk.to_vec();
            removed += self.apply_logged(move || {
                let mut payload = wal::Payload::default();
                let mut removed = 0;
                for key in &chunk {
                    if store.inner.ingestions.remove(key)?.is_some() {
                        payload.remove(INGESTIONS, key);
                        removed += 1;
                    }
                }
                Ok((removed, payload, None))
            })?;
        }
        Ok(removed)
    }

    // ----- reset -----

    /// Removes every item, copy, attachment and ingestion record of every tenant, and the
    /// retention sweep records. Items with a copy in the mailbox of a user on litigation hold
    /// stay (with the ingestion records that stored them) unless `force`. Items and ingestion
    /// records are removed through the log (`on_change` gets the removed item ids); the rest
    /// is not flushed. Blocking: not from an async task.
    pub fn reset(&self, force: bool, on_change: Option<&OnItemsChanged>) -> Result<ResetOutcome> {
        let i = &self.inner;
        let mut held: BTreeMap<Uuid, HashSet<String>> = BTreeMap::new();
        if !force {
            for tenant in self.tenants()? {
                let addresses = self.held_addresses(TenantId(tenant.id))?;
                if !addresses.is_empty() {
                    held.insert(tenant.id, addresses);
                }
            }
        }
        let mut outcome = ResetOutcome::default();
        // Item by item (in chunked transactions, like an ingestion's): a request committed
        // meanwhile is either wholly removed or wholly kept, never left half.
        let mut doomed = Vec::new();
        let mut kept_ingestions = HashSet::new();
        let mut judge = |item: ItemRecord| {
            let under_hold = held
                .get(&item.tenant)
                .and_then(|addresses| held_copy(&item, addresses));
            match under_hold {
                Some(mailbox) => {
                    kept_ingestions.insert(ingestion_key(item.tenant, item.correlation_id));
                    outcome.kept_under_hold.push((item.id, mailbox));
                }
                None => doomed.push(item.id),
            }
        };
        for value in i.items.iter().values() {
            judge(decode(&value?)?);
        }
        // A group of a tenant without holds goes whole, unread.
        let mut whole_groups = Vec::new();
        for group in self.groups() {
            let group = group?;
            if !held.contains_key(&group.header.tenant) {
                whole_groups.extend(group.ids());
                continue;
            }
            match self.group_items(&group) {
                Ok(members) => members.into_iter().for_each(&mut judge),
                Err(e) => {
                    // What cannot be read is removed (`remove_whole_group`): it holds nothing.
                    tracing::error!(error = %e, "reset: an item group whose log record cannot be read goes");
                    whole_groups.extend(group.ids());
                }
            }
        }
        doomed.extend(whole_groups);
        for chunk in groups::chunks_keeping_groups(&doomed, CHUNK) {
            outcome
                .removed_ids
                .extend(self.remove_items(chunk, None, on_change)?.deleted);
        }
        outcome.removed = outcome.removed_ids.len();
        let mut doomed_ingestions = Vec::new();
        for key in i.ingestions.iter().keys() {
            let key = key?;
            if !kept_ingestions.contains(key.as_ref()) {
                doomed_ingestions.push(key);
            }
        }
        outcome.ingestions_removed = self.remove_ingestions(doomed_ingestions)?;
        self.sweeps_tree()?.clear()?;
        // (The groups kept under holds are found again by the next journal read's scan.)
        i.record_groups.clear();
        Ok(outcome)
    }

    /// Removes the whole directory (tenants, domains, users, addresses, apps, consents), to
    /// be seeded again from fixtures. Signing keys stay. Not flushed.
    pub fn wipe_directory(&self) -> Result<()> {
        let _changing = self.directory_write();
        let i = &self.inner;
        for tree in [
            &i.tenants,
            &i.domains,
            &i.users,
            &i.addresses,
            &i.apps,
            &i.service_principals,
        ] {
            tree.clear()?;
        }
        Ok(())
    }

    // ----- retention -----

    /// Removes the copies of `tenant` received before `cutoff`, except copies in the mailbox
    /// of a user on litigation hold; an item left without copies is removed entirely. Records
    /// the sweep. Copies and items are removed through the log (`on_change` gets the ids of
    /// the items removed or changed); the sweep record is not flushed. Blocking: not from an
    /// async task.
    pub fn sweep_retention(
        &self,
        tenant: TenantId,
        cutoff: DateTime<Utc>,
        retention_days: Option<u32>,
        trigger: &str,
        on_change: Option<&OnItemsChanged>,
    ) -> Result<SweepOutcome> {
        let started = Utc::now();
        let held = self.held_addresses(tenant)?;
        let cutoff_micros = cutoff.timestamp_micros().max(0) as u64;
        // Due item ids, from the copies index (its keys carry the received time).
        let mut due: BTreeSet<Uuid> = BTreeSet::new();
        for entry in copy_entries(&self.inner.copies, tenant.0.as_bytes()) {
            let (key, value) = entry?;
            for copy in parse_copies(&key, &value) {
                if copy.received_micros < cutoff_micros {
                    due.insert(copy.item);
                }
            }
        }
        let due: Vec<Uuid> = due.into_iter().collect();
        let mut removed = Vec::new();
        let mut removed_items = Vec::new();
        let mut changed_items = Vec::new();
        let mut kept = 0;
        for chunk in due.chunks(CHUNK) {
            let store = self.clone();
            let chunk = chunk.to_vec();
            let held = held.clone();
            let on_change = on_change.cloned();
            let (r, ri, ci, k) = self.apply_logged(move || {
                let i = &store.inner;
                let trees = (&i.items, &i.blobs, &i.copies, &i.groups, &i.ingestions);
                let (outcome, payload) = trees.transaction(|(items, blobs, copies, groups, ingestions)| {
                    let mut payload = wal::Payload::default();
                    let mut removed = Vec::new();
                    let mut removed_items = Vec::new();
                    let mut changed_items = Vec::new();
                    let mut kept = 0;
                    for id in &chunk {
                        // A group member that changes nothing stays grouped; one that cannot be read is
                        // left as it is (it may be held).
                        match store.grouped_item_in(groups, id)? {
                            Some(Ok(item)) if item.tenant != tenant.0 || item.received >= cutoff => continue,
                            Some(Ok(item))
                                if item
                                    .copies
                                    .iter()
                                    .all(|c| held.contains(&c.mailbox.to_lowercase())) =>
                            {
                                kept += item.copies.len();
                                continue;
                            }
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, item = %id, "retention: an item whose group cannot be read stays");
                                continue;
                            }
                            _ => {}
                        }
                        // A group whose every member goes goes whole.
                        let goes_whole = |m: &ItemRecord| {
                            !m.copies
                                .iter()
                                .any(|c| held.contains(&c.mailbox.to_lowercase()))
                        };
                        let whole = store.remove_whole_group(
                            id,
                            [items, blobs, copies, groups, ingestions],
                            &mut payload,
                            &|_| true,
                            &goes_whole,
                            None,
                        )?;
                        if let Some(members) = whole {
                            for member in members {
                                for copy in &member.copies {
                                    removed.push(SweptCopy {
                                        item_id: member.id,
                                        mailbox: copy.mailbox.clone(),
                                        folder: copy.folder.clone(),
                                        received: member.received,
                                    });
                                }
                                removed_items.push(member.id);
                            }
                            continue;
                        }
                        store.explode_group_of(id, [items, copies, groups, ingestions], &mut payload)?;
                        let Some(bytes) = items.get(id.as_bytes())? else {
                            continue;
                        };
                        let mut item: ItemRecord = decode(&bytes).map_err(abort)?;
                        if item.tenant != tenant.0 || item.received >= cutoff {
                            continue;
                        }
                        let (stay, go): (Vec<CopyRecord>, Vec<CopyRecord>) = item
                            .copies
                            .iter()
                            .cloned()
                            .partition(|c| held.contains(&c.mailbox.to_lowercase()));
                        kept += stay.len();
                        if go.is_empty() {
                            continue;
                        }
                        for copy in &go {
                            remove_copy(copies, &item, copy, &mut payload)?;
                            removed.push(SweptCopy {
                                item_id: item.id,
                                mailbox: copy.mailbox.clone(),
                                folder: copy.folder.clone(),
                                received: item.received,
                            });
                        }
                        if stay.is_empty() {
                            remove_item(items, blobs, &item, &mut payload)?;
                            removed_items.push(item.id);
                        } else {
                            item.copies = stay;
                            let bytes = encode_compact(&item).map_err(abort)?;
                            items.insert(item.id.as_bytes(), bytes.as_slice())?;
                            payload.insert(ITEMS, item.id.as_bytes(), &bytes);
                            changed_items.push(item.id);
                        }
                    }
                    Ok::<_, ConflictableTransactionError<StoreError>>((
                        (removed, removed_items, changed_items, kept),
                        payload,
                    ))
                })?;
                let touched: Vec<Uuid> = outcome.1.iter().chain(&outcome.2).copied().collect();
                let after = match on_change {
                    Some(on_change) if !touched.is_empty() => {
                        Some(Box::new(move || on_change(&touched)) as Hook)
                    }
                    _ => None,
                };
                Ok((outcome, payload, after))
            })?;
            removed.extend(r);
            removed_items.extend(ri);
            changed_items.extend(ci);
            kept += k;
        }
        let record = SweepRecord {
            id: Uuid::new_v4(),
            tenant: tenant.0,
            trigger: trigger.to_string(),
            started,
            finished: Utc::now(),
            retention_days,
            cutoff,
            copies_removed: removed.len(),
            items_removed: removed_items.len(),
            copies_kept_under_hold: kept,
            removed: removed.into_iter().take(SweepRecord::LISTED).collect(),
            removed_item_ids: removed_items
                .iter()
                .take(SweepRecord::LISTED)
                .copied()
                .collect(),
            changed_item_ids: changed_items
                .iter()
                .take(SweepRecord::LISTED)
                .copied()
                .collect(),
        };
        self.sweeps_tree()?.insert(
            newest_first_key(tenant.0, record.started, record.id),
            encode(&record)?,
        )?;
        Ok(SweepOutcome {
            record,
            removed_item_ids: removed_items,
            changed_item_ids: changed_items,
        })
    }

    /// Recorded retention sweeps of `tenant`, newest first.
    pub fn sweeps(&self, tenant: TenantId, top: usize) -> Result<Vec<SweepRecord>> {
        self.sweeps_tree()?
            .scan_prefix(tenant.0.as_bytes())
            .values()
            .take(top)
            .map(|v| decode(&v?))
            .collect()
    }
}

/// In a transaction: removes one copy of `item` from the folder index, logging the key.
fn remove_copy(
    copies: &TransactionalTree,
    item: &ItemRecord,
    copy: &CopyRecord,
    payload: &mut wal::Payload,
) -> std::result::Result<(), UnabortableTransactionError> {
    let key = copy_key(item.tenant, copy, item.received, item.id);
    copies.remove(key.as_slice())?;
    payload.remove(COPIES, &key);
    Ok(())
}

/// In a transaction: removes `item`'s record (not its copies) and any attachment bytes a store
/// older than the attachment files kept in sled, logging the keys; the attachment files go once
/// the record is in the log (`Store::apply_logged`).
fn remove_item(
    items: &TransactionalTree,
    blobs: &TransactionalTree,
    item: &ItemRecord,
    payload: &mut wal::Payload,
) -> std::result::Result<(), UnabortableTransactionError> {
    for n in 0..item.attachments.len() {
        let key = blob_key(item.id, n);
        blobs.remove(key.as_slice())?;
        payload.remove(BLOBS, &key);
    }
    items.remove(item.id.as_bytes())?;
    payload.remove(ITEMS, item.id.as_bytes());
    Ok(())
}

/// The mailbox of the first copy of `item` whose mailbox is among `held` (lower case).
fn held_copy(item: &ItemRecord, held: &HashSet<String>) -> Option<String> {
    item.copies
        .iter()
        .find(|c| held.contains(&c.mailbox.to_lowercase()))
        .map(|c| c.mailbox.clone())
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::IngestionCommit;
    use super::*;

    fn user(upn: &str, hold: bool) -> UserRecord {
        UserRecord {
            user_principal_name: upn.into(),
            display_name: upn.into(),
            mail: upn.into(),
            proxy_addresses: vec![],
            mailbox_enabled: true,
            litigation_hold: hold,
            external_ids: vec![],
        }
    }

    /// Items are written compactly; an item written as JSON or with text dates (by an earlier
    /// version) still reads.
    #[test]
    fn items_are_written_compactly_and_json_items_still_read() {
        let mut it = item(Uuid::new_v4(), &["a@x", "b@x"], Utc::now());
        it.subject = Some("Ünïcode \"quoted\" <x>".into());
        it.body = Some("body text ".repeat(50));
        it.app_id = Some(Uuid::now_v7());
        let compact = super::encode_compact(&it).unwrap();
        let json = encode(&it).unwrap();
        assert_eq!(compact[0], super::super::COMPACT);
        assert!(
            compact.len() < json.len(),
            "{} {}",
            compact.len(),
            json.len()
        );
        assert_eq!(decode::<ItemRecord>(&compact).unwrap(), it);
        assert_eq!(decode::<ItemRecord>(&json).unwrap(), it);
        // Compact items written before dates were binary hold them as text.
        let text_dates = super::super::model::compact_time::text_dates(|| {
            postcard::to_extend(&it, vec![super::super::COMPACT_TEXT_DATES]).unwrap()
        });
        assert!(text_dates.len() > compact.len());
        assert_eq!(decode::<ItemRecord>(&text_dates).unwrap(), it);
        // Dates keep their nanoseconds and the optional creation date both ways.
        it.created = Some(it.received);
        let compact = super::encode_compact(&it).unwrap();
        assert_eq!(decode::<ItemRecord>(&compact).unwrap(), it);
    }

    /// Ingestion records are compact too (their outcomes tagged externally there, internally
    /// in JSON); one written as JSON still reads.
    #[test]
    fn ingestion_records_are_written_compactly_and_json_records_still_read() {
        let copies = vec![CopyRecord {
            mailbox: "a@x".into(),
            folder: "Inbox".into(),
        }];
        let record = IngestionRecord {
            correlation_id: Uuid::now_v7(),
            tenant: Uuid::new_v4(),
            app_id: Some(Uuid::new_v4()),
            received: Utc::now(),
            operation: "CreateItem".into(),
            http_status: 200,
            outcome: "PartialSuccess".into(),
            items: vec![
                ItemOutcomeRecord::Stored {
                    index: 0,
                    item_id: Uuid::now_v7(),
                    copies,
                },
                ItemOutcomeRecord::Failed {
                    index: 1,
                    code: "ErrorMissingInformation".into(),
                    message: "no \"From\"".into(),
                },
            ],
            error: None,
        };
        let compact = super::encode_compact(&record).unwrap();
        let json = encode(&record).unwrap();
        assert_eq!(compact[0], super::super::COMPACT);
        assert!(
            compact.len() * 2 < json.len(),
            "{} {}",
            compact.len(),
            json.len()
        );
        assert!(String::from_utf8_lossy(&json).contains(r#""result":"stored""#));
        assert_eq!(decode::<IngestionRecord>(&compact).unwrap(), record);
        assert_eq!(decode::<IngestionRecord>(&json).unwrap(), record);
    }

    pub(in crate::store) fn item(
        tenant: Uuid,
        mailboxes: &[&str],
        received: DateTime<Utc>,
    ) -> ItemRecord {
        let address = AddressRecord {
            name: None,
            address: "x@example.com".into(),
        };
        ItemRecord {
            id: Uuid::new_v4(),
            tenant,
            correlation_id: Uuid::now_v7(),
            app_id: None,
            received,
            item_class: "IPM.NOTE.X".into(),
            searched_item_class: "IPM.ExternalData.X".into(),
            kind: "externaldata".into(),
            source: "X".into(),
            event: None,
            subject: None,
            body: None,
            body_type: None,
            from: address.clone(),
            sender: None,
            to: vec![address],
            cc: vec![],
            bcc: vec![],
            sent: received,
            created: None,
            internet_message_id: None,
            attachments: vec![AttachmentMeta {
                name: "a".into(),
                content_type: "text/plain".into(),
                size: 1,
                content_id: None,
                is_inline: false,
            }],
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

    /// The ingestion record of a request that stored `item` (its items' outcomes left out).
    pub(in crate::store) fn record_of(item: &ItemRecord) -> IngestionRecord {
        IngestionRecord {
            correlation_id: item.correlation_id,
            tenant: item.tenant,
            app_id: None,
            received: item.received,
            operation: "CreateItem".into(),
            http_status: 200,
            outcome: "Success".into(),
            items: vec![],
            error: None,
        }
    }

    fn commit(store: &Store, item: &ItemRecord) {
        let record = record_of(item);
        let prepared = store
            .prepare_ingestion(
                IngestionCommit {
                    record,
                    items: vec![(item.clone(), vec![b"x".to_vec()])],
                    after: None,
                },
                false,
            )
            .expect("prepare");
        // On the committer's lock, as the committer applies (the attachment sweep relies on it).
        store
            .with_committer_paused(|| {
                store.apply_ingestion(&prepared, wal::RecordAt { seq: 0, offset: 0 })
            })
            .expect("commit");
    }

    pub(in crate::store) fn store() -> (tempfile::TempDir, Store, TenantId) {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let tenant = TenantId(Uuid::new_v4());
        store
            .put_tenant(&TenantRecord {
                id: tenant.0,
                display_name: "T".into(),
                domains: vec!["t.example".into()],
                third_party_mailbox: None,
                retention_days: None,
            })
            .expect("tenant");
        store
            .put_user(tenant, &user("held@t.example", true))
            .expect("user");
        store
            .put_user(tenant, &user("free@t.example", false))
            .expect("user");
        (dir, store, tenant)
    }

    /// Copies a directory tree: what a `kill -9` leaves on disk of a store that is open.
    pub(in crate::store) fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read dir").flatten() {
            let target = to.join(entry.file_name());
            if entry.file_type().expect("type").is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).expect("copy");
            }
        }
    }

    #[test]
    fn attachments_are_files_removed_with_their_item_and_older_stores_are_still_read() {
        let (dir, store, tenant) = store();
        let now = Utc::now();
        let stored = item(tenant.0, &["free@t.example"], now);
        commit(&store, &stored);
        let key = blob_key(stored.id, 0);
        assert!(
            store.inner.blobs.get(&key).expect("sled").is_none(),
            "not in sled"
        );
        let files = |root: &std::path::Path| -> usize {
            std::fs::read_dir(root.join("attachments"))
                .expect("attachments")
                .flatten()
                .map(|d| std::fs::read_dir(d.path()).expect("fan").count())
                .sum()
        };
        assert_eq!(files(dir.path()), 1);
        assert_eq!(
            store.attachment(stored.id, 0).expect("read").as_deref(),
            Some(&b"x"[..])
        );
        // An item of a store older than the attachment files: its attachment is in sled.
        let older = item(tenant.0, &["free@t.example"], now);
        commit(&store, &older);
        store
            .inner
            .files
            .remove(&blob_key(older.id, 0))
            .expect("rm");
        store
            .inner
            .blobs
            .insert(blob_key(older.id, 0), b"legacy".as_slice())
            .expect("legacy");
        assert_eq!(
            store.attachment(older.id, 0).expect("read").as_deref(),
            Some(&b"legacy"[..])
        );
        store
            .delete_items(tenant, &[stored.id, older.id], false, None, None)
            .expect("delete");
        assert_eq!(files(dir.path()), 0, "the file goes with its item");
        assert!(store.inner.blobs.is_empty(), "and the legacy copy too");
        assert!(store.attachment(stored.id, 0).expect("read").is_none());
    }

    #[test]
    fn the_sweep_removes_only_attachment_files_no_item_names() {
        let (_dir, store, tenant) = store();
        let stored = item(tenant.0, &["free@t.example"], Utc::now());
        commit(&store, &stored);
        let stray = Uuid::new_v4();
        store
            .inner
            .files
            .put(&blob_key(stray, 0), b"of a request never acknowledged")
            .expect("orphan");
        store
            .inner
            .files
            .put(&blob_key(stored.id, 1), b"of a failed CreateAttachment")
            .expect("orphan");
        let fan = store.inner.files.directories();
        let foreign = fan[0].join("notes.txt");
        std::fs::write(&foreign, "not an attachment").expect("foreign");
        let mut removed = 0;
        for dir in store.inner.files.directories() {
            removed += store.sweep_orphan_attachments(&dir).expect("sweep");
        }
        // (The sweep the store started when it opened may have taken some already.)
        assert!(removed <= 2);
        assert!(store.attachment(stray, 0).expect("read").is_none());
        assert!(store.attachment(stored.id, 1).expect("read").is_none());
        assert_eq!(
            store.attachment(stored.id, 0).expect("read").as_deref(),
            Some(&b"x"[..]),
            "the item's own attachment stays"
        );
        assert!(foreign.exists(), "a file that is not an attachment stays");
    }

    #[test]
    fn admin_removals_are_logged_replayed_and_reported_in_log_order() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open_with(&dir.path().join("a"), false, true).expect("store");
        let tenant = TenantId(Uuid::new_v4());
        let now = Utc::now();
        let gone = item(tenant.0, &["free@t.example"], now);
        let old = item(
            tenant.0,
            &["free@t.example"],
            now - chrono::Duration::days(10),
        );
        let kept = item(tenant.0, &["free@t.example"], now);
        for i in [&gone, &old, &kept] {
            commit(&store, i);
        }
        store.flush().expect("checkpoint");
        let from = store.log_segment();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let wal_dir = dir.path().join("a").join("wal");
        let on_change: OnItemsChanged = std::sync::Arc::new(move |ids: &[Uuid]| {
            // The hook (the search index) runs only once the removal is in the log.
            let logged = wal::logged_keys(&wal_dir, ITEMS, from, u64::MAX).expect("log");
            for id in ids {
                assert!(
                    logged.iter().any(|k| k == id.as_bytes()),
                    "{id} logged first"
                );
            }
            record.lock().expect("lock").extend_from_slice(ids);
        });
        let deleted = store
            .delete_items(tenant, &[gone.id], false, None, Some(&on_change))
            .expect("delete");
        assert_eq!(deleted.deleted, [gone.id]);
        store
            .sweep_retention(
                tenant,
                now - chrono::Duration::days(5),
                None,
                "manual",
                Some(&on_change),
            )
            .expect("sweep");
        assert_eq!(*seen.lock().expect("lock"), [gone.id, old.id]);
        // The search index's catch-up finds the removals in the log...
        let logged = store.logged_item_ids(from, u64::MAX).expect("log");
        assert_eq!(logged, [gone.id, old.id]);
        // ... and a crash before sled is flushed does not bring them back.
        copy_dir(&dir.path().join("a"), &dir.path().join("b"));
        let crashed = Store::open(&dir.path().join("b")).expect("reopen");
        assert!(crashed.item(gone.id).expect("read").is_none());
        assert!(crashed.item(old.id).expect("read").is_none());
        assert!(crashed.attachment(gone.id, 0).expect("read").is_none());
        assert!(crashed.item(kept.id).expect("read").is_some());
        assert_eq!(
            crashed.folder_count(tenant, "free@t.example", "Recoverable Items/Purges"),
            1
        );
    }

    #[test]
    fn holds_keep_items_unless_forced() {
        let (_dir, store, tenant) = store();
        let now = Utc::now();
        let held = item(tenant.0, &["held@t.example", "free@t.example"], now);
        let free = item(tenant.0, &["free@t.example"], now);
        let other_tenant = item(Uuid::new_v4(), &["free@t.example"], now);
        for i in [&held, &free, &other_tenant] {
            commit(&store, i);
        }
        let ids = [held.id, free.id, other_tenant.id, Uuid::new_v4()];
        let outcome = store
            .delete_items(tenant, &ids, false, None, None)
            .expect("delete");
        assert_eq!(outcome.deleted, [free.id]);
        assert_eq!(outcome.held, [(held.id, "held@t.example".to_string())]);
        assert!(store.item(free.id).expect("read").is_none());
        assert!(store.attachment(free.id, 0).expect("read").is_none());
        assert!(store.item(other_tenant.id).expect("read").is_some());
        assert_eq!(
            store.folder_count(tenant, "free@t.example", "Recoverable Items/Purges"),
            1
        );
        let outcome = store
            .delete_items(tenant, &ids, true, None, None)
            .expect("delete");
        assert_eq!(outcome.deleted, [held.id]);
        assert!(outcome.held.is_empty());
        assert_eq!(
            store.folder_count(tenant, "held@t.example", "Recoverable Items/Purges"),
            0
        );
    }

    #[test]
    fn retention_removes_old_copies_and_orphaned_items() {
        let (_dir, store, tenant) = store();
        let now = Utc::now();
        let old = now - chrono::Duration::days(10);
        let shared = item(tenant.0, &["held@t.example", "free@t.example"], old);
        let alone = item(tenant.0, &["free@t.example"], old);
        let recent = item(tenant.0, &["free@t.example"], now);
        for i in [&shared, &alone, &recent] {
            commit(&store, i);
        }
        let cutoff = now - chrono::Duration::days(5);
        let outcome = store
            .sweep_retention(tenant, cutoff, Some(5), "manual", None)
            .expect("sweep");
        assert_eq!(outcome.record.copies_removed, 2);
        assert_eq!(outcome.record.items_removed, 1);
        assert_eq!(outcome.record.copies_kept_under_hold, 1);
        assert_eq!(outcome.removed_item_ids, [alone.id]);
        assert_eq!(outcome.changed_item_ids, [shared.id]);
        let kept = store.item(shared.id).expect("read").expect("still there");
        assert_eq!(kept.copies.len(), 1);
        assert_eq!(kept.copies[0].mailbox, "held@t.example");
        assert!(store.item(recent.id).expect("read").is_some());
        assert_eq!(store.sweeps(tenant, 10).expect("sweeps").len(), 1);
        let journal = store
            .ingestions_newest_first(tenant, 0, 10)
            .expect("journal");
        assert_eq!(journal.len(), 3);
        assert_eq!(journal[0].correlation_id, recent.correlation_id);
    }

    #[test]
    fn the_journal_lists_records_by_arrival_and_an_older_stores_index_is_dropped() {
        let (dir, store, tenant) = store();
        // Received times run backwards: the journal follows arrival (the v7 correlation ids).
        let now = Utc::now();
        let items: Vec<ItemRecord> = (0..3)
            .map(|n| {
                item(
                    tenant.0,
                    &["free@t.example"],
                    now - chrono::Duration::seconds(n),
                )
            })
            .collect();
        for i in &items {
            commit(&store, i);
        }
        let ids = |store: &Store, skip| -> Vec<Uuid> {
            store
                .ingestions_newest_first(tenant, skip, 10)
                .expect("journal")
                .iter()
                .map(|r| r.correlation_id)
                .collect()
        };
        let newest_first: Vec<Uuid> = items.iter().rev().map(|i| i.correlation_id).collect();
        assert_eq!(ids(&store, 0), newest_first);
        assert_eq!(ids(&store, 1), newest_first[1..]);
        let other = TenantId(Uuid::new_v4());
        assert!(store
            .ingestions_newest_first(other, 0, 10)
            .expect("journal")
            .is_empty());
        // As a store made before: its own journal index, and the marker of it being built.
        let db = store.inner.db.clone();
        db.open_tree(LEGACY_JOURNAL_TREE)
            .expect("tree")
            .insert(b"stale", &[])
            .expect("insert");
        db.open_tree(META_TREE)
            .expect("meta")
            .insert(LEGACY_JOURNAL_BUILT, &[1])
            .expect("marker");
        db.flush().expect("flush");
        drop((db, store));
        let store = Store::open(dir.path()).expect("reopen");
        let names = store.inner.db.tree_names();
        assert!(!names
            .iter()
            .any(|n| n.as_ref() == LEGACY_JOURNAL_TREE.as_bytes()));
        let meta = store.inner.db.open_tree(META_TREE).expect("meta");
        assert!(meta.get(LEGACY_JOURNAL_BUILT).expect("read").is_none());
        assert_eq!(ids(&store, 0), newest_first);
    }

    #[test]
    fn copy_keys_parse_back() {
        let tenant = Uuid::new_v4();
        let item = Uuid::new_v4();
        let copy = CopyRecord {
            mailbox: "Alice@Contoso.com".into(),
            folder: "Recoverable Items/Purges".into(),
        };
        let received = Utc::now();
        let key = copy_key(tenant, &copy, received, item);
        let [entry] = parse_copies(&key, &[])
            .try_into()
            .expect("parses as one copy");
        assert_eq!(entry.mailbox, "alice@contoso.com");
        assert_eq!(entry.folder, "recoverable items/purges");
        assert_eq!(entry.item, item);
        assert_eq!(entry.received_micros, received.timestamp_micros() as u64);
        assert!(parse_copies(b"short", &[]).is_empty());
        assert_eq!(copies_in(&key, &[]), 1);
        // A group's entry: its members' copies in that folder.
        let mut ids = crate::store::ItemIds::new();
        let (first, second) = (ids.next_id(), ids.next_id());
        let group = groups::group_key(&first);
        let key = groups::copy_group_key(tenant, &copy, received, &group);
        let members = [0u16.to_le_bytes(), 1u16.to_le_bytes()].concat();
        let parsed: Vec<Uuid> = parse_copies(&key, &members)
            .iter()
            .map(|c| c.item)
            .collect();
        assert_eq!(parsed, [first, second]);
        assert_eq!(copies_in(&key, &members), 2);
    }

    /// A listing that reads a group's entry, then (after the group was exploded meanwhile, in
    /// the next sled leaf) its members' own entries, lists each member once; entries of other
    /// items and groups around them, and errors, pass through.
    #[test]
    fn a_listing_reads_each_copy_once_across_an_explode() {
        let tenant = Uuid::new_v4();
        let copy = CopyRecord {
            mailbox: "alice@contoso.com".into(),
            folder: "inbox".into(),
        };
        let received = Utc::now();
        let mut ids = crate::store::ItemIds::new();
        let members = [ids.next_id(), ids.next_id(), ids.next_id()];
        let group = groups::group_key(&members[0]);
        let mut later = crate::store::ItemIds::new();
        let other_group = groups::group_key(&later.next_id());
        let alone = Uuid::now_v7();
        let indices = |n: u16| (0..n).flat_map(u16::to_le_bytes).collect::<Vec<u8>>();
        let entry =
            |key: Vec<u8>, value: Vec<u8>| Ok((sled::IVec::from(key), sled::IVec::from(value)));
        let read = vec![
            // What an iterator can read: the group's entry, then its members' own entries
            // (written by the explode that removed it), then other entries.
            entry(
                groups::copy_group_key(tenant, &copy, received, &group),
                indices(3),
            ),
            entry(copy_key(tenant, &copy, received, members[0]), vec![]),
            entry(copy_key(tenant, &copy, received, members[2]), vec![]),
            entry(copy_key(tenant, &copy, received, alone), vec![]),
            Err(sled::Error::Unsupported("unreadable".into())),
            entry(
                groups::copy_group_key(tenant, &copy, received, &other_group),
                indices(2),
            ),
        ];
        let listed: Vec<sled::Result<Vec<Uuid>>> = OncePerCopy {
            inner: read.into_iter(),
            group: None,
        }
        .map(|entry| {
            entry.map(|(key, value)| parse_copies(&key, &value).iter().map(|c| c.item).collect())
        })
        .collect();
        let mut expected_ids: Vec<Vec<Uuid>> = vec![members.to_vec(), vec![alone]];
        expected_ids.push((0..2).map(|n| groups::member_id(&other_group, n)).collect());
        assert_eq!(listed.len(), 4, "{listed:?}");
        assert_eq!(listed[0].as_ref().unwrap(), &expected_ids[0]);
        assert_eq!(listed[1].as_ref().unwrap(), &expected_ids[1]);
        assert!(listed[2].is_err());
        assert_eq!(listed[3].as_ref().unwrap(), &expected_ids[2]);
    }
}
