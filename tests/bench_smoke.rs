//! The benchmark runs with one command: a one-second run of one scenario against the server
//! built with the tests, without the baseline. Checks that it completes, measures requests
//! without errors, and reports where the server's CPU went (not how fast: figures of a debug
//! build on a shared machine mean nothing, see `ingest-bench` and the README).

use std::process::Command;

/// Runs `ingest-bench` for one second of scenario `b1-c1` with `extra` options; its stdout,
/// once it succeeded.
fn bench(extra: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_ingest-bench"))
        .args(["--seconds", "1", "--warmup", "0", "--only", "b1-c1"])
        .args(extra)
        .output()
        .expect("run ingest-bench");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "ingest-bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn the_benchmark_runs_a_scenario_and_reports_the_servers_cpu() {
    let stdout = bench(&["--no-baseline"]);
    let row = stdout
        .lines()
        .find(|l| l.starts_with("b1-c1 "))
        .unwrap_or_else(|| panic!("no b1-c1 row in:\n{stdout}"));
    // scenario, req/s, items/s, p50 ms, p99 ms, max ms, errors, ...
    let columns: Vec<&str> = row.split_whitespace().collect();
    let requests: f64 = columns[1].parse().expect("req/s");
    let p99: f64 = columns[4].parse().expect("p99 ms");
    let max: f64 = columns[5].parse().expect("max ms");
    let errors: u64 = columns[6].parse().expect("errors");
    assert!(requests > 0.0, "{row}");
    assert!(max >= p99 && p99 > 0.0, "{row}");
    assert_eq!(errors, 0, "{row}");
    let cpu = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("server CPU"))
        .unwrap_or_else(|| panic!("no CPU line in:\n{stdout}"));
    // (Requests commit their own writes without `--fsync`: no committer share is expected.)
    assert!(cpu.contains("requests"), "{cpu}");
    assert!(cpu.contains("KB per item to storage"), "{cpu}");
    assert!(
        stdout
            .lines()
            .any(|l| l.trim_start().starts_with("first search after the load:")),
        "{stdout}"
    );
    assert!(stdout.contains("idle RSS"), "{stdout}");
}

/// `--against` runs the scenarios against two binaries in turn and prints their medians side
/// by side (here the same binary twice: the ratio must be a number, whatever it is).
#[test]
fn the_benchmark_compares_two_builds_in_alternating_runs() {
    let server = env!("CARGO_BIN_EXE_ingest-emulator");
    let stdout = bench(&["--server-bin", server, "--against", server, "--rounds", "1"]);
    assert!(stdout.contains("== round 1, A:"), "{stdout}");
    assert!(stdout.contains("== round 1, B:"), "{stdout}");
    let row = stdout
        .lines()
        .skip_while(|l| !l.starts_with("medians of 1 rounds"))
        .find(|l| l.starts_with("b1-c1 "))
        .unwrap_or_else(|| panic!("no medians row in:\n{stdout}"));
    // scenario, A req/s, B req/s, B/A, ...
    let columns: Vec<&str> = row.split_whitespace().collect();
    let ratio: f64 = columns[3].trim_end_matches('x').parse().expect("B/A");
    assert!(ratio > 0.0, "{row}");
}
