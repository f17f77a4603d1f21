//! Durability: an acknowledged item (with its attachment bytes) survives `kill -9` and
//! restart; parallel batches lose nothing.

mod common;

use common::*;

/// Killed right after the acknowledgements, before any checkpoint (every second) flushed the
/// store: the items come back from the write-ahead log.
#[test]
fn acknowledged_items_survive_sigkill_and_restart() {
    survives_sigkill(&[]);
}

/// The same with `--fsync` (each group commit synced to the disk).
#[test]
fn acknowledged_items_survive_sigkill_and_restart_with_fsync() {
    survives_sigkill(&["--fsync"]);
}

fn survives_sigkill(extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), extra);
    let token = server.token();
    let mut acknowledged = Vec::new();
    for n in 0..5 {
        let messages: Vec<String> = (0..3)
            .map(|i| {
                Msg {
                    subject: Some(format!("r{n} i{i}")),
                    cc: vec!["bob@contoso.com".into()],
                    attachments: vec![(format!("r{n}i{i}.bin"), attachment(n, i))],
                    ..Msg::default()
                }
                .xml()
            })
            .collect();
        let reply = server.ews(&token, &create_item(&messages));
        assert_eq!(reply.status, 200);
        acknowledged.push((reply.correlation_id().unwrap(), reply.item_ids()));
    }
    server.kill();

    let server = Server::start_in(dir.path(), extra);
    let token = server.token();
    for (n, (correlation, ids)) in acknowledged.iter().enumerate() {
        let record = server.ingestion(correlation);
        let stored: Vec<&str> = record["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["itemId"].as_str().unwrap())
            .collect();
        assert_eq!(&stored, ids);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(
                server.attachment(id, 0),
                attachment(n, i),
                "attachment bytes of {id}"
            );
        }
    }
    assert_eq!(
        server.folder_count(&token, "alice@contoso.com", "recoverableitemspurges"),
        15
    );
    assert_eq!(
        server.folder_count(&token, "bob@contoso.com", "recoverableitemspurges"),
        15
    );
}

/// The journal entries of requests that stored nothing (an injected fault, a refusal by the
/// sender rule) are logged like stored ones: killed right after the answers, before any
/// checkpoint, the server still has them after a restart.
#[test]
fn journal_entries_of_faulted_and_refused_requests_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[]);
    let token = server.token();
    server.add_fault(serde_json::json!({"operation": "CreateItem", "count": 1,
        "fault": {"kind": "serverBusy", "backOffMilliseconds": 500}}));
    let faulted = server.ews(&token, &create_item(&[Msg::default().xml()]));
    assert_eq!(faulted.status, 500, "{}", faulted.body);
    let faulted = faulted.correlation_id().expect("correlation id");
    let refused = Msg {
        from: Some("nobody@contoso.com".into()),
        ..Msg::default()
    };
    let reply = server.ews(&token, &create_item(&[refused.xml()]));
    assert_eq!(reply.status, 401, "{}", reply.body);
    server.kill();

    let server = Server::start_in(dir.path(), &[]);
    assert_eq!(server.ingestion(&faulted)["outcome"], "Faulted");
    let journal = server.journal(5);
    let outcomes: Vec<&str> = journal
        .iter()
        .map(|e| e["outcome"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(outcomes, ["Refused", "Faulted"], "{journal:?}");
}

/// Attachment bytes of request `n`, item `i` (16 KB, distinct per item).
fn attachment(n: usize, i: usize) -> Vec<u8> {
    (0..16 * 1024)
        .map(|b| (b * 7 + n * 31 + i * 131) as u8)
        .collect()
}

#[test]
fn directory_and_keys_persist_across_restart_so_old_tokens_stay_valid() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[]);
    let token = server.token();
    server.kill();
    let server = Server::start_in(dir.path(), &[]);
    let reply = server.ews(&token, &create_item(&[Msg::default().xml()]));
    assert_eq!(
        reply.status, 200,
        "a token from before the restart is still valid"
    );
}

#[test]
fn parallel_batches_lose_nothing() {
    let server = Server::start(&[]);
    let token = server.token();
    let threads = 8;
    let requests = 10;
    let per_request = 5;
    let results: Vec<Vec<(String, Vec<String>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let server = &server;
                let token = &token;
                scope.spawn(move || {
                    (0..requests)
                        .map(|r| {
                            let messages: Vec<String> = (0..per_request)
                                .map(|i| {
                                    Msg {
                                        subject: Some(format!("t{t} r{r} i{i}")),
                                        ..Msg::default()
                                    }
                                    .xml()
                                })
                                .collect();
                            let reply = server.ews(token, &create_item(&messages));
                            assert_eq!(reply.status, 200, "{}", reply.body);
                            (reply.correlation_id().unwrap(), reply.item_ids())
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all_ids = std::collections::HashSet::new();
    for (correlation, ids) in results.iter().flatten() {
        assert_eq!(ids.len(), per_request);
        let record = server.ingestion(correlation);
        assert_eq!(record["items"].as_array().unwrap().len(), per_request);
        all_ids.extend(ids.iter().cloned());
    }
    assert_eq!(all_ids.len(), threads * requests * per_request);
    assert_eq!(
        server.folder_count(&token, "alice@contoso.com", "recoverableitemspurges") as usize,
        threads * requests * per_request
    );
}

#[test]
fn sigterm_shuts_down_gracefully_with_exit_0() {
    let mut server = Server::start(&[]);
    let token = server.token();
    assert_eq!(
        server
            .ews(&token, &create_item(&[Msg::default().xml()]))
            .status,
        200
    );
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
}

/// A stop does not wait on what cannot finish soon: connections that never asked anything are
/// closed at once, and a request still running when `--shutdown-grace-secs` is over is
/// abandoned (the server exits 0 within the grace, inside `docker stop`'s window).
#[test]
fn a_stop_waits_at_most_the_shutdown_grace() {
    let mut server = Server::start(&["--shutdown-grace-secs", "1"]);
    let token = server.token();
    server.add_fault(serde_json::json!({"operation": "CreateItem",
        "fault": {"kind": "latency", "milliseconds": 20000}}));
    // A connection that says nothing (it would hold the drain for the header timeout) and a
    // request held by the injected latency.
    let _silent = std::net::TcpStream::connect(server.addr()).unwrap();
    let slow = {
        let client = server.client().clone();
        let url = format!("{}{SERVICE_PATH}", server.url);
        let token = token.clone();
        std::thread::spawn(move || {
            client
                .post(url)
                .bearer_auth(token)
                .header("Content-Type", "text/xml; charset=utf-8")
                .body(create_item(&[Msg::default().xml()]))
                .send()
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    let started = std::time::Instant::now();
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(6),
        "stopped in {:?}",
        started.elapsed()
    );
    let _ = slow.join();
}

/// `--tls-san` adds names to the generated server certificate: a store whose certificate
/// lacks one gets it issued again by the same CA, so a client that trusts the CA from before
/// reaches the server by the new name (another container's name for it, say).
#[test]
fn tls_san_names_are_added_to_the_certificate_under_the_same_ca() {
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start_in(dir.path(), &[]);
    let ca = std::fs::read(first.ca_cert.as_ref().expect("generated CA")).unwrap();
    drop(first);
    let server = Server::start_in(dir.path(), &["--tls-san", "emulator.test,10.9.8.7"]);
    assert_eq!(
        std::fs::read(server.ca_cert.as_ref().unwrap()).unwrap(),
        ca,
        "the same CA"
    );
    let addr: std::net::SocketAddr = server.addr().parse().unwrap();
    let client = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .resolve("emulator.test", addr)
        .build()
        .unwrap();
    let url = format!("https://emulator.test:{}/healthz", addr.port());
    let answer = client.get(&url).send().expect("TLS by the new name");
    assert_eq!(answer.status(), 200);
    // A name the certificate does not carry is still refused.
    let other = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .resolve("elsewhere.test", addr)
        .build()
        .unwrap();
    assert!(other
        .get(format!("https://elsewhere.test:{}/healthz", addr.port()))
        .send()
        .is_err());
}

/// The log segments that hold stored items (their requests' records) are kept past the
/// checkpoints that retire them, across a restart, and deleted once a reset removed every item
/// in them: the store's disk use follows what it holds.
#[test]
fn log_segments_holding_items_are_kept_until_their_items_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[]);
    let token = server.token();
    let mut ids = Vec::new();
    for n in 0..4 {
        let messages: Vec<String> = (0..5)
            .map(|i| {
                Msg {
                    subject: Some(format!("r{n} i{i}")),
                    ..Msg::default()
                }
                .xml()
            })
            .collect();
        let reply = server.ews(&token, &create_item(&messages));
        assert_eq!(reply.status, 200);
        ids.extend(reply.item_ids());
    }
    let wal = dir.path().join("data").join("store").join("wal");
    let retired = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&wal)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("idx-"))
            .collect();
        names.sort();
        names
    };
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    // A checkpoint (every second) retires the segment: it is kept, not deleted.
    wait_for("the segment is retired and kept", &|| !retired().is_empty());
    let kept = retired();
    server.kill();

    let mut server = Server::start_in(dir.path(), &[]);
    let token = server.token();
    // A search has the index commit what it lacked: it no longer needs the segments. Past
    // the first collection after the start (about a second), they are still kept: the
    // items are in them.
    let search = |query: &str| {
        let (status, body) = call(
            &server,
            reqwest::Method::POST,
            &format!("/api/tenants/{TENANT}/search"),
            Some(serde_json::json!({ "query": query })),
        );
        assert_eq!(status, 200, "{body}");
        body["total"].as_u64().unwrap()
    };
    assert_eq!(search("subject:r1"), 5);
    std::thread::sleep(std::time::Duration::from_millis(3000));
    assert!(kept.iter().all(|name| retired().contains(name)), "{kept:?}");
    assert_eq!(
        server.folder_count(&token, "alice@contoso.com", "recoverableitemspurges"),
        20
    );
    let (status, item) = call(
        &server,
        reqwest::Method::GET,
        &format!("/api/tenants/{TENANT}/items/{}", ids[7]),
        None,
    );
    assert_eq!(status, 200, "{item}");
    assert_eq!(item["subject"], "r1 i2");

    let (status, body) = call(
        &server,
        reqwest::Method::POST,
        "/api/reset?force=true",
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(search("subject:r1"), 0);
    wait_for("the segments go once their items are gone", &|| {
        retired().iter().all(|name| !kept.contains(name))
    });
    assert_eq!(
        server.folder_count(&token, "alice@contoso.com", "recoverableitemspurges"),
        0
    );
    server.kill();
}
