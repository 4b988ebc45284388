//! The periodic sweep: expired leases go back to `REQUESTED` (and wake the
//! cluster's claimers), workitems waiting longer than `--delayed-after` are
//! flagged `delayed` and reported, due `verify` workitems are enqueued, and
//! operation-history records finished longer ago than
//! `--history-retention` are deleted.

use std::time::Duration;

use tracing::Instrument;

use crate::audit::now_ms;
use crate::state::AppState;
use crate::store::{StoreError, history, workitems};

/// Sweeps every `--sweep-interval` until shutdown.
pub async fn run(state: AppState) {
    let mut shutdown = state.shutdown.clone();
    let interval = state.config.sweep_interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|stopping| *stopping) => return,
        }
        if let Err(error) = sweep(&state)
            .instrument(tracing::debug_span!("maintenance.sweep"))
            .await
        {
            tracing::error!(%error, "maintenance sweep failed");
        }
    }
}

/// One sweep.
pub async fn sweep(state: &AppState) -> Result<(), StoreError> {
    let delayed_after = state.config.delayed_after.as_millis() as i64;
    let verify = state.config.verify_interval;
    let retention = i64::try_from(state.config.history_retention.as_millis()).unwrap_or(i64::MAX);
    let (woken, delayed) = state
        .store
        .transaction(move |tx| -> Result<_, StoreError> {
            let now = now_ms();
            let mut woken = workitems::expire_leases(tx, now)?;
            if verify > Duration::ZERO {
                woken.extend(workitems::schedule_verifies(
                    tx,
                    now,
                    verify.as_millis() as i64,
                )?);
            }
            let delayed = workitems::flag_delayed(tx, now - delayed_after)?;
            let pruned = history::prune(tx, now.saturating_sub(retention))?;
            if pruned > 0 {
                tracing::info!(
                    pruned,
                    "operation history records past their retention deleted"
                );
            }
            Ok((woken, delayed))
        })
        .await?;
    for (namespace, cluster) in woken {
        state.wakeups.wake(&namespace, &cluster);
    }
    for item in delayed {
        // Vantiq reports delayed processing as an error to the namespace admin.
        tracing::error!(
            namespace = %item.namespace,
            cluster = %item.cluster,
            request_id = %item.request_id,
            operation = %item.operation,
            waiting_ms = now_ms() - item.created_at,
            "workitem not picked up in time; is the cluster's worker running?"
        );
    }
    Ok(())
}
