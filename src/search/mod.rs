//! Content Search: KQL (`kql`) over a tantivy full-text index (`index`) kept in step with the
//! store. The admin routes are in `admin/search.rs`.
//!
//! Hooks other modules call to keep the index in step with the store: [`indexer`] for an
//! ingestion commit and [`on_items_changed`] for an admin removal, both run by the store's
//! committer in log order.

pub mod index;
pub mod kql;
mod words;

use tracing::error;
use uuid::Uuid;

use crate::app::AppState;
use crate::store::model::ItemRecord;

pub use index::{Hit, Results, SearchIndex};

/// What the store's committer runs once an ingestion's items are applied (before the reply,
/// in log order): the items are queued for the index (see [`index`]), and a search from now
/// on finds them.
pub fn indexer(state: &AppState) -> crate::store::AfterApply {
    let search = state.search.clone();
    Box::new(move |items: Vec<ItemRecord>| {
        if let Err(e) = search.add(items) {
            // The store and its log have them; the index misses them until the next
            // rebuild (the next commit records that it covers this log segment).
            error!(error = %e, "indexing committed items failed");
        }
    })
}

/// What the store's committer runs after an admin write removed or changed items (deletion,
/// retention, reset, a deleted tenant), in log order: their documents are replaced by what the
/// store holds now (nothing when removed). Not committed at once: a search commits first, and
/// the removal is in the store's log, so a start-up catch-up redoes it after a crash.
pub fn on_items_changed(state: &AppState) -> crate::store::OnItemsChanged {
    let search = state.search.clone();
    let store = state.store.clone();
    std::sync::Arc::new(move |ids: &[Uuid]| {
        if let Err(e) = search.resync(&store, ids) {
            error!(error = %e, "updating the search index for removed items failed");
        }
    })
}
