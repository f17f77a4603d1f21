//! Data connectors and their import history.
//!
//! A connector brings one third-party source into a tenant's mailboxes: a `partner` connector
//! (an app pushing over EWS, identified by its appId) or a native source (Pivot, Symphony, ...).
//! Every import (for a partner connector: every CreateItem request of its app in its tenant)
//! leaves one [`ImportRecord`] in the connector's history.
//!
//! Trees of this module:
//! - `connectors`: `connector id (16)` -> [`ConnectorRecord`] (JSON). Few records: listings
//!   scan the tree.
//! - `connector_history`: `connector id (16) || (u64::MAX - completed micros) (8, BE) ||
//!   import id (16)` -> [`ImportRecord`] (JSON), so a prefix scan is newest first.
//!
//! - `connector_staging`: `connector id (16) || sequence (8, BE)` -> [`StagedRecord`] (JSON):
//!   items delivered to a native connector, waiting for its next import, oldest first.
//! - `connector_seen`: `connector id (16) || dedup key` -> import id: what a native connector
//!   already imported (source id, or content hash without one), to skip duplicates.
//!
//! The counters of the connector record (totals, last import, last error) are written in the
//! same transaction as the history record. A native import writes its items, copies,
//! attachments, journal record, history record, dedup keys and the removal of the staged items
//! it consumed in one transaction ([`Store::commit_import`]): a crash leaves either the whole
//! import or the staged items, never both, never half.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;
use uuid::Uuid;

use super::model::ItemOutcomeRecord;
use super::{abort, decode, encode, Result, Store, StoreError};
use crate::domain::TenantId;

const CONNECTORS_TREE: &str = "connectors";
const HISTORY_TREE: &str = "connector_history";
const STAGING_TREE: &str = "connector_staging";
const SEEN_TREE: &str = "connector_seen";
/// `tenant (16) || app id (16)` -> partner connector id: the connector of an ingestion request
/// without reading every connector (looked up on every request). A connector's tenant and app
/// never change. Built from the connectors when a store made before it is opened.
const PARTNER_APPS_TREE: &str = "connector_partner_apps";
/// Key in [`PARTNER_APPS_TREE`] marking it built.
const PARTNER_APPS_BUILT: &[u8] = b"built";

/// The connector kind of an app pushing over EWS.
pub const PARTNER: &str = "partner";

/// Default import interval: 24 hours, as Merge1 delivers.
pub const DEFAULT_INTERVAL_MINUTES: u32 = 24 * 60;

/// Failed items listed in one import record (the counts are always complete).
pub const LISTED_FAILURES: usize = 1000;

/// The native sources (Veritas Merge1 connectors) a connector may name as its kind, in their
/// documented spelling. Matched case-insensitively.
pub const NATIVE_SOURCES: &[&str] = &[
    "Pivot",
    "Symphony",
    "CellTrust",
    "Bloomberg Message",
    "ICE Chat",
    "Slack",
    "Zoom",
    "Cisco Jabber",
    "Cisco Jabber on MS SQL",
    "Cisco Jabber on Oracle",
    "Cisco Jabber on PostgreSQL",
    "EML",
    "Enterprise Number",
    "FX Connect",
    "Jive",
    "MS SQL Database",
    "Redtail Speak",
    "Reuters Dealing",
    "Reuters Eikon",
    "Reuters FX",
    "RingCentral",
    "Salesforce Chatter",
    "ServiceNow",
    "Skype for Business",
    "Text-delimited",
    "Webex Teams",
    "Web pages",
    "Workplace from Facebook",
    "XIP",
    "XSLT/XML",
    "Yieldbroker",
    "YouTube",
];

/// The documented spelling of a native source, if `kind` names one.
pub fn native_source(kind: &str) -> Option<&'static str> {
    NATIVE_SOURCES
        .iter()
        .find(|s| s.eq_ignore_ascii_case(kind.trim()))
        .copied()
}

/// How a connector maps the source's users to the tenant's users.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MappingRecord {
    /// Map automatically by the item's Email property (the user's addresses).
    pub automatic: bool,
    /// External id (as the source names a user) -> user principal name, tried first.
    pub explicit: BTreeMap<String, String>,
}

impl Default for MappingRecord {
    fn default() -> Self {
        MappingRecord {
            automatic: true,
            explicit: BTreeMap::new(),
        }
    }
}

/// Running totals of a connector, kept with each import.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorTotals {
    pub imports: u64,
    pub imported: u64,
    pub partially_imported: u64,
    pub skipped: u64,
    pub failed: u64,
    pub last_import: Option<DateTime<Utc>>,
    /// The reason of the newest failed item, if any import ever failed one.
    pub last_error: Option<String>,
    /// Whether the newest import failed every item it had to import.
    pub last_import_failed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorRecord {
    pub id: Uuid,
    pub tenant: Uuid,
    /// Unique in the tenant, case-insensitively.
    pub name: String,
    /// [`PARTNER`] or a native source of [`NATIVE_SOURCES`] (documented spelling).
    pub kind: String,
    /// The app of a partner connector.
    pub app_id: Option<Uuid>,
    pub mapping: MappingRecord,
    pub interval_minutes: u32,
    /// The users in scope (user principal names); `None` is every user.
    pub scope: Option<Vec<String>>,
    pub paused: bool,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
    #[serde(default)]
    pub totals: ConnectorTotals,
    /// When the scheduler imports next (native connectors).
    #[serde(default)]
    pub next_run: Option<DateTime<Utc>>,
    /// When the last scheduled or manual import ran (native connectors), staged items or not.
    #[serde(default)]
    pub last_run: Option<DateTime<Utc>>,
}

impl ConnectorRecord {
    pub fn is_native(&self) -> bool {
        self.kind != PARTNER
    }

    /// When the scheduler imports next: `next_run`, or one interval after creation.
    pub fn due_at(&self) -> DateTime<Utc> {
        self.next_run.unwrap_or_else(|| {
            self.created + chrono::Duration::minutes(i64::from(self.interval_minutes))
        })
    }
}

/// One failed item of an import.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailedItemRecord {
    /// The item's position in the request (partner) or in the staging batch (native).
    pub index: usize,
    /// The item's id at the source, when it has one.
    pub source_id: Option<String>,
    /// The participant as the source names them (native connectors).
    #[serde(default)]
    pub source_user: Option<String>,
    /// The Microsoft 365 user the participant maps to, when it maps.
    #[serde(default)]
    pub user: Option<String>,
    pub code: String,
    pub reason: String,
}

/// One import, with the fields of Purview's admin log. `items_available_for_import` is not
/// stored: it is the sum of the four outcomes, so the invariant holds by construction.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImportRecord {
    pub id: Uuid,
    pub connector: Uuid,
    pub completed: DateTime<Utc>,
    /// The ingestion request (partner connectors).
    pub correlation_id: Option<Uuid>,
    /// Items the source delivered (before fan-out to participants).
    pub items_from_source: u64,
    pub imported: u64,
    pub partially_imported: u64,
    pub skipped: u64,
    pub failed: u64,
    /// At most [`LISTED_FAILURES`] failed items.
    pub failures: Vec<FailedItemRecord>,
}

impl ImportRecord {
    /// Items available for import after fan-out: imported + partially imported + skipped +
    /// failed.
    pub fn items_for_import(&self) -> u64 {
        self.imported + self.partially_imported + self.skipped + self.failed
    }

    /// The import of one partner CreateItem request: every item of the request is one item
    /// from the source; after fan-out each stored copy (one per participant's mailbox) is
    /// one imported item, and each failed item is one failed item (it reached no mailbox).
    pub fn partner(connector: Uuid, correlation_id: Uuid, outcomes: &[ItemOutcomeRecord]) -> Self {
        let mut imported = 0;
        let mut failures = Vec::new();
        let mut failed = 0;
        for outcome in outcomes {
            match outcome {
                ItemOutcomeRecord::Stored { copies, .. } => imported += copies.len() as u64,
                ItemOutcomeRecord::Failed {
                    index,
                    code,
                    message,
                } => {
                    failed += 1;
                    if failures.len() < LISTED_FAILURES {
                        failures.push(FailedItemRecord {
                            index: *index,
                            source_id: None,
                            source_user: None,
                            user: None,
                            code: code.clone(),
                            reason: message.clone(),
                        });
                    }
                }
            }
        }
        ImportRecord {
            id: Uuid::new_v4(),
            connector,
            completed: Utc::now(),
            correlation_id: Some(correlation_id),
            items_from_source: outcomes.len() as u64,
            imported,
            partially_imported: 0,
            skipped: 0,
            failed,
            failures,
        }
    }
}

fn history_key(connector: Uuid, at: DateTime<Utc>, id: Uuid) -> Vec<u8> {
    let mut key = connector.as_bytes().to_vec();
    let micros = at.timestamp_micros().max(0) as u64;
    key.extend_from_slice(&(u64::MAX - micros).to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

/// The key of a partner connector in [`PARTNER_APPS_TREE`].
fn partner_key(connector: &ConnectorRecord) -> Option<Vec<u8>> {
    let app = connector.app_id?;
    Some([connector.tenant.as_bytes().as_slice(), app.as_bytes()].concat())
}

impl Store {
    fn connectors_tree(&self) -> Result<sled::Tree> {
        Ok(self.inner.db.open_tree(CONNECTORS_TREE)?)
    }

    /// The partner-app index, built first if this store predates it (at open).
    pub(super) fn partner_apps_tree(&self) -> Result<sled::Tree> {
        let tree = self.inner.db.open_tree(PARTNER_APPS_TREE)?;
        if !tree.contains_key(PARTNER_APPS_BUILT)? {
            for connector in self.connectors()? {
                if let Some(key) = partner_key(&connector) {
                    tree.insert(key, connector.id.as_bytes())?;
                }
            }
            tree.insert(PARTNER_APPS_BUILT, &[1])?;
        }
        Ok(tree)
    }

    fn history_tree(&self) -> Result<sled::Tree> {
        Ok(self.inner.db.open_tree(HISTORY_TREE)?)
    }

    /// Every connector (of every tenant), oldest first.
    pub fn connectors(&self) -> Result<Vec<ConnectorRecord>> {
        let mut out: Vec<ConnectorRecord> = self
            .connectors_tree()?
            .iter()
            .values()
            .map(|v| decode(&v?))
            .collect::<Result<_>>()?;
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    pub fn connector(&self, id: Uuid) -> Result<Option<ConnectorRecord>> {
        match self.connectors_tree()?.get(id.as_bytes())? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Creates or changes a connector; a change keeps the stored totals, last run and next run
    /// (only imports, reset and [`Store::put_connector_schedule`] change those): an admin change
    /// read before an import committed must not write the import's figures back to stale ones.
    /// A name already used by another connector of the tenant, or an app already served by
    /// another partner connector of the tenant, is a conflict. The caller serialises writes
    /// (check-then-write). Not flushed.
    pub fn put_connector(&self, connector: &ConnectorRecord) -> Result<()> {
        self.write_connector(connector, false)
    }

    /// [`Store::put_connector`] for a change of the schedule: the next run is the given one.
    pub fn put_connector_schedule(&self, connector: &ConnectorRecord) -> Result<()> {
        self.write_connector(connector, true)
    }

    fn write_connector(&self, connector: &ConnectorRecord, schedule: bool) -> Result<()> {
        let _changing = self.directory_write();
        for other in self.connectors()? {
            if other.id == connector.id || other.tenant != connector.tenant {
                continue;
            }
            if other.name.eq_ignore_ascii_case(&connector.name) {
                return Err(StoreError::Conflict(format!(
                    "A connector named '{}' already exists in tenant '{}' (id {}).",
                    other.name, other.tenant, other.id
                )));
            }
            if connector.app_id.is_some() && other.app_id == connector.app_id {
                return Err(StoreError::Conflict(format!(
                    "The app '{}' already has a partner connector in tenant '{}': '{}' (id {}).",
                    other.app_id.unwrap_or_default(),
                    other.tenant,
                    other.name,
                    other.id
                )));
            }
        }
        let key = partner_key(connector);
        (&self.connectors_tree()?, &self.partner_apps_tree()?).transaction(
            |(connectors, partner_apps)| {
                // What imports keep (totals, last run) is theirs: an admin change read before
                // an import committed must not write the import's figures back to stale ones.
                let mut connector = connector.clone();
                if let Some(bytes) = connectors.get(connector.id.as_bytes())? {
                    let current: ConnectorRecord = decode(&bytes).map_err(abort)?;
                    connector.totals = current.totals;
                    connector.last_run = current.last_run;
                    if !schedule {
                        connector.next_run = current.next_run;
                    }
                }
                let record = encode(&connector).map_err(abort)?;
                connectors.insert(connector.id.as_bytes(), record.as_slice())?;
                if let Some(key) = &key {
                    partner_apps.insert(key.as_slice(), connector.id.as_bytes())?;
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            },
        )?;
        Ok(())
    }

    /// Deletes a connector and its history. Not flushed.
    pub fn delete_connector(&self, id: Uuid) -> Result<bool> {
        let _changing = self.directory_write();
        let partner_apps = self.partner_apps_tree()?;
        let existed = (&self.connectors_tree()?, &partner_apps).transaction(
            |(connectors, partner_apps)| {
                let Some(bytes) = connectors.remove(id.as_bytes())? else {
                    return Ok(false);
                };
                let record: ConnectorRecord = decode(&bytes).map_err(abort)?;
                if let Some(key) = partner_key(&record) {
                    partner_apps.remove(key)?;
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(true)
            },
        )?;
        for tree in [
            self.history_tree()?,
            self.staging_tree()?,
            self.seen_tree()?,
        ] {
            for key in tree.scan_prefix(id.as_bytes()).keys() {
                tree.remove(key?)?;
            }
        }
        Ok(existed)
    }

    /// Deletes every connector of `tenant` with its history (the tenant is being deleted).
    pub fn delete_connectors_of(&self, tenant: TenantId) -> Result<()> {
        for connector in self.connectors()? {
            if connector.tenant == tenant.0 {
                self.delete_connector(connector.id)?;
            }
        }
        Ok(())
    }

    /// Reset: forgets every connector's imports (history, totals, staged items, what was
    /// imported); with `delete`, the connectors too. Not flushed.
    pub fn reset_connectors(&self, delete: bool) -> Result<()> {
        let _changing = self.directory_write();
        self.history_tree()?.clear()?;
        self.staging_tree()?.clear()?;
        self.seen_tree()?.clear()?;
        let tree = self.connectors_tree()?;
        if delete {
            tree.clear()?;
            let partner_apps = self.inner.db.open_tree(PARTNER_APPS_TREE)?;
            partner_apps.clear()?;
            partner_apps.insert(PARTNER_APPS_BUILT, &[1])?;
            return Ok(());
        }
        for mut c in self.connectors()? {
            c.totals = ConnectorTotals::default();
            c.last_run = None;
            tree.insert(c.id.as_bytes(), encode(&c)?)?;
        }
        Ok(())
    }

    /// The partner connector of `app_id` in `tenant`, if the tenant has one.
    pub fn partner_connector(
        &self,
        tenant: TenantId,
        app_id: Uuid,
    ) -> Result<Option<ConnectorRecord>> {
        let id = self.inner.cache.partner(tenant.0, app_id, || {
            let key = [tenant.0.as_bytes().as_slice(), app_id.as_bytes()].concat();
            Ok(self
                .partner_apps_tree()?
                .get(key)?
                .and_then(|id| Uuid::from_slice(&id).ok()))
        })?;
        let Some(id) = id else {
            return Ok(None);
        };
        Ok(self
            .connector(id)?
            .filter(|c| c.tenant == tenant.0 && c.app_id == Some(app_id)))
    }

    /// Records one import of `connector` and updates its totals, in one transaction. Not
    /// flushed (the next flush covers it). False when the connector no longer exists.
    #[cfg(test)]
    pub fn record_import(&self, import: &ImportRecord) -> Result<bool> {
        let connectors = self.connectors_tree()?;
        let history = self.history_tree()?;
        let found = (&connectors, &history).transaction(|(connectors, history)| {
            let Some(bytes) = connectors.get(import.connector.as_bytes())? else {
                return Ok(false);
            };
            let mut connector: ConnectorRecord = decode(&bytes).map_err(abort)?;
            add_to_totals(&mut connector.totals, import);
            connectors.insert(
                import.connector.as_bytes(),
                encode(&connector).map_err(abort)?,
            )?;
            history.insert(
                history_key(import.connector, import.completed, import.id),
                encode(import).map_err(abort)?,
            )?;
            Ok::<_, ConflictableTransactionError<StoreError>>(true)
        })?;
        Ok(found)
    }

    /// The imports of a connector, newest first.
    pub fn imports(&self, connector: Uuid, skip: usize, top: usize) -> Result<Vec<ImportRecord>> {
        self.history_tree()?
            .scan_prefix(connector.as_bytes())
            .values()
            .skip(skip)
            .take(top)
            .map(|v| decode(&v?))
            .collect()
    }

    /// The imports of a connector completed at or after `since`, newest first.
    pub fn imports_since(
        &self,
        connector: Uuid,
        since: DateTime<Utc>,
    ) -> Result<Vec<ImportRecord>> {
        let mut out = Vec::new();
        for value in self
            .history_tree()?
            .scan_prefix(connector.as_bytes())
            .values()
        {
            let import: ImportRecord = decode(&value?)?;
            if import.completed < since {
                break;
            }
            out.push(import);
        }
        Ok(out)
    }
}

/// What a native connector's source delivered, as delivered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", tag = "format")]
pub enum StagedPayload {
    /// A JSON item (its shape is checked when staged).
    Json { item: serde_json::Value },
    /// An RFC 5322 message, base64.
    Eml { base64: String },
}

/// One item in a native connector's staging area.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StagedRecord {
    pub staged: DateTime<Utc>,
    pub payload: StagedPayload,
}

/// A staged item read back for an import: its key (to consume it) and record.
pub struct Staged {
    pub key: Vec<u8>,
    pub record: StagedRecord,
}

/// Everything one import writes, atomically: a partner connector's EWS request, or a native
/// connector's import of its staged items.
pub struct ImportCommit {
    /// Items and copies (in `Inbox/<Source>` of the participants) and the journal record.
    pub ingestion: super::IngestionCommit,
    pub import: ImportRecord,
    /// Dedup keys of the items imported (see [`Store::already_imported`]).
    pub seen: Vec<Vec<u8>>,
    /// Staging keys of the items this import consumed.
    pub consumed: Vec<Vec<u8>>,
    /// The connector's next scheduled run (native connectors; also sets the last run).
    pub next_run: Option<DateTime<Utc>>,
    /// Store the items only while the connector exists (a native import: when it was deleted
    /// meanwhile, nothing is stored and the run answers 404). An EWS request of a partner
    /// connector stores its items all the same: the partner sent them.
    pub requires_connector: bool,
}

fn prefixed(connector: Uuid, rest: &[u8]) -> Vec<u8> {
    let mut key = connector.as_bytes().to_vec();
    key.extend_from_slice(rest);
    key
}

impl Store {
    fn staging_tree(&self) -> Result<sled::Tree> {
        Ok(self.inner.db.open_tree(STAGING_TREE)?)
    }

    fn seen_tree(&self) -> Result<sled::Tree> {
        Ok(self.inner.db.open_tree(SEEN_TREE)?)
    }

    /// Adds items to a connector's staging area, all or none, and waits until they are on
    /// disk. Returns how many items are staged now; `None` when the connector does not exist.
    pub async fn stage(&self, connector: Uuid, records: &[StagedRecord]) -> Result<Option<usize>> {
        let mut writes = Vec::with_capacity(records.len());
        for record in records {
            let sequence = self.inner.db.generate_id()?;
            writes.push((
                prefixed(connector, &sequence.to_be_bytes()),
                encode(record)?,
            ));
        }
        let connectors = self.connectors_tree()?;
        let staging = self.staging_tree()?;
        let found = (&connectors, &staging).transaction(|(connectors, staging)| {
            if connectors.get(connector.as_bytes())?.is_none() {
                return Ok(false);
            }
            for (key, value) in &writes {
                staging.insert(key.as_slice(), value.as_slice())?;
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(true)
        })?;
        if !found {
            return Ok(None);
        }
        self.durable().await?;
        Ok(Some(self.pending(connector)?))
    }

    /// Number of items waiting in a connector's staging area.
    pub fn pending(&self, connector: Uuid) -> Result<usize> {
        Ok(self
            .staging_tree()?
            .scan_prefix(connector.as_bytes())
            .keys()
            .count())
    }

    /// The staged items of a connector, oldest first, at most `max`.
    pub fn staged(&self, connector: Uuid, max: usize, max_bytes: usize) -> Result<Vec<Staged>> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for entry in self.staging_tree()?.scan_prefix(connector.as_bytes()) {
            let (key, value) = entry?;
            bytes = bytes.saturating_add(value.len());
            // At least one, so a run always makes progress.
            if out.len() >= max || (!out.is_empty() && bytes > max_bytes) {
                break;
            }
            out.push(Staged {
                key: key.to_vec(),
                record: decode(&value)?,
            });
        }
        Ok(out)
    }

    /// Whether `connector` already imported an item with this dedup key.
    pub fn already_imported(&self, connector: Uuid, dedup_key: &[u8]) -> Result<bool> {
        Ok(self
            .seen_tree()?
            .contains_key(prefixed(connector, dedup_key))?)
    }

    /// Sets when a connector runs next (and when it last ran). False when it does not exist.
    pub fn schedule_run(
        &self,
        connector: Uuid,
        last_run: Option<DateTime<Utc>>,
        next_run: DateTime<Utc>,
    ) -> Result<bool> {
        let tree = self.connectors_tree()?;
        let found = tree.transaction(|tree| {
            let Some(bytes) = tree.get(connector.as_bytes())? else {
                return Ok(false);
            };
            let mut record: ConnectorRecord = decode(&bytes).map_err(abort)?;
            if last_run.is_some() {
                record.last_run = last_run;
            }
            record.next_run = Some(next_run);
            tree.insert(connector.as_bytes(), encode(&record).map_err(abort)?)?;
            Ok::<_, ConflictableTransactionError<StoreError>>(true)
        })?;
        Ok(found)
    }

    /// Writes one import (items, copies, journal, history, totals; for a native connector also
    /// dedup keys, staged items consumed and next run) in one transaction, through the
    /// committer (durable when this returns). When the connector was deleted meanwhile, the
    /// items and journal are still written (they were accepted) and the answer is false.
    pub async fn commit_import(&self, mut commit: ImportCommit) -> Result<bool> {
        let after = commit.ingestion.after.take();
        let tenant = commit.ingestion.record.tenant;
        let prepared = self.prepare_ingestion(commit.ingestion, false)?;
        let connector = commit.import.connector;
        let import = commit.import;
        let history_entry = (
            history_key(connector, import.completed, import.id),
            encode(&import)?,
        );
        let seen: Vec<Vec<u8>> = commit.seen.iter().map(|k| prefixed(connector, k)).collect();
        let consumed = commit.consumed;
        let next_run = commit.next_run;
        let requires_connector = commit.requires_connector;
        let store = self.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Box::new(move || {
            store.check_tenant_not_gone(tenant)?;
            let i = &store.inner;
            prepared.write_files(&i.files, true)?;
            let trees = (
                &i.items,
                &i.copies,
                &i.ingestions,
                &store.connectors_tree()?,
                &store.history_tree()?,
                &store.staging_tree()?,
                &store.seen_tree()?,
            );
            let updated = trees.transaction(
                |(items, copies, ingestions, connectors, history, staging, seen_tree)| {
                    let existing = connectors.get(connector.as_bytes())?;
                    if existing.is_none() && requires_connector {
                        return Ok((false, None));
                    }
                    // The run read these staged items before it waited for the committer: a
                    // reset (or a connector reset) that removed them since must not be undone
                    // by storing what they held.
                    for key in &consumed {
                        if staging.get(key.as_slice())?.is_none() {
                            return Err(abort(StoreError::Conflict(
                                "the staged items of this import were removed meanwhile (a \
                                 reset): nothing was imported"
                                    .into(),
                            )));
                        }
                    }
                    prepared.write([items, copies, ingestions])?;
                    let Some(bytes) = existing else {
                        return Ok((true, None));
                    };
                    let mut record: ConnectorRecord = decode(&bytes).map_err(abort)?;
                    add_to_totals(&mut record.totals, &import);
                    if next_run.is_some() {
                        record.last_run = Some(import.completed);
                        record.next_run = next_run;
                    }
                    let record = encode(&record).map_err(abort)?;
                    connectors.insert(connector.as_bytes(), record.as_slice())?;
                    history.insert(history_entry.0.as_slice(), history_entry.1.as_slice())?;
                    for key in &seen {
                        seen_tree.insert(key.as_slice(), import.id.as_bytes())?;
                    }
                    for key in &consumed {
                        staging.remove(key.as_slice())?;
                    }
                    Ok::<_, ConflictableTransactionError<StoreError>>((true, Some(record)))
                },
            )?;
            let (wrote_items, updated) = updated;
            let mut payload = super::wal::Payload::default();
            if wrote_items {
                prepared.log(&mut payload);
            }
            if let Some(record) = &updated {
                payload.insert(CONNECTORS_TREE, connector.as_bytes(), record);
                payload.insert(HISTORY_TREE, &history_entry.0, &history_entry.1);
                for key in &seen {
                    payload.insert(SEEN_TREE, key, import.id.as_bytes());
                }
                for key in &consumed {
                    payload.remove(STAGING_TREE, key);
                }
            }
            let _ = tx.send(updated.is_some());
            let records = prepared.records;
            let after = after.filter(|_| wrote_items);
            Ok(super::Logged::Applied {
                payload,
                after: after.map(|after| -> super::Hook { Box::new(move || after(records)) }),
                if_logged: None,
            })
        }))
        .await?;
        Ok(rx.await.unwrap_or(false))
    }
}

/// Adds one import to a connector's running totals.
fn add_to_totals(t: &mut ConnectorTotals, import: &ImportRecord) {
    t.imports += 1;
    t.imported += import.imported;
    t.partially_imported += import.partially_imported;
    t.skipped += import.skipped;
    t.failed += import.failed;
    t.last_import = Some(import.completed);
    if let Some(failure) = import.failures.first() {
        t.last_error = Some(failure.reason.clone());
    }
    t.last_import_failed =
        import.failed > 0 && import.imported + import.partially_imported + import.skipped == 0;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::model::CopyRecord;

    /// A new connector: a partner one of `app`, or a native (Pivot) one.
    pub(crate) fn connector(tenant: Uuid, name: &str, app: Option<Uuid>) -> ConnectorRecord {
        ConnectorRecord {
            id: Uuid::new_v4(),
            tenant,
            name: name.into(),
            kind: if app.is_some() { PARTNER } else { "Pivot" }.into(),
            app_id: app,
            mapping: MappingRecord::default(),
            interval_minutes: DEFAULT_INTERVAL_MINUTES,
            scope: None,
            paused: false,
            created: Utc::now(),
            modified: Utc::now(),
            totals: ConnectorTotals::default(),
            next_run: None,
            last_run: None,
        }
    }

    fn copy(mailbox: &str) -> CopyRecord {
        CopyRecord {
            mailbox: mailbox.into(),
            folder: "Inbox".into(),
        }
    }

    /// The partner connector of a request is found through its index, which follows creation,
    /// deletion and reset, and is built for a store made before it.
    #[test]
    fn partner_connectors_are_found_by_tenant_and_app() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let (t1, t2, app, other_app) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        let feeds: Vec<ConnectorRecord> = (0..50)
            .map(|n| connector(t1, &format!("Feed {n}"), Some(Uuid::new_v4())))
            .collect();
        for c in &feeds {
            store.put_connector(c).expect("put");
        }
        let mine = connector(t1, "Mine", Some(app));
        store.put_connector(&mine).expect("put");
        store
            .put_connector(&connector(t1, "Native", None))
            .expect("put");
        let find = |t: Uuid, a: Uuid| store.partner_connector(TenantId(t), a).expect("find");
        assert_eq!(find(t1, app).map(|c| c.id), Some(mine.id));
        assert_eq!(
            find(t1, feeds[7].app_id.expect("app")).map(|c| c.id),
            Some(feeds[7].id)
        );
        assert!(find(t2, app).is_none(), "another tenant's");
        assert!(find(t1, other_app).is_none());
        // Updated records (paused) are what the lookup answers.
        store
            .put_connector(&ConnectorRecord {
                paused: true,
                ..mine.clone()
            })
            .expect("update");
        assert!(find(t1, app).expect("found").paused);
        assert!(store.delete_connector(mine.id).expect("delete"));
        assert!(find(t1, app).is_none(), "deleted");
        // A store made before the index: it is built on first use.
        store
            .inner
            .db
            .drop_tree(PARTNER_APPS_TREE)
            .expect("drop the index");
        assert_eq!(
            find(t1, feeds[3].app_id.expect("app")).map(|c| c.id),
            Some(feeds[3].id)
        );
        store.reset_connectors(true).expect("reset");
        assert!(find(t1, feeds[3].app_id.expect("app")).is_none(), "reset");
    }

    /// A native import whose connector was deleted meanwhile stores nothing (its run answers
    /// 404, so nothing may be stored); an EWS request of a deleted partner connector stores
    /// its items all the same (the partner sent them), without an import record.
    /// An import of `connector` storing one item of `tenant` (its id), consuming `consumed`,
    /// scheduling a next run, for a native connector (`requires_connector`).
    fn one_item_import(
        tenant: Uuid,
        connector: Uuid,
        consumed: Vec<Vec<u8>>,
    ) -> (Uuid, ImportCommit) {
        let item = crate::store::mailbox::tests::item(tenant, &["a@x"], Utc::now());
        let id = item.id;
        let commit = ImportCommit {
            ingestion: super::super::IngestionCommit {
                record: crate::store::mailbox::tests::record_of(&item),
                items: vec![(item, vec![])],
                after: None,
            },
            import: ImportRecord::partner(connector, Uuid::new_v4(), &[]),
            seen: vec![],
            consumed,
            next_run: Some(Utc::now()),
            requires_connector: true,
        };
        (id, commit)
    }

    #[tokio::test]
    async fn an_import_of_a_deleted_connector() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let tenant = Uuid::new_v4();
        let gone = connector(tenant, "Gone", None);
        for requires_connector in [true, false] {
            let (id, mut commit) = one_item_import(tenant, gone.id, vec![]);
            commit.next_run = None;
            commit.requires_connector = requires_connector;
            assert!(
                !store.commit_import(commit).await.expect("commit"),
                "no import recorded"
            );
            assert_eq!(
                store.item(id).expect("read").is_some(),
                !requires_connector,
                "stored only for an EWS request (requires_connector {requires_connector})"
            );
        }
    }

    /// A run that read staged items before a reset removed them stores nothing when it
    /// commits (it undid the reset before: the items came back in mailboxes and search).
    #[tokio::test]
    async fn an_import_of_items_a_reset_removed_meanwhile_stores_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let tenant = Uuid::new_v4();
        let c = connector(tenant, "Pivot", None);
        store.put_connector(&c).expect("put");
        let record = StagedRecord {
            staged: Utc::now(),
            payload: StagedPayload::Eml {
                base64: "x".repeat(10),
            },
        };
        let commit = |consumed: Vec<Vec<u8>>| one_item_import(tenant, c.id, consumed);
        for reset in [true, false] {
            store
                .stage(c.id, std::slice::from_ref(&record))
                .await
                .expect("stage");
            let read = store.staged(c.id, 10, usize::MAX).expect("staged");
            let keys: Vec<Vec<u8>> = read.into_iter().map(|s| s.key).collect();
            if reset {
                store.reset_connectors(false).expect("reset");
            }
            let (id, commit) = commit(keys);
            let outcome = store.commit_import(commit).await;
            if reset {
                assert!(
                    matches!(outcome, Err(StoreError::Conflict(_))),
                    "{outcome:?}"
                );
                assert!(store.item(id).expect("read").is_none(), "nothing stored");
                let now = store.connector(c.id).expect("read").expect("there");
                assert_eq!(now.totals.imports, 0, "no import counted");
            } else {
                assert!(outcome.expect("imported"));
                assert!(store.item(id).expect("read").is_some());
                assert_eq!(store.pending(c.id).expect("pending"), 0);
            }
        }
    }

    /// An admin change read before an import committed keeps the import's totals, last run
    /// and next run (it wrote the stale ones back before).
    #[test]
    fn a_change_read_before_an_import_keeps_its_totals() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let c = connector(Uuid::new_v4(), "Feed", Some(Uuid::new_v4()));
        store.put_connector(&c).expect("put");
        let mut stale = store.connector(c.id).expect("read").expect("there");
        let outcomes = vec![ItemOutcomeRecord::Stored {
            index: 0,
            item_id: Uuid::new_v4(),
            copies: vec![copy("a@x")],
        }];
        assert!(store
            .record_import(&ImportRecord::partner(c.id, Uuid::new_v4(), &outcomes))
            .expect("record"));
        // A run moved the next run meanwhile.
        let next = Utc::now() + chrono::Duration::minutes(30);
        store
            .schedule_run(c.id, Some(Utc::now()), next)
            .expect("scheduled");
        stale.name = "Renamed".into();
        store.put_connector(&stale).expect("put");
        let now = store.connector(c.id).expect("read").expect("there");
        assert_eq!(now.name, "Renamed");
        assert_eq!((now.totals.imports, now.totals.imported), (1, 1));
        assert_eq!(now.next_run, Some(next), "the run's next run kept");
        // A change of the schedule sets it.
        let mut rescheduled = now.clone();
        let later = next + chrono::Duration::hours(1);
        rescheduled.next_run = Some(later);
        store.put_connector_schedule(&rescheduled).expect("put");
        let now = store.connector(c.id).expect("read").expect("there");
        assert_eq!(now.next_run, Some(later));
    }

    /// A run reads staged items up to a count and a byte budget, and at least one.
    #[tokio::test]
    async fn a_run_reads_staged_items_within_its_budgets() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let c = connector(Uuid::new_v4(), "Pivot", None);
        store.put_connector(&c).expect("put");
        let record = StagedRecord {
            staged: Utc::now(),
            payload: StagedPayload::Eml {
                base64: "x".repeat(1000),
            },
        };
        let records = vec![record.clone(), record.clone(), record];
        assert_eq!(store.stage(c.id, &records).await.expect("stage"), Some(3));
        let count = |max, bytes| store.staged(c.id, max, bytes).expect("staged").len();
        assert_eq!(count(10, usize::MAX), 3);
        assert_eq!(count(2, usize::MAX), 2);
        assert_eq!(count(10, 2500), 2, "two fit in 2,500 bytes");
        assert_eq!(count(10, 0), 1, "at least one");
    }

    #[test]
    fn names_are_unique_per_tenant_and_history_is_newest_first() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let (t1, t2, app) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let a = connector(t1, "Feed", Some(app));
        store.put_connector(&a).expect("put");
        assert!(matches!(
            store.put_connector(&connector(t1, "feed", None)),
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            store.put_connector(&connector(t1, "Other", Some(app))),
            Err(StoreError::Conflict(_))
        ));
        store
            .put_connector(&connector(t2, "Feed", Some(app)))
            .expect("another tenant");
        assert_eq!(
            store
                .partner_connector(TenantId(t1), app)
                .expect("read")
                .map(|c| c.id),
            Some(a.id)
        );

        let outcomes = vec![
            ItemOutcomeRecord::Stored {
                index: 0,
                item_id: Uuid::new_v4(),
                copies: vec![copy("a@x"), copy("b@x")],
            },
            ItemOutcomeRecord::Failed {
                index: 1,
                code: "ErrorItemSave".into(),
                message: "no participant".into(),
            },
        ];
        let first = ImportRecord::partner(a.id, Uuid::new_v4(), &outcomes);
        assert_eq!(first.items_from_source, 2);
        assert_eq!(first.items_for_import(), 3);
        assert_eq!((first.imported, first.failed), (2, 1));
        assert!(store.record_import(&first).expect("record"));
        let mut second = ImportRecord::partner(a.id, Uuid::new_v4(), &outcomes[..1]);
        second.completed = first.completed + chrono::Duration::seconds(1);
        assert!(store.record_import(&second).expect("record"));
        let history = store.imports(a.id, 0, 10).expect("history");
        assert_eq!(
            history.iter().map(|r| r.id).collect::<Vec<_>>(),
            [second.id, first.id]
        );
        let totals = store.connector(a.id).expect("read").expect("there").totals;
        assert_eq!((totals.imports, totals.imported, totals.failed), (2, 4, 1));
        assert_eq!(totals.last_error.as_deref(), Some("no participant"));
        assert!(!totals.last_import_failed);

        assert!(store.delete_connector(a.id).expect("delete"));
        assert!(store.imports(a.id, 0, 10).expect("history").is_empty());
        assert!(!store
            .record_import(&ImportRecord::partner(a.id, Uuid::new_v4(), &outcomes))
            .expect("record"));
    }
}
