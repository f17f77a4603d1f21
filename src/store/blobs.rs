//! Attachment contents, one file each under `<store>/attachments/`, outside sled.
//!
//! Why not a sled tree: sled keeps a node of large values in memory as one page, counted in its
//! cache by the size of its log pointer, so attachments were never evicted (hundreds of MB
//! under attachment load), and every rewrite of such a node wrote all of it again.
//!
//! Durability and atomicity come from the write-ahead log, as for the sled trees: an attachment
//! write is logged with its content under the tree name `blobs` (what [`super::wal`] replays
//! here), it is written before anything that names it (the item record), and removed after
//! the item record that named it. A crash can therefore leave an orphan file (never read, and
//! swept after the next open: `Store::sweep_orphan_attachments`), but never an item whose
//! attachment is missing. With `--fsync`, the files written since the last
//! checkpoint (and their directories) are synced ([`BlobFiles::sync`]) before it retires the
//! log that could rewrite them, and so are those a start-up replay rewrote.
//!
//! Stores written before this layout keep their attachments in the sled tree `blobs`: reads
//! fall back to it, and removals remove from both.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Result, StoreError};

/// The attachment files of one store.
#[derive(Debug)]
pub(super) struct BlobFiles {
    root: PathBuf,
    /// With `--fsync`: files written or removed since the last [`BlobFiles::sync`] (removals
    /// by their path, whose directory is synced).
    unsynced: Option<Mutex<BTreeSet<PathBuf>>>,
    /// Per fan-out directory: the bytes of its files once counted (by a walk of it, the first
    /// time [`BlobFiles::size`] asks), then kept up to date by every write and removal in it,
    /// which hold its lock (so a walk and a change never interleave). `/metrics` asks on every
    /// scrape: a walk of every attachment file each time would cost in proportion to the store.
    sizes: Vec<Mutex<Option<u64>>>,
}

impl BlobFiles {
    /// The attachment files of the store in `store_dir`; with `fsync`, [`BlobFiles::sync`]
    /// syncs what changed.
    pub(super) fn open(store_dir: &Path, fsync: bool) -> Result<BlobFiles> {
        let root = store_dir.join("attachments");
        std::fs::create_dir_all(&root).map_err(|e| io(&root, e))?;
        Ok(BlobFiles {
            root,
            unsynced: fsync.then(|| Mutex::new(BTreeSet::new())),
            sizes: (0..=u8::MAX).map(|_| Mutex::new(None)).collect(),
        })
    }

    /// The size counter of `key`'s directory, locked.
    fn size_of_dir(&self, key: &[u8]) -> std::sync::MutexGuard<'_, Option<u64>> {
        let fan = usize::from(Self::fan(key));
        self.sizes[fan].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self, path: PathBuf) {
        if let Some(unsynced) = &self.unsynced {
            unsynced
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(path);
        }
    }

    /// `key` is the attachment's store key: item id (16 bytes) and index (4 bytes). Spread
    /// over 256 directories by the item id's last (random) byte.
    fn path(&self, key: &[u8]) -> PathBuf {
        self.fan_dir(Self::fan(key)).join(hex(key))
    }

    fn fan_dir(&self, fan: u8) -> PathBuf {
        self.root.join(format!("{fan:02x}"))
    }

    fn fan(key: &[u8]) -> u8 {
        key.get(15).copied().unwrap_or(0)
    }

    /// Writes (or rewrites) an attachment.
    pub(super) fn put(&self, key: &[u8], content: &[u8]) -> Result<()> {
        self.write(key, content).map(|_| ())
    }

    /// Writes attachments for a write that sled gets *before* the log does (`CreateAttachment`,
    /// imports): with `--fsync`, the files and their directories are synced before this
    /// returns (each directory once). Otherwise, after a power loss, sled could keep the record
    /// of such a write (the request was never acknowledged, its log record is lost) while a
    /// file it names is gone, and no replay would rewrite it. Writes logged first need no such
    /// sync: their replay rewrites the files.
    pub(super) fn put_synced<'a>(
        &self,
        attachments: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<()> {
        let mut written = Vec::new();
        for (key, content) in attachments {
            written.push(self.write(key, content)?);
        }
        let Some(unsynced) = &self.unsynced else {
            return Ok(());
        };
        self.sync_paths(&written)?;
        let mut unsynced = unsynced.lock().unwrap_or_else(|p| p.into_inner());
        for path in &written {
            unsynced.remove(path);
        }
        Ok(())
    }

    fn write(&self, key: &[u8], content: &[u8]) -> Result<PathBuf> {
        let path = self.path(key);
        let mut size = self.size_of_dir(key);
        let before = size.map(|_| file_len(&path));
        let written = self.create(&path, content);
        *size = match (*size, before, &written) {
            (Some(total), Some(before), Ok(())) => {
                Some(total.saturating_sub(before) + content.len() as u64)
            }
            // Counted again when next asked (a failed write may have left part of a file).
            _ => None,
        };
        written.map(|()| path)
    }

    fn create(&self, path: &Path, content: &[u8]) -> Result<()> {
        let mut file = match File::create(path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
                }
                File::create(path).map_err(|e| io(path, e))?
            }
            Err(e) => return Err(io(path, e)),
        };
        file.write_all(content).map_err(|e| io(path, e))?;
        self.changed(path.to_path_buf());
        Ok(())
    }

    /// The attachment, if there is a file for it.
    pub(super) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let path = self.path(key);
        match std::fs::read(&path) {
            Ok(content) => Ok(Some(content)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path, e)),
        }
    }

    /// Removes an attachment; one already gone is fine.
    pub(super) fn remove(&self, key: &[u8]) -> Result<()> {
        let path = self.path(key);
        let mut size = self.size_of_dir(key);
        let before = size.map(|_| file_len(&path));
        match std::fs::remove_file(&path) {
            Ok(()) => {
                if let (Some(total), Some(before)) = (size.as_mut(), before) {
                    *total = total.saturating_sub(before);
                }
                self.changed(path);
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path, e)),
        }
    }

    /// The fan-out directories.
    pub(super) fn directories(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|dir| dir.path())
            .collect()
    }

    /// The keys of the attachment files in one of [`BlobFiles::directories`] (names that are
    /// not a key are left out).
    pub(super) fn keys_in(dir: &Path) -> Vec<Vec<u8>> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|file| unhex(file.file_name().to_str()?))
            .filter(|key| key.len() == 20)
            .collect()
    }

    /// Bytes in attachment files: each directory is walked the first time only (see `sizes`).
    pub(super) fn size(&self) -> u64 {
        let mut total = 0;
        for (fan, size) in (0..=u8::MAX).zip(&self.sizes) {
            let mut size = size.lock().unwrap_or_else(|p| p.into_inner());
            total += *size.get_or_insert_with(|| {
                std::fs::read_dir(self.fan_dir(fan))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|file| file.metadata().map(|m| m.len()).unwrap_or(0))
                    .sum()
            });
        }
        total
    }

    /// With `--fsync`: syncs the files written since the last call, and the directories of
    /// those written or removed (a new name, or a removal, survives a power loss only so).
    /// Without, nothing: a `kill -9` loses nothing the kernel has.
    pub(super) fn sync(&self) -> Result<()> {
        let Some(unsynced) = &self.unsynced else {
            return Ok(());
        };
        let paths = std::mem::take(&mut *unsynced.lock().unwrap_or_else(|p| p.into_inner()));
        let outcome = self.sync_paths(&paths);
        if outcome.is_err() {
            // Tried again at the next checkpoint.
            unsynced
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(paths);
        }
        outcome
    }

    /// Syncs the files at `paths` (one already removed is fine), then each of their
    /// directories once, and the root (a fan-out directory created since has its name there).
    fn sync_paths<'a>(&self, paths: impl IntoIterator<Item = &'a PathBuf>) -> Result<()> {
        let mut dirs = BTreeSet::new();
        for path in paths {
            match File::open(path) {
                Ok(file) => file.sync_all().map_err(|e| io(path, e))?,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io(path, e)),
            }
            if let Some(dir) = path.parent() {
                if dirs.insert(dir.to_path_buf()) {
                    dirs.insert(self.root.clone());
                }
            }
        }
        for dir in &dirs {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io(dir, e))?;
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The length of the file at `path`; 0 when there is none.
fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn io(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Attachment(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size is counted once per directory, then kept by writes and removals: a file put
    /// there behind the store's back is seen only by a new walk.
    #[test]
    fn the_size_is_walked_once_then_follows_writes_rewrites_and_removals() {
        let dir = tempfile::tempdir().expect("dir");
        let files = BlobFiles::open(dir.path(), false).expect("open");
        let key = |n: u8, fan: u8| {
            let mut key = [[n; 16].as_slice(), &1u32.to_be_bytes()].concat();
            key[15] = fan;
            key
        };
        files.put(&key(1, 0), &[0; 100]).expect("put");
        assert_eq!(files.size(), 100, "walked");
        std::fs::write(dir.path().join("attachments/00/stray"), [0; 7]).expect("stray");
        files.put(&key(2, 0), &[0; 50]).expect("put");
        files
            .put(&key(3, 9), &[0; 5])
            .expect("put in another directory");
        assert_eq!(files.size(), 155, "counted, not walked again");
        files.put(&key(1, 0), &[0; 10]).expect("rewrite");
        assert_eq!(files.size(), 65);
        files.remove(&key(2, 0)).expect("remove");
        files.remove(&key(2, 0)).expect("removing twice is fine");
        assert_eq!(files.size(), 15);
        let fresh = BlobFiles::open(dir.path(), false).expect("open");
        assert_eq!(fresh.size(), 22, "a new walk sees the stray file too");
    }

    #[test]
    fn attachments_are_written_read_rewritten_and_removed() {
        let dir = tempfile::tempdir().expect("dir");
        let files = BlobFiles::open(dir.path(), true).expect("open");
        let key = [[7u8; 16].as_slice(), &1u32.to_be_bytes()].concat();
        assert_eq!(files.get(&key).expect("get"), None);
        files.put(&key, b"first").expect("put");
        files.put(&key, b"second").expect("rewrite");
        assert_eq!(
            files.get(&key).expect("get").as_deref(),
            Some(&b"second"[..])
        );
        assert_eq!(files.size(), 6);
        let keys: Vec<Vec<u8>> = files
            .directories()
            .iter()
            .flat_map(|dir| BlobFiles::keys_in(dir))
            .collect();
        assert_eq!(keys, std::slice::from_ref(&key));
        files.remove(&key).expect("remove");
        files.remove(&key).expect("removing twice is fine");
        assert_eq!(files.get(&key).expect("get"), None);
        files.sync().expect("sync");
    }

    #[test]
    fn a_write_sled_gets_before_the_log_is_synced_at_once_with_fsync() {
        let dir = tempfile::tempdir().expect("dir");
        let files = BlobFiles::open(dir.path(), true).expect("open");
        let unsynced = |files: &BlobFiles| {
            files
                .unsynced
                .as_ref()
                .map(|u| u.lock().expect("lock").len())
        };
        let logged_first = [[1u8; 16].as_slice(), &0u32.to_be_bytes()].concat();
        files.put(&logged_first, b"replayable").expect("put");
        assert_eq!(unsynced(&files), Some(1), "left to the next checkpoint");
        let applied_first = [[2u8; 16].as_slice(), &0u32.to_be_bytes()].concat();
        let applied_too = [[3u8; 16].as_slice(), &0u32.to_be_bytes()].concat();
        files
            .put_synced([
                (applied_first.as_slice(), b"not replayable".as_slice()),
                (applied_too.as_slice(), b"nor this".as_slice()),
            ])
            .expect("put");
        assert_eq!(unsynced(&files), Some(1), "synced before it returned");
        assert_eq!(
            files.get(&applied_first).expect("get").as_deref(),
            Some(&b"not replayable"[..])
        );
        let other = tempfile::tempdir().expect("dir");
        let without = BlobFiles::open(other.path(), false).expect("open");
        without
            .put_synced([(applied_first.as_slice(), b"x".as_slice())])
            .expect("put");
        assert_eq!(unsynced(&without), None);
    }
}
