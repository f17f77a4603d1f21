//! Mailbox inspection and maintenance over the stored items: deletion (subject to litigation
//! holds), mailbox and folder listings, the ingestion journal, reset and the retention sweep.

use uuid::Uuid;

use super::model::*;
use super::{abort, blob_key, copy_key, decode, Result, Store, StoreError};
use crate::domain::TenantId;
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

/// What [`Store::delete_items`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeleteOutcome {
    /// Items removed (copies, attachments and record).
    pub deleted: Vec<Uuid>,
    /// Items kept because a copy is in the mailbox of a user on litigation hold (that mailbox).
    pub held: Vec<(Uuid, String)>,
}

impl Store {
    /// The mailbox on litigation hold that holds a copy of `item`, if any.
    pub fn hold_on(&self, item: &ItemRecord) -> Result<Option<String>> {
        let tenant = TenantId(item.tenant);
        for copy in &item.copies {
            let user = match self.user(tenant, &copy.mailbox)? {
                Some(user) => Some(user),
                None => self.user_by_address(tenant, &copy.mailbox)?,
            };
            if user.is_some_and(|u| u.litigation_hold) {
                return Ok(Some(copy.mailbox.clone()));
            }
        }
        Ok(None)
    }

    /// Removes items of `tenant` (their copies, attachment bytes and records) in one
    /// transaction, except items with a copy in the mailbox of a user on litigation hold
    /// (unless `force`), reported in `held`. Unknown ids and items of another tenant are
    /// ignored (in neither list). Not flushed: call [`Store::durable`] before answering.
    pub fn delete_items(
        &self,
        tenant: TenantId,
        ids: &[Uuid],
        force: bool,
    ) -> std::result::Result<DeleteOutcome, StoreError> {
        let mut outcome = DeleteOutcome::default();
        let mut doomed: Vec<ItemRecord> = Vec::new();
        for &id in ids {
            if doomed.iter().any(|d| d.id == id) {
                continue;
            }
            let Some(item) = self.item(id)? else {
                continue;
            };
            if item.tenant != tenant.0 {
                continue;
            }
            if !force {
                if let Some(mailbox) = self.hold_on(&item)? {
                    outcome.held.push((id, mailbox));
                    continue;
                }
            }
            doomed.push(item);
        }
        if doomed.is_empty() {
            return Ok(outcome);
        }
        let i = &self.inner;
        (&i.items, &i.blobs, &i.copies).transaction(|(items, blobs, copies)| {
            for expected in &doomed {
                // Re-read inside the transaction: an attachment may have been added since.
                let Some(bytes) = items.get(expected.id.as_bytes())? else {
                    continue;
                };
                let item: ItemRecord = decode(&bytes).map_err(abort)?;
                for copy in &item.copies {
                    copies.remove(copy_key(item.tenant, copy, item.received, item.id))?;
                }
                for n in 0..item.attachments.len() {
                    blobs.remove(blob_key(item.id, n))?;
                }
                items.remove(item.id.as_bytes())?;
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })?;
        outcome.deleted = doomed.into_iter().map(|d| d.id).collect();
        Ok(outcome)
    }
}
