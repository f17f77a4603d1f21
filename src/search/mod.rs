//! Content Search: KQL (`kql`) over a tantivy full-text index (`index`) kept in step with the
//! store. The admin routes are in `admin/search.rs`.
//!
//! Hooks other modules call to keep the index in step with the store: [`indexer`] for an
//! ingestion commit (run by the store's committer, in log order), [`forget`] after items are
//! deleted, [`clear`] after a reset.

pub mod index;
pub mod kql;

use tracing::error;
use uuid::Uuid;

use crate::app::AppState;
use crate::store::model::ItemRecord;

pub use index::{Hit, Results, SearchIndex};

/// What the store's committer runs once an ingestion's items are applied (before the reply,
/// in log order): the items become searchable.
pub fn indexer(state: &AppState) -> crate::store::AfterApply {
    let search = state.search.clone();
    Box::new(move |items: &[ItemRecord]| {
        if let Err(e) = search.add(items) {
            // The store and its log have them: the next start indexes what the log names.
            error!(error = %e, "indexing committed items failed");
        }
    })
}

/// Called after items were deleted from the store (by id), or changed (e.g. lost copies):
/// each item's documents are replaced by what the store holds now (nothing when deleted).
pub fn forget(state: &AppState, ids: &[Uuid]) {
    if let Err(e) = state.search.resync(&state.store, ids) {
        error!(error = %e, "removing deleted items from the search index failed");
    }
}

/// Called after every item was removed from the store (reset).
pub fn clear(state: &AppState) {
    if let Err(e) = state.search.remove_all() {
        error!(error = %e, "clearing the search index failed");
    }
}
