//! `serve --ephemeral`: the throw-away store goes away with the server, and the one of a server
//! killed with `kill -9` is removed by the next ephemeral server.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts an ephemeral server with `TMPDIR=tmp`; answers it and its data directory.
fn start(tmp: &std::path::Path) -> (Child, PathBuf) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ingest-emulator"))
        .args([
            "serve",
            "--ephemeral",
            "--no-tls",
            "--listen",
            "127.0.0.1:0",
            "--admin-key",
            "ephemeral-test-key",
        ])
        .env("TMPDIR", tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ingest-emulator");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let store = loop {
        let line = lines
            .next()
            .expect("the server exited before it was ready")
            .expect("stdout");
        if let Some(rest) = line.trim().strip_prefix("Store:") {
            let dir = rest.trim().trim_end_matches("(ephemeral)").trim();
            break PathBuf::from(dir);
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, store)
}

fn wait_gone(path: &std::path::Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_killed_ephemeral_servers_store_is_removed_by_the_next_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut first, first_dir) = start(tmp.path());
    assert!(
        first_dir.starts_with(tmp.path()),
        "{first_dir:?} is in TMPDIR"
    );
    assert!(first_dir.join("owner.pid").exists());
    first.kill().unwrap(); // SIGKILL: nothing of the server runs to clean up
    first.wait().unwrap();
    assert!(first_dir.exists(), "kill -9 leaves the directory behind");

    let (mut second, second_dir) = start(tmp.path());
    assert!(!first_dir.exists(), "the next ephemeral server removed it");
    assert!(second_dir.exists());

    // A running server's directory is never taken: a third one leaves the second's alone.
    let (mut third, third_dir) = start(tmp.path());
    assert!(second_dir.exists() && third_dir.exists());

    // SIGTERM: the server removes its own directory as it stops.
    for child in [&mut second, &mut third] {
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        child.wait().unwrap();
    }
    assert!(wait_gone(&second_dir) && wait_gone(&third_dir));
}
