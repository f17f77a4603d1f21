//! Tenant fixtures (TOML): a tenant, its users, external identities and registered apps,
//! loaded into a new store. The default, `fixtures/contoso.toml`, is embedded in the binary.

use std::path::Path;

use chrono::Utc;
use serde::Deserialize;
use uuid::Uuid;

use crate::domain::TenantId;
use crate::store::model::{AppRecord, ServicePrincipalRecord, TenantRecord, UserRecord};
use crate::store::{Store, StoreError};

/// The embedded default tenant.
pub const DEFAULT_FIXTURE: &str = include_str!("../fixtures/contoso.toml");

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("cannot read fixture {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid fixture {path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("fixture {path}: {message}")]
    Invalid { path: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    pub tenant: FixtureTenant,
    #[serde(default)]
    pub users: Vec<FixtureUser>,
    #[serde(default)]
    pub external_identities: Vec<FixtureExternalIdentity>,
    #[serde(default)]
    pub apps: Vec<FixtureApp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureTenant {
    pub id: Uuid,
    pub display_name: String,
    pub domains: Vec<String>,
    pub third_party_mailbox: Option<String>,
    pub retention_days: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureUser {
    pub upn: String,
    pub display_name: Option<String>,
    /// Primary SMTP address; the UPN when absent.
    pub mail: Option<String>,
    #[serde(default)]
    pub proxy_addresses: Vec<String>,
    #[serde(default = "yes")]
    pub mailbox_enabled: bool,
    #[serde(default)]
    pub litigation_hold: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureExternalIdentity {
    pub id: String,
    pub user: String,
    pub source: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureApp {
    pub app_id: Uuid,
    pub display_name: String,
    #[serde(default = "default_roles")]
    pub roles: Vec<String>,
    #[serde(default)]
    pub secrets: Vec<String>,
    /// PEM certificates whose keys may sign client assertions.
    #[serde(default)]
    pub certificates: Vec<String>,
    /// Whether the tenant admin consented (a service principal exists).
    #[serde(default)]
    pub consented: bool,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Where the admin consent page may send the administrator back.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
}

fn yes() -> bool {
    true
}

fn default_roles() -> Vec<String> {
    vec!["full_access_as_app".to_string()]
}

impl Fixture {
    pub fn parse(text: &str, path: &str) -> Result<Fixture, FixtureError> {
        toml::from_str(text).map_err(|source| FixtureError::Parse {
            path: path.to_string(),
            source,
        })
    }

    pub fn read(path: &Path) -> Result<Fixture, FixtureError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| FixtureError::Read {
            path: shown.clone(),
            source,
        })?;
        Fixture::parse(&text, &shown)
    }

    /// Checks everything [`Fixture::load_into`] would refuse, writing nothing: a reset can
    /// then wipe the directory knowing the fixtures will load.
    pub fn validate(&self, path: &str) -> Result<(), FixtureError> {
        let invalid = |message: String| FixtureError::Invalid {
            path: path.to_string(),
            message,
        };
        if let Some(days) = self.tenant.retention_days {
            let max = crate::domain::MAX_RETENTION_DAYS;
            if days > max {
                return Err(invalid(format!(
                    "retention_days {days} is over the maximum of {max} (a hundred years)"
                )));
            }
        }
        // One address, one user (the store refuses the second one halfway through a load).
        let mut owners: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
        for user in &self.users {
            let smtp = user.proxy_addresses.iter().filter_map(|p| {
                p.split_once(':')
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("smtp"))
                    .map(|(_, address)| address)
            });
            let addresses = std::iter::once(user.upn.as_str())
                .chain(user.mail.as_deref())
                .chain(smtp);
            for address in addresses {
                let owner = owners
                    .entry(address.trim().to_lowercase())
                    .or_insert(user.upn.as_str());
                if !owner.eq_ignore_ascii_case(&user.upn) {
                    return Err(invalid(format!(
                        "the address {address} belongs to both {owner} and {}",
                        user.upn
                    )));
                }
            }
        }
        for mapping in &self.external_identities {
            if !self
                .users
                .iter()
                .any(|u| u.upn.eq_ignore_ascii_case(&mapping.user))
            {
                return Err(invalid(format!(
                    "external identity {} maps to unknown user {}",
                    mapping.id, mapping.user
                )));
            }
        }
        for app in &self.apps {
            if let Some(bad) = app
                .redirect_uris
                .iter()
                .find(|uri| !crate::identity::consent::valid_redirect(uri))
            {
                return Err(invalid(format!(
                    "app {}: redirect URI '{bad}' is not an absolute http or https URL without a fragment",
                    app.app_id
                )));
            }
            for pem in &app.certificates {
                crate::identity::credentials::certificate_record(pem)
                    .map_err(|e| invalid(format!("app {}: {e}", app.app_id)))?;
            }
        }
        Ok(())
    }

    /// Writes the fixture's tenant, users, apps and consents into the store, once
    /// [`Fixture::validate`] passed.
    pub fn load_into(&self, store: &Store, path: &str) -> Result<(), FixtureError> {
        self.validate(path)?;
        let invalid = |message: String| FixtureError::Invalid {
            path: path.to_string(),
            message,
        };
        let tenant = TenantId(self.tenant.id);
        store.put_tenant(&TenantRecord {
            id: self.tenant.id,
            display_name: self.tenant.display_name.clone(),
            domains: self
                .tenant
                .domains
                .iter()
                .map(|d| d.to_lowercase())
                .collect(),
            third_party_mailbox: self.tenant.third_party_mailbox.clone(),
            retention_days: self.tenant.retention_days,
        })?;
        for user in &self.users {
            let external_ids = self
                .external_identities
                .iter()
                .filter(|x| x.user.eq_ignore_ascii_case(&user.upn))
                .map(|x| x.id.clone())
                .collect();
            store.put_user(
                tenant,
                &UserRecord {
                    user_principal_name: user.upn.clone(),
                    display_name: user
                        .display_name
                        .clone()
                        .unwrap_or_else(|| user.upn.clone()),
                    mail: user.mail.clone().unwrap_or_else(|| user.upn.clone()),
                    proxy_addresses: user.proxy_addresses.clone(),
                    mailbox_enabled: user.mailbox_enabled,
                    litigation_hold: user.litigation_hold,
                    external_ids,
                },
            )?;
        }
        for app in &self.apps {
            let mut record = AppRecord {
                app_id: app.app_id,
                home_tenant: self.tenant.id,
                display_name: app.display_name.clone(),
                required_roles: app.roles.clone(),
                secrets: Vec::new(),
                certificates: Vec::new(),
                created: Utc::now(),
                redirect_uris: app.redirect_uris.clone(),
            };
            for secret in &app.secrets {
                record
                    .secrets
                    .push(crate::identity::credentials::secret_record(secret, None));
            }
            for pem in &app.certificates {
                let cert = crate::identity::credentials::certificate_record(pem)
                    .map_err(|e| invalid(format!("app {}: {e}", app.app_id)))?;
                record.certificates.push(cert);
            }
            store.put_app(&record)?;
            if app.consented {
                store.put_service_principal(&ServicePrincipalRecord {
                    app_id: app.app_id,
                    tenant: self.tenant.id,
                    id: Uuid::new_v4(),
                    account_enabled: app.enabled,
                    app_roles: app.roles.clone(),
                    created: Utc::now(),
                })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_fixture_parses() {
        let fixture = Fixture::parse(DEFAULT_FIXTURE, "contoso.toml").expect("parses");
        assert_eq!(fixture.tenant.domains[0], "contoso.onmicrosoft.com");
        assert!(fixture.users.iter().any(|u| !u.mailbox_enabled));
        assert!(fixture.tenant.third_party_mailbox.is_some());
    }

    /// An address of two users is refused before anything is written (the store refused the
    /// second user halfway through a load, which left a reset half restored).
    #[test]
    fn an_address_of_two_users_is_refused_before_anything_is_written() {
        let mut fixture = Fixture::parse(DEFAULT_FIXTURE, "contoso.toml").expect("parses");
        fixture
            .validate("contoso.toml")
            .expect("the default fixture is valid");
        let taken = format!("SMTP:{}", fixture.users[0].upn.to_uppercase());
        fixture.users[1].proxy_addresses.push(taken);
        let e = fixture.validate("contoso.toml").expect_err("refused");
        assert!(e.to_string().contains("belongs to both"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        fixture
            .load_into(&store, "contoso.toml")
            .expect_err("refused");
        assert!(store.tenant(TenantId(fixture.tenant.id)).unwrap().is_none());
    }

    #[test]
    fn a_retention_over_a_hundred_years_is_refused() {
        let mut fixture = Fixture::parse(DEFAULT_FIXTURE, "contoso.toml").expect("parses");
        fixture.tenant.retention_days = Some(crate::domain::MAX_RETENTION_DAYS + 1);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let e = fixture
            .load_into(&store, "contoso.toml")
            .expect_err("refused");
        assert!(e.to_string().contains("retention_days"), "{e}");
        assert!(store.tenant(TenantId(fixture.tenant.id)).unwrap().is_none());
    }
}
