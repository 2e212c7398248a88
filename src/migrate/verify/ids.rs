//! Ranges of history ids, the unit in which the tables are compared and the old table is drained.

use std::fmt;

/// The ids from `first` to `last`, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// The smallest id of the range.
    pub first: u64,
    /// The largest id of the range.
    pub last: u64,
}

impl IdRange {
    /// The ids from `first` to `last`; `first` must not be above `last`.
    pub fn new(first: u64, last: u64) -> IdRange {
        debug_assert!(first <= last, "an id range runs upwards: {first}..{last}");
        IdRange { first, last }
    }

    /// How many ids the range spans (not how many rows it holds).
    pub fn span(&self) -> u64 {
        self.last - self.first + 1
    }

    /// The range cut in two at its middle id; `None` for a single id.
    pub fn halves(&self) -> Option<(IdRange, IdRange)> {
        if self.first == self.last {
            return None;
        }
        let middle = self.first + (self.last - self.first) / 2;
        Some((IdRange::new(self.first, middle), IdRange::new(middle + 1, self.last)))
    }

    /// Consecutive ranges of at most `size` ids covering this one, lowest first.
    pub fn chunks(&self, size: u64) -> impl Iterator<Item = IdRange> + use<> {
        let (last, size) = (self.last, size.max(1));
        let mut next = Some(self.first);
        std::iter::from_fn(move || {
            let first = next?;
            let end = first.saturating_add(size - 1).min(last);
            next = if end == last { None } else { Some(end + 1) };
            Some(IdRange::new(first, end))
        })
    }

    /// How many chunks of `size` ids [`IdRange::chunks`] yields.
    pub fn chunk_count(&self, size: u64) -> u64 {
        self.span().div_ceil(size.max(1))
    }
}

/// `id 7` or `ids 7-9`, as the operator reads it.
impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "id {}", self.first)
        } else {
            write!(f, "ids {}-{}", self.first, self.last)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::IdRange;

    #[test]
    fn chunks_cover_the_range_without_gaps_or_overlap() {
        let chunks: Vec<IdRange> = IdRange::new(3, 25).chunks(10).collect();
        assert_eq!(chunks, [IdRange::new(3, 12), IdRange::new(13, 22), IdRange::new(23, 25)]);
        assert_eq!(IdRange::new(3, 25).chunk_count(10), 3);
        assert_eq!(IdRange::new(5, 5).chunks(10).collect::<Vec<_>>(), [IdRange::new(5, 5)]);
    }

    #[test]
    fn chunks_stop_at_the_largest_id_without_overflow() {
        let top = IdRange::new(u64::MAX - 4, u64::MAX);
        assert_eq!(
            top.chunks(3).collect::<Vec<_>>(),
            [IdRange::new(u64::MAX - 4, u64::MAX - 2), IdRange::new(u64::MAX - 1, u64::MAX)]
        );
    }

    #[test]
    fn halves_split_at_the_middle_until_one_id_is_left() {
        assert_eq!(IdRange::new(1, 10).halves(), Some((IdRange::new(1, 5), IdRange::new(6, 10))));
        assert_eq!(IdRange::new(4, 5).halves(), Some((IdRange::new(4, 4), IdRange::new(5, 5))));
        assert_eq!(IdRange::new(4, 4).halves(), None);
    }

    #[test]
    fn ranges_read_as_one_id_or_a_span() {
        assert_eq!(IdRange::new(7, 7).to_string(), "id 7");
        assert_eq!(IdRange::new(7, 9).to_string(), "ids 7-9");
    }
}
