//! The OpenAPI document of the admin API (`GET /api/openapi.json`) against the real server:
//! every documented operation is served, no other method is served on a documented path, and
//! only the document itself is served without the admin key. The converse (every route the
//! router registers is documented) is the unit test `admin::openapi::tests`, which reads the
//! router's own record of its routes.

mod common;

use std::collections::BTreeMap;

use common::*;
use reqwest::Method;
use serde_json::Value;

/// The methods an operation may have.
const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// One documented operation.
struct Operation {
    method: Method,
    template: String,
    /// Names of its query parameters.
    query: Vec<String>,
    /// `security: []`: served without the admin key.
    public: bool,
    /// `x-pending`: documented ahead of the code that serves it.
    pending: bool,
}

/// The document, fetched without the admin key.
fn document(server: &Server) -> Value {
    let response = server.get("/api/openapi.json").send().expect("document");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let doc: Value = response.json().expect("the document is JSON");
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3."), "openapi: {version}");
    doc
}

/// `value`, or what its local `$ref` points to.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(reference) => doc
            .pointer(reference.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("unresolved {reference}")),
        None => value,
    }
}

fn operations(doc: &Value) -> Vec<Operation> {
    let paths = doc["paths"].as_object().expect("paths");
    let mut out = Vec::new();
    for (template, item) in paths {
        for method in METHODS {
            let operation = &item[method.as_str().to_ascii_lowercase()];
            if operation.is_null() {
                continue;
            }
            let parameters = [&item["parameters"], &operation["parameters"]]
                .into_iter()
                .filter_map(Value::as_array)
                .flatten()
                .map(|p| resolve(doc, p));
            let query = parameters
                .filter(|p| p["in"] == "query")
                .map(|p| p["name"].as_str().expect("name").to_string())
                .collect();
            out.push(Operation {
                method,
                template: template.clone(),
                query,
                public: operation["security"] == serde_json::json!([]),
                pending: !operation["x-pending"].is_null(),
            });
        }
    }
    assert!(out.len() > 50, "only {} operations", out.len());
    out
}

/// A path to request for a template: `{tenant}` the fixture tenant by one of its domains,
/// `{upn}` one of its users, any other parameter a fresh GUID; the query options that would
/// make a request wait are set to not wait.
fn fill(template: &str, query: &[String]) -> String {
    let mut path = String::new();
    for segment in template.split('/').skip(1) {
        path.push('/');
        match segment {
            "{tenant}" => path.push_str("contoso.com"),
            "{upn}" => path.push_str("alice@contoso.com"),
            s if s.starts_with('{') => path.push_str(&uuid::Uuid::new_v4().to_string()),
            s => path.push_str(s),
        }
    }
    if query.iter().any(|q| q == "timeout") {
        path.push_str("?timeout=0");
    }
    path
}

/// How the router answered a request.
#[derive(Debug, PartialEq)]
enum Answer {
    /// A handler of the route answered (whatever it said).
    Served(u16),
    /// The catch-all: no route has this path.
    UnknownRoute,
    /// The path has routes, not for this method.
    MethodNotAllowed,
}

fn send(server: &Server, method: &Method, path: &str, with_key: bool) -> Answer {
    let url = format!("{}{path}", server.url);
    let mut request = server.client().request(method.clone(), url);
    if with_key {
        request = request.bearer_auth(&server.admin_key);
    }
    if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        request = request
            .header("Content-Type", "application/json")
            .body("{}");
    }
    let response = request.send().expect("admin request");
    let status = response.status().as_u16();
    let body: Value =
        serde_json::from_str(&response.text().unwrap_or_default()).unwrap_or_default();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    match status {
        405 => Answer::MethodNotAllowed,
        404 if message.starts_with("No admin resource at") => Answer::UnknownRoute,
        status => Answer::Served(status),
    }
}

#[test]
fn only_the_document_is_served_without_the_admin_key() {
    let server = Server::start(&[]);
    let doc = document(&server);
    let with_key: Value = server
        .admin(Method::GET, "/api/openapi.json")
        .send()
        .expect("document")
        .json()
        .expect("JSON");
    assert_eq!(with_key, doc);
    let mut failures = Vec::new();
    for op in operations(&doc) {
        let path = fill(&op.template, &op.query);
        let answer = send(&server, &op.method, &path, false);
        let expected = Answer::Served(if op.public { 200 } else { 401 });
        if answer != expected {
            failures.push(format!("{} {path} without the key: {answer:?}", op.method));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn every_documented_operation_is_served() {
    let server = Server::start(&[]);
    let mut failures = Vec::new();
    for op in operations(&document(&server)) {
        let path = fill(&op.template, &op.query);
        let answer = send(&server, &op.method, &path, true);
        let name = format!("{} {}", op.method, op.template);
        match (op.pending, answer) {
            (false, Answer::Served(_)) | (true, Answer::UnknownRoute) => {}
            (false, answer) => {
                failures.push(format!("{name} is documented, not served: {answer:?}"))
            }
            (true, answer) => failures.push(format!(
                "{name} is served now ({answer:?}): remove its \"x-pending\" mark in openapi.json"
            )),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn no_undocumented_method_is_served_on_a_documented_path() {
    let server = Server::start(&[]);
    let mut by_path: BTreeMap<String, Vec<Operation>> = BTreeMap::new();
    for op in operations(&document(&server)) {
        by_path.entry(op.template.clone()).or_default().push(op);
    }
    let mut failures = Vec::new();
    for (template, ops) in &by_path {
        // A path whose every operation is pending is not routed at all yet.
        let expected = match ops.iter().all(|op| op.pending) {
            true => Answer::UnknownRoute,
            false => Answer::MethodNotAllowed,
        };
        for method in METHODS {
            if ops.iter().any(|op| op.method == method) {
                continue;
            }
            let path = fill(template, &[]);
            let answer = send(&server, &method, &path, true);
            if answer != expected {
                failures.push(format!("{method} {template} is not documented: {answer:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
