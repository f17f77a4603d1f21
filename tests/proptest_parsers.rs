//! Property tests for every parser that takes client bytes: the SOAP request parser, the MIME
//! parser, the Authorization header path (bearer JWT and Basic) and the KQL query parser (with
//! the search that runs what it parsed). Property: never panics, and always answers `Ok` or a
//! typed error (whose wire mapping is total).
//!
//! Default: 256 cases per property (proptest's default). A long session:
//! `PROPTEST_CASES=100000 cargo test --release --test proptest_parsers`.
//! Any failure found becomes a named regression test at the end of this file.

use axum::response::IntoResponse;
use ingest_emulator::app::AppState;
use ingest_emulator::config::{Config, ServeArgs};
use ingest_emulator::errors::EndpointError;
use ingest_emulator::ews::{parse_mime, parse_request};
use ingest_emulator::search::kql;
use proptest::prelude::*;

const ENVELOPE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types" xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages">
  <soap:Header><t:RequestServerVersion Version="Exchange2013_SP1"/></soap:Header>
  <soap:Body>
    <m:CreateItem MessageDisposition="SaveOnly">
      <m:Items><t:Message><t:ItemClass>IPM.NOTE.Twitter.Tweet</t:ItemClass><t:Subject>Tweet &amp; more</t:Subject><t:Body BodyType="Text">hello world</t:Body><t:Attachments><t:FileAttachment><t:Name>a.txt</t:Name><t:Content>SGVsbG8=</t:Content></t:FileAttachment></t:Attachments><t:DateTimeSent>2024-03-01T12:00:00Z</t:DateTimeSent><t:ToRecipients><t:Mailbox><t:EmailAddress>alice@contoso.com</t:EmailAddress></t:Mailbox></t:ToRecipients><t:From><t:Mailbox><t:EmailAddress>contoso@twitter.example</t:EmailAddress></t:Mailbox></t:From><t:ExtendedProperty><t:ExtendedFieldURI PropertySetId="00020329-0000-0000-C000-000000000046" PropertyName="X" PropertyType="String"/><t:Value>v</t:Value></t:ExtendedProperty></t:Message><t:Message><t:MimeContent CharacterSet="UTF-8">RnJvbTogYUBiLmNvbQ0KVG86IGNAZC5jb20NClN1YmplY3Q6IGhpDQoNCmJvZHk=</t:MimeContent></t:Message></m:Items>
    </m:CreateItem>
  </soap:Body>
</soap:Envelope>"#;

const MIME: &str = "From: Alice <alice@contoso.com>\r\nTo: bob@contoso.com\r\nSubject: =?utf-8?b?aMOpbGxv?=\r\nDate: Fri, 1 Mar 2024 12:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n--b1\r\nContent-Type: application/octet-stream; name=a.bin\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=a.bin\r\n\r\nAAECAwQ=\r\n--b1--\r\n";

/// One edit of a valid document.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let markup = prop::sample::select(vec![
        b"<".to_vec(),
        b">".to_vec(),
        b"</".to_vec(),
        b"/>".to_vec(),
        b"&".to_vec(),
        b"&amp;".to_vec(),
        b"&#0;".to_vec(),
        b"&#xD800;".to_vec(),
        b"\"".to_vec(),
        b"=".to_vec(),
        b"<![CDATA[".to_vec(),
        b"]]>".to_vec(),
        b"<!DOCTYPE x>".to_vec(),
        b"<?pi x?>".to_vec(),
        b"<!--".to_vec(),
        b"xmlns:t=\"\"".to_vec(),
        b"\xff\xfe".to_vec(),
        b"\r\n".to_vec(),
        b"--b1\r\n".to_vec(),
        b"=?utf-8?q?".to_vec(),
        b"Content-Type: multipart/mixed; boundary=".to_vec(),
    ]);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Flip(p, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(p, b)| Edit::Insert(p, b)),
        (any::<usize>(), markup).prop_map(|(p, b)| Edit::Insert(p, b)),
        (any::<usize>(), 1usize..64).prop_map(|(p, n)| Edit::Delete(p, n)),
        (any::<usize>(), 1usize..256).prop_map(|(p, n)| Edit::Duplicate(p, n)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(doc: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut d = doc.to_vec();
    for e in edits {
        let len = d.len().max(1);
        match e {
            Edit::Flip(p, b) => {
                if !d.is_empty() {
                    let i = p % d.len();
                    d[i] = *b;
                }
            }
            Edit::Insert(p, bytes) => {
                let i = p % (d.len() + 1);
                d.splice(i..i, bytes.iter().copied());
            }
            Edit::Delete(p, n) => {
                let i = p % len;
                let j = (i + n).min(d.len());
                if i < j {
                    d.drain(i..j);
                }
            }
            Edit::Duplicate(p, n) => {
                let i = p % len;
                let j = (i + n).min(d.len());
                if i < j {
                    let copy: Vec<u8> = d[i..j].to_vec();
                    d.splice(j..j, copy);
                }
            }
            Edit::Truncate(p) => d.truncate(p % len),
        }
    }
    d
}

/// Parses and, on error, maps the error to its wire answer (which must not panic either).
fn soap(bytes: &[u8]) {
    match parse_request(bytes) {
        Ok(request) => {
            let _ = format!("{request:?}");
        }
        Err(error) => {
            let _ = error.response_code();
            let _ = error.to_string();
            let response = EndpointError::Parse(error).into_response();
            assert_eq!(response.status(), 500);
        }
    }
}

fn mime(bytes: &[u8]) {
    match parse_mime(bytes) {
        Ok(message) => {
            let _ = format!("{message:?}");
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
}

/// An application state (store seeded with the default tenant) for the Authorization path, in
/// a directory removed when the test drops it (a `static` state would never be dropped, and
/// would leave its directory behind after every run).
fn state() -> (tempfile::TempDir, AppState) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::resolve(ServeArgs {
        admin_key: Some("proptest-admin-key".into()),
        legacy_basic_auth: Some(true),
        ephemeral: Some(true),
        ..ServeArgs::default()
    })
    .unwrap();
    let state = AppState::open(config, dir.path()).unwrap();
    // The index is built in the background at first open; done before the test can end, so
    // nothing writes into the directory while it is removed.
    state.search.wait_ready().unwrap();
    (dir, state)
}

/// Checks `property` on values of `strategy` as `proptest!` does (`PROPTEST_CASES`, shrinking,
/// the regression file), for properties that need a state owned by the test.
fn check<S: Strategy>(strategy: S, property: impl Fn(S::Value)) {
    let config = ProptestConfig {
        source_file: Some(file!()),
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    if let Err(e) = runner.run(&strategy, |value| {
        property(value);
        Ok(())
    }) {
        panic!("{e}");
    }
}

fn authorization(state: &AppState, value: &[u8]) {
    let Ok(value) = http::HeaderValue::from_bytes(value) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, value);
    match ingest_emulator::identity::authenticate(state, &headers) {
        Ok(principal) => panic!("an arbitrary Authorization was accepted: {principal:?}"),
        Err(error) => {
            let _ = error.www_authenticate();
            let _ = error.diagnostics();
            let response = EndpointError::Auth(error).into_response();
            assert_eq!(response.status(), 401);
        }
    }
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// JSON-ish token segments: headers and claims with plausible keys and hostile values.
fn json_segment() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        Just(serde_json::json!(null)),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>().prop_map(|n| serde_json::json!(n)),
        ".{0,40}".prop_map(|s| serde_json::json!(s)),
        Just(serde_json::json!(["full_access_as_app"])),
        Just(serde_json::json!({"nested": [1, {"a": []}]})),
        Just(serde_json::json!("RS256")),
        Just(serde_json::json!("none")),
        Just(serde_json::json!("https://outlook.office365.com")),
        Just(serde_json::json!("11111111-1111-1111-1111-111111111111")),
    ];
    let key = prop::sample::select(vec![
        "alg", "kid", "typ", "x5t", "jku", "aud", "iss", "tid", "appid", "azp", "roles", "exp",
        "nbf", "iat", "ver", "oid", "sub",
    ]);
    prop::collection::vec((key, value), 0..10).prop_map(|pairs| {
        let map: serde_json::Map<String, serde_json::Value> =
            pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        b64url(serde_json::Value::Object(map).to_string().as_bytes())
    })
}

proptest! {
    #[test]
    fn soap_parser_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        soap(&bytes);
    }

    #[test]
    fn soap_parser_never_panics_on_arbitrary_text(text in "\\PC{0,2000}") {
        soap(text.as_bytes());
    }

    #[test]
    fn soap_parser_never_panics_on_mutated_envelopes(edits in prop::collection::vec(edit(), 1..8)) {
        soap(&apply(ENVELOPE.as_bytes(), &edits));
    }

    #[test]
    fn mime_parser_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        mime(&bytes);
    }

    #[test]
    fn mime_parser_never_panics_on_mutated_messages(edits in prop::collection::vec(edit(), 1..8)) {
        mime(&apply(MIME.as_bytes(), &edits));
    }
}

#[test]
fn authorization_never_panics_on_arbitrary_values() {
    let (_dir, state) = state();
    check(prop::collection::vec(any::<u8>(), 0..512), |bytes| {
        authorization(&state, &bytes)
    });
}

#[test]
fn bearer_never_panics_on_jwt_shaped_tokens() {
    let (_dir, state) = state();
    let scheme = prop::sample::select(vec![
        "Bearer",
        "bearer",
        "BEARER",
        "Bearer  ",
        "Basic",
        "Negotiate",
    ]);
    let signature = prop::collection::vec(any::<u8>(), 0..300);
    check(
        (json_segment(), json_segment(), signature, scheme),
        |(header, claims, signature, scheme)| {
            let value = format!("{scheme} {header}.{claims}.{}", b64url(&signature));
            authorization(&state, value.as_bytes());
        },
    );
}

#[test]
fn basic_never_panics_on_arbitrary_credentials() {
    use base64::Engine;
    let (_dir, state) = state();
    check(prop::collection::vec(any::<u8>(), 0..300), |bytes| {
        let value = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(&bytes)
        );
        authorization(&state, value.as_bytes());
    });
}

/// A KQL token: operators, parentheses, properties with every operator, dates near the ends
/// of the calendar, phrases, wildcards, and junk.
fn kql_token() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "(",
        ")",
        "-",
        "+",
        "NOT",
        "AND",
        "OR",
        "and",
        "*",
        "\"",
        ":",
        "..",
        "<>",
        ">=",
        "<=",
        "=",
        "subject:",
        "body:",
        "from:",
        "to:",
        "participants:",
        "itemclass:",
        "kind:",
        "hasattachment:",
        "attachmentnames:",
        "sent:",
        "sent>=",
        "sent<",
        "received=",
        "received<>",
        "2024-01-31",
        "01/31/2024",
        "+262142-12-31",
        "-262143-01-01",
        "9999-12-31T23:59:59Z",
        "2024-02-30",
        "1970-01-01..2024-01-01",
        "true",
        "maybe",
        "ipm.externaldata.twitter*",
        "\"look great\"",
        "repor*",
        "é",
        "\u{0}",
        " ",
    ]);
    prop_oneof![
        4 => fixed.prop_map(str::to_string),
        1 => "\\PC{1,12}",
    ]
}

fn kql(state: &AppState, query: &str) {
    match kql::parse(query) {
        Ok(expr) => {
            // What parses, runs: building and running the query must not panic either.
            let tenant = uuid::Uuid::nil();
            let _ = state.search.search(tenant, &expr, &[], 0, 10);
        }
        Err(e) => {
            let positions = query.chars().count() + 1;
            assert!(
                (1..=positions).contains(&e.position),
                "position {} outside 1..={positions} for {query:?}: {}",
                e.position,
                e.message
            );
        }
    }
}

#[test]
fn kql_never_panics_on_token_soup() {
    let (_dir, state) = state();
    let soup = prop::collection::vec(kql_token(), 0..40)
        .prop_flat_map(|tokens| {
            let n = tokens.len();
            (Just(tokens), prop::collection::vec(any::<bool>(), n))
        })
        .prop_map(|(tokens, spaces)| {
            tokens
                .iter()
                .zip(spaces)
                .map(|(t, space)| if space { format!("{t} ") } else { t.clone() })
                .collect::<String>()
        });
    check(soup, |query| kql(&state, &query));
}

#[test]
fn kql_never_panics_on_arbitrary_text_or_deep_nesting() {
    let (_dir, state) = state();
    check("\\PC{0,300}", |query| kql(&state, &query));
    let opener = prop::sample::select(vec!["(", "-", "NOT ", "+", "(-", "NOT ("]);
    check((opener, 0usize..200_000), |(opener, depth)| {
        kql(&state, &(opener.repeat(depth) + "a"));
    });
}

// ----- Regression tests (failures found by the properties above) -----

#[test]
fn regression_empty_and_whitespace_bodies() {
    soap(b"");
    soap(b" \r\n\t");
    soap(b"\xEF\xBB\xBF");
    mime(b"");
    mime(b"\r\n\r\n");
    let (_dir, state) = state();
    for value in [&b"Bearer"[..], b"Bearer ..", b"Basic", b"Basic ="] {
        authorization(&state, value);
    }
}

#[test]
fn regression_kql_nesting_and_the_last_day_of_the_calendar() {
    let (_dir, state) = state();
    kql(&state, &"(".repeat(100_000));
    kql(&state, &("-".repeat(100_000) + "a"));
    kql(&state, "sent:+262142-12-31");
    kql(&state, "received>=+262142-12-31");
}
