//! Application state shared by every request, and server start-up (store, fixtures, keys).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Config;
use crate::fixture::{Fixture, FixtureError, DEFAULT_FIXTURE};
use crate::identity::keys::KeySet;
use crate::store::{Store, StoreError};

/// Everything a request handler may need: one `Arc`, cloned for every request (axum's `State`
/// and each middleware clone it), so a clone is one reference count, not one per part.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    pub store: Store,
    pub config: Arc<Config>,
    pub keys: Arc<KeySet>,
    pub admin_key: Arc<AdminKey>,
    /// Content Search's full-text index, kept in step with the store.
    pub search: Arc<crate::search::SearchIndex>,
    /// Fault rules set through `/api/faults` (in memory: test-time configuration).
    pub faults: Arc<crate::faults::Faults>,
    /// Dashboard sessions signed in with the admin key (in memory).
    pub sessions: Arc<crate::dashboard::session::Sessions>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fixture(#[from] FixtureError),
    #[error("signing keys: {0}")]
    Keys(String),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error(transparent)]
    Search(#[from] crate::search::index::IndexError),
}

/// The admin API key, compared in constant time.
pub struct AdminKey {
    value: String,
    /// Where the key is kept when it was generated (shown at start-up), if anywhere.
    pub path: Option<PathBuf>,
}

impl AdminKey {
    pub fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        let a = self.value.as_bytes();
        let b = presented.as_bytes();
        a.len() == b.len() && bool::from(a.ct_eq(b))
    }

    pub fn value(&self) -> &str {
        &self.value
    }

    /// The configured key, else the one kept in `dir/admin.key`, else a new one written there
    /// readable by the owner only.
    fn load_or_create(configured: Option<&str>, dir: &Path) -> Result<AdminKey, StartError> {
        if let Some(value) = configured {
            return Ok(AdminKey {
                value: value.to_string(),
                path: None,
            });
        }
        let path = dir.join("admin.key");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let value = text.trim().to_string();
            if !value.is_empty() {
                return Ok(AdminKey {
                    value,
                    path: Some(path),
                });
            }
        }
        let value = format!(
            "iek_{}",
            crate::identity::credentials::generate_secret().replace(['~', '.', '-'], "x")
        );
        write_owner_only(&path, &value).map_err(|e| StartError::Io(path.clone(), e))?;
        Ok(AdminKey {
            value,
            path: Some(path),
        })
    }
}

fn write_owner_only(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

impl AppState {
    /// Opens the store in `data_dir`, seeds it from fixtures when new, and loads the keys.
    pub fn open(config: Config, data_dir: &Path) -> Result<AppState, StartError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StartError::Io(data_dir.to_path_buf(), e))?;
        let store = Store::open_with(&data_dir.join("store"), config.fsync, true)?;
        if store.has_no_tenants() {
            seed(&store, &config.fixtures)?;
        }
        let keys = KeySet::load_or_create(&store).map_err(|e| StartError::Keys(e.to_string()))?;
        let admin_key = AdminKey::load_or_create(config.admin_key.as_deref(), data_dir)?;
        store.flush()?;
        let search = crate::search::SearchIndex::open(&data_dir.join("index"), &store)?;
        Ok(AppState(Arc::new(Shared {
            store,
            config: Arc::new(config),
            keys: Arc::new(keys),
            admin_key: Arc::new(admin_key),
            search,
            faults: Arc::default(),
            sessions: Arc::default(),
        })))
    }
}

/// Loads the given fixtures, or the embedded default tenant when none is given.
pub(crate) fn seed(store: &Store, fixtures: &[PathBuf]) -> Result<(), FixtureError> {
    load_fixtures(store, &read_fixtures(fixtures)?)
}

/// Reads and checks the given fixtures (the embedded default tenant when none is given),
/// writing nothing.
pub(crate) fn read_fixtures(fixtures: &[PathBuf]) -> Result<Vec<(Fixture, String)>, FixtureError> {
    let read: Vec<(Fixture, String)> = if fixtures.is_empty() {
        vec![(
            Fixture::parse(DEFAULT_FIXTURE, "contoso.toml")?,
            "contoso.toml".to_string(),
        )]
    } else {
        fixtures
            .iter()
            .map(|path| Ok((Fixture::read(path)?, path.display().to_string())))
            .collect::<Result<_, FixtureError>>()?
    };
    let mut domains: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    let mut tenants = std::collections::HashSet::new();
    for (fixture, path) in &read {
        fixture.validate(path)?;
        let invalid = |message: String| FixtureError::Invalid {
            path: path.clone(),
            message,
        };
        if !tenants.insert(fixture.tenant.id) {
            return Err(invalid(format!(
                "tenant {} is in another fixture file too",
                fixture.tenant.id
            )));
        }
        for domain in &fixture.tenant.domains {
            let other = domains.insert(domain.to_lowercase(), path.as_str());
            if let Some(other) = other.filter(|other| *other != path.as_str()) {
                return Err(invalid(format!(
                    "the domain {domain} is also a domain of the tenant of {other}"
                )));
            }
        }
    }
    Ok(read)
}

/// Writes fixtures read by [`read_fixtures`].
pub(crate) fn load_fixtures(
    store: &Store,
    fixtures: &[(Fixture, String)],
) -> Result<(), FixtureError> {
    for (fixture, path) in fixtures {
        fixture.load_into(store, path)?;
    }
    Ok(())
}
