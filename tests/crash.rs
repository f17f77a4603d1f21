//! Crash safety against the real binary on a persistent store.
//!
//! `concurrent_ingestion_survives_repeated_sigkill`: several threads ingest batches (each request
//! tagged with a unique subject, every item to alice with bob in Cc: two copies per item) while
//! the server is killed with SIGKILL at random moments, `CRASH_KILLS` times (default 20), and
//! restarted on the same store. After every restart:
//! - every request answered 200 with a correlation id has its ingestion record, with exactly the
//!   item ids of the reply;
//! - no request is half stored: the copies in alice's and bob's folders equal the sum of the
//!   items of all CreateItem records found (acknowledged or committed-but-unanswered), so an item
//!   without its record, a record without all its items or an item without all its copies would
//!   break the equation;
//!
//! Meanwhile another thread deletes acknowledged items through the admin API. An item whose
//! delete was answered 204 is gone after every restart; one whose delete was cut off by the
//! kill is either wholly there or wholly gone; the copy counts above subtract the items gone.
//!
//! The search index agrees with the store after every restart: a search for every item counts
//! exactly the copies in the mailboxes (a deleted item is not found, a stored one is).
//!
//! Every item carries an attachment: the last acknowledged requests' attachment bytes are checked
//! after every restart, every acknowledged item's at the end.
//!
//! And at the end, every item of every record is listed in both mailboxes with its request's tag.
//!
//! `sigterm_finishes_in_flight_requests_and_exits_0`: requests in flight when SIGTERM arrives
//! are all answered 200, the process exits 0, and their items are there after a restart.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rand::Rng;
use serde_json::Value;

const ALICE: &str = "alice@contoso.com";
const BOB: &str = "bob@contoso.com";
const FOLDER: &str = "recoverableitemspurges";

#[derive(Debug)]
struct Sent {
    tag: String,
    items: usize,
    /// Correlation id and item ids when the request was answered 200.
    ack: Option<(String, Vec<String>)>,
}

fn batch(tag: &str, items: usize) -> String {
    let messages: Vec<String> = (0..items)
        .map(|i| {
            Msg {
                subject: Some(format!("{tag} item {i}")),
                cc: vec![BOB.into()],
                attachments: vec![("part.bin".into(), attachment(tag, i))],
                ..Msg::default()
            }
            .xml()
        })
        .collect();
    create_item(&messages)
}

/// The attachment of item `i` of request `tag` (about 4 KB, distinct per item).
fn attachment(tag: &str, i: usize) -> Vec<u8> {
    format!("{tag}/{i};")
        .repeat(4096 / (tag.len() + 4))
        .into_bytes()
}

/// All CreateItem ingestion records of the tenant, by correlation id.
fn records(server: &Server) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut skip = 0;
    loop {
        let page: Value = server
            .admin(
                reqwest::Method::GET,
                &format!("/api/tenants/{TENANT}/ingestions?top=1000&skip={skip}"),
            )
            .send()
            .expect("list ingestions")
            .json()
            .expect("JSON");
        let value = page["value"].as_array().expect("value").clone();
        let n = value.len();
        for record in value {
            if record["operation"] == "CreateItem" {
                out.insert(
                    record["correlationId"].as_str().unwrap().to_string(),
                    record,
                );
            }
        }
        if n < 1000 {
            return out;
        }
        skip += n;
    }
}

fn stored_ids(record: &Value) -> Vec<String> {
    record["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["itemId"].is_string())
        .map(|i| i["itemId"].as_str().unwrap().to_string())
        .collect()
}

/// `itemId -> subject` of every item listed in a mailbox's purges folder.
fn listed(server: &Server, mailbox: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut skip = 0;
    loop {
        let page: Value = server
            .admin(
                reqwest::Method::GET,
                &format!("/api/tenants/{TENANT}/mailboxes/{mailbox}/items?top=1000&skip={skip}"),
            )
            .send()
            .expect("list items")
            .json()
            .expect("JSON");
        let value = page["value"].as_array().expect("value").clone();
        let n = value.len();
        for item in value {
            out.insert(
                item["itemId"].as_str().unwrap().to_string(),
                item["subject"].as_str().unwrap_or_default().to_string(),
            );
        }
        if n < 1000 {
            return out;
        }
        skip += n;
    }
}

/// Whether the store still has an item (admin API: 200 or 404).
fn item_exists(server: &Server, id: &str) -> bool {
    let status = server
        .admin(
            reqwest::Method::GET,
            &format!("/api/tenants/{TENANT}/items/{id}"),
        )
        .send()
        .expect("get item")
        .status()
        .as_u16();
    assert!(status == 200 || status == 404, "GET item {id}: {status}");
    status == 200
}

/// Content Search's count of every copy in the tenant (after the start-up catch-up).
fn search_total(server: &Server) -> usize {
    let response = server
        .admin(
            reqwest::Method::POST,
            &format!("/api/tenants/{TENANT}/search"),
        )
        .json(&serde_json::json!({ "query": "kind:externaldata", "top": 0 }))
        .send()
        .expect("search");
    assert_eq!(response.status(), 200, "search");
    let value: Value = response.json().expect("JSON");
    value["total"].as_u64().expect("total") as usize
}

/// Deletes made during the rounds: answered 204, or cut off by a kill (outcome unknown).
#[derive(Default)]
struct Deletes {
    done: BTreeSet<String>,
    unknown: BTreeSet<String>,
}

/// The checks after a restart; returns (records, items) found.
fn verify(
    server: &Server,
    token: &str,
    sent: &[Sent],
    deletes: &Deletes,
    deep: bool,
) -> (usize, usize) {
    let records = records(server);
    for id in &deletes.done {
        assert!(!item_exists(server, id), "item {id} deleted (204) is back");
    }
    let gone: BTreeSet<&String> = deletes
        .done
        .iter()
        .chain(deletes.unknown.iter().filter(|id| !item_exists(server, id)))
        .collect();
    for s in sent {
        if let Some((correlation, ids)) = &s.ack {
            let record = records
                .get(correlation)
                .unwrap_or_else(|| panic!("acknowledged request {} ({correlation}) lost", s.tag));
            assert_eq!(
                &stored_ids(record),
                ids,
                "request {}: items of its record",
                s.tag
            );
            assert_eq!(
                ids.len(),
                s.items,
                "request {}: all items acknowledged",
                s.tag
            );
        }
    }
    let total: usize = records
        .values()
        .flat_map(stored_ids)
        .filter(|id| !gone.contains(id))
        .count();
    let alice = server.folder_count(token, ALICE, FOLDER) as usize;
    let bob = server.folder_count(token, BOB, FOLDER) as usize;
    assert_eq!(
        alice, total,
        "alice's copies == items of all records less those deleted (no half-stored request)"
    );
    assert_eq!(
        bob, total,
        "bob's copies == items of all records less those deleted (no half-stored request)"
    );
    assert_eq!(
        search_total(server),
        alice + bob,
        "the search index finds exactly the stored copies"
    );
    // Attachment bytes (files beside the store): of every acknowledged item at the end, of the
    // last requests acknowledged before the kill after each restart.
    let acknowledged = sent.iter().rev().filter(|s| s.ack.is_some());
    for s in acknowledged.take(if deep { usize::MAX } else { 24 }) {
        let Some((_, ids)) = &s.ack else { continue };
        for (i, id) in ids.iter().enumerate() {
            if !gone.contains(id) {
                assert!(
                    server.attachment(id, 0) == attachment(&s.tag, i),
                    "request {}: attachment bytes of item {id}",
                    s.tag
                );
            }
        }
    }
    if deep {
        let by_tag: BTreeMap<&str, usize> =
            sent.iter().map(|s| (s.tag.as_str(), s.items)).collect();
        let alice_items = listed(server, ALICE);
        let bob_items = listed(server, BOB);
        for (correlation, record) in &records {
            let ids = stored_ids(record);
            let mut tags = BTreeSet::new();
            for id in ids.iter().filter(|id| !gone.contains(id)) {
                let subject = alice_items
                    .get(id)
                    .unwrap_or_else(|| panic!("item {id} of {correlation} not in alice's mailbox"));
                assert!(
                    bob_items.contains_key(id),
                    "item {id} of {correlation} has no copy for bob"
                );
                tags.insert(subject.split(" item ").next().unwrap().to_string());
            }
            // One request per record, with all of its items.
            assert!(
                tags.len() <= 1,
                "record {correlation} mixes requests: {tags:?}"
            );
            let Some(tag) = tags.into_iter().next() else {
                continue; // every item of the request was deleted
            };
            assert_eq!(
                by_tag.get(tag.as_str()),
                Some(&ids.len()),
                "record {correlation} ({tag}) is whole"
            );
        }
    }
    (records.len(), total)
}

#[test]
fn concurrent_ingestion_survives_repeated_sigkill() {
    let kills: usize = std::env::var("CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .max(1);
    let threads = 4;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::thread_rng();
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let deletes: Arc<Mutex<Deletes>> = Arc::default();
    let started = Instant::now();
    let mut server = Server::start_in(dir.path(), &["--no-tls"]);
    let mut token = server.token();
    for round in 0..kills {
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (stop, sent, token) = (stop.clone(), sent.clone(), token.clone());
                let url = format!("{}{SERVICE_PATH}", server.url);
                std::thread::spawn(move || {
                    let client = client_for(None);
                    let mut rng = rand::thread_rng();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let tag = format!("crash-r{round}-t{t}-n{n}");
                        n += 1;
                        let items = rng.gen_range(1..=8);
                        let response = client
                            .post(&url)
                            .bearer_auth(&token)
                            .header("Content-Type", "text/xml; charset=utf-8")
                            .timeout(Duration::from_secs(20))
                            .body(batch(&tag, items))
                            .send();
                        let ack = match response {
                            Ok(response) if response.status() == 200 => {
                                let reply = EwsReply::from(response);
                                reply.correlation_id().map(|c| (c, reply.item_ids()))
                            }
                            _ => None,
                        };
                        let failed = ack.is_none();
                        sent.lock().unwrap().push(Sent { tag, items, ack });
                        if failed {
                            // The server is gone (killed): stop this round.
                            break;
                        }
                    }
                })
            })
            .collect();
        let deleter = {
            let (stop, sent, deletes) = (stop.clone(), sent.clone(), deletes.clone());
            let url = server.url.clone();
            let admin_key = server.admin_key.clone();
            std::thread::spawn(move || {
                let client = client_for(None);
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(15));
                    // The oldest acknowledged item not deleted yet.
                    let next = {
                        let sent = sent.lock().unwrap();
                        let deletes = deletes.lock().unwrap();
                        sent.iter()
                            .filter_map(|s| s.ack.as_ref())
                            .flat_map(|(_, ids)| ids.iter())
                            .find(|id| {
                                !deletes.done.contains(*id) && !deletes.unknown.contains(*id)
                            })
                            .cloned()
                    };
                    let Some(id) = next else {
                        continue;
                    };
                    deletes.lock().unwrap().unknown.insert(id.clone());
                    let answer = client
                        .delete(format!("{url}/api/tenants/{TENANT}/items/{id}"))
                        .bearer_auth(&admin_key)
                        .timeout(Duration::from_secs(20))
                        .send();
                    match answer {
                        Ok(response) if response.status() == 204 => {
                            let mut deletes = deletes.lock().unwrap();
                            deletes.unknown.remove(&id);
                            deletes.done.insert(id);
                        }
                        Ok(response) => {
                            panic!("DELETE item {id}: {}", response.status())
                        }
                        // Cut off by the kill: stays unknown.
                        Err(_) => break,
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(rng.gen_range(50..500)));
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for handle in handles {
            handle.join().unwrap();
        }
        deleter.join().unwrap();
        server = Server::start_in(dir.path(), &["--no-tls"]);
        token = server.token();
        let sent = sent.lock().unwrap();
        let deletes = deletes.lock().unwrap();
        let (records, items) = verify(&server, &token, &sent, &deletes, round + 1 == kills);
        let acked = sent.iter().filter(|s| s.ack.is_some()).count();
        eprintln!(
            "round {round}: {} requests sent, {acked} acknowledged, {records} records, {items} items, {} deleted, {} deletes cut off ({:?})",
            sent.len(),
            deletes.done.len(),
            deletes.unknown.len(),
            started.elapsed()
        );
    }
    let sent = sent.lock().unwrap();
    let acked = sent.iter().filter(|s| s.ack.is_some()).count();
    assert!(acked > 0, "some requests were acknowledged");
    let mut deletes = deletes.lock().unwrap();
    assert!(!deletes.done.is_empty(), "some deletes were acknowledged");
    // Without a restart too: deletes are in the index as soon as they are answered.
    let live: Vec<String> = sent
        .iter()
        .filter_map(|s| s.ack.as_ref())
        .flat_map(|(_, ids)| ids.iter())
        .filter(|id| !deletes.done.contains(*id) && !deletes.unknown.contains(*id))
        .take(5)
        .cloned()
        .collect();
    for id in live {
        let status = server
            .admin(
                reqwest::Method::DELETE,
                &format!("/api/tenants/{TENANT}/items/{id}"),
            )
            .send()
            .expect("delete")
            .status();
        assert_eq!(status, 204, "DELETE item {id}");
        deletes.done.insert(id);
    }
    verify(&server, &token, &sent, &deletes, false);
    eprintln!(
        "{kills} SIGKILLs, {} requests, {acked} acknowledged and verified, in {:?}",
        sent.len(),
        started.elapsed()
    );
}

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &["--no-tls"]);
    let token = server.token();
    let in_flight = 6;
    let ready = Arc::new(std::sync::Barrier::new(in_flight + 1));
    let go = Arc::new(std::sync::Barrier::new(in_flight + 1));
    let handles: Vec<_> = (0..in_flight)
        .map(|t| {
            let (ready, go, token, addr) = (ready.clone(), go.clone(), token.clone(), server.addr());
            std::thread::spawn(move || {
                let body = batch(&format!("term-{t}"), 5);
                let mut stream = std::net::TcpStream::connect(addr).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                let head = format!(
                    "POST {SERVICE_PATH} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes()).unwrap();
                let (first, rest) = body.as_bytes().split_at(body.len() / 2);
                stream.write_all(first).unwrap();
                ready.wait();
                // SIGTERM is sent now: the rest of the body arrives after it.
                go.wait();
                std::thread::sleep(Duration::from_millis(200));
                stream.write_all(rest).unwrap();
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer);
                String::from_utf8_lossy(&answer).into_owned()
            })
        })
        .collect();
    ready.wait();
    // Let the server accept the connections and reach the handlers (they wait for the body).
    std::thread::sleep(Duration::from_millis(500));
    server.send_sigterm();
    go.wait();
    let answers: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for answer in &answers {
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "in-flight request answered: {answer}"
        );
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("x-ingestioncorrelationid"),
            "{answer}"
        );
    }
    let status = server
        .wait_exit(Duration::from_secs(60))
        .expect("exited after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    let server = Server::start_in(dir.path(), &["--no-tls"]);
    let token = server.token();
    assert_eq!(
        server.folder_count(&token, ALICE, FOLDER),
        (in_flight * 5) as u64
    );
    assert_eq!(
        server.folder_count(&token, BOB, FOLDER),
        (in_flight * 5) as u64
    );
}
