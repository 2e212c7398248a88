//! The streaming merge of two sorted results: the old table's and the extended table's.
//!
//! Each server sorts its rows as the plan says; the merge holds the head row of each side, emits the one that
//! comes first, and asks for the next row of the side it took. Two heads with equal sort keys are one history
//! row: the old copy is dropped and the extended one emitted. OFFSET and LIMIT apply to the merged rows, and
//! once the limit is reached the merge says so, so the session stops reading.
//!
//! Each side must arrive in strictly increasing order as the merge compares; a side that does not (its server
//! sorts differently than the proxy compares) is an error rather than a wrong answer.

use std::cmp::Ordering;

use bytes::Bytes;

use super::Origin;
use super::aggregate::Accumulator;
use super::column::{ColumnDef, KeyKind};
use super::error::{MergeError, Unsupported};
use super::plan::{Aggregate, Direction, MergePlan, SortKey};
use super::row::{Cell, Protocol, RowFault, RowLayout, holds_binary_number};
use super::value::Key;

/// What the session does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this row payload to the client (with the next sequence id).
    Row(Bytes),
    /// Read the next row of this side and [`Merge::push`] it, or [`Merge::finish`] the side if its rows ended.
    Read(Origin),
    /// No more rows: stop reading both sides (discard what remains of their results) and end the result.
    Done,
}

/// The merge of one read across two servers.
#[derive(Debug)]
pub struct Merge {
    protocol: Protocol,
    order: Vec<SortKey>,
    inputs: [Input; 2],
    window: Window,
    output: Output,
}

/// One input of the merge: a table's result as it streams in, and what is known of its columns.
#[derive(Debug)]
struct Input {
    layout: RowLayout,
    /// Kinds of the sort key columns, in the order of the sort keys.
    key_kinds: Vec<KeyKind>,
    /// Kinds of the aggregate columns, for an aggregate read.
    aggregate_kinds: Vec<KeyKind>,
    /// How many leading columns of each row are read.
    reach: usize,
    head: Head,
    /// Sort keys of the previous row, to check that the side is in order.
    previous: Option<Vec<Key>>,
}

#[derive(Debug)]
enum Head {
    /// The merge needs this side's next row.
    Wanted,
    /// The side's next row, not yet merged.
    Ready(Headed),
    /// The side has no more rows.
    Ended,
}

#[derive(Debug)]
struct Headed {
    row: Bytes,
    cells: Vec<Option<Cell>>,
    keys: Vec<Key>,
}

/// OFFSET and LIMIT over the merged rows.
#[derive(Debug)]
struct Window {
    skip: u64,
    /// Rows still to emit; `None` without a LIMIT.
    left: Option<u64>,
}

impl Window {
    fn is_full(&self) -> bool {
        self.left == Some(0)
    }

    /// Whether the next merged row is emitted (else it falls in the OFFSET).
    fn admit(&mut self) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        if let Some(left) = &mut self.left {
            *left = left.saturating_sub(1);
        }
        true
    }
}

#[derive(Debug)]
enum Output {
    /// Rows pass through, cut to the client's columns.
    Rows { visible: usize },
    /// Per-id rows fold into one row, written for the client's columns `defs` once both sides end.
    Aggregate { accumulator: Accumulator, defs: Vec<ColumnDef>, written: bool },
}

/// The next row in merged order, or what is missing to know it.
enum Pick {
    Read(Origin),
    Row(Origin, Bytes, Vec<Option<Cell>>),
    End,
}

impl Merge {
    /// A merge following `plan` of rows in `protocol`, whose sides' columns are `old` and `extended`.
    ///
    /// Checks that every value the merge compares or combines can be compared or combined exactly, and in the
    /// binary protocol that both sides encode each column alike: rows pass through unchanged, and the client
    /// decodes them all with one set of column definitions (the extended side's).
    pub fn new(
        plan: &MergePlan,
        protocol: Protocol,
        old: &[ColumnDef],
        extended: &[ColumnDef],
    ) -> Result<Merge, MergeError> {
        for (origin, defs) in [(Origin::Old, old), (Origin::Extended, extended)] {
            if defs.len() != plan.side_columns() {
                return Err(MergeError::ColumnCount { origin, expected: plan.side_columns(), got: defs.len() });
            }
        }
        let sort_columns: Vec<usize> = plan.order().iter().map(|k| k.column).collect();
        let [old_keys, extended_keys] = comparable_kinds(&sort_columns, old, extended)?;
        let [old_aggregates, extended_aggregates] = aggregate_kinds(plan.aggregates(), protocol, old, extended)?;
        if protocol == Protocol::Binary {
            same_binary_encodings(plan.visible_columns(), old, extended)?;
        }
        let reach = match plan.aggregates() {
            [] => sort_columns.iter().max().map_or(0, |c| c + 1),
            _ => plan.side_columns(),
        };
        let side = |defs: &[ColumnDef], key_kinds, aggregate_kinds| -> Result<Input, Unsupported> {
            Ok(Input {
                layout: RowLayout::new(protocol, defs)?,
                key_kinds,
                aggregate_kinds,
                reach,
                head: Head::Wanted,
                previous: None,
            })
        };
        let sides = [side(old, old_keys, old_aggregates)?, side(extended, extended_keys, extended_aggregates)?];
        let visible = plan.visible_columns();
        let output = match plan.aggregates() {
            [] => Output::Rows { visible },
            aggregates => Output::Aggregate {
                accumulator: Accumulator::new(aggregates),
                defs: extended[..visible].to_vec(),
                written: false,
            },
        };
        let window = match plan.limit() {
            Some(limit) => Window { skip: limit.offset, left: Some(limit.count) },
            None => Window { skip: 0, left: None },
        };
        Ok(Merge { protocol, order: plan.order().to_vec(), inputs: sides, window, output })
    }

    /// What the session does next.
    pub fn step(&mut self) -> Result<Step, MergeError> {
        loop {
            if self.window.is_full() {
                return Ok(Step::Done);
            }
            match self.pick() {
                Pick::Read(origin) => return Ok(Step::Read(origin)),
                Pick::Row(origin, row, cells) => {
                    if let Some(step) = self.merged(origin, row, &cells)? {
                        return Ok(step);
                    }
                }
                Pick::End => return self.end(),
            }
        }
    }

    /// Gives the merge the next row payload of `origin` (its whole payload, reassembled if it spans frames).
    ///
    /// [`Step::Read`] names a side the merge needs now, but a row may be given for any side whose previous row
    /// has been merged, so the session may read both sides at once; the merge holds one row per side.
    pub fn push(&mut self, origin: Origin, row: Bytes) -> Result<(), MergeError> {
        let (protocol, order) = (self.protocol, &self.order);
        let side = &mut self.inputs[origin.index()];
        if !matches!(side.head, Head::Wanted) {
            return Err(MergeError::NotAsked { origin });
        }
        let cells = side.layout.cells(&row, side.reach).map_err(|fault| fault.blamed_on(origin))?;
        let keys = order
            .iter()
            .zip(&side.key_kinds)
            .map(|(key, kind)| {
                let cell = cells.get(key.column).and_then(Option::as_ref);
                Key::read(*kind, protocol, &row, cell)
                    .map_err(|problem| RowFault { column: key.column, problem }.blamed_on(origin))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if side.previous.as_ref().is_some_and(|previous| compare(order, previous, &keys) != Ordering::Less) {
            return Err(MergeError::OutOfOrder { origin });
        }
        side.head = Head::Ready(Headed { row, cells, keys });
        Ok(())
    }

    /// Tells the merge that `origin` has no more rows (its end-of-rows packet arrived), when the merge holds no
    /// row of it.
    pub fn finish(&mut self, origin: Origin) -> Result<(), MergeError> {
        let side = &mut self.inputs[origin.index()];
        match side.head {
            Head::Wanted => {
                side.head = Head::Ended;
                Ok(())
            }
            _ => Err(MergeError::NotAsked { origin }),
        }
    }

    /// Takes the row that comes next in merged order, if both heads are known.
    fn pick(&mut self) -> Pick {
        let [old, extended] = &mut self.inputs;
        let from = match (&old.head, &extended.head) {
            (Head::Wanted, _) => return Pick::Read(Origin::Old),
            (_, Head::Wanted) => return Pick::Read(Origin::Extended),
            (Head::Ended, Head::Ended) => return Pick::End,
            (Head::Ready(_), Head::Ended) => Origin::Old,
            (Head::Ended, Head::Ready(_)) => Origin::Extended,
            (Head::Ready(a), Head::Ready(b)) => match compare(&self.order, &a.keys, &b.keys) {
                Ordering::Less => Origin::Old,
                Ordering::Greater => Origin::Extended,
                Ordering::Equal => {
                    // One history row in both tables: the extended copy is the one returned.
                    old.take();
                    Origin::Extended
                }
            },
        };
        match self.inputs[from.index()].take() {
            Some((row, cells)) => Pick::Row(from, row, cells),
            None => Pick::Read(from),
        }
    }

    /// Handles the next merged row: the step to return for it, if any.
    fn merged(&mut self, origin: Origin, row: Bytes, cells: &[Option<Cell>]) -> Result<Option<Step>, MergeError> {
        let side = &self.inputs[origin.index()];
        match &mut self.output {
            Output::Rows { visible } => {
                if !self.window.admit() {
                    return Ok(None);
                }
                let row = side.layout.truncated(&row, *visible).map_err(|fault| fault.blamed_on(origin))?;
                Ok(Some(Step::Row(row)))
            }
            Output::Aggregate { accumulator, .. } => {
                accumulator
                    .add(self.protocol, &side.aggregate_kinds, &row, cells)
                    .map_err(|fault| fault.blamed_on(origin))?;
                Ok(None)
            }
        }
    }

    /// Both sides have ended: an aggregate read's one row, then done.
    fn end(&mut self) -> Result<Step, MergeError> {
        match &mut self.output {
            Output::Aggregate { accumulator, defs, written: written @ false } => {
                *written = true;
                let row = accumulator
                    .finish(self.protocol, defs)
                    .map_err(|fault| MergeError::DoesNotFit { column: fault.column })?;
                Ok(if self.window.admit() { Step::Row(row) } else { Step::Done })
            }
            _ => Ok(Step::Done),
        }
    }
}

impl Input {
    /// Takes the head row, remembering its keys to check the order of the next.
    fn take(&mut self) -> Option<(Bytes, Vec<Option<Cell>>)> {
        match std::mem::replace(&mut self.head, Head::Wanted) {
            Head::Ready(Headed { row, cells, keys }) => {
                self.previous = Some(keys);
                Some((row, cells))
            }
            other => {
                self.head = other;
                None
            }
        }
    }
}

/// How rows with keys `a` and `b` order under `order`.
fn compare(order: &[SortKey], a: &[Key], b: &[Key]) -> Ordering {
    order
        .iter()
        .zip(a.iter().zip(b))
        .map(|(key, (x, y))| match key.direction {
            Direction::Ascending => x.cmp(y),
            Direction::Descending => y.cmp(x),
        })
        .find(|ordering| ordering.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// The kinds of `columns` on each side, which must compare with each other.
fn comparable_kinds(
    columns: &[usize],
    old: &[ColumnDef],
    extended: &[ColumnDef],
) -> Result<[Vec<KeyKind>; 2], Unsupported> {
    let mut kinds = [Vec::with_capacity(columns.len()), Vec::with_capacity(columns.len())];
    for &column in columns {
        let (old_kind, extended_kind) = (KeyKind::of(&old[column])?, KeyKind::of(&extended[column])?);
        if !old_kind.compares_with(extended_kind) {
            return Err(Unsupported::KindsDiffer {
                column: extended[column].name().into(),
                old: old_kind.describe(),
                extended: extended_kind.describe(),
            });
        }
        kinds[0].push(old_kind);
        kinds[1].push(extended_kind);
    }
    Ok(kinds)
}

/// The kinds of an aggregate read's columns on each side: COUNT and SUM must be exact numbers (and writable in
/// the binary protocol), MIN and MAX comparable.
fn aggregate_kinds(
    aggregates: &[Aggregate],
    protocol: Protocol,
    old: &[ColumnDef],
    extended: &[ColumnDef],
) -> Result<[Vec<KeyKind>; 2], Unsupported> {
    let columns: Vec<usize> = (0..aggregates.len()).collect();
    let kinds = comparable_kinds(&columns, old, extended)?;
    for ((aggregate, kind), def) in aggregates.iter().zip(&kinds[1]).zip(extended) {
        let approximate = matches!(kind, KeyKind::Float | KeyKind::Double);
        let writable = kind.is_exact_number() && (protocol == Protocol::Text || holds_binary_number(def));
        match aggregate {
            Aggregate::Sum if approximate => return Err(Unsupported::ApproximateSum { column: def.name().into() }),
            Aggregate::Count | Aggregate::Sum if !writable => {
                return Err(Unsupported::ColumnType { column: def.name().into(), type_name: def.type_name() });
            }
            _ => {}
        }
    }
    Ok(kinds)
}

/// In the binary protocol, the client's columns must be encoded alike by both sides.
fn same_binary_encodings(visible: usize, old: &[ColumnDef], extended: &[ColumnDef]) -> Result<(), Unsupported> {
    match old.iter().zip(extended).take(visible).find(|(o, e)| !o.same_binary_encoding(e)) {
        Some((_, def)) => Err(Unsupported::BinaryTypesDiffer { column: def.name().into() }),
        None => Ok(()),
    }
}
