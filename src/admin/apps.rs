//! Application registrations (with their secrets and certificates) and service principals
//! (an admin's consent to an app in a tenant).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

use super::error::{parse_guid, parse_json, Admin, ApiError, ApiResult, Body};
use super::{durable, tenant_of, write_lock};
use crate::app::AppState;
use crate::domain::TenantId;
use crate::identity::consent::valid_redirect;
use crate::identity::credentials::{
    certificate_record, certificate_validity, generate_secret, secret_record,
};
use crate::store::model::{
    AppRecord, CertificateRecord, SecretRecord, ServicePrincipalRecord, TenantRecord,
};

/// The role the ingestion endpoint requires, granted by default.
pub const DEFAULT_ROLE: &str = "full_access_as_app";

/// Lifetime of a secret created without `endDateTime` (Graph's `addPassword` default).
const DEFAULT_SECRET_DAYS: i64 = 730;

// ----- views -----

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PasswordCredentialView {
    key_id: Uuid,
    hint: String,
    end_date_time: Option<DateTime<Utc>>,
}

impl From<&SecretRecord> for PasswordCredentialView {
    fn from(s: &SecretRecord) -> Self {
        PasswordCredentialView {
            key_id: s.key_id,
            hint: s.hint.clone(),
            end_date_time: s.end_date_time,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyCredentialView {
    key_id: Uuid,
    /// The SHA-1 thumbprint, base64url (`x5t`), as clients send it in assertions.
    custom_key_identifier: String,
    /// The certificate's subject.
    display_name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    usage: &'static str,
    x5t: String,
    #[serde(rename = "x5t#S256")]
    x5t_s256: String,
    /// The SHA-1 thumbprint in hex, as the Entra portal shows it.
    thumbprint: String,
    /// The certificate's validity period (notBefore, notAfter).
    start_date_time: Option<DateTime<Utc>>,
    end_date_time: Option<DateTime<Utc>>,
}

impl From<&CertificateRecord> for KeyCredentialView {
    fn from(c: &CertificateRecord) -> Self {
        let thumbprint = URL_SAFE_NO_PAD
            .decode(&c.x5t)
            .map(|bytes| bytes.iter().map(|b| format!("{b:02X}")).collect())
            .unwrap_or_default();
        let validity = STANDARD
            .decode(&c.der_base64)
            .ok()
            .and_then(|der| certificate_validity(&der).ok());
        KeyCredentialView {
            start_date_time: validity.map(|(start, _)| start),
            end_date_time: validity.map(|(_, end)| end),
            key_id: c.key_id,
            custom_key_identifier: c.x5t.clone(),
            display_name: c.subject.clone(),
            kind: "AsymmetricX509Cert",
            usage: "Verify",
            x5t: c.x5t.clone(),
            x5t_s256: c.x5t_s256.clone(),
            thumbprint,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePrincipalView {
    id: Uuid,
    app_id: Uuid,
    app_display_name: Option<String>,
    app_owner_organization_id: Option<Uuid>,
    account_enabled: bool,
    app_roles: Vec<String>,
    service_principal_type: &'static str,
    created_date_time: DateTime<Utc>,
}

fn sp_view(sp: &ServicePrincipalRecord, app: Option<&AppRecord>) -> ServicePrincipalView {
    ServicePrincipalView {
        id: sp.id,
        app_id: sp.app_id,
        app_display_name: app.map(|a| a.display_name.clone()),
        app_owner_organization_id: app.map(|a| a.home_tenant),
        account_enabled: sp.account_enabled,
        app_roles: sp.app_roles.clone(),
        service_principal_type: "Application",
        created_date_time: sp.created,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationView {
    app_id: Uuid,
    display_name: String,
    required_roles: Vec<String>,
    password_credentials: Vec<PasswordCredentialView>,
    key_credentials: Vec<KeyCredentialView>,
    /// Where the admin consent page may redirect (any other `redirect_uri` is refused).
    redirect_uris: Vec<String>,
    created_date_time: DateTime<Utc>,
    /// Whether the tenant's admin consented (a service principal exists in the tenant).
    consented: bool,
    service_principal: Option<ServicePrincipalView>,
    /// Shown once, in the answer to the registration.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
}

fn app_view(state: &AppState, tenant: TenantId, app: &AppRecord) -> ApiResult<ApplicationView> {
    let sp = state.store.service_principal(tenant, app.app_id)?;
    Ok(ApplicationView {
        app_id: app.app_id,
        display_name: app.display_name.clone(),
        required_roles: app.required_roles.clone(),
        password_credentials: app.secrets.iter().map(Into::into).collect(),
        key_credentials: app.certificates.iter().map(Into::into).collect(),
        redirect_uris: app.redirect_uris.clone(),
        created_date_time: app.created,
        consented: sp.is_some(),
        service_principal: sp.as_ref().map(|sp| sp_view(sp, Some(app))),
        client_secret: None,
    })
}

fn app_not_found(app_id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "Resource '{app_id}' does not exist or one of its queried reference-property objects \
         are not present."
    ))
}

/// The app `app_id` registered in `tenant`.
fn home_app(state: &AppState, tenant: &TenantRecord, app_id: &str) -> ApiResult<AppRecord> {
    let id = parse_guid(app_id, "application id")?;
    match state.store.app(id)? {
        Some(app) if app.home_tenant == tenant.id => Ok(app),
        _ => Err(app_not_found(app_id)),
    }
}

fn check_end(end: Option<DateTime<Utc>>) -> ApiResult<DateTime<Utc>> {
    let now = Utc::now();
    match end {
        Some(end) if end <= now => Err(ApiError::BadRequest(
            "Invalid value specified for property 'endDateTime': it must be in the future.".into(),
        )),
        Some(end) => Ok(end),
        None => Ok(now + chrono::Duration::days(DEFAULT_SECRET_DAYS)),
    }
}

// ----- applications -----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewApplication {
    display_name: String,
    required_roles: Option<Vec<String>>,
    secret_end_date_time: Option<DateTime<Utc>>,
    redirect_uris: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplicationPatch {
    display_name: Option<String>,
    redirect_uris: Option<Vec<String>>,
}

/// Most redirect URIs of an application, and longest one (Entra's limits).
const MAX_REDIRECT_URIS: usize = 256;
const MAX_REDIRECT_URI_LENGTH: usize = 256;

/// The redirect URIs as given, checked (absolute http or https URLs without a fragment, within
/// Entra's limits) and without repeats.
fn redirect_uris(uris: Vec<String>) -> ApiResult<Vec<String>> {
    if uris.len() > MAX_REDIRECT_URIS {
        return Err(ApiError::BadRequest(format!(
            "Invalid value specified for property 'redirectUris': at most {MAX_REDIRECT_URIS} URIs."
        )));
    }
    let mut checked: Vec<String> = Vec::with_capacity(uris.len());
    for uri in uris {
        let uri = uri.trim().to_string();
        if uri.len() > MAX_REDIRECT_URI_LENGTH || !valid_redirect(&uri) {
            return Err(ApiError::BadRequest(format!(
                "Invalid value specified for property 'redirectUris': '{}' is not an absolute \
                 http or https URL without a fragment, of at most {MAX_REDIRECT_URI_LENGTH} \
                 characters.",
                uri.chars()
                    .take(MAX_REDIRECT_URI_LENGTH)
                    .collect::<String>()
            )));
        }
        if !checked.contains(&uri) {
            checked.push(uri);
        }
    }
    Ok(checked)
}

fn display_name(name: &str) -> ApiResult<String> {
    super::directory::display_name(name, "displayName")
}

pub async fn list_apps(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let tenant = tenant_of(&state, &tenant)?;
    let id = TenantId(tenant.id);
    let mut apps = state.store.apps(id)?;
    apps.sort_by(|a, b| a.created.cmp(&b.created).then(a.app_id.cmp(&b.app_id)));
    let views = apps
        .iter()
        .map(|app| app_view(&state, id, app))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(serde_json::json!({ "value": views })))
}

pub async fn create_app(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    Body(body): Body<NewApplication>,
) -> ApiResult<impl IntoResponse> {
    let display_name = display_name(&body.display_name)?;
    let redirect_uris = redirect_uris(body.redirect_uris.unwrap_or_default())?;
    let roles = body
        .required_roles
        .unwrap_or_else(|| vec![DEFAULT_ROLE.to_string()]);
    if roles.iter().any(|r| r.trim().is_empty() || r.contains(' ')) {
        return Err(ApiError::BadRequest(
            "Invalid value specified for property 'requiredRoles': a role is one word.".into(),
        ));
    }
    let end = check_end(body.secret_end_date_time)?;
    let secret = generate_secret();
    let (tenant, app) = {
        let _guard = write_lock().await;
        let tenant = tenant_of(&state, &tenant)?;
        let app = AppRecord {
            app_id: Uuid::new_v4(),
            home_tenant: tenant.id,
            display_name,
            required_roles: roles,
            secrets: vec![secret_record(&secret, Some(end))],
            certificates: Vec::new(),
            created: Utc::now(),
            redirect_uris,
        };
        state.store.put_app(&app)?;
        (tenant, app)
    };
    durable(&state).await?;
    let mut view = app_view(&state, TenantId(tenant.id), &app)?;
    view.client_secret = Some(secret);
    let location = format!("/api/tenants/{}/applications/{}", tenant.id, app.app_id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(view),
    ))
}

pub async fn get_app(
    _: Admin,
    State(state): State<AppState>,
    Path((tenant, app_id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let tenant = tenant_of(&state, &tenant)?;
    let app = home_app(&state, &tenant, &app_id)?;
    Ok(Json(app_view(&state, TenantId(tenant.id), &app)?))
}

/// `PATCH` an application: its display name and redirect URIs (a list replaces the list).
pub async fn patch_app(
    _: Admin,
    State(state): State<AppState>,
    Path((tenant, app_id)): Path<(String, String)>,
    Body(patch): Body<ApplicationPatch>,
) -> ApiResult<impl IntoResponse> {
    let display_name = patch
        .display_name
        .as_deref()
        .map(display_name)
        .transpose()?;
    let redirect_uris = patch.redirect_uris.map(redirect_uris).transpose()?;
    let (tenant, app) = {
        let _guard = write_lock().await;
        let tenant = tenant_of(&state, &tenant)?;
        let mut app = home_app(&state, &tenant, &app_id)?;
        if let Some(name) = display_name {
            app.display_name = name;
        }
        if let Some(uris) = redirect_uris {
            app.redirect_uris = uris;
        }
        state.store.put_app(&app)?;
        (tenant, app)
    };
    durable(&state).await?;
    Ok(Json(app_view(&state, TenantId(tenant.id), &app)?))
}

pub async fn delete_app(
    _: Admin,
    State(state): State<AppState>,
    Path((tenant, app_id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    {
        let _guard = write_lock().await;
        let tenant = tenant_of(&state, &tenant)?;
        let app = home_app(&state, &tenant, &app_id)?;
        state.store.delete_app(app.app_id)?;
    }
    durable(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- secrets -----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewSecret {
    end_date_time: Option<DateTime<Utc>>,
    display_name: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NewSecretView {
    key_id: Uuid,
    secret_text: String,
    hint: String,
    display_name: Option<String>,
    end_date_time: Option<DateTime<Utc>>,
}

pub async fn add_secret(
    _: Admin,
    State(state): State<AppState>,
    Path((tenant, app_id)): Path<(String, String)>,
    Body(body): Body<NewSecret>,
) -> ApiResult<impl IntoResponse> {
    let end = check_end(body.end_date_time)?;
    let secret = generate_secret();
    let record = secret_record(&secret, Some(end));
    {
        let _guard = write_lock().await;
        let tenant = tenant_of(&state, &tenant)?;
        let mut app = home_app(&state, &tenant, &app_id)?;
        app.secrets.push(record.clone());
        state.store.put_app(&app)?;
    }
    durable(&state).await?;
    Ok((
        StatusCode::CREATED,
        Json(NewSecretView {
            key_id: record.key_id,
            secret_text: secret,
            hint: record.hint,
            display_name: body.display_name,
            end_date_time: record.end_date_time,
        }),
    ))
}

pub async fn delete_secret(
    _: Admin,
    State(state): State<AppState>,
    Path((tenant, app_id, key_id)): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    let key = parse_guid(&key_id, "keyId")?;
    {
        let _guard = write_lock().await;
        let tenant = tenant_of(&state, &tenant)?;
        let mut app = home_app(&state, &tenant, &app_id)?;
        let before = app.secrets.len();
        app.secrets.retain(|s| s.key_id != key);
        if app.secrets.len() == before {
            return Err(ApiError::NotFound(format!(
                "No password credential with keyId '{key_id}' on application '{app_id}'."
            )));
        }
        state.store.put_app(&app)?;
    }
    durable(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- certificates -----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCertificate {
    pem: String,
}

/// Takes `{"pem": "..."}` (application/json) or the PEM itself (application/x-pem-file,
/// text/plain, or no Content-Type).
pub async fn add_certificate(
    _: Admin,
    State(state): State<AppState>,
    Path((tenant, app_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let pem = if content_type.contains("json") {
        parse_json::<NewCertificate>(&body)?.pem
    } else if content_type.is_empty()
        || content_type.starts_with("application/x-pem-file")
        || content_type.starts_with("application/x-x509-ca-cert")
        || content_type.starts_with("application/pem-certificate-chain")
        || content_type.starts_with("text/plain")
    {
        String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::BadRequest("The PEM certificate is not UTF-8 text.".into()))?
    } else {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type {content_type} is not supported: send application/json \
             ({{\"pem\": \"...\"}}) or application/x-pem-file."
        )));
    };
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(ApiError::BadRequest(
            "Invalid certificate: expected a PEM block '-----BEGIN CERTIFICATE-----'.".into(),
        ));
    }
    let record = certificate_record(&pem)?;
    {
        let _guard = write_lock().await;
        let tenant = tenant_of(&state, &tenant)?;
        let mut app = home_app(&state, &tenant, &app_id)?;
        if app.certificates.iter().any(|c| c.x5t == record.x5t) {
            return Err(ApiError::Conflict(format!(
                "The certificate (x5t {}) is already a key credential of application '{}'.",
                record.x5t, app.app_id
            )));
        }
        app.certificates.push(record.clone());
        state.store.put_app(&app)?;
    }
    durable(&state).await?;
    Ok((StatusCode::CREATED, Json(KeyCredentialView::from(&record))))
}

pub async fn delete_certificate(
    _: Admin,
    State(state): State<AppState>,
    Path((tenant, app_id, key_id)): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    let key = parse_guid(&key_id, "keyId")?;
    {
        let _guard = write_lock().await;
        let tenant = tenant_of(&state, &tenant)?;
        let mut app = home_app(&state, &tenant, &app_id)?;
        let before = app.certificates.len();
        app.certificates.retain(|c| c.key_id != key);
        if app.certificates.len() == before {
            return Err(ApiError::NotFound(format!(
                "No key credential with keyId '{key_id}' on application '{app_id}'."
            )));
        }
        state.store.put_app(&app)?;
    }
    durable(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- service principals -----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewServicePrincipal {
    app_id: Uuid,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePrincipalPatch {
    account_enabled: Option<bool>,
    app_roles: Option<Vec<String>>,
}

/// The service principal of `key` (its appId, or its own object id) in `tenant`.
fn find_sp(state: &AppState, tenant: TenantId, key: &str) -> ApiResult<ServicePrincipalRecord> {
    let id = parse_guid(key, "service principal id")?;
    if let Some(sp) = state.store.service_principal(tenant, id)? {
        return Ok(Arc::unwrap_or_clone(sp));
    }
    state
        .store
        .service_principals(tenant)?
        .into_iter()
        .find(|sp| sp.id == id)
        .ok_or_else(|| app_not_found(key))
}

pub async fn list_sps(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let tenant = tenant_of(&state, &tenant)?;
    let mut views = Vec::new();
    for sp in state.store.service_principals(TenantId(tenant.id))? {
        let app = state.store.app(sp.app_id)?;
        views.push(sp_view(&sp, app.as_ref()));
    }
    views.sort_by_key(|v| v.created_date_time);
    Ok(Json(serde_json::json!({ "value": views })))
}

pub async fn create_sp(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    Body(body): Body<NewServicePrincipal>,
) -> ApiResult<impl IntoResponse> {
    let (tenant, sp, app) = {
        let _guard = write_lock().await;
        let tenant = tenant_of(&state, &tenant)?;
        let id = TenantId(tenant.id);
        let app = state.store.app(body.app_id)?.ok_or_else(|| {
            ApiError::NotFound(format!(
                "The appId '{}' of the service principal does not reference a valid \
                 application object.",
                body.app_id
            ))
        })?;
        if state.store.service_principal(id, app.app_id)?.is_some() {
            return Err(ApiError::Conflict(format!(
                "Another object with the same value for property appId already exists: a \
                 service principal for '{}' exists in this tenant.",
                app.app_id
            )));
        }
        let sp = ServicePrincipalRecord {
            app_id: app.app_id,
            tenant: tenant.id,
            id: Uuid::new_v4(),
            account_enabled: true,
            app_roles: app.required_roles.clone(),
            created: Utc::now(),
        };
        state.store.put_service_principal(&sp)?;
        (tenant, sp, app)
    };
    durable(&state).await?;
    let location = format!("/api/tenants/{}/servicePrincipals/{}", tenant.id, sp.app_id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(sp_view(&sp, Some(&app))),
    ))
}

pub async fn get_sp(
    _: Admin,
    State(state): State<AppState>,
    Path((tenant, key)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let tenant = tenant_of(&state, &tenant)?;
    let sp = find_sp(&state, TenantId(tenant.id), &key)?;
    let app = state.store.app(sp.app_id)?;
    Ok(Json(sp_view(&sp, app.as_ref())))
}

pub async fn patch_sp(
    _: Admin,
    State(state): State<AppState>,
    Path((tenant, key)): Path<(String, String)>,
    Body(patch): Body<ServicePrincipalPatch>,
) -> ApiResult<impl IntoResponse> {
    let sp = {
        let _guard = write_lock().await;
        let tenant = tenant_of(&state, &tenant)?;
        let mut sp = find_sp(&state, TenantId(tenant.id), &key)?;
        if let Some(enabled) = patch.account_enabled {
            sp.account_enabled = enabled;
        }
        if let Some(roles) = patch.app_roles {
            if roles.iter().any(|r| r.trim().is_empty()) {
                return Err(ApiError::BadRequest(
                    "Invalid value specified for property 'appRoles': empty role.".into(),
                ));
            }
            sp.app_roles = roles;
        }
        state.store.put_service_principal(&sp)?;
        sp
    };
    durable(&state).await?;
    let app = state.store.app(sp.app_id)?;
    Ok(Json(sp_view(&sp, app.as_ref())))
}

pub async fn delete_sp(
    _: Admin,
    State(state): State<AppState>,
    Path((tenant, key)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    {
        let _guard = write_lock().await;
        let tenant = tenant_of(&state, &tenant)?;
        let id = TenantId(tenant.id);
        let sp = find_sp(&state, id, &key)?;
        state.store.delete_service_principal(id, sp.app_id)?;
    }
    durable(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}
