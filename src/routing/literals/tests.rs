use proptest::prelude::*;
use sqlparser::tokenizer::Token;

use super::*;
use crate::routing::source::Source;

fn masked(sql: &str) -> Option<Vec<&str>> {
    scan(sql.as_bytes()).map(|s| s.literals.iter().map(|l| &sql[l.range.clone()]).collect())
}

#[test]
fn finds_numbers_and_strings_with_their_quotes() {
    let sql = r#"SELECT a FROM t WHERE b IN (1, 23) AND c = 'x\'y' AND d = "q""r" AND e = 1.5 AND f = ''"#;
    assert_eq!(masked(sql).unwrap(), vec!["1", "23", r"'x\'y'", r#""q""r""#, "1.5", "''"]);
}

#[test]
fn the_key_masks_each_literal_with_its_kind() {
    let scan = scan(b"SELECT 'a', \"b\", 3 FROM t").unwrap();
    assert_eq!(scan.key, b"SELECT \0', \0\", \0n FROM t");
    assert_eq!(scan.literals[2].kind, LiteralKind::Number);
    let other = super::scan(b"SELECT 'a long one', \"\", 3000.25 FROM t").unwrap();
    assert_eq!(scan.key, other.key);
}

#[test]
fn words_identifiers_comments_and_placeholders_are_kept() {
    let sql = "SELECT U0.`id`, `a``'b`, t.1, ?2, @v1, $x9 /* 'c' 4 */ # '5\n-- '6\nFROM t1 WHERE x = 7";
    assert_eq!(masked(sql).unwrap(), vec!["7"]);
}

#[test]
fn introducers_keep_their_strings_masked() {
    assert_eq!(masked("SELECT _utf8mb4'x', _binary'\\0'").unwrap(), vec!["'x'", "'\\0'"]);
}

#[test]
fn what_the_tokenizer_might_read_otherwise_is_given_up() {
    for sql in [
        "SELECT X'00ff'",
        "SELECT b'01'",
        "SELECT N'x'",
        "SELECT 1e5",
        "SELECT 0x2A",
        "SELECT 123abc",
        "SELECT 1.",
        "SELECT 1'x'",
        "SELECT .51e-5",
        "SELECT t.5e+3",
        "SELECT 'unterminated",
        "SELECT 'ends with a backslash\\",
        "SELECT `unterminated",
        "SELECT 1 /* unterminated",
        "SELECT 1 /*! executable */",
        "SELECT 1 --\u{a0}x",
        "SELECT '\0' FROM t WHERE \0",
    ] {
        assert_eq!(masked(sql), None, "{sql}");
    }
    assert_eq!(scan(b"SELECT '\xe9'"), None, "not UTF-8");
    assert_eq!(masked("SELECT '\0'").unwrap(), vec!["'\0'"], "a NUL inside a literal is masked with it");
}

/// Pieces statements are made of, chosen to meet every rule of the scanner and of sqlparser's tokenizer.
fn fragment() -> impl Strategy<Value = String> {
    let content = proptest::collection::vec(
        prop_oneof![
            Just("a".to_owned()),
            Just("é😀".to_owned()),
            Just("\\".to_owned()),
            Just("\\'".to_owned()),
            Just("''".to_owned()),
            Just("\"".to_owned()),
            Just("`".to_owned()),
            Just("\n".to_owned()),
            Just("*/".to_owned()),
            "[0-9]{1,3}",
        ],
        0..6,
    )
    .prop_map(|parts| parts.concat());
    prop_oneof![
        4 => prop_oneof![
            Just("SELECT"), Just("FROM"), Just("WHERE"), Just("t"), Just("U0"), Just("_utf8mb4"), Just("_"),
            Just("x"), Just("X"), Just("b"), Just("N"), Just("é"), Just("$v"), Just("@v"), Just("@@x"), Just("e"),
            Just("LIMIT"), Just("IN"),
        ].prop_map(str::to_owned),
        4 => prop_oneof![
            Just("0"), Just("42"), Just("1.5"), Just("1e5"), Just("1e-5"), Just("0x2A"), Just("0b1"), Just("123abc"),
            Just(".5"), Just("1."), Just("7L"),
        ].prop_map(str::to_owned),
        4 => (prop_oneof![Just('\''), Just('"')], content.clone()).prop_map(|(q, c)| format!("{q}{c}{q}")),
        1 => content.clone().prop_map(|c| format!("`{}`", c.replace('`', "``"))),
        1 => prop_oneof![
            Just("/* c */"), Just("/**/"), Just("/*! 1 */"), Just("-- c '\n"), Just("--\t'\n"), Just("# '\n"),
            Just("--x"), Just("/"), Just("*"), Just("-"), Just("--"),
        ].prop_map(str::to_owned),
        3 => prop_oneof![
            Just("("), Just(")"), Just(","), Just("."), Just("?"), Just("="), Just("'"), Just("\""), Just("`"),
            Just(";"), Just("\\"), Just(":"), Just("#"),
        ].prop_map(str::to_owned),
        6 => prop_oneof![Just(" "), Just(""), Just("\n"), Just("\t"), Just("\r\n"), Just("\u{c}")].prop_map(str::to_owned),
    ]
}

/// Whether sqlparser's token is the literal of `kind`.
fn is_literal(token: &Token, kind: LiteralKind) -> bool {
    matches!(
        (token, kind),
        (Token::Number(_, false), LiteralKind::Number)
            | (Token::SingleQuotedString(_), LiteralKind::Quoted(b'\''))
            | (Token::DoubleQuotedString(_), LiteralKind::Quoted(b'"'))
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn every_masked_range_is_one_literal_token_of_sqlparser(parts in proptest::collection::vec(fragment(), 1..24)) {
        let sql = parts.concat();
        let Some(scan) = scan(sql.as_bytes()) else { return Ok(()) };
        let Ok(tokens) = Source::new(sql.as_bytes()).tokens() else { return Ok(()) };
        for literal in &scan.literals {
            let token = tokens.iter().find(|t| t.range == literal.range);
            prop_assert!(
                token.is_some_and(|t| is_literal(&t.token.token, literal.kind)),
                "{:?} at {:?} in {sql:?}: {token:?}", literal.kind, literal.range
            );
        }
        for token in &tokens {
            if matches!(token.token.token, Token::SingleQuotedString(_) | Token::DoubleQuotedString(_)) {
                prop_assert!(
                    scan.literals.iter().any(|l| l.range == token.range),
                    "the string {:?} in {sql:?} is not masked", token.range
                );
            }
        }
    }
}
