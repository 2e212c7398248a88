//! The byte scan that decides whether a statement can name the history table at all.
//!
//! Every COM_QUERY and COM_STMT_PREPARE passes through it, so a miss must cost a few nanoseconds per statement.
//! The scan is an ASCII case-insensitive substring search specialised for one name: it compares two bytes of the
//! name, case-folded, at 16 candidate positions per SSE2 step, and checks the whole name only where both agree.
//! The two bytes are chosen near the end of the name, so that edxapp's many statements on
//! `courseware_studentmodule` (the first 24 bytes of `courseware_studentmodulehistory`) do not stop the scan;
//! general-purpose searches (memchr's `memmem` has no case-insensitive mode, aho-corasick's prefilter stops at
//! every partial match) cost 3–10 times more on those. A hit only means "parse this one": the name may sit in a
//! string literal or a comment.

/// Finds statements whose text contains the old history table's name, in any letter case.
#[derive(Debug, Clone)]
pub struct Prefilter {
    /// The name, lowercase.
    name: Box<[u8]>,
    /// The two positions in `name` tested first, and their bytes with the ASCII case bit set.
    probes: [(usize, u8); 2],
}

/// The ASCII case bit: `b | CASE_BIT` maps both cases of a letter to the lowercase one. Other bytes it maps to
/// themselves or to a byte no letter maps to, so equal-ignoring-case bytes always compare equal after it, and a
/// probe can only admit too many candidates, never miss one.
const CASE_BIT: u8 = 0x20;

impl Prefilter {
    /// A pre-filter for the bare table name `table` (without schema), which must not be empty.
    pub fn new(table: &str) -> Prefilter {
        assert!(!table.is_empty(), "a table name is never empty");
        let name: Box<[u8]> = table.to_ascii_lowercase().into_bytes().into();
        let last = name.len() - 1;
        let probe = |at: usize| (at, name[at] | CASE_BIT);
        let probes = [probe(last.saturating_sub(6)), probe(last)];
        Prefilter { name, probes }
    }

    /// Whether `sql` may name the table.
    #[inline]
    pub fn matches(&self, sql: &[u8]) -> bool {
        let Some(last_start) = sql.len().checked_sub(self.name.len()) else { return false };
        match self.scan_simd(sql, last_start) {
            Some(found) => found,
            None => self.scan_scalar(sql, 0..=last_start),
        }
    }

    /// Whether the name starts at `at` in `sql`.
    #[inline]
    fn is_at(&self, sql: &[u8], at: usize) -> bool {
        sql[at..at + self.name.len()].eq_ignore_ascii_case(&self.name)
    }

    /// The search over the starts `starts`, one at a time, probes first.
    fn scan_scalar(&self, sql: &[u8], starts: std::ops::RangeInclusive<usize>) -> bool {
        let [(o1, b1), (o2, b2)] = self.probes;
        starts
            .into_iter()
            .any(|at| sql[at + o1] | CASE_BIT == b1 && sql[at + o2] | CASE_BIT == b2 && self.is_at(sql, at))
    }

    /// The search over the starts `0..=last_start`, 16 at a time, the final step overlapping the one before it;
    /// `None` when there are fewer than 16 starts.
    #[cfg(target_arch = "x86_64")]
    fn scan_simd(&self, sql: &[u8], last_start: usize) -> Option<bool> {
        use std::arch::x86_64::{
            __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        };
        const LANES: usize = 16;
        let final_step = last_start.checked_sub(LANES - 1)?;
        let [(o1, b1), (o2, b2)] = self.probes;
        // SAFETY: SSE2 is part of the x86_64 baseline. A step at `at <= final_step` loads 16 bytes at `at + o`
        // with `o < name.len()`, so its last byte is at most `final_step + 15 + name.len() - 1 =
        // last_start + name.len() - 1 = sql.len() - 1`.
        let candidates = |at: usize| unsafe {
            let fold = _mm_set1_epi8(CASE_BIT as i8);
            let first = _mm_or_si128(_mm_loadu_si128(sql.as_ptr().add(at + o1).cast::<__m128i>()), fold);
            let second = _mm_or_si128(_mm_loadu_si128(sql.as_ptr().add(at + o2).cast::<__m128i>()), fold);
            let both = _mm_and_si128(
                _mm_cmpeq_epi8(first, _mm_set1_epi8(b1 as i8)),
                _mm_cmpeq_epi8(second, _mm_set1_epi8(b2 as i8)),
            );
            _mm_movemask_epi8(both) as u32
        };
        let mut at = 0;
        loop {
            let step = at.min(final_step);
            let mut mask = candidates(step);
            while mask != 0 {
                if self.is_at(sql, step + mask.trailing_zeros() as usize) {
                    return Some(true);
                }
                mask &= mask - 1;
            }
            if step == final_step {
                return Some(false);
            }
            at += LANES;
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn scan_simd(&self, _sql: &[u8], _last_start: usize) -> Option<bool> {
        None
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const OLD: &str = "courseware_studentmodulehistory";

    fn prefilter() -> Prefilter {
        Prefilter::new(OLD)
    }

    /// The plain definition the scan must agree with.
    fn naive(name: &str, sql: &[u8]) -> bool {
        sql.windows(name.len()).any(|window| window.eq_ignore_ascii_case(name.as_bytes()))
    }

    #[test]
    fn finds_the_name_in_any_case_and_quoting() {
        let p = prefilter();
        assert!(p.matches(b"SELECT * FROM courseware_studentmodulehistory WHERE id = 1"));
        assert!(p.matches(b"select 1 from `edxapp`.`COURSEWARE_StudentModuleHistory`"));
        assert!(p.matches(b"DELETE FROM courseware_studentmodulehistory"));
        assert!(p.matches(OLD.as_bytes()), "the name alone, fewer than 16 starts");
    }

    #[test]
    fn other_statements_miss() {
        let p = prefilter();
        assert!(!p.matches(b"SELECT * FROM courseware_studentmodule WHERE id = 1"));
        assert!(!p.matches(b"SELECT * FROM courseware_studentmodulehistor WHERE id = 1"));
        assert!(!p.matches(b"SET autocommit=0"));
        assert!(!p.matches(b""));
    }

    #[test]
    fn a_name_in_a_literal_still_hits() {
        assert!(prefilter().matches(b"SELECT 'courseware_studentmodulehistory'"));
    }

    #[test]
    fn the_name_at_every_position_of_a_long_statement_is_found() {
        let p = prefilter();
        for at in 0..80 {
            let mut sql = vec![b'x'; 120];
            sql[at..at + OLD.len()].copy_from_slice(b"Courseware_StudentModuleHISTORY");
            assert!(p.matches(&sql), "at {at}");
            sql[at + OLD.len() - 1] = b'z';
            assert!(!p.matches(&sql), "a near miss at {at}");
        }
    }

    #[test]
    fn short_names_and_non_letters_work() {
        for name in ["h", "t1", "a_b", "x9_history_2"] {
            let p = Prefilter::new(name);
            let sql = format!("SELECT * FROM {} LIMIT 1", name.to_ascii_uppercase());
            assert!(p.matches(sql.as_bytes()), "{name}");
            assert!(!p.matches(b"SELECT 1 FROM zzz LIMIT 0"), "{name}");
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_plain_definition(
            prefix in proptest::collection::vec(any::<u8>(), 0..64),
            middle in "(?i)(courseware_studentmodule(history)?|history|_|[a-z]{0,8})",
            suffix in proptest::collection::vec(any::<u8>(), 0..64),
            flips in proptest::collection::vec(any::<bool>(), 31),
        ) {
            let mut sql = prefix;
            sql.extend(middle.bytes().zip(flips.iter().cycle()).map(|(b, &flip)| if flip { b ^ CASE_BIT } else { b }));
            sql.extend(suffix);
            prop_assert_eq!(prefilter().matches(&sql), naive(OLD, &sql));
        }
    }
}
