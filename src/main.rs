//! `ingest-emulator`: run the server, or talk to a running one.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use ingest_emulator::admin::mailboxes;
use ingest_emulator::app::AppState;
use ingest_emulator::config::{Config, LogFormat, ServeArgs, TlsSource};
use ingest_emulator::{cli, http, tls};
use tracing_subscriber::EnvFilter;

/// jemalloc, not the system allocator: under load, glibc's malloc took about a fifth of the
/// server's CPU (buffers allocated on tokio's threads are freed on the committer's; with glibc
/// the server also had to limit its arenas to two, or its resident memory grew with them), and
/// jemalloc gave +15-40% requests/s at batch 1 at the same peak RSS (README, benchmark).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "ingest-emulator",
    version,
    about = "Emulator of the Microsoft 365 third-party data ingestion service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (HTTPS on 127.0.0.1:8443, store in ./data, default tenant fixture).
    Serve(Box<ServeArgs>),
    /// Register, consent, revoke and list connector apps on a running server.
    Apps(cli::AppsArgs),
    /// Print an access token for a client id and secret, from a running server.
    Token(cli::TokenArgs),
    /// Check a running server's health (`/healthz`): exit 0 when healthy (for HEALTHCHECK).
    Health(cli::HealthArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Apps(args) => cli::apps(args).map_err(|e| e.to_string()),
        Command::Token(args) => cli::token(args).map_err(|e| e.to_string()),
        Command::Health(args) => cli::health(args).map_err(|e| e.to_string()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ingest-emulator: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let started = Instant::now();
    let config = Config::resolve(args).map_err(|e| e.to_string())?;
    let filter = EnvFilter::try_new(&config.log)
        .map_err(|e| format!("invalid --log filter '{}': {e}", config.log))?;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let outcome = runtime.block_on(run(config, started));
    // Blocking work a stop abandoned (a sweep, an import, an admin reset) must not keep the
    // process past the stop window: every acknowledged write is in the log already.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    outcome
}

async fn run(config: Config, started: Instant) -> Result<(), String> {
    // First of all: a SIGTERM while the store opens (a long log replay) must stop the server
    // gracefully once it can, not kill it mid-replay with the default action.
    let shutdown = shutdown_signal();
    let ephemeral_dir = if config.ephemeral {
        Some(
            ingest_emulator::ephemeral::create()
                .map_err(|e| format!("cannot create the ephemeral data directory: {e}"))?,
        )
    } else {
        None
    };
    let data_dir: PathBuf = match &ephemeral_dir {
        Some(dir) => dir.path().to_path_buf(),
        None => config.data.clone(),
    };
    let (tls_config, ca_cert) = match &config.tls {
        TlsSource::None => (None, None),
        TlsSource::Files { cert, key } => (
            Some(tls::server_config(cert, key).map_err(|e| e.to_string())?),
            None,
        ),
        TlsSource::Generated(dir) => {
            let dir = dir.clone().unwrap_or_else(|| data_dir.join("certs"));
            let certs = tls::dev_certificates(&dir, &config.tls_sans).map_err(|e| e.to_string())?;
            let config = tls::server_config(&certs.server_cert, &certs.server_key)
                .map_err(|e| e.to_string())?;
            (Some(config), Some(certs.ca_cert))
        }
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let state = AppState::open(config.clone(), &data_dir).map_err(|e| e.to_string())?;

    let scheme = if tls_config.is_some() {
        "https"
    } else {
        "http"
    };
    let base = format!("{scheme}://{local}");
    let ca_line = match &ca_cert {
        Some(path) => std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.clone())
            .display()
            .to_string(),
        None if tls_config.is_some() => "(your --tls-cert is served; trust its issuer)".to_string(),
        None => "(plain HTTP: no TLS)".to_string(),
    };
    // The key itself is never printed: the banner ends up in container and CI logs.
    let key_line = match &state.admin_key.path {
        Some(path) => format!("in {}  (not printed)", path.display()),
        None => "as configured (--admin-key or INGEST_ADMIN_KEY)".to_string(),
    };
    let store_line = if config.ephemeral {
        format!("{} (ephemeral)", data_dir.display())
    } else {
        data_dir.display().to_string()
    };
    println!(
        "ingest-emulator {} ready in {} ms",
        env!("CARGO_PKG_VERSION"),
        started.elapsed().as_millis()
    );
    println!("  Base URL:        {base}");
    println!("  EWS endpoint:    {base}/service/ThirdPartyIngestionService.svc");
    println!("  Token authority: {base}/{{tenant}}   (e.g. {base}/contoso.onmicrosoft.com/oauth2/v2.0/token)");
    println!("  CA certificate:  {ca_line}");
    println!("  Admin API:       {base}/api   (Authorization: Bearer <admin key>)");
    println!("  Admin key:       {key_line}");
    println!("  Dashboard:       {base}/   (sign in with the admin key)");
    println!("  Store:           {store_line}");
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let store = state.store.clone();
    let retention = mailboxes::spawn_retention(state.clone(), mailboxes::DEFAULT_RETENTION_EVERY);
    let scheduler = ingest_emulator::connectors::spawn_scheduler(
        state.clone(),
        ingest_emulator::connectors::SCHEDULER_TICK,
    );
    let router = http::router(state);
    // On the signal, background work stops first (no import starts during the drain); a
    // second signal exits at once (every acknowledged write is in the log already).
    let (retention_job, scheduler_job) = (retention.abort_handle(), scheduler.abort_handle());
    let shutdown = async move {
        shutdown.await;
        tracing::info!("stopping: no new connections, requests in flight finish");
        retention_job.abort();
        scheduler_job.abort();
        tokio::spawn(async {
            shutdown_signal().await;
            tracing::warn!("second stop signal: exiting now");
            std::process::exit(1);
        });
    };
    http::serve(listener, tls_config, router, shutdown).await;
    let _ = retention.await;
    let _ = scheduler.await;
    store.flush().map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    drop(ephemeral_dir);
    Ok(())
}

/// Registers the SIGTERM and SIGINT handlers now, before the banner says the server is ready
/// (a signal sent right after it must stop the server gracefully, not kill it with its default
/// action), and answers a future that completes on either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        async fn received(signal: Option<Signal>) {
            match signal {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        let term = signal(SignalKind::terminate()).ok();
        let interrupt = signal(SignalKind::interrupt()).ok();
        async move {
            tokio::select! {
                _ = received(term) => {},
                _ = received(interrupt) => {},
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
