//! Forged tokens under concurrency, and oversized Authorization headers: every one refused with
//! 401 and a `WWW-Authenticate: Bearer` challenge, nothing stored, the server unharmed.
//!
//! Claims are forged with a test key the server trusts as an external issuer (the documented
//! offline trust of a real Entra tenant), so each claim check is exercised with a valid
//! signature; signature-level forgeries use the server's own published key id.

mod common;

use common::forge::*;
use common::*;

fn assert_refused(reply: &EwsReply, name: &str) {
    assert_eq!(reply.status, 401, "{name}: {}", reply.body);
    let challenge = reply
        .headers
        .get("www-authenticate")
        .unwrap_or_else(|| panic!("{name}: challenge"))
        .to_str()
        .unwrap();
    assert!(challenge.starts_with("Bearer"), "{name}: {challenge}");
    assert!(
        reply.correlation_id().is_none(),
        "{name}: no correlation id"
    );
}

#[test]
fn forged_tokens_sent_concurrently_are_all_refused() {
    let forge = Forge::new();
    let server = Server::start(&["--config", forge.config.to_str().unwrap()]);
    let token = server.token();
    let before = server.folder_count(&token, "alice@contoso.com", "recoverableitemspurges");
    let forged = forged_tokens(&server, &forge, &token);
    let threads = 8;
    let per_thread = 50;
    let refused: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (server, forged) = (&server, &forged);
                scope.spawn(move || {
                    let body = create_item(&[Msg::default().xml()]);
                    let mut refused = 0;
                    for i in 0..per_thread {
                        let (name, forged_token) = &forged[(t * per_thread + i) % forged.len()];
                        let reply = EwsReply::from(
                            server
                                .post(SERVICE_PATH)
                                .header("Authorization", format!("Bearer {forged_token}"))
                                .header("Content-Type", "text/xml; charset=utf-8")
                                .body(body.clone())
                                .send()
                                .unwrap(),
                        );
                        assert_refused(&reply, name);
                        refused += 1;
                    }
                    refused
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(refused, threads * per_thread);
    assert_eq!(
        server.folder_count(&token, "alice@contoso.com", "recoverableitemspurges"),
        before,
        "nothing stored by refused requests"
    );
    // The server is unharmed: a good token still works, the trusted issuer's too.
    assert_eq!(
        server
            .ews(&token, &create_item(&[Msg::default().xml()]))
            .status,
        200
    );
    assert_eq!(
        server
            .ews(
                &forge.sign(&good_claims()),
                &create_item(&[Msg::default().xml()])
            )
            .status,
        200
    );
}

#[test]
fn a_100_kb_authorization_header_is_refused_over_http1_and_http2() {
    let server = Server::start(&[]);
    let token = server.token();
    for (name, value) in [
        (
            "100 kB of garbage",
            format!("Bearer {}", "a".repeat(100 * 1024)),
        ),
        (
            "100 kB JWT-shaped",
            format!(
                "Bearer {}.{}.{}",
                "e".repeat(50 * 1024),
                "e".repeat(50 * 1024),
                "x"
            ),
        ),
        (
            "100 kB after a valid token",
            format!("Bearer {token}{}", " x".repeat(50 * 1024)),
        ),
    ] {
        for http2 in [false, true] {
            let mut builder = reqwest::blocking::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .tls_built_in_root_certs(false)
                .add_root_certificate(
                    reqwest::Certificate::from_pem(
                        &std::fs::read(server.ca_cert.as_ref().unwrap()).unwrap(),
                    )
                    .unwrap(),
                );
            builder = if http2 {
                builder.http2_prior_knowledge()
            } else {
                builder.http1_only()
            };
            let client = builder.build().unwrap();
            let response = client
                .post(format!("{}{SERVICE_PATH}", server.url))
                .header("Authorization", &value)
                .body(create_item(&[Msg::default().xml()]))
                .send();
            match response {
                // HTTP/1.1: the bearer check refuses it (401).
                Ok(response) => {
                    let status = response.status().as_u16();
                    eprintln!("{name} (http2 {http2}): {status}");
                    assert!(
                        status == 401 || status == 431,
                        "{name} (http2 {http2}): {status}"
                    );
                }
                // HTTP/2: a header list over the server's limit may be refused at the protocol
                // level (stream reset): also a refusal.
                Err(e) => {
                    eprintln!("{name} (http2 {http2}): {e}");
                    assert!(http2, "{name} over HTTP/1.1: {e}")
                }
            }
        }
    }
    assert_eq!(server.get("/healthz").send().unwrap().status(), 200);
    assert_eq!(
        server.folder_count(&token, "alice@contoso.com", "recoverableitemspurges"),
        0
    );
    assert_eq!(
        server
            .ews(&token, &create_item(&[Msg::default().xml()]))
            .status,
        200
    );
}
