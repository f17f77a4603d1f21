//! The admin API (`/api/...`): tenants, users, app registrations, consents (service
//! principals), ingestion records and signing keys. Guarded by the admin key; JSON in camelCase
//! as Microsoft Graph names things; errors shaped as Graph shapes them.

mod apps;
mod connectors;
mod directory;
mod error;
mod faults;
pub mod mailboxes;
mod openapi;
mod registry;
mod search;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::IntoResponse;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};

use error::{parse_guid, Admin};
pub use error::{ApiError, ApiResult};
use registry::Routes;

use crate::app::AppState;
use crate::domain::TenantId;
use crate::identity::keys::KeyError;
use crate::store::model::TenantRecord;

/// Every admin route, guarded by the admin key (except the OpenAPI document).
pub fn routes() -> Router<AppState> {
    admin_routes()
        .into_router()
        .route("/api/{*rest}", axum::routing::any(unknown_route))
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn(error::request_id))
}

/// The `(method, path)` of every admin route the router serves (for the test that holds
/// `openapi.json` to them).
#[cfg(test)]
fn registered_routes() -> Vec<(axum::http::Method, String)> {
    admin_routes().registered().to_vec()
}

/// The admin routes, each registered through [`Routes`] so that they can be listed. Every one
/// must be described in `openapi.json`.
fn admin_routes() -> Routes {
    use apps::*;
    use directory::*;
    const T: &str = "/api/tenants/{tenant}";
    let app = format!("{T}/applications/{{app_id}}");
    let sp = format!("{T}/servicePrincipals/{{app_id}}");
    Routes::new()
        .get("/api", index)
        .get("/api/openapi.json", openapi::serve)
        .get("/api/tenants", list_tenants)
        .post("/api/tenants", create_tenant)
        .get(T, get_tenant)
        .patch(T, patch_tenant)
        .delete(T, delete_tenant)
        .get(&format!("{T}/users"), list_users)
        .post(&format!("{T}/users"), create_user)
        .get(&format!("{T}/users/{{upn}}"), get_user)
        .patch(&format!("{T}/users/{{upn}}"), patch_user)
        .delete(&format!("{T}/users/{{upn}}"), delete_user)
        .get(&format!("{T}/applications"), list_apps)
        .post(&format!("{T}/applications"), create_app)
        .get(&app, get_app)
        .patch(&app, patch_app)
        .delete(&app, delete_app)
        .post(&format!("{app}/secrets"), add_secret)
        .delete(&format!("{app}/secrets/{{key_id}}"), delete_secret)
        .post(&format!("{app}/certificates"), add_certificate)
        .delete(
            &format!("{app}/certificates/{{key_id}}"),
            delete_certificate,
        )
        .get(&format!("{T}/servicePrincipals"), list_sps)
        .post(&format!("{T}/servicePrincipals"), create_sp)
        .get(&sp, get_sp)
        .patch(&sp, patch_sp)
        .delete(&sp, delete_sp)
        .get(&format!("{T}/ingestions/{{correlation_id}}"), get_ingestion)
        .get("/api/signingKeys", list_keys)
        .post("/api/signingKeys/rotate", rotate_key)
        .delete("/api/signingKeys/{kid}", delete_key)
        .merge(search::routes())
        .merge(mailboxes::routes())
        .merge(faults::routes())
        .merge(connectors::routes())
}

// ----- shared helpers -----

/// Serialises the admin API's writes (check-then-write sequences stay atomic). Some hold it
/// for long (a key generated, a tenant deleted, a reset): an async handler waits for it
/// without blocking its worker thread ([`write_lock`]), so ingestion and every other request
/// go on meanwhile; blocking tasks take it with [`write_lock_blocking`].
static WRITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub(crate) async fn write_lock() -> tokio::sync::MutexGuard<'static, ()> {
    WRITES.lock().await
}

/// [`write_lock`] for a blocking task (never from an async context: it would block a worker).
fn write_lock_blocking() -> tokio::sync::MutexGuard<'static, ()> {
    WRITES.blocking_lock()
}

/// Waits until the directory writes made so far are on disk (shares the store's group flush).
async fn durable(state: &AppState) -> ApiResult<()> {
    state.store.durable().await?;
    Ok(())
}

/// The tenant named by a path segment: its GUID or any of its accepted domains.
fn tenant_of(state: &AppState, name: &str) -> ApiResult<TenantRecord> {
    state
        .store
        .resolve_tenant(name.trim())?
        .map(std::sync::Arc::unwrap_or_clone)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "Tenant '{name}' not found. Check the tenant id or domain name."
            ))
        })
}

// ----- index -----

/// `GET /api`: every route, from the OpenAPI document (one source of truth).
async fn index(_: Admin) -> ApiResult<impl IntoResponse> {
    Ok(Json(json!({
        "service": "ingest-emulator admin API",
        "version": env!("CARGO_PKG_VERSION"),
        "authentication": "Authorization: Bearer <admin key>, or the dashboard's session cookie (with X-CSRF-Token on changes); GET /api/openapi.json needs none",
        "tenant": "{tenant} is the tenant's GUID or any of its accepted domains",
        "openapi": "/api/openapi.json",
        "routes": openapi::index_lines()?,
    })))
}

async fn unknown_route(_: Admin, uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!(
        "No admin resource at '{}' for this method (GET /api lists them).",
        uri.path()
    ))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{method} is not supported on '{}' (GET /api lists the routes).",
        uri.path()
    ))
}

// ----- ingestion records -----

async fn get_ingestion(
    _: Admin,
    State(state): State<AppState>,
    Path((tenant, correlation_id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let tenant = tenant_of(&state, &tenant)?;
    let id = parse_guid(&correlation_id, "correlation id")?;
    let record = state
        .store
        .ingestion(TenantId(tenant.id), id)?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "No ingestion request with correlation id '{id}' in tenant '{}'.",
                tenant.id
            ))
        })?;
    let mut value = serde_json::to_value(&record).map_err(crate::store::StoreError::from)?;
    // Each stored item with what it is now (its copies, class, size), or null once deleted.
    if let Some(items) = value.get_mut("items").and_then(Value::as_array_mut) {
        for entry in items {
            let Some(object) = entry.as_object_mut() else {
                continue;
            };
            let Some(item_id) = object
                .get("itemId")
                .and_then(Value::as_str)
                .and_then(|s| uuid::Uuid::parse_str(s).ok())
            else {
                continue;
            };
            let summary = match state.store.item(item_id)? {
                Some(item) => json!({
                    "id": item.id,
                    "itemClass": item.item_class,
                    "searchedItemClass": item.searched_item_class,
                    "subject": item.subject,
                    "sent": item.sent,
                    "received": item.received,
                    "size": item.size,
                    "attachments": item.attachments.len(),
                    "copies": item.copies,
                }),
                None => Value::Null,
            };
            object.insert("item".into(), summary);
        }
    }
    Ok(Json(value))
}

// ----- signing keys -----

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SigningKeyView {
    kid: String,
    x5t: String,
    active: bool,
    created: chrono::DateTime<chrono::Utc>,
}

fn key_views(state: &AppState) -> ApiResult<Vec<SigningKeyView>> {
    let mut keys: Vec<SigningKeyView> = state
        .store
        .signing_keys()?
        .into_iter()
        .map(|k| SigningKeyView {
            kid: k.kid,
            x5t: k.x5t,
            active: k.active,
            created: k.created,
        })
        .collect();
    keys.sort_by_key(|k| std::cmp::Reverse(k.created));
    Ok(keys)
}

async fn list_keys(_: Admin, State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    // A new store's first key may still be being generated: wait for it (off the workers).
    let worker = state.clone();
    crate::task::spawn_blocking(move || worker.keys.active_kid())
        .await
        .map_err(|e| ApiError::Keys(e.to_string()))??;
    Ok(Json(json!({ "value": key_views(&state)? })))
}

async fn rotate_key(_: Admin, State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    // Generating an RSA key takes a while: off the async workers.
    let worker = state.clone();
    let kid = crate::task::spawn_blocking(move || {
        let _guard = write_lock_blocking();
        worker.keys.rotate(&worker.store)
    })
    .await
    .map_err(|e| ApiError::Keys(e.to_string()))??;
    durable(&state).await?;
    let key = key_views(&state)?.into_iter().find(|k| k.kid == kid);
    Ok((StatusCode::CREATED, Json(json!({ "kid": kid, "key": key }))))
}

async fn delete_key(
    _: Admin,
    State(state): State<AppState>,
    Path(kid): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let worker = state.clone();
    crate::task::spawn_blocking(move || {
        let _guard = write_lock_blocking();
        worker.keys.active_kid()?;
        let known = worker
            .store
            .signing_keys()?
            .into_iter()
            .find(|k| k.kid == kid);
        match known {
            Some(key) if key.active => Err(KeyError::ActiveKey(kid).into()),
            Some(_) => match worker.keys.remove(&worker.store, &kid)? {
                true => Ok(()),
                false => Err(no_such_key(&kid)),
            },
            None => Err(no_such_key(&kid)),
        }
    })
    .await
    .map_err(|e| ApiError::Keys(e.to_string()))??;
    durable(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn no_such_key(kid: &str) -> ApiError {
    ApiError::NotFound(format!("No signing key with kid '{kid}'."))
}
