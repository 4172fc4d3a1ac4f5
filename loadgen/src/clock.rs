//! One clock for the whole run, and the payload format that carries a publish's intended send time
//! to the clients, so delivery latency is measured on a single clock from when an event was *meant*
//! to be sent.

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

/// Builds a payload of exactly `size` bytes (at least the header's length): `cb:{id}:{ns}:` padded
/// with `x`. ASCII only, so the server sends it as a plain JSON string on every pattern.
pub fn encode_payload(publish_id: u64, intended_ns: u64, size: usize) -> Bytes {
    let header = format!("cb:{publish_id}:{intended_ns}:");
    let mut out = BytesMut::with_capacity(size.max(header.len()));
    out.put_slice(header.as_bytes());
    out.put_bytes(b'x', size.saturating_sub(header.len()));
    out.freeze()
}

/// Reads `(publish_id, intended_ns)` back from a payload, or `None` if it is not one of ours.
pub fn decode_payload(data: &[u8]) -> Option<(u64, u64)> {
    let rest = data.strip_prefix(MAGIC)?;
    let mut fields = rest.splitn(3, |b| *b == b':');
    let id = parse_u64(fields.next()?)?;
    let ns = parse_u64(fields.next()?)?;
    fields.next()?;
    Some((id, ns))
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
        let p = encode_payload(42, 1_234_567_890, 128);
        assert_eq!(p.len(), 128);
        assert_eq!(decode_payload(&p), Some((42, 1_234_567_890)));
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
