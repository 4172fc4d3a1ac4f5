//! `commbench compare`: a study sweeps patterns × clients × rates × payloads (× intervals for the
//! pollers). It is a scenario whose fields may hold lists; each combination is validated exactly like
//! a `commbench run` scenario.

use std::sync::Arc;

use crate::{
    scenario::{PatternName, RawScenario, ScenarioError},
    session::CellPlan,
};

/// Fields a study may sweep (comma-separated on the command line, arrays in TOML).
pub const SWEPT: [&str; 4] = ["clients", "rate", "payload", "interval"];

/// The default study: the comparison the README promises, about 5 minutes on 2 cores.
pub const DEFAULTS: [(&str, &str); 8] = [
    (
        "patterns",
        "request-response,short-poll,long-poll,sse,ws,graphql-poll,graphql-sub",
    ),
    ("clients", "100,1000,5000"),
    ("rate", "50"),
    ("topics", "10"),
    ("payload", "128"),
    ("interval", "200ms,1s,3s"),
    ("duration", "6s"),
    ("warmup", "2s"),
];

/// `--quick`: the same study, smaller, in about a minute.
pub const QUICK: [(&str, &str); 4] = [
    ("clients", "100,500"),
    ("interval", "250ms,1s"),
    ("duration", "2s"),
    ("warmup", "1s"),
];

/// Fills in the defaults (quick ones first when asked) under what the user gave.
pub fn with_defaults(given: RawScenario, quick: bool) -> RawScenario {
    let mut base = RawScenario::default();
    for (field, value) in DEFAULTS {
        base.set_default(field, value);
    }
    if quick {
        for (field, value) in QUICK {
            base.set_default(field, value);
        }
    }
    base.merge(given)
}

/// Expands a study into cells: every combination of the swept fields, each validated, ordered by
/// client count so the report's scaling curves read left to right. Pollers get one cell per
/// interval; other patterns one cell per combination.
///
/// GraphQL polling is short polling in another envelope: when short-poll already sweeps the
/// intervals, graphql-poll runs at the middle interval only (the one 1:1 comparison of the two
/// envelopes), which keeps the default study near 5 minutes (27 cells instead of 33). Without
/// short-poll in the study it sweeps every interval like any poller.
pub fn plans(study: &RawScenario) -> Result<Vec<CellPlan>, ScenarioError> {
    let mut combos = vec![study.clone()];
    for field in SWEPT {
        let Some(values) = study.values_of(field) else {
            continue;
        };
        combos = combos
            .into_iter()
            .flat_map(|combo| {
                values.iter().map(move |value| {
                    let mut one = combo.clone();
                    one.set_from(field, value, &combo);
                    one
                })
            })
            .collect();
    }
    let intervals = study.values_of("interval").unwrap_or_default();
    let is_interval = |combo: &RawScenario, chosen: Option<&String>| {
        chosen.is_none_or(|chosen| combo.text_of("interval") == Some(chosen.as_str()))
    };
    let mut plans = Vec::new();
    for combo in combos {
        let scenario = Arc::new(combo.validate()?);
        let with_short_poll = scenario.patterns.contains(&PatternName::ShortPoll);
        let is_first_interval = is_interval(&combo, intervals.first());
        let is_middle_interval = is_interval(&combo, intervals.get(intervals.len() / 2));
        for pattern in &scenario.patterns {
            let runs = match pattern {
                PatternName::GraphqlPoll if with_short_poll => is_middle_interval,
                p if p.polls_on_interval() => true,
                _ => is_first_interval,
            };
            if runs {
                plans.push(CellPlan {
                    pattern: *pattern,
                    scenario: scenario.clone(),
                });
            }
        }
    }
    plans.sort_by_key(|plan| plan.scenario.clients);
    Ok(plans)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(plans: &[CellPlan], pattern: PatternName) -> usize {
        plans.iter().filter(|p| p.pattern == pattern).count()
    }

    #[test]
    fn default_study_sweeps_clients_and_poll_intervals() {
        let plans = plans(&with_defaults(RawScenario::default(), false)).unwrap();
        // 3 client counts × (3 short-poll intervals + graphql-poll at 1s + 5 other patterns).
        assert_eq!(plans.len(), 27);
        assert_eq!(count(&plans, PatternName::ShortPoll), 9);
        assert_eq!(count(&plans, PatternName::Sse), 3);
        assert_eq!(count(&plans, PatternName::GraphqlSub), 3);
        assert_eq!(count(&plans, PatternName::GraphqlPoll), 3);
        assert!(plans
            .iter()
            .filter(|p| p.pattern == PatternName::GraphqlPoll)
            .all(|p| p.scenario.interval == std::time::Duration::from_secs(1)));
        assert!(plans
            .windows(2)
            .all(|w| w[0].scenario.clients <= w[1].scenario.clients));
    }

    #[test]
    fn quick_study_is_smaller() {
        let plans = plans(&with_defaults(RawScenario::default(), true)).unwrap();
        // 2 client counts × (2 short-poll intervals + graphql-poll at 1s + 5 other patterns).
        assert_eq!(plans.len(), 16);
    }

    #[test]
    fn graphql_poll_sweeps_intervals_without_short_poll() {
        let mut given = RawScenario::default();
        given.set_flag("patterns", "graphql-poll,graphql-sub");
        given.set_flag("clients", "10");
        let plans = plans(&with_defaults(given, false)).unwrap();
        assert_eq!(count(&plans, PatternName::GraphqlPoll), 3);
        assert_eq!(count(&plans, PatternName::GraphqlSub), 1);
    }

    #[test]
    fn flags_replace_swept_lists() {
        let mut given = RawScenario::default();
        given.set_flag("patterns", "sse,ws");
        given.set_flag("clients", "10,20");
        given.set_flag("payload", "64,1KiB");
        let plans = plans(&with_defaults(given, false)).unwrap();
        assert_eq!(plans.len(), 2 * 2 * 2);
        assert!(plans.iter().any(|p| p.scenario.payload == 1024));
    }

    #[test]
    fn a_bad_list_element_is_named() {
        let mut given = RawScenario::default();
        given.set_flag("clients", "10,lots");
        let err = plans(&with_defaults(given, false)).unwrap_err().to_string();
        assert!(err.contains("--clients") && err.contains("lots"), "{err}");
    }
}
