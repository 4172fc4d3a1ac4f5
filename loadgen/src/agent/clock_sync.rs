//! How far this machine's monotonic clock is from a Redis server's clock: NTP-style round trips of
//! `TIME`, keeping the one with the shortest round trip. Coordinator and agents each measure their
//! own offset against the same Redis, so their clocks agree within the sum of their errors.

use redis::aio::MultiplexedConnection;

use crate::clock::monotonic_ns;

/// Round trips per estimate.
const SAMPLES: usize = 16;

/// A clock estimate: Redis time = local `CLOCK_MONOTONIC` + `offset_ns`, within ± `error_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockOffset {
    pub offset_ns: i128,
    pub error_ns: u64,
}

impl ClockOffset {
    /// A local monotonic instant on the Redis clock.
    pub fn to_redis(self, local_ns: u64) -> u64 {
        (i128::from(local_ns) + self.offset_ns).max(0) as u64
    }

    /// A Redis-clock instant on the local monotonic clock.
    pub fn to_local(self, redis_ns: u64) -> u64 {
        (i128::from(redis_ns) - self.offset_ns).max(0) as u64
    }
}

/// Measures the offset over [`SAMPLES`] round trips.
pub async fn measure(connection: &mut MultiplexedConnection) -> redis::RedisResult<ClockOffset> {
    let mut best: Option<(u64, i128)> = None;
    for _ in 0..SAMPLES {
        let sent = monotonic_ns();
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(connection).await?;
        let received = monotonic_ns();
        let round_trip = received.saturating_sub(sent);
        let redis_ns = i128::from(secs) * 1_000_000_000 + i128::from(micros) * 1_000;
        let midpoint = i128::from(sent) + i128::from(round_trip / 2);
        if best.is_none_or(|(rtt, _)| round_trip < rtt) {
            best = Some((round_trip, redis_ns - midpoint));
        }
    }
    let (round_trip, offset_ns) = best.unwrap_or((0, 0));
    // Half the round trip, plus TIME's resolution of a microsecond.
    Ok(ClockOffset {
        offset_ns,
        error_ns: round_trip / 2 + 1_000,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_convert_both_ways() {
        let offset = ClockOffset {
            offset_ns: 1_700_000_000_000_000_000 - 5_000,
            error_ns: 10,
        };
        let redis = offset.to_redis(12_345);
        assert_eq!(offset.to_local(redis), 12_345);
    }
}
