//! The byte scan that decides whether a statement can name the history table at all.
//!
//! Every COM_QUERY and COM_STMT_PREPARE passes through it, so it must cost nanoseconds: one ASCII
//! case-insensitive substring search (aho-corasick's SIMD prefilter; memchr's `memmem` has no case-insensitive
//! mode). A hit only means "parse this one": the name may sit in a string literal or a comment.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// Finds statements whose text contains the old history table's name, in any letter case.
#[derive(Debug, Clone)]
pub struct Prefilter {
    searcher: AhoCorasick,
}

impl Prefilter {
    /// A pre-filter for the bare table name `table` (without schema).
    pub fn new(table: &str) -> Prefilter {
        let searcher = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostFirst)
            .build([table])
            .expect("a single literal pattern always builds");
        Prefilter { searcher }
    }

    /// Whether `sql` may name the table.
    #[inline]
    pub fn matches(&self, sql: &[u8]) -> bool {
        self.searcher.is_match(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefilter() -> Prefilter {
        Prefilter::new("courseware_studentmodulehistory")
    }

    #[test]
    fn finds_the_name_in_any_case_and_quoting() {
        let p = prefilter();
        assert!(p.matches(b"SELECT * FROM courseware_studentmodulehistory WHERE id = 1"));
        assert!(p.matches(b"select 1 from `edxapp`.`COURSEWARE_StudentModuleHistory`"));
        assert!(p.matches(b"DELETE FROM courseware_studentmodulehistory"));
    }

    #[test]
    fn other_statements_miss() {
        let p = prefilter();
        assert!(!p.matches(b"SELECT * FROM courseware_studentmodule WHERE id = 1"));
        assert!(!p.matches(b"SET autocommit=0"));
        assert!(!p.matches(b""));
    }

    #[test]
    fn a_name_in_a_literal_still_hits() {
        assert!(prefilter().matches(b"SELECT 'courseware_studentmodulehistory'"));
    }
}
