//! Comparing the answer a client got from a merged read with the answer of the extended table alone, row by row,
//! as pure logic. Rows are the text protocol's cells (`None` for NULL), compared byte for byte; rows are matched
//! by their history `id` when the read selected it, as a multiset of whole rows otherwise.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// One row of a text result: its cells, `None` for NULL.
pub type Row = Vec<Option<Vec<u8>>>;

/// How two answers differ. Ids are history ids; values are never kept, so a difference can be logged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Difference {
    /// Rows the client got that the extended table alone did not return: the copy is incomplete there. By id,
    /// or only counted (`missing_rows`) when the read did not select the id.
    pub missing: Vec<u64>,
    /// Rows the extended table alone returned that the client did not get (often a row written in between).
    pub extra: Vec<u64>,
    /// Rows with the same id and different values.
    pub changed: Vec<u64>,
    /// Rows missing, counted, when they have no id to name them by.
    pub missing_rows: usize,
    /// Rows extra, counted, when they have no id to name them by.
    pub extra_rows: usize,
    /// The same rows in another order.
    pub reordered: bool,
}

/// The most ids of each kind a difference names when shown.
const SHOWN_IDS: usize = 20;

/// Compares the client's answer with the extended table's; `None` when they are the same rows in the same
/// order. `id_column` is the position of the history id among the columns, if the read selected it.
pub fn compare(answered: &[Row], shadow: &[Row], id_column: Option<usize>) -> Option<Difference> {
    if answered == shadow {
        return None;
    }
    let by_id = id_column.and_then(|column| Some((rows_by_id(answered, column)?, rows_by_id(shadow, column)?)));
    let difference = match by_id {
        Some((answered_ids, shadow_ids)) => compare_by_id(&answered_ids, &shadow_ids),
        None => compare_as_multisets(answered, shadow),
    };
    Some(difference)
}

/// The rows of `rows` by id, in order; `None` when an id is NULL, not a number, or repeated.
fn rows_by_id(rows: &[Row], column: usize) -> Option<Vec<(u64, &Row)>> {
    let mut seen = std::collections::HashSet::new();
    rows.iter()
        .map(|row| {
            let id = row.get(column)?.as_deref()?;
            let id: u64 = std::str::from_utf8(id).ok()?.parse().ok()?;
            seen.insert(id).then_some((id, row))
        })
        .collect()
}

fn compare_by_id(answered: &[(u64, &Row)], shadow: &[(u64, &Row)]) -> Difference {
    let shadow_rows: HashMap<u64, &Row> = shadow.iter().copied().collect();
    let answered_rows: HashMap<u64, &Row> = answered.iter().copied().collect();
    let mut difference = Difference::default();
    for (id, row) in answered {
        match shadow_rows.get(id) {
            None => difference.missing.push(*id),
            Some(other) if other != row => difference.changed.push(*id),
            Some(_) => {}
        }
    }
    difference.extra = shadow.iter().map(|(id, _)| *id).filter(|id| !answered_rows.contains_key(id)).collect();
    let same_rows = difference.missing.is_empty() && difference.extra.is_empty() && difference.changed.is_empty();
    difference.reordered = same_rows;
    difference
}

fn compare_as_multisets(answered: &[Row], shadow: &[Row]) -> Difference {
    let mut counts: BTreeMap<&Row, i64> = BTreeMap::new();
    for row in answered {
        *counts.entry(row).or_default() += 1;
    }
    for row in shadow {
        *counts.entry(row).or_default() -= 1;
    }
    let missing_rows = counts.values().filter(|n| **n > 0).map(|n| *n as usize).sum();
    let extra_rows = counts.values().filter(|n| **n < 0).map(|n| n.unsigned_abs() as usize).sum();
    let reordered = missing_rows == 0 && extra_rows == 0;
    Difference { missing_rows, extra_rows, reordered, ..Difference::default() }
}

impl Difference {
    /// Whether the extended table alone would have left out or changed something the client got: the only kind
    /// of difference that means the copy is not complete. Extra rows and order alone can come from a write
    /// between the two reads.
    pub fn loses_rows(&self) -> bool {
        !self.missing.is_empty() || !self.changed.is_empty() || self.missing_rows > 0
    }
}

/// Up to [`SHOWN_IDS`] ids, and how many more.
struct Ids<'a>(&'a [u64]);

impl fmt::Display for Ids<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<String> = self.0.iter().take(SHOWN_IDS).map(u64::to_string).collect();
        write!(f, "{}", shown.join(", "))?;
        if self.0.len() > SHOWN_IDS {
            write!(f, " and {} more", self.0.len() - SHOWN_IDS)?;
        }
        Ok(())
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!(
                "{} rows missing from the extended table (ids {})",
                self.missing.len(),
                Ids(&self.missing)
            ));
        }
        if !self.changed.is_empty() {
            parts.push(format!("{} rows with other values (ids {})", self.changed.len(), Ids(&self.changed)));
        }
        if !self.extra.is_empty() {
            parts.push(format!("{} rows only in the extended table (ids {})", self.extra.len(), Ids(&self.extra)));
        }
        if self.missing_rows > 0 {
            parts.push(format!("{} rows missing from the extended table (the read has no id)", self.missing_rows));
        }
        if self.extra_rows > 0 {
            parts.push(format!("{} rows only in the extended table (the read has no id)", self.extra_rows));
        }
        if self.reordered {
            parts.push("the same rows in another order".to_owned());
        }
        f.write_str(&parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u64, state: &str) -> Row {
        vec![Some(id.to_string().into_bytes()), Some(state.as_bytes().to_vec()), None]
    }

    #[test]
    fn the_same_answer_is_no_difference() {
        let rows = vec![row(3, "a"), row(2, "b")];
        assert_eq!(compare(&rows, &rows.clone(), Some(0)), None);
        assert_eq!(compare(&[], &[], None), None);
    }

    #[test]
    fn rows_are_matched_by_id_and_named_by_it() {
        let answered = vec![row(9, "new"), row(7, "a"), row(5, "b"), row(4, "c")];
        let shadow = vec![row(10, "newer"), row(9, "new"), row(7, "A"), row(4, "c")];
        let difference = compare(&answered, &shadow, Some(0)).expect("a difference");
        assert_eq!(difference.missing, [5]);
        assert_eq!(difference.changed, [7]);
        assert_eq!(difference.extra, [10]);
        assert!(difference.loses_rows());
        assert_eq!(
            difference.to_string(),
            "1 rows missing from the extended table (ids 5); 1 rows with other values (ids 7); 1 rows only in the \
             extended table (ids 10)"
        );
        assert!(!difference.to_string().contains("new"), "never a value");
    }

    #[test]
    fn a_row_written_in_between_or_another_order_does_not_lose_rows() {
        let answered = vec![row(2, "b"), row(1, "a")];
        let newer = compare(&answered, &[row(3, "c"), row(2, "b"), row(1, "a")], Some(0)).expect("a difference");
        assert!(!newer.loses_rows());
        let reordered = compare(&answered, &[row(1, "a"), row(2, "b")], Some(0)).expect("a difference");
        assert!(reordered.reordered && !reordered.loses_rows());
    }

    #[test]
    fn without_an_id_rows_are_counted_as_multisets() {
        let answered = vec![vec![Some(b"x".to_vec())], vec![Some(b"x".to_vec())], vec![None]];
        let shadow = vec![vec![Some(b"x".to_vec())], vec![None], vec![Some(b"y".to_vec())]];
        let difference = compare(&answered, &shadow, None).expect("a difference");
        assert_eq!((difference.missing_rows, difference.extra_rows), (1, 1));
        assert!(difference.loses_rows());
        let repeated_ids = vec![row(1, "a"), row(1, "a")];
        let by_rows = compare(&repeated_ids, &[row(1, "a")], Some(0)).expect("a difference");
        assert_eq!(by_rows.missing_rows, 1, "repeated ids fall back to whole rows");
    }

    #[test]
    fn many_ids_are_cut_short() {
        let answered: Vec<Row> = (0..25).map(|id| row(id, "s")).collect();
        let shown = compare(&answered, &[], Some(0)).expect("a difference").to_string();
        assert!(shown.ends_with("18, 19 and 5 more)"), "{shown}");
    }
}
