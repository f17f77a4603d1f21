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
//! tree name || key len (u32 LE) || key || tag (u8: 1 insert, 0 remove) || [value len (u32 LE)
//! || value]`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::Transactional;

use super::{Result, StoreError};

/// A segment larger than this is checkpointed at once.
pub const CHECKPOINT_BYTES: u64 = 32 * 1024 * 1024;

/// Encodes the operations of one record.
#[derive(Default)]
pub struct Payload {
    bytes: Vec<u8>,
}

impl Payload {
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

    fn op(&mut self, tree: &str, key: &[u8]) {
        debug_assert!(tree.len() < 256);
        self.bytes.push(tree.len() as u8);
        self.bytes.extend_from_slice(tree.as_bytes());
        self.bytes
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(key);
    }

    /// Appends this payload, framed, to `out`.
    pub fn frame_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&self.bytes).to_le_bytes());
        out.extend_from_slice(&self.bytes);
    }
}

/// One decoded operation.
struct Op<'a> {
    tree: &'a str,
    key: &'a [u8],
    value: Option<&'a [u8]>,
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
        let value = match take(&mut bytes, 1)?.first()? {
            1 => {
                let value_len = len(&mut bytes)?;
                Some(take(&mut bytes, value_len)?)
            }
            0 => None,
            _ => return None,
        };
        ops.push(Op { tree, key, value });
    }
    Some(ops)
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("wal-{seq:020}.log"))
}

/// The segments in `dir`, oldest first.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("wal-"))
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

/// Replays the segments left in `dir` into `db` (oldest first), makes sled durable, and removes
/// them. Returns the number of records replayed and the next segment number.
pub fn replay(dir: &Path, db: &sled::Db) -> Result<(usize, u64)> {
    std::fs::create_dir_all(dir).map_err(io)?;
    let found = segments(dir)?;
    let mut replayed = 0;
    for (_, path) in &found {
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io)?;
        let mut rest = bytes.as_slice();
        while rest.len() >= 8 {
            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
            let Some(payload) = rest.get(8..8 + len) else {
                break; // torn tail
            };
            if crc32fast::hash(payload) != crc {
                tracing::warn!(segment = %path.display(), "corrupt write-ahead log record: replay of this segment stops here");
                break;
            }
            let Some(ops) = decode_ops(payload) else {
                tracing::warn!(segment = %path.display(), "unreadable write-ahead log record: replay of this segment stops here");
                break;
            };
            apply(db, &ops)?;
            replayed += 1;
            rest = &rest[8 + len..];
        }
    }
    db.flush()?;
    for (_, path) in &found {
        std::fs::remove_file(path).map_err(io)?;
    }
    let next = found.last().map_or(0, |(seq, _)| seq + 1);
    Ok((replayed, next))
}

/// Applies one record's operations in one transaction.
fn apply(db: &sled::Db, ops: &[Op<'_>]) -> Result<()> {
    let mut names: Vec<&str> = ops.iter().map(|op| op.tree).collect();
    names.sort_unstable();
    names.dedup();
    let trees: Vec<sled::Tree> = names
        .iter()
        .map(|name| db.open_tree(name))
        .collect::<std::result::Result<_, _>>()?;
    let refs: Vec<&sled::Tree> = trees.iter().collect();
    refs.as_slice()
        .transaction(|views: &Vec<TransactionalTree>| {
            for op in ops {
                let Ok(index) = names.binary_search(&op.tree) else {
                    continue;
                };
                match op.value {
                    Some(value) => views[index].insert(op.key, value)?,
                    None => views[index].remove(op.key)?,
                };
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })
        .map_err(StoreError::from)
}

/// The segment being written.
pub struct Segment {
    dir: PathBuf,
    seq: u64,
    file: File,
    written: u64,
    fsync: bool,
    created: std::time::Instant,
}

impl Segment {
    pub fn create(dir: &Path, seq: u64, fsync: bool) -> Result<Segment> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(dir, seq))
            .map_err(io)?;
        Ok(Segment {
            dir: dir.to_path_buf(),
            seq,
            file,
            written: 0,
            fsync,
            created: std::time::Instant::now(),
        })
    }

    /// Appends framed records with one write, and syncs them with `--fsync`.
    pub fn append(&mut self, framed: &[u8]) -> Result<()> {
        if framed.is_empty() {
            return Ok(());
        }
        self.file.write_all(framed).map_err(io)?;
        if self.fsync {
            self.file.sync_data().map_err(io)?;
        }
        self.written += framed.len() as u64;
        Ok(())
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

    /// Removes the segments up to `seq` (their writes are in a flushed sled).
    pub fn remove_up_to(dir: &Path, seq: u64) -> Result<()> {
        for (n, path) in segments(dir)? {
            if n <= seq {
                std::fs::remove_file(path).map_err(io)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_replay_in_order_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().expect("dir");
        let wal = dir.path().join("wal");
        std::fs::create_dir_all(&wal).expect("wal dir");
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

        let db = sled::Config::new()
            .path(dir.path().join("db"))
            .open()
            .expect("db");
        let (replayed, next) = replay(&wal, &db).expect("replay");
        assert_eq!((replayed, next), (2, 4));
        let a = db.open_tree("a").expect("a");
        assert!(a.get(b"k1").expect("get").is_none());
        assert_eq!(a.get(b"k3").expect("get").as_deref(), Some(&b""[..]));
        assert!(a.get(b"k4").expect("get").is_none());
        let b = db.open_tree("b").expect("b");
        assert_eq!(b.get(b"k2").expect("get").as_deref(), Some(&b"v2"[..]));
        assert!(segments(&wal).expect("list").is_empty());
    }
}
