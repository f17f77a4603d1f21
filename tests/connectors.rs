//! Data connectors over the wire: the `/api/compliance/connectors` API, a partner connector's
//! EWS requests as imports in its history, pause (requests refused, nothing stored) and
//! consent revocation (`ConsentRevoked`).

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const BASE: &str = "/api/compliance/connectors";

fn create(server: &Server, body: Value) -> Value {
    let (status, value) = call(server, Method::POST, BASE, Some(body));
    assert_eq!(status, 201, "{value}");
    value
}

fn partner(server: &Server, name: &str) -> String {
    let created = create(
        server,
        json!({"tenant": TENANT, "name": name, "kind": "partner", "appId": APP_ID}),
    );
    created["id"].as_str().expect("id").to_string()
}

fn status(server: &Server, id: &str) -> Value {
    let (code, value) = call(server, Method::GET, &format!("{BASE}/{id}/status"), None);
    assert_eq!(code, 200, "{value}");
    value
}

#[test]
fn create_list_status_update_pause_resume_delete() {
    let server = Server::start(&[]);
    let created = create(
        &server,
        json!({
            "tenant": TENANT_DOMAIN,
            "name": "Pivot chats",
            "kind": "pivot",
            "mapping": {"explicit": {"pivot-user-7": "bob@contoso.com"}},
            "scope": ["alice@contoso.com", "bob@contoso.com"],
        }),
    );
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(created["kind"], "Pivot");
    assert_eq!(created["tenant"], TENANT);
    assert_eq!(created["schedule"]["intervalMinutes"], 1440);
    assert_eq!(created["mapping"]["automatic"], true);
    assert_eq!(
        created["mapping"]["explicit"]["pivot-user-7"],
        "bob@contoso.com"
    );
    assert_eq!(created["status"]["state"], "Active");
    assert_eq!(created["status"]["itemsImported"], 0);

    let (code, list) = call(&server, Method::GET, BASE, None);
    assert_eq!(code, 200);
    assert_eq!(list["value"].as_array().expect("list").len(), 1);
    assert_eq!(list["value"][0]["name"], "Pivot chats");
    let (code, list) = call(
        &server,
        Method::GET,
        &format!("{BASE}?tenant={TENANT}"),
        None,
    );
    assert_eq!(
        (code, list["value"].as_array().map(Vec::len)),
        (200, Some(1))
    );

    let s = status(&server, &id);
    assert_eq!(s["state"], "Active");
    assert!(s["lastImportDateTime"].is_null());
    assert_eq!(s["errors"], 0);

    let (code, updated) = call(
        &server,
        Method::PUT,
        &format!("{BASE}/{id}"),
        Some(
            json!({"name": "Pivot", "schedule": {"intervalMinutes": 60}, "scope": "all", "paused": true}),
        ),
    );
    assert_eq!(code, 200, "{updated}");
    assert_eq!(updated["name"], "Pivot");
    assert_eq!(updated["schedule"]["intervalMinutes"], 60);
    assert_eq!(updated["scope"], "all");
    assert_eq!(status(&server, &id)["state"], "Paused");
    let (code, _) = call(
        &server,
        Method::PUT,
        &format!("{BASE}/{id}"),
        Some(json!({"paused": false})),
    );
    assert_eq!(code, 200);
    assert_eq!(status(&server, &id)["state"], "Active");

    let (code, history) = call(&server, Method::GET, &format!("{BASE}/{id}/history"), None);
    assert_eq!(code, 200);
    assert_eq!(history["value"], json!([]));

    let (code, _) = call(&server, Method::DELETE, &format!("{BASE}/{id}"), None);
    assert_eq!(code, 204);
    for path in [
        format!("{BASE}/{id}"),
        format!("{BASE}/{id}/status"),
        format!("{BASE}/{id}/history"),
    ] {
        let (code, body) = call(&server, Method::GET, &path, None);
        assert_eq!(code, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "Request_ResourceNotFound");
    }
    let (code, _) = call(&server, Method::DELETE, &format!("{BASE}/{id}"), None);
    assert_eq!(code, 404);
}

#[test]
fn validation_answers_clear_400s_and_409_on_duplicate_names() {
    let server = Server::start(&[]);
    create(
        &server,
        json!({"tenant": TENANT, "name": "Chats", "kind": "Symphony"}),
    );
    let (code, body) = call(
        &server,
        Method::POST,
        BASE,
        Some(json!({"tenant": TENANT, "name": "chats", "kind": "Slack"})),
    );
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"]["code"], "Conflict");

    let cases = [
        (
            json!({"tenant": TENANT, "name": "X", "kind": "carrier-pigeon"}),
            "kind",
        ),
        (json!({"tenant": TENANT, "name": "X"}), "kind"),
        (json!({"tenant": TENANT, "kind": "Zoom"}), "name"),
        (
            json!({"tenant": TENANT, "name": "  ", "kind": "Zoom"}),
            "name",
        ),
        (json!({"name": "X", "kind": "Zoom"}), "tenant"),
        (
            json!({"tenant": "nowhere.example", "name": "X", "kind": "Zoom"}),
            "tenant",
        ),
        (
            json!({"tenant": TENANT, "name": "X", "kind": "partner"}),
            "appId",
        ),
        (
            json!({"tenant": TENANT, "name": "X", "kind": "partner", "appId": "99999999-9999-9999-9999-999999999999"}),
            "appId",
        ),
        (
            json!({"tenant": TENANT, "name": "X", "kind": "Zoom", "appId": APP_ID}),
            "appId",
        ),
        (
            json!({"tenant": TENANT, "name": "X", "kind": "Zoom", "schedule": {"intervalMinutes": 0}}),
            "intervalMinutes",
        ),
        (
            json!({"tenant": TENANT, "name": "X", "kind": "Zoom", "scope": ["nobody@contoso.com"]}),
            "scope",
        ),
        (
            json!({"tenant": TENANT, "name": "X", "kind": "Zoom", "mapping": {"explicit": {"u1": "nobody@contoso.com"}}}),
            "mapping.explicit",
        ),
        (
            json!({"tenant": TENANT, "name": "X", "kind": "Zoom", "colour": "red"}),
            "colour",
        ),
    ];
    for (body, word) in cases {
        let (code, answer) = call(&server, Method::POST, BASE, Some(body.clone()));
        assert_eq!(code, 400, "{body} -> {answer}");
        assert_eq!(answer["error"]["code"], "Request_BadRequest");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(word), "{body}: '{message}' names {word}");
    }

    // Updates: immutable fields, duplicate names, bad ids.
    let other = create(
        &server,
        json!({"tenant": TENANT, "name": "Other", "kind": "ICE Chat"}),
    );
    let id = other["id"].as_str().expect("id");
    let (code, _) = call(
        &server,
        Method::PUT,
        &format!("{BASE}/{id}"),
        Some(json!({"kind": "Zoom"})),
    );
    assert_eq!(code, 400);
    let (code, _) = call(
        &server,
        Method::PUT,
        &format!("{BASE}/{id}"),
        Some(json!({"name": "CHATS"})),
    );
    assert_eq!(code, 409);
    let (code, _) = call(&server, Method::GET, &format!("{BASE}/not-a-guid"), None);
    assert_eq!(code, 400);
    let (code, _) = call(
        &server,
        Method::GET,
        &format!("{BASE}/{id}/history?top=0"),
        None,
    );
    assert_eq!(code, 400);
    // One partner connector per app and tenant.
    partner(&server, "Feed");
    let (code, _) = call(
        &server,
        Method::POST,
        BASE,
        Some(json!({"tenant": TENANT, "name": "Feed 2", "kind": "partner", "appId": APP_ID})),
    );
    assert_eq!(code, 409);
    // Without the admin key.
    let response = server.get(BASE).send().expect("request");
    assert_eq!(response.status(), 401);
}

#[test]
fn a_partner_connector_records_each_request_as_an_import() {
    let server = Server::start(&[]);
    let id = partner(&server, "Twitter feed");
    let token = server.token();
    let batch = [
        Msg {
            to: vec!["alice@contoso.com".into(), "bob@contoso.com".into()],
            ..Msg::default()
        },
        Msg::default(),
        Msg {
            class: None,
            ..Msg::default()
        },
    ];
    let messages: Vec<String> = batch.iter().map(Msg::xml).collect();
    let reply = server.ews(&token, &create_item(&messages));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.item_ids().len(), 2);

    let (code, history) = call(&server, Method::GET, &format!("{BASE}/{id}/history"), None);
    assert_eq!(code, 200, "{history}");
    let records = history["value"].as_array().expect("records");
    assert_eq!(records.len(), 1, "{history}");
    let r = &records[0];
    assert_eq!(r["itemsAvailableFromSource"], 3);
    // After fan-out: 2 + 1 copies and the failed item.
    assert_eq!(r["itemsAvailableForImport"], 4);
    assert_eq!(r["importedSuccessfully"], 3);
    assert_eq!(r["partiallyImported"], 0);
    assert_eq!(r["skipped"], 0);
    assert_eq!(r["failed"], 1);
    assert_eq!(
        r["correlationId"].as_str(),
        reply.correlation_id().as_deref()
    );
    assert_eq!(r["failedItems"][0]["index"], 2);
    assert!(r["importCompletionDateTime"].is_string());

    // A second request: newest first; the invariant holds in every record.
    let reply = server.ews(&token, &create_item(&[Msg::default().xml()]));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let (_, history) = call(&server, Method::GET, &format!("{BASE}/{id}/history"), None);
    let records = history["value"].as_array().expect("records");
    assert_eq!(records.len(), 2);
    assert_eq!(
        records[0]["correlationId"].as_str(),
        reply.correlation_id().as_deref()
    );
    for r in records {
        let sum: u64 = [
            "importedSuccessfully",
            "partiallyImported",
            "skipped",
            "failed",
        ]
        .iter()
        .map(|k| r[k].as_u64().expect("count"))
        .sum();
        assert_eq!(r["itemsAvailableForImport"].as_u64(), Some(sum), "{r}");
    }
    let s = status(&server, &id);
    assert_eq!(s["state"], "Active");
    assert_eq!(s["itemsImported"], 4);
    assert_eq!(s["errors"], 1);
    assert_eq!(s["imports"], 2);
    assert!(s["lastImportDateTime"].is_string());
    let last_error = s["lastError"].as_str().unwrap_or_default();
    assert!(last_error.contains("property MESSAGECLASS "), "{s}");
    assert_eq!(records[1]["failedItems"][0]["code"], "ErrorItemSave");

    // A request whose every item fails puts the connector in Error.
    let reply = server.ews(
        &token,
        &create_item(&[Msg {
            class: None,
            ..Msg::default()
        }
        .xml()]),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(status(&server, &id)["state"], "Error");
    let reply = server.ews(&token, &create_item(&[Msg::default().xml()]));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(status(&server, &id)["state"], "Active");
}

#[test]
fn a_paused_connector_refuses_its_requests_and_stores_nothing() {
    let server = Server::start(&[]);
    let id = partner(&server, "Paused feed");
    let token = server.token();
    let before = server.folder_count(&token, "alice@contoso.com", "recoverableitemspurges");
    let (code, _) = call(
        &server,
        Method::PUT,
        &format!("{BASE}/{id}"),
        Some(json!({"paused": true})),
    );
    assert_eq!(code, 200);

    let reply = server.ews(&token, &create_item(&[Msg::default().xml()]));
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(reply.body.contains("ErrorAccessDenied"), "{}", reply.body);
    assert!(reply.body.contains("Paused feed"), "{}", reply.body);
    assert!(reply.body.contains("paused"), "{}", reply.body);
    assert_eq!(
        server.folder_count(&token, "alice@contoso.com", "recoverableitemspurges"),
        before
    );
    let (_, history) = call(&server, Method::GET, &format!("{BASE}/{id}/history"), None);
    assert_eq!(history["value"], json!([]));
    // The refusal is in the ingestion journal, with nothing stored.
    let (_, journal) = call(
        &server,
        Method::GET,
        &format!("/api/tenants/{TENANT}/ingestions?top=1"),
        None,
    );
    let journal = &journal["value"][0];
    assert_eq!(journal["outcome"], "Refused", "{journal}");
    assert_eq!(journal["httpStatus"], 403);
    assert_eq!(journal["items"], json!([]));
    assert!(journal["error"].as_str().expect("error").contains("paused"));

    // Resumed: accepted again.
    let (code, _) = call(
        &server,
        Method::PUT,
        &format!("{BASE}/{id}"),
        Some(json!({"paused": false})),
    );
    assert_eq!(code, 200);
    let reply = server.ews(&token, &create_item(&[Msg::default().xml()]));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        server.folder_count(&token, "alice@contoso.com", "recoverableitemspurges"),
        before + 1
    );
}

#[test]
fn revoking_consent_puts_the_connector_in_consent_revoked() {
    let server = Server::start(&[]);
    let id = partner(&server, "Revoked feed");
    assert_eq!(status(&server, &id)["state"], "Active");
    let (code, body) = call(
        &server,
        Method::DELETE,
        &format!("/api/tenants/{TENANT}/servicePrincipals/{APP_ID}"),
        None,
    );
    assert_eq!(code, 204, "{body}");
    assert_eq!(status(&server, &id)["state"], "ConsentRevoked");
    let (_, list) = call(&server, Method::GET, BASE, None);
    assert_eq!(list["value"][0]["status"]["state"], "ConsentRevoked");
    // Consent again: Active.
    let (code, body) = call(
        &server,
        Method::POST,
        &format!("/api/tenants/{TENANT}/servicePrincipals"),
        Some(json!({"appId": APP_ID})),
    );
    assert_eq!(code, 201, "{body}");
    assert_eq!(status(&server, &id)["state"], "Active");
}

#[test]
fn connectors_and_history_survive_a_restart_and_go_with_their_tenant() {
    let dir = tempfile::tempdir().expect("dir");
    let mut server = Server::start_in(dir.path(), &[]);
    let id = partner(&server, "Durable feed");
    let token = server.token();
    let reply = server.ews(&token, &create_item(&[Msg::default().xml()]));
    assert_eq!(reply.status, 200, "{}", reply.body);
    server.terminate();

    let server = Server::start_in(dir.path(), &[]);
    let s = status(&server, &id);
    assert_eq!(s["name"], "Durable feed");
    assert_eq!(s["itemsImported"], 1);
    let (_, history) = call(&server, Method::GET, &format!("{BASE}/{id}/history"), None);
    assert_eq!(history["value"].as_array().map(Vec::len), Some(1));

    let (code, body) = call(
        &server,
        Method::DELETE,
        &format!("/api/tenants/{TENANT}"),
        None,
    );
    assert_eq!(code, 204, "{body}");
    let (code, _) = call(&server, Method::GET, &format!("{BASE}/{id}"), None);
    assert_eq!(code, 404);
}
