//! Memoised directory reads of the ingestion path (tenant, service principal, user by address,
//! partner connector id): every request needs them, and they change rarely.
//!
//! Invalidation is by generation: every write to a tree these reads come from bumps
//! [`DirectoryCache::changed`] when it starts and again *after* it, and an entry is served only while the
//! generation it was loaded under is still current. A read loads the generation *before* it
//! reads sled, so an entry that may predate a write is tagged with the older generation and is
//! never served once that write's bump is done: when a revocation call returns, no request
//! after it can see the revoked consent.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::model::{ServicePrincipalRecord, TenantRecord, UserRecord};
use super::Result;

/// Entries per map; a full map is emptied (entries are cheap to reload).
const MAX_ENTRIES: usize = 4096;

/// One memoised read, keyed by `K`.
struct Memo<K, V> {
    map: Mutex<HashMap<K, (u64, V)>>,
}

impl<K: Hash + Eq, V: Clone> Memo<K, V> {
    fn new() -> Self {
        Memo {
            map: Mutex::new(HashMap::new()),
        }
    }

    fn get_or_load(
        &self,
        generation: &AtomicU64,
        key: K,
        load: impl FnOnce() -> Result<V>,
    ) -> Result<V> {
        let current = generation.load(Ordering::SeqCst);
        {
            let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((loaded_at, value)) = map.get(&key) {
                if *loaded_at == current {
                    return Ok(value.clone());
                }
            }
        }
        let value = load()?;
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key, (current, value.clone()));
        Ok(value)
    }
}

/// See [`DirectoryCache::changing`].
pub(super) struct Changing<'a>(&'a DirectoryCache);

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        self.0.changed();
    }
}

pub(super) struct DirectoryCache {
    generation: AtomicU64,
    tenants: Memo<Uuid, Option<Arc<TenantRecord>>>,
    principals: Memo<(Uuid, Uuid), Option<Arc<ServicePrincipalRecord>>>,
    /// Keyed by tenant and the address as looked up (trimmed, lower case).
    users: Memo<(Uuid, String), Option<Arc<UserRecord>>>,
    /// Tenant, app -> the id of its partner connector.
    partners: Memo<(Uuid, Uuid), Option<Uuid>>,
}

impl DirectoryCache {
    pub(super) fn new() -> Self {
        DirectoryCache {
            generation: AtomicU64::new(0),
            tenants: Memo::new(),
            principals: Memo::new(),
            users: Memo::new(),
            partners: Memo::new(),
        }
    }

    /// Every entry loaded before this call is stale.
    pub(super) fn changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// A guard for a directory write: [`DirectoryCache::changed`] now (nothing cached before
    /// the write is served while it runs: a long write such as a tenant deletion removes
    /// consents first) and again when dropped, after the write, however it ended.
    pub(super) fn changing(&self) -> Changing<'_> {
        self.changed();
        Changing(self)
    }

    pub(super) fn tenant(
        &self,
        id: Uuid,
        load: impl FnOnce() -> Result<Option<TenantRecord>>,
    ) -> Result<Option<Arc<TenantRecord>>> {
        self.tenants
            .get_or_load(&self.generation, id, || Ok(load()?.map(Arc::new)))
    }

    pub(super) fn principal(
        &self,
        tenant: Uuid,
        app: Uuid,
        load: impl FnOnce() -> Result<Option<ServicePrincipalRecord>>,
    ) -> Result<Option<Arc<ServicePrincipalRecord>>> {
        self.principals.get_or_load(
            &self.generation,
            (tenant, app),
            || Ok(load()?.map(Arc::new)),
        )
    }

    pub(super) fn user(
        &self,
        tenant: Uuid,
        address: &str,
        load: impl FnOnce() -> Result<Option<UserRecord>>,
    ) -> Result<Option<Arc<UserRecord>>> {
        self.users
            .get_or_load(&self.generation, (tenant, address.to_string()), || {
                Ok(load()?.map(Arc::new))
            })
    }

    pub(super) fn partner(
        &self,
        tenant: Uuid,
        app: Uuid,
        load: impl FnOnce() -> Result<Option<Uuid>>,
    ) -> Result<Option<Uuid>> {
        self.partners
            .get_or_load(&self.generation, (tenant, app), load)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_served_only_under_the_generation_it_was_loaded_in() {
        let cache = DirectoryCache::new();
        let app = Uuid::from_u128(2);
        let loads = std::cell::Cell::new(0);
        let load = |present: bool| {
            loads.set(loads.get() + 1);
            Ok(present.then(Uuid::new_v4))
        };
        let first = cache.partner(Uuid::nil(), app, || load(true)).unwrap();
        assert!(first.is_some());
        assert_eq!(
            cache.partner(Uuid::nil(), app, || load(false)).unwrap(),
            first
        );
        assert_eq!(loads.get(), 1);
        cache.changed();
        assert_eq!(
            cache.partner(Uuid::nil(), app, || load(false)).unwrap(),
            None
        );
        assert_eq!(loads.get(), 2);
    }

    #[test]
    fn nothing_loaded_before_a_write_is_served_while_it_runs() {
        let cache = DirectoryCache::new();
        let (tenant, app) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let id = Some(Uuid::from_u128(3));
        assert_eq!(cache.partner(tenant, app, || Ok(id)).unwrap(), id);
        let _writing = cache.changing();
        // The write removed it already (a tenant deletion removes consents first).
        assert_eq!(cache.partner(tenant, app, || Ok(None)).unwrap(), None);
    }

    #[test]
    fn a_load_racing_a_write_is_not_served_after_the_write() {
        let cache = DirectoryCache::new();
        let tenant = Uuid::from_u128(1);
        // The write lands (and bumps) while the read is loading the old value.
        let stale = cache
            .tenant(tenant, || {
                cache.changed();
                Ok(None)
            })
            .unwrap();
        assert_eq!(stale, None);
        let record = TenantRecord {
            id: tenant,
            display_name: "Contoso".into(),
            domains: vec![],
            third_party_mailbox: None,
            retention_days: None,
        };
        let fresh = cache.tenant(tenant, || Ok(Some(record.clone()))).unwrap();
        assert_eq!(fresh.as_deref(), Some(&record));
    }
}
