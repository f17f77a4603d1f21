//! Data connectors (`/api/compliance/connectors`): create, list, status, update (rename,
//! mapping, schedule, scope, pause/resume), import history, delete. Records and history live in
//! `store::connectors`; a partner connector's imports are recorded by `ingest::create_item`.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::error::{parse_guid, Admin, ApiError, ApiResult, Body};
use super::registry::Routes;
use super::{durable, write_lock};
use crate::app::AppState;
use crate::connectors::import::{self, ImportError, Trigger};
use crate::connectors::staging::{self, StagingError};
use crate::domain::TenantId;
use crate::store::connectors::{
    native_source, ConnectorRecord, ConnectorTotals, ImportRecord, MappingRecord, StagedPayload,
    StagedRecord, DEFAULT_INTERVAL_MINUTES, NATIVE_SOURCES, PARTNER,
};

const BASE: &str = "/api/compliance/connectors";
/// Longest connector name accepted.
const MAX_NAME: usize = 128;
/// Longest interval accepted: 30 days.
const MAX_INTERVAL_MINUTES: u32 = 30 * 24 * 60;
/// Largest staging delivery: room for items over the 10 MB limit, which fail at import.
const MAX_STAGING_BYTES: usize = 64 * 1024 * 1024;

pub fn routes() -> Routes {
    let one = format!("{BASE}/{{id}}");
    Routes::new()
        .get(BASE, list)
        .post(BASE, create)
        .get(&one, get_one)
        .put(&one, update)
        .delete(&one, remove)
        .get(&format!("{one}/status"), status)
        .get(&format!("{one}/history"), history)
        .get(&format!("{one}/log"), log)
        .post(&format!("{one}/run"), run)
        .get(&format!("{one}/staging"), pending)
        .post(&format!("{one}/staging"), stage)
}

// ----- wire shapes -----

#[derive(Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MappingBody {
    automatic: Option<bool>,
    explicit: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ScheduleBody {
    interval_minutes: Option<u32>,
    /// When the next import runs (native connectors); by default one interval after the last
    /// run (or the creation).
    next_run_date_time: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeBody {
    /// `"all"`: every user.
    Named(String),
    /// A list of users (UPNs or any of their addresses).
    Users(Vec<String>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewConnector {
    tenant: Option<String>,
    name: Option<String>,
    kind: Option<String>,
    app_id: Option<String>,
    mapping: Option<MappingBody>,
    schedule: Option<ScheduleBody>,
    scope: Option<ScopeBody>,
    paused: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConnectorPatch {
    name: Option<String>,
    mapping: Option<MappingBody>,
    schedule: Option<ScheduleBody>,
    scope: Option<ScopeBody>,
    paused: Option<bool>,
    // Named only to refuse them clearly.
    tenant: Option<Value>,
    kind: Option<Value>,
    app_id: Option<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusView {
    state: &'static str,
    last_import_date_time: Option<DateTime<Utc>>,
    imports: u64,
    items_imported: u64,
    items_partially_imported: u64,
    items_skipped: u64,
    errors: u64,
    last_error: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImportView {
    id: Uuid,
    import_completion_date_time: DateTime<Utc>,
    correlation_id: Option<Uuid>,
    items_available_from_source: u64,
    items_available_for_import: u64,
    imported_successfully: u64,
    partially_imported: u64,
    skipped: u64,
    failed: u64,
    failed_items: Vec<crate::store::connectors::FailedItemRecord>,
}

impl From<ImportRecord> for ImportView {
    fn from(r: ImportRecord) -> Self {
        ImportView {
            id: r.id,
            import_completion_date_time: r.completed,
            correlation_id: r.correlation_id,
            items_available_from_source: r.items_from_source,
            items_available_for_import: r.items_for_import(),
            imported_successfully: r.imported,
            partially_imported: r.partially_imported,
            skipped: r.skipped,
            failed: r.failed,
            failed_items: r.failures,
        }
    }
}

/// The state of a connector now. A partner connector whose app has no service principal in the
/// tenant any more (consent revoked, or the app deleted) is `ConsentRevoked`, whatever else.
fn state_of(state: &AppState, c: &ConnectorRecord) -> ApiResult<&'static str> {
    if let Some(app_id) = c.app_id {
        if state
            .store
            .service_principal(TenantId(c.tenant), app_id)?
            .is_none()
        {
            return Ok("ConsentRevoked");
        }
    }
    Ok(if c.paused {
        "Paused"
    } else if c.totals.last_import_failed {
        "Error"
    } else {
        "Active"
    })
}

fn status_view(state: &AppState, c: &ConnectorRecord) -> ApiResult<StatusView> {
    let t: &ConnectorTotals = &c.totals;
    Ok(StatusView {
        state: state_of(state, c)?,
        last_import_date_time: t.last_import,
        imports: t.imports,
        items_imported: t.imported,
        items_partially_imported: t.partially_imported,
        items_skipped: t.skipped,
        errors: t.failed,
        last_error: t.last_error.clone(),
    })
}

fn view(state: &AppState, c: &ConnectorRecord) -> ApiResult<Value> {
    Ok(json!({
        "id": c.id,
        "tenant": c.tenant,
        "name": c.name,
        "kind": c.kind,
        "appId": c.app_id,
        "mapping": c.mapping,
        "schedule": {
            "intervalMinutes": c.interval_minutes,
            "nextRunDateTime": c.next_run,
            "lastRunDateTime": c.last_run,
        },
        "pendingItems": if c.is_native() { json!(state.store.pending(c.id)?) } else { Value::Null },
        "scope": match &c.scope { None => json!("all"), Some(users) => json!(users) },
        "paused": c.paused,
        "createdDateTime": c.created,
        "lastModifiedDateTime": c.modified,
        "status": status_view(state, c)?,
    }))
}

// ----- validation -----

fn check_name(name: &str) -> ApiResult<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ApiError::BadRequest(
            "Property 'name' must not be empty.".into(),
        ));
    }
    if name.chars().count() > MAX_NAME {
        return Err(ApiError::BadRequest(format!(
            "Property 'name' is longer than {MAX_NAME} characters."
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "Property 'name' must not contain control characters.".into(),
        ));
    }
    Ok(name.to_string())
}

/// The user principal name of `address` in `tenant`, or a 400 naming `what`.
fn user_upn(state: &AppState, tenant: TenantId, address: &str, what: &str) -> ApiResult<String> {
    state
        .store
        .user_by_address(tenant, address)?
        .map(|u| u.user_principal_name.clone())
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Invalid value in '{what}': '{address}' is not a user of the tenant."
            ))
        })
}

fn check_mapping(
    state: &AppState,
    tenant: TenantId,
    body: MappingBody,
    mut mapping: MappingRecord,
) -> ApiResult<MappingRecord> {
    if let Some(automatic) = body.automatic {
        mapping.automatic = automatic;
    }
    if let Some(explicit) = body.explicit {
        let mut checked = BTreeMap::new();
        for (external, user) in explicit {
            if external.trim().is_empty() {
                return Err(ApiError::BadRequest(
                    "Invalid value in 'mapping.explicit': an external id is empty.".into(),
                ));
            }
            let upn = user_upn(state, tenant, &user, "mapping.explicit")?;
            checked.insert(external.trim().to_string(), upn);
        }
        mapping.explicit = checked;
    }
    Ok(mapping)
}

fn check_interval(body: ScheduleBody, current: u32) -> ApiResult<u32> {
    match body.interval_minutes {
        None => Ok(current),
        Some(m) if (1..=MAX_INTERVAL_MINUTES).contains(&m) => Ok(m),
        Some(m) => Err(ApiError::BadRequest(format!(
            "Invalid value {m} for 'schedule.intervalMinutes': from 1 to {MAX_INTERVAL_MINUTES} \
             (30 days); the default is {DEFAULT_INTERVAL_MINUTES} (24 hours)."
        ))),
    }
}

fn check_scope(
    state: &AppState,
    tenant: TenantId,
    body: ScopeBody,
) -> ApiResult<Option<Vec<String>>> {
    match body {
        ScopeBody::Named(s) if s.eq_ignore_ascii_case("all") => Ok(None),
        ScopeBody::Named(s) => Err(ApiError::BadRequest(format!(
            "Invalid value '{s}' for 'scope': \"all\" or a list of users."
        ))),
        ScopeBody::Users(users) if users.is_empty() => Err(ApiError::BadRequest(
            "Invalid value for 'scope': the list of users is empty (use \"all\" for every user)."
                .into(),
        )),
        ScopeBody::Users(users) => {
            let mut upns = Vec::new();
            for user in users {
                let upn = user_upn(state, tenant, &user, "scope")?;
                if !upns.contains(&upn) {
                    upns.push(upn);
                }
            }
            Ok(Some(upns))
        }
    }
}

fn connector_of(state: &AppState, id: &str) -> ApiResult<ConnectorRecord> {
    let key = parse_guid(id, "connector id")?;
    state
        .store
        .connector(key)?
        .ok_or_else(|| ApiError::NotFound(format!("No data connector with id '{id}'.")))
}

// ----- handlers -----

/// Query parameters into `T`, a bad one answered as a Graph-shaped 400.
fn query<T: serde::de::DeserializeOwned>(raw: Option<String>) -> ApiResult<T> {
    serde_urlencoded::from_str(&raw.unwrap_or_default())
        .map_err(|e| ApiError::BadRequest(format!("Invalid query string: {e}.")))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    tenant: Option<String>,
}

async fn list(
    _: Admin,
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> ApiResult<impl IntoResponse> {
    let query: ListQuery = query(raw)?;
    let tenant = match query.tenant.as_deref() {
        Some(name) => Some(super::tenant_of(&state, name)?.id),
        None => None,
    };
    let mut views = Vec::new();
    for c in state.store.connectors()? {
        if tenant.is_none_or(|t| t == c.tenant) {
            views.push(view(&state, &c)?);
        }
    }
    Ok(Json(json!({ "value": views })))
}

async fn create(
    _: Admin,
    State(state): State<AppState>,
    Body(body): Body<NewConnector>,
) -> ApiResult<impl IntoResponse> {
    let name = check_name(
        body.name
            .as_deref()
            .ok_or_else(|| ApiError::BadRequest("Property 'name' is required.".into()))?,
    )?;
    let kind = body
        .kind
        .as_deref()
        .ok_or_else(|| ApiError::BadRequest("Property 'kind' is required.".into()))?;
    let tenant_name = body
        .tenant
        .as_deref()
        .ok_or_else(|| ApiError::BadRequest("Property 'tenant' is required.".into()))?;
    let tenant = state
        .store
        .resolve_tenant(tenant_name.trim())?
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Invalid value for 'tenant': tenant '{tenant_name}' does not exist."
            ))
        })?;
    let tid = TenantId(tenant.id);
    let (kind, app_id) = if kind.trim().eq_ignore_ascii_case(PARTNER) {
        let raw = body.app_id.as_deref().ok_or_else(|| {
            ApiError::BadRequest("Property 'appId' is required for a partner connector.".into())
        })?;
        let app_id = parse_guid(raw, "appId")?;
        if state.store.app(app_id)?.is_none() {
            return Err(ApiError::BadRequest(format!(
                "Invalid value for 'appId': no app '{app_id}' is registered."
            )));
        }
        (PARTNER.to_string(), Some(app_id))
    } else if let Some(source) = native_source(kind) {
        if body.app_id.is_some() {
            return Err(ApiError::BadRequest(format!(
                "Property 'appId' is only for partner connectors; '{source}' is a native source."
            )));
        }
        (source.to_string(), None)
    } else {
        return Err(ApiError::BadRequest(format!(
            "Invalid value '{kind}' for 'kind': 'partner' (with appId) or a native source: {}.",
            NATIVE_SOURCES.join(", ")
        )));
    };
    let mapping = check_mapping(
        &state,
        tid,
        body.mapping.unwrap_or_default(),
        MappingRecord::default(),
    )?;
    let schedule = body.schedule.unwrap_or_default();
    let next_run_given = schedule.next_run_date_time;
    let interval = check_interval(schedule, DEFAULT_INTERVAL_MINUTES)?;
    let scope = match body.scope {
        Some(scope) => check_scope(&state, tid, scope)?,
        None => None,
    };
    let now = Utc::now();
    let connector = ConnectorRecord {
        id: Uuid::new_v4(),
        tenant: tenant.id,
        name,
        kind,
        app_id,
        mapping,
        interval_minutes: interval,
        scope,
        paused: body.paused.unwrap_or(false),
        created: now,
        modified: now,
        totals: ConnectorTotals::default(),
        next_run: app_id.is_none().then(|| {
            next_run_given.unwrap_or(now + chrono::Duration::minutes(i64::from(interval)))
        }),
        last_run: None,
    };
    {
        let _guard = write_lock().await;
        state.store.put_connector(&connector)?;
    }
    durable(&state).await?;
    let location = format!("{BASE}/{}", connector.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(view(&state, &connector)?),
    ))
}

async fn get_one(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let c = connector_of(&state, &id)?;
    Ok(Json(view(&state, &c)?))
}

async fn status(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let c = connector_of(&state, &id)?;
    let mut value =
        serde_json::to_value(status_view(&state, &c)?).map_err(crate::store::StoreError::from)?;
    if let Some(object) = value.as_object_mut() {
        object.insert("id".into(), json!(c.id));
        object.insert("name".into(), json!(c.name));
    }
    Ok(Json(value))
}

async fn update(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(patch): Body<ConnectorPatch>,
) -> ApiResult<impl IntoResponse> {
    for (field, given) in [
        ("tenant", patch.tenant.is_some()),
        ("kind", patch.kind.is_some()),
        ("appId", patch.app_id.is_some()),
    ] {
        if given {
            return Err(ApiError::BadRequest(format!(
                "Property '{field}' of a connector cannot be changed: delete the connector and \
                 create another."
            )));
        }
    }
    let name = patch.name.as_deref().map(check_name).transpose()?;
    let connector = {
        let _guard = write_lock().await;
        let mut c = connector_of(&state, &id)?;
        let tid = TenantId(c.tenant);
        if let Some(name) = name {
            c.name = name;
        }
        if let Some(mapping) = patch.mapping {
            c.mapping = check_mapping(&state, tid, mapping, c.mapping.clone())?;
        }
        let schedule_changed = patch.schedule.is_some();
        if let Some(schedule) = patch.schedule {
            let next_run_given = schedule.next_run_date_time;
            let interval = check_interval(schedule, c.interval_minutes)?;
            if c.is_native() {
                let since = c.last_run.unwrap_or(c.created);
                c.next_run = Some(match next_run_given {
                    Some(at) => at,
                    None if interval != c.interval_minutes => {
                        since + chrono::Duration::minutes(i64::from(interval))
                    }
                    None => c.next_run.unwrap_or(since),
                });
            } else if next_run_given.is_some() {
                return Err(ApiError::BadRequest(
                    "Property 'schedule.nextRunDateTime' is only for native connectors: a \
                     partner connector's app pushes when it wants."
                        .into(),
                ));
            }
            c.interval_minutes = interval;
        }
        if let Some(scope) = patch.scope {
            c.scope = check_scope(&state, tid, scope)?;
        }
        if let Some(paused) = patch.paused {
            c.paused = paused;
        }
        c.modified = Utc::now();
        if schedule_changed {
            state.store.put_connector_schedule(&c)?;
        } else {
            state.store.put_connector(&c)?;
        }
        // What was written (an import may have moved the next run meanwhile).
        state.store.connector(c.id)?.unwrap_or(c)
    };
    durable(&state).await?;
    Ok(Json(view(&state, &connector)?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Page {
    top: Option<usize>,
    skip: Option<usize>,
}

async fn history(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<impl IntoResponse> {
    let page: Page = query(raw)?;
    let c = connector_of(&state, &id)?;
    let top = page.top.unwrap_or(100);
    if !(1..=1000).contains(&top) {
        return Err(ApiError::BadRequest(
            "Invalid value for 'top': from 1 to 1000.".into(),
        ));
    }
    let records: Vec<ImportView> = state
        .store
        .imports(c.id, page.skip.unwrap_or(0), top)?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(json!({
        "connectorId": c.id,
        "name": c.name,
        "value": records,
    })))
}

async fn remove(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    {
        let _guard = write_lock().await;
        let c = connector_of(&state, &id)?;
        state.store.delete_connector(c.id)?;
    }
    durable(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- native connectors: staging, run, log -----

impl From<ImportError> for ApiError {
    fn from(e: ImportError) -> Self {
        match e {
            ImportError::NotFound(_) => ApiError::NotFound(e.to_string()),
            ImportError::Partner(_) | ImportError::Paused(_) | ImportError::NoTenant(_) => {
                ApiError::Conflict(e.to_string())
            }
            ImportError::Store(e) => ApiError::Store(e),
        }
    }
}

fn native_of(state: &AppState, id: &str) -> ApiResult<ConnectorRecord> {
    let c = connector_of(state, id)?;
    if !c.is_native() {
        return Err(ApiError::Conflict(format!(
            "The connector '{}' is a partner connector: its app pushes items over EWS; only \
             native connectors have a staging area.",
            c.name
        )));
    }
    Ok(c)
}

/// `POST .../{id}/staging`: JSON (one item or an array) or one `.eml` (`message/rfc822`), all
/// checked before anything is staged; staged items are durable when this answers 202.
async fn stage(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<impl IntoResponse> {
    let c = native_of(&state, &id)?;
    let body = axum::body::to_bytes(body, MAX_STAGING_BYTES)
        .await
        .map_err(|e| {
            ApiError::BadRequest(format!(
                "Nothing was staged: the body could not be read whole (at most \
                 {MAX_STAGING_BYTES} bytes): {e}."
            ))
        })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let staged = Utc::now();
    let bad = |e: StagingError| ApiError::BadRequest(format!("Nothing was staged: {e}."));
    let records: Vec<StagedRecord> = match content_type.as_str() {
        "application/json" | "text/json" => {
            let value: Value = super::error::parse_json(&body)?;
            staging::check_json(value)
                .map_err(bad)?
                .into_iter()
                .map(|item| StagedRecord {
                    staged,
                    payload: StagedPayload::Json { item },
                })
                .collect()
        }
        "message/rfc822" | "application/eml" | "application/octet-stream" => {
            staging::check_eml(&body).map_err(bad)?;
            use base64::Engine;
            vec![StagedRecord {
                staged,
                payload: StagedPayload::Eml {
                    base64: base64::engine::general_purpose::STANDARD.encode(&body),
                },
            }]
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type '{other}' is not accepted: send application/json (an item or an \
                 array of items) or message/rfc822 (one .eml file)."
            )))
        }
    };
    if records.is_empty() {
        return Err(ApiError::BadRequest(
            "Nothing was staged: the array of items is empty.".into(),
        ));
    }
    let pending = state
        .store
        .stage(c.id, &records)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("No data connector with id '{id}'.")))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "stagedItems": records.len(), "pendingItems": pending })),
    ))
}

async fn pending(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let c = native_of(&state, &id)?;
    Ok(Json(json!({
        "pendingItems": state.store.pending(c.id)?,
        "nextRunDateTime": c.next_run,
    })))
}

/// `POST .../{id}/run`: imports what is staged now.
async fn run(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let c = connector_of(&state, &id)?;
    let import = import::run(&state, c.id, Trigger::Manual).await?;
    Ok(Json(json!({
        "import": import.map(ImportView::from),
        "pendingItems": state.store.pending(c.id)?,
    })))
}

/// `GET .../{id}/log`: the admin log of the last 7 days as a CSV download.
async fn log(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let c = connector_of(&state, &id)?;
    let now = Utc::now();
    let since = crate::connectors::log::first_day(now)
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(now);
    let imports = state.store.imports_since(c.id, since)?;
    let csv = crate::connectors::log::csv(&imports, now)
        .map_err(|e| ApiError::Internal(format!("Writing the CSV failed: {e}.")))?;
    let file: String = c
        .name
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || ch == '-' {
                ch
            } else {
                '_'
            }
        })
        .collect();
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"{file}-log-{}.csv\"",
                    now.format("%Y%m%d")
                ),
            ),
        ],
        csv,
    ))
}
