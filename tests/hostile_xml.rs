//! Hostile XML on the ingestion endpoint: one test per case of the "Hostile input" list. Each
//! asserts the documented answer, that the server still serves a normal request afterwards, and
//! that the hostile request stored nothing.
//!
//! Documented answers (request-level faults are SOAP faults with HTTP 500 and an EWS
//! `ResponseCode`, as Exchange answers schema errors):
//! - DOCTYPE / entity declarations (billion laughs, external entity): `ErrorSchemaValidation`
//!   ("contains a DTD"), nothing expanded, nothing fetched.
//! - nesting 100,000 deep: `ErrorSchemaValidation` (more than 64 levels).
//! - 50 MB text node: parsed in bounded memory; answered (per item) and the server's peak RSS
//!   stays well under 512 MB.
//! - 100,000 attributes: `ErrorSchemaValidation` (more than 64 attributes).
//! - invalid UTF-8, truncated documents, two root elements: `ErrorSchemaValidation` (not
//!   well-formed XML).
//! - an unknown encoding: `ErrorSchemaValidation` (only UTF-8 is supported).
//! - invalid base64 in `MimeContent` or an attachment: `ErrorSchemaValidation` naming the element.
//! - a MIME message that is not one: per-item `ErrorMimeContentConversionFailed` in a 200 reply.
//! - dates that are not dates: `ErrorSchemaValidation` naming the element.
//! - 100,000 recipients: accepted (Exchange has no recipient limit on ingestion): one item, one
//!   copy per tenant mailbox, answered within seconds.
//! - a batch over the item limit: `ErrorInvalidRequest` naming the limit, nothing stored.
//! - a GetFolder naming more than 100 folders: `ErrorInvalidRequest` naming the limit (each
//!   folder costs a count of its items); a folder named several times is counted once.

mod common;

use std::time::{Duration, Instant};

use common::*;

const MAILBOX: &str = "alice@contoso.com";
const FOLDER: &str = "recoverableitemspurges";

fn stored(server: &Server, token: &str) -> u64 {
    server.folder_count(token, MAILBOX, FOLDER)
}

/// The server still answers a normal ingestion (and stores it: the count goes up by one).
fn still_serves(server: &Server, token: &str, before: u64) {
    let reply = server.ews(token, &create_item(&[Msg::default().xml()]));
    assert_eq!(
        reply.status, 200,
        "a normal request after the hostile one: {}",
        reply.body
    );
    assert_eq!(reply.item_ids().len(), 1, "{}", reply.body);
    assert_eq!(stored(server, token), before + 1);
}

fn post_raw(server: &Server, token: &str, body: Vec<u8>) -> EwsReply {
    EwsReply::from(
        server
            .post(SERVICE_PATH)
            .bearer_auth(token)
            .header("Content-Type", "text/xml; charset=utf-8")
            .body(body)
            .send()
            .expect("EWS request"),
    )
}

/// Sends `body`, expects a request-level SOAP fault with `status` and `code` (and `detail` in its
/// text), then checks the server is still up and nothing was stored.
fn refused(server: &Server, body: Vec<u8>, status: u16, code: &str, detail: &str) -> EwsReply {
    let token = server.token();
    let before = stored(server, &token);
    let reply = post_raw(server, &token, body);
    assert_eq!(
        reply.status,
        status,
        "{}",
        &reply.body[..reply.body.len().min(2000)]
    );
    assert!(
        reply.body.contains(&format!("ResponseCode xmlns:e=\"http://schemas.microsoft.com/exchange/services/2006/errors\">{code}<")),
        "expected {code}: {}",
        &reply.body[..reply.body.len().min(2000)]
    );
    assert!(
        reply.body.to_lowercase().contains(&detail.to_lowercase()),
        "expected '{detail}' in {}",
        &reply.body[..reply.body.len().min(2000)]
    );
    assert_eq!(stored(server, &token), before, "nothing stored");
    still_serves(server, &token, before);
    reply
}

/// Refused as Exchange refuses a schema violation: the violation once in `faultstring` after
/// "The request failed schema validation: ", `e:Message` exactly "The request failed schema
/// validation." and the violation again in `t:MessageXml/t:Violation` (exchangelib builds its
/// error text from those).
fn schema_refused(server: &Server, body: impl Into<Vec<u8>>, detail: &str) -> EwsReply {
    let reply = refused(server, body.into(), 500, "ErrorSchemaValidation", detail);
    let faultstring = between(
        &reply.body,
        "<faultstring xml:lang=\"en-US\">",
        "</faultstring>",
    )
    .expect("faultstring");
    assert!(
        faultstring.starts_with("The request failed schema validation: ")
            && faultstring.matches("schema validation").count() == 1,
        "{faultstring}"
    );
    assert!(reply
        .body
        .contains(">The request failed schema validation.</e:Message>"));
    let violation = between(&reply.body, "<t:Violation>", "</t:Violation>").expect("t:Violation");
    assert!(
        faultstring.ends_with(&violation),
        "{faultstring} / {violation}"
    );
    reply
}

fn envelope_with(message_inner: &str) -> String {
    create_item(&[Msg::default()
        .xml()
        .replace("</t:Message>", &format!("{message_inner}</t:Message>"))])
}

#[test]
fn billion_laughs_is_refused_as_a_dtd() {
    let server = Server::start(&[]);
    let mut dtd =
        String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n<!ENTITY lol \"lol\">\n");
    dtd += "<!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n";
    for i in 2..10 {
        let prev = format!("&lol{};", i - 1).repeat(10);
        dtd += &format!("<!ENTITY lol{i} \"{prev}\">\n");
    }
    dtd += "]>\n";
    let body = create_item(&[Msg {
        subject: Some("&lol9;".into()),
        ..Msg::default()
    }
    .xml()])
    .replacen("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n", &dtd, 1);
    schema_refused(&server, body, "DTD");
}

#[test]
fn external_entity_is_refused_and_never_read() {
    let server = Server::start(&[]);
    let prolog =
        "<?xml version=\"1.0\"?>\n<!DOCTYPE foo [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>\n";
    let body = create_item(&[Msg {
        subject: Some("&xxe;".into()),
        ..Msg::default()
    }
    .xml()])
    .replacen("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n", prolog, 1);
    schema_refused(&server, body.clone(), "DTD");
    // Without the DOCTYPE, the entity reference is simply undeclared.
    let undeclared = body.replacen(prolog, "", 1);
    let token = server.token();
    let reply = post_raw(&server, &token, undeclared.into_bytes());
    assert!(!reply.body.contains("root:"), "no file content ever echoed");
}

#[test]
fn nesting_100_000_deep_is_refused() {
    let server = Server::start(&[]);
    let deep = format!("{}{}", "<t:X>".repeat(100_000), "</t:X>".repeat(100_000));
    schema_refused(&server, envelope_with(&deep), "nested more than");
}

#[test]
fn a_50_mb_text_node_is_handled_in_bounded_memory() {
    let server = Server::start(&["--max-body-bytes", &(128 * 1024 * 1024).to_string()]);
    let token = server.token();
    let before = stored(&server, &token);
    let text = "x".repeat(50 * 1024 * 1024);
    // In an element the parser does not know (skipped) and in the body of an item.
    let skipped = envelope_with(&format!("<t:Unknown>{text}</t:Unknown>"));
    let started = Instant::now();
    let reply = post_raw(&server, &token, skipped.into_bytes());
    eprintln!(
        "50 MB in an unknown element: {} in {:?}",
        reply.status,
        started.elapsed()
    );
    assert!(
        reply.status == 200 || reply.status == 500,
        "{}",
        reply.status
    );
    let body = create_item(&[Msg {
        body: Some(text),
        ..Msg::default()
    }
    .xml()]);
    let started = Instant::now();
    let reply = post_raw(&server, &token, body.into_bytes());
    eprintln!(
        "50 MB item body: {} in {:?}",
        reply.status,
        started.elapsed()
    );
    assert!(
        reply.status == 200 || reply.status == 500,
        "{}",
        reply.status
    );
    let stored_now = stored(&server, &token);
    let hwm = server.peak_rss_kb().expect("VmHWM");
    eprintln!(
        "server peak RSS after two 50 MB requests: {} MB",
        hwm / 1024
    );
    assert!(hwm < 512 * 1024, "peak RSS {hwm} kB");
    // Whatever was accepted is whole; the server still serves.
    still_serves(&server, &token, stored_now);
    assert!(stored_now <= before + 2);
}

#[test]
fn one_hundred_thousand_attributes_are_refused() {
    let server = Server::start(&[]);
    let attributes: String = (0..100_000).map(|i| format!(" a{i}=\"v\"")).collect();
    let body = create_item(&[Msg::default().xml()]).replacen(
        "<t:Message>",
        &format!("<t:Message{attributes}>"),
        1,
    );
    schema_refused(&server, body, "more than 64 attributes");
}

#[test]
fn invalid_utf8_is_refused() {
    let server = Server::start(&[]);
    let mut body = create_item(&[Msg {
        subject: Some("SUBJECT".into()),
        ..Msg::default()
    }
    .xml()])
    .into_bytes();
    let at = body.windows(7).position(|w| w == b"SUBJECT").unwrap();
    body[at] = 0xC3;
    body[at + 1] = 0x28;
    body[at + 2] = 0xFF;
    schema_refused(&server, body, "UTF-8");
}

#[test]
fn an_unknown_encoding_is_refused() {
    let server = Server::start(&[]);
    let body = create_item(&[Msg::default().xml()]).replacen(
        "encoding=\"utf-8\"",
        "encoding=\"x-klingon-7\"",
        1,
    );
    schema_refused(&server, body, "x-klingon-7");
}

#[test]
fn truncated_documents_are_refused() {
    let server = Server::start(&[]);
    let whole = create_item(&[Msg::default().xml()]);
    for cut in [
        whole.len() / 3,
        whole.len() / 2,
        whole.len() - 20,
        whole.len() - 1,
    ] {
        schema_refused(&server, whole.as_bytes()[..cut].to_vec(), "well-formed");
    }
}

#[test]
fn two_root_elements_are_refused() {
    let server = Server::start(&[]);
    let one = create_item(&[Msg::default().xml()]);
    let two = format!(
        "{one}{}",
        one.replacen("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n", "", 1)
    );
    schema_refused(&server, two, "well-formed");
}

#[test]
fn invalid_base64_in_mime_content_is_refused() {
    let server = Server::start(&[]);
    let reply = schema_refused(
        &server,
        envelope_with("<t:MimeContent>!!!not*base64$$</t:MimeContent>"),
        "MimeContent",
    );
    // Where: the line and column of the element, as Exchange gives them.
    let number = |name: &str| -> u64 {
        between(&reply.body, &format!("<t:{name}>"), &format!("</t:{name}>"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("t:{name} in {}", reply.body))
    };
    assert!(number("LineNumber") >= 1 && number("LinePosition") > 1);
}

#[test]
fn invalid_base64_in_an_attachment_is_refused() {
    let server = Server::start(&[]);
    let attachment = "<t:Attachments><t:FileAttachment><t:Name>a.bin</t:Name><t:Content>%%%not base64%%%</t:Content></t:FileAttachment></t:Attachments>";
    let body = create_item(&[Msg::default().xml()]).replacen(
        "<t:DateTimeSent>",
        &format!("{attachment}<t:DateTimeSent>"),
        1,
    );
    schema_refused(&server, body, "Content");
}

#[test]
fn a_mime_message_that_is_not_one_fails_per_item() {
    use base64::Engine;
    let server = Server::start(&[]);
    let token = server.token();
    let before = stored(&server, &token);
    let junk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mime = base64::engine::general_purpose::STANDARD.encode(&junk);
    let message = format!(
        "<t:Message><t:MimeContent CharacterSet=\"UTF-8\">{mime}</t:MimeContent><t:ItemClass>IPM.Note</t:ItemClass></t:Message>"
    );
    let reply = server.ews(&token, &create_item(&[message, Msg::default().xml()]));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let messages = reply.messages();
    assert_eq!(messages.len(), 2, "{}", reply.body);
    assert_eq!(messages[0].0, "Error", "{}", reply.body);
    assert_eq!(
        messages[0].1, "ErrorMimeContentConversionFailed",
        "{}",
        reply.body
    );
    assert_eq!(
        messages[1].0, "Success",
        "the good item of the batch is stored: {}",
        reply.body
    );
    assert_eq!(stored(&server, &token), before + 1, "only the good item");
    still_serves(&server, &token, before + 1);
}

#[test]
fn dates_that_are_not_dates_are_refused() {
    let server = Server::start(&[]);
    for date in [
        "yesterday",
        "2024-13-45T99:99:99Z",
        "",
        "2024-03-01T12:00:00Z<",
        "\u{0}",
    ] {
        let body = create_item(&[Msg {
            sent: Some(date.replace('<', "&lt;").replace('\u{0}', "&#1;")),
            ..Msg::default()
        }
        .xml()]);
        let token = server.token();
        let before = stored(&server, &token);
        let reply = post_raw(&server, &token, body.into_bytes());
        assert_eq!(reply.status, 500, "date {date:?}: {}", reply.body);
        assert!(
            reply.body.contains(">ErrorSchemaValidation<"),
            "date {date:?}: {}",
            reply.body
        );
        eprintln!(
            "date {date:?}: {} {}",
            reply.status,
            common::between(&reply.body, "ResponseCode", "</").unwrap_or_default()
        );
        assert_eq!(
            stored(&server, &token),
            before,
            "date {date:?}: nothing stored"
        );
        still_serves(&server, &token, before);
    }
}

#[test]
fn one_hundred_thousand_recipients_are_accepted_quickly() {
    let server = Server::start(&[]);
    let token = server.token();
    let before = stored(&server, &token);
    let mut to: Vec<String> = (0..100_000)
        .map(|i| format!("r{i}@external.example"))
        .collect();
    to.push(MAILBOX.into());
    let body = create_item(&[Msg {
        to,
        ..Msg::default()
    }
    .xml()]);
    let started = Instant::now();
    let reply = post_raw(&server, &token, body.into_bytes());
    let took = started.elapsed();
    eprintln!("100,000 recipients: {} in {took:?}", reply.status);
    assert_eq!(
        reply.status,
        200,
        "{}",
        &reply.body[..reply.body.len().min(2000)]
    );
    assert_eq!(
        reply.item_ids().len(),
        1,
        "{}",
        &reply.body[..reply.body.len().min(2000)]
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert_eq!(
        stored(&server, &token),
        before + 1,
        "one copy in the tenant mailbox"
    );
    let hwm = server.peak_rss_kb().expect("VmHWM");
    assert!(hwm < 512 * 1024, "peak RSS {hwm} kB");
    still_serves(&server, &token, before + 1);
}

#[test]
fn a_batch_over_the_item_limit_is_refused_whole() {
    let server = Server::start(&["--max-items-per-request", "10"]);
    let messages: Vec<String> = (0..11).map(|_| Msg::default().xml()).collect();
    refused(
        &server,
        create_item(&messages).into_bytes(),
        500,
        "ErrorInvalidRequest",
        "10",
    );
}

#[test]
fn a_batch_over_the_default_item_limit_of_1000_is_refused_whole() {
    let server = Server::start(&[]);
    let messages: Vec<String> = (0..1001).map(|_| Msg::default().xml()).collect();
    refused(
        &server,
        create_item(&messages).into_bytes(),
        500,
        "ErrorInvalidRequest",
        "1000",
    );
}

#[test]
fn a_get_folder_naming_more_than_100_folders_is_refused() {
    let server = Server::start(&[]);
    let token = server.token();
    let with_ids = |n: usize| {
        get_folder(MAILBOX, "inbox").replace(
            "<t:DistinguishedFolderId Id=\"inbox\"/>",
            &"<t:DistinguishedFolderId Id=\"inbox\"/>".repeat(n),
        )
    };
    let reply = server.ews(&token, &with_ids(100));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body.matches("TotalCount>0<").count(), 100);
    refused(
        &server,
        with_ids(101).into_bytes(),
        500,
        "ErrorInvalidRequest",
        "at most 100 folders",
    );
}
