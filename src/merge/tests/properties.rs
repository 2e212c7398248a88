//! The merge against a reference: random history rows split between the two tables (some in both, with
//! different payloads), sorted and limited by each simulated server as the plan's clauses ask, must come out as
//! the union — each id once, the extended copy winning — sorted and sliced.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

/// Where a history row lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Old,
    Extended,
    Both,
}

/// One history row: the sort columns both copies share, and a payload each copy has its own of.
#[derive(Debug, Clone)]
struct Record {
    id: u64,
    created: DateTime,
    grade: Option<f64>,
    state: String,
}

/// The column a case orders by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum By {
    Id,
    Created,
    Grade,
}

#[derive(Debug, Clone)]
struct Case {
    rows: BTreeMap<u64, (Place, DateTime, Option<f64>)>,
    select_id: bool,
    order: Option<(By, Direction)>,
    limit: Option<Limit>,
    protocol: Protocol,
}

fn datetime() -> impl Strategy<Value = DateTime> {
    // Few distinct values, so that sort keys tie and ids must break the ties.
    (0u8..3, 0u8..2, prop_oneof![Just(0u32), Just(500_000u32)]).prop_map(|(day, minute, micro)| DateTime {
        year: 2016,
        month: 5,
        day: day + 1,
        hour: 12,
        minute,
        second: 0,
        micro,
    })
}

fn case() -> impl Strategy<Value = Case> {
    let place = prop_oneof![Just(Place::Old), Just(Place::Extended), Just(Place::Both)];
    let grade = prop_oneof![Just(None), (0u8..4).prop_map(|g| Some(f64::from(g) / 2.0))];
    let rows = prop::collection::btree_map(1u64..500, (place, datetime(), grade), 0..40);
    let by = prop_oneof![Just(By::Id), Just(By::Created), Just(By::Grade)];
    let direction = prop_oneof![Just(Direction::Ascending), Just(Direction::Descending)];
    let limit = prop::option::of((0u64..8, 0u64..12).prop_map(|(offset, count)| Limit { offset, count }));
    let protocol = prop_oneof![Just(Protocol::Text), Just(Protocol::Binary)];
    (rows, any::<bool>(), prop::option::of((by, direction)), limit, protocol).prop_map(
        |(rows, select_id, order, limit, protocol)| {
            // The merge can only order by selected columns.
            let order = order.filter(|(by, _)| select_id || *by != By::Id);
            Case { rows, select_id, order, limit, protocol }
        },
    )
}

impl Case {
    fn sql(&self) -> String {
        let columns = if self.select_id { "id, created, grade, state" } else { "created, grade, state" };
        let mut sql = format!("SELECT {columns} FROM h");
        if let Some((by, direction)) = self.order {
            let column = match by {
                By::Id => "id",
                By::Created => "created",
                By::Grade => "grade",
            };
            let direction = if direction == Direction::Descending { " DESC" } else { "" };
            sql.push_str(&format!(" ORDER BY {column}{direction}"));
        }
        if let Some(limit) = self.limit {
            sql.push_str(&format!(" LIMIT {} OFFSET {}", limit.count, limit.offset));
        }
        sql
    }

    /// Each table's copies of the rows.
    fn table(&self, origin: Origin) -> Vec<Record> {
        let wanted = |place: Place| match origin {
            Origin::Old => place != Place::Extended,
            Origin::Extended => place != Place::Old,
        };
        let tag = if origin == Origin::Old { "old" } else { "extended" };
        let rows = self.rows.iter().filter(|(_, (place, _, _))| wanted(*place));
        rows.map(|(&id, &(_, created, grade))| Record { id, created, grade, state: format!("{tag} copy of {id}") })
            .collect()
    }

    /// The order the servers sort by and the answer follows: the ORDER BY, then the id in its direction.
    fn compare(&self, a: &Record, b: &Record) -> Ordering {
        let (by, direction) = self.order.unwrap_or((By::Id, Direction::Ascending));
        let ordering = match by {
            By::Id => Ordering::Equal,
            By::Created => a.created.cmp(&b.created),
            By::Grade => compare_grades(a.grade, b.grade),
        }
        .then(a.id.cmp(&b.id));
        if direction == Direction::Descending { ordering.reverse() } else { ordering }
    }

    fn sorted(&self, mut records: Vec<Record>) -> Vec<Record> {
        records.sort_by(|a, b| self.compare(a, b));
        records
    }

    /// What a server returns for the side statement: sorted, and cut to `LIMIT offset+count`.
    fn server(&self, origin: Origin, side_limit: Option<u64>) -> Vec<Bytes> {
        let rows = self.sorted(self.table(origin));
        let kept = side_limit.map_or(rows.len(), |n| rows.len().min(n as usize));
        rows[..kept].iter().map(|r| self.encode(r, origin, true)).collect()
    }

    /// The answer: the union with the extended copy of each id, sorted, then OFFSET and LIMIT.
    fn expected(&self) -> Vec<Bytes> {
        let mut union: BTreeMap<u64, Record> = BTreeMap::new();
        for origin in Origin::BOTH {
            union.extend(self.table(origin).into_iter().map(|r| (r.id, r)));
        }
        let rows = self.sorted(union.into_values().collect());
        let (offset, count) = self.limit.map_or((0, rows.len()), |l| (l.offset as usize, l.count as usize));
        rows.iter().skip(offset).take(count).map(|r| self.encode(r, Origin::Extended, false)).collect()
    }

    /// The columns a side returns: the selected ones, and the id when it was not selected.
    fn columns(&self, origin: Origin) -> Vec<ColumnDef> {
        let id = match (origin, self.protocol, self.select_id) {
            // Text rows carry numbers as digits, so the old table's INT id needs no cast; the binary protocol
            // needs the same types on both sides for the columns the client sees.
            (Origin::Old, Protocol::Text, _) | (Origin::Old, Protocol::Binary, false) => int("id"),
            _ => bigint_unsigned("id"),
        };
        let rest = [datetime6("created"), double("grade"), text_column("state", UTF8MB4_GENERAL_CI)];
        match self.select_id {
            true => [vec![id], rest.to_vec()].concat(),
            false => [rest.to_vec(), vec![id]].concat(),
        }
    }

    /// A row as `origin`'s server encodes it, with the id where the side statement puts it (the client's row
    /// has no hidden id).
    fn encode(&self, record: &Record, origin: Origin, side_row: bool) -> Bytes {
        let id_width = if origin == Origin::Old && !self.select_id { 4 } else { 8 };
        let id = Some(self.id_value(record.id, id_width));
        let rest = [
            Some(self.created_value(record.created)),
            record.grade.map(|g| self.grade_value(g)),
            Some(self.string_value(record.state.as_bytes())),
        ];
        let values = match (self.select_id, side_row) {
            (true, _) => [vec![id], rest.to_vec()].concat(),
            (false, true) => [rest.to_vec(), vec![id]].concat(),
            (false, false) => rest.to_vec(),
        };
        match self.protocol {
            Protocol::Text => text_row(&values.iter().map(|v| v.as_deref()).collect::<Vec<_>>()),
            Protocol::Binary => binary_row(&values),
        }
    }

    fn id_value(&self, id: u64, width: usize) -> Vec<u8> {
        match self.protocol {
            Protocol::Text => id.to_string().into_bytes(),
            Protocol::Binary => id.to_le_bytes()[..width].to_vec(),
        }
    }

    fn created_value(&self, t: DateTime) -> Vec<u8> {
        match self.protocol {
            Protocol::Text => format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
                t.year, t.month, t.day, t.hour, t.minute, t.second, t.micro
            )
            .into_bytes(),
            Protocol::Binary => {
                let mut value = vec![if t.micro == 0 { 7 } else { 11 }];
                value.extend_from_slice(&t.year.to_le_bytes());
                value.extend_from_slice(&[t.month, t.day, t.hour, t.minute, t.second]);
                if t.micro != 0 {
                    value.extend_from_slice(&t.micro.to_le_bytes());
                }
                value
            }
        }
    }

    fn grade_value(&self, grade: f64) -> Vec<u8> {
        match self.protocol {
            Protocol::Text => grade.to_string().into_bytes(),
            Protocol::Binary => grade.to_le_bytes().to_vec(),
        }
    }

    fn string_value(&self, text: &[u8]) -> Vec<u8> {
        match self.protocol {
            Protocol::Text => text.to_vec(),
            Protocol::Binary => lenenc(text),
        }
    }
}

/// NULL first, then by value.
fn compare_grades(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(&b),
        _ => a.is_some().cmp(&b.is_some()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn merged_rows_equal_the_sorted_deduplicated_union(case in case()) {
        let plan = plan(&case.sql()).unwrap();
        let old = case.server(Origin::Old, plan.side_limit());
        let extended = case.server(Origin::Extended, plan.side_limit());
        let mut merge = Merge::new(&plan, case.protocol, &case.columns(Origin::Old), &case.columns(Origin::Extended)).unwrap();
        let run = drive(&mut merge, &old, &extended).unwrap();
        prop_assert_eq!(run.rows, case.expected(), "{}", case.sql());
    }

    #[test]
    fn aggregates_equal_those_of_the_deduplicated_union(
        rows in prop::collection::btree_map(1u64..200, (0u8..3, prop::option::of(-500i64..500), prop::option::of(-500i64..500)), 0..30),
        binary in any::<bool>(),
    ) {
        let protocol = if binary { Protocol::Binary } else { Protocol::Text };
        let side = |skip: u8, copy: fn(&Scored) -> Option<i64>| -> Vec<Bytes> {
            let rows = rows.iter().filter(|(_, row)| row.0 != skip);
            rows.map(|(&id, row)| aggregate_row(protocol, 1, [copy(row); 3], Some(id))).collect()
        };
        let (old, extended) = (side(1, |row| row.1), side(0, |row| row.2));
        let scores: Vec<i64> = rows.values().filter_map(|&(place, old, ext)| if place == 0 { old } else { ext }).collect();
        let count = rows.len() as i64;
        let sum = (!scores.is_empty()).then(|| scores.iter().sum());
        let expected = aggregate_row(protocol, count, [sum, scores.iter().min().copied(), scores.iter().max().copied()], None);

        let columns = [
            def("COUNT(*)", ColumnType::MYSQL_TYPE_LONGLONG, ColumnFlags::NOT_NULL_FLAG, BINARY, 0),
            decimal("SUM(score)", 2),
            decimal("MIN(score)", 2),
            decimal("MAX(score)", 2),
            bigint_unsigned("id"),
        ];
        let plan = plan("SELECT COUNT(*), SUM(score), MIN(score), MAX(score) FROM h").unwrap();
        let mut merge = Merge::new(&plan, protocol, &columns, &columns).unwrap();
        let run = drive(&mut merge, &old, &extended).unwrap();
        prop_assert_eq!(run.rows, vec![expected]);
    }
}

/// A history row's place (0: the old table only, 1: the extended table only, 2: both) and each copy's score.
type Scored = (u8, Option<i64>, Option<i64>);

/// A row of `COUNT(*), SUM(score), MIN(score), MAX(score)` with scores in hundredths, and the id for a per-id row.
fn aggregate_row(protocol: Protocol, count: i64, scores: [Option<i64>; 3], id: Option<u64>) -> Bytes {
    let scores = scores.map(|score| score.map(cents));
    match protocol {
        Protocol::Text => {
            let (count, id) = (count.to_string(), id.map(|id| id.to_string()));
            let mut values = vec![Some(count.as_bytes())];
            values.extend(scores.iter().map(|score| score.as_deref().map(str::as_bytes)));
            values.extend(id.as_deref().map(|id| Some(id.as_bytes())));
            text_row(&values)
        }
        Protocol::Binary => {
            let mut values = vec![Some(count.to_le_bytes().to_vec())];
            values.extend(scores.iter().map(|score| score.as_deref().map(|s| lenenc(s.as_bytes()))));
            values.extend(id.map(|id| Some(id.to_le_bytes().to_vec())));
            binary_row(&values)
        }
    }
}

/// Hundredths as a DECIMAL(m,2) is written.
fn cents(value: i64) -> String {
    let sign = if value < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", value.abs() / 100, value.abs() % 100)
}
