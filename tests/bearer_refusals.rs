//! Bearer validation on the ingestion endpoint: every forged or unacceptable token is refused
//! with 401, Exchange's `WWW-Authenticate` challenge and an `x-ms-diagnostics` reason, and
//! nothing is stored.
//!
//! Claims are forged with a test key the server trusts as an external issuer (the documented
//! offline trust of a real Entra tenant), so each claim check is exercised with a valid
//! signature; signature-level forgeries use the server's own published key id.

mod common;

use common::forge::*;
use common::*;
use serde_json::json;

fn refused(server: &Server, name: &str, authorization: Option<String>) -> String {
    let mut request = server
        .post(SERVICE_PATH)
        .header("Content-Type", "text/xml; charset=utf-8")
        .body(create_item(&[Msg::default().xml()]));
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    let reply = EwsReply::from(request.send().unwrap());
    assert_eq!(reply.status, 401, "{name}: {}", reply.body);
    let challenge = reply
        .headers
        .get("www-authenticate")
        .unwrap_or_else(|| panic!("{name}: challenge"))
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.starts_with("Bearer"), "{name}: {challenge}");
    assert!(reply.correlation_id().is_none(), "{name}");
    reply
        .headers
        .get("x-ms-diagnostics")
        .unwrap_or_else(|| panic!("{name}: x-ms-diagnostics"))
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn every_forged_or_unacceptable_token_is_refused_with_its_reason() {
    let forge = Forge::new();
    let server = Server::start(&["--config", forge.config.to_str().unwrap()]);
    let token = server.token();

    // The trusted external key itself works: the forgeries below differ in one point each.
    let reply = server.ews(
        &forge.sign(&good_claims()),
        &create_item(&[Msg::default().xml()]),
    );
    assert_eq!(
        reply.status, 200,
        "a token of the trusted issuer is accepted: {}",
        reply.body
    );
    let before = server.folder_count(&token, "alice@contoso.com", "recoverableitemspurges");

    let cases = forged_tokens(&server, &forge, &token);
    let mut reasons = std::collections::BTreeMap::new();
    for (name, token) in cases {
        let diagnostics = refused(&server, name, Some(format!("Bearer {token}")));
        reasons
            .entry(diagnostics)
            .or_insert_with(Vec::new)
            .push(name);
    }
    let missing = refused(&server, "no Authorization header", None);
    assert!(!missing.is_empty());
    // Reasons are told apart (the signature-level forgeries may share one).
    assert!(
        reasons.len() >= 10,
        "diagnostics should name distinct reasons: {reasons:#?}"
    );

    assert_eq!(
        server.folder_count(&token, "alice@contoso.com", "recoverableitemspurges"),
        before,
        "nothing stored by refused requests"
    );
}

#[test]
fn an_unknown_tenant_is_refused() {
    let forge = Forge::new();
    let server = Server::start(&["--config", forge.config.to_str().unwrap()]);
    let claims = with(
        with(good_claims(), "tid", json!(OTHER_TENANT)),
        "iss",
        json!(issuer(OTHER_TENANT)),
    );
    refused(
        &server,
        "unknown tenant",
        Some(format!("Bearer {}", forge.sign(&claims))),
    );
}

#[test]
fn a_100_kb_authorization_header_is_refused_without_harm() {
    let server = Server::start(&[]);
    let huge = format!("Bearer {}", "a".repeat(100 * 1024));
    let response = server
        .post(SERVICE_PATH)
        .header("Authorization", huge)
        .body(create_item(&[Msg::default().xml()]))
        .send();
    if let Ok(response) = response {
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    assert_eq!(server.get("/healthz").send().unwrap().status(), 200);
}

#[test]
fn revocation_is_immediate_even_for_an_unexpired_token() {
    let server = Server::start(&[]);
    let token = server.token();
    assert_eq!(
        server
            .ews(&token, &create_item(&[Msg::default().xml()]))
            .status,
        200
    );
    let response = server
        .admin(
            reqwest::Method::PATCH,
            &format!("/api/tenants/{TENANT}/servicePrincipals/{APP_ID}"),
        )
        .json(&json!({"accountEnabled": false}))
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    refused(
        &server,
        "disabled after issue",
        Some(format!("Bearer {token}")),
    );
    let response = server
        .admin(
            reqwest::Method::DELETE,
            &format!("/api/tenants/{TENANT}/servicePrincipals/{APP_ID}"),
        )
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    refused(
        &server,
        "revoked after issue",
        Some(format!("Bearer {token}")),
    );
}

#[test]
fn token_lifetime_mode_keeps_issued_tokens_valid_after_revocation() {
    let server = Server::start(&["--revocation", "token-lifetime"]);
    let token = server.token();
    let response = server
        .admin(
            reqwest::Method::DELETE,
            &format!("/api/tenants/{TENANT}/servicePrincipals/{APP_ID}"),
        )
        .send()
        .unwrap();
    assert!(response.status().is_success());
    assert_eq!(
        server
            .ews(&token, &create_item(&[Msg::default().xml()]))
            .status,
        200
    );
}

#[test]
fn an_expired_token_of_our_own_issuer_is_refused() {
    let server = Server::start(&["--token-lifetime-secs", "1", "--clock-skew-secs", "0"]);
    let token = server.token();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    refused(&server, "expired", Some(format!("Bearer {token}")));
}
