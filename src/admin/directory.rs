//! Tenants and users.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use uuid::Uuid;

use super::error::{Admin, ApiError, ApiResult, Body};
use super::{durable, tenant_of, write_lock, write_lock_blocking};
use crate::app::AppState;
use crate::domain::{TenantId, MAX_RETENTION_DAYS};
use crate::store::model::{TenantRecord, UserRecord};

// ----- validation -----

/// A DNS domain name: at least two labels of letters, digits and inner hyphens.
pub fn is_domain(value: &str) -> bool {
    let labels: Vec<&str> = value.split('.').collect();
    value.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `local@domain.tld`, without spaces, angle brackets, control or bidirectional formatting
/// characters.
pub fn is_address(value: &str) -> bool {
    match value.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && local.len() <= 64
                && !local.contains(['@', ' ', '<', '>', '"', ',', ';'])
                && !local
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || is_bidi_control(c))
                && is_domain(domain)
        }
        None => false,
    }
}

/// Characters that reorder text on screen (an address could show as another one).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A user principal name as Entra takes it: an address whose local part has only letters,
/// digits and `' . - _ ! # ^ ~`.
pub fn is_user_principal_name(value: &str) -> bool {
    is_address(value)
        && value.split_once('@').is_some_and(|(local, _)| {
            local
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"'.-_!#^~".contains(&b))
        })
}

/// The longest display name Entra takes.
const MAX_DISPLAY_NAME: usize = 256;

fn check_address(value: &str, property: &str) -> ApiResult<()> {
    if is_address(value) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "Invalid value specified for property '{property}': '{value}' is not an address."
        )))
    }
}

fn check_domains(domains: &[String]) -> ApiResult<Vec<String>> {
    if domains.is_empty() {
        return Err(ApiError::BadRequest(
            "A tenant needs at least one domain in 'domains'.".into(),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for domain in domains {
        let domain = domain.trim().to_lowercase();
        if !is_domain(&domain) {
            return Err(ApiError::BadRequest(format!(
                "Invalid value specified for property 'domains': '{domain}' is not a domain name."
            )));
        }
        if !out.contains(&domain) {
            out.push(domain);
        }
    }
    Ok(out)
}

fn check_retention(days: Option<u32>) -> ApiResult<Option<u32>> {
    match days {
        Some(days) if days > MAX_RETENTION_DAYS => Err(ApiError::BadRequest(format!(
            "Invalid value {days} for property 'retentionDays': at most {MAX_RETENTION_DAYS} \
             days (a hundred years)."
        ))),
        _ => Ok(days),
    }
}

/// A display name: not empty, at most [`MAX_DISPLAY_NAME`] characters (trimmed).
pub(super) fn display_name(value: &str, property: &str) -> ApiResult<String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        Err(ApiError::BadRequest(format!(
            "Property '{property}' must not be empty."
        )))
    } else if trimmed.chars().count() > MAX_DISPLAY_NAME {
        Err(ApiError::BadRequest(format!(
            "Invalid value specified for property '{property}': at most {MAX_DISPLAY_NAME} \
             characters."
        )))
    } else {
        Ok(trimmed.to_string())
    }
}

// ----- tenants -----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewTenant {
    id: Option<Uuid>,
    display_name: String,
    domains: Vec<String>,
    third_party_mailbox: Option<String>,
    retention_days: Option<u32>,
}

/// A PATCH: an absent property is not changed; `null` clears `thirdPartyMailbox` and
/// `retentionDays` (as Graph clears a property).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantPatch {
    display_name: Option<String>,
    domains: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    third_party_mailbox: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    retention_days: Option<Option<u32>>,
}

/// A property that is present: `Some(None)` when it is `null`.
fn present<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

pub async fn list_tenants(_: Admin, State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let mut tenants = state.store.tenants()?;
    tenants.sort_by(|a, b| a.display_name.cmp(&b.display_name).then(a.id.cmp(&b.id)));
    Ok(Json(serde_json::json!({ "value": tenants })))
}

pub async fn create_tenant(
    _: Admin,
    State(state): State<AppState>,
    Body(body): Body<NewTenant>,
) -> ApiResult<impl IntoResponse> {
    let record = TenantRecord {
        id: body.id.unwrap_or_else(Uuid::new_v4),
        display_name: display_name(&body.display_name, "displayName")?,
        domains: check_domains(&body.domains)?,
        third_party_mailbox: body.third_party_mailbox,
        retention_days: check_retention(body.retention_days)?,
    };
    if let Some(mailbox) = &record.third_party_mailbox {
        check_address(mailbox, "thirdPartyMailbox")?;
    }
    {
        let _guard = write_lock().await;
        if state.store.tenant(TenantId(record.id))?.is_some() {
            return Err(ApiError::Conflict(format!(
                "Another tenant with the same value for property id ({}) already exists.",
                record.id
            )));
        }
        state.store.put_tenant(&record)?;
    }
    durable(&state).await?;
    Ok((StatusCode::CREATED, Json(record)))
}

pub async fn get_tenant(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(tenant_of(&state, &tenant)?))
}

pub async fn patch_tenant(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    Body(patch): Body<TenantPatch>,
) -> ApiResult<impl IntoResponse> {
    let record = {
        let _guard = write_lock().await;
        let mut record = tenant_of(&state, &tenant)?;
        if let Some(name) = patch.display_name {
            record.display_name = display_name(&name, "displayName")?;
        }
        if let Some(domains) = patch.domains {
            let domains = check_domains(&domains)?;
            // A domain a user's principal name is in stays (as Graph refuses to remove a
            // domain objects still reference): those users would fail every check.
            for user in state.store.users(TenantId(record.id))? {
                let domain = user
                    .user_principal_name
                    .rsplit_once('@')
                    .map(|(_, d)| d.to_lowercase())
                    .unwrap_or_default();
                if !domains.contains(&domain) {
                    return Err(ApiError::Conflict(format!(
                        "The domain '{domain}' is in use by '{}' (userPrincipalName): change or \
                         delete the user before removing the domain.",
                        user.user_principal_name
                    )));
                }
            }
            record.domains = domains;
        }
        if let Some(mailbox) = patch.third_party_mailbox {
            if let Some(mailbox) = &mailbox {
                check_address(mailbox, "thirdPartyMailbox")?;
            }
            record.third_party_mailbox = mailbox;
        }
        if let Some(days) = patch.retention_days {
            record.retention_days = check_retention(days)?;
        }
        state.store.put_tenant(&record)?;
        record
    };
    durable(&state).await?;
    Ok(Json(record))
}

pub async fn delete_tenant(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let record = tenant_of(&state, &tenant)?;
    let worker = state.clone();
    crate::task::spawn_blocking(move || -> ApiResult<()> {
        let _guard = write_lock_blocking();
        let id = TenantId(record.id);
        // The apps registered in the tenant go with it (and every consent to them).
        for app in worker.store.apps(id)? {
            worker.store.delete_app(app.app_id)?;
        }
        let on_change = crate::search::on_items_changed(&worker);
        worker.store.delete_tenant(id, Some(&on_change))?;
        Ok(())
    })
    .await
    .map_err(|e| ApiError::Internal(format!("deleting the tenant failed: {e}")))??;
    durable(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- users -----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewUser {
    user_principal_name: String,
    display_name: Option<String>,
    mail: Option<String>,
    #[serde(default)]
    proxy_addresses: Vec<String>,
    mailbox_enabled: Option<bool>,
    #[serde(default)]
    litigation_hold: bool,
    #[serde(default)]
    external_ids: Vec<String>,
    // Accepted (and ignored) so that a Graph `POST /users` body works as is.
    #[serde(default, rename = "accountEnabled")]
    _account_enabled: Option<serde_json::Value>,
    #[serde(default, rename = "mailNickname")]
    _mail_nickname: Option<serde_json::Value>,
    #[serde(default, rename = "passwordProfile")]
    _password_profile: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserPatch {
    user_principal_name: Option<String>,
    display_name: Option<String>,
    mail: Option<String>,
    proxy_addresses: Option<Vec<String>>,
    mailbox_enabled: Option<bool>,
    litigation_hold: Option<bool>,
    external_ids: Option<Vec<String>>,
}

/// Checks a user as Entra would: UPN an address in one of the tenant's accepted domains, mail
/// and SMTP proxies addresses, external ids non-empty.
fn check_user(tenant: &TenantRecord, user: &UserRecord) -> ApiResult<()> {
    let upn = &user.user_principal_name;
    if !is_user_principal_name(upn) {
        return Err(ApiError::BadRequest(format!(
            "Invalid value specified for property 'userPrincipalName': '{}' is not an address \
             whose part before the @ has only letters, digits and ' . - _ ! # ^ ~.",
            upn.escape_debug()
        )));
    }
    display_name(&user.display_name, "displayName")?;
    let domain = upn.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
    if !tenant
        .domains
        .iter()
        .any(|d| d.eq_ignore_ascii_case(domain))
    {
        return Err(ApiError::BadRequest(format!(
            "The domain portion of the userPrincipalName property is invalid. You must use one \
             of the verified domain names in your organization ({}).",
            tenant.domains.join(", ")
        )));
    }
    check_address(&user.mail, "mail")?;
    for proxy in &user.proxy_addresses {
        match proxy.split_once(':') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("smtp") => {
                check_address(rest, "proxyAddresses")?
            }
            Some((_, rest)) if !rest.trim().is_empty() => {}
            _ => check_address(proxy, "proxyAddresses")?,
        }
    }
    if user.external_ids.iter().any(|id| id.trim().is_empty()) {
        return Err(ApiError::BadRequest(
            "Invalid value specified for property 'externalIds': empty identity.".into(),
        ));
    }
    Ok(())
}

fn address_conflict(e: crate::store::StoreError) -> ApiError {
    match e {
        crate::store::StoreError::Conflict(detail) => ApiError::Conflict(format!(
            "Another object with the same value for property proxyAddresses already exists: \
             {detail}."
        )),
        other => other.into(),
    }
}

/// 409 when a data connector of the tenant maps a source identity to `upn` or has it in its
/// scope: the user must not disappear from under it.
fn refuse_if_a_connector_names(state: &AppState, tenant: TenantId, upn: &str) -> ApiResult<()> {
    let same = |other: &String| other.eq_ignore_ascii_case(upn);
    let named = state.store.connectors()?.into_iter().find(|c| {
        c.tenant == tenant.0
            && (c.mapping.explicit.values().any(same)
                || c.scope.as_ref().is_some_and(|s| s.iter().any(same)))
    });
    match named {
        Some(c) => Err(ApiError::Conflict(format!(
            "The data connector '{}' ({}) maps or scopes '{upn}': change the connector first.",
            c.name, c.id
        ))),
        None => Ok(()),
    }
}

fn user_not_found(upn: &str) -> ApiError {
    ApiError::NotFound(format!(
        "Resource '{upn}' does not exist or one of its queried reference-property objects are \
         not present."
    ))
}

pub async fn list_users(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let tenant = tenant_of(&state, &tenant)?;
    let users = state.store.users(TenantId(tenant.id))?;
    Ok(Json(serde_json::json!({ "value": users })))
}

pub async fn create_user(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    Body(body): Body<NewUser>,
) -> ApiResult<impl IntoResponse> {
    let upn = body.user_principal_name.trim().to_string();
    let user = UserRecord {
        display_name: body
            .display_name
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| upn.clone()),
        mail: body
            .mail
            .map(|m| m.trim().to_string())
            .unwrap_or_else(|| upn.clone()),
        user_principal_name: upn,
        proxy_addresses: body.proxy_addresses,
        mailbox_enabled: body.mailbox_enabled.unwrap_or(true),
        litigation_hold: body.litigation_hold,
        external_ids: body
            .external_ids
            .into_iter()
            .map(|id| id.trim().to_string())
            .collect(),
    };
    {
        let _guard = write_lock().await;
        let tenant = tenant_of(&state, &tenant)?;
        check_user(&tenant, &user)?;
        let id = TenantId(tenant.id);
        if state.store.user(id, &user.user_principal_name)?.is_some() {
            return Err(ApiError::Conflict(format!(
                "Another object with the same value for property userPrincipalName already \
                 exists: {}.",
                user.user_principal_name
            )));
        }
        state.store.put_user(id, &user).map_err(address_conflict)?;
    }
    durable(&state).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

pub async fn get_user(
    _: Admin,
    State(state): State<AppState>,
    Path((tenant, upn)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let tenant = tenant_of(&state, &tenant)?;
    match state.store.user(TenantId(tenant.id), &upn)? {
        Some(user) => Ok(Json(user)),
        None => Err(user_not_found(&upn)),
    }
}

pub async fn patch_user(
    _: Admin,
    State(state): State<AppState>,
    Path((tenant, upn)): Path<(String, String)>,
    Body(patch): Body<UserPatch>,
) -> ApiResult<impl IntoResponse> {
    let user = {
        let _guard = write_lock().await;
        let tenant = tenant_of(&state, &tenant)?;
        let id = TenantId(tenant.id);
        let old = state
            .store
            .user(id, &upn)?
            .ok_or_else(|| user_not_found(&upn))?;
        let mut user = old.clone();
        if let Some(new_upn) = patch.user_principal_name {
            user.user_principal_name = new_upn.trim().to_string();
        }
        if let Some(name) = patch.display_name {
            user.display_name = display_name(&name, "displayName")?;
        }
        if let Some(mail) = patch.mail {
            user.mail = mail.trim().to_string();
        }
        if let Some(proxies) = patch.proxy_addresses {
            user.proxy_addresses = proxies;
        }
        if let Some(enabled) = patch.mailbox_enabled {
            user.mailbox_enabled = enabled;
        }
        if let Some(hold) = patch.litigation_hold {
            user.litigation_hold = hold;
        }
        if let Some(ids) = patch.external_ids {
            user.external_ids = ids.into_iter().map(|i| i.trim().to_string()).collect();
        }
        check_user(&tenant, &user)?;
        let renamed = !user
            .user_principal_name
            .eq_ignore_ascii_case(&old.user_principal_name);
        if renamed {
            // Copies are filed under the mailbox's user principal name: renamed, they would
            // belong to nobody (and to whoever gets the old name next).
            if state
                .store
                .mailbox_has_copies(id, &old.user_principal_name)?
            {
                return Err(ApiError::Conflict(format!(
                    "The mailbox of '{}' holds items: its userPrincipalName cannot change \
                     (delete its items first, or create a new user).",
                    old.user_principal_name
                )));
            }
            refuse_if_a_connector_names(&state, id, &old.user_principal_name)?;
            if state.store.user(id, &user.user_principal_name)?.is_some() {
                return Err(ApiError::Conflict(format!(
                    "Another object with the same value for property userPrincipalName already \
                     exists: {}.",
                    user.user_principal_name
                )));
            }
            // A rename: the old entry (and its addresses) goes, the new one comes; put the old
            // one back if the new one conflicts.
            state.store.delete_user(id, &old.user_principal_name)?;
            if let Err(e) = state.store.put_user(id, &user) {
                state.store.put_user(id, &old)?;
                return Err(address_conflict(e));
            }
        } else {
            state.store.put_user(id, &user).map_err(address_conflict)?;
        }
        user
    };
    durable(&state).await?;
    Ok(Json(user))
}

pub async fn delete_user(
    _: Admin,
    State(state): State<AppState>,
    Path((tenant, upn)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    {
        let _guard = write_lock().await;
        let tenant = tenant_of(&state, &tenant)?;
        let id = TenantId(tenant.id);
        let user = state
            .store
            .user(id, &upn)?
            .ok_or_else(|| user_not_found(&upn))?;
        // Holds are read from the users: deleting one on hold would release its items.
        if user.litigation_hold {
            return Err(ApiError::Conflict(format!(
                "'{}' is on litigation hold: release the hold (litigationHold false) before \
                 deleting the user.",
                user.user_principal_name
            )));
        }
        refuse_if_a_connector_names(&state, id, &user.user_principal_name)?;
        if !state.store.delete_user(id, &upn)? {
            return Err(user_not_found(&upn));
        }
    }
    durable(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_domains() {
        assert!(is_domain("contoso.com"));
        assert!(is_domain("contoso.onmicrosoft.com"));
        assert!(!is_domain("contoso"));
        assert!(!is_domain("-a.com"));
        assert!(!is_domain("a..com"));
        assert!(is_address("alice@contoso.com"));
        assert!(!is_address("alice"));
        assert!(!is_address("alice@contoso"));
        assert!(!is_address("al ice@contoso.com"));
        assert!(!is_address("a@b@contoso.com"));
    }
}
