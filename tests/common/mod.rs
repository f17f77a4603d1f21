//! Test harness: starts the real `ingest-emulator` binary on an ephemeral port and store, and
//! talks to it over real sockets (HTTPS with the server's own development CA).
#![allow(dead_code)]

pub mod forge;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TENANT: &str = "11111111-1111-1111-1111-111111111111";
pub const TENANT_DOMAIN: &str = "contoso.onmicrosoft.com";
pub const APP_ID: &str = "22222222-2222-2222-2222-222222222222";
pub const APP_SECRET: &str = "dev-secret-value";
pub const EXCHANGE_SCOPE: &str = "https://outlook.office365.com/.default";
pub const SERVICE_PATH: &str = "/service/ThirdPartyIngestionService.svc";

/// A running server, killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub url: String,
    pub ca_cert: Option<PathBuf>,
    pub admin_key: String,
    pub args: Vec<String>,
    client: reqwest::blocking::Client,
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_ingest-emulator")
}

impl Server {
    /// An ephemeral server (throw-away store, port 0) with extra `serve` arguments.
    pub fn start(extra: &[&str]) -> Server {
        let mut args: Vec<String> = ["serve", "--ephemeral", "--listen", "127.0.0.1:0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        Server::spawn(args)
    }

    /// A server on a persistent store in `dir` (for restart tests).
    pub fn start_in(dir: &Path, extra: &[&str]) -> Server {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data".into(),
            dir.join("data").display().to_string(),
            "--certs".into(),
            dir.join("certs").display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Server::spawn(args)
    }

    fn spawn(mut args: Vec<String>) -> Server {
        let admin_key = format!("test-admin-key-{}", std::process::id());
        if !args.iter().any(|a| a == "--admin-key") {
            args.push("--admin-key".into());
            args.push(admin_key.clone());
        }
        let stderr = if std::env::var_os("INGEST_TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let mut child = Command::new(binary())
            .args(&args)
            .env_remove("INGEST_ADMIN_KEY")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start ingest-emulator");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (mut url, mut ca_cert) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let Some(Ok(line)) = lines.next() else {
                panic!("server exited before it was ready (args {args:?})");
            };
            if let Some(rest) = line.trim().strip_prefix("Base URL:") {
                url = Some(rest.trim().to_string());
            } else if let Some(rest) = line.trim().strip_prefix("CA certificate:") {
                let path = PathBuf::from(rest.trim());
                ca_cert = path.exists().then_some(path);
            } else if line.trim().starts_with("Store:") {
                break;
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let url = url.expect("server printed its base URL");
        let client = client_for(ca_cert.as_deref());
        let server = Server {
            child: Some(child),
            url,
            ca_cert,
            admin_key,
            args,
            client,
        };
        let health = server.get("/healthz").send().expect("healthz");
        assert_eq!(health.status(), 200);
        server
    }

    pub fn client(&self) -> &reqwest::blocking::Client {
        &self.client
    }

    pub fn get(&self, path: &str) -> reqwest::blocking::RequestBuilder {
        self.client.get(format!("{}{}", self.url, path))
    }

    pub fn post(&self, path: &str) -> reqwest::blocking::RequestBuilder {
        self.client.post(format!("{}{}", self.url, path))
    }

    /// An admin API request with the admin key.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        self.client
            .request(method, format!("{}{}", self.url, path))
            .bearer_auth(&self.admin_key)
    }

    /// The bytes of attachment `n` of item `id` (of the test tenant), through the admin API.
    pub fn attachment(&self, id: &str, n: usize) -> Vec<u8> {
        let response = self
            .admin(
                reqwest::Method::GET,
                &format!("/api/tenants/{TENANT}/items/{id}/attachments/{n}"),
            )
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "attachment {n} of item {id}");
        response.bytes().unwrap().to_vec()
    }

    /// A token for the well-known test app.
    pub fn token(&self) -> String {
        self.token_for(APP_ID, APP_SECRET)
    }

    pub fn token_for(&self, client_id: &str, secret: &str) -> String {
        let response = self
            .post(&format!("/{TENANT}/oauth2/v2.0/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret),
                ("scope", EXCHANGE_SCOPE),
            ])
            .send()
            .expect("token request");
        let status = response.status();
        let body: serde_json::Value = response.json().expect("token JSON");
        assert_eq!(status, 200, "token request failed: {body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    /// POSTs a SOAP envelope to the ingestion endpoint with a bearer token.
    pub fn ews(&self, token: &str, envelope: &str) -> EwsReply {
        let response = self
            .post(SERVICE_PATH)
            .bearer_auth(token)
            .header("Content-Type", "text/xml; charset=utf-8")
            .body(envelope.to_string())
            .send()
            .expect("EWS request");
        EwsReply::from(response)
    }

    /// The ingestion record of a correlation id, from the admin API.
    pub fn ingestion(&self, correlation_id: &str) -> serde_json::Value {
        let response = self
            .admin(
                reqwest::Method::GET,
                &format!("/api/tenants/{TENANT}/ingestions/{correlation_id}"),
            )
            .send()
            .expect("ingestion record");
        assert_eq!(
            response.status(),
            200,
            "no ingestion record for {correlation_id}"
        );
        response.json().expect("JSON")
    }

    /// Adds a fault rule (`POST /api/faults`); its id.
    pub fn add_fault(&self, rule: serde_json::Value) -> String {
        let response = self
            .admin(reqwest::Method::POST, "/api/faults")
            .json(&rule)
            .send()
            .expect("fault rule");
        assert_eq!(response.status(), 201);
        let body: serde_json::Value = response.json().expect("JSON");
        body["id"].as_str().expect("id").to_string()
    }

    /// The newest `top` entries of the test tenant's ingestion journal, newest first.
    pub fn journal(&self, top: usize) -> Vec<serde_json::Value> {
        let response = self
            .admin(
                reqwest::Method::GET,
                &format!("/api/tenants/{TENANT}/ingestions?top={top}"),
            )
            .send()
            .expect("journal");
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().expect("JSON");
        body["value"].as_array().expect("journal entries").clone()
    }

    /// Kills the server with SIGKILL (no chance to flush).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running server");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().expect("wait for server")
    }
}

impl Drop for Server {
    /// SIGTERM first, so an `--ephemeral` server removes its throw-away store (a SIGKILL would
    /// leave it in the temp directory); SIGKILL if it has not exited within 5 s.
    fn drop(&mut self) {
        if self.child.is_some() {
            self.send_sigterm();
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                self.kill();
            }
        }
    }
}

/// A blocking HTTPS client that trusts only the server's CA (or plain HTTP).
pub fn client_for(ca_cert: Option<&Path>) -> reqwest::blocking::Client {
    let mut builder = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .tls_built_in_root_certs(false);
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path).expect("read CA");
        builder =
            builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"));
    }
    builder.build().expect("HTTP client")
}

/// An answer of the ingestion endpoint.
pub struct EwsReply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl From<reqwest::blocking::Response> for EwsReply {
    fn from(response: reqwest::blocking::Response) -> EwsReply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().unwrap_or_default();
        EwsReply {
            status,
            headers,
            body,
        }
    }
}

impl EwsReply {
    /// Asserts a refusal: `status`, and a body that says `text`.
    pub fn assert_refused(&self, status: u16, text: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert!(self.body.contains(text), "{text:?} not in {}", self.body);
    }

    pub fn correlation_id(&self) -> Option<String> {
        self.headers
            .get("x-ingestioncorrelationid")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// `(ResponseClass, ResponseCode, ItemId or MessageText)` per response message, in order.
    pub fn messages(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for part in self.body.split("ResponseMessage ResponseClass=\"").skip(1) {
            let class = part.split('"').next().unwrap_or_default().to_string();
            let code = between(part, "ResponseCode>", "<").unwrap_or_default();
            let detail = if class == "Success" {
                between(part, "ItemId Id=\"", "\"").unwrap_or_default()
            } else {
                between(part, "MessageText>", "<").unwrap_or_default()
            };
            out.push((class, code, detail));
        }
        out
    }

    pub fn item_ids(&self) -> Vec<String> {
        self.messages()
            .into_iter()
            .filter(|(class, _, _)| class == "Success")
            .map(|(_, _, id)| id)
            .collect()
    }
}

pub fn between(text: &str, start: &str, end: &str) -> Option<String> {
    let from = text.find(start)? + start.len();
    let to = text[from..].find(end)? + from;
    Some(text[from..to].to_string())
}

/// Builds a CreateItem envelope around `messages` (each a `<t:Message>...</t:Message>`).
pub fn create_item(messages: &[String]) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types" xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages">
  <soap:Header><t:RequestServerVersion Version="Exchange2013_SP1"/></soap:Header>
  <soap:Body>
    <m:CreateItem MessageDisposition="SaveOnly">
      <m:Items>{}</m:Items>
    </m:CreateItem>
  </soap:Body>
</soap:Envelope>"#,
        messages.concat()
    )
}

/// A structured message. `None` leaves a property out.
#[derive(Clone)]
pub struct Msg {
    pub class: Option<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub from: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub sent: Option<String>,
    pub attachments: Vec<(String, Vec<u8>)>,
}

impl Default for Msg {
    fn default() -> Msg {
        Msg {
            class: Some("IPM.NOTE.Twitter.Tweet".into()),
            subject: Some("Tweet from @contoso".into()),
            body: Some("hello world".into()),
            from: Some("contoso@twitter.example".into()),
            to: vec!["alice@contoso.com".into()],
            cc: vec![],
            bcc: vec![],
            sent: Some("2024-03-01T12:00:00Z".into()),
            attachments: vec![],
        }
    }
}

fn mailboxes(addresses: &[String]) -> String {
    addresses
        .iter()
        .map(|a| format!("<t:Mailbox><t:EmailAddress>{a}</t:EmailAddress></t:Mailbox>"))
        .collect()
}

impl Msg {
    pub fn xml(&self) -> String {
        use base64::Engine;
        let mut x = String::from("<t:Message>");
        if let Some(class) = &self.class {
            x += &format!("<t:ItemClass>{class}</t:ItemClass>");
        }
        if let Some(subject) = &self.subject {
            x += &format!("<t:Subject>{subject}</t:Subject>");
        }
        if let Some(body) = &self.body {
            x += &format!("<t:Body BodyType=\"Text\">{body}</t:Body>");
        }
        if !self.attachments.is_empty() {
            x += "<t:Attachments>";
            for (name, bytes) in &self.attachments {
                x += &format!(
                    "<t:FileAttachment><t:Name>{name}</t:Name><t:Content>{}</t:Content></t:FileAttachment>",
                    base64::engine::general_purpose::STANDARD.encode(bytes)
                );
            }
            x += "</t:Attachments>";
        }
        if let Some(sent) = &self.sent {
            x += &format!("<t:DateTimeSent>{sent}</t:DateTimeSent>");
        }
        if !self.to.is_empty() {
            x += &format!("<t:ToRecipients>{}</t:ToRecipients>", mailboxes(&self.to));
        }
        if !self.cc.is_empty() {
            x += &format!("<t:CcRecipients>{}</t:CcRecipients>", mailboxes(&self.cc));
        }
        if !self.bcc.is_empty() {
            x += &format!(
                "<t:BccRecipients>{}</t:BccRecipients>",
                mailboxes(&self.bcc)
            );
        }
        if let Some(from) = &self.from {
            x += &format!("<t:From>{}</t:From>", mailboxes(std::slice::from_ref(from)));
        }
        x + "</t:Message>"
    }
}

/// A GetFolder request for one distinguished folder of `mailbox`.
pub fn get_folder(mailbox: &str, folder: &str) -> String {
    format!(
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><s:Header><t:RequestServerVersion Version="Exchange2016"/><t:ExchangeImpersonation><t:ConnectingSID><t:PrimarySmtpAddress>{mailbox}</t:PrimarySmtpAddress></t:ConnectingSID></t:ExchangeImpersonation></s:Header><s:Body><m:GetFolder><m:FolderShape><t:BaseShape>Default</t:BaseShape></m:FolderShape><m:FolderIds><t:DistinguishedFolderId Id="{folder}"/></m:FolderIds></m:GetFolder></s:Body></s:Envelope>"#
    )
}

impl Server {
    /// TotalCount of a distinguished folder (`inbox`, `recoverableitemspurges`) of a mailbox.
    pub fn folder_count(&self, token: &str, mailbox: &str, folder: &str) -> u64 {
        let reply = self.ews(token, &get_folder(mailbox, folder));
        assert_eq!(reply.status, 200, "{}", reply.body);
        between(&reply.body, "TotalCount>", "<")
            .unwrap_or_else(|| panic!("no TotalCount in {}", reply.body))
            .parse()
            .expect("count")
    }
}

// --- Hostile-input, crash and load helpers (appended). ---

impl Server {
    /// The server process id (None once killed or terminated).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `host:port` of the listener.
    pub fn addr(&self) -> String {
        self.url
            .split("://")
            .nth(1)
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string()
    }

    /// Peak resident set size of the server process, in kB (`VmHWM` of /proc/<pid>/status).
    pub fn peak_rss_kb(&self) -> Option<u64> {
        proc_status_kb(self.pid()?, "VmHWM:")
    }

    /// Whether the process is still running (not exited, not a zombie).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGTERM without waiting; `wait_exit` collects the status.
    pub fn send_sigterm(&self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }

    /// Waits up to `timeout` for the process to exit; its status, or None if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Some(status);
                }
            } else {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// A `kB` field of /proc/<pid>/status (e.g. `VmHWM:`, `VmRSS:`).
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// An admin API request with an optional JSON body: the status and the JSON answer (`null`
/// when the body is empty; a non-JSON body fails the test).
pub fn call(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut request = server.admin(method, path);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().expect("admin request");
    let status = response.status().as_u16();
    let text = response.text().expect("body");
    let value = if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"))
    };
    (status, value)
}
