//! `csmh-proxy status --json`: the report as one JSON object whose field names are stable (documented in
//! docs/migration.md, "`status --json`"), for scripts, chat bots and dashboards. A field is added, never renamed
//! or removed, without raising `format`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::{Headroom, StatusReport, TableStatus, seconds_between};
use crate::fleet::ShadowTotals;
use crate::history::Flag;
use crate::migrate::checkpoint::Checkpoint;
use crate::migrate::copy::back::floor_of;
use crate::migrate::copy::{DONE, Recopy, WAITING};
use crate::topology::Topology;

/// The version of the format; raised only when a field changes meaning or goes away.
const FORMAT: u32 = 1;

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Status {
    format: u32,
    server_time: String,
    flags: BTreeMap<&'static str, bool>,
    stage: Option<&'static str>,
    stage_refused: Option<String>,
    topology: &'static str,
    old_table: Table,
    extended_table: Table,
    id_offset_safe: Option<bool>,
    ids_below_2_31: IdsBelow231,
    lower_case_table_names: Option<u64>,
    migrate: Option<Migrate>,
    verify: Option<Verify>,
    migrate_back: Option<MigrateBack>,
    control: Control,
    shadow: Option<Shadow>,
    next_step: NextStep,
}

/// The shadow comparison over the proxies asked, and when the last differing read was on the `csmh` server's
/// clock.
#[derive(Debug, Serialize)]
struct Shadow {
    #[serde(flatten)]
    totals: ShadowTotals,
    last_differing_at: Option<String>,
}

/// One table.
#[derive(Debug, Serialize)]
struct Table {
    name: String,
    backend: &'static str,
    address: String,
    exists: bool,
    estimated_rows: Option<u64>,
    exact_rows: Option<u64>,
    first_id: Option<u64>,
    last_id: Option<u64>,
    next_id: Option<u64>,
}

/// The extended table's ids against 2^31.
#[derive(Debug, Serialize)]
struct IdsBelow231 {
    left: Option<u64>,
    warning: &'static str,
}

/// The `migrate` checkpoint.
#[derive(Debug, Serialize)]
struct Migrate {
    state: String,
    last_id: Option<u64>,
    target_id: Option<u64>,
    percent: Option<f64>,
    rows_copied: u64,
    started_at: String,
    updated_at: String,
    seconds_since_update: Option<u64>,
    paused_reason: Option<String>,
    recopy_from_id: Option<u64>,
    rows_per_second: Option<f64>,
    eta_seconds: Option<u64>,
}

/// The `verify` checkpoint.
#[derive(Debug, Serialize)]
struct Verify {
    state: String,
    last_id: Option<u64>,
    rows_compared: u64,
    started_at: String,
    updated_at: String,
    seconds_since_update: Option<u64>,
    detail: Option<String>,
}

/// The `migrate --back` checkpoint.
#[derive(Debug, Serialize)]
struct MigrateBack {
    state: String,
    last_id: Option<u64>,
    target_id: Option<u64>,
    old_own_ids_up_to: Option<u64>,
    rows_copied: u64,
    started_at: String,
    updated_at: String,
    seconds_since_update: Option<u64>,
    paused_reason: Option<String>,
}

/// The control row.
#[derive(Debug, Serialize)]
struct Control {
    paused: bool,
    pause_reason: Option<String>,
    paused_since: Option<String>,
    throttles: BTreeMap<String, String>,
}

/// The runbook's next step.
#[derive(Debug, Serialize)]
struct NextStep {
    step: &'static str,
    command: Option<&'static str>,
    set_flags: BTreeMap<&'static str, bool>,
    then: Option<&'static str>,
    why: String,
}

impl Status {
    /// The JSON form of `report`.
    pub fn of(report: &StatusReport) -> Status {
        let next = report.next_step();
        let headroom = Headroom::of(report.extended.stats.and_then(|stats| stats.next_id));
        Status {
            format: FORMAT,
            server_time: report.now.clone(),
            flags: Flag::ALL.iter().map(|flag| (flag.name(), report.flags.is_on(*flag))).collect(),
            stage: report.stage.as_ref().ok().map(|stage| stage_key(*stage)),
            stage_refused: report.stage.as_ref().err().map(ToString::to_string),
            topology: match report.topology {
                Topology::OneServer => "one_server",
                Topology::TwoServers => "two_servers",
            },
            old_table: Table::of(&report.old),
            extended_table: Table::of(&report.extended),
            id_offset_safe: report.extended.stats.and_then(|stats| stats.next_id).map(|_| report.extended_ready()),
            ids_below_2_31: IdsBelow231 { left: headroom.left(), warning: headroom.key() },
            lower_case_table_names: report.name_folding,
            migrate: report.migrate.as_ref().map(|checkpoint| Migrate::of(checkpoint, report)),
            verify: report.verify.as_ref().map(|checkpoint| Verify {
                state: checkpoint.state.clone(),
                last_id: checkpoint.last_id,
                rows_compared: checkpoint.rows_done,
                started_at: checkpoint.started_at.clone(),
                updated_at: checkpoint.updated_at.clone(),
                seconds_since_update: report.age(checkpoint),
                detail: checkpoint.detail.clone(),
            }),
            migrate_back: report.migrate_back.as_ref().map(|checkpoint| MigrateBack {
                state: checkpoint.state.clone(),
                last_id: checkpoint.last_id,
                target_id: checkpoint.target_id,
                old_own_ids_up_to: floor_of(checkpoint),
                rows_copied: checkpoint.rows_done,
                started_at: checkpoint.started_at.clone(),
                updated_at: checkpoint.updated_at.clone(),
                seconds_since_update: report.age(checkpoint),
                paused_reason: paused_reason(checkpoint),
            }),
            control: Control {
                paused: report.control.pause.is_some(),
                pause_reason: report.control.pause.as_ref().map(|pause| pause.reason.clone()),
                paused_since: report.control.pause.as_ref().map(|pause| pause.since.clone()),
                throttles: report.control.overrides.entries().into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            },
            shadow: report
                .shadow
                .map(|totals| Shadow { totals, last_differing_at: report.shadow_differing_at.clone() }),
            next_step: NextStep {
                step: next.key(),
                command: next.command(),
                set_flags: next.flags().iter().map(|(flag, on)| (flag.name(), *on)).collect(),
                then: next.then().map(super::NextStep::key),
                why: next.to_string(),
            },
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        writeln!(f, "{json}")
    }
}

/// A stage's stable name.
fn stage_key(stage: crate::history::Stage) -> &'static str {
    use crate::history::Stage;
    match stage {
        Stage::OldTableOnly => "old_table_only",
        Stage::ExtendedTableReadingBoth => "extended_table_reading_both",
        Stage::ExtendedTableOnlyReads => "extended_table_only_reads",
        Stage::OldTableRetired => "old_table_retired",
    }
}

impl Table {
    fn of(table: &TableStatus) -> Table {
        Table {
            name: table.name.to_string(),
            backend: table.role.backend(),
            address: table.address.clone(),
            exists: table.stats.is_some(),
            estimated_rows: table.stats.and_then(|stats| stats.estimated_rows),
            exact_rows: table.exact.map(|(rows, _)| rows),
            first_id: table.ids.map(|ids| ids.first),
            last_id: table.ids.map(|ids| ids.last),
            next_id: table.stats.and_then(|stats| stats.next_id),
        }
    }
}

impl Migrate {
    /// The checkpoint, with the rate and the time left averaged over the migration so far (pauses and the time
    /// between runs included: an estimate).
    fn of(checkpoint: &Checkpoint, report: &StatusReport) -> Migrate {
        let percent = match (checkpoint.last_id, checkpoint.target_id) {
            (Some(last), Some(target)) if target > 0 => Some(last.min(target) as f64 * 100.0 / target as f64),
            _ => None,
        };
        let elapsed = seconds_between(&checkpoint.started_at, &checkpoint.updated_at).filter(|seconds| *seconds > 0);
        let rows_per_second = elapsed.map(|seconds| checkpoint.rows_done as f64 / seconds as f64);
        let first_id = report.old.ids.map_or(0, |ids| ids.first.saturating_sub(1));
        let eta_seconds = match (checkpoint.last_id, checkpoint.target_id, elapsed) {
            _ if checkpoint.state == DONE => Some(0),
            (Some(last), Some(target), Some(seconds)) if last > first_id => {
                let ids_per_second = (last - first_id) as f64 / seconds as f64;
                Some((target.saturating_sub(last) as f64 / ids_per_second).ceil() as u64)
            }
            _ => None,
        };
        let detail = checkpoint.detail.as_deref().unwrap_or("");
        Migrate {
            state: checkpoint.state.clone(),
            last_id: checkpoint.last_id,
            target_id: checkpoint.target_id,
            percent,
            rows_copied: checkpoint.rows_done,
            started_at: checkpoint.started_at.clone(),
            updated_at: checkpoint.updated_at.clone(),
            seconds_since_update: report.age(checkpoint),
            paused_reason: paused_reason(checkpoint),
            recopy_from_id: Recopy::from_detail(detail).map(|recopy| recopy.from),
            rows_per_second,
            eta_seconds,
        }
    }
}

/// Why a copy waits, from its checkpoint's detail, while it does.
fn paused_reason(checkpoint: &Checkpoint) -> Option<String> {
    let detail = checkpoint.detail.as_deref()?;
    detail.lines().find_map(|line| line.strip_prefix(WAITING)).map(str::to_owned)
}
