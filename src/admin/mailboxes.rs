//! Mailboxes and items: browse what the service stored (mailboxes, folders, items newest
//! first, every property of an item, its `.eml` export and attachment bytes), the ingestion
//! journal, item deletion under litigation holds, the retention sweep and the reset.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::error::{parse_guid, Admin, ApiError, ApiResult};
use super::registry::Routes;
use super::{durable, tenant_of, write_lock_blocking};
use crate::app::AppState;
use crate::domain::{Folder, TenantId};
use crate::store::mailbox::{CopyEntry, SweepOutcome};
use crate::store::model::{ItemRecord, TenantRecord, UserRecord};
use crate::store::StoreError;

/// Page size when `top` is not given, and the largest accepted.
const DEFAULT_TOP: usize = 50;
const MAX_TOP: usize = 1000;
/// How often the periodic retention sweep runs unless told otherwise.
pub const DEFAULT_RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// The routes of this module (merged into the admin router, behind the admin key).
pub fn routes() -> Routes {
    const T: &str = "/api/tenants/{tenant}";
    Routes::new()
        .get(&format!("{T}/mailboxes"), list_mailboxes)
        .get(&format!("{T}/mailboxes/{{upn}}"), get_mailbox)
        .get(&format!("{T}/mailboxes/{{upn}}/folders"), list_folders)
        .get(&format!("{T}/mailboxes/{{upn}}/items"), list_items)
        .get(&format!("{T}/items/{{id}}"), get_item)
        .delete(&format!("{T}/items/{{id}}"), delete_item)
        .get(&format!("{T}/items/{{id}}/mime"), get_mime)
        .get(
            &format!("{T}/items/{{id}}/attachments/{{n}}"),
            get_attachment,
        )
        .get(&format!("{T}/ingestions"), list_ingestions)
        .post(&format!("{T}/retention/sweep"), sweep_now)
        .get(&format!("{T}/retention/sweeps"), list_sweeps)
        .post("/api/reset", reset)
}

// ----- query strings -----

/// Query parameters, parsed by hand so that a bad value is a Graph-shaped 400.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<String>) -> ApiResult<Query> {
        let raw = raw.unwrap_or_default();
        serde_urlencoded::from_str::<Vec<(String, String)>>(&raw)
            .map(Query)
            .map_err(|e| ApiError::BadRequest(format!("Invalid query string: {e}.")))
    }

    /// The value of `name` (or `$name`, as Graph spells paging), case-insensitively.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| {
                k.eq_ignore_ascii_case(name)
                    || k.strip_prefix('$')
                        .is_some_and(|k| k.eq_ignore_ascii_case(name))
            })
            .map(|(_, v)| v.as_str())
    }

    fn number(&self, name: &str, default: usize, max: usize) -> ApiResult<usize> {
        match self.get(name) {
            None => Ok(default),
            Some(value) => match value.trim().parse::<usize>() {
                Ok(n) if n <= max => Ok(n),
                _ => Err(ApiError::BadRequest(format!(
                    "Invalid value '{value}' for query option '{name}': expected an integer \
                     from 0 to {max}."
                ))),
            },
        }
    }

    fn flag(&self, name: &str) -> ApiResult<bool> {
        match self.get(name).map(str::trim) {
            None => Ok(false),
            Some(v) if v.is_empty() || v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(false),
            Some(v) => Err(ApiError::BadRequest(format!(
                "Invalid value '{v}' for query option '{name}': expected true or false."
            ))),
        }
    }
}

// ----- mailboxes and folders -----

/// A mailbox as the API shows it: the user (when there is one) and its folders.
struct MailboxInfo {
    key: String,
    user: Option<UserRecord>,
    third_party: bool,
}

/// Finds a mailbox by UPN or any address of its user, or by the name its copies are filed
/// under (a deleted user, a third-party data mailbox that is not a user).
fn mailbox_of(state: &AppState, tenant: &TenantRecord, name: &str) -> ApiResult<MailboxInfo> {
    let id = TenantId(tenant.id);
    let name = name.trim();
    let user = match state.store.user(id, name)? {
        Some(user) => Some(user),
        None => state
            .store
            .user_by_address(id, name)?
            .map(Arc::unwrap_or_clone),
    };
    let key = user
        .as_ref()
        .map(|u| u.user_principal_name.to_lowercase())
        .unwrap_or_else(|| name.to_lowercase());
    let third_party = is_third_party(tenant, &key, user.as_ref());
    if user.is_none() && !third_party && state.store.folder_counts(id, &key)?.is_empty() {
        return Err(ApiError::NotFound(format!(
            "Mailbox '{name}' not found in tenant '{}': no user has that address and no item \
             was stored for it.",
            tenant.id
        )));
    }
    Ok(MailboxInfo {
        key,
        user,
        third_party,
    })
}

fn is_third_party(tenant: &TenantRecord, key: &str, user: Option<&UserRecord>) -> bool {
    tenant.third_party_mailbox.as_deref().is_some_and(|m| {
        m.eq_ignore_ascii_case(key)
            || user.is_some_and(|u| u.addresses().contains(&m.to_lowercase()))
    })
}

/// The folders of a mailbox with their item counts: `Inbox` and `Recoverable Items/Purges`
/// always, and every other folder that holds items.
fn folder_views(
    state: &AppState,
    tenant: TenantId,
    mailbox: &str,
    counts: &BTreeMap<String, usize>,
) -> ApiResult<Vec<Value>> {
    let mut paths: BTreeMap<String, usize> = BTreeMap::new();
    for standard in [Folder::Inbox.path(), Folder::Purges.path()] {
        paths.insert(standard.to_lowercase(), 0);
    }
    for (folder, count) in counts {
        paths.insert(folder.clone(), *count);
    }
    let mut out = Vec::new();
    for (lower, count) in paths {
        let path = display_path(state, tenant, mailbox, &lower)?;
        out.push(json!({ "path": path, "itemCount": count }));
    }
    Ok(out)
}

/// A folder path as it was stored (the index keys it in lower case).
fn display_path(
    state: &AppState,
    tenant: TenantId,
    mailbox: &str,
    lower: &str,
) -> ApiResult<String> {
    match Folder::from_path(lower) {
        Some(Folder::Inbox) => return Ok(Folder::Inbox.path()),
        Some(Folder::Purges) => return Ok(Folder::Purges.path()),
        _ => {}
    }
    // Another folder (Inbox/<Source>): its spelling from one of its items.
    if let Some(id) = state
        .store
        .folder_items(tenant, mailbox, lower, 0, 1)?
        .first()
    {
        if let Some(item) = state.store.item(*id)? {
            if let Some(copy) = item
                .copies
                .iter()
                .find(|c| c.folder.eq_ignore_ascii_case(lower))
            {
                return Ok(copy.folder.clone());
            }
        }
    }
    Ok(lower.to_string())
}

fn mailbox_view(
    state: &AppState,
    tenant: TenantId,
    mailbox: &MailboxInfo,
    counts: &BTreeMap<String, usize>,
) -> ApiResult<Value> {
    let user = mailbox.user.as_ref();
    Ok(json!({
        "upn": user.map(|u| u.user_principal_name.clone()).unwrap_or_else(|| mailbox.key.clone()),
        "displayName": user.map(|u| u.display_name.clone()),
        "mail": user.map(|u| u.mail.clone()),
        "active": user.is_some_and(|u| u.mailbox_enabled),
        "litigationHold": user.is_some_and(|u| u.litigation_hold),
        "isUser": user.is_some(),
        "thirdPartyDataMailbox": mailbox.third_party,
        "itemCount": counts.values().sum::<usize>(),
        "folders": folder_views(state, tenant, &mailbox.key, counts)?,
    }))
}

async fn list_mailboxes(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let tenant = tenant_of(&state, &tenant)?;
    let id = TenantId(tenant.id);
    let mut counts = state.store.mailbox_counts(id)?;
    let mut mailboxes = Vec::new();
    let mut seen = BTreeSet::new();
    for user in state.store.users(id)? {
        let key = user.user_principal_name.to_lowercase();
        let has_items = counts.contains_key(&key);
        let third_party = is_third_party(&tenant, &key, Some(&user));
        if !user.mailbox_enabled && !has_items && !third_party {
            continue;
        }
        seen.insert(key.clone());
        mailboxes.push(MailboxInfo {
            key,
            user: Some(user),
            third_party,
        });
    }
    if let Some(mailbox) = &tenant.third_party_mailbox {
        let key = mailbox.to_lowercase();
        if !seen.contains(&key) && !mailboxes.iter().any(|m| m.third_party) {
            seen.insert(key.clone());
            mailboxes.push(MailboxInfo {
                key,
                user: None,
                third_party: true,
            });
        }
    }
    for key in counts.keys() {
        if !seen.contains(key) {
            mailboxes.push(MailboxInfo {
                key: key.clone(),
                user: None,
                third_party: false,
            });
        }
    }
    mailboxes.sort_by(|a, b| a.key.cmp(&b.key));
    let mut value = Vec::with_capacity(mailboxes.len());
    for mailbox in &mailboxes {
        let folder_counts = counts.remove(&mailbox.key).unwrap_or_default();
        value.push(mailbox_view(&state, id, mailbox, &folder_counts)?);
    }
    Ok(Json(json!({ "value": value })))
}

async fn get_mailbox(
    _: Admin,
    State(state): State<AppState>,
    Path((tenant, upn)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let tenant = tenant_of(&state, &tenant)?;
    let id = TenantId(tenant.id);
    let mailbox = mailbox_of(&state, &tenant, &upn)?;
    let counts = state.store.folder_counts(id, &mailbox.key)?;
    Ok(Json(mailbox_view(&state, id, &mailbox, &counts)?))
}

async fn list_folders(
    _: Admin,
    State(state): State<AppState>,
    Path((tenant, upn)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let tenant = tenant_of(&state, &tenant)?;
    let id = TenantId(tenant.id);
    let mailbox = mailbox_of(&state, &tenant, &upn)?;
    let counts = state.store.folder_counts(id, &mailbox.key)?;
    Ok(Json(json!({
        "mailbox": mailbox.user.as_ref().map(|u| u.user_principal_name.clone()).unwrap_or(mailbox.key.clone()),
        "value": folder_views(&state, id, &mailbox.key, &counts)?,
    })))
}

fn participant(address: &crate::store::model::AddressRecord) -> Value {
    json!({ "name": address.name, "address": address.address })
}

fn summary(item: &ItemRecord, entry: &CopyEntry, folder: &str) -> Value {
    json!({
        "itemId": item.id,
        "mailbox": entry.mailbox,
        "folder": folder,
        "subject": item.subject,
        "itemClass": item.item_class,
        "searchedItemClass": item.searched_item_class,
        "sent": item.sent,
        "received": item.received,
        "from": participant(&item.from),
        "hasAttachments": !item.attachments.is_empty(),
        "size": item.size,
    })
}

async fn list_items(
    _: Admin,
    State(state): State<AppState>,
    Path((tenant_name, upn)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<impl IntoResponse> {
    let query = Query::parse(raw)?;
    let tenant = tenant_of(&state, &tenant_name)?;
    let id = TenantId(tenant.id);
    let mailbox = mailbox_of(&state, &tenant, &upn)?;
    let folder = match query.get("folder").map(str::trim).filter(|f| !f.is_empty()) {
        None => None,
        Some(path) => Some(Folder::from_path(path).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Unknown folder '{path}': items are stored in '{}', 'Inbox' or 'Inbox/<Source>'.",
                Folder::PURGES_PATH
            ))
        })?),
    };
    let top = query.number("top", DEFAULT_TOP, MAX_TOP)?;
    let skip = query.number("skip", 0, usize::MAX)?;
    let folder_path = folder.as_ref().map(Folder::path);
    let (page, total) =
        state
            .store
            .mailbox_page(id, &mailbox.key, folder_path.as_deref(), skip, top)?;
    let ids: Vec<uuid::Uuid> = page.iter().map(|entry| entry.item).collect();
    let items: std::collections::HashMap<uuid::Uuid, _> = state
        .store
        .items(&ids)?
        .into_iter()
        .map(|item| (item.id, item))
        .collect();
    let mut value = Vec::with_capacity(page.len());
    for entry in &page {
        if let Some(item) = items.get(&entry.item) {
            let folder = item
                .copies
                .iter()
                .find(|c| {
                    c.mailbox.eq_ignore_ascii_case(&entry.mailbox)
                        && c.folder.eq_ignore_ascii_case(&entry.folder)
                })
                .map(|c| c.folder.clone())
                .unwrap_or_else(|| entry.folder.clone());
            value.push(summary(item, entry, &folder));
        }
    }
    let mut body = json!({
        "mailbox": mailbox.user.as_ref().map(|u| u.user_principal_name.clone()).unwrap_or(mailbox.key.clone()),
        "folder": folder_path,
        "totalCount": total,
        "top": top,
        "skip": skip,
        "value": value,
    });
    if skip.saturating_add(page.len()) < total && top > 0 {
        let mut next: Vec<(&str, String)> = Vec::new();
        if let Some(path) = &folder_path {
            next.push(("folder", path.clone()));
        }
        next.push(("top", top.to_string()));
        next.push(("skip", (skip + page.len()).to_string()));
        if let Ok(qs) = serde_urlencoded::to_string(&next) {
            body["@odata.nextLink"] = json!(format!(
                "/api/tenants/{tenant_name}/mailboxes/{upn}/items?{qs}"
            ));
        }
    }
    Ok(Json(body))
}

// ----- items -----

/// An item of the tenant, or 404 (an item of another tenant is not found either).
fn item_of(state: &AppState, tenant: &TenantRecord, id: &str) -> ApiResult<ItemRecord> {
    let id = parse_guid(id, "item id")?;
    match state.store.item(id)? {
        Some(item) if item.tenant == tenant.id => Ok(item),
        _ => Err(ApiError::NotFound(format!(
            "Item '{id}' not found in tenant '{}'.",
            tenant.id
        ))),
    }
}

async fn get_item(
    _: Admin,
    State(state): State<AppState>,
    Path((tenant_name, id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let tenant = tenant_of(&state, &tenant_name)?;
    let item = item_of(&state, &tenant, &id)?;
    let app = match item.app_id {
        Some(app_id) => state.store.app(app_id)?,
        None => None,
    };
    let base = format!("/api/tenants/{}/items/{}", tenant.id, item.id);
    let mut value = serde_json::to_value(&item).map_err(StoreError::from)?;
    let mut participants: Vec<Value> = Vec::new();
    let mut seen = BTreeSet::new();
    for address in std::iter::once(&item.from)
        .chain(item.sender.iter())
        .chain(&item.to)
        .chain(&item.cc)
        .chain(&item.bcc)
    {
        if seen.insert(address.address.to_lowercase()) {
            participants.push(participant(address));
        }
    }
    let attachments: Vec<Value> = item
        .attachments
        .iter()
        .enumerate()
        .map(|(n, a)| {
            json!({
                "index": n,
                "name": a.name,
                "contentType": a.content_type,
                "size": a.size,
                "contentId": a.content_id,
                "isInline": a.is_inline,
                "href": format!("{base}/attachments/{n}"),
            })
        })
        .collect();
    if let Some(object) = value.as_object_mut() {
        object.insert("participants".into(), Value::Array(participants));
        object.insert("attachments".into(), Value::Array(attachments));
        object.insert(
            "hasAttachments".into(),
            Value::Bool(!item.attachments.is_empty()),
        );
        object.insert(
            "app".into(),
            match (&item.app_id, &app) {
                (Some(app_id), Some(app)) => {
                    json!({ "appId": app_id, "displayName": app.display_name })
                }
                (Some(app_id), None) => json!({ "appId": app_id, "displayName": null }),
                (None, _) => Value::Null,
            },
        );
        object.insert(
            "connector".into(),
            json!(app.as_ref().map(|a| a.display_name.clone())),
        );
        object.insert(
            "ingestion".into(),
            json!(format!(
                "/api/tenants/{}/ingestions/{}",
                tenant.id, item.correlation_id
            )),
        );
        object.insert("mime".into(), json!(format!("{base}/mime")));
        object.insert("underHoldIn".into(), json!(state.store.hold_on(&item)?));
    }
    Ok(Json(value))
}

async fn delete_item(
    _: Admin,
    State(state): State<AppState>,
    Path((tenant_name, id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let tenant = tenant_of(&state, &tenant_name)?;
    let item = item_of(&state, &tenant, &id)?;
    let worker = state.clone();
    let outcome = crate::task::spawn_blocking(move || {
        let _guard = write_lock_blocking();
        let on_change = crate::search::on_items_changed(&worker);
        worker.store.delete_items(
            TenantId(tenant.id),
            &[item.id],
            false,
            None,
            Some(&on_change),
        )
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the delete failed: {e}")))??;
    if let Some((id, mailbox)) = outcome.held.first() {
        return Err(ApiError::Conflict(format!(
            "Item '{id}' cannot be deleted: it has a copy in mailbox '{mailbox}', which is on \
             litigation hold. Remove the hold first (PATCH /api/tenants/{}/users/{mailbox} \
             {{\"litigationHold\": false}}).",
            tenant.id
        )));
    }
    if outcome.deleted.is_empty() {
        return Err(ApiError::NotFound(format!(
            "Item '{id}' not found in tenant '{}'.",
            tenant.id
        )));
    }
    durable(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `attachment; filename="<ascii>"; filename*=UTF-8''<percent-encoded>`.
fn content_disposition(name: &str) -> HeaderValue {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

fn file_response(content_type: &str, name: &str, bytes: Vec<u8>) -> Response {
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type)
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream")),
    );
    headers.insert(header::CONTENT_DISPOSITION, content_disposition(name));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Runs `read` (attachment files, up to the item size limit each) on a blocking thread.
async fn read_files<T: Send + 'static>(
    read: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    crate::task::spawn_blocking(read).await.map_err(|e| {
        ApiError::Store(StoreError::Attachment(format!(
            "reading attachment files failed: {e}"
        )))
    })?
}

fn attachments_of(state: &AppState, item: &ItemRecord) -> ApiResult<Vec<Vec<u8>>> {
    (0..item.attachments.len())
        .map(|n| {
            state.store.attachment(item.id, n)?.ok_or_else(|| {
                crate::store::StoreError::Attachment(format!(
                    "attachment {n} of item {} is missing from the store",
                    item.id
                ))
                .into()
            })
        })
        .collect()
}

async fn get_mime(
    _: Admin,
    State(state): State<AppState>,
    Path((tenant_name, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let tenant = tenant_of(&state, &tenant_name)?;
    let item = item_of(&state, &tenant, &id)?;
    let attachments = {
        let (state, item) = (state.clone(), item.clone());
        read_files(move || attachments_of(&state, &item)).await?
    };
    let eml = crate::export::to_eml(&item, &attachments)
        .map_err(|e| ApiError::Internal(format!("the export failed: {e}")))?;
    Ok(file_response(
        "message/rfc822",
        &format!("{}.eml", item.id),
        eml,
    ))
}

async fn get_attachment(
    _: Admin,
    State(state): State<AppState>,
    Path((tenant_name, id, n)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let tenant = tenant_of(&state, &tenant_name)?;
    let item = item_of(&state, &tenant, &id)?;
    let not_found = || {
        ApiError::NotFound(format!(
            "Item '{}' has no attachment '{n}' (it has {}, numbered from 0).",
            item.id,
            item.attachments.len()
        ))
    };
    let index: usize = n.trim().parse().map_err(|_| not_found())?;
    let meta = item.attachments.get(index).ok_or_else(not_found)?;
    let store = state.store.clone();
    let item_id = item.id;
    let bytes = read_files(move || Ok(store.attachment(item_id, index)?))
        .await?
        .ok_or_else(not_found)?;
    Ok(file_response(
        &crate::export::media_type(&meta.content_type),
        &meta.name,
        bytes,
    ))
}

// ----- the ingestion journal -----

async fn list_ingestions(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<impl IntoResponse> {
    let query = Query::parse(raw)?;
    let tenant = tenant_of(&state, &tenant)?;
    let top = query.number("top", DEFAULT_TOP, MAX_TOP)?;
    let skip = query.number("skip", 0, usize::MAX)?;
    let records = state
        .store
        .ingestions_newest_first(TenantId(tenant.id), skip, top)?;
    Ok(Json(json!({ "top": top, "skip": skip, "value": records })))
}

// ----- retention -----

fn sweep_view(outcome: &SweepOutcome) -> Value {
    serde_json::to_value(&outcome.record).unwrap_or(Value::Null)
}

/// Runs one sweep of `tenant` under the admin write lock and updates the search index.
fn run_sweep(
    state: &AppState,
    tenant: TenantId,
    cutoff: DateTime<Utc>,
    retention_days: Option<u32>,
    trigger: &str,
) -> ApiResult<SweepOutcome> {
    let _guard = write_lock_blocking();
    let on_change = crate::search::on_items_changed(state);
    Ok(state
        .store
        .sweep_retention(tenant, cutoff, retention_days, trigger, Some(&on_change))?)
}

/// `days` before `now`; the beginning of time when that is before it (a retention from a
/// fixture is not bounded by the API's check: this never panics).
fn cutoff_for(days: u32, now: DateTime<Utc>) -> DateTime<Utc> {
    now.checked_sub_signed(chrono::Duration::days(i64::from(days)))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// `POST retention/sweep[?olderThan=<RFC 3339>]`: sweeps now. Without `olderThan`, copies
/// received more than the tenant's `retentionDays` ago are due (`retentionDays: 0`: every copy
/// received before now); with it, copies received before that instant (for tests).
async fn sweep_now(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<impl IntoResponse> {
    let query = Query::parse(raw)?;
    let tenant = tenant_of(&state, &tenant)?;
    let (cutoff, days) = match query.get("olderThan") {
        Some(value) => {
            // An unencoded `+01:00` arrives as a space.
            let cutoff = DateTime::parse_from_rfc3339(&value.trim().replace(' ', "+"))
                .map_err(|_| {
                    ApiError::BadRequest(format!(
                        "Invalid value '{value}' for query option 'olderThan': expected an RFC \
                         3339 date and time (2024-03-01T00:00:00Z)."
                    ))
                })?
                .with_timezone(&Utc);
            (cutoff, None)
        }
        None => match tenant.retention_days {
            Some(days) => (cutoff_for(days, Utc::now()), Some(days)),
            None => {
                return Err(ApiError::BadRequest(format!(
                    "Tenant '{}' has no retention: set 'retentionDays' (PATCH \
                     /api/tenants/{}) or pass '?olderThan=<RFC 3339 date>'.",
                    tenant.id, tenant.id
                )))
            }
        },
    };
    let worker = state.clone();
    let id = TenantId(tenant.id);
    let outcome =
        crate::task::spawn_blocking(move || run_sweep(&worker, id, cutoff, days, "manual"))
            .await
            .map_err(|e| ApiError::Internal(format!("the sweep failed: {e}")))??;
    durable(&state).await?;
    Ok(Json(sweep_view(&outcome)))
}

async fn list_sweeps(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<impl IntoResponse> {
    let query = Query::parse(raw)?;
    let tenant = tenant_of(&state, &tenant)?;
    let top = query.number("top", DEFAULT_TOP, MAX_TOP)?;
    let sweeps = state.store.sweeps(TenantId(tenant.id), top)?;
    Ok(Json(json!({
        "retentionDays": tenant.retention_days,
        "value": sweeps,
    })))
}

/// One scheduled sweep of every tenant with a retention; returns the sweeps made.
pub fn sweep_all(state: &AppState) -> ApiResult<Vec<SweepOutcome>> {
    let now = Utc::now();
    let mut out = Vec::new();
    for tenant in state.store.tenants()? {
        if let Some(days) = tenant.retention_days {
            // One tenant's failure does not keep the others from their sweep.
            match run_sweep(
                state,
                TenantId(tenant.id),
                cutoff_for(days, now),
                Some(days),
                "scheduled",
            ) {
                Ok(sweep) => out.push(sweep),
                Err(e) => {
                    tracing::error!(tenant = %tenant.id, error = %e, "retention sweep failed")
                }
            }
        }
    }
    Ok(out)
}

/// Starts the periodic retention sweep: every `every` (first run at once), each tenant with
/// `retentionDays` loses the copies received more than that many days ago, except copies
/// under litigation hold. Must be called inside the tokio runtime.
pub fn spawn_retention(state: AppState, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every.max(Duration::from_secs(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let worker = state.clone();
            match crate::task::spawn_blocking(move || sweep_all(&worker)).await {
                Ok(Ok(sweeps)) => {
                    for sweep in &sweeps {
                        let r = &sweep.record;
                        if r.copies_removed > 0 || r.copies_kept_under_hold > 0 {
                            tracing::info!(
                                tenant = %r.tenant,
                                copies_removed = r.copies_removed,
                                items_removed = r.items_removed,
                                kept_under_hold = r.copies_kept_under_hold,
                                "retention sweep"
                            );
                        }
                    }
                    if let Err(e) = state.store.durable().await {
                        tracing::error!(error = %e, "retention sweep: flush failed");
                    }
                }
                Ok(Err(e)) => tracing::error!(error = %e, "retention sweep failed"),
                Err(e) => tracing::error!(error = %e, "retention sweep task failed"),
            }
        }
    })
}

// ----- reset -----

/// `POST /api/reset[?scope=all][&force=true]`: removes every item, copy, attachment and
/// ingestion record (tenants, users, apps and consents stay); `scope=all` also restores the
/// directory from the fixtures. Items with a copy under litigation hold stay unless `force`.
async fn reset(
    _: Admin,
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> ApiResult<impl IntoResponse> {
    let query = Query::parse(raw)?;
    let force = query.flag("force")?;
    let all = match query.get("scope").map(str::trim) {
        None | Some("") => false,
        Some(s) if s.eq_ignore_ascii_case("data") || s.eq_ignore_ascii_case("items") => false,
        Some(s) if s.eq_ignore_ascii_case("all") => true,
        Some(s) => {
            return Err(ApiError::BadRequest(format!(
                "Invalid value '{s}' for query option 'scope': expected 'data' (the default: \
                 items and ingestion records) or 'all' (also restores the fixtures)."
            )))
        }
    };
    // The fixtures are read and checked before anything is removed: a fixture file gone or
    // broken since the start refuses the reset instead of leaving an empty directory.
    let fixtures = if all {
        crate::app::read_fixtures(&state.config.fixtures).map_err(|e| {
            ApiError::Conflict(format!(
                "The fixtures cannot be restored, so nothing was reset: {e}"
            ))
        })?
    } else {
        Vec::new()
    };
    let worker = state.clone();
    let outcome = crate::task::spawn_blocking(move || -> ApiResult<_> {
        let _guard = write_lock_blocking();
        let on_change = crate::search::on_items_changed(&worker);
        // A request answered meanwhile is wholly reset or refused, never half removed.
        worker.store.with_ingestion_fenced(|| -> ApiResult<_> {
            let outcome = worker.store.reset(force, Some(&on_change))?;
            worker.store.reset_connectors(all)?;
            if all {
                worker.store.wipe_directory()?;
                crate::app::load_fixtures(&worker.store, &fixtures).map_err(|e| {
                    ApiError::Internal(format!("Restoring the fixtures failed: {e}"))
                })?;
            }
            Ok(outcome)
        })
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the reset failed: {e}")))??;
    durable(&state).await?;
    let kept: Vec<Value> = outcome
        .kept_under_hold
        .iter()
        .map(|(id, mailbox)| json!({ "itemId": id, "mailbox": mailbox }))
        .collect();
    Ok(Json(json!({
        "scope": if all { "all" } else { "data" },
        "force": force,
        "removed": outcome.removed,
        "keptUnderHold": kept.len(),
        "itemsKeptUnderHold": kept,
        "ingestionsRemoved": outcome.ingestions_removed,
        "fixturesRestored": all,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cutoff_before_the_beginning_of_time_is_the_beginning_of_time() {
        let now = Utc::now();
        assert_eq!(cutoff_for(u32::MAX, now), DateTime::<Utc>::MIN_UTC);
        assert_eq!(cutoff_for(1, now), now - chrono::Duration::days(1));
    }
}
