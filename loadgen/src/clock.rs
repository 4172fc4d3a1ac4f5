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
    fn foreign_payloads_are_not_ours() {
        assert_eq!(decode_payload(b"hello"), None);
        assert_eq!(decode_payload(b"cb:1:x:"), None);
        assert_eq!(decode_payload(b"cb:1:2"), None);
        assert_eq!(decode_payload(b"cb:99999999999999999999999:2:"), None);
    }
}
