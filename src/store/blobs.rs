//! Attachment contents, one file each under `<store>/attachments/`, outside sled.
//!
//! Why not a sled tree: sled keeps a node of large values in memory as one page, counted in its
//! cache by the size of its log pointer, so attachments were never evicted (hundreds of MB
//! under attachment load), and every rewrite of such a node wrote all of it again.
//!
//! Durability and atomicity come from the write-ahead log, as for the sled trees: an attachment
//! write is logged with its content under the tree name `blobs` (what [`super::wal`] replays
//! here), it is written before anything that names it (the item record), and removed after
//! the item record that named it. A crash can therefore leave an orphan file (never read), but
//! never an item whose attachment is missing. With `--fsync`, checkpoints sync the files
//! ([`BlobFiles::sync`]) before they retire the log that could rewrite them.
//!
//! Stores written before this layout keep their attachments in the sled tree `blobs`: reads
//! fall back to it, and removals remove from both.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use super::{Result, StoreError};

/// The attachment files of one store.
#[derive(Debug)]
pub(super) struct BlobFiles {
    root: PathBuf,
}

impl BlobFiles {
    pub(super) fn open(store_dir: &Path) -> Result<BlobFiles> {
        let root = store_dir.join("attachments");
        std::fs::create_dir_all(&root).map_err(io)?;
        Ok(BlobFiles { root })
    }

    /// `key` is the attachment's store key: item id (16 bytes) and index (4 bytes). Spread
    /// over 256 directories by the item id's last (random) byte.
    fn path(&self, key: &[u8]) -> PathBuf {
        let fan = key.get(15).copied().unwrap_or(0);
        self.root.join(format!("{fan:02x}")).join(hex(key))
    }

    /// Writes (or rewrites) an attachment.
    pub(super) fn put(&self, key: &[u8], content: &[u8]) -> Result<()> {
        let path = self.path(key);
        let mut file = match File::create(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                File::create(&path).map_err(io)?
            }
            Err(e) => return Err(io(e)),
        };
        file.write_all(content).map_err(io)
    }

    /// The attachment, if there is a file for it.
    pub(super) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match std::fs::read(self.path(key)) {
            Ok(content) => Ok(Some(content)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    /// Removes an attachment; one already gone is fine.
    pub(super) fn remove(&self, key: &[u8]) -> Result<()> {
        match std::fs::remove_file(self.path(key)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(e)),
        }
    }

    /// Bytes in attachment files.
    pub(super) fn size(&self) -> u64 {
        let mut total = 0;
        for dir in std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
        {
            for file in std::fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                total += file.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        total
    }

    /// Syncs every attachment file and directory to the disk (`syncfs` of their file
    /// system), for `--fsync` checkpoints.
    pub(super) fn sync(&self) -> Result<()> {
        let dir = File::open(&self.root).map_err(io)?;
        // SAFETY: `syncfs` only reads the descriptor, which `dir` keeps open for the call.
        let rc = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io(std::io::Error::last_os_error()))
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Attachment(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachments_are_written_read_rewritten_and_removed() {
        let dir = tempfile::tempdir().expect("dir");
        let files = BlobFiles::open(dir.path()).expect("open");
        let key = [[7u8; 16].as_slice(), &1u32.to_be_bytes()].concat();
        assert_eq!(files.get(&key).expect("get"), None);
        files.put(&key, b"first").expect("put");
        files.put(&key, b"second").expect("rewrite");
        assert_eq!(
            files.get(&key).expect("get").as_deref(),
            Some(&b"second"[..])
        );
        assert_eq!(files.size(), 6);
        files.remove(&key).expect("remove");
        files.remove(&key).expect("removing twice is fine");
        assert_eq!(files.get(&key).expect("get"), None);
        files.sync().expect("sync");
    }
}
