//! The merge on malformed rows: valid rows of every key kind in both protocols, mutated as a broken server
//! would send them (bits flipped, length prefixes and NULL bitmaps changed, bytes inserted, cut out or cut off).
//! Reading, comparing, cutting off the hidden id and combining aggregates must fail with an error, never panic.

use proptest::prelude::*;
use proptest::sample::{Index, select};

use super::*;

/// Rows read and merged.
const ROWS_SQL: [&str; 4] = [
    "SELECT id, grade, state, created, max_grade FROM h ORDER BY created, id",
    "SELECT id, grade, state, created, max_grade FROM h ORDER BY grade DESC, id LIMIT 2 OFFSET 1",
    "SELECT id, grade, state, created, max_grade FROM h ORDER BY state, max_grade",
    "SELECT id, grade, state, created, max_grade FROM h",
];

/// An aggregate read, whose per-id rows end with the id.
const AGGREGATE_SQL: &str = "SELECT COUNT(*), SUM(max_grade), MIN(created), MAX(grade) FROM h";

fn row_columns(id: ColumnDef) -> Vec<ColumnDef> {
    vec![id, double("grade"), bin_varchar("state", UTF8MB4_BIN), datetime6("created"), decimal("max_grade", 2)]
}

fn aggregate_columns(id: ColumnDef) -> Vec<ColumnDef> {
    let count = def("COUNT(*)", ColumnType::MYSQL_TYPE_LONGLONG, ColumnFlags::NOT_NULL_FLAG, BINARY, 0);
    vec![count, decimal("SUM(max_grade)", 2), datetime6("MIN(created)"), double("MAX(grade)"), id]
}

/// Every merge the fuzzing drives: each statement in each protocol.
fn merges() -> Vec<(Protocol, Merge)> {
    let mut merges = Vec::new();
    for protocol in [Protocol::Text, Protocol::Binary] {
        // The binary protocol's sides must encode alike: across two servers the old side is widened.
        let old_id = if protocol == Protocol::Text { int("id") } else { bigint_unsigned("id") };
        for sql in ROWS_SQL {
            let (old, extended) = (row_columns(old_id.clone()), row_columns(bigint_unsigned("id")));
            merges.push((protocol, Merge::new(&plan(sql).unwrap(), protocol, &old, &extended).unwrap()));
        }
        let (old, extended) = (aggregate_columns(old_id.clone()), aggregate_columns(bigint_unsigned("id")));
        merges.push((protocol, Merge::new(&plan(AGGREGATE_SQL).unwrap(), protocol, &old, &extended).unwrap()));
    }
    merges
}

/// Valid rows of five columns (an id, a double, a string, a DATETIME(6), a DECIMAL) in `protocol`, NULLs included.
fn seeds(protocol: Protocol) -> Vec<Bytes> {
    let values: [[Option<&str>; 5]; 3] = [
        [Some("1"), Some("0.5"), Some("a"), Some("2016-05-01 12:00:00.000001"), Some("1.25")],
        [Some("7"), None, Some("state"), Some("2024-02-29 00:00:00.000000"), None],
        [Some("18446744073709551615"), Some("-1e300"), Some(""), None, Some("-99999999.99")],
    ];
    values
        .iter()
        .map(|row| match protocol {
            Protocol::Text => text_row(&row.map(|v| v.map(str::as_bytes))),
            Protocol::Binary => binary_row(&binary_values(row)),
        })
        .collect()
}

fn binary_values(row: &[Option<&str>; 5]) -> Vec<Option<Vec<u8>>> {
    let [id, grade, state, created, max_grade] = *row;
    let datetime = |_: &str| vec![11, 0xe0, 0x07, 5, 1, 12, 0, 0, 1, 0, 0, 0];
    vec![
        id.map(|v| v.parse::<u64>().unwrap().to_le_bytes().to_vec()),
        grade.map(|v| v.parse::<f64>().unwrap().to_le_bytes().to_vec()),
        state.map(|v| lenenc(v.as_bytes())),
        created.map(datetime),
        max_grade.map(|v| lenenc(v.as_bytes())),
    ]
}

/// One change to a row.
fn mutate(mut row: Vec<u8>, (at, byte, kind): (Index, u8, u8)) -> Vec<u8> {
    if row.is_empty() {
        return vec![byte];
    }
    let i = at.index(row.len());
    match kind {
        0 => row[i] ^= 1 << (byte % 8),
        1 => row[i] = byte,
        2 => row.insert(i, byte),
        3 => drop(row.remove(i)),
        _ => row.truncate(i),
    }
    row
}

/// Seeds with a few mutations, or arbitrary bytes.
fn rows(protocol: Protocol) -> impl Strategy<Value = Vec<Bytes>> {
    let interesting = select(vec![0x00, 0x01, 0x08, 0x0b, 0x7f, 0x80, 0xfb, 0xfc, 0xfd, 0xfe, 0xff]);
    let change = (any::<Index>(), prop_oneof![interesting, any::<u8>()], 0u8..5);
    let mutated = (select(seeds(protocol)), prop::collection::vec(change, 0..4))
        .prop_map(|(seed, changes)| Bytes::from(changes.into_iter().fold(seed.to_vec(), mutate)));
    let row = prop_oneof![4 => mutated, 1 => prop::collection::vec(any::<u8>(), 0..48).prop_map(Bytes::from)];
    prop::collection::vec(row, 0..4)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn malformed_rows_are_errors_not_panics(
        text in (rows(Protocol::Text), rows(Protocol::Text)),
        binary in (rows(Protocol::Binary), rows(Protocol::Binary)),
    ) {
        for (protocol, mut merge) in merges() {
            let (old, extended) = if protocol == Protocol::Text { &text } else { &binary };
            let _ = drive(&mut merge, old, extended);
        }
    }
}
