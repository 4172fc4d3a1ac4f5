//! Job ids and lease tokens, made locally so an enqueue never needs the broker to name a job.

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};

/// Job ids `{instance prefix}-{counter}`: the random 48-bit prefix keeps ids of several server
/// instances sharing one Redis apart; the counter keeps them unique within an instance.
pub struct IdGen {
    prefix: u64,
    next: AtomicU64,
}

impl Default for IdGen {
    fn default() -> Self {
        Self::new()
    }
}

impl IdGen {
    pub fn new() -> Self {
        Self {
            prefix: random_u64() & 0xffff_ffff_ffff,
            next: AtomicU64::new(1),
        }
    }

    /// A short name for this instance (its Redis consumer name).
    pub fn instance(&self) -> String {
        format!("{:012x}", self.prefix)
    }

    /// Whether `id` is one this instance handed out (its prefix, a counter already used): such a
    /// job was confirmed by the broker or is in the spool, so it exists even if the job log has not
    /// shown it here yet.
    pub fn issued(&self, id: &str) -> bool {
        let Some((prefix, n)) = id.split_once('-') else {
            return false;
        };
        let ours =
            u64::from_str_radix(prefix, 16).is_ok_and(|p| p == self.prefix) && prefix.len() == 12;
        ours && n
            .parse::<u64>()
            .is_ok_and(|n| n >= 1 && n < self.next.load(Relaxed))
    }

    /// A fresh job id and the job's lease secret.
    pub fn next(&self) -> (String, u64) {
        let n = self.next.fetch_add(1, Relaxed);
        let id = format!("{:012x}-{n}", self.prefix);
        // Not a security boundary: the secret only catches acks with a lease of another job.
        (id, splitmix(self.prefix ^ n.rotate_left(48)))
    }
}

/// A lease `{attempt}.{secret as hex}`: which take of the job it came from, and the job's secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub attempt: u32,
    pub secret: u64,
}

impl Lease {
    pub fn token(self) -> String {
        format!("{}.{:016x}", self.attempt, self.secret)
    }

    /// The lease an ack names, or the 400 a malformed one gets.
    pub fn of_ack(text: &str) -> Result<Self, super::QueueError> {
        Self::parse(text).ok_or_else(|| super::QueueError::BadLease {
            lease: text.to_owned(),
        })
    }

    pub fn parse(text: &str) -> Option<Self> {
        let (attempt, secret) = text.split_once('.')?;
        let attempt: u32 = attempt.parse().ok()?;
        if attempt == 0 || secret.len() != 16 {
            return None;
        }
        let secret = u64::from_str_radix(secret, 16).ok()?;
        Some(Self { attempt, secret })
    }
}

/// 64 random bits from the standard library's per-process hash keys (no extra dependency).
fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_leases_round_trip() {
        let (a, b) = (IdGen::new(), IdGen::new());
        let (ida, sa) = a.next();
        let (ida2, _) = a.next();
        let (idb, _) = b.next();
        assert_ne!(ida, ida2);
        assert_ne!(ida, idb);
        let lease = Lease {
            attempt: 3,
            secret: sa,
        };
        assert_eq!(Lease::parse(&lease.token()), Some(lease));
        for bad in [
            "",
            "3",
            "0.0000000000000001",
            "x.0000000000000001",
            "1.xyz",
            "1.1",
        ] {
            assert_eq!(Lease::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_ids_this_instance_handed_out_are_issued_here() {
        let (ours, theirs) = (IdGen::new(), IdGen::new());
        let (first, _) = ours.next();
        let (second, _) = ours.next();
        let (foreign, _) = theirs.next();
        assert!(ours.issued(&first) && ours.issued(&second));
        assert!(!ours.issued(&foreign));
        let prefix = ours.instance();
        for never in [
            format!("{prefix}-3"),
            format!("{prefix}-0"),
            format!("{prefix}-x"),
            format!("{prefix}-"),
            format!("0{prefix}-1"),
            prefix.clone(),
            String::new(),
        ] {
            assert!(!ours.issued(&never), "{never}");
        }
    }
}
