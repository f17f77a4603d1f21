//! The status dashboard over the wire: sign-in with the admin key for a session cookie (never
//! the key itself), the cookie as an admin credential, CSRF tokens on signed-in changes,
//! sign-out, login CSRF, the pages' security headers, and bearer clients left as they were.

mod common;

use common::*;
use reqwest::blocking::{RequestBuilder, Response};
use reqwest::header::{HeaderMap, CONTENT_TYPE, COOKIE, SET_COOKIE};
use reqwest::Method;
use serde_json::{json, Value};

const CONNECTORS: &str = "/api/compliance/connectors";
const SESSION_COOKIE: &str = "__Host-ingest-session";

/// A signed-in browser: its `Cookie` header and the page's CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

fn sign_in_with(server: &Server, key: &str) -> Response {
    server
        .post("/signin")
        .form(&[("key", key)])
        .send()
        .expect("sign-in")
}

fn set_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn sign_in(server: &Server) -> Session {
    let response = sign_in_with(server, &server.admin_key);
    assert_eq!(response.status(), 303);
    let set = set_cookie(response.headers()).expect("Set-Cookie");
    let cookie = set.split(';').next().expect("name=value").to_string();
    let page = server
        .get("/")
        .header(COOKIE, &cookie)
        .send()
        .expect("dashboard")
        .text()
        .expect("page");
    let csrf = between(&page, r#"<meta name="csrf-token" content=""#, r#"""#)
        .expect("the dashboard page carries the CSRF token");
    Session { cookie, csrf }
}

/// A request authenticated by the session cookie only.
fn with_cookie(server: &Server, session: &Session, method: Method, path: &str) -> RequestBuilder {
    server
        .client()
        .request(method, format!("{}{}", server.url, path))
        .header(COOKIE, &session.cookie)
}

fn partner(server: &Server, name: &str) -> String {
    let (status, created) = call(
        server,
        Method::POST,
        CONNECTORS,
        Some(json!({"tenant": TENANT, "name": name, "kind": "partner", "appId": APP_ID})),
    );
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().expect("id").to_string()
}

fn error_code(response: Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().expect("Graph error JSON");
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_string(),
    )
}

fn paused(server: &Server, id: &str) -> bool {
    let (status, connector) = call(server, Method::GET, &format!("{CONNECTORS}/{id}"), None);
    assert_eq!(status, 200, "{connector}");
    connector["paused"].as_bool().expect("paused")
}

#[test]
fn sign_in_with_a_wrong_key_is_refused_without_a_cookie() {
    let server = Server::start(&[]);
    for key in ["wrong", "", &format!("{}x", server.admin_key)] {
        let response = sign_in_with(&server, key);
        assert_eq!(response.status(), 401, "key {key:?}");
        assert!(set_cookie(response.headers()).is_none());
        let page = response.text().expect("page");
        assert!(page.contains("The admin key is not valid."), "{page}");
    }
}

#[test]
fn sign_in_sets_a_secure_http_only_strict_session_cookie_not_the_key() {
    let server = Server::start(&[]);
    let response = sign_in_with(&server, &server.admin_key);
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/");
    let set = set_cookie(response.headers()).expect("Set-Cookie");
    let attributes: Vec<String> = set.split(';').map(|a| a.trim().to_lowercase()).collect();
    for flag in ["secure", "httponly", "samesite=strict", "path=/"] {
        assert!(
            attributes.iter().any(|a| a == flag),
            "{flag} missing: {set}"
        );
    }
    let (name, value) = attributes[0].split_once('=').expect("name=value");
    assert_eq!(name, SESSION_COOKIE.to_lowercase());
    assert!(value.len() >= 43, "256-bit session id: {set}");
    assert!(
        !set.contains(&server.admin_key),
        "the key is not the cookie"
    );

    // Two sign-ins are two sessions.
    assert_ne!(sign_in(&server).cookie, sign_in(&server).cookie);
}

#[test]
fn a_session_cookie_reads_the_admin_api() {
    let server = Server::start(&[]);
    partner(&server, "Chat archive");
    let session = sign_in(&server);
    let response = with_cookie(&server, &session, Method::GET, CONNECTORS)
        .send()
        .expect("list");
    assert_eq!(response.status(), 200);
    let list: Value = response.json().expect("JSON");
    assert_eq!(list["value"][0]["name"], "Chat archive");

    // An unknown session is refused like a missing key.
    let forged = Session {
        cookie: format!("{SESSION_COOKIE}=forged"),
        csrf: String::new(),
    };
    let (status, code) = error_code(
        with_cookie(&server, &forged, Method::GET, CONNECTORS)
            .send()
            .expect("list"),
    );
    assert_eq!((status, code.as_str()), (401, "InvalidAuthenticationToken"));
    let page = server
        .get("/")
        .header(COOKIE, &forged.cookie)
        .send()
        .expect("page")
        .text()
        .expect("text");
    assert!(page.contains(r#"action="/signin""#), "sign-in form shown");
}

#[test]
fn signed_in_changes_need_the_session_csrf_token() {
    let server = Server::start(&[]);
    let id = partner(&server, "Pausable");
    let session = sign_in(&server);
    let other = sign_in(&server);
    let path = format!("{CONNECTORS}/{id}");
    let put = |token: Option<&str>| {
        let mut request =
            with_cookie(&server, &session, Method::PUT, &path).json(&json!({"paused": true}));
        if let Some(token) = token {
            request = request.header("X-CSRF-Token", token);
        }
        request.send().expect("PUT")
    };

    for token in [None, Some("wrong"), Some(""), Some(other.csrf.as_str())] {
        let (status, code) = error_code(put(token));
        assert_eq!(
            (status, code.as_str()),
            (403, "Authorization_RequestDenied"),
            "token {token:?}"
        );
        assert!(!paused(&server, &id), "a refused change changes nothing");
    }

    let response = put(Some(&session.csrf));
    assert_eq!(response.status(), 200);
    assert!(paused(&server, &id));

    // Deletes and posts too.
    let delete = with_cookie(&server, &session, Method::DELETE, &path)
        .send()
        .expect("DELETE");
    assert_eq!(delete.status(), 403);
    let delete = with_cookie(&server, &session, Method::DELETE, &path)
        .header("X-CSRF-Token", &session.csrf)
        .send()
        .expect("DELETE");
    assert_eq!(delete.status(), 204);
}

#[test]
fn running_an_import_from_the_dashboard_needs_the_csrf_token() {
    let server = Server::start(&[]);
    let (status, created) = call(
        &server,
        Method::POST,
        CONNECTORS,
        Some(json!({"tenant": TENANT, "name": "Slack archive", "kind": "Slack"})),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id");
    let (status, staged) = call(
        &server,
        Method::POST,
        &format!("{CONNECTORS}/{id}/staging"),
        Some(
            json!({"id": "s-1", "from": "alice@contoso.com", "subject": "hello",
                    "date": "2026-11-20T10:00:00Z", "email": ["alice@contoso.com"]}),
        ),
    );
    assert_eq!(status, 202, "{staged}");
    let session = sign_in(&server);
    let run = |token: Option<&str>| {
        let mut request = with_cookie(
            &server,
            &session,
            Method::POST,
            &format!("{CONNECTORS}/{id}/run"),
        );
        if let Some(token) = token {
            request = request.header("X-CSRF-Token", token);
        }
        request.send().expect("run")
    };

    let (status, code) = error_code(run(None));
    assert_eq!(
        (status, code.as_str()),
        (403, "Authorization_RequestDenied")
    );
    let (_, connector) = call(&server, Method::GET, &format!("{CONNECTORS}/{id}"), None);
    assert_eq!(
        connector["pendingItems"], 1,
        "a refused run imports nothing"
    );

    let response = run(Some(&session.csrf));
    assert_eq!(response.status(), 200);
    let result: Value = response.json().expect("JSON");
    assert_eq!(result["import"]["importedSuccessfully"], 1, "{result}");
    assert_eq!(result["pendingItems"], 0);

    // The page's log link, with the cookie only (a read needs no token).
    let log = with_cookie(
        &server,
        &session,
        Method::GET,
        &format!("{CONNECTORS}/{id}/log"),
    )
    .send()
    .expect("log");
    assert_eq!(log.status(), 200);
    assert!(log.headers()[CONTENT_TYPE]
        .to_str()
        .expect("type")
        .starts_with("text/csv"));
    assert!(log
        .text()
        .expect("CSV")
        .starts_with("Record type,Import completion time (UTC)"));
}

#[test]
fn sign_out_ends_the_session() {
    let server = Server::start(&[]);
    let session = sign_in(&server);
    let sign_out = |token: &str| {
        with_cookie(&server, &session, Method::POST, "/signout")
            .header("X-CSRF-Token", token)
            .send()
            .expect("sign-out")
    };
    // Without the session's token, sign-out is a change like any other: refused.
    assert_eq!(sign_out("wrong").status(), 403);
    let read = || {
        with_cookie(&server, &session, Method::GET, CONNECTORS)
            .send()
            .expect("list")
            .status()
    };
    assert_eq!(read(), 200);

    let response = sign_out(&session.csrf);
    assert_eq!(response.status(), 204);
    let cleared = set_cookie(response.headers()).expect("Set-Cookie");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(read(), 401);
    assert_eq!(sign_out(&session.csrf).status(), 204, "idempotent");
}

#[test]
fn sign_in_from_another_site_is_refused() {
    let server = Server::start(&[]);
    let attempt = |name: &str, value: &str| {
        server
            .post("/signin")
            .header(name, value)
            .form(&[("key", server.admin_key.as_str())])
            .send()
            .expect("sign-in")
    };
    for (name, value) in [
        ("Origin", "https://evil.example"),
        ("Origin", "null"),
        ("Referer", "https://evil.example/page"),
    ] {
        let response = attempt(name, value);
        assert_eq!(response.status(), 403, "{name}: {value}");
        assert!(set_cookie(response.headers()).is_none());
    }
    assert_eq!(attempt("Origin", &server.url).status(), 303);
    assert_eq!(
        attempt("Referer", &format!("{}/", server.url)).status(),
        303
    );
}

/// Over plain HTTP, browsers keep the `Secure` session cookie only on a loopback host: a
/// sign-in at another host is told so, instead of landing back on the form without a word.
#[test]
fn a_sign_in_over_plain_http_off_this_machine_says_why_it_cannot_work() {
    let server = Server::start(&["--no-tls"]);
    let attempt = |host: &str| {
        server
            .post("/signin")
            .header("Host", host)
            .form(&[("key", server.admin_key.as_str())])
            .send()
            .expect("sign-in")
    };
    let response = attempt("emulator.internal:8443");
    assert_eq!(response.status(), 400);
    assert!(set_cookie(response.headers()).is_none());
    assert!(response
        .text()
        .unwrap()
        .contains("only over HTTPS or on this machine"));
    for host in [
        "localhost:8443",
        "127.0.0.1:8443",
        "[::1]:8443",
        "app.localhost",
    ] {
        assert_eq!(attempt(host).status(), 303, "{host}");
    }
    // Behind a proxy that terminates TLS the browser is on HTTPS and keeps the cookie; its
    // form names the HTTPS origin, which is this server's as the browser sees it.
    for (name, value) in [
        ("X-Forwarded-Proto", "https"),
        ("Forwarded", "for=1.2.3.4;proto=https"),
    ] {
        let response = server
            .post("/signin")
            .header("Host", "emulator.example")
            .header("Origin", "https://emulator.example")
            .header(name, value)
            .form(&[("key", server.admin_key.as_str())])
            .send()
            .expect("sign-in");
        assert_eq!(response.status(), 303, "{name}: {value}");
    }
}

#[test]
fn dashboard_pages_send_a_strict_content_security_policy() {
    let server = Server::start(&[]);
    let session = sign_in(&server);
    let signed_out = server.get("/").send().expect("sign-in page");
    let signed_in = with_cookie(&server, &session, Method::GET, "/")
        .send()
        .expect("dashboard");
    for response in [signed_out, signed_in] {
        assert_eq!(response.status(), 200);
        let h = response.headers();
        let csp = h["content-security-policy"].to_str().expect("CSP");
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{directive} missing: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert!(h.contains_key("referrer-policy"));
        assert_eq!(h["cache-control"], "no-store");
        let body = response.text().expect("HTML");
        assert!(
            !body.contains("<script>") && !body.contains("style="),
            "no inline script or style"
        );
    }
    for (path, kind) in [
        ("/static/app.js", "text/javascript"),
        ("/static/app.css", "text/css"),
    ] {
        let response = server.get(path).send().expect("asset");
        assert_eq!(response.status(), 200);
        assert!(response.headers()[CONTENT_TYPE]
            .to_str()
            .expect("type")
            .starts_with(kind));
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    }
}

#[test]
fn bearer_admin_clients_are_unaffected() {
    let server = Server::start(&[]);
    let id = partner(&server, "Bearer");
    let session = sign_in(&server);
    // The admin key needs no CSRF token (no browser sends it by itself).
    let (status, value) = call(
        &server,
        Method::PUT,
        &format!("{CONNECTORS}/{id}"),
        Some(json!({"paused": true})),
    );
    assert_eq!(status, 200, "{value}");
    // A wrong key is refused, whatever cookie comes with it.
    let response = with_cookie(&server, &session, Method::GET, CONNECTORS)
        .bearer_auth("not-the-key")
        .send()
        .expect("list");
    assert_eq!(response.status(), 401);
    let response = server.get(CONNECTORS).send().expect("list");
    assert_eq!(response.status(), 401);
    // The routes around `/` still answer.
    assert_eq!(server.get("/healthz").send().expect("health").status(), 200);
    let openid = server
        .get(&format!("/{TENANT}/v2.0/.well-known/openid-configuration"))
        .send()
        .expect("openid");
    assert_eq!(openid.status(), 200);
    let (status, _) = call(&server, Method::GET, "/api", None);
    assert_eq!(status, 200);
}
