//! The admin API (`/api/...`): tenants, users, app registrations, consents (service
//! principals), ingestion records and signing keys. Guarded by the admin key; JSON in camelCase
//! as Microsoft Graph names things; errors shaped as Graph shapes them.

mod apps;
mod connectors;
mod directory;
mod error;
mod faults;
pub mod mailboxes;
mod search;

use std::sync::{Mutex, MutexGuard};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};

use error::{parse_guid, Admin};
pub use error::{ApiError, ApiResult};

use crate::app::AppState;
use crate::domain::TenantId;
use crate::identity::keys::KeyError;
use crate::store::model::TenantRecord;

/// Every admin route, guarded by the admin key.
pub fn routes() -> Router<AppState> {
    use apps::*;
    use directory::*;
    const T: &str = "/api/tenants/{tenant}";
    Router::new()
        .route("/api", get(index))
        .route("/api/tenants", get(list_tenants).post(create_tenant))
        .route(T, get(get_tenant).patch(patch_tenant).delete(delete_tenant))
        .route(&format!("{T}/users"), get(list_users).post(create_user))
        .route(
            &format!("{T}/users/{{upn}}"),
            get(get_user).patch(patch_user).delete(delete_user),
        )
        .route(
            &format!("{T}/applications"),
            get(list_apps).post(create_app),
        )
        .route(
            &format!("{T}/applications/{{app_id}}"),
            get(get_app).delete(delete_app),
        )
        .route(
            &format!("{T}/applications/{{app_id}}/secrets"),
            post(add_secret),
        )
        .route(
            &format!("{T}/applications/{{app_id}}/secrets/{{key_id}}"),
            axum::routing::delete(delete_secret),
        )
        .route(
            &format!("{T}/applications/{{app_id}}/certificates"),
            post(add_certificate),
        )
        .route(
            &format!("{T}/applications/{{app_id}}/certificates/{{key_id}}"),
            axum::routing::delete(delete_certificate),
        )
        .route(
            &format!("{T}/servicePrincipals"),
            get(list_sps).post(create_sp),
        )
        .route(
            &format!("{T}/servicePrincipals/{{app_id}}"),
            get(get_sp).patch(patch_sp).delete(delete_sp),
        )
        .route(
            &format!("{T}/ingestions/{{correlation_id}}"),
            get(get_ingestion),
        )
        .route("/api/signingKeys", get(list_keys))
        .route("/api/signingKeys/rotate", post(rotate_key))
        .route("/api/signingKeys/{kid}", axum::routing::delete(delete_key))
        .merge(search::routes())
        .merge(mailboxes::routes())
        .merge(faults::routes())
        .merge(connectors::routes())
        .route("/api/{*rest}", axum::routing::any(unknown_route))
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn(error::request_id))
}

// ----- shared helpers -----

/// Serialises the admin API's directory writes (check-then-write sequences stay atomic).
static WRITES: Mutex<()> = Mutex::new(());

fn write_lock() -> MutexGuard<'static, ()> {
    WRITES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits until the directory writes made so far are on disk (shares the store's group flush).
async fn durable(state: &AppState) -> ApiResult<()> {
    state.store.durable().await?;
    Ok(())
}

/// The tenant named by a path segment: its GUID or any of its accepted domains.
fn tenant_of(state: &AppState, name: &str) -> ApiResult<TenantRecord> {
    state.store.resolve_tenant(name.trim())?.ok_or_else(|| {
        ApiError::NotFound(format!(
            "Tenant '{name}' not found. Check the tenant id or domain name."
        ))
    })
}

// ----- index -----

async fn index(_: Admin) -> impl IntoResponse {
    const T: &str = "/api/tenants/{tenant}";
    let routes: Vec<Value> = [
        ("GET", "/api".to_string(), "this index"),
        ("GET", "/api/tenants".into(), "list tenants"),
        ("POST", "/api/tenants".into(), "create a tenant: {id?, displayName, domains, thirdPartyMailbox?, retentionDays?}"),
        ("GET", T.into(), "a tenant, by GUID or any accepted domain"),
        ("PATCH", T.into(), "change displayName, domains, thirdPartyMailbox, retentionDays"),
        ("DELETE", T.into(), "delete a tenant with its users, items and apps"),
        ("GET", format!("{T}/users"), "list users"),
        ("POST", format!("{T}/users"), "create a user: {userPrincipalName, displayName?, mail?, proxyAddresses?, mailboxEnabled?, litigationHold?, externalIds?}"),
        ("GET", format!("{T}/users/{{upn}}"), "a user"),
        ("PATCH", format!("{T}/users/{{upn}}"), "change a user (given fields only)"),
        ("DELETE", format!("{T}/users/{{upn}}"), "delete a user"),
        ("GET", format!("{T}/applications"), "apps registered in the tenant, with consent state"),
        ("POST", format!("{T}/applications"), "register an app: {displayName, requiredRoles?, secretEndDateTime?}; answers its clientSecret once"),
        ("GET", format!("{T}/applications/{{appId}}"), "an app registration"),
        ("DELETE", format!("{T}/applications/{{appId}}"), "delete an app and every consent to it"),
        ("POST", format!("{T}/applications/{{appId}}/secrets"), "add a secret: {endDateTime?, displayName?}; answers secretText once"),
        ("DELETE", format!("{T}/applications/{{appId}}/secrets/{{keyId}}"), "remove a secret"),
        ("POST", format!("{T}/applications/{{appId}}/certificates"), "add a certificate: {pem} or a PEM body (application/x-pem-file)"),
        ("DELETE", format!("{T}/applications/{{appId}}/certificates/{{keyId}}"), "remove a certificate"),
        ("GET", format!("{T}/servicePrincipals"), "consents in the tenant"),
        ("POST", format!("{T}/servicePrincipals"), "consent to an app: {appId}"),
        ("GET", format!("{T}/servicePrincipals/{{appId}}"), "a consent, by appId or object id"),
        ("PATCH", format!("{T}/servicePrincipals/{{appId}}"), "enable or disable: {accountEnabled}"),
        ("DELETE", format!("{T}/servicePrincipals/{{appId}}"), "revoke consent"),
        ("GET", format!("{T}/ingestions/{{correlationId}}"), "what one ingestion request did (x-IngestionCorrelationID)"),
        ("GET", format!("{T}/ingestions?top=&skip="), "the ingestion journal, newest first"),
        ("GET", format!("{T}/mailboxes"), "mailboxes with their folders and item counts"),
        ("GET", format!("{T}/mailboxes/{{upn}}/folders"), "a mailbox's folders"),
        ("GET", format!("{T}/mailboxes/{{upn}}/items?folder=&top=&skip="), "items of a folder, newest first"),
        ("GET", format!("{T}/items/{{id}}"), "every stored property of an item and its copies"),
        ("DELETE", format!("{T}/items/{{id}}"), "delete an item (409 under litigation hold)"),
        ("GET", format!("{T}/items/{{id}}/mime"), "the item as an .eml file"),
        ("GET", format!("{T}/items/{{id}}/attachments/{{n}}"), "an attachment's bytes"),
        ("POST", format!("{T}/retention/sweep?olderThan="), "run the retention sweep now"),
        ("GET", format!("{T}/retention/sweeps"), "recorded retention sweeps"),
        ("POST", format!("{T}/search"), "Content Search (KQL): {query, mailboxes?, top?, skip?}"),
        ("GET", format!("{T}/search/latest?query="), "the newest match"),
        ("GET", format!("{T}/search/wait?query=&count=&timeout="), "wait until count items match"),
        ("DELETE", format!("{T}/search?query=&force="), "delete the matches (subject to holds)"),
        ("POST", "/api/reset?scope=&force=".into(), "remove all items and records (scope=all: restore fixtures)"),
        ("GET", "/api/faults".into(), "fault injection rules, in the order they are tried"),
        ("PUT", "/api/faults".into(), "replace every rule: [{id?, tenant?, appId?, operation?, probability?, count?, fault: {kind: serverBusy|itemServerBusy|http503|http429|latency|dropConnection|itemBudget, ...}}]"),
        ("POST", "/api/faults".into(), "add a rule (same shape); answers it with its id"),
        ("DELETE", "/api/faults".into(), "remove every rule"),
        ("GET", "/api/faults/{id}".into(), "a rule, with the faults it injected and how many remain"),
        ("DELETE", "/api/faults/{id}".into(), "remove a rule"),
        ("GET", "/api/signingKeys".into(), "token signing keys (public data only)"),
        ("POST", "/api/signingKeys/rotate".into(), "new active signing key; older keys stay published"),
        ("DELETE", "/api/signingKeys/{kid}".into(), "unpublish an inactive signing key"),
    ]
    .into_iter()
    .chain(connectors::index())
    .map(|(method, path, description)| {
        json!({ "method": method, "path": path, "description": description })
    })
    .collect();
    Json(json!({
        "service": "ingest-emulator admin API",
        "version": env!("CARGO_PKG_VERSION"),
        "authentication": "Authorization: Bearer <admin key>, or the dashboard's session cookie (with X-CSRF-Token on changes)",
        "tenant": "{tenant} is the tenant's GUID or any of its accepted domains",
        "routes": routes,
    }))
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
    tokio::task::spawn_blocking(move || worker.keys.active_kid())
        .await
        .map_err(|e| ApiError::Keys(e.to_string()))??;
    Ok(Json(json!({ "value": key_views(&state)? })))
}

async fn rotate_key(_: Admin, State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    // Generating an RSA key takes a while: off the async workers.
    let worker = state.clone();
    let kid = tokio::task::spawn_blocking(move || {
        let _guard = write_lock();
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
    tokio::task::spawn_blocking(move || {
        let _guard = write_lock();
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
