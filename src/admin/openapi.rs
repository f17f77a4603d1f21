//! The OpenAPI 3 document of the admin API (`openapi.json`, embedded at build time): served at
//! `GET /api/openapi.json` *without* the admin key (it is documentation of a local tool, and
//! Swagger UI or a client generator can fetch it as is), and the source of the `GET /api` index.
//! The tests below hold it to the routes the router registers.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};

/// The document, as written in the repository.
const DOCUMENT: &str = include_str!("openapi.json");

/// The methods an OpenAPI path item may describe, in the order the index lists them.
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// `GET /api/openapi.json`: the document, to anyone (see the module documentation).
pub async fn serve() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            // Readable by a Swagger UI served from another origin.
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        DOCUMENT,
    )
}

/// The document, parsed once. It always parses (a unit test checks), but a failure would be
/// answered, not panicked on.
fn document() -> ApiResult<&'static Value> {
    static PARSED: OnceLock<Result<Value, String>> = OnceLock::new();
    PARSED
        .get_or_init(|| serde_json::from_str(DOCUMENT).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| ApiError::Internal(format!("The embedded openapi.json is invalid: {e}")))
}

/// One operation of the document.
struct Operation<'a> {
    /// Upper case, as on the wire.
    method: String,
    path: &'a str,
    path_item: &'a Value,
    operation: &'a Value,
}

/// Every operation, by path, then in [`METHODS`] order.
fn operations(doc: &Value) -> Vec<Operation<'_>> {
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
        return Vec::new();
    };
    paths
        .iter()
        .flat_map(|(path, path_item)| {
            METHODS.iter().filter_map(move |method| {
                path_item.get(*method).map(|operation| Operation {
                    method: method.to_ascii_uppercase(),
                    path,
                    path_item,
                    operation,
                })
            })
        })
        .collect()
}

/// `value`, or what its `$ref` (a local JSON pointer, `#/components/...`) points to.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> Option<&'a Value> {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => doc.pointer(reference.strip_prefix('#')?),
        None => Some(value),
    }
}

/// The parameters of an operation (its path item's, then its own), `$ref`s resolved.
fn parameters<'a>(doc: &'a Value, op: &Operation<'a>) -> Vec<&'a Value> {
    [op.path_item, op.operation]
        .into_iter()
        .filter_map(|v| v.get("parameters").and_then(Value::as_array))
        .flatten()
        .filter_map(|p| resolve(doc, p))
        .collect()
}

/// The lines of the `GET /api` index: method, path (with its query options, `?top=&skip=`)
/// and the operation's summary.
pub fn index_lines() -> ApiResult<Vec<Value>> {
    let doc = document()?;
    Ok(operations(doc)
        .iter()
        .map(|op| {
            let query: Vec<String> = parameters(doc, op)
                .into_iter()
                .filter(|p| p.get("in").and_then(Value::as_str) == Some("query"))
                .filter_map(|p| p.get("name").and_then(Value::as_str))
                .map(|name| format!("{name}="))
                .collect();
            let path = match query.is_empty() {
                true => op.path.to_string(),
                false => format!("{}?{}", op.path, query.join("&")),
            };
            let summary = op.operation.get("summary").and_then(Value::as_str);
            json!({ "method": op.method, "path": path, "description": summary })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn doc() -> &'static Value {
        match document() {
            Ok(doc) => doc,
            Err(e) => panic!("{e}"),
        }
    }

    /// `METHOD /path` with every `{parameter}` written `{}`: the names differ between the
    /// router (`{app_id}`) and the document (`{appId}`), the places do not.
    fn key(method: &str, path: &str) -> String {
        let mut out = format!("{} ", method.to_ascii_uppercase());
        let mut in_parameter = false;
        for c in path.chars() {
            match c {
                '{' => {
                    in_parameter = true;
                    out.push_str("{}");
                }
                '}' => in_parameter = false,
                c if !in_parameter => out.push(c),
                _ => {}
            }
        }
        out
    }

    /// Whether the operation is marked `x-pending`: documented ahead of the code that serves it.
    fn pending(op: &Operation) -> bool {
        op.operation.get("x-pending").is_some()
    }

    fn walk<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get("$ref") {
                    found.push(reference);
                }
                map.values().for_each(|v| walk(v, found));
            }
            Value::Array(values) => values.iter().for_each(|v| walk(v, found)),
            _ => {}
        }
    }

    #[test]
    fn the_document_is_openapi_3_with_the_admin_key_as_bearer_auth() {
        let doc = doc();
        let version = doc["openapi"].as_str().unwrap_or_default();
        assert!(version.starts_with("3.0."), "openapi: {version}");
        assert!(doc["info"]["title"].is_string());
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        let scheme = &doc["components"]["securitySchemes"]["bearerAuth"];
        assert_eq!(scheme["type"], "http");
        assert_eq!(scheme["scheme"], "bearer");
        // The admin key, or the dashboard's session cookie (whose changes need the CSRF
        // token: every change documents the 403).
        let cookie = &doc["components"]["securitySchemes"]["sessionCookie"];
        assert_eq!(
            (cookie["type"].as_str(), cookie["in"].as_str()),
            (Some("apiKey"), Some("cookie"))
        );
        assert_eq!(cookie["name"], crate::dashboard::session::COOKIE);
        assert_eq!(
            doc["security"],
            json!([{ "bearerAuth": [] }, { "sessionCookie": [] }])
        );
        for op in operations(doc) {
            if op.operation.get("security").is_none() && op.method != "GET" {
                assert!(
                    op.operation["responses"]["403"].is_object(),
                    "{} {} documents no 403 (CSRF)",
                    op.method,
                    op.path
                );
            }
        }
        // Only the document itself opts out of the key.
        let public: Vec<String> = operations(doc)
            .iter()
            .filter(|op| op.operation.get("security").is_some())
            .map(|op| {
                assert_eq!(
                    op.operation["security"],
                    json!([]),
                    "{} {}",
                    op.method,
                    op.path
                );
                key(&op.method, op.path)
            })
            .collect();
        assert_eq!(public, ["GET /api/openapi.json"]);
    }

    #[test]
    fn every_reference_resolves() {
        let doc = doc();
        let mut references = Vec::new();
        walk(doc, &mut references);
        assert!(references.len() > 50);
        for reference in references {
            let target = reference.strip_prefix('#').and_then(|p| doc.pointer(p));
            assert!(target.is_some(), "unresolved $ref {reference}");
        }
    }

    #[test]
    fn every_operation_is_described_with_its_path_parameters() {
        let doc = doc();
        let mut ids = BTreeSet::new();
        for op in operations(doc) {
            let name = format!("{} {}", op.method, op.path);
            let id = op.operation["operationId"].as_str().unwrap_or_default();
            assert!(
                !id.is_empty() && ids.insert(id),
                "{name}: operationId {id:?}"
            );
            assert!(op.operation["summary"].is_string(), "{name}: summary");
            let responses = op.operation["responses"].as_object();
            assert!(
                responses.is_some_and(|r| !r.is_empty()),
                "{name}: responses"
            );
            if op.operation.get("security").is_none() {
                assert!(
                    op.operation["responses"].get("401").is_some(),
                    "{name}: 401 (admin key)"
                );
            }
            let templated: BTreeSet<&str> = op
                .path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            let parameters = parameters(doc, &op);
            let declared: BTreeSet<&str> = parameters
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| {
                    assert_eq!(p["required"], true, "{name}: path parameters are required");
                    p["name"].as_str().unwrap_or_default()
                })
                .collect();
            assert_eq!(templated, declared, "{name}: path parameters");
            for p in parameters {
                assert!(p["schema"].is_object(), "{name}: schema of {p}");
            }
        }
    }

    /// The converse of `tests/openapi.rs` (which sends every documented operation to the real
    /// server): every route the router registers is documented, and only those are.
    #[test]
    fn the_documented_routes_are_the_registered_routes() {
        let doc = doc();
        let mut registered = BTreeMap::new();
        for (method, path) in super::super::registered_routes() {
            let key = key(method.as_str(), &path);
            let previous = registered.insert(key.clone(), path);
            assert!(previous.is_none(), "{key} is registered twice");
        }
        let mut documented = BTreeSet::new();
        for op in operations(doc) {
            let key = key(&op.method, op.path);
            if pending(&op) {
                assert!(
                    !registered.contains_key(&key),
                    "{key} is registered now: remove its \"x-pending\" mark in openapi.json"
                );
            } else {
                documented.insert(key);
            }
        }
        let undocumented: Vec<&String> = registered
            .keys()
            .filter(|k| !documented.contains(*k))
            .collect();
        let unregistered: Vec<&String> = documented
            .iter()
            .filter(|k| !registered.contains_key(*k))
            .collect();
        assert!(
            undocumented.is_empty() && unregistered.is_empty(),
            "registered but not in src/admin/openapi.json: {undocumented:?}; \
             in src/admin/openapi.json but not registered: {unregistered:?}"
        );
    }

    #[test]
    fn the_index_lists_every_operation_with_its_query_options() {
        let lines = match index_lines() {
            Ok(lines) => lines,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(lines.len(), operations(doc()).len());
        assert!(lines.iter().all(|l| l["description"].is_string()));
        assert!(lines.contains(&json!({
            "method": "GET",
            "path": "/api/tenants/{tenant}/ingestions?top=&skip=",
            "description": "The ingestion journal of the tenant, newest first",
        })));
    }
}
