//! Content Search over the wire: every KQL form (each case built so that ignoring the form would
//! return a different set), syntax errors, the mailbox filter, Purges reachability, the latest /
//! wait / delete helpers, searchability right after the 200, and the index across kill -9 and
//! a rebuild from the store.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn search_path() -> String {
    format!("/api/tenants/{TENANT}/search")
}

/// POST search; asserts 200 and answers the body.
fn search(server: &Server, query: &str, mailboxes: &[&str]) -> Value {
    let mut body = json!({ "query": query, "top": 1000 });
    if !mailboxes.is_empty() {
        body["mailboxes"] = json!(mailboxes);
    }
    let response = server
        .admin(Method::POST, &search_path())
        .json(&body)
        .send()
        .expect("search");
    let status = response.status();
    let value: Value = response.json().expect("JSON");
    assert_eq!(status, 200, "search {query:?}: {value}");
    value
}

fn hits(value: &Value) -> Vec<Value> {
    value["hits"].as_array().expect("hits").clone()
}

/// Ingests each message in its own request; answers the item ids in order.
fn ingest(server: &Server, token: &str, messages: &[Msg]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            let reply = server.ews(token, &create_item(&[m.xml()]));
            assert_eq!(reply.status, 200, "{}", reply.body);
            let ids = reply.item_ids();
            assert_eq!(ids.len(), 1, "{}", reply.body);
            ids[0].clone()
        })
        .collect()
}

fn msg(class: &str, subject: &str, body: &str, from: &str, to: &[&str], sent: &str) -> Msg {
    Msg {
        class: Some(class.into()),
        subject: Some(subject.into()),
        body: Some(body.into()),
        from: Some(from.into()),
        to: to.iter().map(|s| s.to_string()).collect(),
        sent: Some(sent.into()),
        ..Msg::default()
    }
}

/// The corpus of the KQL cases: label -> message.
fn corpus() -> Vec<(&'static str, Msg)> {
    let a = msg(
        "IPM.NOTE.Twitter.Tweet",
        "Quarterly report draft",
        "the numbers look great",
        "@alice_contoso",
        &["someone@twitter.example"],
        "2024-01-15T10:00:00Z",
    );
    let mut b = msg(
        "IPM.NOTE.Bloomberg.Message",
        "Bond desk chat",
        "quarterly bond yields rising",
        "bob.kelly@bloomberg.example",
        &["trader@bloomberg.example"],
        "2024-02-01T09:00:00Z",
    );
    b.cc = vec!["carol@contoso.com".into()];
    b.attachments = vec![("yields.xlsx".into(), b"1,2,3".to_vec())];
    let mut c = msg(
        "IPM.NOTE.SMS",
        "Text message",
        "call me about the report",
        "+15550001",
        &["alice@contoso.com"],
        "2023-12-31T23:59:59Z",
    );
    c.bcc = vec!["bob@contoso.com".into()];
    let mut d = msg(
        "IPM.NOTE.Slack.Message",
        "Lunch plans",
        "pizza and salad",
        "someone@slack.example",
        &["nobody@slack.example"],
        "2024-03-10T12:00:00Z",
    );
    d.attachments = vec![("menu.pdf".into(), b"%PDF".to_vec())];
    let mut e = msg(
        "IPM.NOTE.Twitter.DirectMessage",
        "Reporting line",
        "hello world",
        "news@twitter.example",
        &["@alice_contoso"],
        "2024-02-01T00:00:00Z",
    );
    e.cc = vec!["carol@contoso.com".into()];
    vec![("A", a), ("B", b), ("C", c), ("D", d), ("E", e)]
}

struct Corpus {
    server: Server,
    labels: BTreeMap<String, &'static str>,
}

fn start_with_corpus() -> Corpus {
    let server = Server::start(&[]);
    let token = server.token();
    let corpus = corpus();
    let messages: Vec<Msg> = corpus.iter().map(|(_, m)| m.clone()).collect();
    let ids = ingest(&server, &token, &messages);
    let labels = ids
        .into_iter()
        .zip(corpus.iter().map(|(l, _)| *l))
        .collect();
    Corpus { server, labels }
}

impl Corpus {
    /// The labels of the distinct items a query finds.
    fn find(&self, query: &str) -> String {
        let value = search(&self.server, query, &[]);
        let found: BTreeSet<&str> = hits(&value)
            .iter()
            .map(|h| {
                let id = h["itemId"].as_str().unwrap();
                *self.labels.get(id).unwrap_or(&"?")
            })
            .collect();
        found.into_iter().collect::<Vec<_>>().join("")
    }
}

#[test]
fn every_kql_form_selects_the_right_items() {
    let corpus = start_with_corpus();
    let cases: &[(&str, &str)] = &[
        // kind
        ("kind:externaldata", "ABCDE"),
        ("kind:email", ""),
        ("", "ABCDE"),
        // item classes: searched class with a prefix wildcard, exact, and as sent
        ("itemclass:ipm.externaldata.Twitter*", "AE"),
        ("itemclass:IPM.ExternalData.Twitter.Tweet", "A"),
        ("itemclass:IPM.NOTE.Twitter.Tweet", "A"),
        ("itemclass:ipm.note.twitter*", "AE"),
        ("itemclass:IPM.ExternalData.SMS", "C"),
        ("itemclass:ipm.externaldata.twitter", ""),
        // subject and body: the property matters (free text would find more)
        ("subject:report", "A"),
        ("report", "AC"),
        ("subject:report*", "AE"),
        ("body:quarterly", "B"),
        ("quarterly", "AB"),
        // participants by property
        ("from:bob.kelly@bloomberg.example", "B"),
        ("from:alice_contoso", "A"),
        ("to:trader@bloomberg.example", "B"),
        ("cc:carol@contoso.com", "BE"),
        ("bcc:bob@contoso.com", "C"),
        ("to:bob@contoso.com", ""),
        ("participants:carol@contoso.com", "BE"),
        ("participants:bob", "BC"),
        // an address is matched whole: its words are also in other addresses
        ("from:kelly@bloomberg.example", ""),
        ("participants:kelly@bloomberg.example", ""),
        ("from:BOB.KELLY@bloomberg.example", "B"),
        ("from:bob.kelly@bloom*", "B"),
        ("participants:bob@contoso.com", "C"),
        ("to:alice@contoso", ""),
        // half an address is words
        ("participants:@contoso.com", "BCE"),
        ("from:bob.kelly@", "B"),
        // free text reaches participants too
        ("trader", "B"),
        ("news", "E"),
        // attachments
        ("attachmentnames:yields.xlsx", "B"),
        ("attachmentnames:menu*", "D"),
        ("attachmentnames:pizza", ""),
        ("hasattachment:true", "BD"),
        ("hasattachment:false", "ACE"),
        // dates
        ("sent>=2024-02-01", "BDE"),
        ("sent>2024-02-01", "D"),
        ("sent<2024-01-01", "C"),
        ("sent<=2024-01-15", "AC"),
        ("sent=2024-02-01", "BE"),
        ("sent:2024-02-01", "BE"),
        ("sent:2024-01-01..2024-02-01", "ABE"),
        ("sent=2024-01-16..2024-02-29", "BE"),
        ("sent>=2024-02-01T05:00:00Z", "BD"),
        ("sent<2024-02-01T09:00:00Z", "ACE"),
        ("sent>=02/01/2024", "BDE"),
        ("sent<>2024-02-01", "ACD"),
        ("received>=2020-01-01", "ABCDE"),
        ("received<2020-01-01", ""),
        // boolean operators, implicit AND, parentheses
        ("quarterly AND bond", "B"),
        ("quarterly bond", "B"),
        ("quarterly OR pizza", "ABD"),
        ("quarterly NOT bond", "A"),
        ("quarterly -bond", "A"),
        ("-hasattachment:true", "ACE"),
        ("NOT hasattachment:true", "ACE"),
        ("(pizza OR hello) AND hasattachment:false", "E"),
        ("pizza OR hello AND hasattachment:false", "DE"),
        ("NOT (kind:externaldata)", ""),
        ("itemclass:ipm.externaldata.twitter* AND NOT from:news", "A"),
        // a word of punctuation only is no word: the others decide; alone, nothing matches
        ("quarterly & bond", "B"),
        ("report - draft", "A"),
        ("pizza OR &", "D"),
        ("&", ""),
        ("NOT &", ""),
        // lower-case operators are words (KQL): "or" must occur in the item
        ("pizza or hello", ""),
        ("pizza and salad", "D"),
        // phrases versus words
        ("\"look great\"", "A"),
        ("\"great look\"", ""),
        ("great look", "A"),
        ("body:\"yields rising\"", "B"),
        ("subject:\"report draft\"", "A"),
        ("subject:\"quarterly rep*\"", "A"),
        // prefix wildcards
        ("piz*", "D"),
        ("repor*", "ACE"),
        // case-insensitivity of properties and values
        ("SUBJECT:REPORT", "A"),
        ("Pizza", "D"),
        ("ItemClass:IPM.EXTERNALDATA.SLACK*", "D"),
        ("HasAttachment:TRUE", "BD"),
    ];
    let mut failures = Vec::new();
    for (query, expected) in cases {
        let found = corpus.find(query);
        if found != *expected {
            failures.push(format!("{query:?}: expected {expected:?}, found {found:?}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn one_hit_per_copy_reaching_purges_with_a_mailbox_filter() {
    let corpus = start_with_corpus();
    let server = &corpus.server;
    // A: alice; B: bob + carol; C: alice + bob; D: third-party mailbox; E: alice + carol.
    let all = search(server, "kind:externaldata", &[]);
    assert_eq!(all["total"], 8, "{all}");
    assert_eq!(hits(&all).len(), 8);
    let mut places: Vec<(String, String, &str)> = hits(&all)
        .iter()
        .map(|h| {
            (
                h["mailbox"].as_str().unwrap().to_string(),
                h["folder"].as_str().unwrap().to_string(),
                corpus.labels[h["itemId"].as_str().unwrap()],
            )
        })
        .collect();
    places.sort();
    let purges = "Recoverable Items/Purges";
    let expected: Vec<(String, String, &str)> = [
        ("alice@contoso.com", purges, "A"),
        ("alice@contoso.com", purges, "C"),
        ("alice@contoso.com", purges, "E"),
        ("bob@contoso.com", purges, "B"),
        ("bob@contoso.com", purges, "C"),
        ("carol@contoso.com", purges, "B"),
        ("carol@contoso.com", purges, "E"),
        ("thirdpartydata@contoso.com", "Inbox", "D"),
    ]
    .iter()
    .map(|(m, f, l)| (m.to_string(), f.to_string(), *l))
    .collect();
    assert_eq!(places, expected);

    // Hit shape.
    let b = hits(&all)
        .into_iter()
        .find(|h| corpus.labels[h["itemId"].as_str().unwrap()] == "B")
        .unwrap();
    assert_eq!(b["subject"], "Bond desk chat");
    assert_eq!(b["itemClass"], "IPM.NOTE.Bloomberg.Message");
    assert_eq!(b["searchedItemClass"], "IPM.ExternalData.Bloomberg.Message");
    assert_eq!(b["sender"], "bob.kelly@bloomberg.example");
    assert!(
        b["sent"]
            .as_str()
            .unwrap()
            .starts_with("2024-02-01T09:00:00"),
        "{b}"
    );

    // Mailbox filter, by UPN or by any address of the user.
    let carol = search(server, "kind:externaldata", &["carol@contoso.com"]);
    assert_eq!(carol["total"], 2);
    assert!(hits(&carol)
        .iter()
        .all(|h| h["mailbox"] == "carol@contoso.com"));
    let alice = search(server, "kind:externaldata", &["alice.wilber@contoso.com"]);
    assert_eq!(alice["total"], 3);
    let two = search(
        server,
        "hasattachment:true",
        &["carol@contoso.com", "thirdpartydata@contoso.com"],
    );
    assert_eq!(two["total"], 2, "{two}");
    // Purges only holds what search reaches (no user-visible folder).
    let purges_hits = search(
        server,
        "itemclass:ipm.externaldata.twitter*",
        &["alice@contoso.com"],
    );
    assert_eq!(purges_hits["total"], 2);
    assert!(hits(&purges_hits).iter().all(|h| h["folder"] == purges));

    // Paging: top and skip over the copies, newest received first.
    let page = server
        .admin(Method::POST, &search_path())
        .json(&json!({"query": "kind:externaldata", "top": 3, "skip": 6}))
        .send()
        .unwrap();
    let page: Value = page.json().unwrap();
    assert_eq!(page["total"], 8);
    assert_eq!(hits(&page).len(), 2);
    let received: Vec<String> = hits(&all)
        .iter()
        .map(|h| h["received"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = received.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(received, sorted, "newest first");

    // GET with the query in the URL works too.
    let response = server
        .admin(
            Method::GET,
            &format!(
                "{}?query=subject%3Areport&mailboxes=alice%40contoso.com",
                search_path()
            ),
        )
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let value: Value = response.json().unwrap();
    assert_eq!(value["total"], 1);

    // An unknown mailbox is an error, not an empty result.
    let response = server
        .admin(Method::POST, &search_path())
        .json(&json!({"query": "", "mailboxes": ["nobody@contoso.com"]}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    // By domain name of the tenant too; other tenants see nothing of this one.
    let by_domain = server
        .admin(
            Method::POST,
            &format!("/api/tenants/{TENANT_DOMAIN}/search"),
        )
        .json(&json!({"query": "kind:externaldata"}))
        .send()
        .unwrap();
    assert_eq!(by_domain.json::<Value>().unwrap()["total"], 8);
    // The admin key is required.
    let anonymous = server
        .post(&search_path())
        .json(&json!({"query": ""}))
        .send()
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[test]
fn syntax_errors_answer_400_with_the_position_and_what_was_expected() {
    let server = Server::start(&[]);
    let cases: &[(&str, &str)] = &[
        (
            "(subject:report OR body:x",
            "Syntax error at position 26: expected ')' to close the '(' at position 1",
        ),
        (
            "quarterly AND",
            "Syntax error at position 14: expected a search term after AND",
        ),
        (
            "a OR OR b",
            "Syntax error at position 6: expected a search term after OR",
        ),
        (
            "subject:",
            "Syntax error at position 9: expected a value after 'subject:'",
        ),
        ("body:\"open", "Syntax error at position 11: expected '\"'"),
        (
            "colour:red",
            "Syntax error at position 1: unknown property 'colour'",
        ),
        (
            "sent>=tomorrowish",
            "Syntax error at position 7: expected a date",
        ),
        (
            "hasattachment:maybe",
            "Syntax error at position 15: expected true or false",
        ),
        (
            "subject>x",
            "Syntax error at position 8: expected ':' or '='",
        ),
        (
            "a)",
            "Syntax error at position 2: expected the end of the query",
        ),
        (
            "NOT",
            "Syntax error at position 4: expected a search term after NOT",
        ),
    ];
    for (query, expected) in cases {
        let response = server
            .admin(Method::POST, &search_path())
            .json(&json!({ "query": query }))
            .send()
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().unwrap();
        assert_eq!(body["error"]["code"], "Request_BadRequest", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(expected),
            "{query:?}: {message:?} should start with {expected:?}"
        );
    }
    // The helpers check the syntax too.
    for path in ["search/latest", "search/wait", "search"] {
        let method = if path == "search" {
            Method::DELETE
        } else {
            Method::GET
        };
        let response = server
            .admin(method, &format!("/api/tenants/{TENANT}/{path}?query=%28a"))
            .send()
            .unwrap();
        assert_eq!(response.status(), 400, "{path}");
    }
}

/// A query nesting 100,000 parentheses or negations (2 MB of JSON is accepted) is a syntax error
/// at the first level past the limit, not a stack overflow that aborts the server; so is a date
/// at the end of the calendar, whose next day does not exist.
#[test]
fn hostile_queries_are_syntax_errors_and_the_server_stays_up() {
    let server = Server::start(&[]);
    let cases = [
        (
            "(".repeat(100_000) + "a",
            "Syntax error at position 65: the query nests",
        ),
        (
            "-".repeat(100_000) + "a",
            "Syntax error at position 65: the query nests",
        ),
        (
            "NOT ".repeat(100_000) + "a",
            "Syntax error at position 257: the query nests",
        ),
        (
            "sent:+262142-12-31".to_string(),
            "Syntax error at position 6: expected a date",
        ),
    ];
    for (query, expected) in &cases {
        let response = server
            .admin(Method::POST, &search_path())
            .json(&json!({ "query": query }))
            .send()
            .unwrap();
        assert_eq!(response.status(), 400, "{}", &query[..20]);
        let body: Value = response.json().unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(expected),
            "{message:?} should start with {expected:?}"
        );
    }
    let response = server
        .admin(Method::GET, &format!("/api/tenants/{TENANT}"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "the server is still up");
}

#[test]
fn an_item_is_searchable_as_soon_as_its_200_arrives() {
    let server = Server::start(&[]);
    let token = server.token();
    for n in 0..25 {
        let word = format!("fresh{n}x");
        ingest(
            &server,
            &token,
            &[Msg {
                subject: Some(format!("Tweet {word}")),
                ..Msg::default()
            }],
        );
        let value = search(&server, &format!("subject:{word}"), &[]);
        assert_eq!(
            value["total"], 1,
            "item {n} not searchable right after its 200"
        );
    }
}

#[test]
fn latest_answers_the_newest_match_or_404() {
    let server = Server::start(&[]);
    let token = server.token();
    let ids = ingest(
        &server,
        &token,
        &[
            Msg {
                subject: Some("older tweet".into()),
                ..Msg::default()
            },
            Msg {
                subject: Some("newer tweet".into()),
                // Sent earlier: latest goes by received.
                sent: Some("2020-01-01T00:00:00Z".into()),
                ..Msg::default()
            },
            Msg {
                class: Some("IPM.NOTE.SMS".into()),
                subject: Some("newest but an sms".into()),
                ..Msg::default()
            },
        ],
    );
    let response = server
        .admin(
            Method::GET,
            &format!("/api/tenants/{TENANT}/search/latest?query=subject%3Atweet"),
        )
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let hit: Value = response.json().unwrap();
    assert_eq!(hit["itemId"], ids[1].as_str());
    assert_eq!(hit["subject"], "newer tweet");
    assert_eq!(hit["mailbox"], "alice@contoso.com");

    let response = server
        .admin(
            Method::GET,
            &format!("/api/tenants/{TENANT}/search/latest?query=subject%3Anothing"),
        )
        .send()
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().unwrap();
    assert_eq!(body["error"]["code"], "Request_ResourceNotFound");
}

#[test]
fn wait_returns_when_the_count_is_reached_or_times_out() {
    let server = Server::start(&[]);
    let token = server.token();
    let url = server.url.clone();
    let ca = server.ca_cert.clone();
    // Two items arrive later, from another client.
    let writer = std::thread::spawn(move || {
        let client = client_for(ca.as_deref());
        std::thread::sleep(Duration::from_millis(700));
        for n in 0..2 {
            let envelope = create_item(&[Msg {
                subject: Some(format!("awaited item {n}")),
                ..Msg::default()
            }
            .xml()]);
            let response = client
                .post(format!("{url}{SERVICE_PATH}"))
                .bearer_auth(&token)
                .header("Content-Type", "text/xml; charset=utf-8")
                .body(envelope)
                .send()
                .unwrap();
            assert_eq!(response.status(), 200);
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let started = Instant::now();
    let response = server
        .admin(
            Method::GET,
            &format!(
                "/api/tenants/{TENANT}/search/wait?query=subject%3Aawaited&count=2&timeout=20000"
            ),
        )
        .send()
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().unwrap();
    assert_eq!(body["timedOut"], false, "{body}");
    assert_eq!(body["total"], 2);
    assert!(
        elapsed >= Duration::from_millis(900),
        "{elapsed:?}: it waited"
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "{elapsed:?}: woken by indexing"
    );
    writer.join().unwrap();

    // Not enough items: answers at the timeout with what matched.
    let started = Instant::now();
    let response = server
        .admin(
            Method::GET,
            &format!(
                "/api/tenants/{TENANT}/search/wait?query=subject%3Aawaited&count=5&timeout=600"
            ),
        )
        .send()
        .unwrap();
    let elapsed = started.elapsed();
    let body: Value = response.json().unwrap();
    assert_eq!(body["timedOut"], true, "{body}");
    assert_eq!(body["total"], 2);
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");

    // Already satisfied: answers at once.
    let started = Instant::now();
    let response = server
        .admin(
            Method::GET,
            &format!("/api/tenants/{TENANT}/search/wait?query=subject%3Aawaited&timeout=20000"),
        )
        .send()
        .unwrap();
    assert_eq!(response.json::<Value>().unwrap()["timedOut"], false);
    assert!(started.elapsed() < Duration::from_secs(5));

    let response = server
        .admin(
            Method::GET,
            &format!("/api/tenants/{TENANT}/search/wait?query=x&count=many"),
        )
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
}

fn delete(server: &Server, query: &str, force: bool) -> (u16, Value) {
    let path = format!(
        "/api/tenants/{TENANT}/search?query={}{}",
        query.replace(' ', "%20").replace(':', "%3A"),
        if force { "&force=true" } else { "" }
    );
    let response = server.admin(Method::DELETE, &path).send().unwrap();
    (response.status().as_u16(), response.json().unwrap())
}

#[test]
fn delete_by_search_removes_matches_except_under_hold() {
    let server = Server::start(&[]);
    let token = server.token();
    let keep = ingest(
        &server,
        &token,
        &[Msg {
            subject: Some("keep me".into()),
            ..Msg::default()
        }],
    );
    let purge = |to: &str| Msg {
        subject: Some("purge me".into()),
        to: vec![to.into()],
        ..Msg::default()
    };
    let ids = ingest(
        &server,
        &token,
        &[
            purge("alice@contoso.com"),
            purge("bob@contoso.com"),
            purge("carol@contoso.com"),
        ],
    );
    // Carol goes on litigation hold.
    let response = server
        .admin(
            Method::PATCH,
            &format!("/api/tenants/{TENANT}/users/carol@contoso.com"),
        )
        .json(&json!({ "litigationHold": true }))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);

    // An empty query deletes nothing.
    let (status, _) = delete(&server, "", false);
    assert_eq!(status, 400);

    let (status, body) = delete(&server, "subject:purge", false);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["matched"], 3);
    assert_eq!(body["deleted"], 2);
    assert_eq!(body["keptUnderHold"][0]["itemId"], ids[2].as_str());
    // Gone from search and from the store; the held item and the other item stay.
    let left = search(&server, "subject:purge", &[]);
    assert_eq!(left["total"], 1);
    assert_eq!(hits(&left)[0]["itemId"], ids[2].as_str());
    assert_eq!(search(&server, "kind:externaldata", &[])["total"], 2);
    for id in &ids[..2] {
        let response = server
            .admin(Method::GET, &format!("/api/tenants/{TENANT}/items/{id}"))
            .send()
            .unwrap();
        assert_ne!(response.status(), 200, "item {id} should be gone");
    }

    // Only held items left: 409, nothing deleted.
    let (status, body) = delete(&server, "subject:purge", false);
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("hold"));
    assert_eq!(search(&server, "subject:purge", &[])["total"], 1);

    // force=true overrides the hold.
    let (status, body) = delete(&server, "subject:purge", true);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deleted"], 1);
    assert_eq!(search(&server, "subject:purge", &[])["total"], 0);
    let kept = search(&server, "kind:externaldata", &[]);
    assert_eq!(kept["total"], 1);
    assert_eq!(hits(&kept)[0]["itemId"], keep[0].as_str());

    // Nothing matches: 200 with nothing deleted.
    let (status, body) = delete(&server, "subject:purge", false);
    assert_eq!(status, 200);
    assert_eq!(body["deleted"], 0);
}

/// A delete limited to mailboxes purges the matches from those mailboxes only, as a purge of a
/// Content Search limited to those locations does: an item with a copy in another mailbox
/// keeps that copy (and stays searchable there); a hold counts only in those mailboxes.
#[test]
fn delete_by_search_limited_to_mailboxes_removes_only_their_copies() {
    let server = Server::start(&[]);
    let token = server.token();
    let shared = Msg {
        subject: Some("scoped purge".into()),
        to: vec!["alice@contoso.com".into()],
        cc: vec!["bob@contoso.com".into()],
        ..Msg::default()
    };
    let only_alice = Msg {
        subject: Some("scoped purge".into()),
        to: vec!["alice@contoso.com".into()],
        ..Msg::default()
    };
    let ids = ingest(&server, &token, &[shared, only_alice]);
    // Bob is on hold: the purge limited to Alice's mailbox does not care.
    let response = server
        .admin(
            Method::PATCH,
            &format!("/api/tenants/{TENANT}/users/bob@contoso.com"),
        )
        .json(&json!({ "litigationHold": true }))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = server
        .admin(
            Method::DELETE,
            &format!(
                "/api/tenants/{TENANT}/search?query=subject%3Ascoped&mailboxes=alice@contoso.com"
            ),
        )
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().unwrap();
    assert_eq!(body["matched"], 2, "{body}");
    assert_eq!(body["copiesDeleted"], 2, "{body}");
    assert_eq!(body["deletedItemIds"], json!([ids[1]]), "{body}");
    assert_eq!(body["changedItemIds"], json!([ids[0]]), "{body}");
    assert_eq!(
        search(&server, "subject:scoped", &["alice@contoso.com"])["total"],
        0
    );
    let bob = search(&server, "subject:scoped", &["bob@contoso.com"]);
    assert_eq!(bob["total"], 1, "{bob}");
    assert_eq!(hits(&bob)[0]["itemId"], ids[0].as_str());
    assert_eq!(
        server.folder_count(&token, "alice@contoso.com", "recoverableitemspurges"),
        0
    );
    assert_eq!(
        server.folder_count(&token, "bob@contoso.com", "recoverableitemspurges"),
        1
    );
    let item: Value = server
        .admin(
            Method::GET,
            &format!("/api/tenants/{TENANT}/items/{}", ids[0]),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    let copies = item["copies"].as_array().expect("copies");
    assert_eq!(copies.len(), 1, "{item}");
    assert_eq!(copies[0]["mailbox"], "bob@contoso.com");
    // Limited to Bob's mailbox, his hold keeps the item.
    let response = server
        .admin(
            Method::DELETE,
            &format!(
                "/api/tenants/{TENANT}/search?query=subject%3Ascoped&mailboxes=bob@contoso.com"
            ),
        )
        .send()
        .unwrap();
    assert_eq!(response.status(), 409);
}

/// What is searched is the text people read: an HTML body without its markup (a style
/// attribute is no word of the message), and Japanese or Chinese text, written without
/// spaces, by its characters (a word of it is found inside a sentence).
#[test]
fn html_bodies_are_searched_as_text_and_cjk_words_are_found_inside_sentences() {
    let server = Server::start(&[]);
    let token = server.token();
    let html = Msg {
        subject: Some("styled".into()),
        body: Some(
            "&lt;p style=\"color:red\"&gt;Quarterly &amp;amp; budget&lt;/p&gt;&lt;style&gt;td {}&lt;/style&gt;"
                .into(),
        ),
        ..Msg::default()
    }
    .xml()
    .replace("BodyType=\"Text\"", "BodyType=\"HTML\"");
    let cjk = Msg {
        subject: Some("四半期決算報告書の最終版を送付します".into()),
        ..Msg::default()
    };
    let reply = server.ews(&token, &create_item(&[html, cjk.xml()]));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let ids = reply.item_ids();
    let found = |query: &str| -> Vec<String> {
        hits(&search(&server, query, &[]))
            .iter()
            .map(|h| h["itemId"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(found("body:budget"), [ids[0].clone()]);
    assert_eq!(found("quarterly budget"), [ids[0].clone()]);
    for markup in ["color", "style", "red", "td"] {
        assert!(found(markup).is_empty(), "{markup} is markup, not text");
    }
    assert_eq!(found("決算"), [ids[1].clone()]);
    assert_eq!(found("subject:\"最終版\""), [ids[1].clone()]);
    assert_eq!(
        found("四半期決算報告書の最終版を送付します"),
        [ids[1].clone()]
    );
    assert!(found("決報").is_empty(), "characters apart are no word");
}

#[test]
fn the_index_survives_kill_9_and_is_rebuilt_from_the_store_when_missing() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[]);
    let token = server.token();
    ingest(
        &server,
        &token,
        &[
            Msg {
                subject: Some("persisted one".into()),
                ..Msg::default()
            },
            Msg {
                subject: Some("persisted two".into()),
                ..Msg::default()
            },
        ],
    );
    assert_eq!(search(&server, "subject:persisted", &[])["total"], 2);
    // Acknowledged but never searched (so maybe never committed to the index) before kill -9.
    ingest(
        &server,
        &token,
        &[Msg {
            subject: Some("persisted three".into()),
            ..Msg::default()
        }],
    );
    server.kill();

    let mut server = Server::start_in(dir.path(), &[]);
    let value = search(&server, "subject:persisted", &[]);
    assert_eq!(value["total"], 3, "{value}");
    server.kill();

    // The index directory goes away: rebuilt from the store at start-up.
    let index_dir = dir.path().join("data").join("index");
    assert!(index_dir.exists(), "the index lives in {index_dir:?}");
    std::fs::remove_dir_all(&index_dir).unwrap();
    let mut server = Server::start_in(dir.path(), &[]);
    let value = search(&server, "subject:persisted", &[]);
    assert_eq!(value["total"], 3, "{value}");
    assert_eq!(
        search(&server, "subject:\"persisted three\"", &[])["total"],
        1
    );
    server.kill();

    // A corrupt index (garbage meta.json) is rebuilt too.
    std::fs::write(index_dir.join("meta.json"), b"{ not json").unwrap();
    let server = Server::start_in(dir.path(), &[]);
    assert_eq!(search(&server, "subject:persisted", &[])["total"], 3);
}

#[test]
fn item_deletion_and_reset_through_other_routes_reach_the_index() {
    let server = Server::start(&[]);
    let token = server.token();
    let ids = ingest(
        &server,
        &token,
        &[
            Msg {
                subject: Some("doomed one".into()),
                ..Msg::default()
            },
            Msg {
                subject: Some("doomed two".into()),
                ..Msg::default()
            },
        ],
    );
    assert_eq!(search(&server, "subject:doomed", &[])["total"], 2);
    let response = server
        .admin(
            Method::DELETE,
            &format!("/api/tenants/{TENANT}/items/{}", ids[0]),
        )
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let left = search(&server, "subject:doomed", &[]);
    assert_eq!(left["total"], 1);
    assert_eq!(hits(&left)[0]["itemId"], ids[1].as_str());

    let response = server.admin(Method::POST, "/api/reset").send().unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(search(&server, "", &[])["total"], 0);
    ingest(
        &server,
        &token,
        &[Msg {
            subject: Some("after reset".into()),
            ..Msg::default()
        }],
    );
    assert_eq!(search(&server, "", &[])["total"], 1);
}

#[test]
fn a_deleted_item_stays_out_of_the_index_across_kill_9() {
    // Deletions are not in the write-ahead log, so the start-up catch-up cannot find them: the
    // index commits a removal at once.
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[]);
    let token = server.token();
    let ids = ingest(
        &server,
        &token,
        &[
            Msg {
                subject: Some("ephemera kept".into()),
                ..Msg::default()
            },
            Msg {
                subject: Some("ephemera gone".into()),
                ..Msg::default()
            },
        ],
    );
    // Let a checkpoint start a new log segment, then have the index commit past the old one
    // (a search commits it), so the restart's catch-up does not revisit these two items.
    std::thread::sleep(std::time::Duration::from_millis(1600));
    ingest(
        &server,
        &token,
        &[Msg {
            subject: Some("later".into()),
            ..Msg::default()
        }],
    );
    assert_eq!(search(&server, "subject:ephemera", &[])["total"], 2);
    let response = server
        .admin(
            Method::DELETE,
            &format!("/api/tenants/{TENANT}/items/{}", ids[1]),
        )
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    server.kill();

    let server = Server::start_in(dir.path(), &[]);
    let left = search(&server, "subject:ephemera", &[]);
    assert_eq!(left["total"], 1, "{left}");
    assert_eq!(hits(&left)[0]["itemId"], ids[0].as_str());
}
