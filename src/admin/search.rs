//! Content Search over the admin API: `POST /api/tenants/{tenant}/search` (KQL), and the test
//! helpers `GET .../search/latest`, `GET .../search/wait` (long poll) and `DELETE .../search`
//! (delete the matching items, subject to litigation holds).
//!
//! A hit is a copy: an item copied to three mailboxes is three hits, as Content Search counts
//! items per mailbox. Hits come newest received first.

use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::error::{Admin, ApiError, ApiResult, Body};
use super::registry::Routes;
use super::{tenant_of, write_lock_blocking};
use crate::app::AppState;
use crate::domain::TenantId;
use crate::search::kql::{self, Expr};
use crate::search::{Hit, Results};

const DEFAULT_TOP: usize = 100;
const MAX_TOP: usize = 10_000;
const DEFAULT_WAIT_MS: u64 = 10_000;
const MAX_WAIT_MS: u64 = 300_000;

pub fn routes() -> Routes {
    const T: &str = "/api/tenants/{tenant}";
    Routes::new()
        .post(&format!("{T}/search"), search)
        .get(&format!("{T}/search"), search_get)
        .delete(&format!("{T}/search"), delete_matches)
        .get(&format!("{T}/search/latest"), latest)
        .get(&format!("{T}/search/wait"), wait)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SearchBody {
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    mailboxes: Option<Vec<String>>,
    #[serde(default)]
    top: Option<usize>,
    #[serde(default)]
    skip: Option<usize>,
}

/// Query-string parameters of the GET/DELETE helpers.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Params {
    query: Option<String>,
    /// Comma-separated mailboxes.
    mailboxes: Option<String>,
    top: Option<String>,
    skip: Option<String>,
    count: Option<String>,
    timeout: Option<String>,
    force: Option<String>,
}

fn params(raw: Option<String>) -> ApiResult<Params> {
    serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("Invalid query string: {e}.")))
}

fn number<T: std::str::FromStr>(value: &Option<String>, name: &str) -> ApiResult<Option<T>> {
    match value {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| {
            ApiError::BadRequest(format!(
                "Invalid {name} '{v}': expected a non-negative integer."
            ))
        }),
    }
}

fn parse_query(query: Option<&str>) -> ApiResult<Expr> {
    kql::parse(query.unwrap_or("")).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// Resolves mailboxes (UPN, SMTP address, proxy or external identity) to lower-case UPNs.
fn resolve_mailboxes(
    state: &AppState,
    tenant: TenantId,
    given: &[String],
) -> ApiResult<Vec<String>> {
    let mut out = Vec::with_capacity(given.len());
    for mailbox in given.iter().map(|m| m.trim()).filter(|m| !m.is_empty()) {
        match state.store.user_by_address(tenant, mailbox)? {
            Some(user) => out.push(user.user_principal_name.to_lowercase()),
            None => {
                return Err(ApiError::BadRequest(format!(
                    "No mailbox '{mailbox}' in tenant '{}': give user principal names or SMTP addresses of the tenant's users.",
                    tenant.0
                )))
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn split_mailboxes(value: &Option<String>) -> Vec<String> {
    value
        .as_deref()
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default()
}

/// Runs a search off the async workers (it may commit the index and reads it).
async fn run(
    state: &AppState,
    tenant: Uuid,
    expr: Expr,
    mailboxes: Vec<String>,
    skip: usize,
    top: usize,
) -> ApiResult<Results> {
    let index = state.search.clone();
    crate::task::spawn_blocking(move || index.search(tenant, &expr, &mailboxes, skip, top))
        .await
        .map_err(index_error)?
        .map_err(index_error)
}

/// An index failure is a server error (500), reported as what it is.
fn index_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::Store(crate::store::StoreError::Sled(sled::Error::Unsupported(
        e.to_string(),
    )))
}

fn results_json(results: Results, skip: usize, top: usize) -> serde_json::Value {
    json!({
        "total": results.total,
        "skip": skip,
        "top": top,
        "hits": results.hits,
    })
}

async fn search(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    Body(body): Body<SearchBody>,
) -> ApiResult<impl IntoResponse> {
    let tenant = tenant_of(&state, &tenant)?;
    let expr = parse_query(body.query.as_deref())?;
    let mailboxes = resolve_mailboxes(
        &state,
        TenantId(tenant.id),
        body.mailboxes.as_deref().unwrap_or(&[]),
    )?;
    let top = body.top.unwrap_or(DEFAULT_TOP).min(MAX_TOP);
    let skip = body.skip.unwrap_or(0);
    let results = run(&state, tenant.id, expr, mailboxes, skip, top).await?;
    Ok(Json(results_json(results, skip, top)))
}

/// `GET .../search?query=...&mailboxes=a,b&top=&skip=`: the same search from a URL.
async fn search_get(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<impl IntoResponse> {
    let tenant = tenant_of(&state, &tenant)?;
    let p = params(raw)?;
    let expr = parse_query(p.query.as_deref())?;
    let mailboxes = resolve_mailboxes(&state, TenantId(tenant.id), &split_mailboxes(&p.mailboxes))?;
    let top = number(&p.top, "top")?.unwrap_or(DEFAULT_TOP).min(MAX_TOP);
    let skip = number(&p.skip, "skip")?.unwrap_or(0);
    let results = run(&state, tenant.id, expr, mailboxes, skip, top).await?;
    Ok(Json(results_json(results, skip, top)))
}

/// The newest match (by received), 404 when nothing matches.
async fn latest(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Hit>> {
    let tenant = tenant_of(&state, &tenant)?;
    let p = params(raw)?;
    let expr = parse_query(p.query.as_deref())?;
    let mailboxes = resolve_mailboxes(&state, TenantId(tenant.id), &split_mailboxes(&p.mailboxes))?;
    let results = run(&state, tenant.id, expr, mailboxes, 0, 1).await?;
    match results.hits.into_iter().next() {
        Some(hit) => Ok(Json(hit)),
        None => Err(ApiError::NotFound(format!(
            "No item matches the query '{}' in tenant '{}'.",
            p.query.unwrap_or_default(),
            tenant.id
        ))),
    }
}

/// Long-polls until at least `count` hits match (default 1) or `timeout` ms pass (default
/// 10000): answers the search result with `timedOut`. Woken by indexing, no polling.
async fn wait(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<impl IntoResponse> {
    let tenant = tenant_of(&state, &tenant)?;
    let p = params(raw)?;
    let expr = parse_query(p.query.as_deref())?;
    let mailboxes = resolve_mailboxes(&state, TenantId(tenant.id), &split_mailboxes(&p.mailboxes))?;
    let count: usize = number(&p.count, "count")?.unwrap_or(1);
    let timeout_ms: u64 = number(&p.timeout, "timeout")?
        .unwrap_or(DEFAULT_WAIT_MS)
        .min(MAX_WAIT_MS);
    let top = number(&p.top, "top")?.unwrap_or(DEFAULT_TOP).min(MAX_TOP);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    // Subscribe before the first search, so nothing indexed in between is missed.
    let mut changes = state.search.subscribe();
    loop {
        changes.borrow_and_update();
        let results = run(&state, tenant.id, expr.clone(), mailboxes.clone(), 0, top).await?;
        if results.total >= count {
            let mut body = results_json(results, 0, top);
            body["timedOut"] = json!(false);
            return Ok(Json(body));
        }
        let woken = tokio::time::timeout_at(deadline, changes.changed()).await;
        if !matches!(woken, Ok(Ok(()))) {
            // Timed out (or the index went away): one last look.
            let results = run(&state, tenant.id, expr, mailboxes, 0, top).await?;
            let timed_out = results.total < count;
            let mut body = results_json(results, 0, top);
            body["timedOut"] = json!(timed_out);
            return Ok(Json(body));
        }
    }
}

/// Deletes the items with a copy matching the query, except items with a copy in the mailbox
/// of a user on litigation hold (unless `force=true`): 409 when nothing could be deleted
/// because of holds, else 200 with what was deleted and what was kept. Without `mailboxes`,
/// the whole item goes (every copy); with `mailboxes`, only the copies in those mailboxes (as a
/// purge of a search limited to them), and an item keeps its copies elsewhere.
async fn delete_matches(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<impl IntoResponse> {
    let tenant = tenant_of(&state, &tenant)?;
    let p = params(raw)?;
    let query = p.query.clone().unwrap_or_default();
    if query.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "A query is required to delete by search (query=...); use POST /api/reset to remove everything.".into(),
        ));
    }
    let expr = parse_query(Some(&query))?;
    let mailboxes = resolve_mailboxes(&state, TenantId(tenant.id), &split_mailboxes(&p.mailboxes))?;
    let force = match p.force.as_deref().map(str::trim) {
        None | Some("") | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "Invalid force '{other}': expected true or false."
            )))
        }
    };
    let worker = state.clone();
    let tenant_id = tenant.id;
    let outcome = crate::task::spawn_blocking(move || -> ApiResult<_> {
        // Like every other removal: a hold answered before this delete reads the holds is
        // honoured (without the lock, a hold set meanwhile was not).
        let _guard = write_lock_blocking();
        let ids = worker
            .search
            .matching_items(tenant_id, &expr, &mailboxes)
            .map_err(index_error)?;
        let on_change = crate::search::on_items_changed(&worker);
        // A search limited to mailboxes purges its matches from those mailboxes only.
        let within: Option<std::collections::HashSet<String>> =
            (!mailboxes.is_empty()).then(|| mailboxes.iter().cloned().collect());
        let outcome = worker.store.delete_items(
            TenantId(tenant_id),
            &ids,
            force,
            within.as_ref(),
            Some(&on_change),
        )?;
        Ok((ids.len(), outcome))
    })
    .await
    .map_err(index_error)??;
    let (matched, outcome) = outcome;
    state.store.durable().await?;
    let held: Vec<serde_json::Value> = outcome
        .held
        .iter()
        .map(|(id, mailbox)| json!({ "itemId": id, "mailbox": mailbox }))
        .collect();
    if outcome.copies_removed == 0 && !held.is_empty() {
        return Err(ApiError::Conflict(format!(
            "None of the {} matching items was deleted: each has a copy in a mailbox on litigation hold (first: {} in {}). Release the hold, or pass force=true.",
            held.len(),
            outcome.held[0].0,
            outcome.held[0].1
        )));
    }
    Ok(Json(json!({
        "matched": matched,
        "deleted": outcome.deleted.len(),
        "deletedItemIds": outcome.deleted,
        "copiesDeleted": outcome.copies_removed,
        "changedItemIds": outcome.changed,
        "keptUnderHold": held,
    })))
}
