//! What a comparison found: the id ranges where the tables differ, merged and described for the operator, and the
//! report `verify` prints.

use std::fmt;
use std::time::Duration;

use super::ids::IdRange;
use crate::history::{Flag, Flags, TableName};

/// How the rows of a differing id range differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Rows of the old table that the extended table does not have.
    Missing,
    /// Rows of the extended table, under ids the old table has or `migrate` copied, that the old table does not
    /// have.
    Extra,
    /// Rows in both tables with different values.
    Changed,
    /// A range that differs but was not narrowed down, because enough ranges had been found already.
    NotNarrowed,
}

impl Kind {
    /// Every kind, in the order the report explains them.
    const ALL: [Kind; 4] = [Kind::Missing, Kind::Changed, Kind::Extra, Kind::NotNarrowed];

    /// The word the report prints first on each line.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Extra => "extra",
            Kind::Changed => "changed",
            Kind::NotNarrowed => "differs",
        }
    }

    /// What ranges of this kind mean.
    fn meaning(self) -> &'static str {
        match self {
            Kind::Missing => {
                "missing: rows of the old table that are not in the extended table (has `csmh-proxy migrate` run \
                 to the end?). Once READ_ONLY_FROM_CSMHE is on, deleting a learner's state reaches only the \
                 extended table, so such rows may also be history deleted since: then delete them from the old \
                 table too."
            }
            Kind::Changed => {
                "changed: rows in both tables with different values; the old row changed after it was copied, or \
                 the copy was altered."
            }
            Kind::Extra => {
                "extra: rows in the extended table under an id the old table has or `migrate` copied, that the old \
                 table does not have; they were deleted from the old table after being copied (by edxapp through a \
                 proxy with ENABLE_CSMH_EXTENDED off, which reaches the old table alone), or written with that id. \
                 `csmh-proxy migrate --from-id N` removes such rows from id N on (where it copies again, up to the \
                 highest id copied, it removes the extended rows the old table no longer has, though never below \
                 the old table's smallest id, where rows drained from it live in the extended table alone: delete \
                 extra rows there by hand): look at them before running it; they can also be deleted by hand."
            }
            Kind::NotNarrowed => {
                "differs: ranges not narrowed down because enough differences were found already; `csmh-proxy \
                 verify --max-ranges N` with a larger N shows them in detail."
            }
        }
    }

    /// Whether the re-copy the advice suggests starts at ranges of this kind. Not at extra rows: a re-copy would
    /// remove them, which the operator decides after looking at them.
    fn recopy_suggested(self) -> bool {
        self != Kind::Extra
    }
}

/// One id range where the tables differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// How the rows differ.
    pub kind: Kind,
    /// The ids, from the first to the last differing one.
    pub ids: IdRange,
    /// Rows of the range in the old table.
    pub old_rows: u64,
    /// Rows of the range in the extended table.
    pub extended_rows: u64,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids = self.ids.to_string();
        let rows = |n: u64| if n == 1 { "1 row".to_owned() } else { format!("{n} rows") };
        write!(f, "{ids:<24} {:<8} ", self.kind.label())?;
        match self.kind {
            Kind::Missing => write!(f, "{} of the old table, not in the extended table", rows(self.old_rows)),
            Kind::Extra => write!(f, "{} in the extended table only", rows(self.extended_rows)),
            Kind::Changed => write!(f, "{} with different values in the two tables", rows(self.old_rows)),
            Kind::NotNarrowed => write!(
                f,
                "{} in the old table, {} in the extended table, not narrowed down",
                rows(self.old_rows),
                rows(self.extended_rows)
            ),
        }
    }
}

/// Rows compared one by one, per range of the limit, before differing chunks are no longer narrowed down: a
/// table whose every row differs (say, text converted to another character set) is then not read row by row.
const ROWS_PER_RANGE: u64 = 1_000;

/// The differences found so far, in id order, with neighbouring ranges of the same kind merged.
#[derive(Debug, Clone)]
pub struct Differences {
    found: Vec<Difference>,
    /// Whether the last difference may still grow: no matching row has been seen since it.
    open: bool,
    /// How many ranges to narrow down before the rest are listed whole.
    limit: usize,
    /// Rows compared one by one so far.
    rows_compared: u64,
}

impl Differences {
    /// No differences yet; after `limit` ranges (or `limit` thousand rows compared one by one), differing chunks
    /// are no longer narrowed down.
    pub fn new(limit: usize) -> Differences {
        Differences { found: Vec::new(), open: false, limit, rows_compared: 0 }
    }

    /// Notes that `rows` rows were compared one by one.
    pub fn compared_rows(&mut self, rows: u64) {
        self.rows_compared += rows;
    }

    /// Records `rows` rows found equal in both tables, after every difference recorded so far.
    pub fn same(&mut self, rows: u64) {
        if rows > 0 {
            self.open = false;
        }
    }

    /// Records a difference above every one recorded so far; it joins the previous one when nothing equal lies
    /// between them and they are of the same kind.
    pub fn add(&mut self, difference: Difference) {
        match self.found.last_mut() {
            Some(last) if self.open && last.kind == difference.kind => {
                last.ids.last = difference.ids.last;
                last.old_rows += difference.old_rows;
                last.extended_rows += difference.extended_rows;
            }
            _ => self.found.push(difference),
        }
        self.open = true;
    }

    /// Whether enough ranges have been found that further ones are not narrowed down.
    pub fn full(&self) -> bool {
        self.found.len() >= self.limit || self.rows_compared >= (self.limit as u64).saturating_mul(ROWS_PER_RANGE)
    }

    /// How many differing ranges have been found.
    pub fn count(&self) -> usize {
        self.found.len()
    }

    /// The differences, in id order.
    pub fn into_vec(self) -> Vec<Difference> {
        self.found
    }
}

/// How many differing ranges a report lists before it says how many more there are.
const LISTED: usize = 50;

/// The differences, one per line, the first [`LISTED`] of them.
pub struct DifferenceList<'a>(pub &'a [Difference]);

impl fmt::Display for DifferenceList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for difference in self.0.iter().take(LISTED) {
            writeln!(f, "  {difference}")?;
        }
        if self.0.len() > LISTED {
            writeln!(f, "  ... and {} more ranges", self.0.len() - LISTED)?;
        }
        Ok(())
    }
}

/// How the differences `verify` finds can be repaired: by the stage the flags set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// The old table is still copied: `csmh-proxy migrate --from-id N` copies it again from N.
    Recopy,
    /// The old table is retired (`READ_ONLY_FROM_CSMHE`): `migrate` refuses to copy it, since learner state
    /// deleted since lives only in the extended table and a copy would bring it back; rows are fixed by hand.
    ByHand,
    /// The old table is retired, but `migrate` never finished copying it: the rows are not copied yet, and are
    /// copied with the flags set back ([`UnfinishedCopy`]), never fixed by hand.
    CopyFirst,
}

impl Repair {
    /// The repair the flags in force allow, `copy_finished` saying whether `migrate` has copied every old row
    /// once.
    pub fn of(flags: &Flags, copy_finished: bool) -> Repair {
        match (flags.read_only_from_csmhe, copy_finished) {
            (false, _) => Repair::Recopy,
            (true, true) => Repair::ByHand,
            (true, false) => Repair::CopyFirst,
        }
    }
}

/// What to do when the old table was retired before `migrate` finished copying it: its rows not yet copied show
/// in no read, `migrate` refuses to copy a retired table, and fixing "by hand" every row verify lists would mean
/// deleting them. The flags go back to reads of both tables, where `migrate` copies them.
pub struct UnfinishedCopy;

impl fmt::Display for UnfinishedCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`csmh-proxy migrate` has not finished copying the old table, so its rows not yet copied show in no \
             read and are not to be fixed by hand: set {} = false and {} = true in [flags], wait until `csmh-proxy \
             fleet` shows every proxy running them, then run `csmh-proxy migrate` and `csmh-proxy verify`",
            Flag::ReadOnlyFromCsmhe,
            Flag::EnableReadingFromMultipleHistoryTables
        )
    }
}

/// What each kind of difference present in a list means, and what to do about it, as `Repair` allows.
pub struct Advice<'a>(pub &'a [Difference], pub Repair);

impl fmt::Display for Advice<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for kind in Kind::ALL.into_iter().filter(|kind| self.0.iter().any(|d| d.kind == *kind)) {
            writeln!(f, "{}", kind.meaning())?;
        }
        if self.1 == Repair::CopyFirst {
            return writeln!(f, "{UnfinishedCopy}.");
        }
        if self.1 == Repair::ByHand {
            return writeln!(
                f,
                "With {} on, `csmh-proxy migrate` no longer copies the old table (learner state deleted since lives \
                 only in the extended table, and a copy would bring it back): look at the rows listed and fix them \
                 by hand.",
                Flag::ReadOnlyFromCsmhe
            );
        }
        let repairable = self.0.iter().filter(|d| d.kind.recopy_suggested()).map(|d| d.ids.first).min();
        let Some(first) = repairable else {
            return Ok(());
        };
        write!(
            f,
            "To copy the old rows again from id {first} on (where the first missing, changed or not narrowed down \
             range starts; rows already in the extended table are overwritten): `csmh-proxy migrate --from-id \
             {first}`, then `csmh-proxy verify` again."
        )?;
        if self.0.iter().any(|d| d.kind == Kind::Extra && d.ids.last >= first) {
            write!(f, " It also removes the extra rows listed from id {first} on.")?;
        }
        writeln!(f)
    }
}

/// The result of one comparison of the old table with the extended table.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// The old table.
    pub old: TableName,
    /// The extended table.
    pub extended: TableName,
    /// The ids compared: where copies can be, from both tables' smallest id to the larger of the old table's
    /// largest and the largest copy (see the module's doc); `None` when there is nothing to compare.
    pub range: Option<IdRange>,
    /// Rows of the old table compared.
    pub old_rows: u64,
    /// Rows of the extended table in the same id range.
    pub extended_rows: u64,
    /// Chunks compared.
    pub chunks: u64,
    /// Where the tables differ, in id order.
    pub differences: Vec<Difference>,
    /// How its differences can be repaired, by the flags in force.
    pub repair: Repair,
    /// How long the comparison took.
    pub elapsed: Duration,
}

impl VerifyReport {
    /// Whether every row of the old table is in the extended table with the same values, and nothing else is
    /// there under the old table's ids.
    pub fn passed(&self) -> bool {
        self.differences.is_empty()
    }

    /// What a failed comparison found: how many id ranges differ, and the first of them, one per line.
    pub fn failure(&self) -> String {
        format!(
            "verify FAILED: the tables differ in {} id ranges:\n{}",
            self.differences.len(),
            DifferenceList(&self.differences)
        )
    }

    /// One line saying what was compared.
    pub fn scope(&self) -> String {
        match self.range {
            None => format!("{} is empty: there is nothing to compare", self.old),
            Some(range) => format!(
                "compared {} with {} over {range} in {} chunks: {} rows in the old table, {} in the extended \
                 table ({:.1} s)",
                self.old,
                self.extended,
                self.chunks,
                self.old_rows,
                self.extended_rows,
                self.elapsed.as_secs_f64()
            ),
        }
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.scope())?;
        if self.passed() {
            return writeln!(
                f,
                "verify passed: every row of the old table is in the extended table with the same values"
            );
        }
        write!(f, "{}{}", self.failure(), Advice(&self.differences, self.repair))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Stage;

    fn difference(kind: Kind, first: u64, last: u64, rows: u64) -> Difference {
        let (old_rows, extended_rows) = if kind == Kind::Extra { (0, rows) } else { (rows, rows) };
        Difference { kind, ids: IdRange::new(first, last), old_rows, extended_rows }
    }

    #[test]
    fn neighbouring_ranges_of_one_kind_merge_unless_equal_rows_lie_between() {
        let mut found = Differences::new(100);
        found.add(difference(Kind::Missing, 1, 5, 5));
        found.same(0);
        found.add(difference(Kind::Missing, 9, 12, 4));
        found.same(3);
        found.add(difference(Kind::Missing, 20, 20, 1));
        found.add(difference(Kind::Changed, 21, 21, 1));
        assert_eq!(
            found.into_vec(),
            [
                difference(Kind::Missing, 1, 12, 9),
                difference(Kind::Missing, 20, 20, 1),
                difference(Kind::Changed, 21, 21, 1)
            ]
        );
    }

    #[test]
    fn differences_are_full_after_the_limit_of_ranges_or_of_rows_compared() {
        let mut found = Differences::new(2);
        found.add(difference(Kind::Missing, 1, 1, 1));
        found.add(difference(Kind::Extra, 2, 2, 1));
        assert!(found.full());
        let mut found = Differences::new(2);
        found.compared_rows(1_999);
        assert!(!found.full());
        found.compared_rows(1);
        assert!(found.full(), "after 2,000 rows compared one by one");
    }

    #[test]
    fn each_line_names_the_ids_and_the_kind() {
        assert!(difference(Kind::Missing, 500, 501, 2).to_string().starts_with("ids 500-501"));
        let line = difference(Kind::Extra, 900, 900, 1).to_string();
        assert!(line.starts_with("id 900 ") && line.contains("extra") && line.contains("1 row in the extended"));
    }

    #[test]
    fn the_list_is_capped_and_explains_each_kind_present() {
        let many: Vec<Difference> = (0..60).map(|i| difference(Kind::Changed, i * 10, i * 10, 1)).collect();
        let text = format!("{}{}", DifferenceList(&many), Advice(&many, Repair::Recopy));
        assert!(text.contains("... and 10 more ranges"), "{text}");
        assert!(text.contains("changed: rows in both tables") && !text.contains("missing:"), "{text}");
        assert!(text.contains("from id 0 on") && text.contains("`csmh-proxy migrate --from-id 0`"), "{text}");
        assert!(!text.contains("removes the extra rows"), "{text}");
    }

    #[test]
    fn the_recopy_starts_at_the_first_missing_or_changed_id_and_says_which_extra_rows_it_removes() {
        let extra = [difference(Kind::Extra, 7, 7, 1)];
        let text = Advice(&extra, Repair::Recopy).to_string();
        assert!(text.contains("look at them before running it") && !text.contains("To copy"), "{text}");

        let mixed = [
            difference(Kind::Extra, 7, 7, 1),
            difference(Kind::Missing, 14, 20, 7),
            difference(Kind::Extra, 900, 900, 1),
        ];
        let text = Advice(&mixed, Repair::Recopy).to_string();
        assert!(text.contains("again from id 14 on") && text.contains("`csmh-proxy migrate --from-id 14`"), "{text}");
        assert!(text.contains("removes the extra rows listed from id 14 on"), "{text}");
        let below = &mixed[..2];
        assert!(!Advice(below, Repair::Recopy).to_string().contains("removes the extra rows listed"), "id 7 is below");
    }

    #[test]
    fn once_the_old_table_is_retired_the_advice_is_to_fix_rows_by_hand() {
        let missing = [difference(Kind::Missing, 14, 20, 7)];
        let text = Advice(&missing, Repair::ByHand).to_string();
        assert!(text.contains("fix them by hand") && !text.contains("--from-id 14"), "{text}");
        assert!(text.contains("delete them from the old table too"), "what a missing row may be: {text}");
    }

    #[test]
    fn retired_before_the_copy_finished_the_advice_is_to_set_the_flags_back_and_copy() {
        assert_eq!(Repair::of(&Stage::OldTableRetired.flags(), false), Repair::CopyFirst);
        assert_eq!(Repair::of(&Stage::OldTableRetired.flags(), true), Repair::ByHand);
        assert_eq!(Repair::of(&Stage::ExtendedTableOnlyReads.flags(), false), Repair::Recopy);
        let missing = [difference(Kind::Missing, 1, 20_000, 20_000)];
        let text = Advice(&missing, Repair::CopyFirst).to_string();
        assert!(!text.contains("fix them by hand") && text.contains("not to be fixed by hand"), "{text}");
        assert!(text.contains("READ_ONLY_FROM_CSMHE = false") && text.contains("run `csmh-proxy migrate`"), "{text}");
    }
}
