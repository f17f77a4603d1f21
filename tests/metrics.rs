//! `GET /metrics`: Prometheus text with requests by operation and outcome, items stored and
//! rejected by reason, the latency histogram and open connections.

mod common;

use common::*;

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_count_requests_items_latency_and_connections() {
    let server = Server::start(&[]);
    // Before any request, the CreateItem series exist at zero (rate() and alerts need them).
    let text = server.get("/metrics").send().unwrap().text().unwrap();
    for outcome in ["Success", "PartialSuccess", "Failed"] {
        let series =
            format!("ingest_requests_total{{operation=\"CreateItem\",outcome=\"{outcome}\"}} 0");
        assert!(text.lines().any(|l| l == series), "{series} not in {text}");
    }
    let token = server.token();
    let good = Msg::default().xml();
    let bad = Msg {
        from: None,
        ..Msg::default()
    }
    .xml();
    let reply = server.ews(&token, &create_item(&[good.clone(), bad]));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = server.ews(&token, &create_item(&[good.clone(), good]));
    assert_eq!(reply.status, 200);
    // An item whose error message echoes client text shaped like a successful response
    // message: counted as rejected all the same (the counts come from the results, not from
    // scanning the reply).
    let echoed = Msg {
        class: Some("IPM.X ResponseMessage ResponseClass=\"Success".into()),
        from: None,
        ..Msg::default()
    }
    .xml();
    let reply = server.ews(&token, &create_item(&[echoed]));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply
            .body
            .contains("<m:CreateItemResponseMessage ResponseClass=\"Error\">")
            && !reply
                .body
                .contains("<m:CreateItemResponseMessage ResponseClass=\"Success\">"),
        "{}",
        reply.body
    );
    let refused = server.ews("not-a-token", &create_item(&[Msg::default().xml()]));
    assert_eq!(refused.status, 401);
    let schema = server.ews(&token, "<nope/>");
    assert_eq!(schema.status, 500);
    server.folder_count(&token, "alice@contoso.com", "recoverableitemspurges");

    let response = server.get("/metrics").send().unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().unwrap();
    eprintln!("{text}");
    let value = |name: &str| metric(&text, name).unwrap_or_else(|| panic!("{name} in {text}"));
    assert_eq!(
        value("ingest_requests_total{operation=\"CreateItem\",outcome=\"PartialSuccess\"}"),
        1.0
    );
    assert_eq!(
        value("ingest_requests_total{operation=\"CreateItem\",outcome=\"Failed\"}"),
        1.0
    );
    assert_eq!(
        value("ingest_requests_total{operation=\"CreateItem\",outcome=\"Success\"}"),
        1.0
    );
    assert_eq!(
        value("ingest_requests_total{operation=\"Unknown\",outcome=\"AuthFailed\"}"),
        1.0
    );
    assert_eq!(
        value("ingest_requests_total{operation=\"GetFolder\",outcome=\"Success\"}"),
        1.0
    );
    assert!(
        text.contains("outcome=\"ErrorInvalidRequest\"")
            || text.contains("outcome=\"ErrorSchemaValidation\""),
        "{text}"
    );
    assert_eq!(value("ingest_items_stored_total"), 3.0);
    assert_eq!(
        value("ingest_items_rejected_total{reason=\"ErrorItemSave\"}"),
        2.0
    );
    assert_eq!(value("ingest_request_duration_seconds_count"), 6.0);
    assert_eq!(
        value("ingest_request_duration_seconds_bucket{le=\"+Inf\"}"),
        6.0
    );
    assert!(value("ingest_request_duration_seconds_sum") > 0.0);
    assert!(
        value("ingest_open_connections") >= 1.0,
        "this request's connection is open"
    );
    assert!(value("ingest_connections_total") >= 1.0);
    assert!(
        value("ingest_store_size_bytes") > 0.0,
        "the store has the fixtures and the items"
    );
    assert!(value("ingest_search_backlog_items") >= 0.0);

    // A search indexes the backlog first: nothing waits after it.
    let searched = server
        .admin(
            reqwest::Method::GET,
            "/api/tenants/contoso.onmicrosoft.com/search?query=*",
        )
        .send()
        .unwrap();
    assert_eq!(searched.status(), 200);
    let text = server.get("/metrics").send().unwrap().text().unwrap();
    assert_eq!(metric(&text, "ingest_search_backlog_items"), Some(0.0));
    assert!(metric(&text, "ingest_search_commits_total").is_some_and(|n| n >= 1.0));
}
