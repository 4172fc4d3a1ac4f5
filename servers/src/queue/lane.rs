//! Lanes and the policy choosing between them: strict priority for premium with a starvation guard —
//! when both lanes have waiting jobs, at least one of every `normal_every` takes goes to normal.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    Premium,
    #[default]
    Normal,
}

impl Lane {
    pub const ALL: [Lane; 2] = [Lane::Premium, Lane::Normal];

    pub fn label(self) -> &'static str {
        match self {
            Lane::Premium => "premium",
            Lane::Normal => "normal",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "premium" => Some(Lane::Premium),
            "normal" => Some(Lane::Normal),
            _ => None,
        }
    }

    pub fn other(self) -> Self {
        match self {
            Lane::Premium => Lane::Normal,
            Lane::Normal => Lane::Premium,
        }
    }
}

/// Which lane the next take serves. Only *contested* takes (both lanes waiting) count: after
/// `normal_every - 1` premium takes in a row that passed over waiting normal jobs, the next contested
/// take goes to normal. With `normal_every = 4`: P P P N P P P N … while both lanes have jobs.
#[derive(Debug, Clone, Copy)]
pub struct LanePolicy {
    normal_every: u32,
    premium_streak: u32,
}

impl LanePolicy {
    /// `normal_every` ≥ 2 (1 would serve normal first, inverting the priority; it is clamped).
    pub fn new(normal_every: u32) -> Self {
        Self {
            normal_every: normal_every.max(2),
            premium_streak: 0,
        }
    }

    /// The lane to try first when both have waiting jobs.
    pub fn preferred(&self) -> Lane {
        if self.premium_streak + 1 >= self.normal_every {
            Lane::Normal
        } else {
            Lane::Premium
        }
    }

    /// Chooses the lane for one take given which lanes have waiting jobs, and records the choice.
    pub fn pick(&mut self, premium_waiting: bool, normal_waiting: bool) -> Option<Lane> {
        let lane = match (premium_waiting, normal_waiting) {
            (false, false) => return None,
            (true, false) => Lane::Premium,
            (false, true) => Lane::Normal,
            (true, true) => self.preferred(),
        };
        self.record(lane, premium_waiting && normal_waiting);
        Some(lane)
    }

    /// Records a take made elsewhere (the Redis script), `contested` when both lanes had jobs.
    pub fn record(&mut self, lane: Lane, contested: bool) {
        match lane {
            Lane::Normal => self.premium_streak = 0,
            Lane::Premium if contested => self.premium_streak += 1,
            Lane::Premium => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(policy: &mut LanePolicy, mut premium: usize, mut normal: usize) -> String {
        let mut order = String::new();
        while let Some(lane) = policy.pick(premium > 0, normal > 0) {
            match lane {
                Lane::Premium => premium -= 1,
                Lane::Normal => normal -= 1,
            }
            order.push(if lane == Lane::Premium { 'P' } else { 'N' });
        }
        order
    }

    #[test]
    fn premium_first_with_one_normal_in_every_k() {
        assert_eq!(run(&mut LanePolicy::new(4), 7, 3), "PPPNPPPNPN");
        assert_eq!(run(&mut LanePolicy::new(2), 3, 3), "PNPNPN");
    }

    #[test]
    fn a_single_lane_is_served_alone_and_does_not_count() {
        let mut policy = LanePolicy::new(3);
        assert_eq!(run(&mut policy, 5, 0), "PPPPP");
        // Uncontested premium takes did not build a streak: premium still goes first twice.
        assert_eq!(run(&mut policy, 3, 2), "PPNPN");
        assert_eq!(run(&mut policy, 0, 2), "NN");
    }

    #[test]
    fn normal_every_is_at_least_two() {
        assert_eq!(run(&mut LanePolicy::new(1), 2, 2), "PNPN");
        assert_eq!(run(&mut LanePolicy::new(0), 1, 1), "PN");
    }

    #[test]
    fn lanes_parse_and_label() {
        for lane in Lane::ALL {
            assert_eq!(Lane::parse(lane.label()), Some(lane));
            assert_ne!(lane.other(), lane);
        }
        assert_eq!(Lane::parse("gold"), None);
    }
}
