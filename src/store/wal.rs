//! The write-ahead log of the committer: what makes an acknowledged request durable without a
//! sled flush (an fsync, ~4 ms on this kind of disk) per request.
//!
//! Each committed write (one ingestion, one connector import) is applied to sled in memory and
//! appended, as the exact keys and values it wrote, to the current log segment with one
//! `write(2)` per group of requests before they are answered. The kernel has the bytes then:
//! the request survives `kill -9` of the server. With `--fsync` the segment is also
//! `fdatasync`ed per group (survives power loss too). A checkpoint (every second, when a
//! segment grows large, and whenever another writer asks for durability) starts a new segment,
//! flushes sled, and deletes the older segments. At start-up the segments left are replayed into
//! sled in order (replaying a record is idempotent: it rewrites the same keys with the same
//! values) before anything is served.
//!
//! Record framing: `len (u32 LE) || crc32 (u32 LE) || payload`; a torn or corrupt tail ends
//! the replay of its segment. Payload: a sequence of operations, each `tree name len (u8) ||
//! tree name || key len (u32 LE) || key || tag (u8) || [value len (u32 LE) || value]`. Tags: 0
//! remove, 1 insert, and for a request's items stored as a group (see `store::groups`) 2, the
//! group's header (replayed as an insert of a [`GroupRef`] that points at its own record), and
//! 3, a member item (not replayed: the segment itself holds it, and is kept while a group
//! points into it).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::blobs::BlobFiles;
use super::{Result, StoreError, BLOBS};

/// A segment larger than this is checkpointed at once.
pub const CHECKPOINT_BYTES: u64 = 32 * 1024 * 1024;

/// Encodes the operations of one record.
#[derive(Default)]
pub struct Payload {
    bytes: Vec<u8>,
}

impl Payload {
    /// An empty payload with room for `bytes` of operations (growing a large one copies it).
    pub fn with_capacity(bytes: usize) -> Payload {
        Payload {
            bytes: Vec::with_capacity(bytes),
        }
    }

    pub fn insert(&mut self, tree: &str, key: &[u8], value: &[u8]) {
        self.op(tree, key);
        self.bytes.push(1);
        self.bytes
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(value);
    }

    pub fn remove(&mut self, tree: &str, key: &[u8]) {
        self.op(tree, key);
        self.bytes.push(0);
    }

    /// The header of a group of items stored in this record (`value`: what [`GroupRef`] keeps
    /// of it): replayed as an insert of `key` -> a [`GroupRef`] to this record. It is the
    /// record's first operation, followed directly by the members (built in a payload of
    /// their own and [`Payload::append`]ed, so the header can hold their length and CRC, and
    /// a reader reads them alone: [`read_group_members`]).
    pub fn group_header(&mut self, tree: &str, key: &[u8], value: &[u8]) {
        self.tagged(tree, key, GROUP_HEADER, value);
    }

    /// A member of this record's group: read through the group's [`GroupRef`], never replayed.
    pub fn group_member(&mut self, tree: &str, key: &[u8], value: &[u8]) {
        self.tagged(tree, key, GROUP_MEMBER, value);
    }

    /// Bytes of the operations so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// CRC-32 of the operations so far.
    pub fn crc(&self) -> u32 {
        crc32fast::hash(&self.bytes)
    }

    /// Appends the operations of `other`.
    pub fn append(&mut self, other: &Payload) {
        self.bytes.extend_from_slice(&other.bytes);
    }

    fn tagged(&mut self, tree: &str, key: &[u8], tag: u8, value: &[u8]) {
        self.op(tree, key);
        self.bytes.push(tag);
        self.bytes
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(value);
    }

    fn op(&mut self, tree: &str, key: &[u8]) {
        debug_assert!(tree.len() < 256);
        self.bytes.push(tree.len() as u8);
        self.bytes.extend_from_slice(tree.as_bytes());
        self.bytes
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(key);
    }

    /// The keys this payload leaves removed from `tree` (removed, and not written again by
    /// a later operation of the payload).
    pub fn removed(&self, tree: &str) -> Vec<Vec<u8>> {
        let mut last: Vec<(&[u8], bool)> = Vec::new();
        for op in decode_ops(&self.bytes).unwrap_or_default() {
            if op.tree != tree {
                continue;
            }
            match last.iter_mut().find(|(key, _)| *key == op.key) {
                Some(entry) => entry.1 = op.value.is_none(),
                None => last.push((op.key, op.value.is_none())),
            }
        }
        last.into_iter()
            .filter(|(_, removed)| *removed)
            .map(|(key, _)| key.to_vec())
            .collect()
    }

    /// Appends this payload, framed, to `out`.
    pub fn frame_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&self.bytes).to_le_bytes());
        out.extend_from_slice(&self.bytes);
    }
}

const REMOVE: u8 = 0;
const INSERT: u8 = 1;
const GROUP_HEADER: u8 = 2;
const GROUP_MEMBER: u8 = 3;

/// One decoded operation.
struct Op<'a> {
    tree: &'a str,
    key: &'a [u8],
    /// `None` for a removal.
    value: Option<&'a [u8]>,
    tag: u8,
}

/// Where a group of items is in the log: the record (segment `seq`, its frame at `offset`)
/// and what its header said. Encoded as the value of the group's key.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRef {
    pub seq: u64,
    pub offset: u64,
    /// The header's value (see [`Payload::group_header`]).
    pub header: Vec<u8>,
}

/// Bytes of a [`GroupRef`]'s encoding before the header's value.
pub const GROUP_REF_LEN: usize = 16;

impl GroupRef {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(GROUP_REF_LEN + self.header.len());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.header);
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<GroupRef> {
        Some(GroupRef {
            seq: u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?),
            offset: u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?),
            header: bytes.get(GROUP_REF_LEN..)?.to_vec(),
        })
    }
}

/// Where one framed record is: segment, offset of its frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordAt {
    pub seq: u64,
    pub offset: u64,
}

/// Bytes of one encoded operation on `tree` with a key of `key_len` bytes and a value of
/// `value_len` (`None`: a removal).
pub fn op_len(tree: &str, key_len: usize, value_len: Option<usize>) -> usize {
    1 + tree.len() + 4 + key_len + 1 + value_len.map_or(0, |n| 4 + n)
}

/// Where a record's payload starts, from where its frame starts.
pub const FRAME_HEADER: u64 = 8;

/// Reads the group members a record holds from `file` (its segment): the `len` bytes of
/// member operations at `offset`, checked against `crc` (see [`Payload::group_member`]), so
/// that a member is read without the rest of its record (attachments, other writes). Returns
/// the key and value of each, in order.
pub fn read_group_members(
    file: &File,
    offset: u64,
    len: u32,
    crc: u32,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let unreadable = || {
        StoreError::Log(format!(
            "the log record of a stored item group (offset {offset}) is unreadable"
        ))
    };
    let mut members = vec![0u8; len as usize];
    read_at(file, &mut members, offset).map_err(|_| unreadable())?;
    if crc32fast::hash(&members) != crc {
        return Err(unreadable());
    }
    let ops = decode_ops(&members).ok_or_else(unreadable)?;
    ops.into_iter()
        .map(|op| match (op.tag, op.value) {
            (GROUP_MEMBER, Some(value)) => Ok((op.key.to_vec(), value.to_vec())),
            _ => Err(unreadable()),
        })
        .collect()
}

/// Where the values of the operations inserting into `tree` are, among the operations from
/// `from` on of the record framed at `frame` of `file` (its segment), up to the first operation
/// of another kind: `(key, offset of the value, its length)`. Read as a walk over the
/// operations' heads, the values skipped, so one attachment of a stored item group is read
/// without the others (a group of 100 items with 64 KB each would otherwise read 6.4 MB for
/// each). The values are not CRC-checked, as attachment files are not (a record is in the
/// log whole before a group points into it): damaged bytes in one attachment spoil that one
/// only, and never keep a group from being written out.
pub fn inserts_from(
    file: &File,
    frame: u64,
    from: u64,
    tree: &str,
) -> Result<Vec<(Vec<u8>, u64, u32)>> {
    let unreadable = || {
        StoreError::Log(format!(
            "the log record of a stored item group (offset {frame}) is unreadable"
        ))
    };
    let read = |len: usize, at: u64| -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        read_at(file, &mut buf, at).map_err(|_| unreadable())?;
        Ok(buf)
    };
    let head = read(FRAME_HEADER as usize, frame)?;
    let end =
        frame + FRAME_HEADER + u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
    let mut found = Vec::new();
    let mut at = from;
    // An operation: tree name length (1), name, key length (4), key, tag (1), value length
    // (4), value.
    let name_head = 1 + tree.len() + 4;
    while at + name_head as u64 <= end {
        let op = read(name_head, at)?;
        if usize::from(op[0]) != tree.len() || &op[1..1 + tree.len()] != tree.as_bytes() {
            break;
        }
        let key_len =
            u32::from_le_bytes(op[1 + tree.len()..].try_into().map_err(|_| unreadable())?);
        let key_at = at + name_head as u64;
        let value_at = key_at + u64::from(key_len) + 5;
        if value_at > end {
            return Err(unreadable());
        }
        let rest = read(key_len as usize + 5, key_at)?;
        let (key, tail) = rest.split_at(key_len as usize);
        if tail[0] != INSERT {
            break;
        }
        let value_len = u32::from_le_bytes(tail[1..5].try_into().map_err(|_| unreadable())?);
        if value_at + u64::from(value_len) > end {
            return Err(unreadable());
        }
        found.push((key.to_vec(), value_at, value_len));
        at = value_at + u64::from(value_len);
    }
    Ok(found)
}

/// The value at `at` of `len` bytes in `file` (see [`inserts_from`]).
pub fn read_value(file: &File, at: u64, len: u32) -> Result<Vec<u8>> {
    let mut value = vec![0u8; len as usize];
    read_at(file, &mut value, at).map_err(|_| {
        StoreError::Log(format!(
            "the log record of a stored item group (value at {at}) is unreadable"
        ))
    })?;
    Ok(value)
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// Opens segment `seq` of `dir` for reading, live or retired.
pub fn open_segment(dir: &Path, seq: u64) -> Result<File> {
    // Live first: one retired meanwhile (renamed) is then found retired.
    match File::open(segment_path(dir, seq)) {
        Ok(file) => Ok(file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            File::open(named(dir, RETIRED, seq)).map_err(io)
        }
        Err(e) => Err(io(e)),
    }
}

fn decode_ops(mut bytes: &[u8]) -> Option<Vec<Op<'_>>> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if bytes.len() < n {
            return None;
        }
        let (head, tail) = bytes.split_at(n);
        *bytes = tail;
        Some(head)
    }
    fn len(bytes: &mut &[u8]) -> Option<usize> {
        let raw = take(bytes, 4)?;
        Some(u32::from_le_bytes(raw.try_into().ok()?) as usize)
    }
    let mut ops = Vec::new();
    while !bytes.is_empty() {
        let name_len = *take(&mut bytes, 1)?.first()? as usize;
        let tree = std::str::from_utf8(take(&mut bytes, name_len)?).ok()?;
        let key_len = len(&mut bytes)?;
        let key = take(&mut bytes, key_len)?;
        let tag = *take(&mut bytes, 1)?.first()?;
        let value = match tag {
            INSERT | GROUP_HEADER | GROUP_MEMBER => {
                let value_len = len(&mut bytes)?;
                Some(take(&mut bytes, value_len)?)
            }
            REMOVE => None,
            _ => return None,
        };
        ops.push(Op {
            tree,
            key,
            value,
            tag,
        });
    }
    Some(ops)
}

/// Name prefix of a segment to replay (written since the last checkpoint).
const LIVE: &str = "wal-";
/// Name prefix of a segment sled already has (checkpointed), kept only for the search index:
/// its records name the items written since the index's last commit. Never replayed.
const RETIRED: &str = "idx-";

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    named(dir, LIVE, seq)
}

fn named(dir: &Path, prefix: &str, seq: u64) -> PathBuf {
    dir.join(format!("{prefix}{seq:020}.log"))
}

/// The live segments in `dir`, oldest first.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    listed(dir, LIVE)
}

/// The segments in `dir` whose name starts with `prefix`, oldest first.
fn listed(dir: &Path, prefix: &str) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(seq) = seq {
            out.push((seq, path));
        }
    }
    out.sort();
    Ok(out)
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Sled(sled::Error::Io(e))
}

/// Syncs a directory: the names created, renamed or removed in it survive a power loss.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

/// Removes a file; one already gone (removed by a concurrent prune) is not an error.
fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
        _ => Ok(()),
    }
}

/// What [`records`] calls with each record: its frame's offset, its operations.
type EachRecord<'f> = dyn FnMut(u64, &[Op<'_>]) -> Result<()> + 'f;

/// Calls `each` with the operations of every whole record of the segment at `path`, in order,
/// and where the record is in it (the offset of its frame); a torn or corrupt tail ends the
/// segment.
fn records(path: &Path, each: &mut EachRecord<'_>) -> Result<usize> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io)?;
    let mut rest = bytes.as_slice();
    let mut count = 0;
    let mut offset = 0u64;
    while rest.len() >= 8 {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let Some(payload) = rest.get(8..8 + len) else {
            break; // torn tail
        };
        if crc32fast::hash(payload) != crc {
            tracing::warn!(segment = %path.display(), "corrupt write-ahead log record: the rest of this segment is ignored");
            break;
        }
        let Some(ops) = decode_ops(payload) else {
            tracing::warn!(segment = %path.display(), "unreadable write-ahead log record: the rest of this segment is ignored");
            break;
        };
        each(offset, &ops)?;
        count += 1;
        rest = &rest[8 + len..];
        offset += (8 + len) as u64;
    }
    Ok(count)
}

/// Replays the live segments left in `dir` into `db` (oldest first), makes sled durable, and
/// retires them (or removes them when neither `keep_from` says the index needs them nor a
/// group replayed from them points into them). Returns the number of records replayed, the
/// next segment number and the segments a replayed group points into.
pub fn replay(
    dir: &Path,
    db: &sled::Db,
    files: &BlobFiles,
    keep_from: u64,
) -> Result<(usize, u64, Vec<u64>)> {
    std::fs::create_dir_all(dir).map_err(io)?;
    let found = segments(dir)?;
    let mut replayed = 0;
    let mut trees = std::collections::HashMap::new();
    let mut with_groups = Vec::new();
    for (seq, path) in &found {
        let mut grouped = false;
        replayed += records(path, &mut |offset, ops| {
            let at = RecordAt { seq: *seq, offset };
            grouped |= apply(db, files, &mut trees, at, ops)?;
            Ok(())
        })?;
        if grouped {
            with_groups.push(*seq);
        }
    }
    db.flush()?;
    // The attachment files rewritten must outlive the segments that could rewrite them again.
    files.sync()?;
    let last_live = found.last().map(|(seq, _)| *seq);
    if let Some(last) = last_live {
        // Every replayed segment is retired, not removed: sled may have got (and written
        // out) a group pointing into one of its records before the crash, after a record the
        // replay stopped at (torn, corrupt). Retired segments from before this start stay
        // until the store has looked for the groups that point into them
        // (`Store::collect_segments`).
        retire_up_to(dir, last, keep_from, &|_| true)?;
    }
    let last_retired = listed(dir, RETIRED)?.last().map(|(seq, _)| *seq);
    let next = last_live.max(last_retired).map_or(0, |seq| seq + 1);
    Ok((replayed, next, with_groups))
}

/// After a checkpoint covering the live segments up to `seq`: each is removed, or retired
/// (renamed, never replayed again) when the search index may still need it (`>= keep_from`)
/// or `held` says a stored group points into it.
/// Returns the numbers of those removed.
pub fn retire_up_to(
    dir: &Path,
    seq: u64,
    keep_from: u64,
    held: &dyn Fn(u64) -> bool,
) -> Result<Vec<u64>> {
    let mut removed = Vec::new();
    for (n, path) in segments(dir)? {
        if n > seq {
            continue;
        }
        if n >= keep_from || held(n) {
            std::fs::rename(&path, named(dir, RETIRED, n)).map_err(io)?;
        } else {
            remove(&path)?;
            removed.push(n);
        }
    }
    Ok(removed)
}

/// Syncs the live segments up to `seq` that `held` names: their bytes are what groups in
/// sled point at, so they must be on disk before sled is.
pub fn sync_held(dir: &Path, seq: u64, held: &dyn Fn(u64) -> bool) -> Result<()> {
    for (n, path) in segments(dir)? {
        if n <= seq && held(n) {
            File::open(&path).and_then(|f| f.sync_data()).map_err(io)?;
        }
    }
    Ok(())
}

/// Removes the retired segments older than `keep_from` that are not `held`; returns their
/// numbers.
pub fn prune_retired(dir: &Path, keep_from: u64, held: &dyn Fn(u64) -> bool) -> Result<Vec<u64>> {
    let mut removed = Vec::new();
    for (n, path) in listed(dir, RETIRED)? {
        if n < keep_from && !held(n) {
            remove(&path)?;
            removed.push(n);
        }
    }
    Ok(removed)
}

/// The keys written or removed in `tree` by the records of the segments (retired or live)
/// numbered `from..before`, oldest first, repeated as often as they were written.
pub fn logged_keys(dir: &Path, tree: &str, from: u64, before: u64) -> Result<Vec<Vec<u8>>> {
    // Live segments listed first: one retired meanwhile (renamed) is then listed as retired.
    let mut all: Vec<(u64, PathBuf)> = segments(dir)?;
    all.extend(listed(dir, RETIRED)?);
    all.retain(|(n, _)| (from..before).contains(n));
    all.sort();
    all.dedup_by_key(|(n, _)| *n);
    let mut keys = Vec::new();
    for (_, path) in &all {
        records(path, &mut |_, ops| {
            keys.extend(
                ops.iter()
                    .filter(|op| op.tree == tree)
                    .map(|op| op.key.to_vec()),
            );
            Ok(())
        })?;
    }
    Ok(keys)
}

/// Applies one record's operations with plain writes (at start-up only: nothing else runs, and
/// the segments are retired only after sled is flushed, so a crash during the replay replays
/// again). A group header becomes its [`GroupRef`] (to the record at `at`); its members stay
/// in the segment. Returns whether the record had a group.
fn apply(
    db: &sled::Db,
    files: &BlobFiles,
    trees: &mut std::collections::HashMap<String, sled::Tree>,
    at: RecordAt,
    ops: &[Op<'_>],
) -> Result<bool> {
    let mut grouped = false;
    for op in ops {
        if op.tag == GROUP_MEMBER {
            continue;
        }
        let tree = match trees.get(op.tree) {
            Some(tree) => tree,
            None => {
                let tree = db.open_tree(op.tree)?;
                trees.entry(op.tree.to_string()).or_insert(tree)
            }
        };
        if op.tree == BLOBS {
            // Attachments are files (those of a group are read from its record while it
            // stands, but a replay writes them too: an earlier version's explode, which
            // logged none, may follow in the log); stores older than them may have one in sled.
            match op.value {
                Some(content) => files.put(op.key, content)?,
                None => {
                    files.remove(op.key)?;
                    tree.remove(op.key)?;
                }
            }
            continue;
        }
        match (op.tag, op.value) {
            (GROUP_HEADER, Some(header)) => {
                grouped = true;
                let group = GroupRef {
                    seq: at.seq,
                    offset: at.offset,
                    header: header.to_vec(),
                };
                tree.insert(op.key, group.encode())?
            }
            (_, Some(value)) => tree.insert(op.key, value)?,
            (_, None) => tree.remove(op.key)?,
        };
    }
    Ok(grouped)
}

/// The segment being written.
pub struct Segment {
    dir: PathBuf,
    seq: u64,
    file: File,
    written: u64,
    fsync: bool,
    created: std::time::Instant,
    /// A failed write may have left part of a record that could not be cut off.
    torn: bool,
}

impl Segment {
    /// Creates segment `seq`. With `fsync`, the directory is synced too, so the new file's
    /// name survives a power loss with the records synced into it.
    pub fn create(dir: &Path, seq: u64, fsync: bool) -> Result<Segment> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(dir, seq))
            .map_err(io)?;
        if fsync {
            sync_dir(dir)?;
        }
        Ok(Segment {
            dir: dir.to_path_buf(),
            seq,
            file,
            written: 0,
            fsync,
            created: std::time::Instant::now(),
            torn: false,
        })
    }

    /// Appends framed records with one write, and syncs them with `--fsync`; answers where
    /// they start (segment and offset). A failed write leaves no torn bytes for later records
    /// to land behind (a replay stops at a torn record): the file is cut back to its length
    /// before the write or, failing that, the next records go to a new segment; until one of
    /// them works, appends fail.
    pub fn append(&mut self, framed: &[u8]) -> Result<(u64, u64)> {
        if framed.is_empty() {
            return Ok((self.seq, self.written));
        }
        if self.torn {
            let next = Segment::create(&self.dir, self.seq + 1, self.fsync)?;
            *self = next;
        }
        let start = self.written;
        let written = self.file.write_all(framed).and_then(|()| {
            if self.fsync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        match written {
            Ok(()) => {
                self.written += framed.len() as u64;
                Ok((self.seq, start))
            }
            Err(e) => {
                if self.file.set_len(self.written).is_err() {
                    self.torn = true;
                }
                Err(io(e))
            }
        }
    }

    /// Makes the next writes fail as on a full disk (they go to `/dev/full`, which cannot be
    /// cut back either): for tests of what a failed append answers.
    #[cfg(test)]
    pub fn fail_writes(&mut self) {
        self.file = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
    }

    /// Whether this log syncs to the disk (`--fsync`).
    pub fn fsync(&self) -> bool {
        self.fsync
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Time since this segment was started.
    pub fn age(&self) -> std::time::Duration {
        self.created.elapsed()
    }

    /// Starts the next segment; answers the number of the one just closed.
    pub fn rotate(&mut self) -> Result<u64> {
        let next = Segment::create(&self.dir, self.seq + 1, self.fsync)?;
        let closed = self.seq;
        *self = next;
        Ok(closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory with an empty `wal/` in it.
    fn wal_dir() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("dir");
        let wal = dir.path().join("wal");
        std::fs::create_dir_all(&wal).expect("wal dir");
        (dir, wal)
    }

    /// The database and attachment files of a store in `dir`, for a replay.
    fn store_in(dir: &Path) -> (sled::Db, BlobFiles) {
        let db = sled::Config::new().path(dir.join("db")).open().expect("db");
        (db, BlobFiles::open(dir, false).expect("files"))
    }

    #[test]
    fn attachment_writes_replay_into_files_and_legacy_sled_copies_are_removed() {
        let (dir, wal) = wal_dir();
        let (db, files) = store_in(dir.path());
        let kept = [[1u8; 16].as_slice(), &0u32.to_be_bytes()].concat();
        let gone = [[2u8; 16].as_slice(), &0u32.to_be_bytes()].concat();
        let legacy = [[3u8; 16].as_slice(), &0u32.to_be_bytes()].concat();
        files.put(&gone, b"old").expect("put");
        db.open_tree(BLOBS)
            .expect("tree")
            .insert(&legacy, b"in sled")
            .expect("legacy");
        let mut segment = Segment::create(&wal, 0, false).expect("segment");
        let mut framed = Vec::new();
        let mut payload = Payload::default();
        payload.insert(BLOBS, &kept, b"content");
        payload.remove(BLOBS, &gone);
        payload.remove(BLOBS, &legacy);
        assert_eq!(payload.removed(BLOBS), [gone.clone(), legacy.clone()]);
        let mut rewritten = Payload::default();
        rewritten.remove(BLOBS, &kept);
        rewritten.insert(BLOBS, &kept, b"again");
        rewritten.remove(BLOBS, &gone);
        assert_eq!(
            rewritten.removed(BLOBS),
            std::slice::from_ref(&gone),
            "a re-written key stays"
        );
        payload.frame_into(&mut framed);
        segment.append(&framed).expect("append");
        drop(segment);

        replay(&wal, &db, &files, u64::MAX).expect("replay");
        assert_eq!(
            files.get(&kept).expect("read").as_deref(),
            Some(&b"content"[..])
        );
        assert_eq!(files.get(&gone).expect("read"), None);
        let tree = db.open_tree(BLOBS).expect("tree");
        assert!(tree.is_empty(), "attachments are never written to sled");
    }

    #[test]
    fn records_replay_in_order_and_a_torn_tail_is_ignored() {
        let (dir, wal) = wal_dir();
        let mut segment = Segment::create(&wal, 3, false).expect("segment");
        let mut framed = Vec::new();
        let mut first = Payload::default();
        first.insert("a", b"k1", b"v1");
        first.insert("b", b"k2", b"v2");
        first.frame_into(&mut framed);
        let mut second = Payload::default();
        second.remove("a", b"k1");
        second.insert("a", b"k3", b"");
        second.frame_into(&mut framed);
        let mut torn = Payload::default();
        torn.insert("a", b"k4", b"v4");
        let mut torn_bytes = Vec::new();
        torn.frame_into(&mut torn_bytes);
        framed.extend_from_slice(&torn_bytes[..torn_bytes.len() - 1]);
        segment.append(&framed).expect("append");
        drop(segment);

        let (db, files) = store_in(dir.path());
        let (replayed, next, _) = replay(&wal, &db, &files, u64::MAX).expect("replay");
        assert_eq!((replayed, next), (2, 4));
        let a = db.open_tree("a").expect("a");
        assert!(a.get(b"k1").expect("get").is_none());
        assert_eq!(a.get(b"k3").expect("get").as_deref(), Some(&b""[..]));
        assert!(a.get(b"k4").expect("get").is_none());
        let b = db.open_tree("b").expect("b");
        assert_eq!(b.get(b"k2").expect("get").as_deref(), Some(&b"v2"[..]));
        assert!(segments(&wal).expect("list").is_empty());
    }

    /// A write that fails in a file that cannot be cut back (here `/dev/full`: ENOSPC, and no
    /// truncation) sends the next records to a new segment, never behind torn bytes.
    #[test]
    #[cfg(target_os = "linux")]
    fn after_a_failed_write_records_go_to_a_new_segment() {
        let dir = tempfile::tempdir().expect("dir");
        let mut segment = Segment::create(dir.path(), 7, false).expect("segment");
        segment.file = OpenOptions::new()
            .append(true)
            .open("/dev/full")
            .expect("/dev/full");
        let mut payload = Payload::default();
        payload.insert("items", b"k", b"v");
        let mut framed = Vec::new();
        payload.frame_into(&mut framed);
        assert!(segment.append(&framed).is_err());
        segment.append(&framed).expect("the next append works");
        assert_eq!(segment.seq(), 8);
        let mut replayed = 0;
        records(&segment_path(dir.path(), 8), &mut |_, ops| {
            assert_eq!(ops[0].key, b"k");
            replayed += 1;
            Ok(())
        })
        .expect("read");
        assert_eq!(replayed, 1);
    }

    fn write_segment(dir: &Path, seq: u64, key: &[u8]) {
        let mut segment = Segment::create(dir, seq, false).expect("segment");
        let mut payload = Payload::default();
        payload.insert("items", key, b"v");
        payload.insert("other", b"not-an-item", b"v");
        let mut framed = Vec::new();
        payload.frame_into(&mut framed);
        segment.append(&framed).expect("append");
    }

    #[test]
    fn checkpointed_segments_are_kept_for_the_index_and_never_replayed() {
        let (dir, wal) = wal_dir();
        for seq in 0..4 {
            write_segment(&wal, seq, &[seq as u8]);
        }
        // A checkpoint covering 0..=2 while the index needs segments from 1 on.
        retire_up_to(&wal, 2, 1, &|_| false).expect("retire");
        let live: Vec<u64> = segments(&wal).expect("live").iter().map(|s| s.0).collect();
        let retired: Vec<u64> = listed(&wal, RETIRED)
            .expect("retired")
            .iter()
            .map(|s| s.0)
            .collect();
        assert_eq!((live, retired), (vec![3], vec![1, 2]));
        // The index reads what segments 1..4 wrote to `items`, retired or live.
        assert_eq!(
            logged_keys(&wal, "items", 1, 4).expect("keys"),
            vec![vec![1u8], vec![2u8], vec![3u8]]
        );
        assert_eq!(
            logged_keys(&wal, "items", 2, 3).expect("keys"),
            vec![vec![2u8]]
        );
        // A restart replays the live segment only, and numbers on after every segment kept.
        let (db, files) = store_in(dir.path());
        let (replayed, next, _) = replay(&wal, &db, &files, 1).expect("replay");
        assert_eq!((replayed, next), (1, 4));
        // The index committed everything before 3: the older retired segments go.
        prune_retired(&wal, 3, &|_| false).expect("prune");
        let retired: Vec<u64> = listed(&wal, RETIRED)
            .expect("retired")
            .iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(retired, vec![3]);
    }

    /// A group's header replays as a [`GroupRef`] to its own record, whose members read back
    /// from the segment; the members themselves are not replayed into their tree, and a
    /// segment a replayed group points into is retired (kept), not removed.
    #[test]
    fn a_group_replays_as_a_reference_to_its_record() {
        let (dir, wal) = wal_dir();
        let mut segment = Segment::create(&wal, 5, false).expect("segment");
        let mut framed = Vec::new();
        let mut before = Payload::default();
        before.insert("other", b"k", b"v");
        before.frame_into(&mut framed);
        let start = framed.len() as u64;
        let mut members = Payload::default();
        members.group_member("items", b"m0", b"first");
        members.group_member("items", b"m1", b"second");
        let mut grouped = Payload::default();
        grouped.group_header("groups", b"g", b"header");
        grouped.append(&members);
        grouped.insert("copies", b"c", b"\x00\x00\x01\x00");
        grouped.frame_into(&mut framed);
        assert_eq!(segment.append(&framed).expect("append"), (5, 0));
        drop(segment);

        let (db, files) = store_in(dir.path());
        let (replayed, next, with_groups) = replay(&wal, &db, &files, u64::MAX).expect("replay");
        assert_eq!((replayed, next, with_groups), (2, 6, vec![5]));
        let value = db
            .open_tree("groups")
            .unwrap()
            .get(b"g")
            .unwrap()
            .expect("the group");
        let group = GroupRef::decode(&value).expect("a reference");
        assert_eq!(
            group,
            GroupRef {
                seq: 5,
                offset: start,
                header: b"header".to_vec(),
            }
        );
        assert!(
            db.open_tree("items").unwrap().is_empty(),
            "members stay in the log"
        );
        assert_eq!(db.open_tree("copies").unwrap().len(), 1);
        assert!(
            listed(&wal, RETIRED).unwrap().iter().any(|(n, _)| *n == 5),
            "kept"
        );
        let file = open_segment(&wal, 5).expect("open retired");
        let at = start + FRAME_HEADER + op_len("groups", 1, Some(6)) as u64;
        let (len, crc) = (members.len() as u32, members.crc());
        assert_eq!(
            read_group_members(&file, at, len, crc).expect("members"),
            vec![
                (b"m0".to_vec(), b"first".to_vec()),
                (b"m1".to_vec(), b"second".to_vec())
            ]
        );
        assert!(
            read_group_members(&file, at + 1, len, crc).is_err(),
            "a bad reference is an error"
        );
        assert!(
            read_group_members(&file, at, len, crc ^ 1).is_err(),
            "a damaged record is an error"
        );
    }
}
