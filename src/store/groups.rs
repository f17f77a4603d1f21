//! Item groups: the items of one ingestion request stored as one entry, in the write-ahead log
//! record that already holds them, instead of one sled entry per item and per copy.
//!
//! sled's cost is per key (a leaf of at most 16 entries is copied, logged and often split on
//! every insert), and a request of 100 items wrote ~200 keys. A grouped request writes one key
//! in `item_groups` (`group key (14 bytes) -> GroupRef`: where its log record is) and one key
//! per folder it lands in, in `copies` (`tenant || mailbox \0 folder \0 || newest-first time ||
//! group key` -> the members' indices, u16 LE each), whatever its size. Its items are read from
//! the log segment, which is kept (retired, never replayed) while a group points into it.
//!
//! Invariants:
//! - The members of a group have the ids `group key || index (u16 BE)`, index 0.. in request
//!   order ([`ItemIds`]): an item's group key is the first 14 bytes of its id, and the ids of a
//!   group sort in its order, as the v7 ids of one request did.
//! - A group's attachments are in its log record too, right after its members (no file each),
//!   read from there while the group stands ([`Store::grouped_attachment`]); an explode writes
//!   them out as files, in its transaction, before the group goes.
//! - Groups are immutable. Whatever changes one member (a deletion, copies removed, an
//!   attachment added) first writes every member as an entry of its own and removes the group
//!   ([`Store::explode_group_of`], in the same transaction): everything after that is the code
//!   of ungrouped items. A removal of every member removes the group whole; a group that
//!   nothing changes stays whole. Items of imports (written in a transaction before they are
//!   logged) and of earlier versions are never grouped.
//! - A group's header is its record's first operation, its members right after it, their
//!   length and CRC in the header: a member is read with one `pread` of the members alone.
//!   Inside a sled transaction the groups are read through the transaction's tree (a read of
//!   the tree itself waits for the transaction).
//! - A segment is deleted only once no group points into it: [`Held`] knows the segments that
//!   got a group since the start (and those before it until the first collection);
//!   [`Store::collect_segments`] scans the groups, after removals, and lets the others go.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use sled::transaction::{
    ConflictableTransactionError, TransactionalTree, UnabortableTransactionError,
};
use uuid::Uuid;

use super::model::{CopyRecord, ItemRecord};
use super::wal::{self, GroupRef};
use super::{abort, copy_key, copy_prefix, decode, encode_compact, Result, Store, StoreError};
use super::{BLOBS, COPIES, INGESTIONS, ITEMS};

/// The members of a group as its log record holds them: (id, encoded record).
type Members = Vec<(Vec<u8>, Vec<u8>)>;

/// The tree of groups: group key -> [`GroupRef`].
pub(super) const GROUPS: &str = "item_groups";

/// Bytes of an id that name its group.
pub(super) const KEY_LEN: usize = 14;

/// A group key.
pub(super) type GroupKey = [u8; KEY_LEN];

/// The group key of an item id (whether or not such a group exists).
pub(super) fn group_key(id: &Uuid) -> GroupKey {
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(&id.as_bytes()[..KEY_LEN]);
    key
}

/// The id of member `index` of the group `key`.
pub(super) fn member_id(key: &GroupKey, index: u16) -> Uuid {
    let mut bytes = [0u8; 16];
    bytes[..KEY_LEN].copy_from_slice(key);
    bytes[KEY_LEN..].copy_from_slice(&index.to_be_bytes());
    Uuid::from_bytes(bytes)
}

/// The ids of one request's items: the members of one group (UUIDv7: a fresh v7 id's first 14
/// bytes, its time and counter, are unique in the process and ordered in time), then, past
/// 65,536 items, ids of their own (such a request is stored ungrouped).
pub struct ItemIds {
    group: GroupKey,
    next: u32,
}

impl ItemIds {
    #[allow(clippy::new_without_default)]
    pub fn new() -> ItemIds {
        ItemIds::for_request(Uuid::now_v7())
    }

    /// The ids of the items of the request `correlation_id` (a v7 id made by this process):
    /// its group key is the correlation id's first 14 bytes, so the request's ingestion record
    /// can ride in the group's entry (one sled key fewer per request; see [`Group::record`]).
    pub fn for_request(correlation_id: Uuid) -> ItemIds {
        ItemIds {
            group: group_key(&correlation_id),
            next: 0,
        }
    }

    pub fn next_id(&mut self) -> Uuid {
        match u16::try_from(self.next) {
            Ok(index) => {
                self.next += 1;
                member_id(&self.group, index)
            }
            Err(_) => Uuid::now_v7(),
        }
    }
}

/// What a group's header holds (and its [`GroupRef`] keeps): the tenant and the member count,
/// so ids and tenants are known without reading the log, and the length and CRC of the
/// member operations that follow the header in its record. In the header's value, the
/// request's ingestion record may follow these [`Header::LEN`] bytes (see [`Group::record`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Header {
    pub tenant: Uuid,
    pub count: u16,
    pub members_len: u32,
    pub members_crc: u32,
}

impl Header {
    const LEN: usize = 26;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.extend_from_slice(self.tenant.as_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.members_len.to_le_bytes());
        out.extend_from_slice(&self.members_crc.to_le_bytes());
        out
    }

    /// Reads the first [`Header::LEN`] bytes (an ingestion record may follow).
    pub fn decode(bytes: &[u8]) -> Option<Header> {
        if bytes.len() < Self::LEN {
            return None;
        }
        Some(Header {
            tenant: Uuid::from_slice(bytes.get(..16)?).ok()?,
            count: u16::from_le_bytes(bytes.get(16..18)?.try_into().ok()?),
            members_len: u32::from_le_bytes(bytes.get(18..22)?.try_into().ok()?),
            members_crc: u32::from_le_bytes(bytes.get(22..26)?.try_into().ok()?),
        })
    }
}

/// A stored group: where it is, and its header.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Group {
    pub key: GroupKey,
    pub at: GroupRef,
    pub header: Header,
}

impl Group {
    pub fn decode(key: &[u8], value: &[u8]) -> Result<Group> {
        let unreadable = || StoreError::Log("an item group's entry is unreadable".into());
        let key: GroupKey = key.try_into().map_err(|_| unreadable())?;
        let at = GroupRef::decode(value).ok_or_else(unreadable)?;
        let header = Header::decode(&at.header).ok_or_else(unreadable)?;
        Ok(Group { key, at, header })
    }

    pub fn ids(&self) -> impl Iterator<Item = Uuid> + '_ {
        (0..self.header.count).map(|n| member_id(&self.key, n))
    }

    /// The encoded ingestion record of the request that stored the group, when it rides in
    /// the group's entry instead of an entry of its own in `ingestions` (requests grouped
    /// since the group key is the correlation id's: [`ItemIds::for_request`]). It is part of
    /// the journal while the group stands; whatever removes the group writes it out to
    /// `ingestions` first, in the same transaction ([`Store::remove_group`]).
    pub fn record(&self) -> Option<&[u8]> {
        self.at.header.get(Header::LEN..).filter(|r| !r.is_empty())
    }

    /// Where its members are in its segment: right after the header, its record's first op.
    fn members_offset(&self) -> u64 {
        let header = wal::op_len(GROUPS, KEY_LEN, Some(self.at.header.len()));
        self.at.offset + wal::FRAME_HEADER + header as u64
    }
}

/// Whether a group's entry (a [`GroupRef`]'s bytes) is of `tenant` and carries its request's
/// ingestion record, read without decoding it.
pub(super) fn entry_has_record_of(entry: &[u8], tenant: Uuid) -> bool {
    record_tenant(entry) == Some(tenant)
}

/// The tenant of a group's entry that carries its request's ingestion record.
pub(super) fn record_tenant(entry: &[u8]) -> Option<Uuid> {
    let header = entry.get(wal::GROUP_REF_LEN..)?;
    if header.len() <= Header::LEN {
        return None;
    }
    Uuid::from_slice(header.get(..16)?).ok()
}

/// The value of a group's header operation: the header, then the encoded ingestion record
/// of its request when that rides in the group's entry.
pub(super) fn header_value(header: &Header, record: Option<&[u8]>) -> Vec<u8> {
    let mut value = header.encode();
    value.extend_from_slice(record.unwrap_or_default());
    value
}

/// The copy-index key of a group's copies in one folder (all members have one `received`).
pub(super) fn copy_group_key(
    tenant: Uuid,
    copy: &CopyRecord,
    received: DateTime<Utc>,
    group: &GroupKey,
) -> Vec<u8> {
    let mut key = copy_prefix(tenant, &copy.mailbox, Some(&copy.folder));
    let micros = received.timestamp_micros().max(0) as u64;
    key.extend_from_slice(&(u64::MAX - micros).to_be_bytes());
    key.extend_from_slice(group);
    key
}

/// How one request's items are written as a group: its key, header, member operations
/// (logged right after the header) and copy-index entries.
pub(super) struct GroupPlan {
    pub key: GroupKey,
    pub header: Header,
    pub members: wal::Payload,
    pub copies: Vec<(Vec<u8>, Vec<u8>)>,
}

impl GroupPlan {
    /// The plan for `items` (with their encoded records) when they are one group's members in
    /// order ([`ItemIds`]), all of one tenant; `None` otherwise (they are stored one by one).
    pub fn of(items: &[(&ItemRecord, &[u8])]) -> Option<GroupPlan> {
        let (first, _) = items.first()?;
        let key = group_key(&first.id);
        let count = u16::try_from(items.len()).ok()?;
        let mut copies: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = Default::default();
        // The entry key of each (mailbox, folder, received) as the items name them: computed
        // once, not once per copy (a key is two lower-casings and allocations; the members
        // of a request share `received`).
        let mut named: HashMap<(&str, &str, DateTime<Utc>), Vec<u8>> = HashMap::new();
        let size: usize = items.iter().map(|(_, bytes)| 32 + bytes.len()).sum();
        let mut members = wal::Payload::with_capacity(size);
        for (n, (item, bytes)) in items.iter().enumerate() {
            members.group_member(ITEMS, item.id.as_bytes(), bytes);
            let index = u16::try_from(n).ok()?;
            if item.id != member_id(&key, index) || item.tenant != first.tenant {
                return None;
            }
            for copy in &item.copies {
                let entry = named
                    .entry((copy.mailbox.as_str(), copy.folder.as_str(), item.received))
                    .or_insert_with(|| copy_group_key(item.tenant, copy, item.received, &key));
                if !copies.contains_key(entry.as_slice()) {
                    copies.insert(entry.clone(), Vec::new());
                }
                let members = copies.get_mut(entry.as_slice())?;
                // Two copies of one item in one folder are one entry, as their keys were.
                let last = members.len().checked_sub(2).and_then(|n| members.get(n..));
                if last != Some(&index.to_le_bytes()[..]) {
                    members.extend_from_slice(&index.to_le_bytes());
                }
            }
        }
        Some(GroupPlan {
            key,
            header: Header {
                tenant: first.tenant,
                count,
                members_len: u32::try_from(members.len()).ok()?,
                members_crc: members.crc(),
            },
            members,
            copies: copies.into_iter().collect(),
        })
    }
}

/// `ids` in chunks of about `size`, never splitting the members of a group that follow each
/// other (so a removal of them all removes the group whole).
pub(super) fn chunks_keeping_groups(ids: &[Uuid], size: usize) -> Vec<&[Uuid]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    for n in 1..=ids.len() {
        let boundary = n == ids.len() || group_key(&ids[n]) != group_key(&ids[n - 1]);
        if boundary && (n - start >= size || n == ids.len()) {
            chunks.push(&ids[start..n]);
            start = n;
        }
    }
    chunks
}

/// The member indices a copy-group value lists.
pub(super) fn member_indices(value: &[u8]) -> impl Iterator<Item = u16> + '_ {
    value
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
}

/// Open log segments, for reading groups (a file stays readable once opened, renamed or
/// deleted).
pub(super) struct SegmentFiles {
    dir: PathBuf,
    open: Mutex<HashMap<u64, Arc<File>>>,
}

impl SegmentFiles {
    /// At most this many are kept open.
    const KEEP: usize = 64;

    pub fn new(dir: PathBuf) -> SegmentFiles {
        SegmentFiles {
            dir,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, seq: u64) -> Result<Arc<File>> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = open.get(&seq) {
            return Ok(file.clone());
        }
        let file = Arc::new(wal::open_segment(&self.dir, seq)?);
        if open.len() >= Self::KEEP {
            open.clear();
        }
        open.insert(seq, file.clone());
        Ok(file)
    }

    pub fn forget(&self, seqs: &[u64]) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        for seq in seqs {
            open.remove(seq);
        }
    }
}

/// Which log segments groups point into (see the module's invariants).
pub(super) struct Held {
    state: Mutex<HeldState>,
    /// Groups removed since the start: a collection is due when it moved.
    removed: AtomicU64,
}

struct HeldState {
    /// Segments that got a group since the last collection began, or that it found pointed into.
    known: BTreeSet<u64>,
    /// Segments below this are held: they are from before the start, and no collection has
    /// looked at them yet.
    unknown_below: u64,
    /// `removed` when the last collection began (`None`: none has run).
    collected_at: Option<u64>,
}

impl Held {
    /// At start-up: every segment below `next` is held until a collection, and those a
    /// replayed group points into.
    pub fn new(next: u64, replayed: &[u64]) -> Held {
        Held {
            state: Mutex::new(HeldState {
                known: replayed.iter().copied().collect(),
                unknown_below: next,
                collected_at: None,
            }),
            removed: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HeldState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A group was written pointing into segment `seq`.
    pub fn add(&self, seq: u64) {
        let mut state = self.lock();
        if state.known.last() != Some(&seq) {
            state.known.insert(seq);
        }
    }

    pub fn removed_one(&self) {
        self.removed.fetch_add(1, Ordering::SeqCst);
    }

    pub fn is_held(&self, seq: u64) -> bool {
        let state = self.lock();
        seq < state.unknown_below || state.known.contains(&seq)
    }

    /// Whether a collection could free a segment: none ran yet, or groups went since.
    pub fn due(&self) -> bool {
        let removed = self.removed.load(Ordering::SeqCst);
        self.lock().collected_at != Some(removed)
    }
}

impl Store {
    /// The group `key`, if stored.
    pub(super) fn group(&self, key: &GroupKey) -> Result<Option<Group>> {
        match self.inner.groups.get(key)? {
            Some(value) => Ok(Some(Group::decode(key, &value)?)),
            None => Ok(None),
        }
    }

    /// The members of `group`, encoded, with their ids (read from its log record).
    fn group_values(&self, group: &Group) -> Result<Members> {
        let file = self.inner.segments.get(group.at.seq)?;
        let members = wal::read_group_members(
            &file,
            group.members_offset(),
            group.header.members_len,
            group.header.members_crc,
        )?;
        if members.len() != usize::from(group.header.count) {
            return Err(StoreError::Log(format!(
                "an item group's log record lists {} members, not {}",
                members.len(),
                group.header.count
            )));
        }
        Ok(members)
    }

    /// The attachments of `group`'s members, by key (`blob_key`): they stay in its log record,
    /// right after its members (`PreparedIngestion::log`), while the group stands (no file
    /// each: creating one was most of a request with an attachment), and are written out as
    /// files when it is exploded. `only`: just that one.
    pub(super) fn group_attachments(
        &self,
        group: &Group,
        only: Option<&[u8]>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let file = self.inner.segments.get(group.at.seq)?;
        let from = group.members_offset() + u64::from(group.header.members_len);
        wal::inserts_from(&file, group.at.offset, from, BLOBS)?
            .into_iter()
            .filter(|(key, _, _)| only.is_none_or(|only| key.as_slice() == only))
            .map(|(key, at, len)| Ok((key, wal::read_value(&file, at, len)?)))
            .collect()
    }

    /// Attachment `key` (`blob_key(id, _)`) of item `id` when it is a member of a stored
    /// group. `Ok(None)` when it is not, or when its group went while it was read (the item is
    /// then stored on its own, its attachments as files, or gone).
    pub(super) fn grouped_attachment(&self, id: Uuid, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let group_key = group_key(&id);
        let Some(group) = self.group(&group_key)? else {
            return Ok(None);
        };
        match self.group_attachments(&group, Some(key)) {
            Ok(found) => Ok(found.into_iter().next().map(|(_, content)| content)),
            Err(_) if self.group(&group_key)?.as_ref() != Some(&group) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The members of `group`.
    pub(super) fn group_items(&self, group: &Group) -> Result<Vec<ItemRecord>> {
        self.group_values(group)?
            .iter()
            .map(|(_, value)| decode(value))
            .collect()
    }

    /// Item `id` when it is a member of a stored group. `Ok(None)` when it is not, or when its
    /// group went while it was read (the item is then stored on its own, or gone).
    pub(super) fn grouped_item(&self, id: Uuid) -> Result<Option<ItemRecord>> {
        let key = group_key(&id);
        let Some(group) = self.group(&key)? else {
            return Ok(None);
        };
        match self.group_values(&group) {
            Ok(values) => values
                .iter()
                .find(|(k, _)| k.as_slice() == id.as_bytes())
                .map(|(_, value)| decode(value))
                .transpose(),
            // Changed meanwhile (and its segment gone): its members are entries of their own.
            Err(_) if self.group(&key)?.as_ref() != Some(&group) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// In a transaction over `groups` (a read of the tree itself would wait for the
    /// transaction): item `id` when it is a member of a stored group, `Some(Err)` when that
    /// group's log record cannot be read.
    pub(super) fn grouped_item_in(
        &self,
        groups: &TransactionalTree,
        id: &Uuid,
    ) -> std::result::Result<Option<Result<ItemRecord>>, UnabortableTransactionError> {
        let key = group_key(id);
        let Some(value) = groups.get(key)? else {
            return Ok(None);
        };
        let read = Group::decode(&key, &value)
            .and_then(|group| self.group_values(&group))
            .and_then(|values| {
                let (_, value) = values
                    .iter()
                    .find(|(k, _)| k.as_slice() == id.as_bytes())
                    .ok_or_else(|| StoreError::Log(format!("item {id} is not in its group")))?;
                decode(value)
            });
        Ok(Some(read))
    }

    /// The groups among those of `ids` whose log record cannot be read (a damaged segment),
    /// with their entries in `copies`: what a removal of them removes instead of reading them.
    /// Not from within a transaction.
    pub(super) fn unreadable_groups(
        &self,
        ids: &[Uuid],
    ) -> Result<HashMap<GroupKey, Vec<Vec<u8>>>> {
        let mut out = HashMap::new();
        let keys: BTreeSet<GroupKey> = ids.iter().map(group_key).collect();
        for key in keys {
            let Some(group) = self.group(&key)? else {
                continue;
            };
            if self.group_values(&group).is_ok() {
                continue;
            }
            let mut entries = Vec::new();
            for copy_key in self
                .inner
                .copies
                .scan_prefix(group.header.tenant.as_bytes())
                .keys()
            {
                let copy_key = copy_key?;
                if super::mailbox::is_entry_of_group(&copy_key, &key) {
                    entries.push(copy_key.to_vec());
                }
            }
            out.insert(key, entries);
        }
        Ok(out)
    }

    /// The stored items among `ids`, in their order (each group read once).
    pub fn items(&self, ids: &[Uuid]) -> Result<Vec<ItemRecord>> {
        let mut read: HashMap<GroupKey, Option<Members>> = HashMap::new();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let key = group_key(id);
            if let std::collections::hash_map::Entry::Vacant(entry) = read.entry(key) {
                let values = match self.group(&key)? {
                    Some(group) => self.group_values(&group).ok(),
                    None => None,
                };
                entry.insert(values);
            }
            let grouped = read
                .get(&key)
                .and_then(|values| values.as_ref())
                .and_then(|values| values.iter().find(|(k, _)| k.as_slice() == id.as_bytes()));
            match grouped {
                Some((_, value)) => out.push(decode(value)?),
                None => out.extend(self.item(*id)?),
            }
        }
        Ok(out)
    }

    /// Every stored group, in key order.
    pub(super) fn groups(&self) -> impl Iterator<Item = Result<Group>> + '_ {
        self.inner.groups.iter().map(|entry| {
            let (key, value) = entry?;
            Group::decode(&key, &value)
        })
    }

    /// In a transaction over `items`, `copies` and `groups`: when `id` is a member of a
    /// stored group, writes every member as an entry of its own (its record, a copy key per
    /// copy) and removes the group with its copy-group keys, logging every write in
    /// `payload`. What then changes one member changes it alone.
    pub(super) fn explode_group_of(
        &self,
        id: &Uuid,
        [items, copies, groups, ingestions]: [&TransactionalTree; 4],
        payload: &mut wal::Payload,
    ) -> std::result::Result<(), ConflictableTransactionError<StoreError>> {
        let key = group_key(id);
        let Some(value) = groups.get(key)? else {
            return Ok(());
        };
        let group = Group::decode(&key, &value).map_err(abort)?;
        let members = self.group_items(&group).map_err(abort)?;
        // Its attachments become files, as those of items of their own are (sled gets this
        // write before the log: synced first, with `--fsync`; see `BlobFiles::put_synced`).
        if members.iter().any(|item| !item.attachments.is_empty()) {
            let attachments = self.group_attachments(&group, None).map_err(abort)?;
            self.inner
                .files
                .put_synced(
                    attachments
                        .iter()
                        .map(|(k, v)| (k.as_slice(), v.as_slice())),
                )
                .map_err(abort)?;
            for (blob, content) in &attachments {
                payload.insert(BLOBS, blob, content);
            }
        }
        let mut copy_groups = BTreeSet::new();
        for item in &members {
            let bytes = encode_compact(item).map_err(abort)?;
            items.insert(item.id.as_bytes(), bytes.as_slice())?;
            payload.insert(ITEMS, item.id.as_bytes(), &bytes);
            for copy in &item.copies {
                copy_groups.insert(copy_group_key(item.tenant, copy, item.received, &key));
                let own = copy_key(item.tenant, copy, item.received, item.id);
                copies.insert(own.as_slice(), &[])?;
                payload.insert(COPIES, &own, &[]);
            }
        }
        for copy_group in copy_groups {
            copies.remove(copy_group.as_slice())?;
            payload.remove(COPIES, &copy_group);
        }
        Self::remove_group(&group, [groups, ingestions], payload)
    }

    /// In a transaction: removes the entry of `group`, writing out first the ingestion record
    /// that rides in it (if it does) as an entry of its own in `ingestions`, so the journal
    /// keeps it. Every removal of a group goes through here.
    pub(super) fn remove_group(
        group: &Group,
        [groups, ingestions]: [&TransactionalTree; 2],
        payload: &mut wal::Payload,
    ) -> std::result::Result<(), ConflictableTransactionError<StoreError>> {
        if let Some(record) = group.record() {
            let correlation_id = super::ingestion_correlation_id(record).map_err(abort)?;
            let mut key = group.header.tenant.as_bytes().to_vec();
            key.extend_from_slice(correlation_id.as_bytes());
            ingestions.insert(key.as_slice(), record)?;
            payload.insert(INGESTIONS, &key, record);
        }
        groups.remove(&group.key[..])?;
        payload.remove(GROUPS, &group.key);
        Ok(())
    }

    /// Counts the groups a committed write removed (after its transaction: a collection that
    /// began before would still see them), so a collection is due.
    pub(super) fn note_group_removals(&self, payload: &wal::Payload) {
        if !payload.removed(GROUPS).is_empty() {
            self.inner.held.removed_one();
        }
    }

    /// Deletes the retired log segments no group points into (and the search index does not
    /// need): a scan of the groups, run by the checkpoint thread once after the start and
    /// after groups were removed. Returns the segments deleted.
    pub(super) fn collect_segments(&self) -> Result<Vec<u64>> {
        let i = &self.inner;
        let removed = i.held.removed.load(Ordering::SeqCst);
        // Groups written from here on point into this segment or later ones (`add`).
        let first_unscanned = i.wal.current.load(Ordering::SeqCst);
        let mut referenced = BTreeSet::new();
        for entry in i.groups.iter().values() {
            if let Some(at) = GroupRef::decode(&entry?) {
                referenced.insert(at.seq);
            }
        }
        let _one_at_a_time = i
            .wal
            .checkpointing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // What the scan found gone must be gone on disk before the segments it pointed into
        // are (a crash, power loss or a write the log refused could otherwise bring back a
        // group whose segment is deleted).
        i.db.flush()?;
        {
            let mut state = i.held.lock();
            let newer = state.known.split_off(&first_unscanned);
            referenced.extend(newer);
            state.known = referenced;
            state.unknown_below = 0;
            state.collected_at = Some(removed);
        }
        let keep_from = i.wal.index_needs.load(Ordering::SeqCst);
        let deleted = wal::prune_retired(&i.wal.dir, keep_from, &|n| i.held.is_held(n))?;
        i.segments.forget(&deleted);
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TenantId;
    use crate::store::mailbox::tests::{copy_dir, item, record_of, store};
    use crate::store::IngestionCommit;

    /// One request's items as `create_item` makes them (one group), each with an attachment.
    fn request(tenant: Uuid, n: usize, mailboxes: &[&str]) -> Vec<ItemRecord> {
        let correlation_id = Uuid::now_v7();
        let mut ids = ItemIds::for_request(correlation_id);
        let received = Utc::now();
        (0..n)
            .map(|n| {
                let mut it = item(tenant, mailboxes, received);
                it.id = ids.next_id();
                it.correlation_id = correlation_id;
                it.subject = Some(format!("item {n}"));
                it
            })
            .collect()
    }

    fn ingest(store: &Store, items: &[ItemRecord]) {
        ingest_with(store, items, |_| b"x".to_vec());
    }

    /// [`ingest`], item `n`'s attachment being `attachment(n)`.
    fn ingest_with(store: &Store, items: &[ItemRecord], attachment: impl Fn(usize) -> Vec<u8>) {
        let commit = IngestionCommit {
            record: record_of(&items[0]),
            items: items
                .iter()
                .enumerate()
                .map(|(n, it)| (it.clone(), vec![attachment(n)]))
                .collect(),
            after: None,
        };
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(store.commit_ingestion(commit))
            .expect("committed");
    }

    /// Deletes the items of `requests`, in that order, while another thread runs `read` (with
    /// the number of reads before) again and again; what the reads returned.
    fn reads_while_removing<T: Send>(
        store: &Store,
        tenant: TenantId,
        requests: &[Vec<ItemRecord>],
        read: impl Fn(usize) -> Option<T> + Sync,
    ) -> Vec<T> {
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let mut found = Vec::new();
                let mut n = 0;
                while !done.load(Ordering::Relaxed) {
                    found.extend(read(n));
                    n += 1;
                }
                found
            });
            for items in requests {
                store
                    .delete_items(tenant, &ids(items), true, None, None)
                    .expect("deleted");
            }
            done.store(true, Ordering::Relaxed);
            reader.join().expect("reader")
        })
    }

    /// Journals one request of `tenant`: stored (its record in its group's entry) or refused
    /// (a record of its own).
    fn stored_or_refused(
        store: &Store,
        tenant: TenantId,
        stored: bool,
    ) -> crate::store::model::IngestionRecord {
        if !stored {
            return refuse(store, tenant.0);
        }
        let items = request(tenant.0, 1, &["free@t.example"]);
        ingest(store, &items);
        record_of(&items[0])
    }

    /// Asserts that the journal's page (`skip`, `top`) is that slice of `newest_first`.
    fn assert_page(
        store: &Store,
        tenant: TenantId,
        newest_first: &[crate::store::model::IngestionRecord],
        skip: usize,
        top: usize,
    ) {
        let page = store
            .ingestions_newest_first(tenant, skip, top)
            .expect("journal");
        let wanted: Vec<_> = newest_first.iter().skip(skip).take(top).cloned().collect();
        assert_eq!(page.len(), wanted.len(), "skip {skip} top {top}");
        assert!(page == wanted, "skip {skip} top {top}: another slice");
    }

    /// Journals a refusal of a request of `tenant` (a record of its own, no group).
    fn refuse(store: &Store, tenant: Uuid) -> crate::store::model::IngestionRecord {
        let mut record = record_of(&request(tenant, 1, &[])[0]);
        record.http_status = 403;
        record.outcome = "Refused".into();
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(store.record_ingestion(&record))
            .expect("journaled");
        record
    }

    const PURGES: &str = "Recoverable Items/Purges";

    /// A retention sweep of every copy received until now.
    fn sweep_everything(store: &Store, tenant: TenantId) -> crate::store::mailbox::SweepOutcome {
        store
            .sweep_retention(
                tenant,
                Utc::now() + chrono::Duration::days(1),
                None,
                "manual",
                None,
            )
            .expect("sweep")
    }

    /// The first 10 records of `tenant`'s journal, newest first.
    fn journal(store: &Store, tenant: TenantId) -> Vec<crate::store::model::IngestionRecord> {
        store
            .ingestions_newest_first(tenant, 0, 10)
            .expect("journal")
    }

    fn ids(items: &[ItemRecord]) -> Vec<Uuid> {
        items.iter().map(|it| it.id).collect()
    }

    #[test]
    fn a_request_is_one_group_read_listed_and_replayed_after_a_crash() {
        let (dir, store, tenant) = store();
        let items = request(tenant.0, 3, &["free@t.example", "other@t.example"]);
        ingest(&store, &items);
        assert_eq!(store.inner.groups.len(), 1, "one entry for the request");
        assert!(store.inner.items.is_empty(), "none per item");
        assert!(
            store.inner.ingestions.is_empty(),
            "its ingestion record rides in the group's entry"
        );
        assert_eq!(
            store.inner.copies.len(),
            2,
            "one copy entry per folder it landed in"
        );
        let check = |store: &Store| {
            for it in &items {
                assert_eq!(store.item(it.id).expect("read").as_ref(), Some(it));
                assert_eq!(
                    store.attachment(it.id, 0).expect("read").as_deref(),
                    Some(&b"x"[..])
                );
            }
            assert_eq!(store.items(&ids(&items)).expect("read"), items);
            assert_eq!(store.folder_count(tenant, "free@t.example", PURGES), 3);
            assert_eq!(
                store
                    .folder_items(tenant, "free@t.example", PURGES, 1, 5)
                    .expect("list"),
                ids(&items)[1..],
                "in request order, paged"
            );
            let (page, total) = store
                .mailbox_page(tenant, "other@t.example", None, 0, 2)
                .expect("page");
            assert_eq!(total, 3);
            assert_eq!(
                page.iter().map(|c| c.item).collect::<Vec<_>>(),
                ids(&items)[..2]
            );
            assert_eq!(
                store.mailbox_counts(tenant).expect("counts")["free@t.example"]
                    ["recoverable items/purges"],
                3
            );
            assert_eq!(store.item_ids_after(None, 10).expect("ids"), ids(&items));
            assert_eq!(
                store.item_ids_after(Some(items[0].id), 1).expect("ids"),
                [items[1].id]
            );
            assert_eq!(store.last_item_id().expect("last"), Some(items[2].id));
            let record = record_of(&items[0]);
            assert_eq!(
                store
                    .ingestion(tenant, record.correlation_id)
                    .expect("read"),
                Some(record.clone())
            );
            assert_eq!(journal(store, tenant), std::slice::from_ref(&record));
            let other = TenantId(Uuid::new_v4());
            assert!(store
                .ingestion(other, record.correlation_id)
                .expect("read")
                .is_none());
            assert!(journal(store, other).is_empty());
        };
        check(&store);
        // A crash before any checkpoint: the replay finds the group in its log record.
        let copy = tempfile::tempdir().expect("dir");
        copy_dir(dir.path(), copy.path());
        let crashed = Store::open(copy.path()).expect("reopen");
        check(&crashed);
        // After a checkpoint the segment is retired, and kept: the group points into it.
        store.flush().expect("checkpoint");
        store.collect_segments().expect("collect");
        drop(store);
        let reopened = Store::open(dir.path()).expect("reopen");
        check(&reopened);
    }

    #[test]
    fn changing_one_member_writes_the_group_out_first() {
        let (dir, store, tenant) = store();
        let items = request(tenant.0, 3, &["free@t.example", "held@t.example"]);
        ingest(&store, &items);
        // Only the copies in one mailbox go: the other members are untouched.
        let within: std::collections::HashSet<String> = ["free@t.example".to_string()].into();
        let outcome = store
            .delete_items(tenant, &[items[1].id], true, Some(&within), None)
            .expect("delete");
        assert_eq!(outcome.changed, [items[1].id]);
        assert!(store.inner.groups.is_empty(), "the group is written out");
        assert_eq!(
            store.inner.ingestions.len(),
            1,
            "with the ingestion record that rode in it"
        );
        let check = |store: &Store| {
            assert_eq!(journal(store, tenant), [record_of(&items[0])]);
            assert_eq!(
                store.item(items[0].id).expect("read").as_ref(),
                Some(&items[0])
            );
            assert_eq!(
                store.item(items[2].id).expect("read").as_ref(),
                Some(&items[2])
            );
            let changed = store.item(items[1].id).expect("read").expect("kept");
            assert_eq!(changed.copies.len(), 1);
            assert_eq!(store.folder_count(tenant, "free@t.example", PURGES), 2);
            assert_eq!(store.folder_count(tenant, "held@t.example", PURGES), 3);
        };
        check(&store);
        let copy = tempfile::tempdir().expect("dir");
        copy_dir(dir.path(), copy.path());
        check(&Store::open(copy.path()).expect("reopen"));
        // An attachment added to a member of another group writes that group out too.
        let other = request(tenant.0, 2, &["free@t.example"]);
        ingest(&store, &other);
        let meta = other[0].attachments[0].clone();
        let index = tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(store.add_attachment(other[1].id, meta, b"y".to_vec(), 1 << 20, None))
            .expect("added");
        assert_eq!(index, 1);
        assert_eq!(
            store.item(other[0].id).expect("read").as_ref(),
            Some(&other[0])
        );
        assert_eq!(
            store
                .item(other[1].id)
                .expect("read")
                .expect("item")
                .attachments
                .len(),
            2
        );
        assert_eq!(store.folder_count(tenant, "free@t.example", PURGES), 4);
        // Retention and a reset see grouped and written-out items alike.
        let newer = request(tenant.0, 2, &["free@t.example"]);
        ingest(&store, &newer);
        let swept = sweep_everything(&store, tenant);
        assert_eq!(
            swept.record.items_removed, 4,
            "all but the 3 items with a held copy"
        );
        assert_eq!(store.folder_count(tenant, "free@t.example", PURGES), 0);
        assert_eq!(store.folder_count(tenant, "held@t.example", PURGES), 3);
        // The journal outlives what the requests stored.
        let expected = [&newer[0], &other[0], &items[0]].map(record_of);
        assert_eq!(journal(&store, tenant), expected);
        assert!(store.inner.groups.is_empty());
        let copy = tempfile::tempdir().expect("dir");
        copy_dir(dir.path(), copy.path());
        let crashed = Store::open(copy.path()).expect("reopen");
        assert_eq!(journal(&crashed, tenant), expected);
    }

    /// The first journal read lists the groups carrying records by tenant; groups written
    /// after it are listed as they are written, removed ones are dropped by the read that
    /// finds them gone, and each tenant's journal reads its own groups only.
    #[test]
    fn the_journal_reads_the_listing_of_its_tenants_groups() {
        let (_dir, store, tenant) = store();
        let other = TenantId(Uuid::new_v4());
        let before: Vec<_> = (0..3)
            .map(|_| {
                let items = request(other.0, 1, &["free@t.example"]);
                ingest(&store, &items);
                items
            })
            .collect();
        let mine = request(tenant.0, 2, &["free@t.example"]);
        ingest(&store, &mine);
        let listed = &store.inner.record_groups;
        assert!(!listed.is_built(), "nothing kept before a journal read");
        assert_eq!(journal(&store, tenant), [record_of(&mine[0])]);
        assert!(listed.is_built());
        assert_eq!(listed.below(tenant.0, None, 10).len(), 1);
        assert_eq!(listed.below(other.0, None, 10).len(), 3);
        // Written after the build: listed at once, and read.
        let after = request(tenant.0, 1, &["free@t.example"]);
        ingest(&store, &after);
        assert_eq!(listed.below(tenant.0, None, 10).len(), 2);
        assert_eq!(
            journal(&store, tenant),
            [record_of(&after[0]), record_of(&mine[0])]
        );
        // A removed group: its record is read from its own entry, the listing drops it.
        store
            .delete_items(tenant, &ids(&mine), true, None, None)
            .expect("deleted");
        assert_eq!(
            journal(&store, tenant),
            [record_of(&after[0]), record_of(&mine[0])]
        );
        assert_eq!(listed.below(tenant.0, None, 10).len(), 1, "dropped");
        // Paging over more than one batch of listed keys.
        let many: Vec<_> = (0..70)
            .map(|_| {
                let items = request(other.0, 1, &["free@t.example"]);
                ingest(&store, &items);
                record_of(&items[0])
            })
            .collect();
        let page = store
            .ingestions_newest_first(other, 31, 39)
            .expect("journal");
        let newest_first: Vec<_> = many.iter().rev().cloned().collect();
        assert_eq!(page, newest_first[31..]);
        let all = store
            .ingestions_newest_first(other, 0, 100)
            .expect("journal");
        assert_eq!(all.len(), 73);
        assert_eq!(
            all[70..],
            before
                .iter()
                .rev()
                .map(|i| record_of(&i[0]))
                .collect::<Vec<_>>()[..]
        );
        // A tenant's deletion and a reset leave nothing listed.
        assert!(store.delete_tenant(tenant, None).expect("deleted"));
        assert!(listed.below(tenant.0, None, 10).is_empty());
        assert!(journal(&store, tenant).is_empty());
        store.reset(true, None).expect("reset");
        assert!(!listed.is_built());
        assert!(journal(&store, other).is_empty());
        assert!(listed.below(other.0, None, 10).is_empty());
    }

    /// A tenant's deletion removes its ingestion records through the log: the group removals
    /// it logs write each group's record out to `ingestions`, and a replay of them after a
    /// crash must not bring those records back.
    #[test]
    fn a_deleted_tenants_records_stay_deleted_after_a_crash() {
        let (dir, store, tenant) = store();
        let items = request(tenant.0, 2, &["free@t.example"]);
        ingest(&store, &items);
        store.flush().expect("checkpoint"); // the request's segment is retired
        assert!(store.delete_tenant(tenant, None).expect("deleted"));
        assert!(journal(&store, tenant).is_empty());
        // What a checkpoint's flush does before it retires the segment: sled has it all.
        store.inner.db.flush().expect("flush");
        let copy = tempfile::tempdir().expect("dir");
        copy_dir(dir.path(), copy.path());
        let crashed = Store::open(copy.path()).expect("reopen");
        assert!(crashed.tenant(tenant).expect("read").is_none());
        assert_eq!(crashed.inner.ingestions.len(), 0, "records came back");
        assert!(journal(&crashed, tenant).is_empty());
    }

    /// Records of stores from before correlation ids were v7 (v4 ids, in no order) come after
    /// every v7 record, newest first by when they were received, and page with them.
    #[test]
    fn records_with_v4_ids_of_older_stores_come_after_the_v7_ones() {
        let (_dir, store, tenant) = store();
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let old = |first_byte: u8, days_ago: i64| {
            let mut record = record_of(&request(tenant.0, 1, &[])[0]);
            let mut id = [first_byte; 16];
            id[6] = 0x4a; // version 4
            record.correlation_id = Uuid::from_bytes(id);
            record.received = Utc::now() - chrono::Duration::days(days_ago);
            runtime
                .block_on(store.record_ingestion(&record))
                .expect("journaled");
            record
        };
        // Above and below every v7 id, received in an order their ids do not follow.
        let older = old(0xab, 30);
        let newer = old(0x00, 20);
        let v7 = request(tenant.0, 1, &["free@t.example"]);
        ingest(&store, &v7);
        let ids: Vec<Uuid> = journal(&store, tenant)
            .iter()
            .map(|r| r.correlation_id)
            .collect();
        assert_eq!(
            ids,
            [
                v7[0].correlation_id,
                newer.correlation_id,
                older.correlation_id
            ]
        );
        let page: Vec<Uuid> = store
            .ingestions_newest_first(tenant, 1, 1)
            .expect("journal")
            .iter()
            .map(|r| r.correlation_id)
            .collect();
        assert_eq!(page, [newer.correlation_id]);
        assert_eq!(
            store.ingestion(tenant, older.correlation_id).expect("read"),
            Some(older)
        );
    }

    /// A record read in both places (its group's removal moved it between the two reads of a
    /// listing) is listed once.
    #[test]
    fn a_record_in_its_group_and_of_its_own_is_listed_once() {
        let (_dir, store, tenant) = store();
        let items = request(tenant.0, 1, &["free@t.example"]);
        ingest(&store, &items);
        let record = record_of(&items[0]);
        // Its own entry as the group's removal writes it, with the group still there.
        let mut key = tenant.0.as_bytes().to_vec();
        key.extend_from_slice(record.correlation_id.as_bytes());
        store
            .inner
            .ingestions
            .insert(key, crate::store::encode_compact(&record).expect("encoded"))
            .expect("inserted");
        assert_eq!(journal(&store, tenant), [record]);
    }

    /// The journal reads the records riding in group entries and those of their own (refused
    /// requests, records written out of removed groups) as one list, newest first; a tenant's
    /// deletion and a reset leave none of either.
    #[test]
    fn the_journal_merges_records_in_groups_with_records_of_their_own() {
        let (dir, store, tenant) = store();
        let refused = |store: &Store| refuse(store, tenant.0);
        let first = request(tenant.0, 2, &["free@t.example"]);
        ingest(&store, &first);
        let second = refused(&store);
        let third = request(tenant.0, 1, &["held@t.example"]);
        ingest(&store, &third);
        let fourth = refused(&store);
        let newest_first = [
            fourth.clone(),
            record_of(&third[0]),
            second.clone(),
            record_of(&first[0]),
        ];
        assert_eq!(store.inner.ingestions.len(), 2, "the refusals");
        assert_eq!(journal(&store, tenant), newest_first);
        assert_eq!(
            store
                .ingestions_newest_first(tenant, 1, 2)
                .expect("journal"),
            newest_first[1..3],
            "paged"
        );
        assert_eq!(
            store
                .ingestion(tenant, second.correlation_id)
                .expect("read"),
            Some(second.clone())
        );
        // Another tenant's requests are not in it, nor its in theirs.
        let other = TenantId(Uuid::new_v4());
        store
            .put_tenant(&crate::store::model::TenantRecord {
                id: other.0,
                display_name: "O".into(),
                domains: vec!["o.example".into()],
                third_party_mailbox: None,
                retention_days: None,
            })
            .expect("tenant");
        let theirs = request(other.0, 1, &["someone@o.example"]);
        ingest(&store, &theirs);
        assert_eq!(journal(&store, tenant), newest_first);
        assert_eq!(journal(&store, other), [record_of(&theirs[0])]);
        assert!(store
            .ingestion(tenant, theirs[0].correlation_id)
            .expect("read")
            .is_none());
        // A crash: the replay brings back the same journal.
        let copy = tempfile::tempdir().expect("dir");
        copy_dir(dir.path(), copy.path());
        assert_eq!(
            Store::open(copy.path())
                .expect("reopen")
                .ingestions_newest_first(tenant, 0, 10)
                .expect("journal"),
            newest_first
        );
        // A reset (forced) removes them all, wherever they are.
        let outcome = store.reset(true, None).expect("reset");
        assert_eq!(outcome.ingestions_removed, 5, "both tenants' records");
        assert!(journal(&store, tenant).is_empty());
        assert!(store.inner.ingestions.is_empty() && store.inner.groups.is_empty());
        // A tenant's deletion too.
        ingest(&store, &request(tenant.0, 2, &["free@t.example"]));
        refused(&store);
        assert_eq!(journal(&store, tenant).len(), 2);
        assert!(store.delete_tenant(tenant, None).expect("deleted"));
        assert!(store.inner.ingestions.is_empty() && store.inner.groups.is_empty());
        assert!(journal(&store, tenant).is_empty());
    }

    #[test]
    fn a_segment_goes_once_no_group_points_into_it() {
        let (dir, store, tenant) = store();
        let first = request(tenant.0, 2, &["free@t.example"]);
        ingest(&store, &first);
        let segment = store.log_segment();
        store.flush().expect("checkpoint");
        store.collect_segments().expect("collect");
        let wal_dir = dir.path().join("wal");
        let retired = |seq: u64| wal_dir.join(format!("idx-{seq:020}.log")).exists();
        assert!(retired(segment), "kept: a group points into it");
        // A reset of a tenant without holds removes its groups whole, unread.
        let outcome = store.reset(true, None).expect("reset");
        assert_eq!(outcome.removed, 2);
        assert!(store.inner.groups.is_empty());
        assert!(store.inner.items.is_empty(), "nothing written out");
        store.flush().expect("checkpoint");
        assert!(store.inner.held.due(), "groups went: a collection is due");
        let deleted = store.collect_segments().expect("collect");
        assert!(deleted.contains(&segment), "{deleted:?}");
        assert!(!retired(segment));
        assert!(!store.inner.held.due());
        // A store reopened holds its older segments until it has looked.
        let second = request(tenant.0, 1, &["free@t.example"]);
        ingest(&store, &second);
        let segment = store.log_segment();
        store.flush().expect("checkpoint");
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        assert!(store.inner.held.is_held(segment));
        store.collect_segments().expect("collect");
        assert!(retired(segment), "still pointed into");
        assert_eq!(
            store.item(second[0].id).expect("read").as_ref(),
            Some(&second[0])
        );
    }

    /// A group's attachments stay in its log record: no file is written for them, they are
    /// read from the record (after a crash's replay too, which writes them as files as well:
    /// see `wal::apply`), and a change to one member writes the others' out as files before
    /// the group goes, so they outlive its segment.
    #[test]
    fn a_groups_attachments_stay_in_its_record_until_it_is_written_out() {
        let (dir, store, tenant) = store();
        let items = request(tenant.0, 3, &["free@t.example"]);
        let content = |n: usize| format!("attachment of item {n}").into_bytes();
        ingest_with(&store, &items, content);
        let files = |store: &Store| -> usize {
            store
                .inner
                .files
                .directories()
                .iter()
                .map(|d| crate::store::blobs::BlobFiles::keys_in(d).len())
                .sum()
        };
        let attachments = |store: &Store| -> Vec<Option<Vec<u8>>> {
            items
                .iter()
                .map(|it| store.attachment(it.id, 0).expect("read"))
                .collect()
        };
        let all: Vec<_> = (0..3).map(|n| Some(content(n))).collect();
        assert_eq!(files(&store), 0, "no file for a group's attachments");
        assert_eq!(attachments(&store), all);
        assert_eq!(store.attachment(items[0].id, 1).expect("read"), None);
        let copy = tempfile::tempdir().expect("dir");
        copy_dir(dir.path(), copy.path());
        let crashed = Store::open(copy.path()).expect("reopen");
        assert_eq!(attachments(&crashed), all);
        drop(crashed);
        // Deleting one member writes the others' attachments out, and the segment can go.
        let segment = store.log_segment();
        store
            .delete_items(tenant, &[items[1].id], true, None, None)
            .expect("delete");
        assert!(store.inner.groups.is_empty());
        assert_eq!(files(&store), 2);
        store.flush().expect("checkpoint");
        let deleted = store.collect_segments().expect("collect");
        assert!(deleted.contains(&segment), "{deleted:?}");
        let kept = vec![Some(content(0)), None, Some(content(2))];
        assert_eq!(attachments(&store), kept);
        let copy = tempfile::tempdir().expect("dir");
        copy_dir(dir.path(), copy.path());
        assert_eq!(
            attachments(&Store::open(copy.path()).expect("reopen")),
            kept
        );
    }

    /// An explode writes a group's attachments out as files (truncated, then written) while
    /// its members stay readable: a read meanwhile takes the group's record, never a file
    /// being written, even in a store of an earlier version where the files were there first
    /// (from a review; read the file first, it returned 0 or 2 MB of 4 MB attachments).
    #[test]
    fn a_read_during_an_explode_never_sees_a_partial_attachment() {
        let (_dir, store, tenant) = store();
        let size = 4 << 20;
        let content = |n: usize| vec![n as u8 + 1; size];
        let mut bad = Vec::new();
        for _round in 0..10 {
            let items = request(tenant.0, 8, &["free@t.example"]);
            ingest_with(&store, &items, content);
            // As the previous version left it: a file for each grouped attachment.
            for (n, it) in items.iter().enumerate() {
                store
                    .inner
                    .files
                    .put(&super::super::blob_key(it.id, 0), &content(n))
                    .expect("put");
            }
            let done = std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|s| {
                let readers: Vec<_> = (1..3)
                    .map(|k| {
                        let (store, items, done) = (&store, &items, &done);
                        s.spawn(move || {
                            let mut bad = Vec::new();
                            while !done.load(Ordering::Relaxed) {
                                if let Some(c) = store.attachment(items[k].id, 0).expect("read") {
                                    if c.len() != size {
                                        bad.push(c.len());
                                    }
                                }
                            }
                            bad
                        })
                    })
                    .collect();
                std::thread::sleep(std::time::Duration::from_millis(20));
                store
                    .delete_items(tenant, &[items[0].id], true, None, None)
                    .expect("delete");
                std::thread::sleep(std::time::Duration::from_millis(5));
                done.store(true, Ordering::Relaxed);
                for r in readers {
                    bad.extend(r.join().expect("reader"));
                }
            });
        }
        assert!(bad.is_empty(), "partial attachments read: {bad:?}");
    }

    /// Damaged bytes in an attachment of a group do not keep its members from changing: an
    /// explode copies the attachments out unchecked, as their reads return them (from a
    /// review; a CRC check of the whole record made every partial removal fail for ever).
    #[test]
    fn a_damaged_attachment_does_not_block_a_partial_removal_for_ever() {
        let (dir, store, tenant) = store();
        let items = request(tenant.0, 2, &["free@t.example"]);
        let marker = b"ATTACHMENT-MARKER-0123456789".to_vec();
        ingest_with(&store, &items, |_| marker.clone());
        let wal = dir.path().join("wal");
        let mut damaged = false;
        for entry in std::fs::read_dir(&wal).expect("wal").flatten() {
            let mut bytes = std::fs::read(entry.path()).expect("read");
            if let Some(at) = bytes
                .windows(marker.len())
                .position(|w| w == marker.as_slice())
            {
                bytes[at] ^= 0xff;
                std::fs::write(entry.path(), &bytes).expect("write");
                damaged = true;
            }
        }
        assert!(damaged);
        assert!(store.item(items[0].id).expect("members readable").is_some());
        for attempt in 0..2 {
            store
                .delete_items(tenant, &[items[0].id], true, None, None)
                .unwrap_or_else(|e| panic!("attempt {attempt}: {e}"));
        }
        assert!(store.inner.groups.is_empty());
        let other = store
            .attachment(items[1].id, 0)
            .expect("read")
            .expect("written out");
        assert_eq!(other.len(), marker.len());
    }

    #[test]
    fn a_group_stays_whole_unless_one_of_its_members_changes() {
        let (_dir, store, tenant) = store();
        let held = request(tenant.0, 3, &["held@t.example"]);
        ingest(&store, &held);
        let free = request(tenant.0, 2, &["free@t.example"]);
        ingest(&store, &free);
        // A purge limited to a mailbox the group is not in changes nothing.
        let within: std::collections::HashSet<String> = ["free@t.example".to_string()].into();
        let outcome = store
            .delete_items(tenant, &ids(&held), true, Some(&within), None)
            .expect("delete");
        assert!(outcome.deleted.is_empty() && outcome.changed.is_empty());
        // Retention: the held group is kept whole, the other goes whole; nothing is written
        // out as entries of their own.
        let swept = sweep_everything(&store, tenant);
        assert_eq!(swept.record.items_removed, 2);
        assert_eq!(swept.record.copies_removed, 2);
        assert_eq!(swept.record.copies_kept_under_hold, 3);
        assert_eq!(swept.removed_item_ids, ids(&free));
        assert_eq!(store.inner.groups.len(), 1, "the held group, whole");
        assert!(store.inner.items.is_empty(), "nothing written out");
        assert_eq!(store.folder_count(tenant, "held@t.example", PURGES), 3);
        assert_eq!(store.folder_count(tenant, "free@t.example", PURGES), 0);
        assert!(store.item(free[0].id).expect("read").is_none());
        assert!(store.attachment(free[0].id, 0).expect("read").is_none());
    }

    /// A group whose log record is damaged cannot be read, but can be removed: a delete or a
    /// reset of it does not fail for ever.
    #[test]
    fn a_damaged_group_is_removed_without_being_read() {
        let (dir, store, tenant) = store();
        let items = request(tenant.0, 2, &["free@t.example"]);
        ingest(&store, &items);
        let group = store
            .group(&group_key(&items[0].id))
            .expect("read")
            .expect("stored");
        store.flush().expect("checkpoint");
        let path = dir
            .path()
            .join("wal")
            .join(format!("idx-{:020}.log", group.at.seq));
        let mut bytes = std::fs::read(&path).expect("segment");
        let members = group.members_offset() as usize;
        bytes[members + 40] ^= 0xff;
        std::fs::write(&path, bytes).expect("damaged");
        store.inner.segments.forget(&[group.at.seq]);
        assert!(store.item(items[0].id).is_err(), "unreadable");
        let outcome = store
            .delete_items(tenant, &ids(&items), true, None, None)
            .expect("removed all the same");
        assert_eq!(outcome.deleted, ids(&items));
        assert!(store.inner.groups.is_empty());
        assert_eq!(store.folder_count(tenant, "free@t.example", PURGES), 0);
        assert!(store.item(items[0].id).expect("read").is_none());
    }

    /// A journal read while groups go (each removal moves its record from the group's entry
    /// to an entry of its own) lists every record: the two places are read in an order that
    /// a move cannot slip between.
    #[test]
    fn the_journal_lists_every_record_while_groups_are_removed() {
        let (_dir, store, tenant) = store();
        let requests: Vec<Vec<ItemRecord>> = (0..400)
            .map(|_| request(tenant.0, 1, &["free@t.example"]))
            .collect();
        for items in &requests {
            ingest(&store, items);
        }
        let all = requests.len();
        let listed = || {
            store
                .ingestions_newest_first(tenant, 0, 1000)
                .expect("journal")
                .len()
        };
        assert_eq!(listed(), all);
        // Oldest first: each removal lands where a read that began before it arrives later.
        let missed = reads_while_removing(&store, tenant, &requests, |_| {
            let n = listed();
            (n != all).then_some(n)
        });
        assert!(missed.is_empty(), "pages that missed records: {missed:?}");
        assert_eq!(listed(), all);
    }

    /// Every page of a journal whose records alternate between the two places in runs longer
    /// than a window (refused requests have records of their own) is the same slice of it.
    #[test]
    fn journal_pages_are_slices_of_one_list_across_windows() {
        let (_dir, store, tenant) = store();
        let mut oldest_first = Vec::new();
        for (run, length) in [300, 5, 1, 270, 2, 3, 600, 1].into_iter().enumerate() {
            for _ in 0..length {
                oldest_first.push(stored_or_refused(&store, tenant, run % 2 == 0));
            }
        }
        let newest_first: Vec<_> = oldest_first.into_iter().rev().collect();
        let all = newest_first.len();
        for (skip, top) in [
            (0, 10),
            (0, all + 5),
            (250, 100),
            (290, 20),
            (560, 300),
            (1170, 30),
            (1182, 10),
        ] {
            assert_page(&store, tenant, &newest_first, skip, top);
        }
    }

    /// While groups go in random order, every page (any skip and top) is the same
    /// slice of one list (moves change where a record is, never which records there are).
    #[test]
    fn journal_pages_are_exact_slices_while_groups_are_removed() {
        use rand::seq::SliceRandom;
        let (_dir, store, tenant) = store();
        let mut oldest_first = Vec::new();
        let mut grouped = Vec::new();
        for n in 0..1500usize {
            let items = request(tenant.0, 1, &["free@t.example"]);
            // Runs of both places, of many lengths.
            if (n / 37) % 3 != 1 {
                ingest(&store, &items);
                oldest_first.push(record_of(&items[0]));
                grouped.push(items);
            } else {
                oldest_first.push(refuse(&store, tenant.0));
            }
        }
        let newest_first: Vec<_> = oldest_first.into_iter().rev().collect();
        let all = newest_first.len();
        grouped.shuffle(&mut rand::thread_rng());
        let pages = [
            (0, 10),
            (0, all),
            (5, 300),
            (250, 10),
            (255, 2),
            (700, 400),
            (1490, 20),
            (0, 257),
            (256, 1),
        ];
        let bad = reads_while_removing(&store, tenant, &grouped, |n| {
            let (skip, top) = pages[n % pages.len()];
            let page = store
                .ingestions_newest_first(tenant, skip, top)
                .expect("journal");
            let wanted: Vec<_> = newest_first.iter().skip(skip).take(top).cloned().collect();
            (page != wanted).then_some((skip, top, page.len()))
        });
        assert!(bad.is_empty(), "pages not the slice: {bad:?}");
    }

    /// A group entry that cannot be read fails every page that reaches it; it does not
    /// yield an Ok page of another slice (the group entries before it listed without the
    /// records of their own between them) nor a page cut short where the error was skipped.
    #[test]
    fn a_journal_read_error_fails_the_page_instead_of_listing_another() {
        let (_dir, store, tenant) = store();
        let mut b_groups = Vec::new();
        for _ in 0..100 {
            refuse(&store, tenant.0);
            let items = request(tenant.0, 1, &["free@t.example"]);
            ingest(&store, &items);
            b_groups.push(group_key(&items[0].correlation_id));
        }
        for _ in 0..256 {
            ingest(&store, &request(tenant.0, 1, &["free@t.example"]));
        }
        assert_eq!(
            store
                .ingestions_newest_first(tenant, 0, 1000)
                .expect("journal")
                .len(),
            456
        );
        // An entry whose key is unreadable, among the older groups (as if another read were
        // building the listing: the journal scans the groups).
        store.inner.record_groups.clear();
        let _build = store.inner.record_groups.start_building().expect("build");
        let near = b_groups[39];
        let value = store.inner.groups.get(near).expect("read").expect("group");
        let mut bad = near.to_vec();
        bad.push(0);
        store.inner.groups.insert(bad, value).expect("insert");
        let mut failures = Vec::new();
        for (skip, top) in [(0, 300), (400, 10)] {
            let page = store.ingestions_newest_first(tenant, skip, top);
            failures.push((skip, top, page.is_ok()));
        }
        assert!(failures.iter().all(|f| !f.2), "Ok pages: {failures:?}");
    }

    /// v4 records spread through the key range, across windows cut short by records
    /// of their own: each listed once, after the v7 ones, by `received`.
    #[test]
    fn v4_records_come_once_after_the_v7_ones_across_windows() {
        let (_dir, store, tenant) = store();
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let mut v7 = Vec::new();
        for n in 0..900usize {
            v7.push(stored_or_refused(&store, tenant, n % 3 == 2));
        }
        let mut v4 = Vec::new();
        for n in 0..80i64 {
            let mut record = record_of(&request(tenant.0, 1, &[])[0]);
            let mut id = *Uuid::new_v4().as_bytes();
            // Some share the v7 ids' first bytes (they sort among them).
            if n % 2 == 0 {
                id[..6]
                    .copy_from_slice(&v7[(n as usize * 11) % 900].correlation_id.as_bytes()[..6]);
            }
            id[6] = 0x40 | (id[6] & 0x0f);
            record.correlation_id = Uuid::from_bytes(id);
            record.received = Utc::now() - chrono::Duration::minutes((n * 37) % 80 + 1);
            runtime
                .block_on(store.record_ingestion(&record))
                .expect("journaled");
            v4.push(record);
        }
        v4.sort_by_key(|r| std::cmp::Reverse(r.received));
        let all: Vec<_> = v7.into_iter().rev().chain(v4).collect();
        for (skip, top) in [
            (0, all.len()),
            (0, 10),
            (255, 10),
            (250, 300),
            (890, 50),
            (all.len() - 5, 10),
            (300, 700),
            (0, 1),
        ] {
            assert_page(&store, tenant, &all, skip, top);
        }
    }
}
