//! The life of a writing run (tag, restore, repin), in one place: [`Run::begin`] takes the run lock,
//! marks runs whose process died as `interrupted`, settles the re-pins they left pending, and records
//! the new run as `running`; [`Run::finish`] records how it ended. A run dropped without `finish` — an
//! error returned with `?`, a panic, the work dropped on SIGTERM/SIGINT — records itself `failed` or,
//! after a signal, `interrupted`. Only SIGKILL leaves it `running`, and the next run marks it.

use serde_json::Value;

use crate::cluster::{Client, Membership};
use crate::context::Context;
use crate::domain::{RunKind, RunState};
use crate::ledger::repin;
use crate::store::runs;

/// What a run is, as recorded in `runs`.
pub struct Spec<'a> {
    pub kind: RunKind,
    pub org: Option<&'a str>,
    /// The options, as JSON (never credentials).
    pub params: Value,
    pub dry_run: bool,
}

/// A begun run; see the module documentation.
pub struct Run<'c> {
    ctx: &'c Context,
    id: i64,
    ended: bool,
    _lock: Option<std::fs::File>,
}

impl<'c> Run<'c> {
    /// Begins a run whose writes go to `write`'s peer.
    pub async fn begin(
        ctx: &'c Context,
        write: &Client,
        spec: Spec<'_>,
    ) -> anyhow::Result<Run<'c>> {
        let store = ctx.store()?;
        let lock = store.run_lock()?;
        let me = write.id().await?;
        let cluster = ctx.cluster_name()?;
        runs::mark_interrupted(&store.conn)?;
        let settled = repin::reconcile(&store.conn, write, cluster).await?;
        if settled > 0 {
            tracing::info!(settled, "settled re-pins left pending by an interrupted run");
        }
        let id = runs::begin(
            &store.conn,
            &runs::NewRun {
                kind: spec.kind,
                cluster,
                peer: &me.id,
                peer_url: write.base().as_str(),
                org: spec.org,
                params_json: &spec.params.to_string(),
                dry_run: spec.dry_run,
            },
        )?;
        Ok(Run { ctx, id, ended: false, _lock: lock })
    }

    pub fn id(&self) -> i64 {
        self.id
    }

    /// Records which members of the cluster the run read (for `convergence` and the report).
    pub fn record_membership(&self, m: &Membership) -> anyhow::Result<()> {
        runs::set_membership(&self.ctx.store()?.conn, self.id, &serde_json::to_string(m)?)?;
        Ok(())
    }

    /// Records how the run ended.
    pub fn finish(mut self, state: RunState) -> anyhow::Result<()> {
        self.ended = true;
        runs::finish(&self.ctx.store()?.conn, self.id, state)?;
        Ok(())
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let state = if self.ctx.interrupted() { RunState::Interrupted } else { RunState::Failed };
        let recorded = self
            .ctx
            .store()
            .and_then(|s| runs::finish(&s.conn, self.id, state).map_err(Into::into));
        match recorded {
            Ok(()) => tracing::warn!(run = self.id, "run ended {state}"),
            Err(e) => {
                tracing::error!(run = self.id, "cannot record that the run ended {state}: {e:#}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::LedgerArgs;
    use clap::Parser;

    /// A one-peer simulated cluster (on its own runtime) and a context on a fresh ledger beside it.
    fn setup(dir: &std::path::Path) -> (tokio::runtime::Runtime, ledger_sim::Running, Context) {
        let cli =
            crate::cli::Cli::try_parse_from(["ledger", "demo", "--peers", "1", "--pins", "3"])
                .unwrap();
        let crate::cli::Command::Demo(args) = cli.command else { unreachable!() };
        let rt = tokio::runtime::Runtime::new().unwrap();
        let sim = rt.block_on(ledger_sim::start(crate::commands::demo::cluster_config(&args)));
        let sim = sim.unwrap();
        let ledger = LedgerArgs {
            db: dir.join("ledger.db"),
            cluster: Some(sim.urls().join(",")),
            profile: None,
            config: None,
            timeout: std::time::Duration::from_secs(10),
        };
        (rt, sim, Context::new(ledger, true))
    }

    fn begin(ctx: &Context) -> Run<'_> {
        let url = ctx.peers(None).unwrap().remove(0);
        let client = ctx.client(&url).unwrap();
        let spec = Spec { kind: RunKind::Repin, org: None, params: Value::Null, dry_run: false };
        ctx.block_on(Run::begin(ctx, &client, spec)).unwrap().unwrap()
    }

    fn state(ctx: &Context, run: i64) -> RunState {
        runs::get(&ctx.store().unwrap().conn, run).unwrap().unwrap().state
    }

    #[test]
    fn every_way_out_of_a_run_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let (_rt, _sim, ctx) = setup(dir.path());
        // Finished: as told.
        let run = begin(&ctx);
        let id = run.id();
        assert_eq!(state(&ctx, id), RunState::Running);
        run.finish(RunState::Attention).unwrap();
        assert_eq!(state(&ctx, id), RunState::Attention);
        // An error returned with `?`: the run is dropped unfinished.
        let failing = || -> anyhow::Result<i64> {
            let run = begin(&ctx);
            let id = run.id();
            Err(anyhow::anyhow!("the cluster went away")).map(|()| id)?;
            run.finish(RunState::Done)?;
            Ok(id)
        };
        assert!(failing().is_err());
        let last = runs::latest(&ctx.store().unwrap().conn, RunKind::Repin).unwrap().unwrap();
        assert_eq!(state(&ctx, last), RunState::Failed);
        // A panic: recorded while unwinding.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _run = begin(&ctx);
            panic!("a defect mid-run");
        }));
        assert!(panicked.is_err());
        let last = runs::latest(&ctx.store().unwrap().conn, RunKind::Repin).unwrap().unwrap();
        assert_eq!(state(&ctx, last), RunState::Failed);
        // The lock is held for the run's life only: a second run can begin now.
        let run = begin(&ctx);
        assert!(ctx.store().unwrap().run_lock().is_err(), "the run lock is held");
        run.finish(RunState::Done).unwrap();
        assert!(ctx.store().unwrap().run_lock().is_ok());
    }
}
