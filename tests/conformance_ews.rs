//! Every raw request captured from a real EWS client (`../shared/conformance/ews/`) is replayed
//! against the server with a fresh token and must be accepted.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn captures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/ews");
    let mut files = Vec::new();
    for dir in std::fs::read_dir(&root).expect("conformance captures beside the repo") {
        let dir = dir.unwrap().path();
        if dir.is_dir() {
            for file in std::fs::read_dir(&dir).unwrap() {
                let file = file.unwrap().path();
                if file.extension().is_some_and(|e| e == "http") {
                    files.push(file);
                }
            }
        }
    }
    files.sort();
    assert!(
        files.len() >= 9,
        "expected the captured requests, found {files:?}"
    );
    files
}

/// Splits a raw HTTP/1.1 request into request line, headers and body.
fn parse_capture(raw: &str) -> (String, String, Vec<(String, String)>, String) {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .or_else(|| raw.split_once("\n\n"))
        .expect("head and body");
    let mut lines = head.lines();
    let request_line = lines.next().unwrap();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap().to_string();
    let path = parts.next().unwrap().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    (method, path, headers, body.to_string())
}

fn replay(server: &Server, token: &str, file: &Path) -> EwsReply {
    let raw = std::fs::read_to_string(file).unwrap();
    let (method, path, headers, body) = parse_capture(&raw);
    assert_eq!(method, "POST");
    let mut request = server.post(&path);
    for (name, value) in headers {
        let skip = [
            "host",
            "content-length",
            "authorization",
            "connection",
            "accept-encoding",
        ];
        if !skip.contains(&name.to_ascii_lowercase().as_str()) {
            request = request.header(name, value);
        }
    }
    EwsReply::from(request.bearer_auth(token).body(body).send().unwrap())
}

#[test]
fn every_captured_exchangelib_request_is_accepted() {
    let server = Server::start(&[]);
    let token = server.token();
    for file in captures() {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let reply = replay(&server, &token, &file);
        assert_eq!(reply.status, 200, "{name}: {}", reply.body);
        assert!(
            reply.body.contains("ServerVersionInfo"),
            "{name}: version header"
        );
        assert!(reply.correlation_id().is_some(), "{name}: correlation id");
        if name.contains("CreateItem") {
            let messages = reply.messages();
            assert!(!messages.is_empty(), "{name}");
            for (class, code, id) in &messages {
                assert_eq!(
                    (class.as_str(), code.as_str()),
                    ("Success", "NoError"),
                    "{name}: {}",
                    reply.body
                );
                assert!(!id.is_empty(), "{name}: ItemId");
            }
        }
        if name.contains("GetFolder") {
            assert!(reply.body.contains("FolderId"), "{name}: {}", reply.body);
            assert!(reply.body.contains("DisplayName"), "{name}");
        }
    }
}

#[test]
fn the_captured_structured_item_is_stored_as_sent() {
    let server = Server::start(&[]);
    let token = server.token();
    let file = captures()
        .into_iter()
        .find(|f| f.ends_with("exchangelib/004-CreateItem.http"))
        .unwrap();
    let reply = replay(&server, &token, &file);
    let record = server.ingestion(&reply.correlation_id().unwrap());
    let copies = record["items"][0]["copies"].as_array().unwrap();
    let mailboxes: Vec<&str> = copies
        .iter()
        .map(|c| c["mailbox"].as_str().unwrap())
        .collect();
    assert_eq!(mailboxes, ["alice@contoso.com", "bob@contoso.com"]);
    assert!(
        reply.body.contains("AttachmentId"),
        "attachment ids are returned: {}",
        reply.body
    );
}

#[test]
fn the_captured_mime_item_routes_from_its_mime_headers() {
    let server = Server::start(&[]);
    let token = server.token();
    let file = captures()
        .into_iter()
        .find(|f| f.ends_with("exchangelib/006-CreateItem.http"))
        .unwrap();
    let reply = replay(&server, &token, &file);
    let record = server.ingestion(&reply.correlation_id().unwrap());
    assert_eq!(
        record["items"][0]["copies"][0]["mailbox"],
        "alice@contoso.com"
    );
}
