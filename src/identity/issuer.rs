//! The Entra-like issuer: OpenID configuration (v1 and v2), JWKS, instance discovery, and the
//! token endpoints (client credentials with a secret, HTTP Basic, or a certificate assertion).
//!
//! Checks of the token endpoint, in Entra's order: tenant (90002), grant type (900144/70003),
//! client id (900144), application (700016), credential (7000218, 7000215, 7000222, assertion
//! codes), resource or scope (900144, 1002012, 70011, 500011), service principal of the app in
//! the tenant (700016 when absent, 7000112 when disabled).

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use super::assertion::{verify_client_assertion, JWT_BEARER};
use super::bearer::{is_accepted_audience, EMULATOR_RESOURCE, EXCHANGE_APP_ID};
use super::credentials::{check_secret, SecretCheck};
use super::errors::{add_token_headers, correlation_id, html_error_page, EntraError};
use crate::app::AppState;
use crate::config::TlsSource;
use crate::store::model::{AppRecord, ServicePrincipalRecord, TenantRecord};

/// The `wids` of an app-only token (the service principal's default directory role template).
const APP_ONLY_WIDS: &str = "0997a1d0-0d1d-4acb-b408-d5ca73121e90";

/// Tenant names that are not tenants (multi-tenant endpoints).
const META_TENANTS: &[&str] = &["common", "organizations", "consumers"];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/{tenant}/v2.0/.well-known/openid-configuration", get(openid_v2))
        .route("/{tenant}/.well-known/openid-configuration", get(openid_v1))
        .route("/{tenant}/discovery/v2.0/keys", get(jwks))
        .route("/{tenant}/discovery/keys", get(jwks))
        .route("/{tenant}/discovery/instance", get(instance_discovery))
        .route("/{tenant}/oauth2/v2.0/token", post(token_v2))
        .route("/{tenant}/oauth2/token", post(token_v1))
        .route("/{tenant}/oauth2/v2.0/authorize", get(authorize))
        .route("/{tenant}/oauth2/authorize", get(authorize))
        .route(
            "/{tenant}/adminconsent",
            get(super::consent::show).post(super::consent::submit),
        )
}

/// `scheme://host[:port]` as the client reached us: `https` unless TLS is off, the host from
/// `Host` (HTTP/1.1) or the URI authority (HTTP/2).
pub fn base_url(state: &AppState, headers: &HeaderMap, uri: &Uri) -> String {
    let scheme = if state.config.tls == TlsSource::None {
        "http"
    } else {
        "https"
    };
    let valid = |h: &&str| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
    };
    let host = uri
        .authority()
        .map(|a| a.as_str())
        .filter(valid)
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(valid)
        })
        .map(str::to_string)
        .unwrap_or_else(|| state.config.listen.to_string());
    format!("{scheme}://{host}")
}

/// Resolves a tenant path segment (GUID or domain).
pub fn resolve_tenant(state: &AppState, name: &str) -> Result<Option<TenantRecord>, EntraError> {
    state.store.resolve_tenant(name.trim()).map_err(|e| {
        tracing::error!("store error resolving tenant {name}: {e}");
        transient()
    })
}

fn transient() -> EntraError {
    EntraError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "temporarily_unavailable",
        90033,
        "A transient error has occurred. Please try again.",
    )
}

fn is_meta_tenant(name: &str) -> bool {
    META_TENANTS.iter().any(|m| m.eq_ignore_ascii_case(name))
}

/// Entra answers an unknown tenant's discovery document with `invalid_tenant`.
fn unknown_tenant_document(name: &str, headers: &HeaderMap) -> Response {
    let mut error = EntraError::unknown_tenant(name);
    error.error = "invalid_tenant";
    error.into_response_for(headers)
}

fn json_response(value: Value) -> Response {
    let mut response = Json(value).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("max-age=86400, private"),
    );
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::HeaderValue::from_static("*"),
    );
    response
}

/// (tenant id as shown in documents, the tenant path segment of the endpoints).
fn document_tenant(state: &AppState, name: &str) -> Result<Option<(String, String)>, EntraError> {
    if is_meta_tenant(name) {
        return Ok(Some(("{tenantid}".to_string(), name.to_lowercase())));
    }
    Ok(resolve_tenant(state, name)?.map(|t| (t.id.to_string(), t.id.to_string())))
}

async fn openid_v2(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let (tid, segment) = match document_tenant(&state, &tenant) {
        Ok(Some(found)) => found,
        Ok(None) => return unknown_tenant_document(&tenant, &headers),
        Err(e) => return e.into_response_for(&headers),
    };
    let base = base_url(&state, &headers, &uri);
    json_response(openid_configuration_v2(&base, &tid, &segment))
}

/// The v2.0 OpenID configuration document.
pub fn openid_configuration_v2(base: &str, tid: &str, segment: &str) -> Value {
    json!({
        "token_endpoint": format!("{base}/{segment}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/{segment}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{base}/{tid}/v2.0"),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "authorization_endpoint": format!("{base}/{segment}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/{segment}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/{segment}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
        "kerberos_endpoint": format!("{base}/{segment}/kerberos"),
        "tenant_region_scope": "NA",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    })
}

async fn openid_v1(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let (tid, segment) = match document_tenant(&state, &tenant) {
        Ok(Some(found)) => found,
        Ok(None) => return unknown_tenant_document(&tenant, &headers),
        Err(e) => return e.into_response_for(&headers),
    };
    let base = base_url(&state, &headers, &uri);
    json_response(json!({
        "token_endpoint": format!("{base}/{segment}/oauth2/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/{segment}/discovery/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
        "scopes_supported": ["openid"],
        "issuer": format!("https://sts.windows.net/{tid}/"),
        "microsoft_multi_refresh_token": true,
        "authorization_endpoint": format!("{base}/{segment}/oauth2/authorize"),
        "device_authorization_endpoint": format!("{base}/{segment}/oauth2/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/{segment}/oauth2/logout"),
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "amr", "nonce", "email", "given_name", "family_name", "nickname"],
        "check_session_iframe": format!("{base}/{segment}/oauth2/checksession"),
        "userinfo_endpoint": format!("{base}/{segment}/openid/userinfo"),
        "kerberos_endpoint": format!("{base}/{segment}/kerberos"),
        "tenant_region_scope": "NA",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }))
}

async fn jwks(State(state): State<AppState>, Path(tenant): Path<String>, headers: HeaderMap) -> Response {
    if !is_meta_tenant(&tenant) {
        match resolve_tenant(&state, &tenant) {
            Ok(Some(_)) => {}
            Ok(None) => return unknown_tenant_document(&tenant, &headers),
            Err(e) => return e.into_response_for(&headers),
        }
    }
    // The first call on a new store may wait for the key being generated: off the workers.
    let keys = state.keys.clone();
    match tokio::task::spawn_blocking(move || keys.jwks()).await {
        Ok(document) => json_response(document),
        Err(_) => transient().into_response_for(&headers),
    }
}

/// MSAL's instance discovery (`/common/discovery/instance?authorization_endpoint=...`): this
/// host is its own cloud.
async fn instance_discovery(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let base = base_url(&state, &headers, &uri);
    let host = base.split_once("://").map(|(_, h)| h).unwrap_or(&base).to_string();
    let query: Vec<(String, String)> = uri
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let tenant = query
        .iter()
        .find(|(k, _)| k == "authorization_endpoint")
        .and_then(|(_, endpoint)| endpoint.parse::<Uri>().ok())
        .and_then(|endpoint| {
            endpoint
                .path()
                .trim_start_matches('/')
                .split('/')
                .next()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "common".to_string());
    json_response(json!({
        "tenant_discovery_endpoint": format!("{base}/{tenant}/v2.0/.well-known/openid-configuration"),
        "api-version": "1.1",
        "metadata": [{
            "preferred_network": host,
            "preferred_cache": host,
            "aliases": [host],
        }],
    }))
}

/// The emulator has no interactive users: an Entra-like error page.
async fn authorize() -> Response {
    html_error_page(&EntraError::invalid_request(
        9002313,
        "Invalid request. Request is malformed or invalid. - The reason: the ingestion emulator \
         has no interactive sign-in; use the client credentials grant at the token endpoint, \
         and /{tenant}/adminconsent for administrator consent.",
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/oauth2/token` with `resource=`.
    V1,
    /// `/oauth2/v2.0/token` with `scope=<resource>/.default`.
    V2,
}

async fn token_v2(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    token(state, tenant, uri, headers, body, Endpoint::V2).await
}

async fn token_v1(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    token(state, tenant, uri, headers, body, Endpoint::V1).await
}

async fn token(state: AppState, tenant: String, uri: Uri, headers: HeaderMap, body: Bytes, endpoint: Endpoint) -> Response {
    let request_headers = headers.clone();
    // Signing (and on a new store, waiting for the first key) is CPU work: off the workers.
    let outcome = tokio::task::spawn_blocking(move || {
        let base = base_url(&state, &headers, &uri);
        token_request(&state, &tenant, &base, &headers, &body, endpoint, Utc::now())
    })
    .await
    .unwrap_or_else(|_| Err(transient()));
    match outcome {
        Ok(body) => {
            let correlation = correlation_id(&request_headers);
            let mut response = (StatusCode::OK, Json(body)).into_response();
            add_token_headers(response.headers_mut(), Uuid::new_v4(), &correlation);
            response
        }
        Err(error) => error.into_response_for(&request_headers),
    }
}

/// First value of a form field; empty values count as absent.
fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.trim().is_empty())
}

/// `Authorization: Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(rest.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| -> String {
        serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={s}"))
            .ok()
            .and_then(|mut v| v.pop())
            .map(|(_, v)| v)
            .unwrap_or_else(|| s.to_string())
    };
    Some((unescape(id), unescape(secret)))
}

fn app_not_found(client_id: &str, tenant: &TenantRecord) -> EntraError {
    EntraError::new(
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
        700016,
        format!(
            "Application with identifier '{client_id}' was not found in the directory '{}'. This \
             can happen if the application has not been installed by the administrator of the \
             tenant or consented to by any user in the tenant. You may have sent your \
             authentication request to the wrong tenant.",
            tenant.display_name
        ),
    )
}

/// Whether an assertion `aud` names this token endpoint: our host (either scheme, default port
/// optional), `/{tenant}/oauth2/v2.0/token` or `/{tenant}/oauth2/token` with the tenant as GUID
/// or any of its domains.
pub fn audience_names_token_endpoint(aud: &str, base: &str, tenant: &TenantRecord) -> bool {
    let normalize = |url: &str| -> Option<(String, String)> {
        let uri: Uri = url.trim().parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        if scheme != "https" && scheme != "http" {
            return None;
        }
        let authority = uri.authority()?;
        let host = authority.host().to_ascii_lowercase();
        let port = authority
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        Some((format!("{host}:{port}"), uri.path().to_string()))
    };
    let (Some((aud_host, aud_path)), Some((our_host, _))) = (normalize(aud), normalize(base)) else {
        return false;
    };
    // Either scheme: TLS termination in front of the emulator must not break assertions.
    if aud_host != our_host {
        return false;
    }
    let path = aud_path.trim_end_matches('/');
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let Some((segment, endpoint)) = rest.split_once('/') else {
        return false;
    };
    if !endpoint.eq_ignore_ascii_case("oauth2/v2.0/token") && !endpoint.eq_ignore_ascii_case("oauth2/token") {
        return false;
    }
    Uuid::parse_str(segment).ok() == Some(tenant.id)
        || tenant.domains.iter().any(|d| d.eq_ignore_ascii_case(segment))
}

/// The resource of a v2 `scope`: exactly one `<resource>/.default` (OpenID scopes ignored).
fn resource_from_scope(scope: &str) -> Result<String, EntraError> {
    let scopes: Vec<&str> = scope
        .split_whitespace()
        .filter(|s| !["openid", "profile", "offline_access", "email"].iter().any(|o| o.eq_ignore_ascii_case(s)))
        .collect();
    let not_default = || {
        EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope {} is not valid. Client credential flows must have \
                 a scope value with /.default suffixed to the resource identifier (application ID \
                 URI).",
                scope.trim()
            ),
        )
    };
    let mut resources = Vec::new();
    for s in &scopes {
        let lower = s.to_ascii_lowercase();
        if !lower.ends_with("/.default") {
            return Err(not_default());
        }
        resources.push(s[..s.len() - "/.default".len()].to_string());
    }
    match resources.len() {
        0 => Err(not_default()),
        1 => Ok(resources.pop().expect("one")),
        _ => Err(EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70011,
            format!(
                "The provided request must include a 'scope' input parameter. The provided value \
                 for the input parameter 'scope' is not valid. The scope {} is not valid. Only one \
                 resource may be requested with the client credentials grant.",
                scope.trim()
            ),
        )),
    }
}

/// What was issued, for the response.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub access_token: String,
    pub issued_at: i64,
    pub expires_on: i64,
}

/// Signs an Entra v1-style app-only access token for `app` in `tenant`.
/// `appidacr` is "1" (secret) or "2" (certificate).
pub fn issue_access_token(
    state: &AppState,
    tenant: &TenantRecord,
    app: &AppRecord,
    sp: &ServicePrincipalRecord,
    audience: &str,
    appidacr: &str,
    now: DateTime<Utc>,
) -> Result<IssuedToken, super::keys::KeyError> {
    let iat = now.timestamp();
    let exp = iat + state.config.token_lifetime_secs as i64;
    let issuer = format!("https://sts.windows.net/{}/", tenant.id);
    let random = |n: usize| {
        use rand::RngCore;
        let mut bytes = vec![0u8; n];
        rand::thread_rng().fill_bytes(&mut bytes);
        URL_SAFE_NO_PAD.encode(bytes)
    };
    let mut claims = json!({
        "aud": audience,
        "iss": issuer,
        "iat": iat,
        "nbf": iat,
        "exp": exp,
        "aio": format!("E2Rg{}", random(36)),
        "app_displayname": app.display_name,
        "appid": app.app_id.to_string(),
        "appidacr": appidacr,
        "idp": issuer,
        "oid": sp.id.to_string(),
        "rh": format!("0.{}.", random(48)),
        "sub": sp.id.to_string(),
        "tid": tenant.id.to_string(),
        "uti": random(16),
        "ver": "1.0",
        "wids": [APP_ONLY_WIDS],
    });
    if !sp.app_roles.is_empty() {
        claims["roles"] = json!(sp.app_roles);
    }
    let access_token = state.keys.sign(&claims)?;
    Ok(IssuedToken {
        access_token,
        issued_at: iat,
        expires_on: exp,
    })
}

/// One token request, from the raw form body to the success JSON or Entra's error.
pub fn token_request(
    state: &AppState,
    tenant_name: &str,
    base: &str,
    headers: &HeaderMap,
    body: &[u8],
    endpoint: Endpoint,
    now: DateTime<Utc>,
) -> Result<Value, EntraError> {
    // 1. Tenant.
    let tenant = resolve_tenant(state, tenant_name)?.ok_or_else(|| EntraError::unknown_tenant(tenant_name))?;

    // 2. Grant type. Unknown fields (client_info...) are ignored.
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    let grant_type = field(&form, "grant_type").ok_or_else(|| EntraError::missing_parameter("grant_type"))?;
    if grant_type != "client_credentials" {
        return Err(EntraError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        ));
    }

    // 3. Client id (form, else HTTP Basic).
    let basic = basic_credentials(headers);
    let client_id = field(&form, "client_id")
        .map(str::to_string)
        .or_else(|| basic.as_ref().map(|(id, _)| id.clone()))
        .filter(|id| !id.trim().is_empty())
        .ok_or_else(|| EntraError::missing_parameter("client_id"))?;
    let client_id = client_id.trim().to_string();

    // 4. Application.
    let app = Uuid::parse_str(&client_id)
        .ok()
        .map(|id| state.store.app(id))
        .transpose()
        .map_err(|e| {
            tracing::error!("store error: {e}");
            transient()
        })?
        .flatten()
        .ok_or_else(|| app_not_found(&client_id, &tenant))?;

    // 5. Credential: every one presented must be valid.
    let basic_secret = basic
        .as_ref()
        .filter(|(id, _)| id.trim().eq_ignore_ascii_case(&client_id))
        .map(|(_, secret)| secret.as_str());
    let secret = field(&form, "client_secret").or(basic_secret);
    let assertion = field(&form, "client_assertion");
    if secret.is_none() && assertion.is_none() {
        return Err(EntraError::invalid_client(
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ));
    }
    let mut appidacr = "1";
    if let Some(assertion) = assertion {
        match field(&form, "client_assertion_type") {
            Some(t) if t.trim() == JWT_BEARER => {}
            Some(other) => {
                return Err(EntraError::invalid_request(
                    900144,
                    format!(
                        "The request body must contain the following parameter: \
                         'client_assertion_type' with the value '{JWT_BEARER}' (got '{other}')."
                    ),
                ))
            }
            None => return Err(EntraError::missing_parameter("client_assertion_type")),
        }
        verify_client_assertion(
            assertion,
            &client_id,
            &app,
            |aud| audience_names_token_endpoint(aud, base, &tenant),
            state.config.clock_skew_secs,
            now,
        )?;
        appidacr = "2";
    }
    if let Some(secret) = secret {
        match check_secret(&app.secrets, secret, now) {
            SecretCheck::Valid => {}
            SecretCheck::Expired => {
                return Err(EntraError::invalid_client(
                    7000222,
                    format!(
                        "The provided client secret keys for app '{}' are expired. Visit the Azure \
                         portal to create new keys for your app: https://aka.ms/NewClientSecret, or \
                         consider using certificate credentials for added security: \
                         https://aka.ms/certCreds.",
                        app.app_id
                    ),
                ))
            }
            SecretCheck::Wrong => {
                return Err(EntraError::invalid_client(
                    7000215,
                    format!(
                        "Invalid client secret provided. Ensure the secret being sent in the \
                         request is the client secret value, not the client secret ID, for a \
                         secret added to app '{}'.",
                        app.app_id
                    ),
                ))
            }
        }
    }

    // 6. Resource.
    let resource = match endpoint {
        Endpoint::V2 => {
            let scope = field(&form, "scope").ok_or_else(|| EntraError::missing_parameter("scope"))?;
            resource_from_scope(scope)?
        }
        Endpoint::V1 => field(&form, "resource")
            .ok_or_else(|| EntraError::missing_parameter("resource"))?
            .trim()
            .to_string(),
    };
    if !is_accepted_audience(&resource) {
        return Err(EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500011,
            format!(
                "The resource principal named {resource} was not found in the tenant named {}. \
                 This can happen if the application has not been installed by the administrator \
                 of the tenant or consented to by any user in the tenant. You might have sent \
                 your authentication request to the wrong tenant.",
                tenant.display_name
            ),
        ));
    }
    // `aud` is the resource as requested (v2: without `/.default`).
    let audience = resource.clone();

    // 7. Service principal (consent) in this tenant.
    let sp = state
        .store
        .service_principal(crate::domain::TenantId(tenant.id), app.app_id)
        .map_err(|e| {
            tracing::error!("store error: {e}");
            transient()
        })?
        .ok_or_else(|| app_not_found(&client_id, &tenant))?;
    if !sp.account_enabled {
        return Err(EntraError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            7000112,
            format!("Application '{}'({}) is disabled.", app.app_id, app.display_name),
        ));
    }

    let issued = issue_access_token(state, &tenant, &app, &sp, &audience, appidacr, now).map_err(|e| {
        tracing::error!("cannot sign a token: {e}");
        transient()
    })?;
    let lifetime = issued.expires_on - issued.issued_at;
    Ok(match endpoint {
        Endpoint::V2 => json!({
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": issued.access_token,
        }),
        // v1 answers with numbers as strings, as Entra does.
        Endpoint::V1 => json!({
            "token_type": "Bearer",
            "expires_in": lifetime.to_string(),
            "ext_expires_in": lifetime.to_string(),
            "expires_on": issued.expires_on.to_string(),
            "not_before": issued.issued_at.to_string(),
            "resource": resource,
            "access_token": issued.access_token,
        }),
    })
}

/// Resource identifiers of the ingestion service, for documentation and admin displays.
pub fn resource_identifiers() -> [&'static str; 4] {
    [
        "https://outlook.office365.com",
        "https://outlook.office.com",
        EXCHANGE_APP_ID,
        EMULATOR_RESOURCE,
    ]
}
