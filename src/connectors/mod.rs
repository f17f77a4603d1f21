//! Native data connectors (Pivot, Symphony, CellTrust, ... as Veritas Merge1 delivers them):
//! the staging formats (`staging`), one import (`import`), the scheduler that imports at each
//! connector's interval (here), and the admin log as CSV (`log`).
//!
//! Partner connectors (apps pushing over EWS) need none of this: their requests are recorded
//! as imports by `ingest::create_item`. Records and history live in `store::connectors`; the
//! routes are in `admin/connectors.rs`.

pub mod import;
pub mod log;
pub mod staging;

use std::time::Duration;

use chrono::Utc;
use tracing::{error, info_span, Instrument};

use crate::app::AppState;

/// How often the scheduler looks for connectors that are due.
pub const SCHEDULER_TICK: Duration = Duration::from_secs(1);

/// Starts the scheduler: every `tick`, each native connector that is not paused and whose next
/// run is due imports what is staged (`import::run`). A connector without a next run yet is
/// due one interval after it was created.
pub fn spawn_scheduler(state: AppState, tick: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(
        async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                if let Err(e) = run_due(&state).await {
                    error!(error = %e, "the connector scheduler could not read the connectors");
                }
            }
        }
        .instrument(info_span!("scheduler")),
    )
}

async fn run_due(state: &AppState) -> Result<(), crate::store::StoreError> {
    let now = Utc::now();
    for c in state.store.connectors()? {
        if !c.is_native() || c.paused {
            continue;
        }
        if c.due_at() > now {
            continue;
        }
        if let Err(e) = import::run(state, c.id, import::Trigger::Scheduled).await {
            error!(connector = %c.id, error = %e, "scheduled import failed");
            // Try again at the next interval, not at every tick.
            let next = now + chrono::Duration::minutes(i64::from(c.interval_minutes));
            state.store.schedule_run(c.id, None, next)?;
        }
    }
    Ok(())
}
