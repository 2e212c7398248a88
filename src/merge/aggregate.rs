//! Combining the per-id rows of an aggregate read into the one row the client gets.
//!
//! Each side returns one row per history id (`GROUP BY id`), each holding that row's COUNT, SUM, MIN and MAX;
//! after de-duplication by id, every surviving row is folded in: counts and sums add up exactly, MIN and MAX
//! keep the winning value's encoded bytes, so the row written at the end carries them unchanged.

use bytes::Bytes;

use super::column::{ColumnDef, KeyKind};
use super::decimal::Decimal;
use super::plan::Aggregate;
use super::row::{Cell, DoesNotFit, OutCell, Protocol, RowFault, write_row};
use super::value::Key;

/// DECIMAL's `decimals` field when the scale is not fixed.
const NOT_FIXED_DECIMALS: u8 = 31;

/// The running value of one aggregate column.
#[derive(Debug, Clone)]
enum Running {
    Count(u128),
    Sum(Option<Decimal>),
    Min(Option<Winner>),
    Max(Option<Winner>),
}

/// The value a MIN or MAX holds so far.
#[derive(Debug, Clone)]
struct Winner {
    key: Key,
    /// The value as the server encoded it.
    encoded: Bytes,
}

/// The combination of the per-id rows seen so far.
#[derive(Debug, Clone)]
pub(super) struct Accumulator {
    columns: Vec<Running>,
}

impl Accumulator {
    /// Nothing combined yet: COUNT 0, SUM, MIN and MAX NULL (what MySQL answers for no rows).
    pub fn new(aggregates: &[Aggregate]) -> Accumulator {
        let columns = aggregates
            .iter()
            .map(|aggregate| match aggregate {
                Aggregate::Count => Running::Count(0),
                Aggregate::Sum => Running::Sum(None),
                Aggregate::Min => Running::Min(None),
                Aggregate::Max => Running::Max(None),
            })
            .collect();
        Accumulator { columns }
    }

    /// Folds in one per-id row, whose columns are of `kinds` and whose cells are `cells`.
    pub fn add(
        &mut self,
        protocol: Protocol,
        kinds: &[KeyKind],
        row: &Bytes,
        cells: &[Option<Cell>],
    ) -> Result<(), RowFault> {
        for (column, (running, kind)) in self.columns.iter_mut().zip(kinds).enumerate() {
            let cell = cells.get(column).and_then(Option::as_ref);
            let key = Key::read(*kind, protocol, row, cell).map_err(|problem| RowFault { column, problem })?;
            running.add(key, cell, row).map_err(|what| RowFault::malformed(column, what))?;
        }
        Ok(())
    }

    /// The combined row, encoded in `protocol` for the client's columns `defs`.
    pub fn finish(&self, protocol: Protocol, defs: &[ColumnDef]) -> Result<Bytes, DoesNotFit> {
        let cells: Vec<OutCell> = self.columns.iter().zip(defs).map(|(running, def)| running.result(def)).collect();
        write_row(protocol, defs, &cells)
    }
}

impl Running {
    fn add(&mut self, key: Key, cell: Option<&Cell>, row: &Bytes) -> Result<(), &'static str> {
        match (self, key) {
            (_, Key::Null) => {}
            (Running::Count(count), Key::Integer(n)) => {
                let n = u128::try_from(n).map_err(|_| "a negative count")?;
                *count = count.checked_add(n).ok_or("a count past 2^128")?;
            }
            (Running::Count(_), _) => return Err("a count that is not an integer"),
            (Running::Sum(sum), Key::Integer(n)) => add_to(sum, &Decimal::from_integer(n)),
            (Running::Sum(sum), Key::Decimal(d)) => add_to(sum, &d),
            (Running::Sum(_), _) => return Err("a sum that is not an exact number"),
            (Running::Min(winner), key) => keep_if(winner, key, cell, row, |new, old| new < old),
            (Running::Max(winner), key) => keep_if(winner, key, cell, row, |new, old| new > old),
        }
        Ok(())
    }

    fn result(&self, def: &ColumnDef) -> OutCell {
        match self {
            Running::Count(count) => OutCell::Number(count.to_string()),
            Running::Sum(None) | Running::Min(None) | Running::Max(None) => OutCell::Null,
            Running::Sum(Some(sum)) => {
                let scale = if def.decimals() < NOT_FIXED_DECIMALS { def.decimals() } else { 0 };
                OutCell::Number(sum.to_text(scale.into()))
            }
            Running::Min(Some(winner)) | Running::Max(Some(winner)) => OutCell::Copy(winner.encoded.clone()),
        }
    }
}

fn add_to(sum: &mut Option<Decimal>, value: &Decimal) {
    *sum = Some(match sum.take() {
        Some(total) => total.add(value),
        None => value.clone(),
    });
}

/// Makes `key` the winner if there is none yet or `better(key, winner)`.
fn keep_if(
    winner: &mut Option<Winner>,
    key: Key,
    cell: Option<&Cell>,
    row: &Bytes,
    better: impl Fn(&Key, &Key) -> bool,
) {
    let Some(cell) = cell else {
        return;
    };
    if winner.as_ref().is_none_or(|w| better(&key, &w.key)) {
        *winner = Some(Winner { key, encoded: row.slice(cell.encoded.clone()) });
    }
}
