//! Open-loop schedules: when each send is *meant* to happen, independent of how long earlier sends
//! took. Latency is measured from these intended times (no coordinated omission).

use std::time::Duration;

/// A sequence of intended send times, in run-clock nanoseconds.
#[derive(Debug, Clone)]
pub struct Schedule {
    next_ns: f64,
    mean_gap_ns: f64,
    poisson: bool,
    rng: fastrand::Rng,
}

impl Schedule {
    /// Evenly spaced sends every `interval`, the first at `start_ns`.
    pub fn fixed(start_ns: u64, interval: Duration) -> Self {
        Self {
            next_ns: start_ns as f64,
            mean_gap_ns: interval.as_nanos() as f64,
            poisson: false,
            rng: fastrand::Rng::new(),
        }
    }

    /// Exponentially distributed gaps with mean `interval` (a Poisson process), from `start_ns`.
    pub fn poisson(start_ns: u64, interval: Duration, seed: u64) -> Self {
        Self {
            poisson: true,
            rng: fastrand::Rng::with_seed(seed),
            ..Self::fixed(start_ns, interval)
        }
    }

    /// A fixed schedule starting at a random phase within the first interval, so many clients
    /// polling at the same interval do not all fire together.
    pub fn fixed_with_random_phase(
        start_ns: u64,
        interval: Duration,
        rng: &mut fastrand::Rng,
    ) -> Self {
        let phase = (interval.as_nanos() as f64 * rng.f64()) as u64;
        Self::fixed(start_ns + phase, interval)
    }

    /// A fixed schedule for member `index` of `count` senders sharing one rate: phases evenly spread
    /// over the first interval, so together they send exactly `count / interval` per second (random
    /// phases would make the total rate of a short window a matter of luck).
    pub fn fixed_spread(start_ns: u64, interval: Duration, index: usize, count: usize) -> Self {
        let phase = interval.as_nanos() as f64 * index as f64 / count.max(1) as f64;
        Self::fixed(start_ns + phase as u64, interval)
    }

    /// The next intended send time.
    pub fn next_send(&mut self) -> u64 {
        let now = self.next_ns;
        let gap = if self.poisson {
            // Inverse transform sampling; 1 - f64() is in (0, 1], so ln is finite.
            -self.mean_gap_ns * (1.0 - self.rng.f64()).ln()
        } else {
            self.mean_gap_ns
        };
        self.next_ns += gap;
        now as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_schedule_is_evenly_spaced() {
        let mut s = Schedule::fixed(1_000, Duration::from_millis(10));
        let times: Vec<u64> = (0..3).map(|_| s.next_send()).collect();
        assert_eq!(times, vec![1_000, 10_001_000, 20_001_000]);
    }

    #[test]
    fn spread_senders_share_the_rate_exactly() {
        // 4 senders, each every 40 ms: together one send every 10 ms, from the start.
        let firsts: Vec<u64> = (0..4)
            .map(|i| Schedule::fixed_spread(0, Duration::from_millis(40), i, 4).next_send())
            .collect();
        assert_eq!(firsts, vec![0, 10_000_000, 20_000_000, 30_000_000]);
    }

    #[test]
    fn poisson_schedule_has_the_right_mean() {
        let mut s = Schedule::poisson(0, Duration::from_millis(1), 7);
        let n = 20_000;
        let last = (0..=n).map(|_| s.next_send()).last().unwrap_or(0);
        let mean_ms = last as f64 / n as f64 / 1e6;
        assert!((0.95..1.05).contains(&mean_ms), "mean gap {mean_ms} ms");
    }
}
