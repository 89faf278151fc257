//! Watching a run: its decisions as they are appended, so an orchestrator need not poll.

use std::time::Duration;

use super::*;

/// How long a watcher waits for this instance's append signal before it re-reads the head
/// anyway: another replica sharing the store appends without signalling this one.
const RECHECK: Duration = Duration::from_secs(1);

/// A run being watched, positioned after a decision. Opened by [`DecisionGate::watch_run`],
/// which authorizes and audits the read once; [`DecisionGate::next_decisions`] then reads on the
/// same authority.
#[derive(Debug)]
pub struct RunWatch {
    key: RunKey,
    scenario_id: ScenarioId,
    /// The journal revision read up to.
    revision: u64,
    /// The last decision delivered.
    after_seq: u64,
    appended: tokio::sync::watch::Receiver<u64>,
}

impl DecisionGate {
    /// Opens a watch on a run, positioned after decision `after_seq` (0 replays every decision).
    /// Authorized and audited as a status read.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown run, or any refusal of a status read.
    pub async fn watch_run(
        &self,
        ctx: &RequestContext,
        scenario_id: &ScenarioId,
        run_id: &RunId,
        after_seq: u64,
    ) -> Result<RunWatch, Error> {
        self.read_run(ctx, scenario_id, run_id, async |key, _| {
            Ok(RunWatch {
                key,
                scenario_id: scenario_id.clone(),
                revision: 0,
                after_seq,
                appended: self.appended.subscribe(),
            })
        })
        .await
    }

    /// The decisions appended after the watch's position, in order, waiting until there is at
    /// least one; `None` once the run has finished and its last decision was delivered.
    ///
    /// # Errors
    /// [`Error::Unavailable`] and other store errors.
    pub async fn next_decisions(
        &self,
        watch: &mut RunWatch,
    ) -> Result<Option<Vec<DecisionRecord>>, Error> {
        loop {
            // Mark the signal seen before reading, so an append after the read still wakes us.
            watch.appended.borrow_and_update();
            let head = self.load_head(&watch.key, &watch.scenario_id).await?;
            let mut decisions = Vec::new();
            while watch.revision < head.revision {
                let page = self
                    .runs
                    .entries(&watch.key, watch.revision, crate::store::MAX_PAGE_SIZE)
                    .await?;
                let Some(last) = page.last() else { break };
                watch.revision = last.revision;
                decisions.extend(page.into_iter().filter_map(|entry| match entry.body {
                    EntryBody::Trigger(t) if t.decision.seq > watch.after_seq => Some(t.decision),
                    _ => None,
                }));
            }
            if let Some(last) = decisions.last() {
                watch.after_seq = last.seq;
                return Ok(Some(decisions));
            }
            if head.status != RunStatus::Active {
                return Ok(None);
            }
            // Woken by an append here, or re-read after a while for appends elsewhere. A
            // closed channel cannot happen while `self` lives; it only shortens the wait.
            let _ = tokio::time::timeout(RECHECK, watch.appended.changed()).await;
        }
    }
}
