//! The admin consent page (`/{tenant}/adminconsent`): shows what an app asks for and, when the
//! administrator accepts with the admin key, creates (or re-enables) the app's service principal
//! in the tenant, then redirects as Entra does.
//!
//! CSRF: the POST must carry the admin key itself (no cookie or session), so a cross-site form
//! cannot consent on the admin's behalf. Cancel needs no key: it only redirects with an error.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use uuid::Uuid;

use super::bearer::REQUIRED_ROLE;
use super::errors::{html_error_page, html_escape, html_page, EntraError};
use super::issuer::resolve_tenant;
use crate::app::AppState;
use crate::domain::TenantId;
use crate::store::model::{AppRecord, ServicePrincipalRecord, TenantRecord};

/// Human descriptions of the app roles an ingestion connector may request.
fn role_description(role: &str) -> &str {
    match role {
        REQUIRED_ROLE => "Use Exchange Web Services with full access to all mailboxes",
        "Mail.ReadWrite" => "Read and write mail in all mailboxes",
        "Mail.Read" => "Read mail in all mailboxes",
        _ => role,
    }
}

fn params(raw: Option<&str>) -> HashMap<String, String> {
    let pairs: Vec<(String, String)> = raw
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let mut out = HashMap::new();
    for (k, v) in pairs {
        out.entry(k).or_insert(v);
    }
    out
}

/// The tenant of the page; `common`/`organizations` mean the only tenant when there is one.
fn consent_tenant(state: &AppState, name: &str) -> Result<TenantRecord, EntraError> {
    if ["common", "organizations"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(name))
    {
        let tenants = state.store.tenants().unwrap_or_default();
        return match <[TenantRecord; 1]>::try_from(tenants) {
            Ok([only]) => Ok(only),
            Err(_) => Err(EntraError::invalid_request(
                90002,
                format!(
                    "Tenant '{name}' cannot be used here: the emulator holds several tenants. Use \
                     /{{tenant id or domain}}/adminconsent."
                ),
            )),
        };
    }
    resolve_tenant(state, name)?.ok_or_else(|| EntraError::unknown_tenant(name))
}

/// A redirect URI must be an absolute http(s) URL without a fragment.
pub fn valid_redirect(uri: &str) -> bool {
    match uri.parse::<Uri>() {
        Ok(parsed) => {
            matches!(parsed.scheme_str(), Some("https") | Some("http"))
                && parsed.authority().is_some()
                && !uri.contains('#')
                && !uri.chars().any(|c| c.is_control() || c.is_whitespace())
        }
        Err(_) => false,
    }
}

/// Whether `requested` is one of `app`'s redirect URIs: the same string, except that for an
/// `http` loopback address (`localhost`, `127.0.0.1`, `[::1]`) the port is not compared, as
/// Entra does (a native client listens on whatever port is free).
fn registered_redirect(app: &AppRecord, requested: &str) -> bool {
    let loopback = |uri: &str| -> Option<(String, String)> {
        let parsed: Uri = uri.parse().ok()?;
        let host = parsed.host()?.to_ascii_lowercase();
        (parsed.scheme_str() == Some("http")
            && ["localhost", "127.0.0.1", "[::1]"].contains(&host.as_str()))
        .then(|| {
            let rest = parsed
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            (host, rest)
        })
    };
    app.redirect_uris.iter().any(|registered| {
        registered == requested
            || matches!((loopback(registered), loopback(requested)), (Some(a), Some(b)) if a == b)
    })
}

struct Request {
    tenant: TenantRecord,
    app: AppRecord,
    redirect_uri: Option<String>,
    state: Option<String>,
}

fn load_request(
    state: &AppState,
    tenant: &str,
    params: &HashMap<String, String>,
) -> Result<Request, EntraError> {
    let tenant = consent_tenant(state, tenant)?;
    let client_id = params
        .get("client_id")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| EntraError::missing_parameter("client_id"))?;
    let app = Uuid::parse_str(client_id)
        .ok()
        .and_then(|id| state.store.app(id).ok().flatten())
        .ok_or_else(|| {
            EntraError::new(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                format!(
                    "Application with identifier '{client_id}' was not found in the directory \
                     '{}'. This can happen if the application has not been installed by the \
                     administrator of the tenant or consented to by any user in the tenant. You \
                     may have sent your authentication request to the wrong tenant.",
                    tenant.display_name
                ),
            )
        })?;
    let redirect_uri = params
        .get("redirect_uri")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    if let Some(uri) = &redirect_uri {
        if !registered_redirect(&app, uri) {
            return Err(EntraError::invalid_request(
                50011,
                format!(
                    "The redirect URI '{uri}' specified in the request does not match the \
                     redirect URIs configured for the application '{}'. Make sure the redirect \
                     URI sent in the request matches one added to your application in the \
                     emulator's admin API (redirectUris of the application).",
                    app.app_id
                ),
            ));
        }
    }
    Ok(Request {
        tenant,
        app,
        redirect_uri,
        state: params.get("state").cloned(),
    })
}

fn render(
    state: &AppState,
    request: &Request,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let app = &request.app;
    let publisher = state
        .store
        .tenant(TenantId(app.home_tenant))
        .ok()
        .flatten()
        .map(|t| format!("{} ({})", t.display_name, t.id))
        .unwrap_or_else(|| app.home_tenant.to_string());
    let permissions: String = if app.required_roles.is_empty() {
        "<li>No application permissions</li>".to_string()
    } else {
        app.required_roles
            .iter()
            .map(|role| {
                format!(
                    "<li><strong>{}</strong><br><span class=\"muted\">Office 365 Exchange Online \
                     &middot; <code>{}</code> &middot; Application permission</span></li>",
                    html_escape(role_description(role)),
                    html_escape(role)
                )
            })
            .collect()
    };
    let hidden = |name: &str, value: Option<&str>| match value {
        Some(v) => format!(
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
            html_escape(v)
        ),
        None => String::new(),
    };
    let error_html = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>\n", html_escape(e)))
        .unwrap_or_default();
    let body = format!(
        "<p class=\"muted\">{tenant_name}</p>\n\
         <h1>Permissions requested</h1>\n\
         <p><strong>{app_name}</strong></p>\n\
         <dl>\n<dt class=\"muted\">Application (client) ID</dt><dd><code>{app_id}</code></dd>\n\
         <dt class=\"muted\">Publisher tenant</dt><dd>{publisher}</dd>\n</dl>\n\
         <p>This app would like to:</p>\n<ul class=\"perms\">\n{permissions}</ul>\n\
         <p class=\"muted\">Accepting grants these permissions for the whole organization \
         {tenant_name} ({tenant_id}).</p>\n\
         {error_html}\
         <form method=\"post\" action=\"/{tenant_id}/adminconsent\">\n\
         {client_id}{redirect}{state_field}\
         <label for=\"admin_key\">Administrator sign-in: admin key</label>\n\
         <input type=\"password\" id=\"admin_key\" name=\"admin_key\" autocomplete=\"off\">\n\
         <div class=\"buttons\">\n\
         <button type=\"submit\" name=\"action\" value=\"cancel\">Cancel</button>\n\
         <button type=\"submit\" name=\"action\" value=\"accept\" class=\"primary\">Accept</button>\n\
         </div>\n</form>",
        tenant_name = html_escape(&request.tenant.display_name),
        tenant_id = request.tenant.id,
        app_name = html_escape(&app.display_name),
        app_id = app.app_id,
        publisher = html_escape(&publisher),
        client_id = hidden("client_id", Some(&app.app_id.to_string())),
        redirect = hidden("redirect_uri", request.redirect_uri.as_deref()),
        state_field = hidden("state", request.state.as_deref()),
    );
    html_page(status, "Permissions requested", &body)
}

/// `GET /{tenant}/adminconsent?client_id=..&redirect_uri=..&state=..`
pub async fn show(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = params(query.as_deref());
    match load_request(&state, &tenant, &params) {
        Ok(request) => render(&state, &request, None, StatusCode::OK),
        Err(error) => html_error_page(&error),
    }
}

fn redirect(redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let (base, fragment) = match redirect_uri.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (redirect_uri, None),
    };
    let query = serde_urlencoded::to_string(params).unwrap_or_default();
    let separator = if base.contains('?') {
        if base.ends_with('?') || base.ends_with('&') {
            ""
        } else {
            "&"
        }
    } else {
        "?"
    };
    let mut location = format!("{base}{separator}{query}");
    if let Some(fragment) = fragment {
        location.push('#');
        location.push_str(fragment);
    }
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `POST /{tenant}/adminconsent` (form: client_id, redirect_uri, state, admin_key,
/// action=accept|cancel).
pub async fn submit(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    let form = params(std::str::from_utf8(&body).ok());
    let request = match load_request(&state, &tenant, &form) {
        Ok(request) => request,
        Err(error) => return html_error_page(&error),
    };
    let tid = request.tenant.id.to_string();
    let action = form.get("action").map(String::as_str).unwrap_or("accept");
    let mut outcome: Vec<(&str, &str)> = Vec::new();

    if action.eq_ignore_ascii_case("cancel") {
        outcome.extend([
            ("error", "access_denied"),
            (
                "error_description",
                "AADSTS65004: User declined to consent to access the app.",
            ),
            ("admin_consent", "False"),
            ("tenant", tid.as_str()),
        ]);
        if let Some(s) = request.state.as_deref() {
            outcome.push(("state", s));
        }
        return match &request.redirect_uri {
            Some(uri) => redirect(uri, &outcome),
            None => html_page(
                StatusCode::OK,
                "Consent declined",
                "<h1>Consent declined</h1>\n<p>No permission was granted.</p>",
            ),
        };
    }

    let key = form.get("admin_key").map(String::as_str).unwrap_or("");
    if key.is_empty() || !state.admin_key.matches(key) {
        return render(
            &state,
            &request,
            Some("The admin key is incorrect. Enter the emulator's admin key to sign in as the tenant administrator."),
            StatusCode::UNAUTHORIZED,
        );
    }

    if let Err(e) = grant(&state, &request).await {
        tracing::error!("admin consent failed: {e}");
        return html_error_page(&EntraError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
        ));
    }
    tracing::info!(
        tenant = %request.tenant.id,
        app = %request.app.app_id,
        "admin consent granted"
    );
    outcome.extend([("admin_consent", "True"), ("tenant", tid.as_str())]);
    if let Some(s) = request.state.as_deref() {
        outcome.push(("state", s));
    }
    match &request.redirect_uri {
        Some(uri) => redirect(uri, &outcome),
        None => html_page(
            StatusCode::OK,
            "Permissions granted",
            &format!(
                "<h1>Permissions granted</h1>\n<p><strong>{}</strong> can now use its permissions \
                 in {}.</p>",
                html_escape(&request.app.display_name),
                html_escape(&request.tenant.display_name)
            ),
        ),
    }
}

/// Creates the service principal (roles = the app's required roles), or re-enables it and adds
/// missing roles.
async fn grant(state: &AppState, request: &Request) -> Result<(), crate::store::StoreError> {
    let tenant = TenantId(request.tenant.id);
    // Like every admin change: not interleaved with a concurrent change or deletion of the
    // app or its service principal.
    let guard = crate::admin::write_lock().await;
    if state.store.app(request.app.app_id)?.is_none() {
        return Err(crate::store::StoreError::NotFound(format!(
            "application {} (deleted meanwhile)",
            request.app.app_id
        )));
    }
    if !state.store.has_tenant(tenant)? {
        return Err(crate::store::StoreError::NotFound(format!(
            "tenant {} (deleted meanwhile)",
            request.tenant.id
        )));
    }
    let sp = match state.store.service_principal(tenant, request.app.app_id)? {
        Some(sp) => {
            let mut sp = Arc::unwrap_or_clone(sp);
            sp.account_enabled = true;
            for role in &request.app.required_roles {
                if !sp.app_roles.contains(role) {
                    sp.app_roles.push(role.clone());
                }
            }
            sp
        }
        None => ServicePrincipalRecord {
            app_id: request.app.app_id,
            tenant: request.tenant.id,
            id: Uuid::new_v4(),
            account_enabled: true,
            app_roles: request.app.required_roles.clone(),
            created: Utc::now(),
        },
    };
    state.store.put_service_principal(&sp)?;
    drop(guard);
    state.store.durable().await
}
