//! Content Search: KQL over the stored items (being built; see issue 4).
//!
//! Hooks other modules call to keep the index in step with the store.

use uuid::Uuid;

use crate::app::AppState;

/// Called after items were deleted from the store (by id).
pub fn forget(_state: &AppState, _ids: &[Uuid]) {}

/// Called after every item was removed from the store (reset).
pub fn clear(_state: &AppState) {}
