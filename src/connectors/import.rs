//! One import of a native connector: the staged items become items in `Inbox/<Source>` of
//! every mapped participant, and one record in the connector's history.
//!
//! Accounting, per participant (the fan-out): a participant whose user gets a copy is imported
//! (or partially imported when attachments the source could not supply were dropped); every
//! participant of an item the connector already imported is skipped; a participant that maps
//! to no user, to a user without an active mailbox or out of the connector's scope, and every
//! participant of an item over 10 MB, is failed, with its reason. So "available for import"
//! (imported + partially + skipped + failed) counts participants, as Purview's log does.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use tracing::{info, warn};
use uuid::Uuid;

use super::staging::{self, NativeItem};
use crate::app::AppState;
use crate::domain::{Destination, Folder, TenantId, MAX_ITEM_BYTES};
use crate::store::connectors::{
    ConnectorRecord, FailedItemRecord, ImportCommit, ImportRecord, LISTED_FAILURES,
};
use crate::store::model::{IngestionRecord, ItemOutcomeRecord, ItemRecord, UserRecord};
use crate::store::{IngestionCommit, StoreError};

/// Staged items imported by one run at most (the rest wait for the next run).
pub const MAX_ITEMS_PER_RUN: usize = 10_000;
/// Staged bytes one run reads at most (the rest wait for the next run; a run always takes at
/// least one item): a run holds what it reads in memory, and staging has no total limit.
pub const MAX_BYTES_PER_RUN: usize = 64 * 1024 * 1024;

/// Imports never run concurrently (a manual run and the scheduler, or two manual runs).
static IMPORTS: Mutex<()> = Mutex::const_new(());

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("No data connector with id '{0}'.")]
    NotFound(Uuid),
    #[error("The connector '{0}' is a partner connector: its app pushes items over EWS, there is nothing to import.")]
    Partner(String),
    #[error(
        "The connector '{0}' is paused: resume it (PUT with {{\"paused\": false}}) to import."
    )]
    Paused(String),
    #[error("The tenant of connector '{0}' no longer exists.")]
    NoTenant(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who asked for the import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `POST .../{id}/run`: refused while paused.
    Manual,
    /// The scheduler: only runs connectors that are not paused.
    Scheduled,
}

/// Imports what is staged for `connector` now. `None` when nothing was staged (the run is
/// still noted: the next run is scheduled from now), or when a scheduled run finds the
/// connector paused or not due any more: the scheduler chose it from a list read before it
/// waited for the import in progress, and an admin may have paused it or run it meanwhile.
pub async fn run(
    state: &AppState,
    connector: Uuid,
    trigger: Trigger,
) -> Result<Option<ImportRecord>, ImportError> {
    let _one_at_a_time = IMPORTS.lock().await;
    let store = &state.store;
    let c = store
        .connector(connector)?
        .ok_or(ImportError::NotFound(connector))?;
    if !c.is_native() {
        return Err(ImportError::Partner(c.name));
    }
    if c.paused && trigger == Trigger::Manual {
        return Err(ImportError::Paused(c.name));
    }
    if trigger == Trigger::Scheduled && (c.paused || c.due_at() > Utc::now()) {
        return Ok(None);
    }
    if store.tenant(TenantId(c.tenant))?.is_none() {
        return Err(ImportError::NoTenant(c.name));
    }
    let now = Utc::now();
    let next_run = now + chrono::Duration::minutes(i64::from(c.interval_minutes));
    let staged = store.staged(c.id, MAX_ITEMS_PER_RUN, MAX_BYTES_PER_RUN)?;
    if staged.is_empty() {
        store.schedule_run(c.id, Some(now), next_run)?;
        store.durable().await?;
        return Ok(None);
    }

    let mut plan = Plan::new(&c, now);
    let mut seen_now: HashSet<Vec<u8>> = HashSet::new();
    let mut consumed = Vec::with_capacity(staged.len());
    for (index, entry) in staged.into_iter().enumerate() {
        consumed.push(entry.key);
        match staging::read(&c.kind, &entry.record.payload) {
            Ok(native) => {
                let duplicate = seen_now.contains(&native.dedup_key)
                    || store.already_imported(c.id, &native.dedup_key)?;
                if duplicate {
                    plan.skip(&native);
                    continue;
                }
                if let Some(key) = plan.import(state, index, native)? {
                    seen_now.insert(key);
                }
            }
            Err(e) => plan.unreadable(index, e.to_string()),
        }
    }

    let (mut commit, import) = plan.finish(consumed, seen_now, next_run);
    commit.ingestion.after = Some(crate::search::indexer(state));
    if !store.commit_import(commit).await? {
        return Err(ImportError::NotFound(connector));
    }
    crate::http::metrics::METRICS.connector_import(&import);
    info!(
        connector = %c.id,
        import = %import.id,
        from_source = import.items_from_source,
        imported = import.imported,
        partially = import.partially_imported,
        skipped = import.skipped,
        failed = import.failed,
        "connector import committed"
    );
    Ok(Some(import))
}

/// The import being built.
struct Plan<'a> {
    connector: &'a ConnectorRecord,
    import: ImportRecord,
    outcomes: Vec<ItemOutcomeRecord>,
    items: Vec<(ItemRecord, Vec<Vec<u8>>)>,
    folder: Folder,
}

/// What a participant resolved to.
enum Resolved {
    User(UserRecord),
    Failed {
        user: Option<String>,
        code: &'static str,
        reason: String,
    },
}

impl<'a> Plan<'a> {
    fn new(connector: &'a ConnectorRecord, now: DateTime<Utc>) -> Self {
        Plan {
            connector,
            import: ImportRecord {
                id: Uuid::now_v7(),
                connector: connector.id,
                completed: now,
                correlation_id: None,
                items_from_source: 0,
                imported: 0,
                partially_imported: 0,
                skipped: 0,
                failed: 0,
                failures: Vec::new(),
            },
            outcomes: Vec::new(),
            items: Vec::new(),
            // `Inbox/<Source>`; a '/' in a source's name would read as a deeper folder.
            folder: Folder::InboxSub(connector.kind.replace('/', "-")),
        }
    }

    fn fail(
        &mut self,
        index: usize,
        source_id: Option<&str>,
        source_user: Option<&str>,
        user: Option<String>,
        code: &str,
        reason: String,
    ) {
        self.import.failed += 1;
        if self.import.failures.len() < LISTED_FAILURES {
            self.import.failures.push(FailedItemRecord {
                index,
                source_id: source_id.map(str::to_string),
                source_user: source_user.map(str::to_string),
                user,
                code: code.to_string(),
                reason,
            });
        }
    }

    /// A staged item that cannot be read any more (staged by an older version, say).
    fn unreadable(&mut self, index: usize, reason: String) {
        self.import.items_from_source += 1;
        let reason = format!("The staged item could not be read: {reason}");
        self.fail(index, None, None, None, "ErrorItemSave", reason.clone());
        self.outcomes.push(ItemOutcomeRecord::Failed {
            index,
            code: "ErrorItemSave".into(),
            message: reason,
        });
    }

    fn skip(&mut self, native: &NativeItem) {
        self.import.items_from_source += 1;
        self.import.skipped += native.participants.len() as u64;
    }

    /// Resolves one participant: the connector's mapping table first, then (automatic
    /// mapping) the tenant's addresses; then the mailbox and the connector's scope.
    fn resolve(&self, state: &AppState, participant: &str) -> Result<Resolved, StoreError> {
        let tenant = TenantId(self.connector.tenant);
        let explicit = self
            .connector
            .mapping
            .explicit
            .iter()
            .find(|(external, _)| external.eq_ignore_ascii_case(participant))
            .map(|(_, upn)| upn);
        let user = match explicit {
            Some(upn) => state.store.user(tenant, upn)?,
            None if self.connector.mapping.automatic => state
                .store
                .user_by_address(tenant, participant)?
                .map(Arc::unwrap_or_clone),
            None => None,
        };
        let Some(user) = user else {
            let how = if self.connector.mapping.automatic {
                "no user of the tenant has this address and the connector's mapping table does not name it"
            } else {
                "the connector's mapping table does not name it (automatic mapping is off)"
            };
            return Ok(Resolved::Failed {
                user: None,
                code: "UserNotMapped",
                reason: format!("The participant '{participant}' could not be mapped: {how}."),
            });
        };
        let upn = user.user_principal_name.clone();
        if !user.mailbox_enabled {
            return Ok(Resolved::Failed {
                user: Some(upn.clone()),
                code: "MailboxNotActive",
                reason: format!("The user '{upn}' has no active mailbox."),
            });
        }
        if let Some(scope) = &self.connector.scope {
            if !scope.iter().any(|u| u.eq_ignore_ascii_case(&upn)) {
                return Ok(Resolved::Failed {
                    user: Some(upn.clone()),
                    code: "UserOutOfScope",
                    reason: format!("The user '{upn}' is not in the connector's scope."),
                });
            }
        }
        Ok(Resolved::User(user))
    }

    /// Plans the copies of one item. Returns its dedup key when it reached a mailbox.
    fn import(
        &mut self,
        state: &AppState,
        index: usize,
        native: NativeItem,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.import.items_from_source += 1;
        let source_id = native.source_id.as_deref();
        // Each user once, even when two participants map to the same user; every participant
        // counts (as a re-delivery skips every participant).
        let mut users: BTreeMap<String, String> = BTreeMap::new();
        let mut mapped = 0u64;
        let mut failures = Vec::new();
        for participant in &native.participants {
            match self.resolve(state, participant)? {
                Resolved::User(user) => {
                    mapped += 1;
                    users
                        .entry(user.user_principal_name.to_lowercase())
                        .or_insert_with(|| participant.clone());
                }
                Resolved::Failed { user, code, reason } => {
                    failures.push((participant.clone(), user, code, reason))
                }
            }
        }
        if native.item.size > MAX_ITEM_BYTES {
            let reason = format!(
                "The item is {} bytes, over the {MAX_ITEM_BYTES}-byte (10 MB) limit.",
                native.item.size
            );
            for (upn, participant) in &users {
                let user = Some(upn.clone());
                self.fail(
                    index,
                    source_id,
                    Some(participant),
                    user,
                    "ItemTooLarge",
                    reason.clone(),
                );
            }
            for (participant, user, _, _) in &failures {
                self.fail(
                    index,
                    source_id,
                    Some(participant),
                    user.clone(),
                    "ItemTooLarge",
                    reason.clone(),
                );
            }
            self.outcomes.push(ItemOutcomeRecord::Failed {
                index,
                code: "ErrorMessageSizeExceeded".into(),
                message: reason,
            });
            return Ok(None);
        }
        for (participant, user, code, reason) in &failures {
            self.fail(
                index,
                source_id,
                Some(participant),
                user.clone(),
                code,
                reason.clone(),
            );
        }
        if users.is_empty() {
            let message = "No participant maps to a user with an active mailbox in scope.";
            self.outcomes.push(ItemOutcomeRecord::Failed {
                index,
                code: "ErrorItemSave".into(),
                message: message.into(),
            });
            return Ok(None);
        }
        if native.dropped_attachments.is_empty() {
            self.import.imported += mapped;
        } else {
            self.import.partially_imported += mapped;
        }
        let destinations: Vec<Destination> = users
            .into_keys()
            .map(|mailbox| Destination {
                mailbox,
                folder: self.folder.clone(),
            })
            .collect();
        let id = Uuid::now_v7();
        let record = crate::ingest::item_record(
            id,
            self.connector.tenant,
            None,
            self.import.id,
            self.import.completed,
            &native.item,
            &destinations,
        );
        self.outcomes.push(ItemOutcomeRecord::Stored {
            index,
            item_id: id,
            copies: record.copies.clone(),
        });
        let contents = native
            .item
            .attachments
            .into_iter()
            .map(|a| a.content)
            .collect();
        self.items.push((record, contents));
        Ok(Some(native.dedup_key))
    }

    fn finish(
        self,
        consumed: Vec<Vec<u8>>,
        seen: HashSet<Vec<u8>>,
        next_run: DateTime<Utc>,
    ) -> (ImportCommit, ImportRecord) {
        let stored = self.items.len();
        let outcome = match (stored, self.outcomes.len()) {
            (0, 0) => "Success",
            (0, _) => "Failed",
            (s, n) if s == n => "Success",
            _ => "PartialSuccess",
        };
        if self.import.failed > 0 && self.import.failures.len() as u64 == LISTED_FAILURES as u64 {
            warn!(
                failed = self.import.failed,
                "only the first {LISTED_FAILURES} failed items are listed in the import record"
            );
        }
        let record = IngestionRecord {
            correlation_id: self.import.id,
            tenant: self.connector.tenant,
            app_id: None,
            received: self.import.completed,
            operation: format!("ConnectorImport ({})", self.connector.name),
            http_status: 200,
            outcome: outcome.into(),
            items: self.outcomes,
            error: None,
        };
        let import = self.import;
        let commit = ImportCommit {
            ingestion: IngestionCommit {
                record,
                items: self.items,
                after: None,
            },
            import: import.clone(),
            seen: seen.into_iter().collect(),
            consumed,
            next_run: Some(next_run),
            requires_connector: true,
        };
        (commit, import)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::connectors::{StagedPayload, StagedRecord};

    /// A scheduled run re-reads its connector once it has the import lock: one paused, or run
    /// (so not due) while the scheduler waited for another import, is not imported.
    #[tokio::test]
    async fn a_scheduled_run_of_a_connector_paused_or_not_due_meanwhile_imports_nothing() {
        let (_dir, state) = crate::identity::bearer::tests::test_state();
        let tenant = Uuid::parse_str(crate::identity::bearer::tests::TENANT).expect("tenant");
        let mut c = crate::store::connectors::tests::connector(tenant, "Pivot", None);
        let staged = StagedRecord {
            staged: Utc::now(),
            payload: StagedPayload::Eml { base64: "x".into() },
        };
        let minute = chrono::Duration::minutes(1);
        for (paused, next_run, runs) in [
            (true, Utc::now() - minute, false),
            (false, Utc::now() + minute * 60, false),
            (false, Utc::now() - minute, true),
        ] {
            c.paused = paused;
            c.next_run = Some(next_run);
            state.store.put_connector_schedule(&c).expect("put");
            if state.store.pending(c.id).expect("pending") == 0 {
                state
                    .store
                    .stage(c.id, std::slice::from_ref(&staged))
                    .await
                    .expect("stage");
            }
            let outcome = run(&state, c.id, Trigger::Scheduled).await.expect("run");
            assert_eq!(outcome.is_some(), runs, "paused {paused}, due {next_run}");
            let pending = state.store.pending(c.id).expect("pending");
            assert_eq!(
                pending,
                usize::from(!runs),
                "paused {paused}, due {next_run}"
            );
        }
    }
}
