//! Sets of publish ordinals (or sequence numbers) as sorted, merged ranges in bounded memory: the
//! publishes that failed per topic, and the ones each client lost, so that books kept by stamp can
//! tell a publish that never happened from an event that never arrived.

use serde::{Deserialize, Serialize};

/// A set of numbers as inclusive ranges, sorted, disjoint and not touching. Full at a cap the
/// caller gives: what no longer fits is only counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ranges {
    ranges: Vec<(u64, u64)>,
    /// Numbers left out because the set was full.
    #[serde(default)]
    pub overflow: u64,
}

impl Ranges {
    /// Adds `first..=last`, merging with the ranges it touches; with `cap` ranges held, a number
    /// that would need another range is counted in `overflow` instead.
    pub fn insert(&mut self, first: u64, last: u64, cap: usize) {
        let (first, last) = (first.min(last), first.max(last));
        // The first range that ends at or after `first - 1`: it may touch or overlap.
        let from = self
            .ranges
            .partition_point(|&(_, end)| end.saturating_add(1) < first);
        let mut to = from;
        let (mut low, mut high) = (first, last);
        while to < self.ranges.len() && self.ranges[to].0 <= last.saturating_add(1) {
            low = low.min(self.ranges[to].0);
            high = high.max(self.ranges[to].1);
            to += 1;
        }
        if from == to && self.ranges.len() >= cap {
            self.overflow += last - first + 1;
            return;
        }
        self.ranges.splice(from..to, [(low, high)]);
    }

    /// How many numbers both sets hold.
    pub fn overlap(&self, other: &Ranges) -> u64 {
        let (mut i, mut j, mut common) = (0, 0, 0);
        while i < self.ranges.len() && j < other.ranges.len() {
            let (a, b) = (self.ranges[i], other.ranges[j]);
            let (low, high) = (a.0.max(b.0), a.1.min(b.1));
            if low <= high {
                common += high - low + 1;
            }
            if a.1 < b.1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        common
    }

    /// The largest number at or below `n` that the set does not hold (0 when there is none).
    pub fn last_outside(&self, n: u64) -> u64 {
        let at = self.ranges.partition_point(|&(_, end)| end < n);
        match self.ranges.get(at) {
            Some(&(start, _)) if start <= n => start.saturating_sub(1),
            _ => n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.overflow == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(numbers: &[u64], cap: usize) -> Ranges {
        let mut set = Ranges::default();
        for &n in numbers {
            set.insert(n, n, cap);
        }
        set
    }

    #[test]
    fn numbers_merge_into_ranges_in_any_order() {
        let set = of(&[5, 3, 4, 9, 1, 10, 8], 16);
        assert_eq!(set.ranges, vec![(1, 1), (3, 5), (8, 10)]);
        let mut joined = set.clone();
        joined.insert(2, 7, 16);
        assert_eq!(joined.ranges, vec![(1, 10)]);
    }

    #[test]
    fn a_full_set_counts_what_it_cannot_hold() {
        let mut set = of(&[1, 3, 5], 2);
        // 1 and 3 take the two ranges; 5 would need a third.
        assert_eq!(
            (set.ranges.clone(), set.overflow),
            (vec![(1, 1), (3, 3)], 1)
        );
        // 2 joins them, which frees a range for 7.
        set.insert(2, 2, 2);
        set.insert(7, 7, 2);
        assert_eq!(
            (set.ranges.clone(), set.overflow),
            (vec![(1, 3), (7, 7)], 1)
        );
    }

    #[test]
    fn the_last_number_outside_skips_a_range_that_ends_the_set() {
        let set = of(&[4, 5, 6, 9], 16);
        assert_eq!(set.last_outside(6), 3);
        assert_eq!(set.last_outside(5), 3);
        assert_eq!(set.last_outside(8), 8);
        assert_eq!(set.last_outside(9), 8);
        assert_eq!(set.last_outside(12), 12);
        assert_eq!(of(&[1, 2], 16).last_outside(2), 0);
    }

    #[test]
    fn overlap_counts_common_numbers() {
        let lost = of(&[2, 3, 4, 10, 11, 20], 16);
        let failed = of(&[1, 3, 4, 5, 11, 12, 30], 16);
        assert_eq!(lost.overlap(&failed), 3);
        assert_eq!(failed.overlap(&lost), 3);
        assert_eq!(lost.overlap(&Ranges::default()), 0);
    }
}
