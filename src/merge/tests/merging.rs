//! The streaming merge on fixtures: order, de-duplication by id with the extended copy winning, the window and
//! stopping early, hidden ids cut off in both protocols, DISTINCT, and the checks made before any row.

use super::*;

/// `id, grade, state` rows as the old table's server sends them (INT id).
fn old_columns() -> Vec<ColumnDef> {
    vec![int("id"), double("grade"), text_column("state", UTF8MB4_GENERAL_CI)]
}

/// The same columns from the extended table (BIGINT UNSIGNED id).
fn extended_columns() -> Vec<ColumnDef> {
    vec![bigint_unsigned("id"), double("grade"), text_column("state", UTF8MB4_GENERAL_CI)]
}

fn row(id: u64, grade: Option<&str>, state: &str) -> Bytes {
    text_row(&[Some(id.to_string().as_bytes()), grade.map(str::as_bytes), Some(state.as_bytes())])
}

fn merge(sql: &str) -> Merge {
    Merge::new(&plan(sql).unwrap(), Protocol::Text, &old_columns(), &extended_columns()).unwrap()
}

#[test]
fn rows_interleave_in_order_and_a_copied_id_comes_once_from_the_extended_table() {
    let old = [row(7, None, "old 7"), row(5, None, "old 5"), row(2, None, "old 2")];
    let extended = [row(9, None, "ext 9"), row(5, None, "ext 5"), row(3, None, "ext 3")];
    let run = drive(&mut merge("SELECT id, grade, state FROM h ORDER BY id DESC"), &old, &extended).unwrap();
    let expected = [&extended[0], &old[0], &extended[1], &extended[2], &old[2]];
    assert_eq!(run.rows.iter().collect::<Vec<_>>(), expected);
    assert_eq!(run.read, [3, 3]);
}

#[test]
fn rows_pass_through_as_the_same_bytes() {
    let old = [row(1, Some("0.5"), "a")];
    let run = drive(&mut merge("SELECT id, grade, state FROM h"), &old, &[]).unwrap();
    assert_eq!(run.rows[0].as_ptr(), old[0].as_ptr());
}

#[test]
fn offset_then_limit_apply_after_merging_and_reading_stops_at_the_limit() {
    let old: Vec<Bytes> = (1..=50).filter(|i| i % 2 == 1).map(|i| row(i, None, "o")).collect();
    let extended: Vec<Bytes> = (1..=50).filter(|i| i % 2 == 0).map(|i| row(i, None, "e")).collect();
    let run =
        drive(&mut merge("SELECT id, grade, state FROM h ORDER BY id LIMIT 3 OFFSET 4"), &old, &extended).unwrap();
    assert_eq!(run.rows, [row(5, None, "o"), row(6, None, "e"), row(7, None, "o")]);
    assert_eq!(run.read, [4, 4], "nothing is read past the rows needed for offset and limit");
    let none = drive(&mut merge("SELECT id, grade, state FROM h LIMIT 0"), &old, &extended).unwrap();
    assert_eq!(none, Run::default());
}

#[test]
fn null_comes_first_ascending_and_last_descending_with_ids_breaking_ties() {
    let old = [row(1, None, "a"), row(3, Some("0.5"), "b"), row(2, Some("2"), "c")];
    let extended = [row(4, None, "d"), row(5, Some("10"), "e")];
    let ascending = drive(&mut merge("SELECT id, grade, state FROM h ORDER BY grade"), &old, &extended).unwrap();
    let ids = |run: &Run| run.rows.iter().map(|r| r[1] - b'0').collect::<Vec<_>>();
    assert_eq!(ids(&ascending), [1, 4, 3, 2, 5]);
    let old_desc = [row(2, Some("2"), "c"), row(3, Some("0.5"), "b"), row(1, None, "a")];
    let extended_desc = [row(5, Some("10"), "e"), row(4, None, "d")];
    let descending =
        drive(&mut merge("SELECT id, grade, state FROM h ORDER BY grade DESC"), &old_desc, &extended_desc).unwrap();
    assert_eq!(ids(&descending), [5, 2, 3, 4, 1]);
}

#[test]
fn a_side_out_of_order_is_an_error_not_a_wrong_answer() {
    let old = [row(1, None, "a"), row(1, None, "again")];
    let error = drive(&mut merge("SELECT id, grade, state FROM h ORDER BY id"), &old, &[]).unwrap_err();
    assert_eq!(error, MergeError::OutOfOrder { origin: Origin::Old });
    let extended = [row(5, None, "a"), row(4, None, "b")];
    let error = drive(&mut merge("SELECT id, grade, state FROM h ORDER BY id"), &[], &extended).unwrap_err();
    assert_eq!(error.origin(), Some(Origin::Extended));
}

#[test]
fn rows_and_ends_must_be_asked_for() {
    let mut merge = merge("SELECT id, grade, state FROM h");
    assert_eq!(merge.step(), Ok(Step::Read(Origin::Old)));
    assert_eq!(merge.push(Origin::Extended, row(1, None, "x")), Ok(()), "a side may be read before it is asked");
    assert_eq!(merge.push(Origin::Extended, row(2, None, "x")), Err(MergeError::NotAsked { origin: Origin::Extended }));
    assert_eq!(merge.finish(Origin::Extended), Err(MergeError::NotAsked { origin: Origin::Extended }));
    merge.finish(Origin::Old).unwrap();
    assert_eq!(merge.step(), Ok(Step::Row(row(1, None, "x"))));
}

#[test]
fn a_malformed_row_names_its_side_and_column() {
    let mut merge = merge("SELECT id, grade, state FROM h ORDER BY grade");
    let broken = text_row(&[Some(b"1"), Some(b"high")]);
    assert_eq!(
        merge.push(Origin::Old, broken),
        Err(MergeError::MalformedRow { origin: Origin::Old, column: 1, what: "not a finite number" })
    );
}

#[test]
fn a_hidden_id_is_cut_off_text_rows_without_copying() {
    let plan = plan("SELECT grade FROM h ORDER BY grade DESC").unwrap();
    let (old, extended) = ([double("grade"), int("id")], [double("grade"), bigint_unsigned("id")]);
    let mut merge = Merge::new(&plan, Protocol::Text, &old, &extended).unwrap();
    let old_rows = [text_row(&[Some(b"2"), Some(b"1")]), text_row(&[Some(b"1"), Some(b"3")])];
    let extended_rows = [text_row(&[Some(b"2"), Some(b"1")]), text_row(&[Some(b"1.5"), Some(b"2")])];
    let run = drive(&mut merge, &old_rows, &extended_rows).unwrap();
    assert_eq!(run.rows, [text_row(&[Some(b"2")]), text_row(&[Some(b"1.5")]), text_row(&[Some(b"1")])]);
    assert_eq!(run.rows[0].as_ptr(), extended_rows[0].as_ptr(), "the extended copy, sliced");
}

/// A binary-protocol merge of `visible` BIGINT UNSIGNED columns sorted by the first, plus the hidden id: the
/// rows the client gets must be the rows without the id, NULL bitmap included.
fn merge_binary_with_hidden_id(visible: usize) {
    let select: Vec<String> = (0..visible).map(|c| format!("student_module_id AS c{c}")).collect();
    let plan = plan(&format!("SELECT {} FROM h ORDER BY 1", select.join(", "))).unwrap();
    let client: Vec<ColumnDef> = (0..visible).map(|c| bigint_unsigned(&format!("c{c}"))).collect();
    let old = [client.clone(), vec![int("id")]].concat();
    let extended = [client, vec![bigint_unsigned("id")]].concat();
    let mut merge = Merge::new(&plan, Protocol::Binary, &old, &extended).unwrap();
    let client_row = |first: u64| -> Vec<Option<Vec<u8>>> {
        (0..visible as u64).map(|c| (c == 0 || c % 2 == 1).then(|| (first + c).to_le_bytes().to_vec())).collect()
    };
    let old_row = binary_row(&[client_row(10), vec![Some(7u32.to_le_bytes().to_vec())]].concat());
    let extended_row = binary_row(&[client_row(11), vec![Some(8u64.to_le_bytes().to_vec())]].concat());
    let run = drive(&mut merge, &[old_row], &[extended_row]).unwrap();
    assert_eq!(run.rows, [binary_row(&client_row(10)), binary_row(&client_row(11))], "{visible} columns");
}

#[test]
fn a_hidden_id_is_cut_off_binary_rows_and_their_null_bitmap() {
    // With 6 and 14 client columns the NULL bitmap loses a byte; with the others it keeps its length.
    for visible in [1, 2, 5, 6, 7, 14] {
        merge_binary_with_hidden_id(visible);
    }
}

#[test]
fn distinct_rows_from_both_tables_come_once() {
    let plan = plan("SELECT DISTINCT student_module_id FROM h ORDER BY student_module_id DESC").unwrap();
    let columns = [bigint_unsigned("student_module_id")];
    let mut merge = Merge::new(&plan, Protocol::Text, &[int("student_module_id")], &columns).unwrap();
    let rows = |ids: &[&str]| ids.iter().map(|id| text_row(&[Some(id.as_bytes())])).collect::<Vec<_>>();
    let run = drive(&mut merge, &rows(&["43", "42", "7"]), &rows(&["44", "42"])).unwrap();
    assert_eq!(run.rows, rows(&["44", "43", "42", "7"]));
}

#[test]
fn merges_that_cannot_be_exact_are_refused_before_any_row() {
    let refused = |sql: &str, protocol, old: &[ColumnDef], extended: &[ColumnDef]| {
        Merge::new(&plan(sql).unwrap(), protocol, old, extended).unwrap_err()
    };
    let by_state = "SELECT id, grade, state FROM h ORDER BY state";
    assert!(matches!(
        refused(by_state, Protocol::Text, &old_columns(), &extended_columns()),
        MergeError::Unsupported(Unsupported::Collation { .. })
    ));
    let numbers_and_strings = [int("id"), varbinary("grade"), varbinary("state")];
    assert_eq!(
        refused(
            "SELECT id, grade, state FROM h ORDER BY grade",
            Protocol::Text,
            &numbers_and_strings,
            &extended_columns()
        ),
        MergeError::Unsupported(Unsupported::KindsDiffer {
            column: "grade".into(),
            old: "a _bin or binary string",
            extended: "a floating-point number"
        })
    );
    assert_eq!(
        refused("SELECT id, grade, state FROM h", Protocol::Binary, &old_columns(), &extended_columns()),
        MergeError::Unsupported(Unsupported::BinaryTypesDiffer { column: "id".into() })
    );
    assert_eq!(
        refused("SELECT id, grade, state FROM h", Protocol::Text, &old_columns()[..2], &extended_columns()),
        MergeError::ColumnCount { origin: Origin::Old, expected: 3, got: 2 }
    );
}

#[test]
fn binary_rows_with_the_same_types_merge() {
    let columns = [bigint_unsigned("id"), datetime6("created")];
    let plan = plan("SELECT id, created FROM h ORDER BY created DESC").unwrap();
    let mut merge = Merge::new(&plan, Protocol::Binary, &columns, &columns).unwrap();
    let at = |id: u64, second: u8, micro: u32| {
        let mut created = vec![11];
        created.extend_from_slice(&2016u16.to_le_bytes());
        created.extend_from_slice(&[5, 1, 12, 0, second]);
        created.extend_from_slice(&micro.to_le_bytes());
        binary_row(&[Some(id.to_le_bytes().to_vec()), Some(created)])
    };
    let old = [at(1, 30, 0), at(2, 10, 5)];
    let extended = [at(3, 30, 0), at(4, 10, 0)];
    let run = drive(&mut merge, &old, &extended).unwrap();
    assert_eq!(run.rows, [at(3, 30, 0), at(1, 30, 0), at(2, 10, 5), at(4, 10, 0)]);
}
