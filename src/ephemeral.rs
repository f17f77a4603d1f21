//! The throw-away data directory of `serve --ephemeral`: created in the temp directory, removed
//! when the server stops. A server killed with `kill -9` (as test suites often stop theirs) cannot
//! remove its own, so each ephemeral server, when it starts, removes the directories left by
//! ephemeral servers that are no longer running: each directory holds a lock file its server
//! keeps locked (`flock`) while it lives; the kernel releases the lock when the process dies, in
//! whatever way, and it works across PID namespaces (containers sharing a temp directory).

use std::fs::File;
use std::path::{Path, PathBuf};

/// Name prefix of an ephemeral data directory.
const PREFIX: &str = "ingest-emulator-";
/// File in an ephemeral directory its server keeps locked.
const LOCK: &str = "owner.lock";
/// File in an ephemeral directory naming the owning server's pid (for people).
const OWNER: &str = "owner.pid";

/// The data directory of an ephemeral server; removed when dropped.
pub struct EphemeralDir {
    dir: PathBuf,
    // Unlocked (closed) after the directory is removed: fields drop after `drop` runs.
    _lock: File,
}

impl EphemeralDir {
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for EphemeralDir {
    /// Removes the directory; retried for a while, as a background thread (the search index's
    /// committer or merger) may still be creating a file in it as the server stops.
    fn drop(&mut self) {
        for _ in 0..50 {
            match std::fs::remove_dir_all(&self.dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                _ => return,
            }
        }
        tracing::warn!(dir = %self.dir.display(), "the ephemeral data directory could not be removed");
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
    Ok(EphemeralDir {
        dir: dir.keep(),
        _lock: lock,
    })
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
        let gone = match File::open(path.join(LOCK)) {
            // Held while removing, so two sweeping servers do not both remove it.
            Ok(lock) => lock.try_lock().is_ok(),
            // Made by an older version (no lock file, only its pid), or still being created.
            Err(_) => legacy_owner_gone(&path),
        };
        if gone && std::fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// How old a directory of an older version must be before its pid is trusted: a pid may be
/// of another PID namespace (a container sharing `/tmp`), and a directory being created has
/// its pid before its lock file.
const LEGACY_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// A directory of an older version names its owner's pid only: gone when no such process
/// runs (known on Linux only, with `/proc` mounted), and the directory was left untouched for
/// an hour. Without a pid file, or when a lock file appeared meanwhile, it is left alone.
fn legacy_owner_gone(dir: &Path) -> bool {
    if !cfg!(target_os = "linux")
        || !Path::new("/proc/self").exists()
        || dir.join(format!("{LOCK}.new")).exists()
    {
        return false;
    }
    let old = std::fs::metadata(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|at| at.elapsed().ok())
        .is_some_and(|age| age >= LEGACY_MIN_AGE);
    let pid_gone = std::fs::read_to_string(dir.join(OWNER))
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        .is_some_and(|pid| !Path::new("/proc").join(pid.to_string()).exists());
    // A server that started meanwhile has its lock file by now.
    old && pid_gone && !dir.join(LOCK).exists()
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
        // An older version's directory: a pid, no lock file (pid_max on Linux is at most 2^22).
        let (legacy, _) = make("ingest-emulator-legacy", false);
        std::fs::write(legacy.join(OWNER), "4294967").expect("pid");
        let (legacy_alive, _) = make("ingest-emulator-legacy-alive", false);
        std::fs::write(legacy_alive.join(OWNER), std::process::id().to_string()).expect("pid");
        // A dead pid in a directory touched within the hour (being created, or of another
        // PID namespace): left alone.
        let (legacy_recent, _) = make("ingest-emulator-legacy-recent", false);
        std::fs::write(legacy_recent.join(OWNER), "4294967").expect("pid");
        let two_hours_ago = std::time::SystemTime::now() - 2 * LEGACY_MIN_AGE;
        for dir in [&legacy, &legacy_alive] {
            File::open(dir)
                .and_then(|d| d.set_modified(two_hours_ago))
                .expect("age");
        }
        let linux = cfg!(target_os = "linux");
        assert_eq!(sweep(tmp.path()), 1 + usize::from(linux));
        assert!(!dead.exists());
        assert_eq!(legacy.exists(), !linux);
        assert!(alive.exists() && unknown.exists() && other.exists() && legacy_alive.exists());
        assert!(legacy_recent.exists());
    }
}
