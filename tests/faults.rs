//! Faults on demand (`/api/faults`), proven over the wire against the real server: each fault
//! kind and its answer, count expiry, probability, matching by tenant/app/operation, nothing
//! stored for a faulted request, the journal entry, and the admin key.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const MAILBOX: &str = "alice@contoso.com";
const FOLDER: &str = "recoverableitemspurges";

/// Adds a rule; its id.
fn add_rule(server: &Server, rule: Value) -> String {
    let (status, body) = call(server, Method::POST, "/api/faults", Some(rule));
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().expect("id").to_string()
}

fn one_item() -> String {
    create_item(&[Msg::default().xml()])
}

fn stored(server: &Server, token: &str) -> u64 {
    server.folder_count(token, MAILBOX, FOLDER)
}

#[test]
fn server_busy_is_a_soap_fault_with_back_off_stores_nothing_and_is_journaled() {
    let server = Server::start(&[]);
    let token = server.token();
    let before = stored(&server, &token);
    add_rule(
        &server,
        json!({"operation": "CreateItem", "count": 1,
               "fault": {"kind": "serverBusy", "backOffMilliseconds": 7000}}),
    );
    let reply = server.ews(&token, &one_item());
    assert_eq!(reply.status, 500, "{}", reply.body);
    assert_eq!(
        reply.headers.get("content-type").unwrap(),
        "text/xml; charset=utf-8"
    );
    assert!(
        reply.body.contains(">a:ErrorServerBusy</faultcode>"),
        "{}",
        reply.body
    );
    assert!(reply.body.contains(
        "<faultstring xml:lang=\"en-US\">The server cannot service this request right now. Try again later.</faultstring>"
    ));
    assert!(reply.body.contains(">ErrorServerBusy</e:ResponseCode>"));
    assert!(reply
        .body
        .contains("<t:MessageXml xmlns:t=\"http://schemas.microsoft.com/exchange/services/2006/types\"><t:Value Name=\"BackOffMilliseconds\">7000</t:Value></t:MessageXml>"));
    let correlation = reply.correlation_id().expect("correlation id");
    assert_eq!(stored(&server, &token), before, "nothing stored");

    let record = server.ingestion(&correlation);
    assert_eq!(record["outcome"], "Faulted");
    assert_eq!(record["httpStatus"], 500);
    assert_eq!(record["operation"], "CreateItem");
    assert_eq!(record["appId"], APP_ID);
    assert!(record["items"].as_array().unwrap().is_empty());
    assert!(record["error"].as_str().unwrap().contains("serverBusy"));
    let newest = &server.journal(5)[0];
    assert_eq!(newest["correlationId"], correlation.as_str());
    assert_eq!(newest["outcome"], "Faulted");

    // The rule has expired: the retry goes through.
    let reply = server.ews(&token, &one_item());
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.item_ids().len(), 1);
    assert_eq!(stored(&server, &token), before + 1);
}

/// An oversized batch is refused as such (500 `ErrorInvalidRequest`, too many items) before
/// any fault rule sees it: a per-item fault would answer one message per item, a reply a
/// hundred times the request's size.
#[test]
fn a_batch_over_the_limit_is_refused_before_faults_apply() {
    let server = Server::start(&["--max-items-per-request", "3"]);
    let token = server.token();
    add_rule(
        &server,
        json!({"operation": "CreateItem", "fault": {"kind": "itemServerBusy"}}),
    );
    let reply = server.ews(&token, &create_item(&vec![Msg::default().xml(); 4]));
    assert_eq!(reply.status, 500, "{}", reply.body);
    assert!(reply.body.contains("at most 3 items"), "{}", reply.body);
    assert!(!reply.body.contains("ErrorServerBusy"), "{}", reply.body);
    let faults: Value = server
        .admin(Method::GET, "/api/faults")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(faults["value"][0]["injected"], 0, "{faults}");
}

#[test]
fn item_server_busy_fails_every_item_in_a_200_reply() {
    let server = Server::start(&[]);
    let token = server.token();
    let before = stored(&server, &token);
    add_rule(
        &server,
        json!({"operation": "CreateItem",
               "fault": {"kind": "itemServerBusy", "backOffMilliseconds": 1234}}),
    );
    let reply = server.ews(
        &token,
        &create_item(&[Msg::default().xml(), Msg::default().xml()]),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let messages = reply.messages();
    assert_eq!(messages.len(), 2, "{}", reply.body);
    for (class, code, text) in &messages {
        assert_eq!(class, "Error");
        assert_eq!(code, "ErrorServerBusy");
        assert_eq!(
            text,
            "The server cannot service this request right now. Try again later."
        );
    }
    assert_eq!(
        reply
            .body
            .matches(
                "<m:MessageXml><t:Value Name=\"BackOffMilliseconds\">1234</t:Value></m:MessageXml>"
            )
            .count(),
        2,
        "{}",
        reply.body
    );
    assert_eq!(stored(&server, &token), before);
    let record = server.ingestion(&reply.correlation_id().unwrap());
    assert_eq!(record["outcome"], "Faulted");
    assert_eq!(record["httpStatus"], 200);
}

#[test]
fn http_503_and_429_carry_retry_after() {
    let server = Server::start(&[]);
    let token = server.token();
    let before = stored(&server, &token);
    for (kind, status) in [("http503", 503), ("http429", 429)] {
        add_rule(
            &server,
            json!({"count": 1, "fault": {"kind": kind, "retryAfterSeconds": 3}}),
        );
        let reply = server.ews(&token, &one_item());
        assert_eq!(reply.status, status, "{kind}: {}", reply.body);
        assert_eq!(reply.headers.get("retry-after").unwrap(), "3");
        let record = server.ingestion(&reply.correlation_id().unwrap());
        assert_eq!(record["httpStatus"], status);
        assert!(record["error"].as_str().unwrap().contains(kind));
    }
    // Default Retry-After is 5 seconds.
    add_rule(&server, json!({"count": 1, "fault": {"kind": "http503"}}));
    let reply = server.ews(&token, &one_item());
    assert_eq!(reply.headers.get("retry-after").unwrap(), "5");
    assert_eq!(stored(&server, &token), before);
}

#[test]
fn latency_delays_then_the_request_proceeds() {
    let server = Server::start(&[]);
    let token = server.token();
    let before = stored(&server, &token);
    add_rule(
        &server,
        json!({"operation": "CreateItem", "fault": {"kind": "latency", "milliseconds": 400}}),
    );
    let started = Instant::now();
    let reply = server.ews(&token, &one_item());
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.item_ids().len(), 1);
    assert_eq!(stored(&server, &token), before + 1);
    // Latency combines with a fault that answers.
    add_rule(&server, json!({"count": 1, "fault": {"kind": "http429"}}));
    let started = Instant::now();
    let reply = server.ews(&token, &one_item());
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(reply.status, 429);
}

/// A client that goes away before the answer (here an HTTP/2 stream reset while an injected
/// latency runs) is counted in `/metrics` as outcome `Cancelled`, and the request is not
/// stored (it was cancelled before the store was reached).
#[test]
fn a_request_the_client_abandons_is_counted_as_cancelled() {
    let server = Server::start(&[]);
    let token = server.token();
    let before = stored(&server, &token);
    add_rule(
        &server,
        json!({"operation": "CreateItem", "count": 1, "fault": {"kind": "latency", "milliseconds": 3000}}),
    );
    let pem = std::fs::read(server.ca_cert.as_ref().expect("CA")).unwrap();
    let impatient = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(300))
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let sent = impatient
        .post(format!("{}{SERVICE_PATH}", server.url))
        .bearer_auth(&token)
        .header("Content-Type", "text/xml; charset=utf-8")
        .body(one_item())
        .send();
    assert!(sent.is_err(), "the client gave up");
    let cancelled = || {
        let text = server.get("/metrics").send().unwrap().text().unwrap();
        text.lines()
            .find(|l| {
                l.starts_with(
                    "ingest_requests_total{operation=\"CreateItem\",outcome=\"Cancelled\"}",
                )
            })
            .map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while cancelled().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(cancelled().as_deref(), Some("1"));
    std::thread::sleep(Duration::from_millis(3200));
    assert_eq!(stored(&server, &token), before, "nothing stored");
}

/// A client that speaks only HTTP/1.1, or only HTTP/2, and keeps no idle connections.
fn client(server: &Server, http2: bool) -> reqwest::blocking::Client {
    let pem = std::fs::read(server.ca_cert.as_ref().expect("CA")).unwrap();
    let builder = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .pool_max_idle_per_host(0);
    let builder = if http2 {
        builder.http2_prior_knowledge()
    } else {
        builder.http1_only()
    };
    builder.build().unwrap()
}

#[test]
fn drop_connection_closes_without_an_answer() {
    let server = Server::start(&[]);
    let token = server.token();
    let before = stored(&server, &token);
    for http2 in [false, true] {
        add_rule(
            &server,
            json!({"operation": "CreateItem", "count": 1, "fault": {"kind": "dropConnection"}}),
        );
        let client = client(&server, http2);
        let result = client
            .post(format!("{}{SERVICE_PATH}", server.url))
            .bearer_auth(&token)
            .header("Content-Type", "text/xml; charset=utf-8")
            .body(one_item())
            .send();
        match result {
            Err(e) => assert!(!e.is_timeout(), "http2={http2}: {e:?}"),
            Ok(response) => panic!(
                "http2={http2}: expected no answer, got {} {:?}",
                response.status(),
                response.text()
            ),
        }
        // The rule has expired: the same client goes through.
        let response = client
            .post(format!("{}{SERVICE_PATH}", server.url))
            .bearer_auth(&token)
            .header("Content-Type", "text/xml; charset=utf-8")
            .body(one_item())
            .send()
            .expect("answered");
        assert_eq!(response.status(), 200, "http2={http2}");
    }
    assert_eq!(stored(&server, &token), before + 2);
    let entries = server.journal(5);
    let dropped: Vec<&Value> = entries
        .iter()
        .filter(|e| e["outcome"] == "Faulted")
        .collect();
    assert_eq!(dropped.len(), 2, "{entries:?}");
    assert_eq!(dropped[0]["httpStatus"], 0);
    assert!(dropped[0]["error"]
        .as_str()
        .unwrap()
        .contains("dropConnection"));
}

#[test]
fn a_count_rule_faults_the_next_n_requests_then_expires() {
    let server = Server::start(&[]);
    let token = server.token();
    let id = add_rule(
        &server,
        json!({"operation": "CreateItem", "count": 3, "fault": {"kind": "serverBusy"}}),
    );
    let (status, rule) = call(&server, Method::GET, &format!("/api/faults/{id}"), None);
    assert_eq!(status, 200);
    assert_eq!(rule["remaining"], 3);
    for n in 0..3 {
        let reply = server.ews(&token, &one_item());
        assert_eq!(reply.status, 500, "request {n}");
        assert!(reply
            .body
            .contains("<t:Value Name=\"BackOffMilliseconds\">5000</t:Value>"));
        if n == 1 {
            let (_, rule) = call(&server, Method::GET, &format!("/api/faults/{id}"), None);
            assert_eq!(rule["remaining"], 1);
            assert_eq!(rule["injected"], 2);
        }
    }
    let reply = server.ews(&token, &one_item());
    assert_eq!(reply.status, 200, "{}", reply.body);
    let (status, list) = call(&server, Method::GET, "/api/faults", None);
    assert_eq!(status, 200);
    assert_eq!(list["value"], json!([]));
    let (status, _) = call(&server, Method::GET, &format!("/api/faults/{id}"), None);
    assert_eq!(status, 404);
}

#[test]
fn probability_zero_never_fires_and_one_always_does() {
    let server = Server::start(&[]);
    let token = server.token();
    add_rule(
        &server,
        json!({"operation": "CreateItem", "probability": 0, "fault": {"kind": "http503"}}),
    );
    for _ in 0..20 {
        assert_eq!(server.ews(&token, &one_item()).status, 200);
    }
    let (status, _) = call(
        &server,
        Method::PUT,
        "/api/faults",
        Some(json!([{"operation": "CreateItem", "probability": 1.0,
                     "fault": {"kind": "http503"}}])),
    );
    assert_eq!(status, 200);
    for _ in 0..20 {
        assert_eq!(server.ews(&token, &one_item()).status, 503);
    }
}

#[test]
fn rules_match_by_tenant_app_and_operation() {
    let server = Server::start(&[]);
    let token = server.token();
    let (status, created) = call(
        &server,
        Method::POST,
        "/api/tenants",
        Some(json!({"displayName": "Fabrikam", "domains": ["fabrikam.example"]})),
    );
    assert_eq!(status, 201, "{created}");
    let before = stored(&server, &token);

    // Another app, another tenant, another operation: none fires.
    let (status, rules) = call(
        &server,
        Method::PUT,
        "/api/faults",
        Some(json!([
            {"appId": "33333333-3333-3333-3333-333333333333", "fault": {"kind": "http503"}},
            {"tenant": "fabrikam.example", "fault": {"kind": "http503"}},
            {"operation": "GetFolder", "fault": {"kind": "http429"}},
        ])),
    );
    assert_eq!(status, 200, "{rules}");
    assert_eq!(rules["value"].as_array().unwrap().len(), 3);
    assert_eq!(rules["value"][1]["tenant"], created["id"]);
    let reply = server.ews(&token, &one_item());
    assert_eq!(reply.status, 200, "{}", reply.body);
    // The GetFolder rule fires on GetFolder.
    let reply = server.ews(&token, &get_folder(MAILBOX, FOLDER));
    assert_eq!(reply.status, 429);

    // This app and this tenant (by domain), for CreateItem: fires.
    let (status, _) = call(
        &server,
        Method::PUT,
        "/api/faults",
        Some(
            json!([{"tenant": TENANT_DOMAIN, "appId": APP_ID, "operation": "createitem",
                     "fault": {"kind": "http503"}}]),
        ),
    );
    assert_eq!(status, 200);
    assert_eq!(server.ews(&token, &one_item()).status, 503);
    assert_eq!(stored(&server, &token), before + 1);
}

#[test]
fn rules_are_listed_replaced_and_removed() {
    let server = Server::start(&[]);
    let a = add_rule(&server, json!({"fault": {"kind": "http503"}}));
    let b = add_rule(
        &server,
        json!({"id": "mine", "fault": {"kind": "latency", "milliseconds": 5}}),
    );
    assert_eq!(b, "mine");
    assert_ne!(a, b);
    // A duplicate id is a conflict.
    let (status, _) = call(
        &server,
        Method::POST,
        "/api/faults",
        Some(json!({"id": "mine", "fault": {"kind": "http503"}})),
    );
    assert_eq!(status, 409);
    let (_, list) = call(&server, Method::GET, "/api/faults", None);
    assert_eq!(list["value"].as_array().unwrap().len(), 2);
    assert_eq!(
        list["value"][1]["fault"],
        json!({"kind": "latency", "milliseconds": 5})
    );
    assert_eq!(list["value"][0]["probability"], 1.0);
    assert_eq!(list["value"][0]["remaining"], Value::Null);

    let (status, _) = call(&server, Method::DELETE, &format!("/api/faults/{a}"), None);
    assert_eq!(status, 204);
    let (status, body) = call(&server, Method::DELETE, &format!("/api/faults/{a}"), None);
    assert_eq!(status, 404, "{body}");
    let (_, list) = call(&server, Method::GET, "/api/faults", None);
    assert_eq!(list["value"][0]["id"], "mine");

    let (status, _) = call(&server, Method::DELETE, "/api/faults", None);
    assert_eq!(status, 204);
    let (_, list) = call(&server, Method::GET, "/api/faults", None);
    assert_eq!(list["value"], json!([]));
}

#[test]
fn invalid_rules_are_refused_with_a_clear_message() {
    let server = Server::start(&[]);
    let cases = [
        (json!({"fault": {"kind": "explode"}}), "unknown variant"),
        (
            json!({"probability": 1.5, "fault": {"kind": "http503"}}),
            "probability",
        ),
        (
            json!({"probability": -0.1, "fault": {"kind": "http503"}}),
            "probability",
        ),
        (json!({"count": 0, "fault": {"kind": "http503"}}), "count"),
        (
            json!({"operation": "FindItem", "fault": {"kind": "http503"}}),
            "FindItem",
        ),
        (
            json!({"appId": "not-a-guid", "fault": {"kind": "http503"}}),
            "appId",
        ),
        (
            json!({"tenant": "nowhere.example", "fault": {"kind": "http503"}}),
            "nowhere.example",
        ),
        (json!({"fault": {"kind": "latency"}}), "milliseconds"),
        (
            json!({"fault": {"kind": "latency", "milliseconds": 10_000_000}}),
            "at most",
        ),
        (
            json!({"fault": {"kind": "serverBusy", "backOffMs": 3}}),
            "backOffMs",
        ),
        (json!({}), "fault"),
    ];
    for (rule, expected) in cases {
        let (status, body) = call(&server, Method::POST, "/api/faults", Some(rule.clone()));
        assert_eq!(status, 400, "{rule}: {body}");
        assert_eq!(body["error"]["code"], "Request_BadRequest");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{rule}: {message}");
    }
    // PUT names the rule at fault and changes nothing.
    add_rule(&server, json!({"fault": {"kind": "http503"}}));
    let (status, body) = call(
        &server,
        Method::PUT,
        "/api/faults",
        Some(
            json!([{"fault": {"kind": "http429"}}, {"probability": 2, "fault": {"kind": "http429"}}]),
        ),
    );
    assert_eq!(status, 400);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Rule 1:"));
    let (_, list) = call(&server, Method::GET, "/api/faults", None);
    assert_eq!(list["value"][0]["fault"]["kind"], "http503");
}

#[test]
fn the_admin_key_is_required() {
    let server = Server::start(&[]);
    let url = format!("{}/api/faults", server.url);
    for method in [Method::GET, Method::PUT, Method::POST, Method::DELETE] {
        let response = server
            .client()
            .request(method.clone(), &url)
            .json(&json!({"fault": {"kind": "http503"}}))
            .send()
            .unwrap();
        assert_eq!(response.status(), 401, "{method}");
        let response = server
            .client()
            .request(method.clone(), &url)
            .bearer_auth("wrong")
            .json(&json!({"fault": {"kind": "http503"}}))
            .send()
            .unwrap();
        assert_eq!(response.status(), 401, "{method}");
    }
    let (_, list) = call(&server, Method::GET, "/api/faults", None);
    assert_eq!(list["value"], json!([]));
    // Ingestion is unaffected.
    let token = server.token();
    assert_eq!(server.ews(&token, &one_item()).status, 200);
}

#[test]
fn an_item_budget_throttles_with_the_back_off_that_recovers_it() {
    let server = Server::start(&[]);
    let token = server.token();
    let before = stored(&server, &token);
    add_rule(
        &server,
        json!({"appId": APP_ID, "fault": {"kind": "itemBudget", "itemsPerMinute": 3}}),
    );
    let three = create_item(&[
        Msg::default().xml(),
        Msg::default().xml(),
        Msg::default().xml(),
    ]);
    let reply = server.ews(&token, &three);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.item_ids().len(), 3);
    // GetFolder carries no items: not counted.
    assert_eq!(stored(&server, &token), before + 3);

    let reply = server.ews(&token, &one_item());
    assert_eq!(reply.status, 500, "{}", reply.body);
    assert!(reply.body.contains(">a:ErrorServerBusy</faultcode>"));
    let back_off: u64 = between(&reply.body, "<t:Value Name=\"BackOffMilliseconds\">", "<")
        .unwrap()
        .parse()
        .unwrap();
    // One item at 3 a minute: about 20 s, less the time since the first request.
    assert!((15_000..=20_000).contains(&back_off), "{back_off}");
    assert_eq!(stored(&server, &token), before + 3);
    let record = server.ingestion(&reply.correlation_id().unwrap());
    assert_eq!(record["outcome"], "Faulted");
    assert!(record["error"].as_str().unwrap().contains("serverBusy"));
    let (_, list) = call(&server, Method::GET, "/api/faults", None);
    assert_eq!(list["value"][0]["injected"], 1);
}

/// An item-level fault answers one error message per element the request asked about, for
/// every operation (EWS clients read one per element: the Managed API fails on a missing one),
/// and ConvertId answers each of its ids.
#[test]
fn item_server_busy_and_convert_id_answer_one_message_per_element_asked_about() {
    let server = Server::start(&[]);
    let token = server.token();
    let two_folders = get_folder("alice@contoso.com", "inbox").replace(
        r#"<t:DistinguishedFolderId Id="inbox"/>"#,
        r#"<t:DistinguishedFolderId Id="inbox"/><t:DistinguishedFolderId Id="recoverableitemspurges"/>"#,
    );
    let three_ids = get_folder("alice@contoso.com", "inbox").replace(
        r#"<m:GetFolder><m:FolderShape><t:BaseShape>Default</t:BaseShape></m:FolderShape><m:FolderIds><t:DistinguishedFolderId Id="inbox"/></m:FolderIds></m:GetFolder>"#,
        r#"<m:ConvertId DestinationFormat="EwsId"><m:SourceIds><t:AlternateId Format="EwsId" Id="AAA" Mailbox="alice@contoso.com"/><t:AlternateId Format="EwsId" Id="BBB" Mailbox="alice@contoso.com"/><t:AlternatePublicFolderId Format="EwsId" FolderId="CCC"/></m:SourceIds></m:ConvertId>"#,
    );
    assert!(three_ids.contains("m:ConvertId"), "{three_ids}");

    // Each id costs a message: a ConvertId is bounded like a GetFolder.
    let many_ids = three_ids.replace(
        r#"<t:AlternatePublicFolderId Format="EwsId" FolderId="CCC"/>"#,
        &r#"<t:AlternateId Format="EwsId" Id="X" Mailbox="a@b.example"/>"#.repeat(200),
    );
    server.ews(&token, &many_ids).assert_refused(
        500,
        "The request names 202 ids; at most 100 are accepted in one ConvertId request.",
    );

    let convert = server.ews(&token, &three_ids);
    assert_eq!(convert.status, 200, "{}", convert.body);
    let messages = convert.messages();
    assert_eq!(messages.len(), 3, "{}", convert.body);
    assert!(messages
        .iter()
        .all(|(class, code, _)| class == "Error" && code == "ErrorInvalidRequest"));

    add_rule(
        &server,
        json!({"fault": {"kind": "itemServerBusy", "backOffMilliseconds": 700}}),
    );
    for (request, expected) in [(&two_folders, 2), (&three_ids, 3)] {
        let reply = server.ews(&token, request);
        assert_eq!(reply.status, 200, "{}", reply.body);
        let messages = reply.messages();
        assert_eq!(messages.len(), expected, "{}", reply.body);
        assert!(
            messages
                .iter()
                .all(|(class, code, _)| class == "Error" && code == "ErrorServerBusy"),
            "{}",
            reply.body
        );
        assert_eq!(
            reply
                .body
                .matches(r#"<t:Value Name="BackOffMilliseconds">700</t:Value>"#)
                .count(),
            expected,
            "{}",
            reply.body
        );
    }
}
