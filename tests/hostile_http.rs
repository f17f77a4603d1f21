//! Hostile HTTP on the ingestion endpoint. Documented answers:
//! - a Content-Length over `--max-body-bytes`: 413 `ErrorRequestTooLarge` at once, before any of
//!   the body is read, and the connection is closed.
//! - a chunked body that passes the limit: 413 `ErrorRequestTooLarge` as soon as the bytes read
//!   pass the limit (the rest is never read).
//! - a body shorter than its Content-Length, or a body trickled too slowly: 408
//!   `ErrorTimeoutExpired` after `--body-timeout-secs` (default 30) plus a second per 64 KiB
//!   received, connection closed; on every other endpoint that reads a body, 408 with a text
//!   message, connection closed. A body arriving at 64 KiB/s or more is never cut.
//! - a request head not complete within `--header-timeout-secs` (default 30), a connection
//!   that sends nothing, or one that starts HTTP/2 (a preface, part of one, or a TLS handshake
//!   with ALPN `h2`) and asks nothing: the connection is closed. So is any connection that has
//!   answered no request for that long.
//! - more connections than `--max-connections` (default 4096): the extra ones wait in the
//!   kernel's accept backlog and are served as soon as others close.
//! - HTTP/1.1 and HTTP/2 are both served (ALPN on TLS; prior knowledge on plain HTTP).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

const MAILBOX: &str = "alice@contoso.com";
const FOLDER: &str = "recoverableitemspurges";

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
}

fn head(token: &str, extra: &str) -> String {
    format!(
        "POST {SERVICE_PATH} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Type: text/xml; charset=utf-8\r\n{extra}\r\n"
    )
}

/// Reads until the peer closes or `timeout`; what was read (lossy UTF-8).
fn read_answer(stream: &mut TcpStream, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&out);
                // A complete answer with a Content-Length: stop there.
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end].lines().find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    });
                    if let Some(length) = length {
                        if out.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn still_serves(server: &Server, token: &str, before: u64) {
    let reply = server.ews(token, &create_item(&[Msg::default().xml()]));
    assert_eq!(
        reply.status, 200,
        "a normal request afterwards: {}",
        reply.body
    );
    assert_eq!(
        server.folder_count(token, MAILBOX, FOLDER),
        before + 1,
        "only the normal request stored"
    );
}

#[test]
fn a_10_gb_content_length_is_refused_at_once() {
    let server = Server::start(&["--no-tls"]);
    let token = server.token();
    let mut stream = connect(&server);
    let started = Instant::now();
    stream
        .write_all(head(&token, "Content-Length: 10737418240\r\n").as_bytes())
        .unwrap();
    stream.write_all(b"<soap:Envelope").unwrap();
    let answer = read_answer(&mut stream, Duration::from_secs(30));
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("ErrorRequestTooLarge"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    // Immediate: nowhere near the time it would take to read 10 GB (or a body timeout).
    assert!(took < Duration::from_secs(20), "took {took:?}");
    still_serves(&server, &token, 0);
}

#[test]
fn a_chunked_body_over_the_limit_is_refused_once_it_passes_the_limit() {
    let limit = 1024 * 1024;
    let server = Server::start(&["--no-tls", "--max-body-bytes", &limit.to_string()]);
    let token = server.token();
    let mut stream = connect(&server);
    stream
        .write_all(head(&token, "Transfer-Encoding: chunked\r\n").as_bytes())
        .unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    // One chunk more than the limit, and no terminating chunk: the server must answer without
    // waiting for the end of the body.
    for _ in 0..=(limit / chunk.len()) {
        stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .unwrap();
        stream.write_all(&chunk).unwrap();
        stream.write_all(b"\r\n").unwrap();
    }
    let answer = read_answer(&mut stream, Duration::from_secs(30));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("ErrorRequestTooLarge"), "{answer}");
    still_serves(&server, &token, 0);
}

#[test]
fn a_body_shorter_than_its_content_length_times_out() {
    let server = Server::start(&["--no-tls", "--body-timeout-secs", "2"]);
    let token = server.token();
    let body = create_item(&[Msg::default().xml()]);
    let mut stream = connect(&server);
    stream
        .write_all(
            head(
                &token,
                &format!("Content-Length: {}\r\n", body.len() + 1000),
            )
            .as_bytes(),
        )
        .unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let started = Instant::now();
    let answer = read_answer(&mut stream, Duration::from_secs(60));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("ErrorTimeoutExpired"), "{answer}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "not before the timeout"
    );
    still_serves(&server, &token, 0);
}

#[test]
fn a_slow_body_times_out() {
    let server = Server::start(&["--no-tls", "--body-timeout-secs", "2"]);
    let token = server.token();
    let body = create_item(&[Msg::default().xml()]);
    let mut stream = connect(&server);
    stream
        .write_all(head(&token, &format!("Content-Length: {}\r\n", body.len())).as_bytes())
        .unwrap();
    stream.set_nonblocking(true).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    // One byte every 200 ms: the whole body would take minutes.
    for byte in body.bytes() {
        if stream.write_all(&[byte]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if !answer.is_empty() || started.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    stream.set_nonblocking(false).unwrap();
    let mut answer = String::from_utf8_lossy(&answer).into_owned();
    answer += &read_answer(&mut stream, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    still_serves(&server, &token, 0);
}

#[test]
fn a_slow_request_head_is_dropped() {
    let server = Server::start(&["--no-tls", "--header-timeout-secs", "2"]);
    let token = server.token();
    let mut stream = connect(&server);
    stream
        .write_all(b"POST /service/ThirdPartyIngestionService.svc HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    let answer = read_answer(&mut stream, Duration::from_secs(60));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(50),
        "the connection was closed by the server ({took:?})"
    );
    assert!(!answer.contains(" 200 "), "{answer}");
    // And a connection that sends nothing at all.
    let mut silent = connect(&server);
    let started = Instant::now();
    let answer = read_answer(&mut silent, Duration::from_secs(60));
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "a silent connection is closed"
    );
    assert!(answer.is_empty() || !answer.contains(" 200 "), "{answer}");
    still_serves(&server, &token, 0);
}

#[test]
fn idle_connections_beyond_the_limit_wait_and_are_served_after_others_close() {
    let server = Server::start(&["--no-tls", "--max-connections", "4"]);
    let token = server.token();
    // The harness client's own pooled connection counts too: start from a fresh client.
    let idle: Vec<TcpStream> = (0..12).map(|_| connect(&server)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let url = format!("{}/healthz", server.url);
    let waiting = std::thread::spawn(move || {
        let client = client_for(None);
        let started = Instant::now();
        let status = client.get(url).send().map(|r| r.status().as_u16());
        (status, started.elapsed())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !waiting.is_finished(),
        "held connections use up the limit: a new one waits"
    );
    drop(idle);
    let (status, took) = waiting.join().unwrap();
    assert_eq!(
        status.ok(),
        Some(200),
        "served once the idle connections closed ({took:?})"
    );
    // Idle connections that never send anything are closed by the header timeout anyway.
    drop(server);
    let server = Server::start(&[
        "--no-tls",
        "--max-connections",
        "4",
        "--header-timeout-secs",
        "1",
    ]);
    let token2 = server.token();
    let _idle: Vec<TcpStream> = (0..12).map(|_| connect(&server)).collect();
    let started = Instant::now();
    let client = client_for(None);
    let status = client
        .get(format!("{}/healthz", server.url))
        .send()
        .map(|r| r.status().as_u16());
    assert_eq!(
        status.ok(),
        Some(200),
        "served after idle connections timed out ({:?})",
        started.elapsed()
    );
    still_serves(&server, &token2, 0);
    let _ = token;
}

fn tls_client(server: &Server, http2: bool) -> reqwest::blocking::Client {
    let mut builder = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .tls_built_in_root_certs(false);
    if let Some(path) = &server.ca_cert {
        let pem = std::fs::read(path).unwrap();
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
    }
    builder = if http2 {
        builder.http2_prior_knowledge()
    } else {
        builder.http1_only()
    };
    builder.build().unwrap()
}

fn ingest_over(
    server: &Server,
    client: &reqwest::blocking::Client,
    token: &str,
    version: reqwest::Version,
) {
    let response = client
        .post(format!("{}{SERVICE_PATH}", server.url))
        .bearer_auth(token)
        .header("Content-Type", "text/xml; charset=utf-8")
        .body(create_item(&[Msg::default().xml()]))
        .send()
        .unwrap();
    assert_eq!(response.version(), version);
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-ingestioncorrelationid"));
    // A hostile request over the same protocol: refused, connection still usable (HTTP/2) or a
    // new one opened (HTTP/1.1 closes after 413).
    let response = client
        .post(format!("{}{SERVICE_PATH}", server.url))
        .bearer_auth(token)
        .body(vec![b'x'; 2 * 1024 * 1024])
        .send();
    match response {
        Ok(response) => {
            assert_eq!(response.version(), version);
            assert_eq!(response.status(), 413);
        }
        // HTTP/1.1: the server answers 413 from the Content-Length and closes without reading
        // the body; a client still writing it may see the closed connection before the answer.
        Err(e) if version == reqwest::Version::HTTP_11 => {
            assert!(e.is_request(), "a connection error, not {e:?}");
        }
        Err(e) => panic!("{e:?}"),
    }
}

#[test]
fn http2_and_http1_are_both_served_over_tls() {
    let server = Server::start(&["--max-body-bytes", "1048576"]);
    let token = server.token();
    ingest_over(
        &server,
        &tls_client(&server, true),
        &token,
        reqwest::Version::HTTP_2,
    );
    ingest_over(
        &server,
        &tls_client(&server, false),
        &token,
        reqwest::Version::HTTP_11,
    );
    assert_eq!(server.folder_count(&token, MAILBOX, FOLDER), 2);
}

#[test]
fn http2_prior_knowledge_and_http1_are_both_served_on_plain_http() {
    let server = Server::start(&["--no-tls", "--max-body-bytes", "1048576"]);
    let token = server.token();
    ingest_over(
        &server,
        &tls_client(&server, true),
        &token,
        reqwest::Version::HTTP_2,
    );
    ingest_over(
        &server,
        &tls_client(&server, false),
        &token,
        reqwest::Version::HTTP_11,
    );
    assert_eq!(server.folder_count(&token, MAILBOX, FOLDER), 2);
}

/// Asserts that the server closes `stream` (EOF or reset) within `limit`: reads (a read
/// timeout set on it, so the wait is checked) until then.
fn assert_closed_within(stream: &mut impl Read, limit: Duration, what: &str) {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit * 2 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => continue, // e.g. the server's HTTP/2 SETTINGS and pings
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue
            }
            Err(_) => break,
        }
    }
    let took = started.elapsed();
    assert!(took < limit, "{what}: still open after {took:?}");
}

/// A connection whose reads give up after 200 ms (so a wait can be timed).
fn connect_polling(server: &Server) -> TcpStream {
    let stream = connect(server);
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    stream
}

/// Connections that start HTTP/2 and then stall hold a connection slot: each is closed after
/// the header timeout, like a stalled HTTP/1.1 request head. Before, the first byte of a
/// preface alone (`P`), or a TLS connection that negotiated `h2` and sent nothing, was kept
/// forever: a few thousand of them stopped the server from accepting anything.
#[test]
fn stalled_http2_prefaces_and_handshakes_are_closed_after_the_header_timeout() {
    let plain = Server::start(&["--no-tls", "--header-timeout-secs", "2"]);
    for (name, sent) in [
        ("the first byte of a preface", &b"P"[..]),
        ("half a preface", &b"PRI * HTTP/2.0\r\n"[..]),
        ("a whole preface", &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..]),
    ] {
        let mut stream = connect_polling(&plain);
        stream.write_all(sent).unwrap();
        assert_closed_within(&mut stream, Duration::from_secs(15), name);
    }
    let token = plain.token();
    still_serves(&plain, &token, 0);

    // TLS: the handshake completes with ALPN h2, then the client sends nothing.
    let tls = Server::start(&["--header-timeout-secs", "2"]);
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(tls.ca_cert.as_ref().expect("a CA")).unwrap();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut stream = rustls::StreamOwned::new(connection, connect_polling(&tls));
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .expect("TLS handshake");
    }
    assert_eq!(stream.conn.alpn_protocol(), Some(&b"h2"[..]));
    assert_closed_within(
        &mut stream,
        Duration::from_secs(15),
        "TLS h2 without a preface",
    );
    let token = tls.token();
    still_serves(&tls, &token, 0);
}

/// Every other endpoint that reads a body (token, admin API, dashboard sign-in, consent) gives
/// it the same `--body-timeout-secs`: a body announced and never sent is answered 408 and the
/// connection closed. Before, only the ingestion endpoint had a body timeout, so such requests
/// held their connection forever, unauthenticated on the token endpoint.
#[test]
fn a_body_that_never_arrives_times_out_on_every_endpoint() {
    let server = Server::start(&["--no-tls", "--body-timeout-secs", "2"]);
    let token = server.token();
    for (what, request) in [
        (
            "token endpoint",
            format!(
                "POST /{TENANT}/oauth2/v2.0/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 200\r\n\r\ngrant_type=client_credentials"
            ),
        ),
        (
            "admin API",
            format!(
                "PATCH /api/tenants/{TENANT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"displayName\"",
                server.admin_key
            ),
        ),
        (
            "dashboard sign-in",
            "POST /signin HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nkey=".to_string(),
        ),
    ] {
        let mut stream = connect(&server);
        stream.write_all(request.as_bytes()).unwrap();
        let started = Instant::now();
        let answer = read_answer(&mut stream, Duration::from_secs(60));
        let took = started.elapsed();
        assert!(answer.starts_with("HTTP/1.1 408"), "{what}: {answer}");
        assert!(answer.contains("did not arrive within 2 seconds"), "{what}: {answer}");
        assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(30), "{what}: {took:?}");
        // Closed after the answer.
        assert_closed_within(&mut stream, Duration::from_secs(10), what);
    }
    let response = server
        .admin(reqwest::Method::GET, &format!("/api/tenants/{TENANT}"))
        .send()
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "the tenant was not changed and the server serves"
    );
    let body: serde_json::Value = response.json().unwrap();
    assert_ne!(body["displayName"], "", "{body}");
    still_serves(&server, &token, 0);
}

/// The body timeout is a minimum rate, not a cap on the upload: each 64 KiB received buys
/// another second, so a large body arriving steadily on a slow link is read whole, on the
/// ingestion endpoint and on the other routes (a staging delivery of the admin API), while
/// the trickles above are still cut.
#[test]
fn a_large_body_arriving_steadily_is_not_cut_by_the_body_timeout() {
    let server = Server::start(&["--no-tls", "--body-timeout-secs", "1"]);
    let token = server.token();
    let steadily = |head: String, body: &[u8]| -> (String, Duration) {
        let mut stream = connect(&server);
        stream.write_all(head.as_bytes()).unwrap();
        let started = Instant::now();
        // About 250 KB/s: six pieces 400 ms apart, 2.4 s in all.
        for piece in body.chunks(body.len().div_ceil(6)) {
            stream.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(400));
        }
        (
            read_answer(&mut stream, Duration::from_secs(30)),
            started.elapsed(),
        )
    };
    let body = create_item(&[Msg {
        attachments: vec![("big.bin".into(), vec![7u8; 450_000])],
        ..Msg::default()
    }
    .xml()]);
    let (answer, took) = steadily(
        head(
            &token,
            &format!("Content-Length: {}\r\nConnection: close\r\n", body.len()),
        ),
        body.as_bytes(),
    );
    assert!(took > Duration::from_secs(2), "{took:?}");
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{}",
        &answer[..answer.len().min(600)]
    );
    assert!(answer.contains("ResponseClass=\"Success\""));

    let json = serde_json::json!({"displayName": "x".repeat(600_000)}).to_string();
    let (answer, _) = steadily(
        format!(
            "PATCH /api/tenants/{TENANT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            server.admin_key,
            json.len()
        ),
        json.as_bytes(),
    );
    assert!(
        !answer.starts_with("HTTP/1.1 408"),
        "{}",
        &answer[..answer.len().min(600)]
    );
    // Read whole: answered on what the whole body says (a name over 256 characters).
    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "{}",
        &answer[..answer.len().min(600)]
    );
    assert!(answer.contains("at most 256 characters"), "{answer}");
    still_serves(&server, &token, 1);
}

/// A body timeout too long for the clock (`u64::MAX` seconds) is as good as none; bodies are
/// read and answered (a deadline past the clock's range panicked on every request).
#[test]
fn a_body_timeout_past_the_clock_range_still_serves() {
    let server = Server::start(&["--body-timeout-secs", "18446744073709551615"]);
    let token = server.token();
    let reply = server.ews(&token, &create_item(&[Msg::default().xml()]));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let response = server
        .admin(reqwest::Method::GET, &format!("/api/tenants/{TENANT}"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
}
