//! Aggregates without GROUP BY: per-id rows from both tables combined into one row, each history row once.

use super::*;

const SQL: &str = "SELECT COUNT(*), SUM(score), MIN(created), MAX(grade) FROM h";

/// The per-id rows' columns: COUNT(*), SUM of a DECIMAL(5,2), MIN(created), MAX(grade), and the id.
fn columns(id: ColumnDef) -> Vec<ColumnDef> {
    let count = def("COUNT(*)", ColumnType::MYSQL_TYPE_LONGLONG, ColumnFlags::NOT_NULL_FLAG, BINARY, 0);
    vec![count, decimal("SUM(score)", 2), datetime6("MIN(created)"), double("MAX(grade)"), id]
}

fn merge(sql: &str, protocol: Protocol) -> Merge {
    Merge::new(&plan(sql).unwrap(), protocol, &columns(int("id")), &columns(bigint_unsigned("id"))).unwrap()
}

/// One id's text row: COUNT(*) is 1, the other aggregates are the row's own values.
fn per_id(id: u64, score: Option<&str>, created: &str, grade: Option<&str>) -> Bytes {
    let id = id.to_string();
    let values = [Some("1"), score, Some(created), grade, Some(id.as_str())];
    text_row(&values.map(|v| v.map(str::as_bytes)))
}

#[test]
fn halves_combine_and_a_copied_row_counts_once_with_the_extended_values() {
    let old = [
        per_id(1, Some("1.25"), "2016-05-01 12:00:00.000000", Some("0.5")),
        per_id(2, Some("2.00"), "2016-05-02 12:00:00.000000", Some("9")),
    ];
    let extended = [
        per_id(2, Some("2.25"), "2016-05-02 12:00:00.000000", Some("1")),
        per_id(3, None, "2016-04-30 08:00:00.000000", None),
    ];
    let run = drive(&mut merge(SQL, Protocol::Text), &old, &extended).unwrap();
    let expected = text_row(&[Some(b"3"), Some(b"3.50"), Some(b"2016-04-30 08:00:00.000000"), Some(b"1")]);
    assert_eq!(run.rows, [expected]);
    assert_eq!(run.read, [2, 2]);
}

#[test]
fn no_rows_give_zero_and_nulls() {
    let run = drive(&mut merge(SQL, Protocol::Text), &[], &[]).unwrap();
    assert_eq!(run.rows, [text_row(&[Some(b"0"), None, None, None])]);
}

#[test]
fn the_window_applies_to_the_one_row() {
    let old = [per_id(1, Some("1"), "2016-05-01 12:00:00", Some("1"))];
    assert_eq!(drive(&mut merge(&format!("{SQL} LIMIT 1"), Protocol::Text), &old, &[]).unwrap().rows.len(), 1);
    assert_eq!(drive(&mut merge(&format!("{SQL} LIMIT 1 OFFSET 1"), Protocol::Text), &old, &[]).unwrap().rows.len(), 0);
    assert_eq!(drive(&mut merge(&format!("{SQL} LIMIT 0"), Protocol::Text), &old, &[]).unwrap(), Run::default());
}

#[test]
fn binary_rows_are_encoded_by_the_columns_types() {
    let columns = columns(bigint_unsigned("id"));
    let mut merge = Merge::new(&plan(SQL).unwrap(), Protocol::Binary, &columns, &columns).unwrap();
    let created = |day: u8| {
        let mut value = vec![7];
        value.extend_from_slice(&2016u16.to_le_bytes());
        value.extend_from_slice(&[5, day, 12, 0, 0]);
        value
    };
    let row = |id: u64, score: &[u8], day: u8, grade: Option<f64>| {
        binary_row(&[
            Some(1i64.to_le_bytes().to_vec()),
            Some(lenenc(score)),
            Some(created(day)),
            grade.map(|g| g.to_le_bytes().to_vec()),
            Some(id.to_le_bytes().to_vec()),
        ])
    };
    let old = [row(1, b"-1.50", 3, Some(2.5)), row(4, b"0.25", 1, None)];
    let extended = [row(2, b"10.00", 2, Some(0.5))];
    let run = drive(&mut merge, &old, &extended).unwrap();
    let expected = binary_row(&[
        Some(3i64.to_le_bytes().to_vec()),
        Some(lenenc(b"8.75")),
        Some(created(1)),
        Some(2.5f64.to_le_bytes().to_vec()),
    ]);
    assert_eq!(run.rows, [expected]);
}

#[test]
fn a_total_that_does_not_fit_its_column_is_an_error() {
    let tiny_count = def("n", ColumnType::MYSQL_TYPE_TINY, ColumnFlags::empty(), BINARY, 0);
    let columns = [tiny_count, bigint_unsigned("id")];
    let mut merge =
        Merge::new(&plan("SELECT COUNT(*) AS n FROM h").unwrap(), Protocol::Binary, &columns, &columns).unwrap();
    let rows: Vec<Bytes> =
        (0..200u64).map(|id| binary_row(&[Some(vec![1]), Some(id.to_le_bytes().to_vec())])).collect();
    assert_eq!(drive(&mut merge, &rows, &[]).unwrap_err(), MergeError::DoesNotFit { column: 0 });
}

#[test]
fn approximate_sums_and_linguistic_strings_are_refused() {
    let sum_of_doubles = [double("SUM(grade)"), bigint_unsigned("id")];
    let plan = plan("SELECT SUM(grade) FROM h").unwrap();
    assert_eq!(
        Merge::new(&plan, Protocol::Text, &sum_of_doubles, &sum_of_doubles).unwrap_err(),
        MergeError::Unsupported(Unsupported::ApproximateSum { column: "SUM(grade)".into() })
    );
    let min_of_text = [text_column("MIN(state)", UTF8MB4_GENERAL_CI), bigint_unsigned("id")];
    let plan = super::plan("SELECT MIN(state) FROM h").unwrap();
    assert!(matches!(
        Merge::new(&plan, Protocol::Text, &min_of_text, &min_of_text).unwrap_err(),
        MergeError::Unsupported(Unsupported::Collation { .. })
    ));
}
