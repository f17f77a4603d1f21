//! What one sled key costs: times plain `Tree::insert`s with the store's sled settings (16 MB
//! cache, no background flush: the write-ahead log is what makes a write durable) and the key
//! shapes of the ingestion path, so the "cost is per key, not per byte" rule that
//! `store/groups.rs` is built on can be checked on any machine.
//!
//! ```text
//! cargo run --release --example sled_inserts -- [--keys 300000]
//! taskset -c 0 target/release/examples/sled_inserts      # as the benchmark pins the server
//! ```
//!
//! Shapes: increasing 14-byte keys (item group entries: a v7 id's first 14 bytes) with a 180-
//! and a 1,800-byte value; decreasing keys under one 20-byte prefix with a 2-byte value (a
//! folder's copy entries, newest first); random 16-byte keys (what v4 ids as keys would be).
//! One run on the 2-core VM of the benchmark figures (2026-12-07, pinned to one core, 300,000
//! keys): 4.3 µs per insert for group-shaped keys with 180-byte values, 7.3 with 1,800-byte
//! ones, 3.3 for copy-shaped keys, 12.1 for random keys (17.7 at a million: the tree outgrows
//! the cache). A profile shows why a small insert costs microseconds: each one clones the leaf
//! it lands in, and sled 0.34 splits a leaf past 16 entries; keys that only grow (or only
//! shrink) leave every leaf half full, so a split, which writes whole pages, comes every ~8
//! inserts.

use std::time::Instant;

fn main() {
    let mut keys: u64 = 300_000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--keys", Some(n)) if n > 0 => keys = n,
            _ => {
                eprintln!("usage: sled_inserts [--keys N]");
                std::process::exit(2);
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("sled-inserts-{}", std::process::id()));
    let outcome = run(&dir, keys);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = outcome {
        eprintln!("sled_inserts: {e}");
        std::process::exit(1);
    }
}

fn run(dir: &std::path::Path, n: u64) -> sled::Result<()> {
    println!("{n} inserts per shape, one thread, a new database each");
    let small = vec![7u8; 180];
    let large = vec![7u8; 1800];
    let group_key = |i: u64| {
        let mut key = [0u8; 14];
        key[..8].copy_from_slice(&(0x019a_0000_0000_0000u64 + i).to_be_bytes());
        key
    };
    time(dir, "increasing 14-byte keys, 180-byte values", n, |i| {
        (group_key(i).to_vec(), small.clone())
    })?;
    time(dir, "increasing 14-byte keys, 1,800-byte values", n, |i| {
        (group_key(i).to_vec(), large.clone())
    })?;
    time(
        dir,
        "decreasing keys under a 20-byte prefix, 2-byte values",
        n,
        |i| {
            let mut key = vec![1u8; 20];
            key.extend_from_slice(&(u64::MAX - i).to_be_bytes());
            (key, vec![0, 1])
        },
    )?;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    time(dir, "random 16-byte keys, 180-byte values", n, |_| {
        // xorshift64*: spread keys, no dependency.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let a = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let mut key = a.to_be_bytes().to_vec();
        key.extend_from_slice(&a.rotate_left(17).to_be_bytes());
        (key, small.clone())
    })?;
    Ok(())
}

fn time(
    dir: &std::path::Path,
    shape: &str,
    n: u64,
    mut entry: impl FnMut(u64) -> (Vec<u8>, Vec<u8>),
) -> sled::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    // The settings of `Store::open_with`.
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(16 * 1024 * 1024)
        .flush_every_ms(None)
        .open()?;
    let tree = db.open_tree("t")?;
    let entries: Vec<_> = (0..n).map(&mut entry).collect();
    let started = Instant::now();
    for (key, value) in entries {
        tree.insert(key, value)?;
    }
    let elapsed = started.elapsed();
    println!(
        "  {shape:<58} {:>6.2} µs per insert",
        elapsed.as_secs_f64() * 1e6 / n as f64
    );
    Ok(())
}
