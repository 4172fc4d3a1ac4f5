//! One clock for the whole run, and the payload format that carries a publish's intended send time
//! (and the instant the publisher wrote it) to the clients, so delivery latency is measured on a
//! single clock from when an event was *meant* to be sent, and from when it actually was. Processes
//! of one run share the clock through its origin on `CLOCK_MONOTONIC`.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

/// Nanoseconds since the run started, on the monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    epoch: Instant,
}

impl RunClock {
    pub fn start() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }

    /// The clock whose zero is `origin_ns` on this machine's `CLOCK_MONOTONIC` (what another
    /// process of the same run passes on; an `Instant` cannot cross a process boundary).
    pub fn from_monotonic(origin_ns: u64) -> Self {
        let (now, mono) = (Instant::now(), monotonic_ns());
        let epoch = if mono >= origin_ns {
            now.checked_sub(Duration::from_nanos(mono - origin_ns))
        } else {
            now.checked_add(Duration::from_nanos(origin_ns - mono))
        };
        Self {
            epoch: epoch.unwrap_or(now),
        }
    }

    /// This clock's zero on `CLOCK_MONOTONIC`, in nanoseconds.
    pub fn monotonic_origin_ns(&self) -> u64 {
        let (now, mono) = (Instant::now(), monotonic_ns());
        mono.saturating_sub(now.saturating_duration_since(self.epoch).as_nanos() as u64)
    }

    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    pub fn instant_at(&self, ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(ns)
    }

    pub fn ns_of(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock `Instant` reads on Linux, as a number.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

/// A Unix time split into UTC calendar fields: `[year, month, day, hour, minute, second]`.
pub fn utc_fields(unix_s: u64) -> [i64; 6] {
    let days = (unix_s / 86_400) as i64;
    let rest = (unix_s % 86_400) as i64;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    [year, month, day, rest / 3600, rest % 3600 / 60, rest % 60]
}

const MAGIC: &[u8] = b"cb:";

/// What a payload says about its publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publish_id: u64,
    /// When the publish was meant to be sent (run clock).
    pub intended_ns: u64,
    /// When the publisher started writing it (run clock), if the payload says.
    pub written_ns: Option<u64>,
}

/// Builds a payload of exactly `size` bytes (at least the header's length):
/// `cb:{id}:{intended ns}:w{written ns}:` padded with `x`. The prefix `cb:{id}:{intended ns}:` is
/// the stamp every reader understands; the write time follows it as one more field. ASCII only, so
/// the server sends it as a plain JSON string on every pattern.
pub fn encode_payload(publish_id: u64, intended_ns: u64, written_ns: u64, size: usize) -> Bytes {
    let header = format!("cb:{publish_id}:{intended_ns}:w{written_ns}:");
    let mut out = BytesMut::with_capacity(size.max(header.len()));
    out.put_slice(header.as_bytes());
    out.put_bytes(b'x', size.saturating_sub(header.len()));
    out.freeze()
}

/// Reads `(publish_id, intended_ns)` back from a payload, or `None` if it is not one of ours.
pub fn decode_payload(data: &[u8]) -> Option<(u64, u64)> {
    decode_stamp(data).map(|s| (s.publish_id, s.intended_ns))
}

/// Reads the whole stamp back from a payload, or `None` if it is not one of ours.
pub fn decode_stamp(data: &[u8]) -> Option<Stamp> {
    let rest = data.strip_prefix(MAGIC)?;
    let mut fields = rest.splitn(3, |b| *b == b':');
    let publish_id = parse_u64(fields.next()?)?;
    let intended_ns = parse_u64(fields.next()?)?;
    let tail = fields.next()?;
    let written_ns = tail
        .strip_prefix(b"w")
        .and_then(|t| t.split(|b| *b == b':').next())
        .and_then(parse_u64);
    Some(Stamp {
        publish_id,
        intended_ns,
        written_ns,
    })
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, d| {
        d.is_ascii_digit()
            .then(|| acc.checked_mul(10)?.checked_add(u64::from(d - b'0')))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_at_exact_size() {
        let p = encode_payload(42, 1_234_567_890, 1_234_600_000, 128);
        assert_eq!(p.len(), 128);
        assert!(p.starts_with(b"cb:42:1234567890:w1234600000:x"));
        assert_eq!(decode_payload(&p), Some((42, 1_234_567_890)));
        assert_eq!(
            decode_stamp(&p).and_then(|s| s.written_ns),
            Some(1_234_600_000)
        );
        // A stamp without the write time (another publisher, an older run) still reads.
        let old = decode_stamp(b"cb:7:100:xxxx").unwrap();
        assert_eq!((old.intended_ns, old.written_ns), (100, None));
    }

    #[test]
    fn processes_share_the_clock_through_its_monotonic_origin() {
        let clock = RunClock::start();
        std::thread::sleep(Duration::from_millis(5));
        let other = RunClock::from_monotonic(clock.monotonic_origin_ns());
        let (a, b) = (clock.now_ns(), other.now_ns());
        assert!(a.abs_diff(b) < 1_000_000, "{a} vs {b}");
        assert!(a >= 5_000_000);
    }

    #[test]
    fn utc_fields_follow_the_calendar() {
        assert_eq!(utc_fields(0), [1970, 1, 1, 0, 0, 0]);
        assert_eq!(utc_fields(951_782_400), [2000, 2, 29, 0, 0, 0]);
        assert_eq!(utc_fields(1_795_437_045), [2026, 11, 23, 12, 30, 45]);
    }

    #[test]
    fn foreign_payloads_are_not_ours() {
        assert_eq!(decode_payload(b"hello"), None);
        assert_eq!(decode_payload(b"cb:1:x:"), None);
        assert_eq!(decode_payload(b"cb:1:2"), None);
        assert_eq!(decode_payload(b"cb:99999999999999999999999:2:"), None);
    }
}
