//! Area `sqlite`: `scenario_next` over Streamable HTTP against the release `decision-gate`
//! binary on its embedded default (SQLite with `synchronous = FULL`, the audit file written with
//! `O_DSYNC`, both in the data directory), with group commit on and off, from the load client in
//! another process (the same scenario and client as area `mcp`). Each phase gets a fresh server
//! and data directory; on and off alternate which goes first, round by round.
//!
//! - `group_commit_gain`: calls/s of eight concurrent clients with group commit on, divided by
//!   the same with it off; the median over rounds. Target: at least 3.
//! - `vs_fsync`: calls/s with group commit on (eight clients) over the machine's raw sync rate
//!   on the data directory's file system (a loop of a 256-byte write and `fdatasync`, measured
//!   in the same round). Target: at least 3.
//! - `single_client_latency`: p50 latency of one lone client with group commit on over off;
//!   the median over rounds. Target: at most 1.1.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::mcp::{self, CONCURRENCY, Measured, ROUNDS, Store, phase_line};

/// How long the raw sync loop runs.
const SYNC_PHASE: Duration = Duration::from_secs(2);

/// Writes and syncs 256 bytes at a time to a file in `dir`; answers syncs per second.
fn fsync_rate(dir: &Path) -> anyhow::Result<f64> {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).context("fsync probe file")?;
    let line = [b'x'; 256];
    let started = Instant::now();
    let mut syncs = 0u32;
    while started.elapsed() < SYNC_PHASE {
        file.write_all(&line).context("probe write")?;
        file.sync_data().context("probe fdatasync")?;
        syncs += 1;
    }
    let rate = f64::from(syncs) / started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path).context("remove probe")?;
    Ok(rate)
}

/// One phase on a fresh server and data directory.
fn phase(
    bin: &Path,
    dir: &Path,
    group_commit: bool,
    clients: usize,
    what: &str,
) -> anyhow::Result<Measured> {
    let data = dir.join(format!(
        "{}-{clients}-{}",
        if group_commit { "on" } else { "off" },
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let server = mcp::decision_gate(bin, &data, Store::Sqlite { group_commit }, false)?;
    let url = format!("http://{}/mcp", server.addr);
    let measured = mcp::load(&url, "scenario_next", clients, None)?;
    phase_line(what, &measured);
    drop(server);
    std::fs::remove_dir_all(&data).context("remove the phase's data directory")?;
    Ok(measured)
}

/// Orchestrates the area: returns (name, measured, unit, op, target) per target.
pub fn run() -> anyhow::Result<Vec<crate::Line>> {
    let bin = PathBuf::from(
        std::env::var("DG_BIN")
            .context("DG_BIN: the release decision-gate binary (scripts/bench.sh sets it)")?,
    );
    // Under the working directory (the clone), not /tmp: the data directory of a real
    // deployment is on a disk, and /tmp may be memory.
    let dir = tempfile::tempdir_in(".").context("temp dir")?;
    let (mut gains, mut over_sync, mut latency) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let peak = |on: bool| {
            let label = format!(
                "round {round}: {CONCURRENCY} clients, group commit {}",
                if on { "on" } else { "off" }
            );
            phase(&bin, dir.path(), on, CONCURRENCY, &label)
        };
        let lone = |on: bool| {
            let label = format!(
                "round {round}: 1 client, group commit {}",
                if on { "on" } else { "off" }
            );
            phase(&bin, dir.path(), on, 1, &label)
        };
        let first_on = round % 2 == 1;
        let (on, off) = if first_on {
            let on = peak(true)?;
            (on, peak(false)?)
        } else {
            let off = peak(false)?;
            (peak(true)?, off)
        };
        let (lone_on, lone_off) = if first_on {
            let on = lone(true)?;
            (on, lone(false)?)
        } else {
            let off = lone(false)?;
            (lone(true)?, off)
        };
        let syncs = fsync_rate(dir.path())?;
        eprintln!("round {round}: raw write + fdatasync: {syncs:.0}/s");
        gains.push(on.calls_per_sec / off.calls_per_sec);
        over_sync.push(on.calls_per_sec / syncs);
        latency.push(lone_on.p50_ms / lone_off.p50_ms);
    }
    Ok(vec![
        ("group_commit_gain", crate::median(gains), "x", ">=", 3.0),
        ("vs_fsync", crate::median(over_sync), "x", ">=", 3.0),
        (
            "single_client_latency",
            crate::median(latency),
            "x",
            "<=",
            1.1,
        ),
    ])
}
