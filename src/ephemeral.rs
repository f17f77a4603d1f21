//! The throw-away data directory of `serve --ephemeral`: created in the temp directory, removed
//! when the server stops. A server killed with `kill -9` (as test suites often stop theirs) cannot
//! remove its own, so each ephemeral server, when it starts, removes the directories left by
//! ephemeral servers that are no longer running: each directory holds a lock file its server
//! keeps locked (`flock`) while it lives; the kernel releases the lock when the process dies, in
//! whatever way, and it works across PID namespaces (containers sharing a temp directory).

use std::fs::File;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// Name prefix of an ephemeral data directory.
const PREFIX: &str = "ingest-emulator-";
/// File in an ephemeral directory its server keeps locked.
const LOCK: &str = "owner.lock";
/// File in an ephemeral directory naming the owning server's pid (for people).
const OWNER: &str = "owner.pid";

/// The data directory of an ephemeral server; removed when dropped.
pub struct EphemeralDir {
    // Unlocked (closed) after the directory is removed: fields drop in order.
    dir: TempDir,
    _lock: File,
}

impl EphemeralDir {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes the directories of ephemeral servers that died, then creates this server's.
pub fn create() -> std::io::Result<EphemeralDir> {
    let tmp = std::env::temp_dir();
    let removed = sweep(&tmp);
    if removed > 0 {
        tracing::info!(
            removed,
            "removed the data directories of ephemeral servers that were killed"
        );
    }
    let dir = tempfile::Builder::new().prefix(PREFIX).tempdir_in(&tmp)?;
    let lock = lock_owner(dir.path())?;
    std::fs::write(dir.path().join(OWNER), std::process::id().to_string())?;
    Ok(EphemeralDir { dir, _lock: lock })
}

/// Creates the lock file of `dir` already locked: locked under another name, then renamed, so
/// a concurrent sweep never finds it unlocked.
fn lock_owner(dir: &Path) -> std::io::Result<File> {
    let pending: PathBuf = dir.join(format!("{LOCK}.new"));
    let file = File::create(&pending)?;
    file.lock()?;
    std::fs::rename(&pending, dir.join(LOCK))?;
    Ok(file)
}

/// Removes each `ingest-emulator-*` directory of `tmp` whose lock file is not locked (its server
/// is gone). A directory without a lock file (being created, or made by something else) is
/// left alone.
fn sweep(tmp: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let named = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(PREFIX));
        if !named || !path.is_dir() {
            continue;
        }
        let Ok(lock) = File::open(path.join(LOCK)) else {
            continue;
        };
        // Held while removing, so two sweeping servers do not both remove it.
        if lock.try_lock().is_ok() && std::fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_directories_whose_owner_is_gone_are_removed() {
        let tmp = tempfile::tempdir().expect("tmp");
        let make = |name: &str, lock: bool| {
            let dir = tmp.path().join(name);
            std::fs::create_dir(&dir).expect("dir");
            let held = lock.then(|| lock_owner(&dir).expect("lock"));
            (dir, held)
        };
        // The lock file of a dead server: present, nobody holds it.
        let (dead, held) = make("ingest-emulator-dead", true);
        drop(held);
        let (alive, _held) = make("ingest-emulator-alive", true);
        let (unknown, _) = make("ingest-emulator-unknown", false);
        let (other, held) = make("something-else", true);
        drop(held);
        assert_eq!(sweep(tmp.path()), 1);
        assert!(!dead.exists());
        assert!(alive.exists() && unknown.exists() && other.exists());
    }
}
