//! Which item groups carry a request's ingestion record, by tenant, in memory: what lets a
//! tenant's journal read its own groups instead of every group of every tenant (group keys
//! are correlation ids, not per tenant). Nothing is kept until the first journal read of the
//! process, which builds it with one scan of the groups; from then on every group written is
//! listed before its request is answered. A removed group stays listed until a read finds it
//! gone and drops it: a listed key is a candidate, checked against the store.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use uuid::Uuid;

use super::groups::GroupKey;

#[derive(Default)]
pub(super) struct RecordGroups {
    /// Whether groups written are listed (building or built): the writers' check, one load.
    recording: AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    recording: bool,
    built: bool,
    /// Bumped by [`RecordGroups::clear`]: a build begun before it is void.
    generation: u64,
    by_tenant: HashMap<Uuid, BTreeSet<GroupKey>>,
}

/// A build to run (see [`RecordGroups::start_building`]).
pub(super) struct Build(u64);

impl RecordGroups {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A group carrying the record of a request of `tenant` was written.
    pub(super) fn added(&self, tenant: Uuid, key: GroupKey) {
        if !self.recording.load(Ordering::SeqCst) {
            return;
        }
        let mut state = self.lock();
        if state.recording {
            state.by_tenant.entry(tenant).or_default().insert(key);
        }
    }

    pub(super) fn is_built(&self) -> bool {
        self.recording.load(Ordering::SeqCst) && self.lock().built
    }

    /// Starts listing the groups written from now on; the build for the caller to run (scan
    /// every group, then [`RecordGroups::finish`]), unless one is running or done.
    pub(super) fn start_building(&self) -> Option<Build> {
        let mut state = self.lock();
        if state.recording {
            return None;
        }
        state.recording = true;
        self.recording.store(true, Ordering::SeqCst);
        Some(Build(state.generation))
    }

    /// Adds what a build's scan found (every group written before it started is in it, and
    /// every one written since was listed as it was written).
    pub(super) fn finish(&self, build: Build, found: Vec<(Uuid, GroupKey)>) {
        let mut state = self.lock();
        if state.generation != build.0 || !state.recording {
            return;
        }
        for (tenant, key) in found {
            state.by_tenant.entry(tenant).or_default().insert(key);
        }
        state.built = true;
    }

    /// A build whose scan failed: the next read tries again.
    pub(super) fn abandon(&self, build: Build) {
        let mut state = self.lock();
        if state.generation == build.0 {
            self.reset_state(&mut state);
        }
    }

    /// Up to `n` listed keys of `tenant` below `before` (all if `None`), newest first.
    pub(super) fn below(&self, tenant: Uuid, before: Option<&GroupKey>, n: usize) -> Vec<GroupKey> {
        let state = self.lock();
        let Some(keys) = state.by_tenant.get(&tenant) else {
            return Vec::new();
        };
        match before {
            Some(before) => keys.range(..*before).rev().take(n).copied().collect(),
            None => keys.iter().rev().take(n).copied().collect(),
        }
    }

    /// A listed group a read found gone (or without a record of `tenant`).
    pub(super) fn forget(&self, tenant: Uuid, key: &GroupKey) {
        let mut state = self.lock();
        if let Some(keys) = state.by_tenant.get_mut(&tenant) {
            keys.remove(key);
            if keys.is_empty() {
                state.by_tenant.remove(&tenant);
            }
        }
    }

    /// A deleted tenant's groups.
    pub(super) fn forget_tenant(&self, tenant: Uuid) {
        self.lock().by_tenant.remove(&tenant);
    }

    /// Everything (a reset removed every group): back to nothing kept, until the next read.
    pub(super) fn clear(&self) {
        let mut state = self.lock();
        self.reset_state(&mut state);
    }

    fn reset_state(&self, state: &mut State) {
        state.generation += 1;
        state.recording = false;
        state.built = false;
        state.by_tenant = HashMap::new();
        self.recording.store(false, Ordering::SeqCst);
    }
}
