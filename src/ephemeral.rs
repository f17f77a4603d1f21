//! The throw-away data directory of `serve --ephemeral`: created in the temp directory, removed
//! when the server stops. A server killed with `kill -9` (as test suites often stop theirs) cannot
//! remove its own, so each ephemeral server, when it starts, removes the directories left by
//! ephemeral servers that are no longer running: each directory names its owner's pid.

use std::path::Path;

use tempfile::TempDir;

/// Name prefix of an ephemeral data directory.
const PREFIX: &str = "ingest-emulator-";
/// File in an ephemeral directory holding the owning server's pid.
const OWNER: &str = "owner.pid";

/// Removes the directories of ephemeral servers that died, then creates this server's.
pub fn create() -> std::io::Result<TempDir> {
    let tmp = std::env::temp_dir();
    let removed = sweep(&tmp);
    if removed > 0 {
        tracing::info!(
            removed,
            "removed the data directories of ephemeral servers that were killed"
        );
    }
    let dir = tempfile::Builder::new().prefix(PREFIX).tempdir_in(&tmp)?;
    std::fs::write(dir.path().join(OWNER), std::process::id().to_string())?;
    Ok(dir)
}

/// Removes each `ingest-emulator-*` directory of `tmp` whose owner is known and not running.
/// A directory without an owner file (being created, or made by something else) is left alone,
/// as is one whose pid is in use (perhaps by another process since: kept, to be safe).
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
        let owner = std::fs::read_to_string(path.join(OWNER))
            .ok()
            .and_then(|pid| pid.trim().parse::<u32>().ok());
        if let Some(pid) = owner {
            if !running(pid) && std::fs::remove_dir_all(&path).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// Whether a process with this pid exists (only known on Linux; elsewhere assumed running).
fn running(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_directories_of_dead_owners_are_removed() {
        let tmp = tempfile::tempdir().expect("tmp");
        let make = |name: &str, owner: Option<String>| {
            let dir = tmp.path().join(name);
            std::fs::create_dir(&dir).expect("dir");
            if let Some(owner) = owner {
                std::fs::write(dir.join(OWNER), owner).expect("owner");
            }
            dir
        };
        // pid_max on Linux is at most 2^22: this pid cannot be running.
        let dead = make("ingest-emulator-dead", Some("4294967".into()));
        let alive = make(
            "ingest-emulator-alive",
            Some(std::process::id().to_string()),
        );
        let unknown = make("ingest-emulator-unknown", None);
        let other = make("something-else", Some("4294967".into()));
        assert_eq!(sweep(tmp.path()), usize::from(cfg!(target_os = "linux")));
        assert_eq!(dead.exists(), !cfg!(target_os = "linux"));
        assert!(alive.exists() && unknown.exists() && other.exists());
    }
}
