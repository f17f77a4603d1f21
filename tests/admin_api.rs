//! The admin API and the command-line client, end to end: the real binary on a real socket,
//! spoken to over HTTPS with the server's own development CA.

mod common;

use std::process::{Command, Output};

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const CHALLENGE: &str = r#"Bearer realm="ingest-emulator admin""#;

/// An admin call with the key: (status, JSON body or Null).
fn call(server: &Server, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = server.admin(method, path);
    if let Some(body) = body {
        request = request.json(&body);
    }
    answer(request.send().expect("admin request"))
}

fn answer(response: reqwest::blocking::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"))
    };
    (status, body)
}

/// Checks a Graph-style error: status, code, a message, and innerError with date and ids.
fn assert_graph_error(status: u16, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        !body["error"]["message"].as_str().unwrap_or("").is_empty(),
        "{body}"
    );
    assert!(body["error"]["innerError"]["date"].is_string(), "{body}");
    assert!(
        body["error"]["innerError"]["request-id"].is_string(),
        "{body}"
    );
}

/// A client-credentials token request: (status, JSON).
fn token_request(server: &Server, tenant: &str, client_id: &str, secret: &str) -> (u16, Value) {
    let response = server
        .post(&format!("/{tenant}/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("scope", EXCHANGE_SCOPE),
        ])
        .send()
        .expect("token request");
    answer(response)
}

fn assert_token_ok(server: &Server, client_id: &str, secret: &str) {
    let (status, body) = token_request(server, TENANT_DOMAIN, client_id, secret);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer", "{body}");
    assert_eq!(
        body["access_token"].as_str().unwrap().split('.').count(),
        3,
        "{body}"
    );
}

fn assert_token_refused(server: &Server, client_id: &str, secret: &str, aadsts: &str) {
    let (status, body) = token_request(server, TENANT_DOMAIN, client_id, secret);
    assert!(
        status >= 400,
        "token issued while expecting {aadsts}: {body}"
    );
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(
        description.starts_with(&format!("{aadsts}:")),
        "expected {aadsts}, got {body}"
    );
}

/// The fixture's RSA test certificate (public half only).
fn rsa_certificate_pem() -> String {
    let fixture = include_str!("../fixtures/contoso.toml");
    let start = fixture.find("-----BEGIN CERTIFICATE-----").unwrap();
    let end =
        fixture.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    format!("{}\n", &fixture[start..end])
}

#[test]
fn the_admin_key_is_required_and_compared_exactly() {
    let server = Server::start(&[]);
    let url = format!("{}/api", server.url);

    // No key.
    let response = server.client().get(&url).send().unwrap();
    let challenge = response.headers().get("www-authenticate").cloned();
    let (status, body) = answer(response);
    assert_graph_error(status, &body, 401, "InvalidAuthenticationToken");
    assert_eq!(challenge.unwrap(), CHALLENGE);

    // Wrong keys: same length, a prefix, a longer one, another scheme, an empty bearer.
    let key = server.admin_key.clone();
    let mut same_length = key.clone().into_bytes();
    let last = same_length.len() - 1;
    same_length[last] = if same_length[last] == b'x' {
        b'y'
    } else {
        b'x'
    };
    let same_length = String::from_utf8(same_length).unwrap();
    for header in [
        format!("Bearer {same_length}"),
        format!("Bearer {}", &key[..key.len() - 1]),
        format!("Bearer {key}x"),
        format!("Basic {key}"),
        "Bearer ".to_string(),
        key.clone(),
    ] {
        let response = server
            .client()
            .get(&url)
            .header("Authorization", &header)
            .send()
            .unwrap();
        let challenge = response.headers().get("www-authenticate").cloned();
        let (status, body) = answer(response);
        assert_graph_error(status, &body, 401, "InvalidAuthenticationToken");
        assert_eq!(challenge.unwrap(), CHALLENGE, "for {header}");
    }

    // The right key, in any case of the scheme.
    let (status, index) = call(&server, Method::GET, "/api", None);
    assert_eq!(status, 200, "{index}");
    let response = server
        .client()
        .get(&url)
        .header("Authorization", format!("bearer {key}"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);

    // Every route of the index refuses a request without the key, before reading anything;
    // except the OpenAPI document, public by design (tests/openapi.rs).
    let routes = index["routes"].as_array().unwrap();
    assert!(routes.len() >= 25, "{index}");
    for route in routes.iter().filter(|r| r["path"] != "/api/openapi.json") {
        let method = Method::from_bytes(route["method"].as_str().unwrap().as_bytes()).unwrap();
        let path = route["path"]
            .as_str()
            .unwrap()
            .replace("{tenant}", TENANT)
            .replace("{upn}", "alice@contoso.com")
            .replace("{appId}", APP_ID)
            .replace("{keyId}", "00000000-0000-0000-0000-000000000001")
            .replace("{correlationId}", "00000000-0000-0000-0000-000000000002")
            .replace("{kid}", "some-kid");
        let response = server
            .client()
            .request(method.clone(), format!("{}{path}", server.url))
            .header("Content-Type", "application/json")
            .body("{not json")
            .send()
            .unwrap();
        assert_eq!(response.status(), 401, "{method} {path} without the key");
    }

    // An unknown admin path, with the key: a Graph 404.
    let (status, body) = call(&server, Method::GET, "/api/nothing/here", None);
    assert_graph_error(status, &body, 404, "Request_ResourceNotFound");
}

#[test]
fn tenants_are_created_read_changed_and_deleted() {
    let server = Server::start(&[]);

    let (status, list) = call(&server, Method::GET, "/api/tenants", None);
    assert_eq!(status, 200);
    let contoso = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == TENANT)
        .expect("contoso listed")
        .clone();
    assert_eq!(contoso["displayName"], "Contoso");
    assert_eq!(contoso["thirdPartyMailbox"], "thirdpartydata@contoso.com");
    assert!(contoso["domains"]
        .as_array()
        .unwrap()
        .contains(&json!("contoso.com")));
    assert!(contoso.get("retentionDays").is_some());

    // Create, with a generated id and domains normalised to lower case.
    let (status, created) = call(
        &server,
        Method::POST,
        "/api/tenants",
        Some(json!({
            "displayName": "Fabrikam",
            "domains": ["Fabrikam.onmicrosoft.com", "fabrikam.com"],
            "thirdPartyMailbox": "archive@fabrikam.com",
        })),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    assert_eq!(created["domains"][0], "fabrikam.onmicrosoft.com");

    // Read by GUID and by any domain, in any case.
    for name in [id.as_str(), "fabrikam.com", "FABRIKAM.onmicrosoft.com"] {
        let (status, tenant) = call(&server, Method::GET, &format!("/api/tenants/{name}"), None);
        assert_eq!(status, 200, "{name}: {tenant}");
        assert_eq!(tenant["id"], id.as_str());
    }

    // A domain of another tenant is a conflict; so is an existing id.
    let (status, body) = call(
        &server,
        Method::POST,
        "/api/tenants",
        Some(json!({"displayName": "Thief", "domains": ["thief.com", "contoso.com"]})),
    );
    assert_graph_error(status, &body, 409, "Conflict");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("contoso.com"));
    let (status, body) = call(
        &server,
        Method::POST,
        "/api/tenants",
        Some(json!({"id": TENANT, "displayName": "Again", "domains": ["again.com"]})),
    );
    assert_graph_error(status, &body, 409, "Conflict");
    // The refused tenant's other domain was not taken.
    let (status, _) = call(&server, Method::GET, "/api/tenants/thief.com", None);
    assert_eq!(status, 404);

    // Invalid bodies: malformed JSON, missing or wrong fields, bad domains, unknown properties.
    let response = server
        .admin(Method::POST, "/api/tenants")
        .header("Content-Type", "application/json")
        .body("{\"displayName\": \"Broken\", ")
        .send()
        .unwrap();
    let (status, body) = answer(response);
    assert_graph_error(status, &body, 400, "Request_BadRequest");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("JSON"),
        "{body}"
    );
    for bad in [
        json!({"domains": ["x.com"]}),
        json!({"displayName": "X", "domains": []}),
        json!({"displayName": "X", "domains": ["not a domain"]}),
        json!({"displayName": "X", "domains": "x.com"}),
        json!({"displayName": "X", "domains": ["x.com"], "thirdPartyMailbox": "nobody"}),
        json!({"displayName": "X", "domains": ["x.com"], "colour": "blue"}),
        json!({"id": "not-a-guid", "displayName": "X", "domains": ["x.com"]}),
    ] {
        let (status, body) = call(&server, Method::POST, "/api/tenants", Some(bad));
        assert_graph_error(status, &body, 400, "Request_BadRequest");
    }

    // Change.
    let (status, changed) = call(
        &server,
        Method::PATCH,
        "/api/tenants/fabrikam.com",
        Some(json!({"displayName": "Fabrikam Inc.", "retentionDays": 30})),
    );
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["displayName"], "Fabrikam Inc.");
    assert_eq!(changed["retentionDays"], 30);
    assert_eq!(changed["domains"].as_array().unwrap().len(), 2);
    // A retention whose cutoff is not a date (it panicked the sweep) is refused, and kept out.
    for days in [36_501u64, 4_000_000_000] {
        let (status, body) = call(
            &server,
            Method::PATCH,
            "/api/tenants/fabrikam.com",
            Some(json!({"retentionDays": days})),
        );
        assert_graph_error(status, &body, 400, "Request_BadRequest");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("36500"),
            "{body}"
        );
    }
    let (status, body) = call(
        &server,
        Method::PATCH,
        "/api/tenants/fabrikam.com",
        Some(json!({"retentionDays": 36_500})),
    );
    assert_eq!(
        (status, &body["retentionDays"]),
        (200, &json!(36_500)),
        "{body}"
    );
    let (status, body) = call(
        &server,
        Method::POST,
        "/api/tenants/fabrikam.com/retention/sweep",
        None,
    );
    assert_eq!(status, 200, "a hundred years' retention sweeps: {body}");

    // Delete: 204, then gone, and its domains are free again.
    let response = server
        .admin(Method::DELETE, &format!("/api/tenants/{id}"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 204);
    let (status, body) = call(&server, Method::GET, &format!("/api/tenants/{id}"), None);
    assert_graph_error(status, &body, 404, "Request_ResourceNotFound");
    let (status, body) = call(&server, Method::DELETE, "/api/tenants/fabrikam.com", None);
    assert_graph_error(status, &body, 404, "Request_ResourceNotFound");
    let (status, body) = call(
        &server,
        Method::POST,
        "/api/tenants",
        Some(json!({"displayName": "Fabrikam again", "domains": ["fabrikam.com"]})),
    );
    assert_eq!(status, 201, "{body}");
}

#[test]
fn users_are_created_merged_and_deleted_with_address_conflicts() {
    let server = Server::start(&[]);
    let users = format!("/api/tenants/{TENANT_DOMAIN}/users");

    let (status, list) = call(&server, Method::GET, &users, None);
    assert_eq!(status, 200);
    let alice = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["userPrincipalName"] == "alice@contoso.com")
        .expect("alice listed")
        .clone();
    assert_eq!(alice["externalIds"], json!(["@alice_contoso"]));
    assert_eq!(alice["mailboxEnabled"], true);

    // Create with defaults.
    let (status, erin) = call(
        &server,
        Method::POST,
        &users,
        Some(json!({"userPrincipalName": "erin@contoso.com", "displayName": "Erin"})),
    );
    assert_eq!(status, 201, "{erin}");
    assert_eq!(erin["mail"], "erin@contoso.com");
    assert_eq!(erin["mailboxEnabled"], true);
    assert_eq!(erin["litigationHold"], false);
    assert_eq!(erin["proxyAddresses"], json!([]));
    assert_eq!(erin["externalIds"], json!([]));

    // Same UPN again, or an address of another user: conflicts; nothing is written.
    let (status, body) = call(
        &server,
        Method::POST,
        &users,
        Some(json!({"userPrincipalName": "Erin@contoso.com"})),
    );
    assert_graph_error(status, &body, 409, "Conflict");
    let (status, body) = call(
        &server,
        Method::POST,
        &users,
        Some(json!({
            "userPrincipalName": "frank@contoso.com",
            "proxyAddresses": ["smtp:alice.wilber@contoso.com"],
        })),
    );
    assert_graph_error(status, &body, 409, "Conflict");
    let (status, _) = call(
        &server,
        Method::GET,
        &format!("{users}/frank@contoso.com"),
        None,
    );
    assert_eq!(status, 404);
    let (status, body) = call(
        &server,
        Method::POST,
        &users,
        Some(json!({"userPrincipalName": "frank@contoso.com", "externalIds": ["@ALICE_contoso"]})),
    );
    assert_graph_error(status, &body, 409, "Conflict");

    // Invalid UPNs: not an address, or not in an accepted domain of the tenant.
    for upn in ["frank", "frank@", "frank@contoso", "frank@fabrikam.com"] {
        let (status, body) = call(
            &server,
            Method::POST,
            &users,
            Some(json!({"userPrincipalName": upn})),
        );
        assert_graph_error(status, &body, 400, "Request_BadRequest");
    }
    let (status, body) = call(
        &server,
        Method::POST,
        &users,
        Some(json!({"userPrincipalName": "frank@fabrikam.com"})),
    );
    assert_graph_error(status, &body, 400, "Request_BadRequest");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("verified domain"));

    // Read, case-insensitively, in a tenant named by GUID.
    let (status, read) = call(
        &server,
        Method::GET,
        &format!("/api/tenants/{TENANT}/users/ERIN@contoso.com"),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(read, erin);

    // PATCH merges only the given fields; the new external id routes to the user.
    let (status, patched) = call(
        &server,
        Method::PATCH,
        &format!("{users}/erin@contoso.com"),
        Some(json!({"litigationHold": true, "externalIds": ["@erin_contoso"]})),
    );
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["displayName"], "Erin");
    assert_eq!(patched["litigationHold"], true);
    assert_eq!(patched["externalIds"], json!(["@erin_contoso"]));
    assert_eq!(patched["mailboxEnabled"], true);

    // A PATCH that takes another user's address is refused and changes nothing.
    let (status, body) = call(
        &server,
        Method::PATCH,
        &format!("{users}/erin@contoso.com"),
        Some(json!({"mail": "bob@contoso.com", "displayName": "Not Erin"})),
    );
    assert_graph_error(status, &body, 409, "Conflict");
    let (_, read) = call(
        &server,
        Method::GET,
        &format!("{users}/erin@contoso.com"),
        None,
    );
    assert_eq!(read, patched);

    // PATCH of an unknown user, malformed PATCH.
    let (status, body) = call(
        &server,
        Method::PATCH,
        &format!("{users}/nobody@contoso.com"),
        Some(json!({"displayName": "x"})),
    );
    assert_graph_error(status, &body, 404, "Request_ResourceNotFound");
    let response = server
        .admin(Method::PATCH, &format!("{users}/erin@contoso.com"))
        .header("Content-Type", "application/json")
        .body("[1,2")
        .send()
        .unwrap();
    let (status, body) = answer(response);
    assert_graph_error(status, &body, 400, "Request_BadRequest");

    // A user on litigation hold is not deleted (the hold would go with it).
    let (status, body) = call(
        &server,
        Method::DELETE,
        &format!("{users}/erin@contoso.com"),
        None,
    );
    assert_graph_error(status, &body, 409, "Conflict");
    let (status, _) = call(
        &server,
        Method::PATCH,
        &format!("{users}/erin@contoso.com"),
        Some(json!({"litigationHold": false})),
    );
    assert_eq!(status, 200);

    // Delete; the address is free again.
    let response = server
        .admin(Method::DELETE, &format!("{users}/erin@contoso.com"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 204);
    let (status, body) = call(
        &server,
        Method::GET,
        &format!("{users}/erin@contoso.com"),
        None,
    );
    assert_graph_error(status, &body, 404, "Request_ResourceNotFound");
    let (status, body) = call(
        &server,
        Method::DELETE,
        &format!("{users}/erin@contoso.com"),
        None,
    );
    assert_graph_error(status, &body, 404, "Request_ResourceNotFound");
    let (status, body) = call(
        &server,
        Method::POST,
        &users,
        Some(json!({"userPrincipalName": "gina@contoso.com", "mail": "erin@contoso.com"})),
    );
    assert_eq!(status, 201, "{body}");

    // Users of an unknown tenant.
    let (status, body) = call(
        &server,
        Method::GET,
        "/api/tenants/nowhere.example/users",
        None,
    );
    assert_graph_error(status, &body, 404, "Request_ResourceNotFound");
}

#[test]
fn registration_consent_disable_and_revocation_drive_the_token_endpoint() {
    let server = Server::start(&[]);
    let apps = format!("/api/tenants/{TENANT_DOMAIN}/applications");
    let sps = format!("/api/tenants/{TENANT_DOMAIN}/servicePrincipals");

    // Register: the secret is in this answer only.
    let (status, app) = call(
        &server,
        Method::POST,
        &apps,
        Some(json!({"displayName": "Archive Partner"})),
    );
    assert_eq!(status, 201, "{app}");
    let app_id = app["appId"].as_str().unwrap().to_string();
    let secret = app["clientSecret"].as_str().unwrap().to_string();
    assert!(secret.len() >= 32);
    assert_eq!(app["requiredRoles"], json!(["full_access_as_app"]));
    assert_eq!(app["consented"], false);
    assert_eq!(app["servicePrincipal"], Value::Null);
    let credential = &app["passwordCredentials"][0];
    assert_eq!(credential["hint"], &secret[..3]);
    assert!(credential["keyId"].is_string() && credential["endDateTime"].is_string());
    assert!(app["createdDateTime"].is_string());

    let (status, read) = call(&server, Method::GET, &format!("{apps}/{app_id}"), None);
    assert_eq!(status, 200);
    assert!(read.get("clientSecret").is_none(), "{read}");
    assert!(!read.to_string().contains(&secret));
    let (_, list) = call(&server, Method::GET, &apps, None);
    assert!(!list.to_string().contains(&secret));
    assert!(list["value"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["appId"] == app_id.as_str()));
    // The fixture's consented app shows its service principal.
    let fixture_app = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["appId"] == APP_ID)
        .unwrap();
    assert_eq!(fixture_app["consented"], true);
    assert_eq!(fixture_app["servicePrincipal"]["accountEnabled"], true);

    // Not consented yet.
    assert_token_refused(&server, &app_id, &secret, "AADSTS700016");

    // Consent.
    let (status, sp) = call(&server, Method::POST, &sps, Some(json!({"appId": app_id})));
    assert_eq!(status, 201, "{sp}");
    assert_eq!(sp["appId"], app_id.as_str());
    assert_eq!(sp["appDisplayName"], "Archive Partner");
    assert_eq!(sp["accountEnabled"], true);
    assert_eq!(sp["appRoles"], json!(["full_access_as_app"]));
    assert!(sp["createdDateTime"].is_string());
    let sp_id = sp["id"].as_str().unwrap().to_string();
    assert_ne!(sp_id, app_id);
    let (status, body) = call(&server, Method::POST, &sps, Some(json!({"appId": app_id})));
    assert_graph_error(status, &body, 409, "Conflict");
    assert_token_ok(&server, &app_id, &secret);
    let (_, read) = call(&server, Method::GET, &format!("{apps}/{app_id}"), None);
    assert_eq!(read["consented"], true);
    assert_eq!(read["servicePrincipal"]["id"], sp_id.as_str());
    // By appId or by object id.
    for key in [&app_id, &sp_id] {
        let (status, read) = call(&server, Method::GET, &format!("{sps}/{key}"), None);
        assert_eq!(status, 200);
        assert_eq!(read["id"], sp_id.as_str());
    }

    // Disable, re-enable.
    let (status, disabled) = call(
        &server,
        Method::PATCH,
        &format!("{sps}/{app_id}"),
        Some(json!({"accountEnabled": false})),
    );
    assert_eq!(status, 200, "{disabled}");
    assert_eq!(disabled["accountEnabled"], false);
    assert_token_refused(&server, &app_id, &secret, "AADSTS7000112");
    let (status, _) = call(
        &server,
        Method::PATCH,
        &format!("{sps}/{app_id}"),
        Some(json!({"accountEnabled": true})),
    );
    assert_eq!(status, 200);
    assert_token_ok(&server, &app_id, &secret);

    // A second secret works; once removed it does not.
    let (status, added) = call(
        &server,
        Method::POST,
        &format!("{apps}/{app_id}/secrets"),
        Some(json!({"displayName": "rotation"})),
    );
    assert_eq!(status, 201, "{added}");
    let second = added["secretText"].as_str().unwrap().to_string();
    let key_id = added["keyId"].as_str().unwrap().to_string();
    assert_ne!(second, secret);
    assert_token_ok(&server, &app_id, &second);
    let (_, read) = call(&server, Method::GET, &format!("{apps}/{app_id}"), None);
    assert_eq!(read["passwordCredentials"].as_array().unwrap().len(), 2);
    assert!(!read.to_string().contains(&second));
    let response = server
        .admin(Method::DELETE, &format!("{apps}/{app_id}/secrets/{key_id}"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 204);
    let (status, _) = token_request(&server, TENANT_DOMAIN, &app_id, &second);
    assert!(status >= 400);
    assert_token_ok(&server, &app_id, &secret);
    let (status, body) = call(
        &server,
        Method::DELETE,
        &format!("{apps}/{app_id}/secrets/{key_id}"),
        None,
    );
    assert_graph_error(status, &body, 404, "Request_ResourceNotFound");
    let (status, body) = call(
        &server,
        Method::POST,
        &format!("{apps}/{app_id}/secrets"),
        Some(json!({"endDateTime": "2001-01-01T00:00:00Z"})),
    );
    assert_graph_error(status, &body, 400, "Request_BadRequest");

    // Revoke consent.
    let response = server
        .admin(Method::DELETE, &format!("{sps}/{app_id}"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_token_refused(&server, &app_id, &secret, "AADSTS700016");
    let (status, body) = call(&server, Method::DELETE, &format!("{sps}/{app_id}"), None);
    assert_graph_error(status, &body, 404, "Request_ResourceNotFound");
    let (status, body) = call(&server, Method::GET, &format!("{sps}/{app_id}"), None);
    assert_graph_error(status, &body, 404, "Request_ResourceNotFound");

    // Consent to an unknown app, bad ids, bad bodies.
    let (status, body) = call(
        &server,
        Method::POST,
        &sps,
        Some(json!({"appId": "99999999-9999-9999-9999-999999999999"})),
    );
    assert_graph_error(status, &body, 404, "Request_ResourceNotFound");
    let (status, body) = call(&server, Method::POST, &sps, Some(json!({"appId": "nope"})));
    assert_graph_error(status, &body, 400, "Request_BadRequest");
    let (status, body) = call(&server, Method::GET, &format!("{apps}/not-a-guid"), None);
    assert_graph_error(status, &body, 400, "Request_BadRequest");
    for bad in [
        json!({}),
        json!({"displayName": "  "}),
        json!({"displayName": 5}),
    ] {
        let (status, body) = call(&server, Method::POST, &apps, Some(bad));
        assert_graph_error(status, &body, 400, "Request_BadRequest");
    }

    // Custom roles are granted as required.
    let (status, custom) = call(
        &server,
        Method::POST,
        &apps,
        Some(
            json!({"displayName": "Custom", "requiredRoles": ["full_access_as_app", "Mail.Read"]}),
        ),
    );
    assert_eq!(status, 201);
    let custom_id = custom["appId"].as_str().unwrap();
    let (_, sp) = call(
        &server,
        Method::POST,
        &sps,
        Some(json!({"appId": custom_id})),
    );
    assert_eq!(sp["appRoles"], json!(["full_access_as_app", "Mail.Read"]));
    let (_, list) = call(&server, Method::GET, &sps, None);
    assert!(list["value"]
        .as_array()
        .unwrap()
        .iter()
        .any(|sp| sp["appId"] == custom_id));

    // Deleting the app removes its consents; the fixture's app is untouched.
    let response = server
        .admin(Method::DELETE, &format!("{apps}/{custom_id}"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 204);
    let (status, _) = call(&server, Method::GET, &format!("{sps}/{custom_id}"), None);
    assert_eq!(status, 404);
    let (status, _) = call(&server, Method::GET, &format!("{apps}/{custom_id}"), None);
    assert_eq!(status, 404);
    assert_token_ok(&server, APP_ID, APP_SECRET);
}

#[test]
fn certificates_are_uploaded_as_json_or_pem_and_checked() {
    let server = Server::start(&[]);
    let apps = format!("/api/tenants/{TENANT}/applications");
    let (_, app) = call(
        &server,
        Method::POST,
        &apps,
        Some(json!({"displayName": "Cert App"})),
    );
    let app_id = app["appId"].as_str().unwrap().to_string();
    let certificates = format!("{apps}/{app_id}/certificates");
    let pem = rsa_certificate_pem();

    // As JSON.
    let (status, key) = call(
        &server,
        Method::POST,
        &certificates,
        Some(json!({"pem": pem})),
    );
    assert_eq!(status, 201, "{key}");
    let key_id = key["keyId"].as_str().unwrap().to_string();
    let x5t = key["x5t"].as_str().unwrap().to_string();
    assert_eq!(x5t.len(), 27, "{key}");
    assert_eq!(key["customKeyIdentifier"], x5t.as_str());
    assert_eq!(key["thumbprint"].as_str().unwrap().len(), 40);
    assert_eq!(key["x5t#S256"].as_str().unwrap().len(), 43);
    // The certificate's validity period (the fixture's: 2026-11-22 for ten years).
    assert_eq!(key["startDateTime"], "2026-11-22T13:13:51Z", "{key}");
    assert_eq!(key["endDateTime"], "2036-11-20T13:13:51Z", "{key}");
    assert!(key["displayName"]
        .as_str()
        .unwrap()
        .contains("connector-app"));
    let (_, read) = call(&server, Method::GET, &format!("{apps}/{app_id}"), None);
    assert_eq!(read["keyCredentials"][0]["keyId"], key_id.as_str());
    assert_eq!(
        read["keyCredentials"][0]["customKeyIdentifier"],
        x5t.as_str()
    );

    // The same certificate twice.
    let (status, body) = call(
        &server,
        Method::POST,
        &certificates,
        Some(json!({"pem": pem})),
    );
    assert_graph_error(status, &body, 409, "Conflict");

    // As a raw PEM body, on another app.
    let (_, other) = call(
        &server,
        Method::POST,
        &apps,
        Some(json!({"displayName": "Other"})),
    );
    let response = server
        .admin(
            Method::POST,
            &format!("{apps}/{}/certificates", other["appId"].as_str().unwrap()),
        )
        .header("Content-Type", "application/x-pem-file")
        .body(pem.clone())
        .send()
        .unwrap();
    let (status, key) = answer(response);
    assert_eq!(status, 201, "{key}");
    assert_eq!(key["x5t"], x5t.as_str());

    // Invalid: not PEM, a broken PEM, a non-RSA certificate, a JSON body without pem.
    let ec = rcgen::generate_simple_self_signed(vec!["ec.example".to_string()])
        .unwrap()
        .cert
        .pem();
    let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    for body in [
        json!({"pem": "hello"}),
        json!({"pem": broken}),
        json!({"pem": ec}),
        json!({}),
    ] {
        let (status, answer) = call(&server, Method::POST, &certificates, Some(body.clone()));
        assert_graph_error(status, &answer, 400, "Request_BadRequest");
    }
    let response = server
        .admin(Method::POST, &certificates)
        .header("Content-Type", "application/x-pem-file")
        .body("garbage")
        .send()
        .unwrap();
    let (status, body) = answer(response);
    assert_graph_error(status, &body, 400, "Request_BadRequest");
    let (_, read) = call(&server, Method::GET, &format!("{apps}/{app_id}"), None);
    assert_eq!(read["keyCredentials"].as_array().unwrap().len(), 1);

    // Remove it.
    let response = server
        .admin(Method::DELETE, &format!("{certificates}/{key_id}"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 204);
    let (_, read) = call(&server, Method::GET, &format!("{apps}/{app_id}"), None);
    assert_eq!(read["keyCredentials"], json!([]));
    let (status, body) = call(
        &server,
        Method::DELETE,
        &format!("{certificates}/{key_id}"),
        None,
    );
    assert_graph_error(status, &body, 404, "Request_ResourceNotFound");
}

#[test]
fn signing_keys_rotate_and_the_active_key_cannot_be_removed() {
    let server = Server::start(&[]);

    let (status, list) = call(&server, Method::GET, "/api/signingKeys", None);
    assert_eq!(status, 200, "{list}");
    let keys = list["value"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{list}");
    let first = keys[0]["kid"].as_str().unwrap().to_string();
    assert_eq!(keys[0]["active"], true);
    for key in keys {
        let mut fields: Vec<&str> = key
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        fields.sort();
        assert_eq!(fields, ["active", "created", "kid", "x5t"], "{key}");
    }
    let token_before = server.token();

    // Rotate: a new active key; the old one stays published (inactive).
    let (status, rotated) = call(&server, Method::POST, "/api/signingKeys/rotate", None);
    assert_eq!(status, 201, "{rotated}");
    let second = rotated["kid"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    let (_, list) = call(&server, Method::GET, "/api/signingKeys", None);
    let keys = list["value"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let active: Vec<&str> = keys
        .iter()
        .filter(|k| k["active"] == true)
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(active, [second.as_str()]);
    assert!(!list.to_string().to_lowercase().contains("private"));

    // New tokens carry the new kid.
    let header = |token: &str| -> Value {
        use base64::Engine;
        let part = token.split('.').next().unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    assert_eq!(header(&token_before)["kid"], first.as_str());
    assert_eq!(header(&server.token())["kid"], second.as_str());

    // The active key cannot be removed; an unknown one is not found; the old one goes.
    let (status, body) = call(
        &server,
        Method::DELETE,
        &format!("/api/signingKeys/{second}"),
        None,
    );
    assert_graph_error(status, &body, 409, "Conflict");
    let (status, body) = call(
        &server,
        Method::DELETE,
        "/api/signingKeys/no-such-kid",
        None,
    );
    assert_graph_error(status, &body, 404, "Request_ResourceNotFound");
    let response = server
        .admin(Method::DELETE, &format!("/api/signingKeys/{first}"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 204);
    let (_, list) = call(&server, Method::GET, "/api/signingKeys", None);
    let kids: Vec<&str> = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [second.as_str()]);
}

#[test]
fn ingestion_records_are_served_with_their_copies() {
    let server = Server::start(&[]);
    let (status, body) = call(
        &server,
        Method::GET,
        &format!("/api/tenants/{TENANT}/ingestions/{}", uuid::Uuid::new_v4()),
        None,
    );
    assert_graph_error(status, &body, 404, "Request_ResourceNotFound");
    let (status, body) = call(
        &server,
        Method::GET,
        &format!("/api/tenants/{TENANT}/ingestions/not-a-guid"),
        None,
    );
    assert_graph_error(status, &body, 400, "Request_BadRequest");

    let token = server.token();
    let reply = server.ews(&token, &create_item(&[Msg::default().xml()]));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let correlation_id = reply.correlation_id().expect("correlation id");
    let record = server.ingestion(&correlation_id);
    assert_eq!(record["correlationId"], correlation_id.as_str());
    assert_eq!(record["tenant"], TENANT);
    let item = &record["items"][0];
    assert_eq!(item["result"], "stored", "{record}");
    let copies = item["item"]["copies"].as_array().expect("copies");
    assert!(
        copies.iter().any(|c| c["mailbox"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case("alice@contoso.com")
            && c["folder"].is_string()),
        "{record}"
    );
    assert_eq!(item["item"]["id"], item["itemId"]);

    // Not visible from another tenant.
    let (_, other) = call(
        &server,
        Method::POST,
        "/api/tenants",
        Some(json!({"displayName": "Other", "domains": ["other.example"]})),
    );
    let (status, _) = call(
        &server,
        Method::GET,
        &format!(
            "/api/tenants/{}/ingestions/{correlation_id}",
            other["id"].as_str().unwrap()
        ),
        None,
    );
    assert_eq!(status, 404);
}

// ----- the command-line client -----

fn cli(server: &Server, args: &[&str], with_key: bool) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_ingest-emulator"));
    command
        .args(args)
        .current_dir(dir.path())
        .env("INGEST_URL", &server.url)
        .env_remove("INGEST_ADMIN_KEY")
        .env_remove("INGEST_CLIENT_ID")
        .env_remove("INGEST_CLIENT_SECRET")
        .env_remove("INGEST_CA_CERT")
        .env_remove("INGEST_TENANT");
    if let Some(ca) = &server.ca_cert {
        command.env("INGEST_CA_CERT", ca);
    }
    if with_key {
        command.env("INGEST_ADMIN_KEY", &server.admin_key);
    }
    command.output().expect("run the CLI")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn field(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .trim()
        .to_string()
}

#[test]
fn the_cli_registers_consents_lists_revokes_and_gets_tokens() {
    let server = Server::start(&[]);

    // register: appId and the secret.
    let out = cli(
        &server,
        &["apps", "register", "--name", "CLI Connector"],
        true,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let app_id = field(&text, "appId");
    let secret = field(&text, "clientSecret");
    assert!(uuid::Uuid::parse_str(&app_id).is_ok(), "{text}");
    assert!(secret.len() >= 32, "{text}");

    // list: the new app, not consented; the fixture's apps with their states.
    let out = cli(&server, &["apps", "list"], true);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let row = |id: &str| -> String {
        table
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} not in\n{table}"))
            .to_string()
    };
    assert!(row(&app_id).contains("not consented"), "{table}");
    assert!(row(&app_id).contains("CLI Connector"), "{table}");
    assert!(row(APP_ID).contains("consented") && !row(APP_ID).contains("not consented"));
    assert!(
        row("44444444-4444-4444-4444-444444444444").contains("disabled"),
        "{table}"
    );
    assert!(!table.contains(&secret));

    // token before consent: the Entra error on stderr, non-zero exit, nothing on stdout.
    let token_args = [
        "token",
        "--tenant",
        TENANT_DOMAIN,
        "--client-id",
        &app_id,
        "--client-secret",
        &secret,
    ];
    let out = cli(&server, &token_args, false);
    assert!(!out.status.success());
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    assert!(stderr(&out).contains("AADSTS700016"), "{}", stderr(&out));

    // consent, then the token is printed alone.
    let out = cli(&server, &["apps", "consent", &app_id], true);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(&server, &token_args, false);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    assert_eq!(printed.lines().count(), 1, "{printed}");
    assert_eq!(printed.trim().split('.').count(), 3, "{printed}");
    let reply = server.ews(printed.trim(), &create_item(&[Msg::default().xml()]));
    assert_eq!(reply.status, 200, "{}", reply.body);

    // Credentials from the environment too.
    let mut command = Command::new(env!("CARGO_BIN_EXE_ingest-emulator"));
    command
        .args(["token", "--url", &server.url])
        .env("INGEST_CLIENT_ID", &app_id)
        .env("INGEST_CLIENT_SECRET", &secret)
        .env_remove("INGEST_URL");
    if let Some(ca) = &server.ca_cert {
        command.args(["--ca-cert", ca.to_str().unwrap()]);
    }
    let out = command.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // consent twice: the API's conflict, non-zero exit.
    let out = cli(&server, &["apps", "consent", &app_id], true);
    assert!(!out.status.success());
    assert!(!stderr(&out).is_empty());

    // A wrong secret.
    let out = cli(
        &server,
        &["token", "--client-id", &app_id, "--client-secret", "wrong"],
        false,
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("AADSTS"), "{}", stderr(&out));

    // list shows the consent; revoke; list and token again.
    let out = cli(&server, &["apps", "list"], true);
    let table = stdout(&out);
    let line = table.lines().find(|l| l.starts_with(&app_id)).unwrap();
    assert!(
        line.contains("consented") && !line.contains("not consented"),
        "{table}"
    );
    let out = cli(&server, &["apps", "revoke", &app_id], true);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(&server, &["apps", "list"], true);
    let table = stdout(&out);
    let line = table.lines().find(|l| l.starts_with(&app_id)).unwrap();
    assert!(line.contains("not consented"), "{table}");
    let out = cli(&server, &token_args, false);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("AADSTS700016"), "{}", stderr(&out));

    // register with roles and --consent.
    let out = cli(
        &server,
        &[
            "apps",
            "register",
            "--name",
            "Roles",
            "--role",
            "full_access_as_app",
            "--role",
            "Other.Role",
            "--consent",
        ],
        true,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let roles_app = field(&stdout(&out), "appId");
    let (_, sp) = call(
        &server,
        Method::GET,
        &format!("/api/tenants/{TENANT}/servicePrincipals/{roles_app}"),
        None,
    );
    assert_eq!(sp["appRoles"], json!(["full_access_as_app", "Other.Role"]));

    // Without the admin key, or with a wrong one: a clear error.
    let out = cli(&server, &["apps", "list"], false);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("admin key"), "{}", stderr(&out));
    let out = cli(&server, &["apps", "list", "--admin-key", "wrong"], false);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));
}

/// Names and addresses the directory keeps clean: a user principal name with characters Entra
/// refuses (a NUL would also split the store's keys: its copies would show as another
/// mailbox's), display names over 256 characters; and changes that would strand data: renaming
/// a user whose mailbox holds items, removing a domain users are in, deleting or renaming a
/// user a data connector maps.
#[test]
fn the_directory_refuses_names_and_changes_that_would_strand_data() {
    let server = Server::start(&[]);
    let users = format!("/api/tenants/{TENANT}/users");
    for upn in [
        "bob\u{0000}x@contoso.com",
        "eve\u{202E}moc@contoso.com",
        "a+b@contoso.com",
        "a b@contoso.com",
    ] {
        let (status, body) = call(
            &server,
            Method::POST,
            &users,
            Some(json!({"userPrincipalName": upn})),
        );
        assert_graph_error(status, &body, 400, "Request_BadRequest");
    }
    let long = "x".repeat(257);
    for (path, body) in [
        (
            users.clone(),
            json!({"userPrincipalName": "long@contoso.com", "displayName": long}),
        ),
        (
            format!("/api/tenants/{TENANT}"),
            json!({"displayName": long}),
        ),
        (
            format!("/api/tenants/{TENANT}/applications"),
            json!({"displayName": long}),
        ),
    ] {
        let method = if path.ends_with(TENANT) {
            Method::PATCH
        } else {
            Method::POST
        };
        let (status, answer) = call(&server, method, &path, Some(body));
        assert_graph_error(status, &answer, 400, "Request_BadRequest");
    }
    let (status, _) = call(
        &server,
        Method::POST,
        &users,
        Some(
            json!({"userPrincipalName": "o'neil.j-k_l!m#n^o~p@contoso.com", "displayName": "x".repeat(256)}),
        ),
    );
    assert_eq!(
        status, 201,
        "every character Entra takes, a 256-character name"
    );

    // Alice's mailbox holds an item: her principal name stays.
    let token = server.token();
    let reply = server.ews(&token, &create_item(&[Msg::default().xml()]));
    assert_eq!(reply.status, 200);
    let (status, body) = call(
        &server,
        Method::PATCH,
        &format!("{users}/alice@contoso.com"),
        Some(json!({"userPrincipalName": "alice.w@contoso.com"})),
    );
    assert_graph_error(status, &body, 409, "Conflict");

    // The tenant keeps the domains its users' principal names are in.
    let (status, body) = call(
        &server,
        Method::PATCH,
        &format!("/api/tenants/{TENANT}"),
        Some(json!({"domains": ["contoso.onmicrosoft.com", "contoso.net"]})),
    );
    assert_graph_error(status, &body, 409, "Conflict");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("contoso.com"),
        "{body}"
    );
    let (status, body) = call(
        &server,
        Method::PATCH,
        &format!("/api/tenants/{TENANT}"),
        Some(json!({"domains": ["contoso.onmicrosoft.com", "contoso.com", "contoso.net"]})),
    );
    assert_eq!(status, 200, "adding one is fine: {body}");

    // Carol is mapped by a connector: neither deleted nor renamed.
    let (status, body) = call(
        &server,
        Method::POST,
        "/api/compliance/connectors",
        Some(json!({"tenant": TENANT, "name": "Feed", "kind": "Pivot",
                    "mapping": {"explicit": {"carol-7": "carol@contoso.com"}}})),
    );
    assert_eq!(status, 201, "{body}");
    for (method, change) in [
        (Method::DELETE, None),
        (
            Method::PATCH,
            Some(json!({"userPrincipalName": "carol.r@contoso.com"})),
        ),
    ] {
        let (status, body) = call(
            &server,
            method,
            &format!("{users}/carol@contoso.com"),
            change,
        );
        assert_graph_error(status, &body, 409, "Conflict");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("Feed"),
            "{body}"
        );
    }
}

/// `health` (the container's HEALTHCHECK) exits 0 with `ok` while the server is healthy, on
/// its loopback address whatever certificate it serves, and fails when nothing answers.
#[test]
fn the_health_command_checks_a_running_server() {
    let mut server = Server::start(&[]);
    let mut command = Command::new(env!("CARGO_BIN_EXE_ingest-emulator"));
    command
        .args(["health", "--url", &server.url])
        .env_remove("INGEST_CA_CERT");
    let out = command.output().expect("run health");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "ok");
    let url = server.url.clone();
    server.kill();
    let out = Command::new(env!("CARGO_BIN_EXE_ingest-emulator"))
        .args(["health", "--url", &url])
        .output()
        .expect("run health");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));
}
