//! Exact decimals: normalization, order, sums, and the text MySQL would write.

use proptest::prelude::*;

use super::*;

fn d(text: &str) -> Decimal {
    Decimal::parse(text.as_bytes()).unwrap_or_else(|| panic!("{text} does not parse"))
}

#[test]
fn equal_numbers_are_equal_however_written() {
    assert_eq!(d("2.50"), d("2.5"));
    assert_eq!(d("002.5000"), d("2.5"));
    assert_eq!(d("-0"), d("0"));
    assert_eq!(d("-0.000"), d("0.0"));
    assert_eq!(d(".5"), d("0.5"));
    assert!(!d("-0.00").is_negative());
}

#[test]
fn order_is_numeric() {
    let ascending = ["-100", "-10.5", "-1", "-0.5", "0", "0.05", "0.5", "0.51", "1", "9", "10", "100", "100.001"];
    for pair in ascending.windows(2) {
        assert!(d(pair[0]) < d(pair[1]), "{} < {}", pair[0], pair[1]);
    }
}

#[test]
fn malformed_text_is_not_a_decimal() {
    for text in ["", "-", ".", "-.", "1.2.3", "1e5", "abc", "+1", "1 ", "--1"] {
        assert_eq!(Decimal::parse(text.as_bytes()), None, "{text:?}");
    }
}

#[test]
fn sums_are_exact() {
    assert_eq!(d("1.5").add(&d("2.25")), d("3.75"));
    assert_eq!(d("-1.5").add(&d("1.25")), d("-0.25"));
    assert_eq!(d("1.25").add(&d("-1.5")), d("-0.25"));
    assert_eq!(d("0.1").add(&d("-0.1")), d("0"));
    assert_eq!(d("99.99").add(&d("0.01")), d("100"));
    assert_eq!(d("-99.99").add(&d("-0.01")), d("-100"));
    let big = "9".repeat(65);
    assert_eq!(d(&big).add(&d("1")).to_text(0), format!("1{}", "0".repeat(65)));
}

#[test]
fn text_has_the_column_scale() {
    assert_eq!(d("3.5").to_text(2), "3.50");
    assert_eq!(d("-0.25").to_text(0), "-0.25");
    assert_eq!(d("0").to_text(3), "0.000");
    assert_eq!(d("12").to_text(0), "12");
    assert_eq!(d("-7").to_string(), "-7");
}

proptest! {
    #[test]
    fn sums_and_order_match_integer_arithmetic(a in any::<i64>(), b in any::<i64>(), scale in 0u32..8) {
        let text = |v: i64| text_i128(i128::from(v), scale);
        let (x, y) = (d(&text(a)), d(&text(b)));
        prop_assert_eq!(x.cmp(&y), a.cmp(&b));
        prop_assert_eq!(x.add(&y), Decimal::parse(text_i128(i128::from(a) + i128::from(b), scale).as_bytes()).unwrap());
    }
}

fn text_i128(v: i128, scale: u32) -> String {
    let divisor = 10i128.pow(scale);
    let sign = if v < 0 { "-" } else { "" };
    let (whole, part) = (v.abs() / divisor, v.abs() % divisor);
    match scale {
        0 => format!("{sign}{whole}"),
        _ => format!("{sign}{whole}.{part:0width$}", width = scale as usize),
    }
}
