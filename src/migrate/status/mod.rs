//! `csmh-proxy status`: where the migration stands, read from the configuration and both servers without
//! changing anything — the flags and the stage they imply, the size and ids of each table, whether the extended
//! table's ids start safely above the old ones, and the `migrate` and `verify` checkpoints.
//!
//! Row counts are the server's estimates unless `--exact` is given: an exact `COUNT(*)` scans the whole table,
//! which takes minutes on billions of rows. The smallest and largest ids are always exact (read from the primary
//! key).

mod json;
pub mod next;

use std::fmt;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::checkpoint::{self, Checkpoint, Task};
use super::control::{self, Control};
use super::verify::IdRange;
use super::verify::table::{Role, Stats, Table};
use super::{MigrateError, Site};
use crate::config::Config;
use crate::fleet::{Fleet, FleetArgs, ShadowTotals};
use crate::history::{Flag, Flags};
use crate::history::{RefusedFlags, Stage, TableName, routing_table};
use crate::topology::Topology;
use next::{Facts, NextStep};

/// Options of `csmh-proxy status`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StatusArgs {
    /// Count the rows of both tables exactly (scans each table: slow on billions of rows) instead of showing
    /// the server's estimate.
    #[arg(long)]
    pub exact: bool,
    /// Print the report as one JSON object with stable field names (docs/migration.md, "`status --json`"), for
    /// scripts and dashboards.
    #[arg(long)]
    pub json: bool,
    /// The proxies whose shadow comparison to add up (besides `[admin] address`).
    #[command(flatten)]
    pub fleet: FleetArgs,
}

/// Everything `status` shows.
#[derive(Debug, Clone)]
pub struct StatusReport {
    flags: Flags,
    stage: Result<Stage, RefusedFlags>,
    topology: Topology,
    old: TableStatus,
    extended: TableStatus,
    migrate: Option<Checkpoint>,
    verify: Option<Checkpoint>,
    migrate_back: Option<Checkpoint>,
    control: Control,
    /// The `csmh` server's clock when the report was read, which the checkpoints' times are on.
    now: String,
    /// The shadow comparison over the proxies asked, when any compares reads.
    shadow: Option<ShadowTotals>,
    /// When the last differing shadow read was, on the `csmh` server's clock.
    shadow_differing_at: Option<String>,
    /// The `edxapp` server's `lower_case_table_names` (`None` if it could not be read).
    name_folding: Option<u64>,
}

/// What is known of one table.
#[derive(Debug, Clone)]
struct TableStatus {
    role: Role,
    name: TableName,
    address: String,
    /// `None` when the table does not exist.
    stats: Option<Stats>,
    ids: Option<IdRange>,
    /// With `--exact`: the row count, and for the extended table how many of its rows have ids up to the old
    /// table's largest (counted in the same scan, so never more than the row count).
    exact: Option<(u64, Option<u64>)>,
}

/// Runs `csmh-proxy status` for the site `config` describes.
pub async fn run(config: &Config, args: &StatusArgs) -> Result<StatusReport, MigrateError> {
    let site = Site::new(config)?;
    let mut servers = site.connect().await?;
    let old = table_status(
        Table { role: Role::Old, conn: &mut servers.edxapp, name: &site.old },
        &config.backends.edxapp.address,
        args.exact,
        None,
    )
    .await?;
    let old_last = old.ids.map(|ids| ids.last);
    let extended = table_status(
        Table { role: Role::Extended, conn: &mut servers.csmh, name: &site.extended },
        &config.backends.csmh.address,
        args.exact,
        old_last,
    )
    .await?;
    let (migrate, verify) = checkpoints(&mut servers.csmh, &site).await?;
    let migrate_back = checkpoint::load(&mut servers.csmh, &site, Task::MigrateBack).await?;
    let (control, _) = control::load(&mut servers.csmh, &site).await?;
    let now = checkpoint::server_now(&mut servers.csmh).await?;
    let shadow = Fleet::survey(&args.fleet, Some(config)).await.shadow();
    let shadow_differing_at =
        shadow.and_then(|shadow| shadow.counts.last_differing_seconds_ago).and_then(|ago| seconds_before(&now, ago));
    let name_folding = servers.edxapp.query_first("SELECT @@lower_case_table_names").await.ok().flatten();
    Ok(StatusReport {
        flags: site.flags,
        stage: routing_table(site.flags).map(|table| table.stage()),
        topology: site.topology,
        old,
        extended,
        migrate,
        verify,
        migrate_back,
        control,
        now,
        shadow,
        shadow_differing_at,
        name_folding,
    })
}

/// Reads what `status` shows of `table`; `old_last` is the old table's largest id, to split the extended
/// table's exact count at.
async fn table_status(
    mut table: Table<'_>,
    address: &str,
    exact: bool,
    old_last: Option<u64>,
) -> Result<TableStatus, MigrateError> {
    let mut status = TableStatus {
        role: table.role,
        name: table.name.clone(),
        address: address.to_owned(),
        stats: table.stats().await?,
        ids: None,
        exact: None,
    };
    if status.stats.is_none() {
        return Ok(status);
    }
    status.ids = table.bounds(None).await?;
    if exact {
        status.exact = Some(match (table.role, old_last) {
            (Role::Extended, Some(last)) => {
                let (rows, up_to_old) = table.count_split(last).await?;
                (rows, Some(up_to_old))
            }
            _ => (table.count().await?, None),
        });
    }
    Ok(status)
}

/// The `migrate` and `verify` checkpoints.
async fn checkpoints(csmh: &mut Conn, site: &Site) -> Result<(Option<Checkpoint>, Option<Checkpoint>), MigrateError> {
    Ok((checkpoint::load(csmh, site, Task::Migrate).await?, checkpoint::load(csmh, site, Task::Verify).await?))
}

impl StatusReport {
    /// The report as one line of JSON (docs/migration.md, "`status --json`").
    pub fn json(&self) -> String {
        json::Status::of(self).to_string()
    }

    /// The runbook's next step.
    pub fn next_step(&self) -> NextStep {
        NextStep::of(&self.facts())
    }

    /// What the next step is decided from.
    fn facts(&self) -> Facts<'_> {
        Facts {
            stage: self.stage.as_ref().ok().copied(),
            extended_ready: self.extended_ready(),
            old_has_rows: self.old.ids.is_some(),
            old_last_id: self.old.ids.map(|ids| ids.last),
            migrate: self.aged(self.migrate.as_ref()),
            verify: self.aged(self.verify.as_ref()),
            migrate_back: self.aged(self.migrate_back.as_ref()),
            extended_last_id: self.extended.ids.map(|ids| ids.last),
            extended_first_id: self.extended.ids.map(|ids| ids.first),
            old_next_id: self.old.stats.and_then(|stats| stats.next_id),
            extended_next_id: self.extended.stats.and_then(|stats| stats.next_id),
            paused: self.control.pause.is_some(),
            shadow_differing_at: self.shadow_differing_at.as_deref(),
        }
    }

    /// Whether the extended table exists with its next id above every old id.
    fn extended_ready(&self) -> bool {
        let largest = self.old.ids.map_or(0, |ids| ids.last);
        self.extended.stats.and_then(|stats| stats.next_id).is_some_and(|next| next > largest)
    }

    /// `checkpoint`, with the seconds since it was written (the most there are when unknown).
    fn aged<'a>(&self, checkpoint: Option<&'a Checkpoint>) -> Option<(&'a Checkpoint, u64)> {
        checkpoint.map(|checkpoint| (checkpoint, self.age(checkpoint).unwrap_or(u64::MAX)))
    }

    /// Seconds since `checkpoint` was written, by the `csmh` server's clock.
    fn age(&self, checkpoint: &Checkpoint) -> Option<u64> {
        seconds_between(&checkpoint.updated_at, &self.now)
    }
}

/// Seconds from `earlier` to `later`, both `YYYY-MM-DD hh:mm:ss` on one clock; `None` if either does not parse
/// or `later` is earlier.
fn seconds_between(earlier: &str, later: &str) -> Option<u64> {
    let (earlier, later): (jiff::civil::DateTime, jiff::civil::DateTime) = (earlier.parse().ok()?, later.parse().ok()?);
    let span = later.duration_since(earlier);
    u64::try_from(span.as_secs()).ok()
}

/// The time `seconds` before `later` (`YYYY-MM-DD hh:mm:ss`), in the same form; `None` if `later` does not parse.
fn seconds_before(later: &str, seconds: u64) -> Option<String> {
    let later: jiff::civil::DateTime = later.parse().ok()?;
    let earlier = later.checked_sub(jiff::SignedDuration::from_secs(i64::try_from(seconds).ok()?)).ok()?;
    Some(earlier.strftime("%Y-%m-%d %H:%M:%S").to_string())
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flags: Vec<String> = Flag::ALL.iter().map(|flag| format!("{flag} = {}", self.flags.is_on(*flag))).collect();
        writeln!(f, "flags:          {}", flags.join(", "))?;
        match &self.stage {
            Ok(stage) => writeln!(f, "stage:          {stage}")?,
            Err(refused) => writeln!(f, "stage:          none, the proxy refuses these flags: {refused}")?,
        }
        writeln!(f, "topology:       {}", self.topology)?;
        writeln!(f, "old table:      {}", self.old)?;
        writeln!(f, "extended table: {}", self.extended)?;
        writeln!(f, "id offset:      {}", offset(&self.old, &self.extended, self.facts().going_back()))?;
        writeln!(f, "32-bit ids:     {}", Headroom::of(self.extended.stats.and_then(|stats| stats.next_id)))?;
        writeln!(f, "table names:    {}", NameFolding(self.name_folding))?;
        writeln!(f, "migrate:        {}", CheckpointLine(Task::Migrate, self.migrate.as_ref()))?;
        writeln!(f, "verify:         {}", CheckpointLine(Task::Verify, self.verify.as_ref()))?;
        if let Some(back) = &self.migrate_back {
            writeln!(f, "migrate back:   {}", CheckpointLine(Task::MigrateBack, Some(back)))?;
        }
        writeln!(f, "control:        {}", self.control)?;
        match &self.shadow {
            Some(shadow) => {
                write!(f, "shadow reads:   {shadow}")?;
                match (&self.shadow_differing_at, &self.verify) {
                    (Some(at), Some(verify)) if verify.state == super::verify::PASSED && **at < *verify.started_at => {
                        writeln!(f, " (at {at}, before the last verify that passed began: past)")?
                    }
                    (Some(at), _) => writeln!(f, " (at {at})")?,
                    (None, _) => writeln!(f)?,
                }
            }
            None => writeln!(
                f,
                "shadow reads:   no proxy asked compares reads ([shadow] sample; [admin] address or --admin/--dns)"
            )?,
        }
        writeln!(f, "next step:      {}", self.next_step())
    }
}

impl fmt::Display for TableStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on [backends.{}] {}: ", self.name, self.role.backend(), self.address)?;
        let Some(stats) = self.stats else {
            return match self.role {
                Role::Old => write!(f, "does not exist"),
                Role::Extended => write!(f, "does not exist (`csmh-proxy init` creates it)"),
            };
        };
        match (self.exact, stats.estimated_rows) {
            (Some((rows, None)), _) => write!(f, "{rows} rows")?,
            (Some((rows, Some(up_to_old))), _) => write!(
                f,
                "{rows} rows ({up_to_old} with ids up to the old table's largest, {} above it)",
                rows.saturating_sub(up_to_old)
            )?,
            (None, Some(estimate)) => write!(f, "about {estimate} rows (estimate; --exact counts them)")?,
            (None, None) => write!(f, "rows unknown (--exact counts them)")?,
        }
        match self.ids {
            Some(ids) => write!(f, ", {ids}")?,
            None => write!(f, ", empty")?,
        }
        match stats.next_id {
            Some(next) => write!(f, ", next id {next}"),
            None => Ok(()),
        }
    }
}

/// What the `edxapp` server's `lower_case_table_names` means for the router, which matches the old table's name
/// in ASCII: with 1 or 2 the server folds names with Unicode case rules, so that `…hİstory` (U+0130) names the
/// old table unseen (docs/routing.md, "What the router cannot see").
struct NameFolding(Option<u64>);

impl fmt::Display for NameFolding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(0) => write!(f, "as written (lower_case_table_names = 0 on [backends.edxapp])"),
            Some(value) => write!(
                f,
                "WARNING: lower_case_table_names = {value} on [backends.edxapp]: the server folds names with Unicode \
                 case rules, so a name the proxy does not match can reach the old table (docs/routing.md); revoke \
                 the account's privileges on it once retired"
            ),
            None => write!(f, "unknown (lower_case_table_names could not be read)"),
        }
    }
}

/// Whether the extended table's next id is above every id of the old table (docs/routing.md, "Offset safety");
/// `going_back` says whether the old table's own next id is meant to be above it.
fn offset(old: &TableStatus, extended: &TableStatus, going_back: bool) -> String {
    let Some(next) = extended.stats.and_then(|stats| stats.next_id) else {
        return "unknown: the extended table does not exist or has no AUTO_INCREMENT (`csmh-proxy init`)".to_owned();
    };
    let largest = old.ids.map_or(0, |ids| ids.last);
    if next <= largest {
        return format!(
            "UNSAFE: the extended table's next id {next} is not above the old table's largest id {largest}, so ids \
             could collide and the proxy refuses inserts into it; run `csmh-proxy init`"
        );
    }
    let safe = format!("safe: the extended table's next id {next} is above the old table's largest id {largest}");
    match old.stats.and_then(|stats| stats.next_id) {
        Some(old_next) if old_next >= next && going_back => format!(
            "{safe}; going back, the old table's own next id {old_next} is above it, as `csmh-proxy migrate --back` \
             set it, so edxapp's rows on the old table never take an id the extended table gave"
        ),
        Some(old_next) if old_next >= next => format!(
            "{safe}, but the old table's own next id {old_next} is not below it: ids the old table gives from now on \
             could collide"
        ),
        Some(old_next) => format!("{safe} (room for {} more ids in the old table)", next - old_next),
        None => safe,
    }
}

/// The largest id edxapp's history model (a 32-bit `AutoField`) can look up: on Django 5.0 and later a lookup by a
/// larger id returns nothing without reaching the database (docs/migration.md, "The 2^31 boundary").
pub const LARGEST_32_BIT_ID: u64 = i32::MAX as u64;

/// Below this many ids left under [`LARGEST_32_BIT_ID`] (a tenth of them), `status` warns.
const HEADROOM_WARNING: u64 = LARGEST_32_BIT_ID / 10;

/// Where the extended table's ids stand against [`LARGEST_32_BIT_ID`], with a warning as they run out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Headroom {
    /// The extended table does not exist or has no `AUTO_INCREMENT`.
    Unknown,
    /// More than a tenth of the ids are left.
    Plenty {
        /// Ids left below the boundary.
        left: u64,
        /// The extended table's next id.
        next: u64,
    },
    /// Less than a tenth of the ids are left: plan for the boundary.
    Low {
        /// Ids left below the boundary.
        left: u64,
        /// The extended table's next id.
        next: u64,
    },
    /// The next id is past the boundary.
    Past {
        /// The extended table's next id.
        next: u64,
    },
}

impl Headroom {
    /// The headroom of an extended table whose next id is `next_id`.
    pub fn of(next_id: Option<u64>) -> Headroom {
        let Some(next) = next_id else { return Headroom::Unknown };
        match LARGEST_32_BIT_ID.checked_sub(next) {
            None => Headroom::Past { next },
            Some(left) if left < HEADROOM_WARNING => Headroom::Low { left, next },
            Some(left) => Headroom::Plenty { left, next },
        }
    }

    /// A stable one-word name, for scripts (`status --json`).
    pub fn key(self) -> &'static str {
        match self {
            Headroom::Unknown => "unknown",
            Headroom::Plenty { .. } => "plenty",
            Headroom::Low { .. } => "low",
            Headroom::Past { .. } => "past",
        }
    }

    /// Ids left below the boundary, when known (0 past it).
    pub fn left(self) -> Option<u64> {
        match self {
            Headroom::Unknown => None,
            Headroom::Plenty { left, .. } | Headroom::Low { left, .. } => Some(left),
            Headroom::Past { .. } => Some(0),
        }
    }
}

impl fmt::Display for Headroom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Headroom::Unknown => write!(f, "unknown: the extended table does not exist or has no AUTO_INCREMENT"),
            Headroom::Past { next } => write!(
                f,
                "PAST 2^31: the extended table's next id {next} is above {LARGEST_32_BIT_ID}; edxapp on Django 5.0 or \
                 later writes an extra history row for each second save of a problem in one request (see \
                 docs/migration.md, \"The 2^31 boundary\")"
            ),
            Headroom::Low { left, next } => write!(
                f,
                "WARNING: {left} ids left below {LARGEST_32_BIT_ID} (next id {next}); plan for the boundary now (see \
                 docs/migration.md, \"The 2^31 boundary\")"
            ),
            Headroom::Plenty { left, next } => write!(f, "{left} ids left below {LARGEST_32_BIT_ID} (next id {next})"),
        }
    }
}

/// One checkpoint as `status` shows it.
struct CheckpointLine<'a>(Task, Option<&'a Checkpoint>);

impl fmt::Display for CheckpointLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(checkpoint) = self.1 else {
            return write!(f, "never run");
        };
        write!(
            f,
            "{}, last written {} (run started {})",
            checkpoint.state, checkpoint.updated_at, checkpoint.started_at
        )?;
        match (self.0, checkpoint.last_id, checkpoint.target_id) {
            (Task::Migrate | Task::MigrateBack, Some(last), Some(target)) if target > 0 => write!(
                f,
                "; ids up to {last} of {target} ({:.1}%), {} rows",
                last.min(target) as f64 * 100.0 / target as f64,
                checkpoint.rows_done
            )?,
            (Task::Migrate | Task::MigrateBack, last, _) => {
                write!(f, "; {} rows", checkpoint.rows_done)?;
                if let Some(last) = last {
                    write!(f, ", ids up to {last}")?;
                }
            }
            (Task::Verify, _, _) => write!(f, "; {} rows compared", checkpoint.rows_done)?,
            (Task::Control, _, _) => {}
        }
        for line in checkpoint.detail.iter().flat_map(|detail| detail.lines()) {
            write!(f, "\n                {line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_differing_read_is_dated_on_the_servers_clock() {
        assert_eq!(seconds_before("2026-12-01 00:00:05", 3_605).as_deref(), Some("2026-11-30 23:00:00"));
        assert_eq!(seconds_before("not a time", 1), None);
    }

    #[test]
    fn the_ids_left_below_2_31_are_counted_and_warned_about_as_they_run_out() {
        let headroom = |next| Headroom::of(next).to_string();
        assert_eq!(headroom(Some(10_001)), "2147473646 ids left below 2147483647 (next id 10001)");
        assert!(headroom(Some(2_000_000_000)).starts_with("WARNING: 147483647 ids left"));
        assert!(headroom(Some(LARGEST_32_BIT_ID + 1)).starts_with("PAST 2^31"));
        assert!(headroom(None).starts_with("unknown"));
        assert_eq!(Headroom::of(Some(2_000_000_000)).key(), "low");
        assert_eq!(Headroom::of(Some(LARGEST_32_BIT_ID + 1)).left(), Some(0));
    }
}
