//! Mailbox inspection, `.eml` export, attachments, the ingestion journal, litigation holds,
//! retention and reset, over the wire against the real binary.

mod common;

use common::*;
use mail_parser::{MessageParser, MimeHeaders};
use reqwest::Method;
use serde_json::{json, Value};

const T: &str = "/api/tenants/11111111-1111-1111-1111-111111111111";
const PURGES: &str = "Recoverable%20Items/Purges";

fn get(server: &Server, path: &str) -> Value {
    let (status, body) = call(server, Method::GET, path, None);
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// Ingests one request of `messages`; returns (correlation id, item ids).
fn ingest(server: &Server, token: &str, messages: &[Msg]) -> (String, Vec<String>) {
    let xml: Vec<String> = messages.iter().map(Msg::xml).collect();
    let reply = server.ews(token, &create_item(&xml));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let ids = reply.item_ids();
    assert_eq!(ids.len(), messages.len(), "{}", reply.body);
    (reply.correlation_id().expect("correlation id"), ids)
}

/// The internal item id of an EWS item id, from the ingestion record.
fn stored_ids(server: &Server, correlation_id: &str) -> Vec<String> {
    let record = server.ingestion(correlation_id);
    record["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["itemId"].as_str().map(str::to_string))
        .collect()
}

/// Ingests one item per request and returns its stored id.
fn one(server: &Server, token: &str, msg: Msg) -> String {
    let (correlation, _) = ingest(server, token, &[msg]);
    stored_ids(server, &correlation)
        .pop()
        .expect("one stored item")
}

fn folder_count(mailboxes: &Value, upn: &str, path: &str) -> u64 {
    mailboxes["value"]
        .as_array()
        .expect("value")
        .iter()
        .find(|m| {
            m["upn"]
                .as_str()
                .is_some_and(|u| u.eq_ignore_ascii_case(upn))
        })
        .unwrap_or_else(|| panic!("no mailbox {upn} in {mailboxes}"))["folders"]
        .as_array()
        .expect("folders")
        .iter()
        .find(|f| f["path"] == path)
        .and_then(|f| f["itemCount"].as_u64())
        .unwrap_or_else(|| panic!("no folder {path} of {upn} in {mailboxes}"))
}

fn total_items(server: &Server) -> u64 {
    let mailboxes = get(server, &format!("{T}/mailboxes"));
    mailboxes["value"]
        .as_array()
        .expect("value")
        .iter()
        .map(|m| m["itemCount"].as_u64().expect("itemCount"))
        .sum()
}

fn tweet(subject: &str, to: &[&str]) -> Msg {
    Msg {
        subject: Some(subject.into()),
        to: to.iter().map(|s| s.to_string()).collect(),
        ..Msg::default()
    }
}

fn pause() {
    // Distinct received times (microseconds) between requests.
    std::thread::sleep(std::time::Duration::from_millis(5));
}

#[test]
fn browse_mailboxes_folders_items_and_an_item() {
    let server = Server::start(&[]);
    let token = server.token();
    let first = one(&server, &token, tweet("first", &["alice@contoso.com"]));
    pause();
    let second = one(
        &server,
        &token,
        Msg {
            cc: vec!["bob.kelly@bloomberg.example".into()],
            attachments: vec![("a.txt".into(), b"hello".to_vec())],
            ..tweet("second", &["alice@contoso.com"])
        },
    );
    pause();
    let third = one(&server, &token, tweet("third", &["alice@contoso.com"]));
    let orphan = one(
        &server,
        &token,
        tweet("nobody", &["stranger@elsewhere.example"]),
    );

    // Every mailbox with its folders and counts.
    let mailboxes = get(&server, &format!("{T}/mailboxes"));
    assert_eq!(
        folder_count(&mailboxes, "alice@contoso.com", "Recoverable Items/Purges"),
        3
    );
    assert_eq!(folder_count(&mailboxes, "alice@contoso.com", "Inbox"), 0);
    assert_eq!(
        folder_count(&mailboxes, "bob@contoso.com", "Recoverable Items/Purges"),
        1
    );
    assert_eq!(
        folder_count(&mailboxes, "thirdpartydata@contoso.com", "Inbox"),
        1
    );
    assert_eq!(
        folder_count(&mailboxes, "carol@contoso.com", "Recoverable Items/Purges"),
        0
    );
    let alice = mailboxes["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["upn"] == "alice@contoso.com")
        .unwrap();
    assert_eq!(alice["displayName"], "Alice Wilber");
    assert_eq!(alice["active"], true);
    assert_eq!(alice["litigationHold"], false);
    assert!(
        !mailboxes["value"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["upn"] == "dave@contoso.com"),
        "a disabled mailbox without items is not listed: {mailboxes}"
    );
    let third_party = mailboxes["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["upn"] == "thirdpartydata@contoso.com")
        .unwrap();
    assert_eq!(third_party["thirdPartyDataMailbox"], true);

    // Folders of one mailbox, by UPN or any address.
    let folders = get(
        &server,
        &format!("{T}/mailboxes/alice.wilber@contoso.com/folders"),
    );
    assert_eq!(folders["mailbox"], "alice@contoso.com");
    let purges = folders["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "Recoverable Items/Purges")
        .unwrap();
    assert_eq!(purges["itemCount"], 3);

    // Items newest first, paged.
    let page = get(
        &server,
        &format!("{T}/mailboxes/alice@contoso.com/items?folder={PURGES}"),
    );
    assert_eq!(page["totalCount"], 3);
    let ids: Vec<&str> = page["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["itemId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [third.as_str(), second.as_str(), first.as_str()]);
    let summary = &page["value"][1];
    assert_eq!(summary["subject"], "second");
    assert_eq!(summary["itemClass"], "IPM.NOTE.Twitter.Tweet");
    assert_eq!(summary["sent"], "2024-03-01T12:00:00Z");
    assert!(summary["received"].is_string());
    assert_eq!(summary["from"]["address"], "contoso@twitter.example");
    assert_eq!(summary["hasAttachments"], true);
    assert!(summary["size"].as_u64().unwrap() > 0);
    assert_eq!(summary["folder"], "Recoverable Items/Purges");
    let page = get(
        &server,
        &format!("{T}/mailboxes/alice@contoso.com/items?folder={PURGES}&top=1&skip=1"),
    );
    assert_eq!(page["value"].as_array().unwrap().len(), 1);
    assert_eq!(page["value"][0]["itemId"], second.as_str());
    assert!(page["@odata.nextLink"].as_str().unwrap().contains("skip=2"));
    // Without a folder: every folder of the mailbox.
    let all = get(
        &server,
        &format!("{T}/mailboxes/thirdpartydata@contoso.com/items"),
    );
    assert_eq!(all["value"][0]["itemId"], orphan.as_str());
    assert_eq!(all["value"][0]["folder"], "Inbox");
    // Errors.
    let (status, body) = call(
        &server,
        Method::GET,
        &format!("{T}/mailboxes/alice@contoso.com/items?folder=Sent%20Items"),
        None,
    );
    assert_eq!(status, 400, "{body}");
    let (status, _) = call(
        &server,
        Method::GET,
        &format!("{T}/mailboxes/alice@contoso.com/items?top=many"),
        None,
    );
    assert_eq!(status, 400);
    let (status, body) = call(
        &server,
        Method::GET,
        &format!("{T}/mailboxes/nobody@contoso.com/folders"),
        None,
    );
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "Request_ResourceNotFound");

    // One item: every stored property.
    let item = get(&server, &format!("{T}/items/{second}"));
    assert_eq!(item["id"], second.as_str());
    assert_eq!(item["subject"], "second");
    assert_eq!(item["body"], "hello world");
    assert_eq!(item["bodyType"], "Text");
    assert_eq!(item["itemClass"], "IPM.NOTE.Twitter.Tweet");
    assert_eq!(item["searchedItemClass"], "IPM.ExternalData.Twitter.Tweet");
    assert_eq!(item["kind"], "externaldata");
    assert_eq!(item["sent"], "2024-03-01T12:00:00Z");
    assert_eq!(item["from"]["address"], "contoso@twitter.example");
    assert_eq!(item["to"][0]["address"], "alice@contoso.com");
    assert_eq!(item["cc"][0]["address"], "bob.kelly@bloomberg.example");
    assert_eq!(item["participants"].as_array().unwrap().len(), 3);
    assert_eq!(item["appId"], APP_ID);
    assert_eq!(item["app"]["appId"], APP_ID);
    assert_eq!(item["connector"], "Contoso Archive Connector (test)");
    assert!(item["correlationId"].is_string());
    assert_eq!(item["attachments"][0]["name"], "a.txt");
    assert_eq!(item["attachments"][0]["size"], 5);
    assert!(item["attachments"][0]["contentType"].is_string());
    assert_eq!(item["hasAttachments"], true);
    assert!(item["extendedProperties"].is_array());
    let mut copies: Vec<String> = item["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}|{}",
                c["mailbox"].as_str().unwrap(),
                c["folder"].as_str().unwrap()
            )
        })
        .collect();
    copies.sort();
    assert_eq!(
        copies,
        [
            "alice@contoso.com|Recoverable Items/Purges",
            "bob@contoso.com|Recoverable Items/Purges"
        ]
    );

    // Another tenant does not see it; a bad id is a 400.
    let (status, body) = call(
        &server,
        Method::POST,
        "/api/tenants",
        Some(json!({"displayName": "Fabrikam", "domains": ["fabrikam.example"]})),
    );
    assert_eq!(status, 201, "{body}");
    let (status, _) = call(
        &server,
        Method::GET,
        &format!("/api/tenants/fabrikam.example/items/{second}"),
        None,
    );
    assert_eq!(status, 404);
    let (status, _) = call(&server, Method::GET, &format!("{T}/items/not-a-guid"), None);
    assert_eq!(status, 400);
}

#[test]
fn an_item_exports_as_an_eml_a_mime_library_reads_back() {
    let server = Server::start(&[]);
    let token = server.token();
    let png: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let msg = Msg {
        subject: Some("Quarterly figures".into()),
        body: Some("Figures attached.".into()),
        to: vec!["alice@contoso.com".into()],
        cc: vec!["bob@contoso.com".into()],
        bcc: vec!["carol@contoso.com".into()],
        attachments: vec![
            ("figures.bin".into(), png.clone()),
            ("notes.txt".into(), b"line 1\nline 2\n".to_vec()),
        ],
        ..Msg::default()
    };
    let id = one(&server, &token, msg);
    let response = server
        .admin(Method::GET, &format!("{T}/items/{id}/mime"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "message/rfc822");
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        disposition.contains(&format!("filename=\"{id}.eml\"")),
        "{disposition}"
    );
    let eml = response.bytes().unwrap();
    let text = String::from_utf8_lossy(&eml);
    assert!(
        text.contains("X-Item-Class: IPM.NOTE.Twitter.Tweet"),
        "{text}"
    );

    let parsed = MessageParser::default()
        .parse(&eml[..])
        .expect("a MIME message");
    let first = |a: Option<&mail_parser::Address<'_>>| {
        a.and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(str::to_string)
    };
    assert_eq!(
        first(parsed.from()).as_deref(),
        Some("contoso@twitter.example")
    );
    assert_eq!(first(parsed.to()).as_deref(), Some("alice@contoso.com"));
    assert_eq!(first(parsed.cc()).as_deref(), Some("bob@contoso.com"));
    assert_eq!(first(parsed.bcc()).as_deref(), Some("carol@contoso.com"));
    assert_eq!(parsed.subject(), Some("Quarterly figures"));
    assert_eq!(
        parsed.date().map(|d| d.to_rfc3339()).as_deref(),
        Some("2024-03-01T12:00:00Z")
    );
    assert_eq!(
        parsed.body_text(0).as_deref().map(str::trim),
        Some("Figures attached.")
    );
    let attachments: Vec<(String, Vec<u8>)> = parsed
        .attachments()
        .map(|a| {
            (
                a.attachment_name().unwrap_or_default().to_string(),
                a.contents().to_vec(),
            )
        })
        .collect();
    assert_eq!(
        attachments,
        [
            ("figures.bin".to_string(), png),
            ("notes.txt".to_string(), b"line 1\nline 2\n".to_vec())
        ]
    );
}

#[test]
fn a_mime_content_item_exports_with_its_message_id_and_html_body() {
    use base64::Engine;
    let server = Server::start(&[]);
    let token = server.token();
    let mime = mail_builder::MessageBuilder::new()
        .from(("Partner Feed", "feed@partner.example"))
        .to(vec![("Alice", "alice@contoso.com")])
        .cc("bob@contoso.com")
        .subject("Ünïcode subject")
        .date(1_709_294_400i64)
        .message_id("original-1@partner.example")
        .html_body("<p>Hello <b>Alice</b></p>")
        .attachment("application/pdf", "report.pdf", &b"%PDF-1.4 fake"[..])
        .write_to_vec()
        .unwrap();
    let message = format!(
        "<t:Message><t:MimeContent CharacterSet=\"UTF-8\">{}</t:MimeContent><t:ItemClass>IPM.NOTE.Bloomberg.Message</t:ItemClass></t:Message>",
        base64::engine::general_purpose::STANDARD.encode(&mime)
    );
    let reply = server.ews(&token, &create_item(&[message]));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let correlation = reply.correlation_id().unwrap();
    let id = stored_ids(&server, &correlation).pop().expect("stored");
    let item = get(&server, &format!("{T}/items/{id}"));
    assert_eq!(item["fromMime"], true);

    let eml = server
        .admin(Method::GET, &format!("{T}/items/{id}/mime"))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let original = MessageParser::default().parse(&mime[..]).unwrap();
    let exported = MessageParser::default()
        .parse(&eml[..])
        .expect("a MIME message");
    assert_eq!(exported.message_id(), Some("original-1@partner.example"));
    assert_eq!(exported.subject(), original.subject());
    assert_eq!(
        exported
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address()),
        Some("feed@partner.example")
    );
    assert_eq!(
        exported
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.name()),
        Some("Partner Feed")
    );
    assert_eq!(
        exported
            .to()
            .and_then(|a| a.first())
            .and_then(|a| a.address()),
        Some("alice@contoso.com")
    );
    assert_eq!(
        exported
            .cc()
            .and_then(|a| a.first())
            .and_then(|a| a.address()),
        Some("bob@contoso.com")
    );
    assert_eq!(
        exported.date().map(|d| d.to_timestamp()),
        original.date().map(|d| d.to_timestamp())
    );
    assert!(
        exported
            .body_html(0)
            .is_some_and(|b| b.contains("<b>Alice</b>")),
        "{}",
        String::from_utf8_lossy(&eml)
    );
    let attachment = exported.attachment(0).expect("attachment");
    assert_eq!(attachment.attachment_name(), Some("report.pdf"));
    assert_eq!(attachment.contents(), b"%PDF-1.4 fake");
    assert!(String::from_utf8_lossy(&eml).contains("X-Item-Class: IPM.NOTE.Bloomberg.Message"));
}

#[test]
fn attachments_download_with_their_type_and_name() {
    let server = Server::start(&[]);
    let token = server.token();
    let bytes: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    let id = one(
        &server,
        &token,
        Msg {
            attachments: vec![("chart data.bin".into(), bytes.clone())],
            ..Msg::default()
        },
    );
    let item = get(&server, &format!("{T}/items/{id}"));
    let response = server
        .admin(Method::GET, &format!("{T}/items/{id}/attachments/0"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        item["attachments"][0]["contentType"].as_str().unwrap()
    );
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        disposition.starts_with("attachment; filename=\"chart data.bin\""),
        "{disposition}"
    );
    assert_eq!(response.bytes().unwrap().to_vec(), bytes);
    for n in ["1", "x", "-1"] {
        let (status, body) = call(
            &server,
            Method::GET,
            &format!("{T}/items/{id}/attachments/{n}"),
            None,
        );
        assert_eq!(status, 404, "{n}: {body}");
    }
}

#[test]
fn the_ingestion_journal_is_newest_first() {
    let server = Server::start(&[]);
    let token = server.token();
    let mut correlations = Vec::new();
    for n in 0..3 {
        let (correlation, _) = ingest(
            &server,
            &token,
            &[tweet(&format!("n{n}"), &["alice@contoso.com"])],
        );
        correlations.push(correlation);
        pause();
    }
    let journal = get(&server, &format!("{T}/ingestions?top=2"));
    let ids: Vec<&str> = journal["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["correlationId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [correlations[2].as_str(), correlations[1].as_str()]);
    assert_eq!(journal["value"][0]["outcome"], "Success");
    let all = get(&server, &format!("{T}/ingestions"));
    assert_eq!(all["value"].as_array().unwrap().len(), 3);
    let rest = get(&server, &format!("{T}/ingestions?top=5&skip=2"));
    assert_eq!(rest["value"][0]["correlationId"], correlations[0].as_str());
    let (status, _) = call(
        &server,
        Method::GET,
        &format!("{T}/ingestions?top=-1"),
        None,
    );
    assert_eq!(status, 400);
}

#[test]
fn a_delete_removes_the_item_and_its_copies() {
    let server = Server::start(&[]);
    let token = server.token();
    let id = one(
        &server,
        &token,
        tweet("doomed", &["alice@contoso.com", "bob@contoso.com"]),
    );
    let keep = one(&server, &token, tweet("kept", &["alice@contoso.com"]));
    let (status, body) = call(&server, Method::DELETE, &format!("{T}/items/{id}"), None);
    assert_eq!(status, 204, "{body}");
    let (status, _) = call(&server, Method::GET, &format!("{T}/items/{id}"), None);
    assert_eq!(status, 404);
    let (status, _) = call(&server, Method::DELETE, &format!("{T}/items/{id}"), None);
    assert_eq!(status, 404);
    let mailboxes = get(&server, &format!("{T}/mailboxes"));
    assert_eq!(
        folder_count(&mailboxes, "alice@contoso.com", "Recoverable Items/Purges"),
        1
    );
    assert_eq!(
        folder_count(&mailboxes, "bob@contoso.com", "Recoverable Items/Purges"),
        0
    );
    assert_eq!(
        server.folder_count(&token, "bob@contoso.com", "recoverableitemspurges"),
        0
    );
    get(&server, &format!("{T}/items/{keep}"));
}

#[test]
fn litigation_holds_block_deletion_and_survive_a_reset_unless_forced() {
    let server = Server::start(&[]);
    let token = server.token();
    let held = one(
        &server,
        &token,
        tweet("held", &["alice@contoso.com", "bob@contoso.com"]),
    );
    let free = one(&server, &token, tweet("free", &["bob@contoso.com"]));
    let (status, body) = call(
        &server,
        Method::PATCH,
        &format!("{T}/users/alice@contoso.com"),
        Some(json!({"litigationHold": true})),
    );
    assert_eq!(status, 200, "{body}");
    let mailboxes = get(&server, &format!("{T}/mailboxes"));
    let alice = mailboxes["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["upn"] == "alice@contoso.com")
        .unwrap();
    assert_eq!(alice["litigationHold"], true);

    let (status, body) = call(&server, Method::DELETE, &format!("{T}/items/{held}"), None);
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "Conflict");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("litigation hold") && message.contains("alice@contoso.com"),
        "{message}"
    );
    get(&server, &format!("{T}/items/{held}"));

    // A reset keeps it (with the record that stored it) and removes the rest.
    let (status, body) = call(&server, Method::POST, "/api/reset", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["removed"], 1, "{body}");
    assert_eq!(body["keptUnderHold"], 1, "{body}");
    assert_eq!(body["itemsKeptUnderHold"][0]["itemId"], held.as_str());
    get(&server, &format!("{T}/items/{held}"));
    let (status, _) = call(&server, Method::GET, &format!("{T}/items/{free}"), None);
    assert_eq!(status, 404);
    assert_eq!(
        get(&server, &format!("{T}/ingestions"))["value"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Forced, it goes too.
    let (status, body) = call(&server, Method::POST, "/api/reset?force=true", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["removed"], 1, "{body}");
    assert_eq!(body["keptUnderHold"], 0, "{body}");
    let (status, _) = call(&server, Method::GET, &format!("{T}/items/{held}"), None);
    assert_eq!(status, 404);
    assert_eq!(total_items(&server), 0);

    // Lifting the hold makes deletion possible again.
    let id = one(&server, &token, tweet("later", &["alice@contoso.com"]));
    let (status, _) = call(&server, Method::DELETE, &format!("{T}/items/{id}"), None);
    assert_eq!(status, 409);
    call(
        &server,
        Method::PATCH,
        &format!("{T}/users/alice@contoso.com"),
        Some(json!({"litigationHold": false})),
    );
    let (status, _) = call(&server, Method::DELETE, &format!("{T}/items/{id}"), None);
    assert_eq!(status, 204);
}

#[test]
fn retention_sweeps_remove_old_copies_except_under_hold() {
    let server = Server::start(&[]);
    let token = server.token();
    let shared = one(
        &server,
        &token,
        tweet("shared", &["alice@contoso.com", "bob@contoso.com"]),
    );
    let alone = one(&server, &token, tweet("alone", &["alice@contoso.com"]));

    // No retention configured and no explicit cutoff: nothing to do.
    let (status, body) = call(&server, Method::POST, &format!("{T}/retention/sweep"), None);
    assert_eq!(status, 400, "{body}");

    // 30 days: everything is recent.
    let (status, body) = call(
        &server,
        Method::PATCH,
        T,
        Some(json!({"retentionDays": 30})),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(&server, Method::POST, &format!("{T}/retention/sweep"), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["copiesRemoved"], 0, "{body}");
    assert_eq!(body["retentionDays"], 30);
    // null clears a property; an absent one stays.
    let (status, body) = call(
        &server,
        Method::PATCH,
        T,
        Some(json!({"retentionDays": null})),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body["retentionDays"].is_null(), "{body}");
    let (_, body) = call(
        &server,
        Method::PATCH,
        T,
        Some(json!({"retentionDays": 30})),
    );
    assert_eq!(body["retentionDays"], 30);
    let (_, body) = call(
        &server,
        Method::PATCH,
        T,
        Some(json!({"displayName": "Contoso"})),
    );
    assert_eq!(body["retentionDays"], 30, "{body}");

    // Bob on hold; an explicit cutoff after now makes every copy due.
    call(
        &server,
        Method::PATCH,
        &format!("{T}/users/bob@contoso.com"),
        Some(json!({"litigationHold": true})),
    );
    let cutoff = (chrono::Utc::now() + chrono::Duration::minutes(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (status, body) = call(
        &server,
        Method::POST,
        &format!("{T}/retention/sweep?olderThan={cutoff}"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["copiesRemoved"], 2, "{body}");
    assert_eq!(body["itemsRemoved"], 1, "{body}");
    assert_eq!(body["copiesKeptUnderHold"], 1, "{body}");
    assert_eq!(body["trigger"], "manual");
    assert_eq!(body["removedItemIds"][0], alone.as_str());
    // The shared item lost Alice's copy and kept Bob's.
    let item = get(&server, &format!("{T}/items/{shared}"));
    assert_eq!(item["copies"].as_array().unwrap().len(), 1, "{item}");
    assert_eq!(item["copies"][0]["mailbox"], "bob@contoso.com");
    let (status, _) = call(&server, Method::GET, &format!("{T}/items/{alone}"), None);
    assert_eq!(status, 404);
    let mailboxes = get(&server, &format!("{T}/mailboxes"));
    assert_eq!(
        folder_count(&mailboxes, "alice@contoso.com", "Recoverable Items/Purges"),
        0
    );
    assert_eq!(
        folder_count(&mailboxes, "bob@contoso.com", "Recoverable Items/Purges"),
        1
    );

    // retentionDays 0: every copy received before now; the hold lifted, the rest goes.
    call(
        &server,
        Method::PATCH,
        &format!("{T}/users/bob@contoso.com"),
        Some(json!({"litigationHold": false})),
    );
    call(&server, Method::PATCH, T, Some(json!({"retentionDays": 0})));
    pause();
    let (status, body) = call(&server, Method::POST, &format!("{T}/retention/sweep"), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["copiesRemoved"], 1, "{body}");
    assert_eq!(body["itemsRemoved"], 1, "{body}");
    assert_eq!(total_items(&server), 0);

    // The sweeps are recorded, newest first.
    let sweeps = get(&server, &format!("{T}/retention/sweeps"));
    let removed: Vec<u64> = sweeps["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["copiesRemoved"].as_u64().unwrap())
        .collect();
    assert_eq!(removed, [1, 2, 0]);
    let (status, _) = call(
        &server,
        Method::POST,
        &format!("{T}/retention/sweep?olderThan=yesterday"),
        None,
    );
    assert_eq!(status, 400);
}

#[test]
fn a_reset_empties_the_mailboxes_and_keeps_the_directory() {
    let server = Server::start(&[]);
    let token = server.token();
    ingest(
        &server,
        &token,
        &[
            tweet("a", &["alice@contoso.com"]),
            tweet("b", &["bob@contoso.com", "carol@contoso.com"]),
            tweet("c", &["stranger@elsewhere.example"]),
        ],
    );
    assert_eq!(total_items(&server), 4);
    let (status, body) = call(
        &server,
        Method::POST,
        "/api/tenants",
        Some(json!({"displayName": "Fabrikam", "domains": ["fabrikam.example"]})),
    );
    assert_eq!(status, 201, "{body}");

    let (status, body) = call(&server, Method::POST, "/api/reset", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["removed"], 3, "{body}");
    assert_eq!(body["keptUnderHold"], 0);
    assert_eq!(total_items(&server), 0);
    assert!(get(&server, &format!("{T}/ingestions"))["value"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        server.folder_count(&token, "alice@contoso.com", "recoverableitemspurges"),
        0
    );
    // Tenants, users and apps stay: the same token still ingests.
    get(&server, "/api/tenants/fabrikam.example");
    get(&server, &format!("{T}/users/alice@contoso.com"));
    get(&server, &format!("{T}/applications/{APP_ID}"));
    let (_, ids) = ingest(&server, &token, &[tweet("after", &["alice@contoso.com"])]);
    assert_eq!(ids.len(), 1);
    assert_eq!(total_items(&server), 1);

    // scope=all restores the fixtures: a deleted fixture user comes back, other tenants go.
    let (status, _) = call(
        &server,
        Method::DELETE,
        &format!("{T}/users/carol@contoso.com"),
        None,
    );
    assert_eq!(status, 204);
    let (status, body) = call(&server, Method::POST, "/api/reset?scope=all", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["removed"], 1, "{body}");
    assert_eq!(body["fixturesRestored"], true);
    get(&server, &format!("{T}/users/carol@contoso.com"));
    let (status, _) = call(&server, Method::GET, "/api/tenants/fabrikam.example", None);
    assert_eq!(status, 404);
    assert_eq!(total_items(&server), 0);
    let token = server.token();
    ingest(&server, &token, &[tweet("again", &["carol@contoso.com"])]);

    let (status, _) = call(&server, Method::POST, "/api/reset?scope=everything", None);
    assert_eq!(status, 400);
    let (status, _) = call(&server, Method::POST, "/api/reset?force=maybe", None);
    assert_eq!(status, 400);
}

/// `scope=all` reads and checks the fixtures before it removes anything: a fixture file gone
/// since the start refuses the reset (409, the reason named), and the directory and the
/// mailboxes stay as they were (it wiped the directory and restored nothing).
#[test]
fn a_reset_whose_fixtures_cannot_be_restored_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = dir.path().join("contoso.toml");
    std::fs::write(&fixture, include_str!("../fixtures/contoso.toml")).unwrap();
    let server = Server::start(&["--fixture", fixture.to_str().unwrap()]);
    let token = server.token();
    one(&server, &token, tweet("kept", &["alice@contoso.com"]));
    let before = total_items(&server);
    assert_eq!(before, 1);
    std::fs::remove_file(&fixture).unwrap();
    let (status, body) = call(&server, Method::POST, "/api/reset?scope=all", None);
    assert_eq!(status, 409, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("nothing was reset"), "{body}");
    assert_eq!(total_items(&server), before, "items kept");
    let (status, _) = call(
        &server,
        Method::GET,
        &format!("/api/tenants/{TENANT}/users/alice@contoso.com"),
        None,
    );
    assert_eq!(status, 200, "directory kept");
    let reply = server.ews(&token, &create_item(&[Msg::default().xml()]));
    assert_eq!(reply.status, 200, "tokens and ingestion still work");
}

#[test]
fn deletions_resets_and_the_journal_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[]);
    let token = server.token();
    let (first, _) = ingest(&server, &token, &[tweet("one", &["alice@contoso.com"])]);
    pause();
    let (second, _) = ingest(&server, &token, &[tweet("two", &["alice@contoso.com"])]);
    let doomed = stored_ids(&server, &first).pop().unwrap();
    let (status, _) = call(
        &server,
        Method::DELETE,
        &format!("{T}/items/{doomed}"),
        None,
    );
    assert_eq!(status, 204);
    server.kill();

    let mut server = Server::start_in(dir.path(), &[]);
    let (status, _) = call(&server, Method::GET, &format!("{T}/items/{doomed}"), None);
    assert_eq!(status, 404, "the deletion was durable");
    assert_eq!(total_items(&server), 1);
    let journal = get(&server, &format!("{T}/ingestions"));
    let ids: Vec<&str> = journal["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["correlationId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), first.as_str()]);
    let (status, _) = call(&server, Method::POST, "/api/reset", None);
    assert_eq!(status, 200);
    server.kill();

    let server = Server::start_in(dir.path(), &[]);
    assert_eq!(total_items(&server), 0, "the reset was durable");
    assert!(get(&server, &format!("{T}/ingestions"))["value"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn the_routes_need_the_admin_key_and_names_cannot_break_headers() {
    let server = Server::start(&[]);
    let token = server.token();
    for (method, path) in [
        (Method::GET, format!("{T}/mailboxes")),
        (Method::GET, format!("{T}/ingestions")),
        (Method::POST, format!("{T}/retention/sweep")),
        (Method::POST, "/api/reset".to_string()),
    ] {
        let response = server
            .client()
            .request(method.clone(), format!("{}{path}", server.url))
            .send()
            .unwrap();
        assert_eq!(response.status(), 401, "{method} {path}");
    }
    let id = one(
        &server,
        &token,
        Msg {
            attachments: vec![("we\"ird\\näme.txt".into(), b"x".to_vec())],
            ..Msg::default()
        },
    );
    let response = server
        .admin(Method::GET, &format!("{T}/items/{id}/attachments/0"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        disposition,
        "attachment; filename=\"we_ird_n_me.txt\"; filename*=UTF-8''we%22ird%5Cn%C3%A4me.txt"
    );
    let eml = server
        .admin(Method::GET, &format!("{T}/items/{id}/mime"))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let parsed = MessageParser::default()
        .parse(&eml[..])
        .expect("a MIME message");
    assert_eq!(
        parsed.attachment(0).and_then(|a| a.attachment_name()),
        Some("we\"ird\\näme.txt")
    );
}
