//! Jittered exponential backoff: how every broker reconnect and spool replay paces its retries.

use std::time::Duration;

/// Exponential backoff with jitter: 50 ms doubling to a 2 s cap, each wait ±25 %, so instances that
/// lost their broker together do not retry in lockstep.
#[derive(Debug)]
pub struct Backoff {
    delay: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);
    const CAP: Duration = Duration::from_secs(2);

    pub fn new() -> Self {
        Self { delay: Self::FIRST }
    }

    pub fn reset(&mut self) {
        self.delay = Self::FIRST;
    }

    /// The next wait; the delay after it doubles.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.delay.mul_f64(0.75 + fastrand::f64() * 0.5);
        self.delay = (self.delay * 2).min(Self::CAP);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_with_bounded_jitter() {
        let mut backoff = Backoff::new();
        let waits: Vec<Duration> = (0..10).map(|_| backoff.next_wait()).collect();
        assert!(
            waits[0] >= Duration::from_micros(37_500) && waits[0] <= Duration::from_micros(62_500)
        );
        assert!(waits[1] >= Duration::from_millis(75) && waits[1] <= Duration::from_millis(125));
        for wait in &waits[6..] {
            assert!(*wait >= Duration::from_millis(1500) && *wait <= Duration::from_millis(2500));
        }
        backoff.reset();
        assert!(backoff.next_wait() <= Duration::from_micros(62_500));
    }
}
