//! Comparing the two tables over an id range: both servers are asked for the range's count and checksum at the
//! same time, and a range that differs is cut in halves until each part is equal, one-sided (all its rows
//! missing or extra), or small enough to compare row by row.

use std::cmp::Ordering;

use super::ids::IdRange;
use super::report::{Difference, Differences, Kind};
use super::table::{Read, Sum, Table};
use crate::migrate::MigrateError;

/// A range holding at most this many rows on each side is compared row by row rather than halved again.
const ROW_BY_ROW: u64 = 1_000;

/// The old and the extended table, compared over the same ids.
pub struct Pair<'a> {
    /// The old table.
    pub old: Table<'a>,
    /// The extended table.
    pub extended: Table<'a>,
}

impl Pair<'_> {
    /// Both tables' count and checksum of `range`, asked of both servers concurrently; `old_read` says whether
    /// the old table's rows are locked.
    pub async fn sums(&mut self, range: IdRange, old_read: Read) -> Result<(Sum, Sum), MigrateError> {
        tokio::try_join!(self.old.sum(range, old_read), self.extended.sum(range, Read::Plain))
    }

    /// Records in `found` where the tables differ within `range`, whose sums are `sums`: an equal range as equal,
    /// a differing one narrowed down (unless `found` is full, then listed whole).
    pub async fn narrow(
        &mut self,
        range: IdRange,
        sums: (Sum, Sum),
        found: &mut Differences,
    ) -> Result<(), MigrateError> {
        // Ranges still to look at, the lowest on top so that differences are found in id order.
        let mut pending = vec![(range, Some(sums))];
        while let Some((range, sums)) = pending.pop() {
            let (old, extended) = match sums {
                Some(sums) => sums,
                None => self.sums(range, Read::Plain).await?,
            };
            if old.matches(&extended) {
                found.same(old.rows);
                continue;
            }
            let halves = range.halves();
            match (old.ids, extended.ids, halves) {
                (Some(ids), None, _) => {
                    found.add(Difference { kind: Kind::Missing, ids, old_rows: old.rows, extended_rows: 0 })
                }
                (None, Some(ids), _) => {
                    found.add(Difference { kind: Kind::Extra, ids, old_rows: 0, extended_rows: extended.rows })
                }
                (_, _, None) => self.compare_rows(range, found).await?,
                _ if old.rows.max(extended.rows) <= ROW_BY_ROW => self.compare_rows(range, found).await?,
                _ if found.full() => found.add(Difference {
                    kind: Kind::NotNarrowed,
                    ids: range,
                    old_rows: old.rows,
                    extended_rows: extended.rows,
                }),
                (_, _, Some((low, high))) => {
                    pending.push((high, None));
                    pending.push((low, None));
                }
            }
        }
        Ok(())
    }

    /// Compares `range` row by row and records each id as equal, missing, extra or changed.
    async fn compare_rows(&mut self, range: IdRange, found: &mut Differences) -> Result<(), MigrateError> {
        let (old, extended) = tokio::try_join!(self.old.row_hashes(range), self.extended.row_hashes(range))?;
        found.compared_rows(old.len().max(extended.len()) as u64);
        for (id, side) in merge_by_id(&old, &extended) {
            let one = IdRange::new(id, id);
            match side {
                Presence::Both { same: true } => found.same(1),
                Presence::Both { same: false } => {
                    found.add(Difference { kind: Kind::Changed, ids: one, old_rows: 1, extended_rows: 1 })
                }
                Presence::OldOnly => {
                    found.add(Difference { kind: Kind::Missing, ids: one, old_rows: 1, extended_rows: 0 })
                }
                Presence::ExtendedOnly => {
                    found.add(Difference { kind: Kind::Extra, ids: one, old_rows: 0, extended_rows: 1 })
                }
            }
        }
        Ok(())
    }
}

/// Where an id was found by a row-by-row comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    /// In both tables, with the same hash or not.
    Both { same: bool },
    /// In the old table only.
    OldOnly,
    /// In the extended table only.
    ExtendedOnly,
}

/// Walks two lists of `(id, hash)` sorted by id, and says for each id which lists have it.
fn merge_by_id(old: &[(u64, u64)], extended: &[(u64, u64)]) -> Vec<(u64, Presence)> {
    let (mut o, mut e) = (0, 0);
    let mut merged = Vec::with_capacity(old.len().max(extended.len()));
    while o < old.len() || e < extended.len() {
        let order = match (old.get(o), extended.get(e)) {
            (Some(a), Some(b)) => a.0.cmp(&b.0),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                merged.push((old[o].0, Presence::OldOnly));
                o += 1;
            }
            Ordering::Greater => {
                merged.push((extended[e].0, Presence::ExtendedOnly));
                e += 1;
            }
            Ordering::Equal => {
                merged.push((old[o].0, Presence::Both { same: old[o].1 == extended[e].1 }));
                o += 1;
                e += 1;
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::{Presence, merge_by_id};

    #[test]
    fn rows_are_matched_by_id() {
        let old = [(1, 10), (2, 20), (4, 40), (6, 60)];
        let extended = [(2, 20), (3, 30), (4, 41), (7, 70)];
        assert_eq!(
            merge_by_id(&old, &extended),
            [
                (1, Presence::OldOnly),
                (2, Presence::Both { same: true }),
                (3, Presence::ExtendedOnly),
                (4, Presence::Both { same: false }),
                (6, Presence::OldOnly),
                (7, Presence::ExtendedOnly),
            ]
        );
    }
}
