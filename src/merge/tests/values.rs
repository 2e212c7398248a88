//! Reading and comparing values: byte fixtures of text and binary rows for each supported type, MySQL's
//! comparison rules, and what is refused.

use std::cmp::Ordering;

use super::*;
use crate::merge::row::{RowLayout, Unreadable};

/// The key of the only column of `row`, a row of `def` in `protocol`.
fn key_of(def: &ColumnDef, protocol: Protocol, row: &Bytes) -> Result<Key, Unreadable> {
    let kind = KeyKind::of(def).unwrap();
    let layout = RowLayout::new(protocol, std::slice::from_ref(def)).unwrap();
    let cells = layout.cells(row, 1).map_err(|fault| fault.problem)?;
    Key::read(kind, protocol, row, cells[0].as_ref())
}

fn text_key(def: &ColumnDef, value: &str) -> Key {
    key_of(def, Protocol::Text, &text_row(&[Some(value.as_bytes())])).unwrap()
}

fn binary_key(def: &ColumnDef, encoded: Vec<u8>) -> Key {
    key_of(def, Protocol::Binary, &binary_row(&[Some(encoded)])).unwrap()
}

fn assert_ascending(keys: &[Key]) {
    for pair in keys.windows(2) {
        assert_eq!(pair[0].cmp(&pair[1]), Ordering::Less, "{:?} < {:?}", pair[0], pair[1]);
    }
}

#[test]
fn integers_compare_as_numbers_in_text() {
    let id = bigint_unsigned("id");
    let signed = int("n");
    assert_ascending(&[
        text_key(&signed, "-10"),
        text_key(&signed, "-1"),
        text_key(&signed, "0"),
        text_key(&signed, "9"),
    ]);
    assert_ascending(&[text_key(&id, "9"), text_key(&id, "10"), text_key(&id, "18446744073709551615")]);
    assert!(text_key(&id, "18446744073709551615") > text_key(&signed, "2147483647"));
    assert_eq!(text_key(&id, "00042"), text_key(&signed, "42"));
}

#[test]
fn integers_decode_by_width_and_sign_in_binary() {
    let tiny = def("t", ColumnType::MYSQL_TYPE_TINY, ColumnFlags::empty(), BINARY, 0);
    let tiny_unsigned = def("t", ColumnType::MYSQL_TYPE_TINY, ColumnFlags::UNSIGNED_FLAG, BINARY, 0);
    assert_eq!(binary_key(&tiny, vec![0xFF]), Key::Integer(-1));
    assert_eq!(binary_key(&tiny_unsigned, vec![0xFF]), Key::Integer(255));
    let short = def("s", ColumnType::MYSQL_TYPE_SHORT, ColumnFlags::empty(), BINARY, 0);
    assert_eq!(binary_key(&short, (-300i16).to_le_bytes().to_vec()), Key::Integer(-300));
    let year = def("y", ColumnType::MYSQL_TYPE_YEAR, ColumnFlags::UNSIGNED_FLAG, BINARY, 0);
    assert_eq!(binary_key(&year, 2016u16.to_le_bytes().to_vec()), Key::Integer(2016));
    assert_eq!(binary_key(&int("n"), (-5i32).to_le_bytes().to_vec()), Key::Integer(-5));
    let id = bigint_unsigned("id");
    assert_eq!(binary_key(&id, u64::MAX.to_le_bytes().to_vec()), Key::Integer(u64::MAX.into()));
    let signed_bigint = def("b", ColumnType::MYSQL_TYPE_LONGLONG, ColumnFlags::empty(), BINARY, 0);
    assert_eq!(binary_key(&signed_bigint, i64::MIN.to_le_bytes().to_vec()), Key::Integer(i64::MIN.into()));
}

#[test]
fn decimals_compare_exactly_in_both_protocols() {
    let price = decimal("price", 2);
    assert_eq!(text_key(&price, "2.50"), text_key(&price, "2.5"));
    assert_eq!(binary_key(&price, lenenc(b"2.50")), text_key(&price, "2.5"));
    assert_ascending(&[text_key(&price, "-1.00"), text_key(&price, "0.99"), text_key(&price, "10.00")]);
    let eighteen_nines = "0.".to_owned() + &"9".repeat(30);
    assert!(text_key(&price, &eighteen_nines) < text_key(&price, "1"));
    assert_eq!(text_key(&price, "10.00"), text_key(&int("n"), "10"));
}

#[test]
fn floats_compare_as_numbers() {
    let grade = double("grade");
    assert_ascending(&[
        text_key(&grade, "-1.5"),
        text_key(&grade, "0"),
        text_key(&grade, "9.5"),
        text_key(&grade, "1e20"),
    ]);
    assert_eq!(text_key(&grade, "-0"), text_key(&grade, "0"));
    assert_eq!(binary_key(&grade, 2.5f64.to_le_bytes().to_vec()), text_key(&grade, "2.5"));
    let float = def("f", ColumnType::MYSQL_TYPE_FLOAT, ColumnFlags::empty(), BINARY, 31);
    assert_eq!(binary_key(&float, 0.5f32.to_le_bytes().to_vec()), Key::Float(0.5));
    let row = text_row(&[Some(b"nan")]);
    assert_eq!(key_of(&grade, Protocol::Text, &row).unwrap_err(), Unreadable::Malformed("not a finite number"));
}

#[test]
fn datetimes_compare_by_their_parts_whatever_their_precision() {
    let created = datetime6("created");
    assert_eq!(text_key(&created, "2016-05-01 12:00:00"), text_key(&created, "2016-05-01 12:00:00.000000"));
    assert_ascending(&[
        text_key(&created, "0000-00-00 00:00:00"),
        text_key(&created, "2016-05-01 12:00:00"),
        text_key(&created, "2016-05-01 12:00:00.000001"),
        text_key(&created, "2016-05-01 12:00:00.5"),
        text_key(&created, "2016-05-01 12:00:01"),
        text_key(&created, "2016-12-01 00:00:00"),
    ]);
    let date = def("d", ColumnType::MYSQL_TYPE_DATE, ColumnFlags::empty(), BINARY, 0);
    assert_eq!(text_key(&date, "2016-05-01"), text_key(&created, "2016-05-01 00:00:00"));
    let mut full = 2016u16.to_le_bytes().to_vec();
    full.extend_from_slice(&[5, 1, 12, 0, 0]);
    full.extend_from_slice(&7u32.to_le_bytes());
    assert_eq!(
        binary_key(&created, [vec![11], full.clone()].concat()),
        text_key(&created, "2016-05-01 12:00:00.000007")
    );
    assert_eq!(binary_key(&created, [vec![7], full[..7].to_vec()].concat()), text_key(&created, "2016-05-01 12:00:00"));
    assert_eq!(binary_key(&date, [vec![4], full[..4].to_vec()].concat()), text_key(&date, "2016-05-01"));
    assert_eq!(binary_key(&created, vec![0]), text_key(&created, "0000-00-00 00:00:00"));
}

#[test]
fn times_compare_as_signed_durations() {
    let time = def("t", ColumnType::MYSQL_TYPE_TIME, ColumnFlags::empty(), BINARY, 6);
    assert_ascending(&[
        text_key(&time, "-838:59:59"),
        text_key(&time, "-00:00:01"),
        text_key(&time, "00:00:00"),
        text_key(&time, "00:00:00.000001"),
        text_key(&time, "23:59:59"),
        text_key(&time, "838:59:59"),
    ]);
    let mut minus_a_day_and_a_second = vec![12, 1];
    minus_a_day_and_a_second.extend_from_slice(&1u32.to_le_bytes());
    minus_a_day_and_a_second.extend_from_slice(&[0, 0, 1]);
    minus_a_day_and_a_second.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(binary_key(&time, minus_a_day_and_a_second), text_key(&time, "-24:00:01"));
    assert_eq!(binary_key(&time, vec![0]), text_key(&time, "00:00:00"));
}

#[test]
fn strings_of_unknown_padding_compare_by_bytes_and_refuse_what_padding_would_change() {
    // A VARBINARY column, or a `_bin` one whose results were converted: the definition cannot say which.
    for column in [varbinary("v"), bin_varchar("v", UTF8MB4_GENERAL_CI)] {
        assert_ascending(&[
            text_key(&column, ""),
            text_key(&column, "a"),
            text_key(&column, "ab"),
            text_key(&column, "b"),
        ]);
        assert_eq!(binary_key(&column, lenenc(b"abc")), text_key(&column, "abc"));
        assert!(binary_key(&column, lenenc(b"\xc3\xa9")) > text_key(&column, "z"));
        for ambiguous in ["a ", "a\tb", "\n"] {
            let row = text_row(&[Some(ambiguous.as_bytes())]);
            assert_eq!(key_of(&column, Protocol::Text, &row), Err(Unreadable::AmbiguousPadding), "{ambiguous:?}");
        }
    }
}

#[test]
fn bin_collations_reported_as_themselves_pad_as_they_do() {
    let padded = bin_varchar("s", UTF8MB4_BIN);
    assert_eq!(text_key(&padded, "a"), text_key(&padded, "a  "));
    assert!(text_key(&padded, "a\t") < text_key(&padded, "a"));
    assert!(text_key(&padded, "a b") > text_key(&padded, "a"));
    assert!(text_key(&padded, "é") > text_key(&padded, "z"), "code point order");
    let unpadded = bin_varchar("s", UTF8MB4_NOPAD_BIN);
    assert_ascending(&[text_key(&unpadded, "a"), text_key(&unpadded, "a\t"), text_key(&unpadded, "a ")]);
    assert!(!KeyKind::of(&padded).unwrap().compares_with(KeyKind::of(&unpadded).unwrap()));
}

#[test]
fn null_sorts_before_every_value() {
    let column = bigint_unsigned("id");
    let null = key_of(&column, Protocol::Text, &text_row(&[None])).unwrap();
    assert_eq!(null, Key::Null);
    assert!(null < text_key(&column, "0"));
    assert!(null < text_key(&varbinary("v"), ""));
    let binary_null = key_of(&column, Protocol::Binary, &binary_row(&[None])).unwrap();
    assert_eq!(binary_null, Key::Null);
}

#[test]
fn linguistic_collations_enums_and_json_are_refused_by_name() {
    let state = text_column("state", UTF8MB4_GENERAL_CI);
    let error = KeyKind::of(&state).unwrap_err();
    assert_eq!(error, Unsupported::Collation { column: "state".into(), collation: "utf8mb4_general_ci (45)".into() });
    assert!(error.to_string().contains("`state`") && error.to_string().contains("utf8mb4_general_ci"));
    let unknown = text_column("x", 9999);
    assert!(KeyKind::of(&unknown).unwrap_err().to_string().contains("id 9999"));
    // With binary results every column is reported as `binary`; only the BINARY flag tells a `_bin` one.
    let converted = text_column("state", BINARY);
    assert_eq!(
        KeyKind::of(&converted),
        Err(Unsupported::Collation { column: "state".into(), collation: "binary (63)".into() })
    );
    let enumeration =
        def("e", ColumnType::MYSQL_TYPE_STRING, ColumnFlags::ENUM_FLAG | ColumnFlags::BINARY_FLAG, UTF8MB4_BIN, 0);
    assert_eq!(
        KeyKind::of(&enumeration),
        Err(Unsupported::ColumnType { column: "e".into(), type_name: "ENUM".into() })
    );
    let json = def("j", ColumnType::MYSQL_TYPE_JSON, ColumnFlags::empty(), BINARY, 0);
    assert_eq!(KeyKind::of(&json), Err(Unsupported::ColumnType { column: "j".into(), type_name: "JSON".into() }));
}

#[test]
fn malformed_values_and_rows_are_errors() {
    let created = datetime6("created");
    for bad in ["2016-05-01T12:00:00", "2016-05", "2016-05-01 12:00", "2016-05-01 12:00:00.1234567", "x"] {
        assert_eq!(
            key_of(&created, Protocol::Text, &text_row(&[Some(bad.as_bytes())])).unwrap_err(),
            Unreadable::Malformed("not a date"),
            "{bad}"
        );
    }
    assert_eq!(
        key_of(&int("n"), Protocol::Text, &text_row(&[Some(b"12a")])).unwrap_err(),
        Unreadable::Malformed("not an integer")
    );
    assert_eq!(
        key_of(&int("n"), Protocol::Text, &Bytes::from_static(b"\x05abc")).unwrap_err(),
        Unreadable::Malformed("the value runs past the end of the row")
    );
    assert_eq!(
        key_of(&int("n"), Protocol::Text, &Bytes::new()).unwrap_err(),
        Unreadable::Malformed("the row ends before this column")
    );
    assert_eq!(
        key_of(&int("n"), Protocol::Binary, &Bytes::from_static(b"\x01\x00\x01")).unwrap_err(),
        Unreadable::Malformed("a binary row must start with 0x00")
    );
    assert_eq!(
        key_of(&int("n"), Protocol::Binary, &binary_row(&[Some(vec![1, 2])])).unwrap_err(),
        Unreadable::Malformed("the value runs past the end of the row")
    );
    assert_eq!(
        key_of(&created, Protocol::Binary, &binary_row(&[Some(vec![5, 1, 2, 3, 4, 5])])).unwrap_err(),
        Unreadable::Malformed("bad date length")
    );
}

#[test]
fn a_column_definition_is_read_with_its_type_sign_and_collation() {
    let parsed = bigint_unsigned("id");
    assert_eq!(parsed.name(), "id");
    assert_eq!(parsed.column_type(), ColumnType::MYSQL_TYPE_LONGLONG);
    assert!(parsed.is_unsigned());
    assert_eq!(parsed.collation(), BINARY);
    assert_eq!(decimal("d", 4).decimals(), 4);
    let truncated = &definition_packet("id", ColumnType::MYSQL_TYPE_LONG, ColumnFlags::empty(), BINARY, 0)[..20];
    assert_eq!(
        ColumnDef::parse(truncated, Origin::Extended),
        Err(MergeError::ColumnDefinition { origin: Origin::Extended })
    );
}
