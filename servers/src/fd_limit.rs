//! Fits the connection cap to the process's open-file limit, so the cap (a 503) is reached before
//! the kernel's EMFILE (clients left hanging): the soft limit is raised as far as the hard limit
//! allows, and the cap lowered below what remains.

/// Descriptors kept for everything but admitted client sockets: the listener, stdio, Redis links,
/// the spare descriptor and the refusals in flight beyond the cap.
pub const RESERVED: u64 = 32 + crate::listener::REFUSALS_IN_FLIGHT as u64;

/// The connection cap to serve with, after raising the soft open-file limit towards what `wanted`
/// connections need; says on start-up what was chosen.
pub fn fit_connections(wanted: usize) -> usize {
    let need = wanted as u64 + RESERVED;
    let limit = match rlimit::increase_nofile_limit(need) {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(%error, "cannot read the open-file limit; keeping --max-connections");
            return wanted;
        }
    };
    let fitted = fitted(wanted, limit);
    if fitted < wanted {
        tracing::warn!(
            open_file_limit = limit,
            max_connections = fitted,
            asked = wanted,
            "the open-file limit is below --max-connections plus {RESERVED} reserved descriptors \
             (raise `ulimit -n`); serving at most {fitted} connections"
        );
    } else {
        tracing::info!(
            open_file_limit = limit,
            max_connections = wanted,
            "open-file limit fits --max-connections"
        );
    }
    fitted
}

/// The cap that leaves [`RESERVED`] of `limit` descriptors free (at least 1).
fn fitted(wanted: usize, limit: u64) -> usize {
    let room = limit.saturating_sub(RESERVED).max(1);
    wanted.min(usize::try_from(room).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_the_reserve_free() {
        assert_eq!(fitted(50_000, 1_000_000), 50_000);
        assert_eq!(fitted(50_000, 256), (256 - RESERVED) as usize);
        assert_eq!(fitted(10, 5), 1);
    }
}
