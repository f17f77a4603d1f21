//! Configuration: command-line options, each also settable by an `INGEST_*` environment
//! variable and in a TOML `--config` file. Precedence: command line, environment, file, default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

/// How a revoked or disabled service principal is treated when it presents a valid token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationMode {
    /// The service principal is checked on every request: revocation stops imports at once.
    Immediate,
    /// Real Entra fidelity: an issued token stays usable until it expires.
    TokenLifetime,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the request span (correlation id) in it.
    Json,
}

/// An external token issuer trusted offline (e.g. a real Entra tenant), by issuer URL and a
/// JWKS file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct TrustedIssuer {
    pub issuer: String,
    pub jwks_file: PathBuf,
}

/// `serve` options as given on the command line or in the environment.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML configuration file (keys as the long options, e.g. `listen = "127.0.0.1:0"`).
    #[arg(long, env = "INGEST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address and port to listen on; port 0 picks a free port (the printed URL has it).
    #[arg(long, env = "INGEST_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Store directory (sled).
    #[arg(long, env = "INGEST_DATA")]
    pub data: Option<PathBuf>,
    /// Use a throw-away store, removed on exit (for test suites).
    #[arg(long, env = "INGEST_EPHEMERAL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = clap::builder::FalseyValueParser::new())]
    pub ephemeral: Option<bool>,
    /// Sync every group commit to the disk (fdatasync): acknowledged items then survive power
    /// loss too. Without it they survive a crash of the server (kill -9), not of the machine.
    #[arg(long, env = "INGEST_FSYNC", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = clap::builder::FalseyValueParser::new())]
    pub fsync: Option<bool>,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long, env = "INGEST_NO_TLS", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_tls: Option<bool>,
    /// PEM certificate chain to serve (with --tls-key); else a local development CA is used.
    #[arg(long, env = "INGEST_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "INGEST_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Directory of the generated development CA and server certificate.
    #[arg(long, env = "INGEST_CERTS")]
    pub certs: Option<PathBuf>,
    /// More names (DNS names or IP addresses) for the generated server certificate, besides
    /// localhost, 127.0.0.1 and ::1: e.g. the service name other containers call it by.
    /// Repeatable or comma-separated; the certificate is issued again by the same CA when a
    /// name is missing from it.
    #[arg(long = "tls-san", env = "INGEST_TLS_SANS", value_delimiter = ',')]
    pub tls_sans: Vec<String>,
    /// Tenant fixture(s) loaded into an empty store (default: the embedded contoso.toml).
    #[arg(long = "fixture", env = "INGEST_FIXTURE", value_delimiter = ',')]
    pub fixtures: Vec<PathBuf>,
    /// Admin API key (else generated on first start and kept in the data directory).
    #[arg(long, env = "INGEST_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Largest request body accepted, in bytes (default 64 MiB).
    #[arg(long, env = "INGEST_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<u64>,
    /// Most items accepted in one CreateItem request (default 1000).
    #[arg(long, env = "INGEST_MAX_ITEMS_PER_REQUEST")]
    pub max_items_per_request: Option<usize>,
    /// Time a client has to send its request head (and its first bytes), in seconds (default 30).
    #[arg(long, env = "INGEST_HEADER_TIMEOUT_SECS")]
    pub header_timeout_secs: Option<u64>,
    /// Time a client has to send a request body, in seconds (default 30), plus one per 64 KiB
    /// received.
    #[arg(long, env = "INGEST_BODY_TIMEOUT_SECS")]
    pub body_timeout_secs: Option<u64>,
    /// Time a graceful shutdown (SIGTERM, Ctrl-C) lets requests in flight finish, in seconds
    /// (default 8: within `docker stop`'s 10).
    #[arg(long, env = "INGEST_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Most connections served at once; more wait in the kernel's accept queue (default 4096).
    #[arg(long, env = "INGEST_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Clock skew allowed when checking token and assertion lifetimes, in seconds (default 300).
    #[arg(long, env = "INGEST_CLOCK_SKEW_SECS")]
    pub clock_skew_secs: Option<u64>,
    /// Lifetime of issued access tokens, in seconds (default 3599).
    #[arg(long, env = "INGEST_TOKEN_LIFETIME_SECS")]
    pub token_lifetime_secs: Option<u64>,
    /// Whether revoking consent stops tokens already issued.
    #[arg(long, env = "INGEST_REVOCATION", value_enum)]
    pub revocation: Option<RevocationMode>,
    /// Accept HTTP Basic with the third-party data mailbox's credentials (pre-OAuth partners).
    #[arg(long, env = "INGEST_LEGACY_BASIC_AUTH", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = clap::builder::FalseyValueParser::new())]
    pub legacy_basic_auth: Option<bool>,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `ingest_emulator=debug`.
    #[arg(long, env = "INGEST_LOG")]
    pub log: Option<String>,
    /// Log format: `text` (default) or `json`.
    #[arg(long, env = "INGEST_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// The same options in a TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data: Option<PathBuf>,
    ephemeral: Option<bool>,
    fsync: Option<bool>,
    no_tls: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    certs: Option<PathBuf>,
    tls_san: Option<Vec<String>>,
    fixture: Option<Vec<PathBuf>>,
    admin_key: Option<String>,
    max_body_bytes: Option<u64>,
    max_items_per_request: Option<usize>,
    header_timeout_secs: Option<u64>,
    body_timeout_secs: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    max_connections: Option<usize>,
    clock_skew_secs: Option<u64>,
    token_lifetime_secs: Option<u64>,
    revocation: Option<RevocationMode>,
    legacy_basic_auth: Option<bool>,
    log: Option<String>,
    log_format: Option<LogFormat>,
    /// Legacy Basic auth passwords by user principal name (only with legacy-basic-auth).
    #[serde(default)]
    legacy_passwords: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    trusted_issuers: Vec<TrustedIssuer>,
}

/// The effective configuration of a running server.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data: PathBuf,
    pub ephemeral: bool,
    /// fdatasync each group commit.
    pub fsync: bool,
    pub tls: TlsSource,
    /// Extra names of the generated server certificate (`--tls-san`).
    pub tls_sans: Vec<String>,
    pub fixtures: Vec<PathBuf>,
    pub admin_key: Option<String>,
    pub max_body_bytes: u64,
    pub max_items_per_request: usize,
    /// Time a client has to send its first bytes and its request head.
    pub header_timeout_secs: u64,
    /// Time a client has to send a whole request body.
    pub body_timeout_secs: u64,
    /// Time a graceful shutdown lets requests in flight finish.
    pub shutdown_grace_secs: u64,
    /// Most connections served at once (at least 1).
    pub max_connections: usize,
    pub clock_skew_secs: u64,
    pub token_lifetime_secs: u64,
    pub revocation: RevocationMode,
    pub legacy_basic_auth: bool,
    pub legacy_passwords: std::collections::BTreeMap<String, String>,
    pub trusted_issuers: Vec<TrustedIssuer>,
    pub log: String,
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TlsSource {
    None,
    /// Generated development CA and server certificate in this directory (`None`: inside the
    /// ephemeral store directory).
    Generated(Option<PathBuf>),
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("invalid config file {0}: {1}")]
    Parse(PathBuf, toml::de::Error),
    #[error("{0}")]
    Invalid(String),
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";

/// The longest access-token lifetime taken (Entra's configurable maximum is a day).
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 86_400;

impl Config {
    pub fn resolve(args: ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let tls_cert = args.tls_cert.or(file.tls_cert);
        let tls_key = args.tls_key.or(file.tls_key);
        // A flag given on the command line or in the environment (`--fsync=false`,
        // `INGEST_FSYNC=0`) overrides the file either way.
        let no_tls = args.no_tls.or(file.no_tls).unwrap_or(false);
        let ephemeral = args.ephemeral.or(file.ephemeral).unwrap_or(false);
        // An ephemeral server keeps its generated CA in its throw-away directory unless told.
        let certs = args
            .certs
            .or(file.certs)
            .or_else(|| (!ephemeral).then(|| PathBuf::from("certs")));
        let tls = match (no_tls, tls_cert, tls_key) {
            (true, Some(_), _) | (true, _, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "no-tls and tls-cert/tls-key contradict each other (one may come from the \
                     config file or the environment): give one of them"
                        .into(),
                ))
            }
            (true, _, _) => TlsSource::None,
            (false, Some(cert), Some(key)) => TlsSource::Files { cert, key },
            (false, None, None) => TlsSource::Generated(certs),
            _ => {
                return Err(ConfigError::Invalid(
                    "tls-cert and tls-key must be given together".into(),
                ))
            }
        };
        let tls_sans: Vec<String> = if args.tls_sans.is_empty() {
            file.tls_san.unwrap_or_default()
        } else {
            args.tls_sans
        }
        .into_iter()
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect();
        let fixtures = if args.fixtures.is_empty() {
            file.fixture.unwrap_or_default()
        } else {
            args.fixtures
        };
        let legacy_basic_auth = args
            .legacy_basic_auth
            .or(file.legacy_basic_auth)
            .unwrap_or(false);
        Ok(Config {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default address")),
            data: args
                .data
                .or(file.data)
                .unwrap_or_else(|| PathBuf::from("data")),
            ephemeral,
            fsync: args.fsync.or(file.fsync).unwrap_or(false),
            tls,
            tls_sans,
            fixtures,
            admin_key: match args.admin_key.or(file.admin_key) {
                // An empty value (an unset variable of a compose file) would lock everyone
                // out: the admin check refuses empty keys. Spaces around it never match.
                Some(key) if key.trim().is_empty() => {
                    return Err(ConfigError::Invalid(
                        "the admin key is empty: give one, or none to have one generated".into(),
                    ))
                }
                key => key.map(|k| k.trim().to_string()),
            },
            max_body_bytes: args
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(64 * 1024 * 1024),
            max_items_per_request: args
                .max_items_per_request
                .or(file.max_items_per_request)
                .unwrap_or(1000),
            header_timeout_secs: args
                .header_timeout_secs
                .or(file.header_timeout_secs)
                .unwrap_or(30)
                .max(1),
            body_timeout_secs: args
                .body_timeout_secs
                .or(file.body_timeout_secs)
                .unwrap_or(30)
                .max(1),
            shutdown_grace_secs: args
                .shutdown_grace_secs
                .or(file.shutdown_grace_secs)
                .unwrap_or(8),
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(4096)
                .clamp(1, u32::MAX as usize >> 3),
            clock_skew_secs: args.clock_skew_secs.or(file.clock_skew_secs).unwrap_or(300),
            token_lifetime_secs: match args
                .token_lifetime_secs
                .or(file.token_lifetime_secs)
                .unwrap_or(3599)
            {
                secs @ 1..=MAX_TOKEN_LIFETIME_SECS => secs,
                secs => {
                    return Err(ConfigError::Invalid(format!(
                        "token-lifetime-secs {secs} is out of range: 1 to \
                         {MAX_TOKEN_LIFETIME_SECS} (a day)"
                    )))
                }
            },
            revocation: args
                .revocation
                .or(file.revocation)
                .unwrap_or(RevocationMode::Immediate),
            legacy_basic_auth,
            legacy_passwords: file.legacy_passwords,
            trusted_issuers: file.trusted_issuers,
            log_format: args
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
            log: args
                .log
                .or(file.log)
                .unwrap_or_else(|| "info,tantivy=warn".to_string()),
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_path_buf(), e))?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse(path.to_path_buf(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values that would be taken and misbehave later are refused at start: an empty admin
    /// key (everyone locked out), a token lifetime that overflows token times, no-tls with a
    /// certificate (one of them silently ignored).
    #[test]
    fn values_that_would_misbehave_later_are_refused() {
        let resolve = |args: ServeArgs| Config::resolve(args);
        assert!(resolve(ServeArgs {
            admin_key: Some("   ".into()),
            ..ServeArgs::default()
        })
        .is_err());
        let trimmed = resolve(ServeArgs {
            admin_key: Some(" key-with-spaces-around ".into()),
            ..ServeArgs::default()
        })
        .expect("taken");
        assert_eq!(trimmed.admin_key.as_deref(), Some("key-with-spaces-around"));
        for secs in [0, MAX_TOKEN_LIFETIME_SECS + 1, u64::MAX] {
            assert!(
                resolve(ServeArgs {
                    token_lifetime_secs: Some(secs),
                    ..ServeArgs::default()
                })
                .is_err(),
                "{secs}"
            );
        }
        assert!(resolve(ServeArgs {
            no_tls: Some(true),
            tls_cert: Some("cert.pem".into()),
            tls_key: Some("key.pem".into()),
            ..ServeArgs::default()
        })
        .is_err());
        assert!(resolve(ServeArgs::default()).is_ok());
    }

    /// A flag on the command line (or in the environment) overrides the file both ways:
    /// `--fsync=false` turns off the file's `fsync = true`; a bare `--fsync` is true.
    #[test]
    fn flags_override_the_file_both_ways() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let parse = |args: &[&str]| {
            <Cli as clap::Parser>::try_parse_from(
                std::iter::once("serve").chain(args.iter().copied()),
            )
            .expect("parses")
            .serve
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "fsync = true\nno-tls = true\nephemeral = true\n").unwrap();
        let file = file.to_str().unwrap();
        let from_file = Config::resolve(parse(&["--config", file])).unwrap();
        assert!(from_file.fsync && from_file.ephemeral);
        assert!(matches!(from_file.tls, TlsSource::None));
        let overridden = Config::resolve(parse(&[
            "--config",
            file,
            "--fsync=false",
            "--no-tls=false",
            "--ephemeral=0",
        ]))
        .unwrap();
        assert!(!overridden.fsync && !overridden.ephemeral);
        assert!(matches!(overridden.tls, TlsSource::Generated(_)));
        let bare = parse(&["--fsync", "--no-tls", "--listen", "127.0.0.1:0"]);
        assert_eq!(
            (bare.fsync, bare.no_tls, bare.ephemeral),
            (Some(true), Some(true), None)
        );
    }
}
