//! Routing: which mailboxes and folders get a copy of an item.
//!
//! Participants are FROM, SENDER, TO, CC and BCC. A participant maps to a user by primary SMTP,
//! proxy address, UPN or a mapped external identity (case-insensitive). Every mapped user with
//! an active mailbox gets one copy in `Recoverable Items/Purges`; when nobody maps, the item goes
//! to the `Inbox` of the tenant's third-party data mailbox.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::domain::{Destination, Folder, Item, TenantId};
use crate::store::model::{TenantRecord, UserRecord};
use crate::store::{Store, StoreError};

/// Looks participants up in the tenant's directory, each address once per request (a batch
/// names the same people item after item).
pub struct Resolver<'a> {
    store: &'a Store,
    tenant: TenantId,
    known: HashMap<String, Option<Arc<UserRecord>>>,
}

impl<'a> Resolver<'a> {
    pub fn new(store: &'a Store, tenant: TenantId) -> Self {
        Resolver {
            store,
            tenant,
            known: HashMap::new(),
        }
    }

    /// The user `address` maps to (SMTP, proxy, UPN or external id; any case).
    pub fn user(&mut self, address: &str) -> Result<Option<&UserRecord>, StoreError> {
        let key = address.trim().to_lowercase();
        if !self.known.contains_key(&key) {
            let user = self.store.user_by_address(self.tenant, &key)?;
            self.known.insert(key.clone(), user);
        }
        Ok(self.known.get(&key).and_then(Option::as_deref))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("no participant maps to a user and the tenant has no third-party data mailbox")]
    NoDestination,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Destinations of one item, sorted, one per mailbox.
pub fn route(
    resolver: &mut Resolver<'_>,
    tenant: &TenantRecord,
    item: &Item,
) -> Result<Vec<Destination>, RouteError> {
    let mut mailboxes = BTreeSet::new();
    for participant in item.participants() {
        if let Some(user) = resolver.user(&participant.address)? {
            if user.mailbox_enabled {
                mailboxes.insert(user.user_principal_name.to_lowercase());
            }
        }
    }
    if mailboxes.is_empty() {
        let mailbox = tenant
            .third_party_mailbox
            .clone()
            .ok_or(RouteError::NoDestination)?;
        return Ok(vec![Destination {
            mailbox: mailbox.to_lowercase(),
            folder: Folder::Inbox,
        }]);
    }
    Ok(mailboxes
        .into_iter()
        .map(|mailbox| Destination {
            mailbox,
            folder: Folder::Purges,
        })
        .collect())
}

/// The sender rule: a FROM or SENDER address in one of the tenant's accepted domains must
/// belong to a user with an active mailbox. Returns the offending address.
pub fn inactive_sender(
    resolver: &mut Resolver<'_>,
    tenant: &TenantRecord,
    item: &Item,
) -> Result<Option<String>, StoreError> {
    for sender in std::iter::once(&item.from).chain(item.sender.iter()) {
        let Some((_, domain)) = sender.address.rsplit_once('@') else {
            continue;
        };
        let in_tenant = tenant
            .domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain.trim()));
        if !in_tenant {
            continue;
        }
        let active = resolver
            .user(&sender.address)?
            .is_some_and(|u| u.mailbox_enabled);
        if !active {
            return Ok(Some(sender.address.clone()));
        }
    }
    Ok(None)
}
