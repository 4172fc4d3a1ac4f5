//! The search for the largest value (clients, or events per second) at which a cell passes:
//! doubling from the start until a step fails, then bisection (geometric, since the precision is
//! relative) until the largest pass and the smallest failure are within the precision. Pure: the
//! caller runs each step and reports back.

/// Where the search stands.
#[derive(Debug, Clone)]
pub struct Search<R> {
    start: u64,
    /// The largest value the search may try: `--max`, or lower once a resource limit says so.
    max: u64,
    /// Why it may go no higher than `max`.
    max_reason: R,
    precision: f64,
    /// The largest value that passed.
    good: Option<u64>,
    /// The smallest value that failed.
    bad: Option<u64>,
}

impl<R: Clone> Search<R> {
    /// A search from `start` up to at most `max` (`max_reason` says why that is the ceiling),
    /// finished when the capacity is known within `precision` (0.1 = 10%).
    pub fn new(start: u64, max: u64, max_reason: R, precision: f64) -> Self {
        Self {
            start: start.clamp(1, max.max(1)),
            max,
            max_reason,
            precision,
            good: None,
            bad: None,
        }
    }

    /// The next value to try, or `None` when the search is over.
    pub fn next(&self) -> Option<u64> {
        if self.max == 0 {
            return None;
        }
        // A failure above a ceiling found later says nothing the ceiling does not.
        let bad = self.bad.filter(|b| *b <= self.max);
        match (self.good, bad) {
            (None, None) => Some(self.start),
            (Some(good), None) => (good < self.max).then(|| good.saturating_mul(2).min(self.max)),
            (None, Some(bad)) => (bad > 1).then_some(bad / 2),
            (Some(good), Some(bad)) => {
                let close = bad as f64 <= good as f64 * (1.0 + self.precision);
                if bad <= good + 1 || close {
                    return None;
                }
                let middle = (good as f64 * bad as f64).sqrt().round() as u64;
                Some(middle.clamp(good + 1, bad - 1))
            }
        }
    }

    /// What running `value` showed.
    pub fn record(&mut self, value: u64, passed: bool) {
        if passed {
            self.good = Some(self.good.map_or(value, |g| g.max(value)));
        } else {
            self.bad = Some(self.bad.map_or(value, |b| b.min(value)));
        }
    }

    /// A resource limit allows at most `allowed`; the search goes no higher.
    pub fn cap(&mut self, allowed: u64, reason: R) {
        if allowed < self.max {
            self.max = allowed;
            self.max_reason = reason;
        }
    }

    /// The largest value that passed (0 when none did).
    pub fn capacity(&self) -> u64 {
        self.good.unwrap_or(0)
    }

    /// The smallest value that failed, when that is what bounds the capacity; `None` when the
    /// ceiling did (then [`ceiling_reason`](Self::ceiling_reason) says why).
    pub fn first_failing(&self) -> Option<u64> {
        self.bad.filter(|b| *b <= self.max)
    }

    /// Why the search could go no higher than its ceiling.
    pub fn ceiling_reason(&self) -> &R {
        &self.max_reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search against a pass/fail threshold: values up to `limit` pass.
    fn run(mut search: Search<&'static str>, limit: u64) -> (Search<&'static str>, Vec<u64>) {
        let mut tried = Vec::new();
        while let Some(value) = search.next() {
            assert!(!tried.contains(&value), "{value} tried twice: {tried:?}");
            tried.push(value);
            search.record(value, value <= limit);
            assert!(tried.len() < 60, "{tried:?}");
        }
        (search, tried)
    }

    #[test]
    fn doubles_then_bisects_to_the_precision() {
        let (search, tried) = run(Search::new(100, 200_000, "max", 0.1), 5_000);
        assert_eq!(&tried[..7], [100, 200, 400, 800, 1600, 3200, 6400]);
        let capacity = search.capacity();
        let failing = search.first_failing().unwrap();
        assert!(capacity <= 5_000 && failing > 5_000, "{capacity} {failing}");
        assert!(
            failing as f64 <= capacity as f64 * 1.1,
            "{capacity} {failing}"
        );
        assert!(tried.len() <= 11, "{tried:?}");
    }

    #[test]
    fn coarser_precision_takes_fewer_steps() {
        let (fine, fine_tried) = run(Search::new(100, 200_000, "max", 0.05), 5_000);
        let (coarse, coarse_tried) = run(Search::new(100, 200_000, "max", 0.25), 5_000);
        assert!(coarse_tried.len() < fine_tried.len());
        assert!(coarse.capacity() <= fine.capacity());
        assert!(coarse.first_failing().unwrap() as f64 <= coarse.capacity() as f64 * 1.25);
    }

    #[test]
    fn a_first_failure_halves_down() {
        let (search, tried) = run(Search::new(1_000, 200_000, "max", 0.1), 150);
        assert_eq!(&tried[..4], [1_000, 500, 250, 125]);
        assert!((137..=150).contains(&search.capacity()), "{tried:?}");
        let (search, tried) = run(Search::new(8, 100, "max", 0.1), 0);
        assert_eq!(tried, [8, 4, 2, 1]);
        assert_eq!(search.capacity(), 0);
        assert_eq!(search.first_failing(), Some(1));
    }

    #[test]
    fn the_ceiling_is_tried_and_named_when_nothing_fails() {
        let (search, tried) = run(Search::new(100, 1_000, "--max", 0.1), u64::MAX);
        assert_eq!(tried, [100, 200, 400, 800, 1_000]);
        assert_eq!(search.capacity(), 1_000);
        assert_eq!(search.first_failing(), None);
        assert_eq!(*search.ceiling_reason(), "--max");
    }

    #[test]
    fn a_resource_cap_becomes_the_ceiling() {
        let mut search = Search::new(100, 200_000, "--max", 0.1);
        let mut tried = Vec::new();
        while let Some(value) = search.next() {
            if value > 19_000 {
                search.cap(19_000, "fd-limit");
                continue;
            }
            tried.push(value);
            search.record(value, true);
        }
        assert_eq!(tried.last(), Some(&19_000));
        assert_eq!(search.capacity(), 19_000);
        assert_eq!(search.first_failing(), None);
        assert_eq!(*search.ceiling_reason(), "fd-limit");
    }

    #[test]
    fn a_cap_below_an_earlier_failure_replaces_it() {
        let mut search = Search::new(100, 200_000, "--max", 0.1);
        search.record(16_000, true);
        search.record(32_000, false);
        search.cap(19_000, "fd-limit");
        assert_eq!(search.first_failing(), None);
        assert_eq!(search.next(), Some(19_000));
        search.record(19_000, true);
        assert_eq!(search.next(), None);
        assert_eq!(*search.ceiling_reason(), "fd-limit");
    }
}
