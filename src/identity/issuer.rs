//! The Entra-like issuer: OpenID configuration (v1 and v2), JWKS, instance discovery, and the
//! token endpoints (client credentials with a secret, HTTP Basic, or a certificate assertion).
//!
//! Checks of the token endpoint, in Entra's order: tenant (90002), grant type (900144/70003),
//! client id (900144), application (700016), credential (7000216, 7000215, 7000222, assertion
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
use super::errors::{add_token_headers, client_request_id, html_error_page, EntraError};
use crate::app::AppState;
use crate::store::model::{AppRecord, ServicePrincipalRecord, TenantRecord};

/// The `wids` of an app-only token (the service principal's default directory role template).
const APP_ONLY_WIDS: &str = "0997a1d0-0d1d-4acb-b408-d5ca73121e90";

/// Tenant names that are not tenants (multi-tenant endpoints).
const META_TENANTS: &[&str] = &["common", "organizations", "consumers"];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(openid_v2),
        )
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

/// Resolves a tenant path segment (GUID or domain).
pub fn resolve_tenant(state: &AppState, name: &str) -> Result<Option<TenantRecord>, EntraError> {
    match state.store.resolve_tenant(name.trim()) {
        Ok(tenant) => Ok(tenant.map(std::sync::Arc::unwrap_or_clone)),
        Err(e) => {
            tracing::error!("store error resolving tenant {name}: {e}");
            Err(transient())
        }
    }
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
    headers: HeaderMap,
) -> Response {
    openid_document(&state, &tenant, &headers, openid_configuration_v2)
}

async fn openid_v1(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    openid_document(&state, &tenant, &headers, openid_configuration_v1)
}

/// Answers an OpenID configuration document for `tenant`, built on the client's base URL.
fn openid_document(
    state: &AppState,
    tenant: &str,
    headers: &HeaderMap,
    build: fn(&str, &str, &str) -> Value,
) -> Response {
    let (tid, segment) = match document_tenant(state, tenant) {
        Ok(Some(found)) => found,
        Ok(None) => return unknown_tenant_document(tenant, headers),
        Err(e) => return e.into_response_for(headers),
    };
    let base = crate::http::base_url(state, headers);
    json_response(build(&base, &tid, &segment))
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

/// The v1 OpenID configuration document.
pub fn openid_configuration_v1(base: &str, tid: &str, segment: &str) -> Value {
    json!({
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
    })
}

async fn jwks(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !is_meta_tenant(&tenant) {
        match resolve_tenant(&state, &tenant) {
            Ok(Some(_)) => {}
            Ok(None) => return unknown_tenant_document(&tenant, &headers),
            Err(e) => return e.into_response_for(&headers),
        }
    }
    // The first call on a new store may wait for the key being generated: off the workers.
    let keys = state.keys.clone();
    match crate::task::spawn_blocking(move || keys.jwks()).await {
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
    let base = crate::http::base_url(&state, &headers);
    let host = base
        .split_once("://")
        .map(|(_, h)| h)
        .unwrap_or(&base)
        .to_string();
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
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    token(state, tenant, &uri, headers, body, Endpoint::V2).await
}

async fn token_v1(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    token(state, tenant, &uri, headers, body, Endpoint::V1).await
}

async fn token(
    state: AppState,
    tenant: String,
    uri: &Uri,
    headers: HeaderMap,
    body: Bytes,
    endpoint: Endpoint,
) -> Response {
    let correlation = client_request_id(&headers, uri.query(), &body);
    // Signing (and on a new store, waiting for the first key) is CPU work: off the workers.
    let outcome = crate::task::spawn_blocking(move || {
        let base = crate::http::base_url(&state, &headers);
        token_request(
            &state,
            &tenant,
            &base,
            &headers,
            &body,
            endpoint,
            Utc::now(),
        )
    })
    .await
    .unwrap_or_else(|_| Err(transient()));
    match outcome {
        Ok(body) => {
            let mut response = (StatusCode::OK, Json(body)).into_response();
            add_token_headers(response.headers_mut(), Uuid::new_v4(), &correlation);
            response
        }
        Err(error) => error.into_response_with(correlation),
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

/// Token service hosts of Microsoft's clouds. `base` comes from the request's `Host`, which the
/// client chooses: an assertion made for real Entra ID must not pass by a request that claims
/// to be for one of them.
const MICROSOFT_LOGIN_HOSTS: [&str; 9] = [
    "login.microsoftonline.com",
    "login.microsoft.com",
    "login.windows.net",
    "sts.windows.net",
    "login.microsoftonline.us",
    "login.microsoftonline.de",
    "login.chinacloudapi.cn",
    "login.partner.microsoftonline.cn",
    "login.windows-ppe.net",
];

/// Whether an assertion `aud` names this token endpoint as the client reached it: our host and
/// port (case-insensitive, default port implied; either scheme, so a TLS terminator in front of
/// the emulator does not break assertions), path `/{tenant}/oauth2/v2.0/token` or
/// `/{tenant}/oauth2/token` with the tenant of the request as GUID or any of its domains. An
/// assertion made for another host or port is refused, and one made for a Microsoft token
/// service (such as login.microsoftonline.com) always, whatever `Host` the request sent.
pub fn audience_names_token_endpoint(aud: &str, base: &str, tenant: &TenantRecord) -> bool {
    let parse = |url: &str| -> Option<(String, String)> {
        let uri: Uri = url.trim().parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        if scheme != "https" && scheme != "http" {
            return None;
        }
        let authority = uri.authority()?;
        let port = authority
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let host = format!("{}:{port}", authority.host().to_ascii_lowercase());
        Some((host, uri.path().to_string()))
    };
    let (Some((aud_host, aud_path)), Some((our_host, _))) = (parse(aud), parse(base)) else {
        return false;
    };
    if aud_host != our_host {
        return false;
    }
    let name = aud_host
        .rsplit_once(':')
        .map_or(aud_host.as_str(), |(name, _)| name);
    if MICROSOFT_LOGIN_HOSTS.contains(&name.trim_end_matches('.')) {
        return false;
    }
    let path = aud_path.trim_end_matches('/');
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let Some((segment, endpoint)) = rest.split_once('/') else {
        return false;
    };
    if !endpoint.eq_ignore_ascii_case("oauth2/v2.0/token")
        && !endpoint.eq_ignore_ascii_case("oauth2/token")
    {
        return false;
    }
    Uuid::parse_str(segment).ok() == Some(tenant.id)
        || tenant
            .domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(segment))
}

/// The resource of a v2 `scope`: exactly one `<resource>/.default` (OpenID scopes ignored).
fn resource_from_scope(scope: &str) -> Result<String, EntraError> {
    let scopes: Vec<&str> = scope
        .split_whitespace()
        .filter(|s| {
            !["openid", "profile", "offline_access", "email"]
                .iter()
                .any(|o| o.eq_ignore_ascii_case(s))
        })
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
    let tenant = resolve_tenant(state, tenant_name)?
        .ok_or_else(|| EntraError::unknown_tenant(tenant_name))?;

    // 2. Grant type. Unknown fields (client_info...) are ignored.
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    let grant_type =
        field(&form, "grant_type").ok_or_else(|| EntraError::missing_parameter("grant_type"))?;
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
            7000216,
            "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
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
            let scope =
                field(&form, "scope").ok_or_else(|| EntraError::missing_parameter("scope"))?;
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
            format!(
                "Application '{}'({}) is disabled.",
                app.app_id, app.display_name
            ),
        ));
    }

    let issued =
        issue_access_token(state, &tenant, &app, &sp, &audience, appidacr, now).map_err(|e| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::assertion::tests::{CAPTURED_ATTACKER, CAPTURED_PS256, CAPTURED_RS256};
    use crate::identity::bearer::tests::{test_state, test_state_with, ADMIN_KEY, APP, TENANT};
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    const BASE: &str = "https://127.0.0.1:8443";

    fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
        serde_urlencoded::to_string(pairs).unwrap().into_bytes()
    }

    fn secret_form<'a>(
        client_id: &'a str,
        secret: &'a str,
        scope: &'a str,
    ) -> Vec<(&'a str, &'a str)> {
        vec![
            ("client_id", client_id),
            ("grant_type", "client_credentials"),
            ("client_info", "1"),
            ("client_secret", secret),
            ("scope", scope),
        ]
    }

    fn request(
        state: &AppState,
        tenant: &str,
        pairs: &[(&str, &str)],
        endpoint: Endpoint,
    ) -> Result<Value, EntraError> {
        token_request(
            state,
            tenant,
            BASE,
            &HeaderMap::new(),
            &form(pairs),
            endpoint,
            Utc::now(),
        )
    }

    fn claims_of(token: &str) -> Value {
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    }

    #[test]
    fn issues_entra_like_v1_app_tokens_that_the_bearer_check_accepts() {
        let (_dir, state) = test_state();
        for tenant in [TENANT, "contoso.onmicrosoft.com", "CONTOSO.COM"] {
            let body = request(
                &state,
                tenant,
                &secret_form(
                    APP,
                    "dev-secret-value",
                    "https://outlook.office365.com/.default",
                ),
                Endpoint::V2,
            )
            .unwrap();
            assert_eq!(body["token_type"], "Bearer");
            assert_eq!(body["expires_in"], 3599);
            assert_eq!(body["ext_expires_in"], 3599);
            let token = body["access_token"].as_str().unwrap();
            let claims = claims_of(token);
            assert_eq!(claims["aud"], "https://outlook.office365.com");
            assert_eq!(claims["iss"], format!("https://sts.windows.net/{TENANT}/"));
            assert_eq!(claims["idp"], claims["iss"]);
            assert_eq!(claims["tid"], TENANT);
            assert_eq!(claims["appid"], APP);
            assert_eq!(claims["appidacr"], "1");
            assert_eq!(claims["ver"], "1.0");
            assert_eq!(claims["roles"], json!(["full_access_as_app"]));
            assert_eq!(claims["oid"], claims["sub"]);
            assert_eq!(
                claims["app_displayname"],
                "Contoso Archive Connector (test)"
            );
            assert_eq!(
                claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
                3599
            );
            for field in ["aio", "rh", "uti", "wids", "nbf"] {
                assert!(!claims[field].is_null(), "{field}");
            }
            let mut headers = HeaderMap::new();
            headers.insert(
                header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
            let principal = crate::identity::authenticate(&state, &headers).unwrap();
            assert_eq!(principal.app_id.0.to_string(), APP);
        }
        // The emulator's own resource and the Exchange GUID.
        for (scope, aud) in [
            (
                "api://m365-ingestion-emulator/.default",
                "api://m365-ingestion-emulator",
            ),
            (
                "00000002-0000-0ff1-ce00-000000000000/.default",
                EXCHANGE_APP_ID,
            ),
        ] {
            let body = request(
                &state,
                TENANT,
                &secret_form(APP, "dev-secret-value", scope),
                Endpoint::V2,
            )
            .unwrap();
            assert_eq!(
                claims_of(body["access_token"].as_str().unwrap())["aud"],
                aud
            );
        }
        // v1 with resource=.
        let body = request(
            &state,
            TENANT,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", APP),
                ("client_secret", "dev-secret-value"),
                ("resource", "https://outlook.office365.com"),
            ],
            Endpoint::V1,
        )
        .unwrap();
        assert_eq!(body["resource"], "https://outlook.office365.com");
        assert_eq!(body["expires_in"], "3599");
        assert!(body["expires_on"].as_str().unwrap().parse::<i64>().is_ok());
        assert!(body["not_before"].is_string());
    }

    #[test]
    fn each_failure_has_entras_code() {
        let (_dir, state) = test_state();
        let exo = "https://outlook.office365.com/.default";
        type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, &'a str, u32);
        let cases: Vec<Case> = vec![
            (
                "nosuch.onmicrosoft.com",
                secret_form(APP, "dev-secret-value", exo),
                400,
                "invalid_request",
                90002,
            ),
            (
                TENANT,
                vec![
                    ("client_id", APP),
                    ("client_secret", "dev-secret-value"),
                    ("scope", exo),
                ],
                400,
                "invalid_request",
                900144,
            ),
            (
                TENANT,
                vec![
                    ("grant_type", "password"),
                    ("client_id", APP),
                    ("client_secret", "dev-secret-value"),
                    ("scope", exo),
                ],
                400,
                "unsupported_grant_type",
                70003,
            ),
            (
                TENANT,
                vec![
                    ("grant_type", "client_credentials"),
                    ("client_secret", "dev-secret-value"),
                    ("scope", exo),
                ],
                400,
                "invalid_request",
                900144,
            ),
            (
                TENANT,
                secret_form(
                    "99999999-9999-9999-9999-999999999999",
                    "dev-secret-value",
                    exo,
                ),
                400,
                "unauthorized_client",
                700016,
            ),
            (
                TENANT,
                secret_form("not-a-guid", "dev-secret-value", exo),
                400,
                "unauthorized_client",
                700016,
            ),
            (
                TENANT,
                vec![
                    ("grant_type", "client_credentials"),
                    ("client_id", APP),
                    ("scope", exo),
                ],
                401,
                "invalid_client",
                7000216,
            ),
            (
                TENANT,
                secret_form(APP, "wrong", exo),
                401,
                "invalid_client",
                7000215,
            ),
            (
                TENANT,
                secret_form(
                    APP,
                    "dev-secret-value",
                    "https://outlook.office365.com/EWS.AccessAsUser.All",
                ),
                400,
                "invalid_scope",
                1002012,
            ),
            (
                TENANT,
                secret_form(APP, "dev-secret-value", "https://nosuch.example/.default"),
                400,
                "invalid_resource",
                500011,
            ),
            (
                TENANT,
                vec![
                    ("grant_type", "client_credentials"),
                    ("client_id", APP),
                    ("client_secret", "dev-secret-value"),
                ],
                400,
                "invalid_request",
                900144,
            ),
            (
                TENANT,
                secret_form(
                    "33333333-3333-3333-3333-333333333333",
                    "unconsented-secret",
                    exo,
                ),
                400,
                "unauthorized_client",
                700016,
            ),
            (
                TENANT,
                secret_form(
                    "44444444-4444-4444-4444-444444444444",
                    "disabled-secret",
                    exo,
                ),
                400,
                "unauthorized_client",
                7000112,
            ),
            // The order is Entra's: a wrong secret is reported before an unknown resource.
            (
                TENANT,
                secret_form(APP, "wrong", "https://nosuch.example/.default"),
                401,
                "invalid_client",
                7000215,
            ),
            (
                TENANT,
                vec![
                    ("grant_type", "client_credentials"),
                    ("client_id", APP),
                    ("client_assertion_type", JWT_BEARER),
                    ("client_assertion", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"),
                    ("scope", exo),
                ],
                401,
                "invalid_client",
                700027,
            ),
            (
                TENANT,
                vec![
                    ("grant_type", "client_credentials"),
                    ("client_id", APP),
                    ("client_assertion", CAPTURED_RS256),
                    ("scope", exo),
                ],
                400,
                "invalid_request",
                900144,
            ),
        ];
        for (tenant, pairs, status, error, code) in cases {
            let e = request(&state, tenant, &pairs, Endpoint::V2).unwrap_err();
            assert_eq!(
                (e.status.as_u16(), e.error, e.code),
                (status, error, code),
                "{tenant} {pairs:?}: {e}"
            );
        }
        let e = request(
            &state,
            TENANT,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", APP),
                ("client_secret", "dev-secret-value"),
                ("resource", "https://nosuch.example"),
            ],
            Endpoint::V1,
        )
        .unwrap_err();
        assert_eq!(e.code, 500011);
    }

    fn assertion_form(assertion: &str) -> Vec<(&str, &str)> {
        vec![
            ("client_id", APP),
            ("grant_type", "client_credentials"),
            ("client_info", "1"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
            ("scope", "https://outlook.office365.com/.default"),
        ]
    }

    #[test]
    fn captured_msal_assertions() {
        let (_dir, state) = test_state();
        for assertion in [CAPTURED_PS256, CAPTURED_RS256] {
            let e = request(&state, TENANT, &assertion_form(assertion), Endpoint::V2).unwrap_err();
            assert_eq!((e.code, e.status.as_u16()), (700024, 401), "{e}");
        }
        let (_dir2, skewed) = test_state_with(|c| c.clock_skew_secs = 315_360_000);
        // Either scheme (TLS terminator), same host and port.
        for base in [BASE, "http://127.0.0.1:8443"] {
            for assertion in [CAPTURED_PS256, CAPTURED_RS256, CAPTURED_PS256] {
                let body = token_request(
                    &skewed,
                    TENANT,
                    base,
                    &HeaderMap::new(),
                    &form(&assertion_form(assertion)),
                    Endpoint::V2,
                    Utc::now(),
                )
                .unwrap_or_else(|e| panic!("{base}: {e}"));
                assert_eq!(
                    claims_of(body["access_token"].as_str().unwrap())["appidacr"],
                    "2"
                );
            }
        }
        let e = request(
            &skewed,
            TENANT,
            &assertion_form(CAPTURED_ATTACKER),
            Endpoint::V2,
        )
        .unwrap_err();
        assert_eq!(e.code, 700027);
        // Made for another host: refused.
        let e = token_request(
            &skewed,
            TENANT,
            "https://login.example",
            &HeaderMap::new(),
            &form(&assertion_form(CAPTURED_RS256)),
            Endpoint::V2,
            Utc::now(),
        )
        .unwrap_err();
        assert_eq!(e.code, 700023);
        // Made for another tenant's endpoint: refused.
        let other = TenantRecord {
            id: Uuid::new_v4(),
            display_name: "Other".into(),
            domains: vec!["other.example".into()],
            third_party_mailbox: None,
            retention_days: None,
        };
        assert!(!audience_names_token_endpoint(
            crate::identity::assertion::tests::CAPTURED_AUD,
            BASE,
            &other
        ));
    }

    #[test]
    fn audience_forms() {
        let (_dir, state) = test_state();
        let tenant = state.store.resolve_tenant(TENANT).unwrap().unwrap();
        for aud in [
            "https://127.0.0.1:8443/11111111-1111-1111-1111-111111111111/oauth2/v2.0/token",
            "https://127.0.0.1:8443/contoso.onmicrosoft.com/oauth2/v2.0/token",
            "https://127.0.0.1:8443/Contoso.com/oauth2/token",
            "https://127.0.0.1:8443/contoso.com/oauth2/token/",
        ] {
            assert!(audience_names_token_endpoint(aud, BASE, &tenant), "{aud}");
        }
        for aud in [
            "https://login.microsoftonline.com/11111111-1111-1111-1111-111111111111/oauth2/v2.0/token",
            "https://127.0.0.1:8443/common/oauth2/v2.0/token",
            "https://127.0.0.1:9443/11111111-1111-1111-1111-111111111111/oauth2/v2.0/token",
            "https://127.0.0.1:8443/11111111-1111-1111-1111-111111111111/oauth2/v2.0/authorize",
            "22222222-2222-2222-2222-222222222222",
            "",
        ] {
            assert!(!audience_names_token_endpoint(aud, BASE, &tenant), "{aud}");
        }
        // A request that claims (by its Host) to be for Entra ID does not make an assertion
        // made for Entra ID valid here.
        for (aud, base) in [
            (
                "https://login.microsoftonline.com/11111111-1111-1111-1111-111111111111/oauth2/v2.0/token",
                "https://login.microsoftonline.com",
            ),
            (
                "https://LOGIN.microsoftonline.com./contoso.com/oauth2/token",
                "https://login.microsoftonline.com.",
            ),
            (
                "https://login.microsoftonline.us:443/contoso.com/oauth2/token",
                "https://login.microsoftonline.us",
            ),
        ] {
            assert!(!audience_names_token_endpoint(aud, base, &tenant), "{aud}");
        }
        assert!(audience_names_token_endpoint(
            "https://ingest.test/contoso.com/oauth2/token",
            "https://ingest.test",
            &tenant
        ));
    }

    async fn send(state: &AppState, request: Request<Body>) -> (StatusCode, HeaderMap, String) {
        let response = routes()
            .with_state(state.clone())
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path)
            .header("host", "127.0.0.1:8443")
            .body(Body::empty())
            .unwrap()
    }

    fn post(path: &str, pairs: &[(&str, &str)]) -> Request<Body> {
        Request::post(path)
            .header("host", "127.0.0.1:8443")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("client-request-id", "3cdd9297-f5f0-4420-bac6-32825cc29cc1")
            .body(Body::from(form(pairs)))
            .unwrap()
    }

    #[tokio::test]
    async fn discovery_documents_and_keys_over_the_router() {
        let (_dir, state) = test_state();
        let (status, _, body) = send(
            &state,
            get("/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration"),
        )
        .await;
        assert_eq!(status, 200);
        let doc: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            doc["token_endpoint"],
            format!("{BASE}/{TENANT}/oauth2/v2.0/token")
        );
        assert_eq!(
            doc["authorization_endpoint"],
            format!("{BASE}/{TENANT}/oauth2/v2.0/authorize")
        );
        assert_eq!(doc["issuer"], format!("{BASE}/{TENANT}/v2.0"));
        assert_eq!(
            doc["jwks_uri"],
            format!("{BASE}/{TENANT}/discovery/v2.0/keys")
        );
        assert_eq!(doc["tenant_region_scope"], "NA");
        let (_, _, body) = send(
            &state,
            get(&format!("/{TENANT}/.well-known/openid-configuration")),
        )
        .await;
        let v1: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v1["issuer"], format!("https://sts.windows.net/{TENANT}/"));
        assert_eq!(
            v1["token_endpoint"],
            format!("{BASE}/{TENANT}/oauth2/token")
        );

        let (status, _, body) = send(
            &state,
            get("/nosuch.onmicrosoft.com/v2.0/.well-known/openid-configuration"),
        )
        .await;
        assert_eq!(status, 400);
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error_codes"], json!([90002]));

        let (status, _, body) = send(&state, get(&format!("/{TENANT}/discovery/v2.0/keys"))).await;
        assert_eq!(status, 200);
        let jwks: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(jwks, state.keys.jwks());

        let (status, _, body) = send(&state, get("/common/discovery/instance?authorization_endpoint=https%3A%2F%2F127.0.0.1%2F11111111-1111-1111-1111-111111111111%2Foauth2%2Fv2.0%2Fauthorize&api-version=1.0")).await;
        assert_eq!(status, 200);
        let instance: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            instance["tenant_discovery_endpoint"],
            format!("{BASE}/{TENANT}/v2.0/.well-known/openid-configuration")
        );

        let (status, headers, _) = send(
            &state,
            get(&format!("/{TENANT}/oauth2/v2.0/authorize?client_id=x")),
        )
        .await;
        assert_eq!(status, 400);
        assert!(headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
    }

    #[tokio::test]
    async fn token_endpoint_over_the_router() {
        let (_dir, state) = test_state();
        let (status, headers, body) = send(
            &state,
            post(
                &format!("/{TENANT}/oauth2/v2.0/token"),
                &secret_form(
                    APP,
                    "dev-secret-value",
                    "https://outlook.office365.com/.default",
                ),
            ),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(headers[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("no-store"));
        let (status, headers, body) = send(
            &state,
            post(
                &format!("/{TENANT}/oauth2/v2.0/token"),
                &secret_form(APP, "wrong", "https://outlook.office365.com/.default"),
            ),
        )
        .await;
        assert_eq!(status, 401);
        assert!(headers[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("no-store"));
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            error["correlation_id"],
            "3cdd9297-f5f0-4420-bac6-32825cc29cc1"
        );
        assert!(error["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000215: "));

        // HTTP Basic client authentication, URL-encoded then base64.
        let basic = STANDARD.encode("22222222-2222-2222-2222-222222222222:dev-secret-value");
        let request = Request::post(format!("/{TENANT}/oauth2/token"))
            .header("host", "127.0.0.1:8443")
            .header("authorization", format!("Basic {basic}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(
                "grant_type=client_credentials&resource=https%3A%2F%2Foutlook.office365.com",
            ))
            .unwrap();
        let (status, _, body) = send(&state, request).await;
        assert_eq!(status, 200, "{body}");
    }

    #[tokio::test]
    async fn admin_consent_flow() {
        let (_dir, state) = test_state();
        let unconsented = "33333333-3333-3333-3333-333333333333";
        let exo = "https://outlook.office365.com/.default";
        assert_eq!(
            request(
                &state,
                TENANT,
                &secret_form(unconsented, "unconsented-secret", exo),
                Endpoint::V2
            )
            .unwrap_err()
            .code,
            700016
        );

        let (status, headers, html) = send(&state, get(&format!("/contoso.com/adminconsent?client_id={unconsented}&redirect_uri=https%3A%2F%2Fpartner.example%2Fdone&state=%3Cscript%3E"))).await;
        assert_eq!(status, 200);
        assert!(headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(html.contains("Fabrikam Chat Connector (not consented)"));
        assert!(html.contains("full_access_as_app"));
        assert!(html.contains("Use Exchange Web Services with full access to all mailboxes"));
        assert!(html.contains(unconsented));
        assert!(!html.contains("<script>"), "escaped");
        assert!(html.contains("&lt;script&gt;"));

        let consent = |key: &'static str, action: &'static str| {
            post(
                "/contoso.com/adminconsent",
                &[
                    ("client_id", unconsented),
                    ("redirect_uri", "https://partner.example/done"),
                    ("state", "xyz"),
                    ("admin_key", key),
                    ("action", action),
                ],
            )
        };
        let (status, _, html) = send(&state, consent("wrong-key", "accept")).await;
        assert_eq!(status, 401);
        assert!(html.contains("admin key is incorrect"));
        assert_eq!(
            request(
                &state,
                TENANT,
                &secret_form(unconsented, "unconsented-secret", exo),
                Endpoint::V2
            )
            .unwrap_err()
            .code,
            700016
        );

        let (status, headers, _) = send(&state, consent("", "cancel")).await;
        assert_eq!(status, 302);
        let location = headers[header::LOCATION].to_str().unwrap();
        assert!(
            location.starts_with(
                "https://partner.example/done?error=access_denied&error_description=AADSTS65004"
            ),
            "{location}"
        );
        assert!(
            location.contains("admin_consent=False") && location.ends_with("&state=xyz"),
            "{location}"
        );

        let (status, headers, _) = send(&state, consent(ADMIN_KEY, "accept")).await;
        assert_eq!(status, 302);
        let location = headers[header::LOCATION].to_str().unwrap();
        assert_eq!(
            location,
            format!("https://partner.example/done?admin_consent=True&tenant={TENANT}&state=xyz")
        );
        let body = request(
            &state,
            TENANT,
            &secret_form(unconsented, "unconsented-secret", exo),
            Endpoint::V2,
        )
        .unwrap();
        assert_eq!(
            claims_of(body["access_token"].as_str().unwrap())["roles"],
            json!(["full_access_as_app"])
        );

        // Re-enables a disabled service principal.
        let disabled = "44444444-4444-4444-4444-444444444444";
        let (status, _, _) = send(
            &state,
            post(
                &format!("/{TENANT}/adminconsent"),
                &[
                    ("client_id", disabled),
                    ("admin_key", ADMIN_KEY),
                    ("action", "accept"),
                ],
            ),
        )
        .await;
        assert_eq!(status, 200);
        request(
            &state,
            TENANT,
            &secret_form(disabled, "disabled-secret", exo),
            Endpoint::V2,
        )
        .unwrap();

        // Unknown app, unknown tenant, bad redirect URI: error pages.
        let (status, _, html) = send(
            &state,
            get(&format!(
                "/{TENANT}/adminconsent?client_id=99999999-9999-9999-9999-999999999999"
            )),
        )
        .await;
        assert_eq!(status, 400);
        assert!(html.contains("AADSTS700016"));
        let (status, _, _) = send(
            &state,
            get(&format!("/nosuch.example/adminconsent?client_id={APP}")),
        )
        .await;
        assert_eq!(status, 400);
        let (status, _, _) = send(
            &state,
            get(&format!(
                "/{TENANT}/adminconsent?client_id={APP}&redirect_uri=javascript%3Aalert(1)"
            )),
        )
        .await;
        assert_eq!(status, 400);
    }
}
