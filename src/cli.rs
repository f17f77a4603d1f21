//! The command-line client of a running server: `apps` (register, consent, revoke, list
//! connector apps through the admin API), `token` (an access token from the token endpoint)
//! and `health` (the server's `/healthz`, for container health checks). Blocking HTTP; call
//! these outside any async runtime.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::Method;
use serde_json::{json, Value};

/// Where the server's development CA is, when run from the project directory.
const DEFAULT_CA: &str = "certs/ca.pem";
/// Where the server keeps a generated admin key (default data directory).
const DEFAULT_ADMIN_KEY_FILE: &str = "data/admin.key";
/// System CA bundles tried when no CA is given and `certs/ca.pem` does not exist.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/usr/local/etc/openssl/cert.pem",
];

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot read CA certificate {0}: {1}")]
    CaRead(PathBuf, std::io::Error),
    #[error("invalid CA certificate {0}: {1}")]
    CaInvalid(PathBuf, String),
    #[error("invalid --url '{0}': expected http://host:port or https://host:port")]
    Url(String),
    #[error(
        "no admin key: pass --admin-key or set INGEST_ADMIN_KEY (the server keeps a generated \
         one in <data>/admin.key; its start-up banner says where)"
    )]
    NoAdminKey,
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("cannot reach {url}: {message}")]
    Connect { url: String, message: String },
    /// The admin API refused the request (its Graph-style error).
    #[error("{message} ({status} {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The token endpoint refused the request: its `error_description`.
    #[error("{0}")]
    Token(String),
    #[error("unexpected answer from {url}: {message}")]
    Protocol { url: String, message: String },
}

/// How to reach the server.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Base URL of the running server.
    #[arg(
        long,
        env = "INGEST_URL",
        default_value = "https://127.0.0.1:8443",
        global = true
    )]
    pub url: String,
    /// Tenant: its GUID or any of its domains.
    #[arg(
        long,
        env = "INGEST_TENANT",
        default_value = "contoso.onmicrosoft.com",
        global = true
    )]
    pub tenant: String,
    /// PEM CA certificate to trust (default: certs/ca.pem if it exists, else system roots).
    #[arg(long, env = "INGEST_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,
}

/// `apps`: connector app registrations and consents, through the admin API.
#[derive(Debug, clap::Args)]
pub struct AppsArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// Admin API key (default: data/admin.key if it exists).
    #[arg(long, env = "INGEST_ADMIN_KEY", hide_env_values = true, global = true)]
    pub admin_key: Option<String>,
    #[command(subcommand)]
    pub command: AppsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AppsCommand {
    /// Register an app in the tenant; prints its appId and client secret (shown once).
    Register {
        /// Display name of the app.
        #[arg(long)]
        name: String,
        /// App role it requires (repeatable; default full_access_as_app).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Also consent to it in the tenant right away.
        #[arg(long)]
        consent: bool,
    },
    /// Consent to an app in the tenant (creates its service principal).
    Consent {
        /// Application (client) id.
        app_id: String,
    },
    /// Revoke the tenant's consent to an app (deletes its service principal).
    Revoke {
        /// Application (client) id.
        app_id: String,
    },
    /// List the tenant's apps with their consent state.
    List,
}

/// `token`: an app-only access token by client credentials.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// Application (client) id.
    #[arg(long, env = "INGEST_CLIENT_ID")]
    pub client_id: String,
    /// Client secret. Secrets may begin with `-` (their alphabet has `-`, `~`, `.`, `_`).
    #[arg(
        long,
        env = "INGEST_CLIENT_SECRET",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub client_secret: String,
    /// Scope requested.
    #[arg(long, default_value = "https://outlook.office365.com/.default")]
    pub scope: String,
}

/// `health`: asks a running server's `/healthz` (exit 0 when it answers `ok`).
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub connection: Connection,
}

/// Asks `/healthz`: Ok when the server answers 200, else why not (a 503 names the reason). On
/// a loopback address (a container's own health check) the certificate is not checked: the
/// server may serve one made for its public name.
pub fn health(args: HealthArgs) -> Result<(), CliError> {
    let base = base_url(&args.connection.url)?;
    let url = format!("{base}/healthz");
    let loopback = reqwest::Url::parse(&base)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .is_some_and(|host| {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
    let client = if loopback {
        Client::builder()
            .timeout(Duration::from_secs(10))
            .danger_accept_invalid_certs(true)
            .build()
            .map_err(|e| CliError::Client(error_chain(&e)))?
    } else {
        http_client(&base, args.connection.ca_cert.as_deref())?
    };
    let response = client
        .get(&url)
        .send()
        .map_err(|e| connect_error(&url, e))?;
    let status = response.status();
    let text = response.text().unwrap_or_default();
    if status.is_success() {
        println!("{}", text.trim());
        Ok(())
    } else {
        Err(CliError::Protocol {
            url,
            message: format!("{status}: {}", text.trim()),
        })
    }
}

pub fn apps(args: AppsArgs) -> Result<(), CliError> {
    let admin_key = match args.admin_key.filter(|k| !k.trim().is_empty()) {
        Some(key) => key,
        None => std::fs::read_to_string(DEFAULT_ADMIN_KEY_FILE)
            .ok()
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .ok_or(CliError::NoAdminKey)?,
    };
    let api = AdminApi::new(&args.connection, admin_key)?;
    let tenant = segment(&args.connection.tenant);
    match args.command {
        AppsCommand::Register {
            name,
            roles,
            consent,
        } => {
            let mut body = json!({ "displayName": name });
            if !roles.is_empty() {
                body["requiredRoles"] = json!(roles);
            }
            let app = api.call(
                Method::POST,
                &format!("/api/tenants/{tenant}/applications"),
                Some(body),
            )?;
            let app_id = text(&app, "appId");
            println!("appId:        {app_id}");
            println!("clientSecret: {}", text(&app, "clientSecret"));
            if let Some(end) = app["passwordCredentials"][0]["endDateTime"].as_str() {
                println!("expires:      {end}");
            }
            if consent {
                api.call(
                    Method::POST,
                    &format!("/api/tenants/{tenant}/servicePrincipals"),
                    Some(json!({ "appId": app_id })),
                )?;
                println!("consented:    yes");
            } else {
                println!("consented:    no (run `apps consent {app_id}`)");
            }
            eprintln!("The client secret is shown only once: keep it now.");
        }
        AppsCommand::Consent { app_id } => {
            let sp = api.call(
                Method::POST,
                &format!("/api/tenants/{tenant}/servicePrincipals"),
                Some(json!({ "appId": app_id.trim() })),
            )?;
            println!(
                "consented to {} ({}) in {}: service principal {}",
                text(&sp, "appId"),
                text(&sp, "appDisplayName"),
                args.connection.tenant,
                text(&sp, "id")
            );
        }
        AppsCommand::Revoke { app_id } => {
            api.call(
                Method::DELETE,
                &format!(
                    "/api/tenants/{tenant}/servicePrincipals/{}",
                    segment(app_id.trim())
                ),
                None,
            )?;
            println!(
                "revoked consent to {} in {}",
                app_id.trim(),
                args.connection.tenant
            );
        }
        AppsCommand::List => {
            let apps = api.call(
                Method::GET,
                &format!("/api/tenants/{tenant}/applications"),
                None,
            )?;
            let sps = api.call(
                Method::GET,
                &format!("/api/tenants/{tenant}/servicePrincipals"),
                None,
            )?;
            print!("{}", apps_table(&apps, &sps));
        }
    }
    Ok(())
}

pub fn token(args: TokenArgs) -> Result<(), CliError> {
    let base = base_url(&args.connection.url)?;
    let client = http_client(&base, args.connection.ca_cert.as_deref())?;
    let url = format!(
        "{base}/{}/oauth2/v2.0/token",
        segment(&args.connection.tenant)
    );
    let response = client
        .post(&url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", args.client_id.trim()),
            ("client_secret", args.client_secret.as_str()),
            ("scope", args.scope.trim()),
        ])
        .send()
        .map_err(|e| connect_error(&url, e))?;
    let status = response.status();
    let body = read_json(&url, response)?;
    if !status.is_success() {
        let description = body["error_description"]
            .as_str()
            .or(body["error"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| format!("the token endpoint answered {status}"));
        return Err(CliError::Token(description));
    }
    match body["access_token"].as_str() {
        Some(token) => {
            println!("{token}");
            Ok(())
        }
        None => Err(CliError::Protocol {
            url,
            message: "no access_token in the answer".into(),
        }),
    }
}

// ----- plumbing -----

struct AdminApi {
    client: Client,
    base: String,
    key: String,
}

impl AdminApi {
    fn new(connection: &Connection, key: String) -> Result<AdminApi, CliError> {
        let base = base_url(&connection.url)?;
        let client = http_client(&base, connection.ca_cert.as_deref())?;
        Ok(AdminApi { client, base, key })
    }

    /// Calls the admin API; a Graph-style error becomes [`CliError::Api`].
    fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        let mut request: RequestBuilder = self
            .client
            .request(method, &url)
            .bearer_auth(&self.key)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().map_err(|e| connect_error(&url, e))?;
        let status = response.status();
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let body = read_json(&url, response)?;
        if status.is_success() {
            return Ok(body);
        }
        let error = &body["error"];
        Err(CliError::Api {
            status: status.as_u16(),
            code: error["code"].as_str().unwrap_or("Unknown").to_string(),
            message: error["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("the server answered {status}")),
        })
    }
}

fn base_url(url: &str) -> Result<String, CliError> {
    let base = url.trim().trim_end_matches('/').to_string();
    let ok = ["http://", "https://"].iter().any(|scheme| {
        base.len() > scheme.len()
            && base
                .get(..scheme.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
    });
    if ok {
        Ok(base)
    } else {
        Err(CliError::Url(url.to_string()))
    }
}

/// An HTTP client trusting `ca_cert`, else `certs/ca.pem` when it exists, else the system's
/// CA bundle.
fn http_client(base: &str, ca_cert: Option<&Path>) -> Result<Client, CliError> {
    let mut builder = Client::builder()
        .timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("ingest-emulator-cli/", env!("CARGO_PKG_VERSION")))
        .tls_built_in_root_certs(false);
    if base.to_ascii_lowercase().starts_with("https://") {
        let default = Path::new(DEFAULT_CA);
        let roots: Vec<reqwest::Certificate> = match ca_cert {
            Some(path) => read_bundle(path, true)?,
            None if default.exists() => read_bundle(default, true)?,
            None => system_roots(),
        };
        for root in roots {
            builder = builder.add_root_certificate(root);
        }
    }
    builder
        .build()
        .map_err(|e| CliError::Client(error_chain(&e)))
}

fn read_bundle(path: &Path, strict: bool) -> Result<Vec<reqwest::Certificate>, CliError> {
    let pem = std::fs::read(path).map_err(|e| CliError::CaRead(path.to_path_buf(), e))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| CliError::CaInvalid(path.to_path_buf(), error_chain(&e)))?;
    if strict && certs.is_empty() {
        return Err(CliError::CaInvalid(
            path.to_path_buf(),
            "no CERTIFICATE block".into(),
        ));
    }
    Ok(certs)
}

fn system_roots() -> Vec<reqwest::Certificate> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    from_env
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
        .find_map(|path| read_bundle(&path, true).ok())
        .unwrap_or_default()
}

fn read_json(url: &str, response: Response) -> Result<Value, CliError> {
    let status = response.status();
    let text = response.text().map_err(|e| connect_error(url, e))?;
    serde_json::from_str(&text).map_err(|_| CliError::Protocol {
        url: url.to_string(),
        message: format!(
            "{status}, not JSON: {}",
            text.chars().take(200).collect::<String>()
        ),
    })
}

fn connect_error(url: &str, e: reqwest::Error) -> CliError {
    CliError::Connect {
        url: url.to_string(),
        message: error_chain(&e),
    }
}

/// An error and its causes, `: `-separated (reqwest's own message hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Percent-encodes a path segment (tenant names and ids are plain, but be safe).
fn segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn text(value: &Value, field: &str) -> String {
    match &value[field] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The `apps list` table: the tenant's own apps, then apps of other tenants consented here.
fn apps_table(apps: &Value, sps: &Value) -> String {
    let empty = Vec::new();
    let apps = apps["value"].as_array().unwrap_or(&empty);
    let sps = sps["value"].as_array().unwrap_or(&empty);
    let mut rows: Vec<[String; 5]> = vec![[
        "APP ID".into(),
        "CONSENT".into(),
        "ROLES".into(),
        "CREDENTIALS".into(),
        "DISPLAY NAME".into(),
    ]];
    let consent = |sp: &Value| -> String {
        if sp.is_null() {
            "not consented".into()
        } else if sp["accountEnabled"].as_bool() == Some(false) {
            "disabled".into()
        } else {
            "consented".into()
        }
    };
    let list = |v: &Value| -> String {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    for app in apps {
        let secrets = app["passwordCredentials"].as_array().map_or(0, Vec::len);
        let certs = app["keyCredentials"].as_array().map_or(0, Vec::len);
        rows.push([
            text(app, "appId"),
            consent(&app["servicePrincipal"]),
            list(&app["requiredRoles"]),
            format!("{secrets} secret(s), {certs} cert(s)"),
            text(app, "displayName"),
        ]);
    }
    for sp in sps {
        let app_id = text(sp, "appId");
        if apps.iter().any(|a| text(a, "appId") == app_id) {
            continue;
        }
        rows.push([
            app_id,
            consent(sp),
            list(&sp["appRoles"]),
            "(other tenant)".into(),
            text(sp, "appDisplayName"),
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (n, (cell, width)) in row.iter().zip(widths).enumerate() {
            if n + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A generated secret begins with `-` about once in 66: it is the value, not an option.
    #[test]
    fn a_secret_may_begin_with_a_hyphen() {
        #[derive(clap::Parser)]
        struct Token {
            #[command(flatten)]
            args: TokenArgs,
        }
        for secret in ["-x~abc", "--x~vCkPROYoo6_oS5zbQ6JS0ExPyGnIn.iUsIO4"] {
            let parsed = <Token as clap::Parser>::try_parse_from([
                "token",
                "--client-id",
                "22222222-2222-2222-2222-222222222222",
                "--client-secret",
                secret,
                "--tenant",
                "contoso.com",
            ])
            .unwrap_or_else(|e| panic!("{secret}: {e}"));
            assert_eq!(parsed.args.client_secret, secret);
        }
    }

    #[test]
    fn urls_and_segments() {
        assert_eq!(
            base_url("https://127.0.0.1:8443/").unwrap(),
            "https://127.0.0.1:8443"
        );
        assert!(base_url("127.0.0.1:8443").is_err());
        assert_eq!(
            segment("contoso.onmicrosoft.com"),
            "contoso.onmicrosoft.com"
        );
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn table_shows_consent_state() {
        let apps = json!({"value": [
            {"appId": "a1", "displayName": "One", "requiredRoles": ["full_access_as_app"],
             "passwordCredentials": [{}], "keyCredentials": [],
             "servicePrincipal": {"accountEnabled": true}},
            {"appId": "a2", "displayName": "Two", "requiredRoles": [],
             "passwordCredentials": [], "keyCredentials": [], "servicePrincipal": null},
        ]});
        let sps = json!({"value": [
            {"appId": "a1", "accountEnabled": true, "appRoles": []},
            {"appId": "x9", "appDisplayName": "Foreign", "accountEnabled": false,
             "appRoles": ["full_access_as_app"]},
        ]});
        let table = apps_table(&apps, &sps);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("APP ID"));
        assert!(lines[1].contains("consented") && lines[1].contains("One"));
        assert!(lines[2].contains("not consented"));
        assert!(lines[3].contains("disabled") && lines[3].contains("other tenant"));
    }
}
