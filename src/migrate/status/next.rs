//! The next step of the runbook ("Migrating a large instance" in the README), decided from what `status` read:
//! the flags' stage, the extended table, the checkpoints and the control row. A pure decision, so that every
//! situation is unit-tested and `status` and `status --json` say the same thing.
//!
//! An operator going back (docs/migration.md, "Going back") is told the steps of the way back instead: the way
//! back is under way once `migrate --back` has run, and more recently than `migrate` and `verify` (either of which
//! going forward again runs).

use std::fmt;

use crate::history::{Flag, Stage};
use crate::migrate::checkpoint::Checkpoint;
use crate::migrate::copy::back::floor_of;
use crate::migrate::copy::{DONE, copied_up_to, copy_finished};
use crate::migrate::verify::{FAILED, PASSED, Repair};

/// A checkpoint written less than this many seconds ago belongs to a run that is still going: a copying
/// `migrate` writes it with every chunk, a waiting one every 10 seconds, `verify` with every chunk.
pub const ACTIVE_SECS: u64 = 60;

/// What `status` knows that the next step depends on.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The flags' stage, `None` when the proxy refuses the flags.
    pub stage: Option<Stage>,
    /// Whether the extended table exists with its next id above every old id.
    pub extended_ready: bool,
    /// Whether the old table still has rows.
    pub old_has_rows: bool,
    /// The old table's largest id (`None`: empty or missing).
    pub old_last_id: Option<u64>,
    /// The `migrate` checkpoint, and how many seconds ago it was written.
    pub migrate: Option<(&'a Checkpoint, u64)>,
    /// The `verify` checkpoint, and how many seconds ago it was written.
    pub verify: Option<(&'a Checkpoint, u64)>,
    /// The `migrate --back` checkpoint, and how many seconds ago it was written.
    pub migrate_back: Option<(&'a Checkpoint, u64)>,
    /// The extended table's largest id (`None`: empty or missing).
    pub extended_last_id: Option<u64>,
    /// The extended table's smallest id (`None`: empty or missing).
    pub extended_first_id: Option<u64>,
    /// The old table's next id (`AUTO_INCREMENT`), when known.
    pub old_next_id: Option<u64>,
    /// The extended table's next id, when known.
    pub extended_next_id: Option<u64>,
    /// Whether `csmh-proxy pause` is in force.
    pub paused: bool,
    /// When a proxy asked last found a read that the extended table alone would not answer as both tables do
    /// (`YYYY-MM-DD hh:mm:ss` on the `csmh` server's clock), `None` when none did since it started.
    pub shadow_differing_at: Option<&'a str>,
}

impl Facts<'_> {
    /// Whether the operator is going back: `migrate --back` has run, and more recently than `migrate` and
    /// `verify`.
    pub fn going_back(&self) -> bool {
        let Some((back, _)) = self.migrate_back else { return false };
        // Times are `YYYY-MM-DD hh:mm:ss` on one clock, so they compare as text.
        [self.migrate, self.verify].into_iter().flatten().all(|(forward, _)| back.updated_at >= forward.updated_at)
    }

    /// Whether the old table has rows above every id copied: above where `migrate` copied up to, and above what
    /// a way back copied into the old table (copies of extended rows, which are not to be copied again). Such
    /// rows were written to the old table after the copy, and neither reads of the extended table alone nor
    /// `migrate --back` may go on without them.
    pub fn old_rows_not_copied(&self) -> bool {
        let Some(old_last) = self.old_last_id else { return false };
        let copied = self.migrate.and_then(|(migrate, _)| copied_up_to(migrate)).unwrap_or(0);
        let copied_back = self.migrate_back.and_then(|(back, _)| back.last_id).unwrap_or(0);
        old_last > copied.max(copied_back)
    }

    /// Whether old rows may not be in the extended table yet because the copy has not finished: the old table has
    /// rows, and `migrate` never ran (and the extended table holds no row among the old ids, which a copy made
    /// some other way would) or stopped before its first copy was done (a `--from-id` re-copy in progress does not
    /// count: every row was copied once before it began). Reads of the extended table alone do not show
    /// such rows, and once the old table is retired `migrate` refuses to copy them.
    pub fn copy_unfinished(&self) -> bool {
        match self.migrate {
            Some((migrate, _)) => self.old_has_rows && !copy_finished(Some(migrate)),
            // Without a checkpoint, extended rows among the old ids were copied some other way.
            None => self.old_has_rows && self.extended_first_id.is_none_or(|first| Some(first) > self.old_last_id),
        }
    }
}

/// The step to run next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    /// The proxy refuses the flags in the file: fix them.
    FixFlags,
    /// Create the extended table, or make its ids start above the old ones: `csmh-proxy init`.
    Init,
    /// Change flags in `proxy.toml` (and wait until every proxy runs them: `csmh-proxy fleet`).
    SetFlags(Vec<(Flag, bool)>),
    /// `csmh-proxy pause` holds the copy: `csmh-proxy resume`.
    Resume,
    /// A `migrate` is running: wait for it.
    WaitForMigrate,
    /// Copy the old rows, or go on copying: `csmh-proxy migrate`.
    Migrate,
    /// A `verify` is running: wait for it.
    WaitForVerify,
    /// Compare the tables now that the copy is done: `csmh-proxy verify`.
    Verify,
    /// `verify` found differences: repair them as it said (as the stage allows), then verify again.
    Repair(Repair),
    /// `verify` passed, but shadow reads found answers the extended table alone would not give: look at the ids
    /// the proxies logged before reading the extended table alone.
    InvestigateShadow,
    /// Empty the retired old table: `csmh-proxy truncate-old --yes`.
    TruncateOld,
    /// Nothing left to do.
    Done,
    /// Going back: a `migrate --back` is running: wait for it.
    WaitForMigrateBack,
    /// Going back: copy the extended table back into the old table as the stage asks, or catch up once the flags
    /// are on the old table alone: `csmh-proxy migrate --back`.
    MigrateBack,
    /// Gone back: edxapp reads and writes the old table alone, which has every history row.
    WentBack,
    /// The flags went ahead of the copy (old rows not yet copied do not show, and once retired `migrate` refuses
    /// to copy them): set `flags` back, then take the step `then`.
    SetFlagsBack {
        /// The flags to set.
        flags: Vec<(Flag, bool)>,
        /// The step once they are in force.
        then: Box<NextStep>,
    },
}

impl NextStep {
    /// The step for `facts`.
    pub fn of(facts: &Facts<'_>) -> NextStep {
        let Some(stage) = facts.stage else { return NextStep::FixFlags };
        let back = facts.going_back();
        // Back on the old table, edxapp's new rows take ids above the extended table's: not a reason for `init`.
        if back && stage == Stage::OldTableOnly {
            return back_step(facts, stage);
        }
        if !facts.extended_ready && stage != Stage::OldTableRetired {
            return NextStep::Init;
        }
        if back && stage != Stage::OldTableRetired {
            return back_step(facts, stage);
        }
        match stage {
            Stage::OldTableOnly => NextStep::SetFlags(vec![
                (Flag::EnableCsmhExtended, true),
                (Flag::EnableReadingFromMultipleHistoryTables, true),
            ]),
            Stage::ExtendedTableReadingBoth => copy_step(facts),
            Stage::ExtendedTableOnlyReads => extended_reads_step(facts),
            Stage::OldTableRetired => retired_step(facts),
        }
    }

    /// A stable one-word name, for scripts (`status --json`).
    pub fn key(&self) -> &'static str {
        match self {
            NextStep::FixFlags => "fix_flags",
            NextStep::Init => "init",
            NextStep::SetFlags(_) => "set_flags",
            NextStep::Resume => "resume",
            NextStep::WaitForMigrate => "wait_for_migrate",
            NextStep::Migrate => "migrate",
            NextStep::WaitForVerify => "wait_for_verify",
            NextStep::Verify => "verify",
            NextStep::Repair(_) => "repair",
            NextStep::InvestigateShadow => "investigate_shadow",
            NextStep::TruncateOld => "truncate_old",
            NextStep::Done => "done",
            NextStep::WaitForMigrateBack => "wait_for_migrate_back",
            NextStep::MigrateBack => "migrate_back",
            NextStep::WentBack => "went_back",
            NextStep::SetFlagsBack { .. } => "set_flags",
        }
    }

    /// The command to run, when the step is one.
    pub fn command(&self) -> Option<&'static str> {
        match self {
            NextStep::Init => Some("csmh-proxy init"),
            NextStep::Resume => Some("csmh-proxy resume"),
            NextStep::Migrate => Some("csmh-proxy migrate"),
            NextStep::Verify => Some("csmh-proxy verify"),
            NextStep::TruncateOld => Some("csmh-proxy truncate-old --yes"),
            NextStep::MigrateBack => Some("csmh-proxy migrate --back"),
            NextStep::FixFlags
            | NextStep::SetFlags(_)
            | NextStep::WaitForMigrate
            | NextStep::WaitForVerify
            | NextStep::Repair(_)
            | NextStep::InvestigateShadow
            | NextStep::Done
            | NextStep::WaitForMigrateBack
            | NextStep::WentBack
            | NextStep::SetFlagsBack { .. } => None,
        }
    }

    /// The flags to set, for [`NextStep::SetFlags`].
    pub fn flags(&self) -> &[(Flag, bool)] {
        match self {
            NextStep::SetFlags(flags) | NextStep::SetFlagsBack { flags, .. } => flags,
            _ => &[],
        }
    }

    /// The step after this one, for [`NextStep::SetFlagsBack`].
    pub fn then(&self) -> Option<&NextStep> {
        match self {
            NextStep::SetFlagsBack { then, .. } => Some(then),
            _ => None,
        }
    }

    /// Whether this step copies or waits for the copy: while the old table is not fully copied, the flags must
    /// not be ahead of reads of both tables.
    fn copies(&self) -> bool {
        matches!(self, NextStep::Migrate | NextStep::WaitForMigrate | NextStep::Resume)
    }
}

/// The step of the way back at `stage` (not the retired one): at each stage `migrate --back` first, then the flag
/// of the stage before; back on the old table alone, a catch-up while the extended table has rows above what was
/// copied back.
fn back_step(facts: &Facts<'_>, stage: Stage) -> NextStep {
    let Some((back, age)) = facts.migrate_back else { return NextStep::MigrateBack };
    if back.state != DONE {
        return if age < ACTIVE_SECS { NextStep::WaitForMigrateBack } else { NextStep::MigrateBack };
    }
    match stage {
        // Reading the extended table alone: the old table must have been made the same as it from the first id.
        Stage::ExtendedTableOnlyReads if floor_of(back) == Some(0) => {
            NextStep::SetFlags(vec![(Flag::EnableReadingFromMultipleHistoryTables, true)])
        }
        Stage::ExtendedTableOnlyReads => NextStep::MigrateBack,
        // Reading both: once the old table's next id is above the extended table's, the flags may go back.
        Stage::ExtendedTableReadingBoth => match (facts.old_next_id, facts.extended_next_id) {
            (Some(old), Some(extended)) if old > extended => {
                NextStep::SetFlags(vec![(Flag::EnableCsmhExtended, false)])
            }
            _ => NextStep::MigrateBack,
        },
        Stage::OldTableOnly | Stage::OldTableRetired => match (facts.extended_last_id, back.last_id) {
            (Some(extended), Some(copied)) if extended > copied => NextStep::MigrateBack,
            (Some(_), None) => NextStep::MigrateBack,
            _ => NextStep::WentBack,
        },
    }
}

/// The step while new history goes to the extended table and reads cover both: copy (again, while the old table
/// has rows above what was copied), verify, then stop reading the old table.
fn copy_step(facts: &Facts<'_>) -> NextStep {
    match copying_step(facts) {
        Some(step) => step,
        None => checked_step(facts, Repair::Recopy)
            .unwrap_or_else(|| NextStep::SetFlags(vec![(Flag::EnableReadingFromMultipleHistoryTables, false)])),
    }
}

/// The step of the copy itself: resume it, wait for it, or run `migrate` (first, again, or for rows written to the
/// old table after it); `None` once every old row is copied.
fn copying_step(facts: &Facts<'_>) -> Option<NextStep> {
    match facts.migrate {
        Some((migrate, _)) if migrate.state != DONE && facts.paused => Some(NextStep::Resume),
        Some((migrate, age)) if migrate.state != DONE && age < ACTIVE_SECS => Some(NextStep::WaitForMigrate),
        Some((migrate, _)) if migrate.state != DONE => Some(NextStep::Migrate),
        None => Some(NextStep::Migrate),
        Some(_) if facts.old_rows_not_copied() => Some(NextStep::Migrate),
        Some(_) => None,
    }
}

/// The step that checks a finished copy: verify it (no `verify` since the copy, or one that never finished), wait
/// for a running one, repair what a failed one found (as `repair` says), look at shadow reads that differed since
/// the last passing one started; `None` when the copy is verified and nothing differed since.
fn checked_step(facts: &Facts<'_>, repair: Repair) -> Option<NextStep> {
    let copied_at = facts.migrate.map(|(migrate, _)| migrate.updated_at.as_str()).unwrap_or_default();
    match facts.verify {
        // Times are `YYYY-MM-DD hh:mm:ss` on one clock, so they compare as text. A verify starts strictly after
        // the copy it follows (it waits for the next second), so one started in the copy's last second came first.
        Some((verify, _)) if verify.started_at.as_str() <= copied_at => Some(NextStep::Verify),
        Some((verify, age)) if verify.state != PASSED && verify.state != FAILED && age < ACTIVE_SECS => {
            Some(NextStep::WaitForVerify)
        }
        // Reads differ while rows are not copied yet: only a difference since the last passing verify began counts.
        Some((verify, _))
            if verify.state == PASSED
                && facts.shadow_differing_at.is_some_and(|at| at >= verify.started_at.as_str()) =>
        {
            Some(NextStep::InvestigateShadow)
        }
        Some((verify, _)) if verify.state == PASSED => None,
        Some((verify, _)) if verify.state == FAILED => Some(NextStep::Repair(repair)),
        Some(_) | None => Some(NextStep::Verify),
    }
}

/// The step while reads come from the extended table alone: while old rows are not all copied, reads of both
/// tables back on (rows not yet copied do not show) and the copy's step; rows written to the old table after the
/// copy, `migrate`; a copy not verified, verify or repair (`migrate` still copies here); then retire the old table.
fn extended_reads_step(facts: &Facts<'_>) -> NextStep {
    if facts.copy_unfinished() {
        let then = copying_step(facts).filter(NextStep::copies).unwrap_or(NextStep::Migrate);
        let flags = vec![(Flag::EnableReadingFromMultipleHistoryTables, true)];
        return NextStep::SetFlagsBack { flags, then: Box::new(then) };
    }
    copying_step(facts)
        .or_else(|| checked_step(facts, Repair::Recopy))
        .unwrap_or_else(|| NextStep::SetFlags(vec![(Flag::ReadOnlyFromCsmhe, true)]))
}

/// The step once the old table is retired: done when it is empty. While old rows are not all copied, `migrate`
/// refuses (the old table is retired) and `truncate-old` would lose them: the flags back to a stage where
/// `migrate` copies — reads of both tables when the copy never finished, reads of the extended table alone for
/// rows written to the old table after a finished copy — then `migrate`. A copy not verified: verify, or fix by
/// hand what a failed verify found; verified: truncate the old table.
fn retired_step(facts: &Facts<'_>) -> NextStep {
    if !facts.old_has_rows {
        return NextStep::Done;
    }
    let back = |flags: Vec<(Flag, bool)>| NextStep::SetFlagsBack { flags, then: Box::new(NextStep::Migrate) };
    if facts.copy_unfinished() {
        return back(vec![(Flag::ReadOnlyFromCsmhe, false), (Flag::EnableReadingFromMultipleHistoryTables, true)]);
    }
    if facts.old_rows_not_copied() {
        return back(vec![(Flag::ReadOnlyFromCsmhe, false)]);
    }
    checked_step(facts, Repair::ByHand).unwrap_or(NextStep::TruncateOld)
}

impl fmt::Display for NextStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flags = || -> String {
            let set: Vec<String> = self.flags().iter().map(|(flag, on)| format!("{flag} = {on}")).collect();
            set.join(", ")
        };
        match self {
            NextStep::FixFlags => write!(f, "fix [flags] in the configuration: the proxy refuses them"),
            NextStep::Init => write!(f, "csmh-proxy init: the extended table is missing or its ids would collide"),
            NextStep::SetFlags(_) => write!(
                f,
                "set {} in [flags] (`tutor csmh-proxy flags set` with Tutor), then `csmh-proxy fleet` until every \
                 proxy runs it",
                flags()
            ),
            NextStep::Resume => write!(f, "csmh-proxy resume: the copy is paused by `csmh-proxy pause`"),
            NextStep::WaitForMigrate => write!(f, "wait: `csmh-proxy migrate` is running"),
            NextStep::Migrate => write!(f, "csmh-proxy migrate: old rows are still to be copied"),
            NextStep::WaitForVerify => write!(f, "wait: `csmh-proxy verify` is running"),
            NextStep::Verify => write!(f, "csmh-proxy verify: the copy is done and not yet verified since"),
            NextStep::Repair(Repair::Recopy) => write!(
                f,
                "repair what the last `csmh-proxy verify` found (usually `csmh-proxy migrate --from-id N`, as it \
                 printed), then verify again"
            ),
            NextStep::Repair(Repair::CopyFirst) => write!(f, "{}", crate::migrate::verify::UnfinishedCopy),
            NextStep::Repair(Repair::ByHand) => write!(
                f,
                "fix by hand the rows the last `csmh-proxy verify` listed (with the old table retired, `migrate` no \
                 longer copies it; rows missing from the extended table are usually learner state deleted since, to \
                 delete from the old table too), then verify again"
            ),
            NextStep::InvestigateShadow => write!(
                f,
                "look at the reads the shadow comparison found differing (the proxies' logs name the ids; \
                 `csmh-proxy migrate --from-id N` copies them again) before reading the extended table alone"
            ),
            NextStep::TruncateOld => write!(f, "csmh-proxy truncate-old --yes: the retired old table still has rows"),
            NextStep::Done => write!(f, "none: the old table is retired and empty"),
            NextStep::WaitForMigrateBack => write!(f, "wait: `csmh-proxy migrate --back` is running"),
            NextStep::MigrateBack => write!(
                f,
                "csmh-proxy migrate --back: going back, and the old table is not yet in line with the extended table"
            ),
            NextStep::WentBack => write!(
                f,
                "none: gone back, edxapp reads and writes the old table alone, which has every history row (to \
                 migrate again, see docs/migration.md, \"Going back\")"
            ),
            NextStep::SetFlagsBack { then, .. } => write!(
                f,
                "set {} in [flags] (`tutor csmh-proxy flags set` with Tutor), then `csmh-proxy fleet` until every \
                 proxy runs it: the flags went ahead of the copy, so old rows not yet copied do not show in reads \
                 and `truncate-old` would lose them; then {then}",
                flags()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(state: &str, started_at: &str, updated_at: &str) -> Checkpoint {
        Checkpoint {
            state: state.to_owned(),
            last_id: Some(10),
            target_id: Some(20),
            rows_done: 10,
            detail: None,
            started_at: started_at.to_owned(),
            updated_at: updated_at.to_owned(),
        }
    }

    fn facts(stage: Stage) -> Facts<'static> {
        Facts {
            stage: Some(stage),
            extended_ready: true,
            old_has_rows: true,
            old_last_id: Some(10),
            migrate: None,
            verify: None,
            migrate_back: None,
            extended_last_id: Some(30_000),
            extended_first_id: Some(20_011),
            old_next_id: Some(20_001),
            extended_next_id: Some(30_001),
            paused: false,
            shadow_differing_at: None,
        }
    }

    /// The facts at `stage` after a forward copy `forward` and a way back recorded by `back`, written `age`
    /// seconds ago.
    fn going_back<'a>(stage: Stage, forward: &'a Checkpoint, back: &'a Checkpoint, age: u64) -> Facts<'a> {
        Facts { migrate: Some((forward, 3_600)), migrate_back: Some((back, age)), ..facts(stage) }
    }

    /// A `migrate --back` checkpoint in `state`, up to id 30000, whose old table's own rows end at `floor`.
    fn back_checkpoint(state: &str, floor: u64) -> Checkpoint {
        Checkpoint {
            last_id: Some(30_000),
            detail: Some(crate::migrate::copy::back::series_detail(floor)),
            ..checkpoint(state, "2026-12-02 10:00:00", "2026-12-02 11:00:00")
        }
    }

    #[test]
    fn going_back_each_stage_leads_to_the_one_before() {
        let forward = checkpoint("done", "2026-12-01 10:00:00", "2026-12-01 12:00:00");
        let (same, merged, running) =
            (back_checkpoint("done", 0), back_checkpoint("done", 20_000), back_checkpoint("running", 0));

        // Forward again: a `migrate`, or a `verify`, after the way back.
        let again = checkpoint("done", "2026-12-03 10:00:00", "2026-12-03 11:00:00");
        let forward_again = going_back(Stage::ExtendedTableOnlyReads, &again, &same, 5);
        assert!(!forward_again.going_back());
        assert_eq!(NextStep::of(&forward_again), NextStep::Verify, "copied again, not yet verified");
        let verified_again = checkpoint(PASSED, "2026-12-03 11:10:00", "2026-12-03 11:30:00");
        let forward_again = Facts { verify: Some((&verified_again, 5)), ..forward_again };
        assert_eq!(NextStep::of(&forward_again), NextStep::SetFlags(vec![(Flag::ReadOnlyFromCsmhe, true)]));
        let verified = checkpoint(PASSED, "2026-12-03 10:00:00", "2026-12-03 11:00:00");
        let forward_again =
            Facts { verify: Some((&verified, 5)), ..going_back(Stage::ExtendedTableReadingBoth, &forward, &same, 5) };
        assert!(!forward_again.going_back());
        let verified_before = checkpoint(PASSED, "2026-12-01 12:10:00", "2026-12-01 12:30:00");
        assert!(Facts { verify: Some((&verified_before, 5)), ..forward_again }.going_back());

        // Reading the extended table alone: the old table made the same from the first id, then reads of both.
        let only_reads = Stage::ExtendedTableOnlyReads;
        assert_eq!(NextStep::of(&going_back(only_reads, &forward, &running, 5)), NextStep::WaitForMigrateBack);
        assert_eq!(NextStep::of(&going_back(only_reads, &forward, &running, 3_600)), NextStep::MigrateBack);
        assert_eq!(NextStep::of(&going_back(only_reads, &forward, &merged, 5)), NextStep::MigrateBack);
        assert_eq!(
            NextStep::of(&going_back(only_reads, &forward, &same, 5)),
            NextStep::SetFlags(vec![(Flag::EnableReadingFromMultipleHistoryTables, true)])
        );

        // Reading both: once the old table's next id is above the extended table's, the old table alone.
        let raised =
            Facts { old_next_id: Some(40_001), ..going_back(Stage::ExtendedTableReadingBoth, &forward, &merged, 5) };
        assert_eq!(NextStep::of(&raised), NextStep::SetFlags(vec![(Flag::EnableCsmhExtended, false)]));
        let used_up = Facts { extended_next_id: Some(40_001), ..raised };
        assert_eq!(NextStep::of(&used_up), NextStep::MigrateBack, "the room above the extended ids is used up");

        // The old table alone: catch up while the extended table has rows above what was copied back.
        let newer = Facts {
            extended_last_id: Some(30_005),
            extended_ready: false,
            ..going_back(Stage::OldTableOnly, &forward, &merged, 5)
        };
        assert_eq!(NextStep::of(&newer), NextStep::MigrateBack);
        let caught_up = NextStep::of(&Facts { extended_last_id: Some(30_000), ..newer });
        assert_eq!((caught_up.key(), caught_up.command()), ("went_back", None));

        // Retired, the runbook goes forward whatever came before, once the copy is verified.
        let retired = going_back(Stage::OldTableRetired, &forward, &same, 5);
        assert_eq!(NextStep::of(&Facts { verify: Some((&verified, 5)), ..retired }), NextStep::TruncateOld);
    }

    #[test]
    fn each_stage_leads_to_the_next() {
        assert_eq!(NextStep::of(&Facts { stage: None, ..facts(Stage::OldTableOnly) }), NextStep::FixFlags);
        assert_eq!(NextStep::of(&Facts { extended_ready: false, ..facts(Stage::OldTableOnly) }), NextStep::Init);
        let first = NextStep::of(&facts(Stage::OldTableOnly));
        assert_eq!(first.flags().len(), 2);
        assert!(first.to_string().starts_with("set ENABLE_CSMH_EXTENDED = true, "), "{first}");
        assert_eq!(NextStep::of(&facts(Stage::ExtendedTableReadingBoth)), NextStep::Migrate);
        let copied = checkpoint("done", "2026-12-01 10:00:00", "2026-12-01 12:00:00");
        let verified = checkpoint(PASSED, "2026-12-01 12:10:00", "2026-12-01 12:30:00");
        let extended_reads =
            Facts { migrate: Some((&copied, 5)), verify: Some((&verified, 5)), ..facts(Stage::ExtendedTableOnlyReads) };
        assert_eq!(NextStep::of(&extended_reads), NextStep::SetFlags(vec![(Flag::ReadOnlyFromCsmhe, true)]));
        let written_since = Facts { old_last_id: Some(11), ..extended_reads };
        assert_eq!(NextStep::of(&written_since), NextStep::Migrate, "old rows above the copy's last id");
        let retired =
            Facts { migrate: Some((&copied, 5)), verify: Some((&verified, 5)), ..facts(Stage::OldTableRetired) };
        assert_eq!(NextStep::of(&retired), NextStep::TruncateOld);
        let emptied = Facts { old_has_rows: false, extended_ready: false, ..facts(Stage::OldTableRetired) };
        assert_eq!(NextStep::of(&emptied), NextStep::Done);
    }

    /// The `migrate` checkpoints a test walks through: never run, copying (written just now), stopped, paused, a
    /// `--from-id` re-copy under way, done.
    fn copies() -> Vec<(&'static str, Option<(Checkpoint, u64)>)> {
        let at = |state| checkpoint(state, "2026-12-01 10:00:00", "2026-12-01 12:00:00");
        let recopy = Checkpoint { detail: Some("re-copy from id 3 up to id 10".to_owned()), ..at("running") };
        vec![
            ("never run", None),
            ("copying", Some((at("running"), 5))),
            ("stopped", Some((at("running"), 3_600))),
            ("paused", Some((at("paused"), 5))),
            ("re-copying", Some((recopy, 5))),
            ("done", Some((at("done"), 5))),
        ]
    }

    /// The `verify` checkpoints a test walks through: never run, run before the copy, running, failed, passed.
    fn verifies() -> Vec<(&'static str, Option<(Checkpoint, u64)>)> {
        let after = |state| checkpoint(state, "2026-12-01 12:10:00", "2026-12-01 12:30:00");
        vec![
            ("never run", None),
            ("before the copy", Some((checkpoint(PASSED, "2026-12-01 09:00:00", "2026-12-01 09:30:00"), 5))),
            ("running", Some((after(RUNNING), 5))),
            ("failed", Some((after(FAILED), 5))),
            ("passed", Some((after(PASSED), 5))),
        ]
    }

    const RUNNING: &str = "running";

    #[test]
    fn no_stage_goes_forward_before_the_copy_is_finished_and_verified() {
        let forward = |step: &NextStep, stage: Stage| match stage {
            Stage::ExtendedTableReadingBoth => {
                *step == NextStep::SetFlags(vec![(Flag::EnableReadingFromMultipleHistoryTables, false)])
            }
            Stage::ExtendedTableOnlyReads => *step == NextStep::SetFlags(vec![(Flag::ReadOnlyFromCsmhe, true)]),
            _ => matches!(step, NextStep::TruncateOld | NextStep::Done),
        };
        let stages = [Stage::ExtendedTableReadingBoth, Stage::ExtendedTableOnlyReads, Stage::OldTableRetired];
        for stage in stages {
            for (copy, migrate) in copies() {
                for (check, verify) in verifies() {
                    for paused in [false, true] {
                        let facts = Facts {
                            migrate: migrate.as_ref().map(|(c, age)| (c, *age)),
                            verify: verify.as_ref().map(|(c, age)| (c, *age)),
                            paused: paused && copy == "paused",
                            ..facts(stage)
                        };
                        let step = NextStep::of(&facts);
                        // Retired, a re-copy cannot go on (`migrate` refuses), and a verify passed after it.
                        let copied = copy == "done" || (copy == "re-copying" && stage == Stage::OldTableRetired);
                        let safe = copied && check == "passed";
                        assert_eq!(forward(&step, stage), safe, "{stage:?}, copy {copy}, verify {check}: {step}");
                        let unfinished = !matches!(copy, "done" | "re-copying");
                        let ahead = stage != Stage::ExtendedTableReadingBoth && unfinished;
                        assert_eq!(matches!(step, NextStep::SetFlagsBack { .. }), ahead, "{stage:?}, {copy}: {step}");
                    }
                }
            }
        }
    }

    #[test]
    fn flags_ahead_of_the_copy_are_set_back_before_it_goes_on() {
        let copies = copies();
        let [never, copying, stopped, paused, ..] = &copies[..] else { unreachable!() };
        let reads = |migrate: &Option<(Checkpoint, u64)>, paused| {
            let migrate = migrate.as_ref().map(|(c, age)| (c, *age));
            NextStep::of(&Facts { migrate, paused, ..facts(Stage::ExtendedTableOnlyReads) })
        };
        let both = vec![(Flag::EnableReadingFromMultipleHistoryTables, true)];
        let back_then = |then| NextStep::SetFlagsBack { flags: both.clone(), then: Box::new(then) };
        assert_eq!(reads(&never.1, false), back_then(NextStep::Migrate));
        assert_eq!(reads(&copying.1, false), back_then(NextStep::WaitForMigrate));
        assert_eq!(reads(&stopped.1, false), back_then(NextStep::Migrate));
        assert_eq!(reads(&paused.1, true), back_then(NextStep::Resume));
        let step = reads(&copying.1, false);
        assert_eq!(
            (step.key(), step.command(), step.flags(), step.then()),
            ("set_flags", None, &both[..], Some(&NextStep::WaitForMigrate))
        );
        let why = step.to_string();
        assert!(why.starts_with("set ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES = true in [flags]"), "{why}");
        assert!(why.ends_with("then wait: `csmh-proxy migrate` is running"), "{why}");

        // Retired before the copy finished: back to reads of both tables, where `migrate` copies.
        let retired = NextStep::of(&facts(Stage::OldTableRetired));
        let unretire = vec![(Flag::ReadOnlyFromCsmhe, false), (Flag::EnableReadingFromMultipleHistoryTables, true)];
        assert_eq!(retired, NextStep::SetFlagsBack { flags: unretire, then: Box::new(NextStep::Migrate) });
        // Retired after the copy, with old rows written since: back to reads of the extended table alone.
        let done = checkpoint(DONE, "2026-12-01 10:00:00", "2026-12-01 12:00:00");
        let written = Facts { migrate: Some((&done, 5)), old_last_id: Some(11), ..facts(Stage::OldTableRetired) };
        let flags = vec![(Flag::ReadOnlyFromCsmhe, false)];
        assert_eq!(NextStep::of(&written), NextStep::SetFlagsBack { flags, then: Box::new(NextStep::Migrate) });
        // Retired with a failed verify: fixed by hand, as `verify` advises once retired.
        let failed = checkpoint(FAILED, "2026-12-01 12:10:00", "2026-12-01 12:30:00");
        let by_hand = Facts { migrate: Some((&done, 5)), verify: Some((&failed, 5)), ..facts(Stage::OldTableRetired) };
        let step = NextStep::of(&by_hand);
        assert_eq!(step, NextStep::Repair(Repair::ByHand));
        assert!(step.to_string().contains("by hand") && !step.to_string().contains("--from-id"), "{step}");
        // Copied some other way (no checkpoint, extended rows among the old ids): not an unfinished copy.
        let by_other_means = Facts { extended_first_id: Some(1), ..facts(Stage::OldTableRetired) };
        assert!(!by_other_means.copy_unfinished());
        // An empty old table has nothing to copy: done, whatever the checkpoints say.
        assert_eq!(
            NextStep::of(&Facts { old_has_rows: false, old_last_id: None, ..facts(Stage::OldTableRetired) }),
            NextStep::Done
        );
    }

    #[test]
    fn while_reading_both_copy_then_verify_then_stop_reading_the_old_table() {
        let reading_both = facts(Stage::ExtendedTableReadingBoth);
        let running = checkpoint("running", "2026-12-01 10:00:00", "2026-12-01 11:00:00");
        let paused = checkpoint("paused", "2026-12-01 10:00:00", "2026-12-01 11:00:00");
        let done = checkpoint("done", "2026-12-01 10:00:00", "2026-12-01 12:00:00");
        let step = |migrate, verify, paused| NextStep::of(&Facts { migrate, verify, paused, ..reading_both });
        assert_eq!(step(Some((&running, 5)), None, false), NextStep::WaitForMigrate);
        assert_eq!(step(Some((&running, 3600)), None, false), NextStep::Migrate, "a run that stopped");
        assert_eq!(step(Some((&paused, 5)), None, true), NextStep::Resume);
        assert_eq!(step(Some((&done, 5)), None, false), NextStep::Verify);
        let stale = checkpoint(PASSED, "2026-12-01 09:00:00", "2026-12-01 09:30:00");
        assert_eq!(step(Some((&done, 5)), Some((&stale, 5)), false), NextStep::Verify, "verified before the copy");
        let verifying = checkpoint("running", "2026-12-01 12:10:00", "2026-12-01 12:11:00");
        assert_eq!(step(Some((&done, 5)), Some((&verifying, 5)), false), NextStep::WaitForVerify);
        let failed = checkpoint(FAILED, "2026-12-01 12:10:00", "2026-12-01 12:30:00");
        assert_eq!(step(Some((&done, 5)), Some((&failed, 5)), false), NextStep::Repair(Repair::Recopy));
        let passed = checkpoint(PASSED, "2026-12-01 12:10:00", "2026-12-01 12:30:00");
        assert_eq!(
            step(Some((&done, 5)), Some((&passed, 5)), true),
            NextStep::SetFlags(vec![(Flag::EnableReadingFromMultipleHistoryTables, false)]),
            "a pause left over after the copy does not matter"
        );
        let written_since =
            Facts { old_last_id: Some(11), migrate: Some((&done, 5)), verify: Some((&passed, 5)), ..reading_both };
        assert_eq!(NextStep::of(&written_since), NextStep::Migrate, "old rows above the copy's last id");
        let verified = Facts { migrate: Some((&done, 5)), verify: Some((&passed, 5)), ..reading_both };
        let shadowed = Facts { shadow_differing_at: Some("2026-12-01 12:20:00"), ..verified };
        assert_eq!(NextStep::of(&shadowed), NextStep::InvestigateShadow, "a read differed while verify ran");
        let before = Facts { shadow_differing_at: Some("2026-12-01 12:09:59"), ..verified };
        assert_eq!(
            NextStep::of(&before),
            NextStep::SetFlags(vec![(Flag::EnableReadingFromMultipleHistoryTables, false)]),
            "reads that differed before the verify that passed (rows not copied yet, since repaired) are past"
        );
    }
}
