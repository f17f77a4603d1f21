//! Storage records: what sled holds, serialised as JSON, except item and ingestion records
//! (most of what is written), which are compact (postcard; see `store::encode_compact`). Separate from domain and
//! wire types so the on-disk format changes only on purpose.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantRecord {
    pub id: Uuid,
    pub display_name: String,
    /// Accepted domains, lower case. The first is the initial `*.onmicrosoft.com`-style domain.
    pub domains: Vec<String>,
    /// User principal name of the third-party data (catch-all) mailbox.
    pub third_party_mailbox: Option<String>,
    #[serde(default)]
    pub retention_days: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserRecord {
    pub user_principal_name: String,
    pub display_name: String,
    /// Primary SMTP address.
    pub mail: String,
    #[serde(default)]
    pub proxy_addresses: Vec<String>,
    pub mailbox_enabled: bool,
    #[serde(default)]
    pub litigation_hold: bool,
    /// External identities mapped to this user (a Twitter handle, a Bloomberg UUID...).
    #[serde(default)]
    pub external_ids: Vec<String>,
}

impl UserRecord {
    /// Every address that maps to this user: primary SMTP, proxies (without `smtp:` prefix),
    /// the UPN and external identities. Lower case.
    pub fn addresses(&self) -> Vec<String> {
        let mut all = vec![
            self.mail.to_lowercase(),
            self.user_principal_name.to_lowercase(),
        ];
        for proxy in &self.proxy_addresses {
            let bare = match proxy.split_once(':') {
                Some((scheme, rest)) if scheme.eq_ignore_ascii_case("smtp") => rest,
                _ => proxy.as_str(),
            };
            all.push(bare.to_lowercase());
        }
        all.extend(self.external_ids.iter().map(|id| id.to_lowercase()));
        all.sort();
        all.dedup();
        all
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRecord {
    pub key_id: Uuid,
    /// First three characters, as Entra shows (`hint`).
    pub hint: String,
    /// SHA-256 of the secret value, hex. The value itself is never stored.
    pub sha256: String,
    pub end_date_time: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRecord {
    pub key_id: Uuid,
    /// DER of the X.509 certificate, base64 (standard).
    pub der_base64: String,
    /// base64url (no padding) SHA-1 and SHA-256 thumbprints of the DER.
    pub x5t: String,
    pub x5t_s256: String,
    pub subject: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AppRecord {
    pub app_id: Uuid,
    /// Tenant the app is registered in (its home tenant).
    pub home_tenant: Uuid,
    pub display_name: String,
    /// App roles the application requests, e.g. `full_access_as_app`.
    pub required_roles: Vec<String>,
    #[serde(default)]
    pub secrets: Vec<SecretRecord>,
    #[serde(default)]
    pub certificates: Vec<CertificateRecord>,
    pub created: DateTime<Utc>,
    /// Where the admin consent page may send the administrator back (Entra's web redirect
    /// URIs): any other `redirect_uri` is refused (AADSTS50011), never redirected to.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
}

/// A service principal: an admin's consent to an app in a tenant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServicePrincipalRecord {
    pub app_id: Uuid,
    pub tenant: Uuid,
    /// Object id, carried as `oid`/`sub` in tokens.
    pub id: Uuid,
    pub account_enabled: bool,
    /// Roles granted by the consent.
    pub app_roles: Vec<String>,
    pub created: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SigningKeyRecord {
    pub kid: String,
    /// PKCS#8 DER of the RSA private key, base64.
    pub private_pkcs8_base64: String,
    /// Self-signed certificate DER carrying the public key (`x5c`), base64.
    pub certificate_base64: String,
    pub x5t: String,
    pub created: DateTime<Utc>,
    /// The key new tokens are signed with; others stay valid for validation until removed.
    pub active: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AddressRecord {
    pub name: Option<String>,
    pub address: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentMeta {
    pub name: String,
    pub content_type: String,
    pub size: u64,
    pub content_id: Option<String>,
    pub is_inline: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExtendedPropertyRecord {
    pub tag: Option<u32>,
    pub name: Option<String>,
    pub property_type: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct CopyRecord {
    pub mailbox: String,
    pub folder: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ItemRecord {
    pub id: Uuid,
    pub tenant: Uuid,
    pub correlation_id: Uuid,
    pub app_id: Option<Uuid>,
    #[serde(with = "compact_time")]
    pub received: DateTime<Utc>,
    pub item_class: String,
    pub searched_item_class: String,
    pub kind: String,
    pub source: String,
    pub event: Option<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub body_type: Option<String>,
    pub from: AddressRecord,
    pub sender: Option<AddressRecord>,
    pub to: Vec<AddressRecord>,
    pub cc: Vec<AddressRecord>,
    pub bcc: Vec<AddressRecord>,
    #[serde(with = "compact_time")]
    pub sent: DateTime<Utc>,
    #[serde(with = "compact_time::option")]
    pub created: Option<DateTime<Utc>>,
    pub internet_message_id: Option<String>,
    pub attachments: Vec<AttachmentMeta>,
    pub extended_properties: Vec<ExtendedPropertyRecord>,
    pub from_mime: bool,
    pub size: u64,
    pub copies: Vec<CopyRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "result"
)]
pub enum ItemOutcomeRecord {
    Stored {
        index: usize,
        item_id: Uuid,
        copies: Vec<CopyRecord>,
    },
    Failed {
        index: usize,
        code: String,
        message: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngestionRecord {
    pub correlation_id: Uuid,
    pub tenant: Uuid,
    pub app_id: Option<Uuid>,
    #[serde(with = "compact_time")]
    pub received: DateTime<Utc>,
    pub operation: String,
    pub http_status: u16,
    /// `Success`, `PartialSuccess` (some items failed), `Failed` (no item stored).
    pub outcome: String,
    #[serde(with = "compact_outcomes")]
    pub items: Vec<ItemOutcomeRecord>,
    /// Request-level error, when the whole request was refused.
    pub error: Option<String>,
}

/// Item outcomes are internally tagged in JSON (`"result": "stored"`), which postcard cannot
/// read back (it needs a self-describing format): the compact form tags them externally.
mod compact_outcomes {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use uuid::Uuid;

    use super::{CopyRecord, ItemOutcomeRecord};

    #[derive(Serialize)]
    enum Written<'a> {
        Stored {
            index: usize,
            item_id: Uuid,
            copies: &'a [CopyRecord],
        },
        Failed {
            index: usize,
            code: &'a str,
            message: &'a str,
        },
    }

    #[derive(Deserialize)]
    enum Read {
        Stored {
            index: usize,
            item_id: Uuid,
            copies: Vec<CopyRecord>,
        },
        Failed {
            index: usize,
            code: String,
            message: String,
        },
    }

    pub fn serialize<S: Serializer>(items: &[ItemOutcomeRecord], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return items.serialize(s);
        }
        s.collect_seq(items.iter().map(|item| match item {
            ItemOutcomeRecord::Stored {
                index,
                item_id,
                copies,
            } => Written::Stored {
                index: *index,
                item_id: *item_id,
                copies,
            },
            ItemOutcomeRecord::Failed {
                index,
                code,
                message,
            } => Written::Failed {
                index: *index,
                code,
                message,
            },
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<ItemOutcomeRecord>, D::Error> {
        if d.is_human_readable() {
            return Vec::deserialize(d);
        }
        Ok(Vec::<Read>::deserialize(d)?
            .into_iter()
            .map(|item| match item {
                Read::Stored {
                    index,
                    item_id,
                    copies,
                } => ItemOutcomeRecord::Stored {
                    index,
                    item_id,
                    copies,
                },
                Read::Failed {
                    index,
                    code,
                    message,
                } => ItemOutcomeRecord::Failed {
                    index,
                    code,
                    message,
                },
            })
            .collect())
    }
}

/// The dates of compact records: RFC 3339 text in JSON, seconds and nanoseconds in the compact
/// form (formatting dates as text was a fifth of the cost of encoding an item). Compact items
/// written before hold text: [`compact_time::text_dates`] reads (and writes) them.
pub(crate) mod compact_time {
    use std::cell::Cell;

    use chrono::{DateTime, Utc};
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    thread_local!(static TEXT: Cell<bool> = const { Cell::new(false) });

    /// Runs `f` with the dates of compact records as text (the format before binary dates).
    pub fn text_dates<R>(f: impl FnOnce() -> R) -> R {
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                TEXT.set(false);
            }
        }
        TEXT.set(true);
        let _reset = Reset;
        f()
    }

    fn as_text<S: Serializer>(s: &S) -> bool {
        s.is_human_readable() || TEXT.get()
    }

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        if as_text(&s) {
            t.serialize(s)
        } else {
            (t.timestamp(), t.timestamp_subsec_nanos()).serialize(s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        if d.is_human_readable() || TEXT.get() {
            return DateTime::deserialize(d);
        }
        let (secs, nanos) = <(i64, u32)>::deserialize(d)?;
        DateTime::from_timestamp(secs, nanos).ok_or_else(|| D::Error::custom("date out of range"))
    }

    pub mod option {
        use super::*;

        #[derive(Serialize, Deserialize)]
        struct Wrapped(#[serde(with = "super")] DateTime<Utc>);

        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            t.map(Wrapped).serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
        }
    }
}
