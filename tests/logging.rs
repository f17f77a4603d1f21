//! Logs: JSON lines with `--log-format json`; every line of a request carries its correlation
//! id (the one answered in `x-IngestionCorrelationID`); no token or secret is ever logged.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use common::*;

/// The server on a throw-away store, plain HTTP, any port, its banner on a pipe.
fn ephemeral_server() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ingest-emulator"));
    command
        .args([
            "serve",
            "--ephemeral",
            "--no-tls",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped());
    command
}

#[test]
fn json_logs_carry_the_correlation_id_and_never_the_token() {
    let mut child = ephemeral_server()
        .args([
            "--admin-key",
            "log-test-key",
            "--log-format",
            "json",
            "--log",
            "info,tantivy=warn,ingest_emulator=debug",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    // Read the logs as they come, so the server never blocks on a full pipe.
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut logs = String::new();
        stderr.read_to_string(&mut logs).unwrap();
        logs
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("banner").unwrap();
        if let Some(rest) = line.trim().strip_prefix("Base URL:") {
            break rest.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let client = client_for(None);
    let token = {
        let response = client
            .post(format!("{url}/{TENANT}/oauth2/v2.0/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", APP_ID),
                ("client_secret", APP_SECRET),
                ("scope", EXCHANGE_SCOPE),
            ])
            .send()
            .unwrap();
        let body: serde_json::Value = response.json().unwrap();
        body["access_token"].as_str().unwrap().to_string()
    };
    let response = client
        .post(format!("{url}{SERVICE_PATH}"))
        .bearer_auth(&token)
        .body(create_item(&[Msg::default().xml()]))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let correlation = response.headers()["x-ingestioncorrelationid"]
        .to_str()
        .unwrap()
        .to_string();
    // A refused token request is logged with the Trace ID its client got, not its secret.
    const WRONG_SECRET: &str = "wrong-secret-never-logged-7f3a";
    let refused: serde_json::Value = client
        .post(format!("{url}/{TENANT}/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", APP_ID),
            ("client_secret", WRONG_SECRET),
            ("scope", EXCHANGE_SCOPE),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let trace_id = refused["trace_id"].as_str().expect("trace_id").to_string();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
    let logs = reader.join().unwrap();

    let mut request_lines = 0;
    let mut answered_lines = 0;
    let mut refused_lines = 0;
    for line in logs.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(!line.contains(&token), "a token was logged: {line}");
        assert!(!line.contains(APP_SECRET), "a secret was logged: {line}");
        assert!(!line.contains(WRONG_SECRET), "a secret was logged: {line}");
        if value["fields"]["message"] == "identity request refused" {
            assert_eq!(value["fields"]["trace_id"], trace_id.as_str(), "{line}");
            assert_eq!(value["fields"]["code"], 7000215, "{line}");
            assert!(value["span"]["correlation_id"].is_string(), "{line}");
            refused_lines += 1;
        }
        if value["span"]["path"] == SERVICE_PATH {
            assert_eq!(
                value["span"]["correlation_id"],
                correlation.as_str(),
                "{line}"
            );
            request_lines += 1;
            if value["fields"]["message"] == "EWS request answered" {
                // The one info line of the request: who sent it and what came of it.
                assert_eq!(value["span"]["tenant"], TENANT, "{line}");
                assert_eq!(value["span"]["app"], APP_ID, "{line}");
                assert_eq!(value["span"]["stored"], 1, "{line}");
                assert_eq!(value["fields"]["outcome"], "Success", "{line}");
                answered_lines += 1;
            }
        }
    }
    assert!(request_lines >= 2, "the request logged its lines: {logs}");
    assert_eq!(answered_lines, 1, "one 'answered' line: {logs}");
    assert_eq!(refused_lines, 1, "the refused token request's line: {logs}");
}

/// The start-up banner says where the generated admin key is, never the key: stdout ends up
/// in container and CI logs.
#[test]
fn the_banner_names_the_admin_key_file_not_the_key() {
    let mut child = ephemeral_server()
        .env_remove("INGEST_ADMIN_KEY")
        .stderr(Stdio::null())
        .spawn()
        .expect("start");
    let mut banner = String::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut key_file = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        banner.push_str(&line);
        banner.push('\n');
        if let Some(rest) = line.trim().strip_prefix("Admin key:") {
            let rest = rest.trim();
            let path = rest
                .strip_prefix("in ")
                .and_then(|r| r.split("  (").next())
                .unwrap_or_else(|| panic!("where the key is: {rest}"));
            key_file = Some(path.to_string());
        }
        if line.trim().starts_with("Store:") {
            break;
        }
    }
    let key_file = key_file.expect("an 'Admin key:' line");
    let key = std::fs::read_to_string(&key_file).expect("the key file");
    let key = key.trim();
    assert!(key.len() >= 16, "a generated key: {key_file}");
    assert!(!banner.contains(key), "the key was printed:\n{banner}");
    let _ = child.kill();
    let _ = child.wait();
}
