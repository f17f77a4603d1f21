//! Native connectors over the wire: staging (JSON and .eml, durable, checked whole), imports
//! into `Inbox/<Source>` of the mapped participants, fan-out accounting (imported, partially
//! imported, skipped duplicates, failed with reasons), the CSV log, the scheduler, reset.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const BASE: &str = "/api/compliance/connectors";

fn native(server: &Server, name: &str, kind: &str, extra: Value) -> String {
    let mut body = json!({"tenant": TENANT, "name": name, "kind": kind});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let (status, value) = call(server, Method::POST, BASE, Some(body));
    assert_eq!(status, 201, "{value}");
    value["id"].as_str().expect("id").to_string()
}

fn stage(server: &Server, id: &str, items: Value) -> (u16, Value) {
    call(
        server,
        Method::POST,
        &format!("{BASE}/{id}/staging"),
        Some(items),
    )
}

/// Stages `items` and asserts they were accepted (202).
fn staged_ok(server: &Server, id: &str, items: Value) -> Value {
    let (status, value) = stage(server, id, items);
    assert_eq!(status, 202, "{value}");
    value
}

fn run(server: &Server, id: &str) -> Value {
    let (status, value) = call(server, Method::POST, &format!("{BASE}/{id}/run"), None);
    assert_eq!(status, 200, "{value}");
    value
}

fn pending(server: &Server, id: &str) -> u64 {
    let (status, value) = call(server, Method::GET, &format!("{BASE}/{id}/staging"), None);
    assert_eq!(status, 200, "{value}");
    value["pendingItems"].as_u64().expect("pendingItems")
}

fn items_in(server: &Server, upn: &str, folder: &str) -> Vec<Value> {
    let path = format!("/api/tenants/{TENANT}/mailboxes/{upn}/items?folder={folder}");
    let (status, value) = call(server, Method::GET, &path, None);
    assert_eq!(status, 200, "{value}");
    value["value"].as_array().expect("items").clone()
}

fn log(server: &Server, id: &str) -> (String, String) {
    let response = server
        .admin(Method::GET, &format!("{BASE}/{id}/log"))
        .send()
        .expect("log");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/csv"));
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .expect("ascii")
        .to_string();
    (disposition, response.text().expect("csv"))
}

fn assert_invariant(import: &Value) {
    let sum = [
        "importedSuccessfully",
        "partiallyImported",
        "skipped",
        "failed",
    ]
    .iter()
    .map(|k| import[k].as_u64().expect("count"))
    .sum::<u64>();
    assert_eq!(
        import["itemsAvailableForImport"].as_u64(),
        Some(sum),
        "{import}"
    );
}

fn item(id: Option<&str>, subject: &str, email: &[&str]) -> Value {
    let mut item = json!({
        "from": email[0],
        "to": email[1..],
        "subject": subject,
        "body": format!("body of {subject}"),
        "date": "2026-11-20T10:00:00Z",
        "email": email,
    });
    if let Some(id) = id {
        item["id"] = json!(id);
    }
    item
}

#[test]
fn an_import_fans_out_to_inbox_source_and_counts_every_participant() {
    let server = Server::start(&[]);
    let id = native(
        &server,
        "Pivot desk",
        "Pivot",
        json!({"mapping": {"explicit": {"pivot-user-7": "carol@contoso.com"}}}),
    );
    let mut partial = item(None, "with a lost file", &["alice@contoso.com"]);
    partial["attachments"] = json!([
        {"name": "kept.txt", "contentType": "text/plain", "contentBase64": "aGVsbG8="},
        {"name": "lost.pdf"}
    ]);
    let batch = json!([
        item(
            Some("p-1"),
            "deal chat",
            &[
                "alice@contoso.com",
                "bob@contoso.com",
                "stranger@else.example"
            ]
        ),
        item(
            Some("p-2"),
            "mapped by table",
            &["pivot-user-7", "dave@contoso.com"]
        ),
        partial.clone(),
    ]);
    let (status, staged) = stage(&server, &id, batch);
    assert_eq!(status, 202, "{staged}");
    assert_eq!(
        (
            staged["stagedItems"].as_u64(),
            staged["pendingItems"].as_u64()
        ),
        (Some(3), Some(3))
    );
    // Staged is not imported: nothing in any mailbox yet.
    assert!(items_in(&server, "alice@contoso.com", "Inbox/Pivot").is_empty());

    let outcome = run(&server, &id);
    let import = &outcome["import"];
    assert_eq!(outcome["pendingItems"], 0);
    assert_eq!(import["itemsAvailableFromSource"], 3);
    // p-1: alice, bob imported, stranger unmapped; p-2: carol (by the table) imported, dave
    // has no active mailbox; the third: alice, partially (an attachment was not supplied).
    assert_eq!(import["importedSuccessfully"], 3);
    assert_eq!(import["partiallyImported"], 1);
    assert_eq!(import["skipped"], 0);
    assert_eq!(import["failed"], 2);
    assert_eq!(import["itemsAvailableForImport"], 6);
    assert_invariant(import);
    // The same counts in /metrics (native imports do not go through the endpoint's counters).
    let metrics = server.get("/metrics").send().unwrap().text().unwrap();
    for line in [
        "ingest_connector_imports_total 1",
        "ingest_connector_items_total{outcome=\"imported\"} 3",
        "ingest_connector_items_total{outcome=\"partiallyImported\"} 1",
        "ingest_connector_items_total{outcome=\"skipped\"} 0",
        "ingest_connector_items_total{outcome=\"failed\"} 2",
        "ingest_items_stored_total 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in {metrics}"
        );
    }
    let failed = import["failedItems"].as_array().expect("failed items");
    let stranger = failed
        .iter()
        .find(|f| f["sourceUser"] == "stranger@else.example")
        .expect("stranger listed");
    assert_eq!(stranger["sourceId"], "p-1");
    assert_eq!(stranger["code"], "UserNotMapped");
    assert!(stranger["user"].is_null());
    let dave = failed
        .iter()
        .find(|f| f["sourceUser"] == "dave@contoso.com")
        .expect("dave listed");
    assert_eq!(
        (dave["code"].as_str(), dave["user"].as_str()),
        (Some("MailboxNotActive"), Some("dave@contoso.com"))
    );

    let alice = items_in(&server, "alice@contoso.com", "Inbox/Pivot");
    let subjects: Vec<&str> = alice.iter().filter_map(|i| i["subject"].as_str()).collect();
    assert_eq!(alice.len(), 2, "{subjects:?}");
    assert!(subjects.contains(&"deal chat") && subjects.contains(&"with a lost file"));
    assert_eq!(alice[0]["itemClass"], "IPM.NOTE.Pivot");
    assert_eq!(items_in(&server, "bob@contoso.com", "Inbox/Pivot").len(), 1);
    assert_eq!(
        items_in(&server, "carol@contoso.com", "Inbox/Pivot").len(),
        1
    );
    // Native imports never land in Purges or the catch-all mailbox.
    assert!(items_in(&server, "alice@contoso.com", "Recoverable Items/Purges").is_empty());
    // The kept attachment is there, the lost one is not.
    let partial_item = alice
        .iter()
        .find(|i| i["subject"] == "with a lost file")
        .expect("item");
    let (_, details) = call(
        &server,
        Method::GET,
        &format!(
            "/api/tenants/{TENANT}/items/{}",
            partial_item["itemId"].as_str().expect("id")
        ),
        None,
    );
    let names: Vec<&str> = details["attachments"]
        .as_array()
        .expect("attachments")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, ["kept.txt"]);

    // Imported items are searchable at once.
    let (status, hits) = call(
        &server,
        Method::POST,
        &format!("/api/tenants/{TENANT}/search"),
        Some(json!({"query": "subject:\"deal chat\""})),
    );
    assert_eq!(status, 200, "{hits}");
    assert_eq!(hits["total"], 2, "{hits}");

    // The same deliveries again (p-1 by its id, the third by its content): skipped, not stored
    // twice; p-3 is new: imported.
    let (status, _) = stage(
        &server,
        &id,
        json!([
            item(
                Some("p-1"),
                "deal chat",
                &[
                    "alice@contoso.com",
                    "bob@contoso.com",
                    "stranger@else.example"
                ]
            ),
            partial,
            item(Some("p-3"), "new one", &["bob@contoso.com"]),
        ]),
    );
    assert_eq!(status, 202);
    let second = run(&server, &id);
    let import = &second["import"];
    assert_eq!(import["itemsAvailableFromSource"], 3);
    assert_eq!(import["skipped"], 4, "{import}");
    assert_eq!(import["importedSuccessfully"], 1);
    assert_eq!(import["failed"], 0);
    assert_invariant(import);
    assert_eq!(
        items_in(&server, "alice@contoso.com", "Inbox/Pivot").len(),
        2
    );
    assert_eq!(items_in(&server, "bob@contoso.com", "Inbox/Pivot").len(), 2);

    // Status and history agree with the imports.
    let (_, status) = call(&server, Method::GET, &format!("{BASE}/{id}/status"), None);
    assert_eq!(status["state"], "Active");
    assert_eq!(status["imports"], 2);
    assert_eq!(status["itemsImported"], 4);
    assert_eq!(status["itemsPartiallyImported"], 1);
    assert_eq!(status["itemsSkipped"], 4);
    assert_eq!(status["errors"], 2);
    let (_, history) = call(&server, Method::GET, &format!("{BASE}/{id}/history"), None);
    let records = history["value"].as_array().expect("history");
    assert_eq!(records.len(), 2);
    records.iter().for_each(assert_invariant);

    // The journal tells about the import too.
    let journal = server.ingestion(import["id"].as_str().expect("import id"));
    assert_eq!(journal["outcome"], "Success", "{journal}");

    // The CSV log: both imports, failed-item rows, and the six previous days without imports.
    let (disposition, csv) = log(&server, &id);
    assert!(
        disposition.starts_with("attachment; filename=\"Pivot_desk-log-"),
        "{disposition}"
    );
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("Record type,Import completion time (UTC),Import id,"));
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("Import,")).count(),
        2,
        "{csv}"
    );
    let failed_rows: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("Failed item,"))
        .collect();
    assert_eq!(failed_rows.len(), 2, "{csv}");
    assert!(
        failed_rows
            .iter()
            .any(|l| l.contains(",p-1,stranger@else.example,,")),
        "{csv}"
    );
    assert!(
        failed_rows
            .iter()
            .any(|l| l.contains(",p-2,dave@contoso.com,dave@contoso.com,")),
        "{csv}"
    );
    let empty_days: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("No items ingested on "))
        .collect();
    assert_eq!(empty_days.len(), 6, "{csv}");
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1))
        .format("%m/%d/%Y")
        .to_string();
    assert_eq!(
        **empty_days[0],
        format!("No items ingested on {yesterday}.")
    );
}

#[test]
fn eml_deliveries_oversize_items_and_refused_deliveries() {
    let server = Server::start(&[]);
    let id = native(&server, "Mail archive", "EML", json!({}));
    let eml = "From: Alice <alice@contoso.com>\r\nTo: bob@contoso.com, outsider@else.example\r\n\
               Subject: quarterly numbers\r\nDate: Fri, 20 Nov 2026 10:00:00 +0000\r\n\
               Message-ID: <q3@archive.example>\r\nContent-Type: text/plain\r\n\r\nnumbers\r\n";
    let response = server
        .admin(Method::POST, &format!("{BASE}/{id}/staging"))
        .header("content-type", "message/rfc822")
        .body(eml)
        .send()
        .expect("stage eml");
    assert_eq!(response.status(), 202);

    // An item over 10 MB is staged (the provider delivered it) and fails at import.
    let mut big = item(
        Some("big-1"),
        "huge",
        &["alice@contoso.com", "carol@contoso.com"],
    );
    big["body"] = json!("x".repeat(10 * 1024 * 1024 + 1));
    let (status, value) = stage(&server, &id, big);
    assert_eq!(status, 202, "{value}");
    assert_eq!(pending(&server, &id), 2);

    let import = run(&server, &id)["import"].clone();
    assert_eq!(import["itemsAvailableFromSource"], 2);
    assert_eq!(import["importedSuccessfully"], 2, "{import}"); // alice and bob get the .eml
    assert_eq!(import["failed"], 3); // outsider unmapped; both participants of the big item
    assert_invariant(&import);
    let too_large: Vec<&Value> = import["failedItems"]
        .as_array()
        .expect("failed")
        .iter()
        .filter(|f| f["code"] == "ItemTooLarge")
        .collect();
    assert_eq!(too_large.len(), 2);
    assert!(too_large[0]["reason"]
        .as_str()
        .expect("reason")
        .contains("10 MB"));
    let bob = items_in(&server, "bob@contoso.com", "Inbox/EML");
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0]["subject"], "quarterly numbers");
    assert!(items_in(&server, "carol@contoso.com", "Inbox/EML").is_empty());

    // Refused deliveries stage nothing.
    let (status, value) = stage(
        &server,
        &id,
        json!([item(Some("ok"), "fine", &["alice@contoso.com"]), {"from": "a@b.c"}]),
    );
    assert_eq!(status, 400);
    assert!(
        value["error"]["message"]
            .as_str()
            .expect("message")
            .contains("item 1:"),
        "{value}"
    );
    for (content_type, body, expected) in [
        ("application/json", "{not json", 400),
        ("message/rfc822", "this is not a message", 400),
        ("text/plain", "hello", 415),
    ] {
        let response = server
            .admin(Method::POST, &format!("{BASE}/{id}/staging"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .expect("stage");
        assert_eq!(response.status(), expected, "{content_type}: {body}");
    }
    assert_eq!(pending(&server, &id), 0);

    // Nothing staged: a run imports nothing and records no import.
    let outcome = run(&server, &id);
    assert!(outcome["import"].is_null());
    let (_, history) = call(&server, Method::GET, &format!("{BASE}/{id}/history"), None);
    assert_eq!(history["value"].as_array().map(Vec::len), Some(1));

    // A paused connector keeps its staging area but does not import on demand.
    let (status, _) = call(
        &server,
        Method::PUT,
        &format!("{BASE}/{id}"),
        Some(json!({"paused": true})),
    );
    assert_eq!(status, 200);
    staged_ok(
        &server,
        &id,
        item(Some("later"), "later", &["alice@contoso.com"]),
    );
    let (status, value) = call(&server, Method::POST, &format!("{BASE}/{id}/run"), None);
    assert_eq!(status, 409, "{value}");
    assert!(value["error"]["message"]
        .as_str()
        .expect("message")
        .contains("paused"));
    assert_eq!(pending(&server, &id), 1);

    // Partner connectors have no staging area and nothing to run.
    let (status, partner) = call(
        &server,
        Method::POST,
        BASE,
        Some(json!({"tenant": TENANT, "name": "Feed", "kind": "partner", "appId": APP_ID})),
    );
    assert_eq!(status, 201);
    let partner = partner["id"].as_str().expect("id");
    assert_eq!(
        stage(&server, partner, item(None, "x", &["alice@contoso.com"])).0,
        409
    );
    let (status, _) = call(
        &server,
        Method::POST,
        &format!("{BASE}/{partner}/run"),
        None,
    );
    assert_eq!(status, 409);
}

fn wait_for_import(server: &Server, id: &str, imports: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, status) = call(server, Method::GET, &format!("{BASE}/{id}/status"), None);
        if status["imports"].as_u64() >= Some(imports) {
            return status;
        }
        assert!(Instant::now() < deadline, "no scheduled import: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_scheduler_imports_when_a_connector_is_due_and_not_paused() {
    let server = Server::start(&[]);
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(1)).to_rfc3339();
    let id = native(
        &server,
        "Symphony rooms",
        "Symphony",
        json!({"schedule": {"intervalMinutes": 60, "nextRunDateTime": soon}}),
    );
    let paused = native(
        &server,
        "Paused feed",
        "Slack",
        json!({"paused": true, "schedule": {"nextRunDateTime": soon}}),
    );
    // Created without a date, a connector runs one interval (24 hours) after its creation.
    let later = native(&server, "Daily", "Zoom", json!({}));
    for connector in [&id, &paused, &later] {
        staged_ok(
            &server,
            connector,
            item(Some("s-1"), "room talk", &["alice@contoso.com"]),
        );
    }
    wait_for_import(&server, &id, 1);
    assert_eq!(
        items_in(&server, "alice@contoso.com", "Inbox/Symphony").len(),
        1
    );
    assert_eq!(pending(&server, &id), 0);
    let (_, connector) = call(&server, Method::GET, &format!("{BASE}/{id}"), None);
    let last = chrono::DateTime::parse_from_rfc3339(
        connector["schedule"]["lastRunDateTime"]
            .as_str()
            .expect("last run"),
    )
    .expect("date");
    let next = chrono::DateTime::parse_from_rfc3339(
        connector["schedule"]["nextRunDateTime"]
            .as_str()
            .expect("next run"),
    )
    .expect("date");
    assert_eq!(next - last, chrono::Duration::minutes(60));

    // The scheduler has ticked past the paused connector's due time: nothing imported.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(pending(&server, &paused), 1);
    assert_eq!(pending(&server, &later), 1);
    let (_, daily) = call(&server, Method::GET, &format!("{BASE}/{later}"), None);
    let created =
        chrono::DateTime::parse_from_rfc3339(daily["createdDateTime"].as_str().expect("created"))
            .expect("date");
    let next = chrono::DateTime::parse_from_rfc3339(
        daily["schedule"]["nextRunDateTime"].as_str().expect("next"),
    )
    .expect("date");
    assert_eq!(next - created, chrono::Duration::hours(24));

    // Resumed, it is due (its date passed while paused) and imports at the next tick.
    let (status, _) = call(
        &server,
        Method::PUT,
        &format!("{BASE}/{paused}"),
        Some(json!({"paused": false})),
    );
    assert_eq!(status, 200);
    wait_for_import(&server, &paused, 1);
    assert_eq!(
        items_in(&server, "alice@contoso.com", "Inbox/Slack").len(),
        1
    );
}

#[test]
fn staged_and_imported_items_survive_kill_and_reset_forgets_imports() {
    let dir = tempfile::tempdir().expect("dir");
    let mut server = Server::start_in(dir.path(), &[]);
    let id = native(&server, "Chat", "CellTrust", json!({}));
    staged_ok(
        &server,
        &id,
        item(Some("c-1"), "first", &["alice@contoso.com"]),
    );
    run(&server, &id);
    staged_ok(
        &server,
        &id,
        item(Some("c-2"), "second", &["bob@contoso.com"]),
    );
    server.kill();

    let server = Server::start_in(dir.path(), &[]);
    assert_eq!(pending(&server, &id), 1);
    assert_eq!(
        items_in(&server, "alice@contoso.com", "Inbox/CellTrust").len(),
        1
    );
    // What was imported before the crash is still known: delivering it again is a duplicate.
    staged_ok(
        &server,
        &id,
        item(Some("c-1"), "first", &["alice@contoso.com"]),
    );
    let import = run(&server, &id)["import"].clone();
    assert_eq!(
        (
            import["importedSuccessfully"].as_u64(),
            import["skipped"].as_u64()
        ),
        (Some(1), Some(1))
    );

    let (status, _) = call(&server, Method::POST, "/api/reset", None);
    assert_eq!(status, 200);
    let (_, after) = call(&server, Method::GET, &format!("{BASE}/{id}"), None);
    assert_eq!(after["status"]["imports"], 0);
    assert_eq!(after["pendingItems"], 0);
    let (_, history) = call(&server, Method::GET, &format!("{BASE}/{id}/history"), None);
    assert_eq!(history["value"].as_array().map(Vec::len), Some(0));
    // After a reset the same item is new again.
    staged_ok(
        &server,
        &id,
        item(Some("c-1"), "first", &["alice@contoso.com"]),
    );
    assert_eq!(run(&server, &id)["import"]["importedSuccessfully"], 1);
}

/// Two participants that are one user (two of Alice's addresses) make one copy, and both count
/// as imported, as both count as skipped when the source delivers the item again: the figures
/// of a run and of its re-delivery agree.
#[test]
fn two_addresses_of_one_user_count_as_two_participants_imported_then_skipped() {
    let server = Server::start(&[]);
    let id = native(&server, "Pivot twice", "Pivot", json!({}));
    let twice = item(
        Some("t-1"),
        "to both of her addresses",
        &["alice@contoso.com", "alice.wilber@contoso.com"],
    );
    for (run_number, imported, skipped) in [(1, 2, 0), (2, 0, 2)] {
        let (status, staged) = stage(&server, &id, json!([twice.clone()]));
        assert_eq!(status, 202, "{staged}");
        let outcome = run(&server, &id);
        let import = &outcome["import"];
        assert_eq!(
            import["importedSuccessfully"], imported,
            "run {run_number}: {import}"
        );
        assert_eq!(import["skipped"], skipped, "run {run_number}: {import}");
        assert_eq!(
            import["itemsAvailableForImport"], 2,
            "run {run_number}: {import}"
        );
        assert_invariant(import);
    }
    assert_eq!(
        items_in(&server, "alice@contoso.com", "Inbox/Pivot").len(),
        1
    );
}
