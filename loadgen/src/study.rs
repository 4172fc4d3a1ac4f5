//! `commbench compare`: a study sweeps patterns × clients × rates × payloads (× intervals for the
//! pollers). It is a scenario whose fields may hold lists; each combination is validated exactly like
//! a `commbench run` scenario.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
};

use crate::{
    pattern::Pattern,
    profile::Profile,
    scenario::{BusKind, RawScenario, Scenario, ScenarioError},
    session::CellPlan,
};

/// Fields a study may sweep (comma-separated on the command line, arrays in TOML).
pub const SWEPT: [&str; 4] = ["clients", "rate", "payload", "interval"];

/// The default study: the comparison the README promises, about 8.5 minutes on 2 cores.
pub const DEFAULTS: [(&str, &str); 14] = [
    (
        "patterns",
        "request-response,short-poll,long-poll,sse,ws,graphql-poll,graphql-sub,socketio",
    ),
    ("clients", "100,1000,5000"),
    ("rate", "50"),
    ("topics", "10"),
    ("payload", "128"),
    ("interval", "200ms,1s,3s"),
    ("duration", "6s"),
    ("warmup", "2s"),
    // The in-process vs Redis comparison: these patterns again at the middle client count, with the
    // clients spread over `bus_instances` servers joined by a real Redis. `none` leaves it out.
    ("bus_patterns", "sse,ws,long-poll,short-poll"),
    ("bus_instances", "2"),
    // The message queue: how each notification pattern tells a user its job is done, at the middle
    // client count. `none` leaves it out.
    (
        "job_patterns",
        "job-short-poll,job-long-poll,job-sse,job-ws",
    ),
    // The broker comparison: push, poll and job patterns on `bus_instances` servers over each
    // broker, at the middle client count. `none` leaves it out.
    ("brokers", "redis,rabbitmq,kafka"),
    (
        "broker_patterns",
        "sse,ws,long-poll,short-poll,job-long-poll,job-ws",
    ),
    // Every cell on a broker runs this window after a 1 s warm-up: each also starts its broker
    // (a RabbitMQ node takes seconds), so the windows are short to keep the study bounded.
    ("broker_duration", "3s"),
];

/// `--quick`: the same study, smaller, in about 2.5 minutes.
pub const QUICK: [(&str, &str); 5] = [
    ("clients", "100,500"),
    ("interval", "250ms,1s"),
    ("duration", "2s"),
    ("warmup", "1s"),
    ("broker_duration", "2s"),
];

/// The warm-up of every cell on a broker (see `broker_duration`).
const BROKER_WARMUP: &str = "1s";

/// Fills in the defaults (quick ones first when asked) under what the user gave.
pub fn with_defaults(given: RawScenario, quick: bool) -> RawScenario {
    let quick: &[_] = if quick { &QUICK } else { &[] };
    given.over_defaults(&[&DEFAULTS, quick])
}

/// Expands a study into cells: every combination of the swept fields, each validated, ordered by
/// client count so the report's scaling curves read left to right. Pollers get one cell per
/// interval; other patterns one cell per combination.
///
/// A layered poller is another poller in a new envelope (GraphQL polling is short polling): when
/// the poller underneath already sweeps the intervals, the layered one runs at the middle interval
/// only (the one 1:1 comparison of the two envelopes), which keeps the default study near 5 minutes
/// (27 cells instead of 33). Without the poller underneath it sweeps every interval like any poller.
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
    for combo in &combos {
        let scenario = Arc::new(combo.validate()?);
        let is_first_interval = is_interval(combo, intervals.first());
        let is_middle_interval = is_interval(combo, intervals.get(intervals.len() / 2));
        for pattern in &scenario.patterns {
            let swept_underneath = pattern
                .layer()
                .is_some_and(|layer| scenario.patterns.contains(&layer.over));
            let runs = match (pattern.polls_on_interval(), swept_underneath) {
                (true, true) => is_middle_interval,
                (true, false) => true,
                (false, _) => is_first_interval,
            };
            if runs {
                plans.push(CellPlan {
                    pattern: *pattern,
                    scenario: scenario.clone(),
                });
            }
        }
    }
    let redis = bus_plans(study, &combos)?;
    let brokers = broker_plans(study, &combos, &redis)?;
    plans.extend(redis);
    plans.extend(job_plans(study, &combos)?);
    plans.extend(brokers);
    // Stable: at each client count the broker cells follow their in-process counterparts.
    plans.sort_by_key(|plan| plan.scenario.clients);
    Ok(plans)
}

/// The brokers the study's cells would start privately (no `--bus-url`), in the broker
/// comparison's order.
pub fn private_brokers(study: &RawScenario) -> Result<Vec<BusKind>, ScenarioError> {
    let plans = plans(study)?;
    let used = |kind: BusKind| {
        plans
            .iter()
            .any(|p| p.scenario.bus == kind && p.scenario.bus_url.is_none())
    };
    Ok(BusKind::BROKERS.into_iter().filter(|k| used(*k)).collect())
}

/// Leaves every cell on `broker` out of the study (it cannot be started here).
pub fn leave_out(study: &mut RawScenario, broker: BusKind) {
    if broker == BusKind::Redis {
        study.set_flag("bus_patterns", "none");
    }
    let kept: Vec<String> = study
        .values_of("brokers")
        .unwrap_or_default()
        .into_iter()
        .filter(|b| BusKind::parse(b).ok() != Some(broker))
        .collect();
    let kept = if kept.is_empty() {
        "none".to_owned()
    } else {
        kept.join(",")
    };
    study.set_flag("brokers", kept);
}

/// The short window every cell on a broker runs (`broker_duration` after [`BROKER_WARMUP`]).
fn broker_window(combo: &mut RawScenario, study: &RawScenario) {
    combo.set_from_field("duration", "broker_duration", study);
    combo.set_default("warmup", BROKER_WARMUP);
}

/// True when the study runs commbench's own servers on the in-process bus: only then do the
/// Redis and broker comparisons apply (a study on a broker, or against someone else's server,
/// has nothing to compare).
fn compares_buses(study: &RawScenario) -> Result<bool, ScenarioError> {
    // Every pattern, but the first element of every other list.
    let base = study.validate_first_except("patterns")?;
    Ok(!base.bus.is_broker() && base.target.is_none() && base.profile.is_none())
}

/// The in-process vs Redis cells: `bus_patterns` the study runs, at the middle client count
/// (pollers at the middle interval), once per `bus_instances` value, in the broker window.
fn bus_plans(study: &RawScenario, combos: &[RawScenario]) -> Result<Vec<CellPlan>, ScenarioError> {
    if !compares_buses(study)? {
        return Ok(Vec::new());
    }
    let base = study.validate_first_except("patterns")?;
    let mut patterns = listed_patterns(study, "bus_patterns")?;
    // Only patterns the study runs: the comparison needs their in-process cells.
    patterns.retain(|p| base.patterns.contains(p));
    let instances = study
        .values_of("bus_instances")
        .unwrap_or_else(|| vec!["2".to_owned()]);
    let mut plans = Vec::new();
    for count in &instances {
        plans.extend(at_middle_clients(study, combos, &patterns, |combo| {
            combo.set_from("bus", "redis", study);
            combo.set_from("instances", count, study);
            broker_window(combo, study);
        })?);
    }
    Ok(plans)
}

/// The broker comparison: `broker_patterns` on the first `bus_instances` count over each of
/// `brokers`, at the middle client count (pollers at the middle interval), in the broker window.
/// Cells the Redis comparison (`redis_cells`) already runs are not run twice.
fn broker_plans(
    study: &RawScenario,
    combos: &[RawScenario],
    redis_cells: &[CellPlan],
) -> Result<Vec<CellPlan>, ScenarioError> {
    if !compares_buses(study)? {
        return Ok(Vec::new());
    }
    let invalid = |detail: String| ScenarioError::Invalid {
        origin: study.origin_of("brokers"),
        detail,
    };
    let mut brokers = Vec::new();
    for name in study.values_of("brokers").unwrap_or_default() {
        if name == "none" {
            continue;
        }
        match BusKind::parse(&name).map_err(invalid)? {
            BusKind::Memory => {
                return Err(invalid(
                    "the in-process bus is what the comparisons start from; name brokers \
                     (redis, rabbitmq, kafka)"
                        .into(),
                ))
            }
            broker if !brokers.contains(&broker) => brokers.push(broker),
            _ => {}
        }
    }
    let mut patterns = listed_patterns(study, "broker_patterns")?;
    // Like the other comparisons: patterns the study runs, and job patterns with the default ones.
    let base = study.validate_first_except("patterns")?;
    let default_patterns = study.origin_of("patterns").starts_with("default");
    patterns.retain(|p| base.patterns.contains(p) || (p.is_job() && default_patterns));
    let instances = study
        .values_of("bus_instances")
        .and_then(|list| list.first().cloned())
        .unwrap_or_else(|| "2".to_owned());
    let mut plans: Vec<CellPlan> = Vec::new();
    for broker in brokers {
        let cells = at_middle_clients(study, combos, &patterns, |combo| {
            combo.set_from("bus", broker.as_str(), study);
            combo.set_from("instances", &instances, study);
            broker_window(combo, study);
        })?;
        plans.extend(
            cells
                .into_iter()
                .filter(|cell| !redis_cells.iter().any(|r| same_cell(r, cell))),
        );
    }
    Ok(plans)
}

/// Two plans that would measure the same cell (the same name in the results).
fn same_cell(a: &CellPlan, b: &CellPlan) -> bool {
    let (x, y) = (&a.scenario, &b.scenario);
    a.pattern == b.pattern
        && x.bus == y.bus
        && x.instances == y.instances
        && x.clients == y.clients
        && x.rate == y.rate
        && x.payload == y.payload
        && x.interval == y.interval
        && x.topics == y.topics
}

/// The message-queue cells: `job_patterns` at the middle client count, on the study's own bus. Only
/// with the default patterns: a study that names its patterns sweeps any `job-*` among them like
/// every other pattern.
fn job_plans(study: &RawScenario, combos: &[RawScenario]) -> Result<Vec<CellPlan>, ScenarioError> {
    if !study.origin_of("patterns").starts_with("default") {
        return Ok(Vec::new());
    }
    let patterns = listed_patterns(study, "job_patterns")?;
    if let Some(other) = patterns.iter().find(|p| !p.is_job()) {
        return Err(ScenarioError::Invalid {
            origin: study.origin_of("job_patterns"),
            detail: format!(
                "{other} is not a job pattern ({})",
                Pattern::names_where(Pattern::is_job)
            ),
        });
    }
    at_middle_clients(study, combos, &patterns, |_| {})
}

/// The commbench patterns named by a list field (`none` or absent: no pattern).
fn listed_patterns(
    study: &RawScenario,
    field: &'static str,
) -> Result<Vec<Pattern>, ScenarioError> {
    let names = study.values_of(field).unwrap_or_default();
    let invalid = |detail: String| ScenarioError::Invalid {
        origin: study.origin_of(field),
        detail,
    };
    let patterns = names
        .iter()
        .filter(|p| p.as_str() != "none")
        .map(|p| Pattern::from_str(p).map_err(invalid))
        .collect::<Result<Vec<_>, _>>()?;
    match patterns.iter().find(|p| p.is_generic()) {
        Some(generic) => Err(invalid(format!(
            "{generic} measures someone else's server; this part of the study runs commbench's own"
        ))),
        None => Ok(patterns),
    }
}

/// `patterns` once more at the study's middle client count — pollers at the middle interval, the
/// others at the first — with `adjust` applied to each combination's settings.
fn at_middle_clients(
    study: &RawScenario,
    combos: &[RawScenario],
    patterns: &[Pattern],
    adjust: impl Fn(&mut RawScenario),
) -> Result<Vec<CellPlan>, ScenarioError> {
    if patterns.is_empty() {
        return Ok(Vec::new());
    }
    let middle = |field: &'static str| {
        let mut values = study.values_of(field).unwrap_or_default();
        values.dedup();
        values.get(values.len() / 2).cloned()
    };
    let (mid_clients, mid_interval) = (middle("clients"), middle("interval"));
    let first_interval = study
        .values_of("interval")
        .unwrap_or_default()
        .first()
        .cloned();
    let mut plans = Vec::new();
    for combo in combos {
        if mid_clients.is_some() && combo.text_of("clients") != mid_clients.as_deref() {
            continue;
        }
        let mut adjusted = combo.clone();
        adjust(&mut adjusted);
        let scenario = Arc::new(adjusted.validate()?);
        for pattern in patterns {
            let interval = if pattern.polls_on_interval() {
                &mid_interval
            } else {
                &first_interval
            };
            if interval.is_none() || combo.text_of("interval") == interval.as_deref() {
                plans.push(CellPlan {
                    pattern: *pattern,
                    scenario: scenario.clone(),
                });
            }
        }
    }
    Ok(plans)
}

/// `--peers`: each peer's cells beside commbench's — every in-process, single-server cell of
/// `plans` whose pattern the peer's profile describes, against the peer started from its profile
/// — plus notes on what was left out (a peer that cannot start here, patterns it does not
/// describe). At each client count a peer's cells follow commbench's.
pub fn with_peers(
    study: &RawScenario,
    mut plans: Vec<CellPlan>,
) -> Result<(Vec<CellPlan>, Vec<String>), ScenarioError> {
    let names: Vec<String> = study
        .values_of("peers")
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p != "none")
        .collect();
    let invalid = |detail: String| ScenarioError::Invalid {
        origin: study.origin_of("peers"),
        detail,
    };
    if names.is_empty() {
        return Ok((plans, Vec::new()));
    }
    if study.validate_first()?.target.is_some() {
        return Err(invalid(
            "sets peers beside commbench's own server; without --target".into(),
        ));
    }
    let mut notes = Vec::new();
    let mut added = Vec::new();
    for name in &names {
        let path = peer_profile(name).ok_or_else(|| {
            invalid(format!(
                "no peer `{name}`: expected peers/{name}/profile.toml or a profile's path"
            ))
        })?;
        let profile = Arc::new(Profile::load(&path).map_err(|e| invalid(e.to_string()))?);
        if let Some(missing) = profile.missing() {
            notes.push(format!(
                "the {} peer's cells were left out: {missing}",
                profile.name
            ));
            continue;
        }
        let mut undescribed: Vec<Pattern> = Vec::new();
        for plan in &plans {
            let scenario = &plan.scenario;
            if scenario.bus != BusKind::Memory || scenario.instances > 1 || plan.pattern.is_job() {
                continue;
            }
            if profile.spec(plan.pattern).is_none() {
                undescribed.push(plan.pattern);
                continue;
            }
            let scenario = Scenario {
                profile: Some(profile.clone()),
                ..Scenario::clone(scenario)
            };
            added.push(CellPlan {
                pattern: plan.pattern,
                scenario: Arc::new(scenario),
            });
        }
        undescribed.sort();
        undescribed.dedup();
        if !undescribed.is_empty() {
            let names: Vec<&str> = undescribed.iter().map(|p| p.as_str()).collect();
            notes.push(format!(
                "the {} peer's profile does not describe {}: those cells are commbench's only",
                profile.name,
                names.join(", ")
            ));
        }
    }
    plans.extend(added);
    plans.sort_by_key(|plan| plan.scenario.clients);
    Ok((plans, notes))
}

/// A peer's profile: a path to a `.toml`, or `peers/{name}/profile.toml` from the current
/// directory or this source tree.
fn peer_profile(name: &str) -> Option<PathBuf> {
    if name.ends_with(".toml") {
        return Some(PathBuf::from(name));
    }
    let relative = Path::new("peers").join(name).join("profile.toml");
    let in_tree = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(&relative);
    [relative, in_tree].into_iter().find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(plans: &[CellPlan], pattern: Pattern) -> usize {
        plans.iter().filter(|p| p.pattern == pattern).count()
    }

    #[test]
    fn default_study_sweeps_clients_and_poll_intervals() {
        let plans = plans(&with_defaults(RawScenario::default(), false)).unwrap();
        // 3 client counts × (3 short-poll intervals + graphql-poll at 1s + 6 other patterns), plus
        // 4 patterns on Redis, the 4 job patterns at 1000 clients, and the broker comparison's
        // 6 patterns on each of 3 brokers less the 4 Redis cells already there.
        assert_eq!(plans.len(), 38 + 14);
        let jobs: Vec<_> = plans
            .iter()
            .filter(|p| p.pattern.is_job() && p.scenario.bus == BusKind::Memory)
            .collect();
        assert_eq!(jobs.len(), 4);
        assert!(jobs.iter().all(|p| p.scenario.clients == 1000));
        // 9 in-process, 1 on each broker.
        assert_eq!(count(&plans, Pattern::ShortPoll), 12);
        assert_eq!(count(&plans, Pattern::Sse), 6);
        assert_eq!(count(&plans, Pattern::GraphqlSub), 3);
        assert_eq!(count(&plans, Pattern::SocketIo), 3);
        assert_eq!(count(&plans, Pattern::GraphqlPoll), 3);
        assert!(plans
            .iter()
            .filter(|p| p.pattern == Pattern::GraphqlPoll)
            .all(|p| p.scenario.interval == std::time::Duration::from_secs(1)));
        assert!(plans
            .windows(2)
            .all(|w| w[0].scenario.clients <= w[1].scenario.clients));
    }

    #[test]
    fn quick_study_is_smaller() {
        let plans = plans(&with_defaults(RawScenario::default(), true)).unwrap();
        // 2 client counts × (2 short-poll intervals + graphql-poll at 1s + 6 other patterns), plus
        // the 4 Redis cells, the 4 job cells and the 14 more of the broker comparison.
        assert_eq!(plans.len(), 26 + 14);
        let on_brokers = plans.iter().filter(|p| p.scenario.bus.is_broker());
        assert!(on_brokers
            .into_iter()
            .all(|p| p.scenario.duration.as_secs() == 2));
    }

    fn on(plans: &[CellPlan], bus: BusKind) -> Vec<&CellPlan> {
        plans.iter().filter(|p| p.scenario.bus == bus).collect()
    }

    #[test]
    fn the_broker_comparison_runs_the_same_cells_on_every_broker_in_a_short_window() {
        let plans = plans(&with_defaults(RawScenario::default(), false)).unwrap();
        let names = |bus| -> Vec<Pattern> { on(&plans, bus).iter().map(|p| p.pattern).collect() };
        let expected = [
            Pattern::Sse,
            Pattern::Ws,
            Pattern::LongPoll,
            Pattern::ShortPoll,
            Pattern::JobLongPoll,
            Pattern::JobWs,
        ];
        for broker in BusKind::BROKERS {
            let mut got = names(broker);
            got.sort();
            let mut want = expected.to_vec();
            want.sort();
            assert_eq!(got, want, "{broker}");
            for plan in on(&plans, broker) {
                let s = &plan.scenario;
                assert_eq!((s.clients, s.instances), (1000, 2), "{broker}");
                assert_eq!(s.duration, std::time::Duration::from_secs(3));
                assert_eq!(s.warmup, std::time::Duration::from_secs(1));
            }
        }
        let mut given = RawScenario::default();
        given.set_flag("brokers", "kafka");
        given.set_flag("broker_patterns", "ws");
        given.set_flag("bus_patterns", "none");
        let study = with_defaults(given, true);
        let plans = super::plans(&study).unwrap();
        assert_eq!(on(&plans, BusKind::Kafka).len(), 1);
        assert!(on(&plans, BusKind::Redis).is_empty() && on(&plans, BusKind::RabbitMq).is_empty());
        assert_eq!(private_brokers(&study).unwrap(), [BusKind::Kafka]);
        let mut left = study.clone();
        leave_out(&mut left, BusKind::Kafka);
        assert!(private_brokers(&left).unwrap().is_empty());
        let mut given = RawScenario::default();
        given.set_flag("brokers", "redis,memory");
        let err = super::plans(&with_defaults(given, true))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--brokers") && err.contains("in-process"),
            "{err}"
        );
        let mut given = RawScenario::default();
        given.set_flag("broker_duration", "forever");
        let err = super::plans(&with_defaults(given, true))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--broker-duration"), "{err}");
    }

    /// The Redis comparison's cells (the broker comparison left out).
    fn on_redis(plans: &[CellPlan]) -> Vec<&CellPlan> {
        plans
            .iter()
            .filter(|p| p.scenario.bus == BusKind::Redis)
            .collect()
    }

    fn without_brokers(mut given: RawScenario) -> RawScenario {
        given.set_flag("brokers", "none");
        given
    }

    #[test]
    fn the_bus_comparison_repeats_some_patterns_on_redis_at_the_middle_client_count() {
        let plans = plans(&with_defaults(
            without_brokers(RawScenario::default()),
            false,
        ))
        .unwrap();
        let redis = on_redis(&plans);
        let names: Vec<_> = redis.iter().map(|p| p.pattern).collect();
        assert_eq!(
            names,
            [
                Pattern::Sse,
                Pattern::Ws,
                Pattern::LongPoll,
                Pattern::ShortPoll
            ]
        );
        assert!(redis
            .iter()
            .all(|p| p.scenario.clients == 1000 && p.scenario.instances == 2));
        let short = redis[3];
        assert_eq!(short.scenario.interval, std::time::Duration::from_secs(1));
        // Each Redis cell directly follows the in-process cells of its client count.
        let last_memory_1000 = plans.iter().rposition(|p| {
            p.scenario.clients == 1000 && p.scenario.bus == BusKind::Memory && !p.pattern.is_job()
        });
        let first_redis = plans.iter().position(|p| p.scenario.bus == BusKind::Redis);
        assert!(last_memory_1000 < first_redis);
    }

    #[test]
    fn the_bus_comparison_can_be_left_out_or_widened() {
        let mut given = without_brokers(RawScenario::default());
        given.set_flag("bus_patterns", "none");
        assert!(on_redis(&plans(&with_defaults(given, false)).unwrap()).is_empty());
        let mut given = without_brokers(RawScenario::default());
        given.set_flag("bus_patterns", "sse");
        given.set_flag("bus_instances", "1,3");
        let plans = plans(&with_defaults(given, true)).unwrap();
        let counts: Vec<_> = on_redis(&plans)
            .iter()
            .map(|p| p.scenario.instances)
            .collect();
        assert_eq!(counts, [1, 3]);
        let mut given = RawScenario::default();
        given.set_flag("bus_patterns", "sse-url");
        let err = super::plans(&with_defaults(given, false))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--bus-patterns"), "{err}");
    }

    #[test]
    fn graphql_poll_sweeps_intervals_without_short_poll() {
        let mut given = RawScenario::default();
        given.set_flag("patterns", "graphql-poll,graphql-sub");
        given.set_flag("clients", "10");
        let plans = plans(&with_defaults(given, false)).unwrap();
        assert_eq!(count(&plans, Pattern::GraphqlPoll), 3);
        assert_eq!(count(&plans, Pattern::GraphqlSub), 1);
    }

    #[test]
    fn flags_replace_swept_lists() {
        let mut given = RawScenario::default();
        given.set_flag("patterns", "sse,ws");
        given.set_flag("clients", "10,20");
        given.set_flag("payload", "64,1KiB");
        let plans = plans(&with_defaults(given, false)).unwrap();
        // Plus sse and ws on each broker at the middle client count (20), per payload; no job
        // patterns, since the study names its own.
        assert_eq!(plans.len(), 2 * 2 * 2 + 3 * 2 * 2);
        assert!(plans.iter().any(|p| p.scenario.payload == 1024));
    }

    #[test]
    fn peers_repeat_the_cells_their_profile_describes() {
        let mut given = RawScenario::default();
        given.set_flag("peers", "node");
        given.set_flag("job_patterns", "none");
        let study = with_defaults(given, true);
        let main = plans(&study).unwrap();
        let (all, notes) = with_peers(&study, main.clone()).unwrap();
        let node: Vec<&CellPlan> = all
            .iter()
            .filter(|p| p.scenario.target_name(p.pattern) == "node")
            .collect();
        if notes.iter().any(|n| n.contains("left out")) {
            // node is not installed here: only the note.
            assert!(node.is_empty(), "{notes:?}");
            return;
        }
        // rr ×2, short-poll ×4, long-poll, sse, ws, socketio ×2 each; no GraphQL, no Redis cells.
        assert_eq!(node.len(), 2 + 4 + 2 * 4, "{notes:?}");
        assert!(node.iter().all(|p| p.scenario.bus == BusKind::Memory));
        assert_eq!(all.len(), main.len() + node.len());
        assert!(notes[0].contains("graphql-poll, graphql-sub"), "{notes:?}");
        // At each client count the peer's cells follow commbench's.
        let first_node = all
            .iter()
            .position(|p| p.scenario.target_name(p.pattern) == "node")
            .unwrap();
        assert_eq!(all[first_node].scenario.clients, 100);
        assert!(all[first_node - 1].scenario.clients == 100);
        let mut given = RawScenario::default();
        given.set_flag("peers", "carrier-pigeon");
        let err = with_peers(&with_defaults(given.clone(), true), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--peers") && err.contains("no peer `carrier-pigeon`"),
            "{err}"
        );
    }

    #[test]
    fn a_peer_that_cannot_start_here_is_left_out_with_the_install_command() {
        let path = std::env::temp_dir().join(format!("commbench-peer-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "name = \"ghost\"\n[start]\ncommand = [\"no-such-server-cb\"]\n\
             ready_line = \"up {base_url}\"\ninstall = \"scripts/install-ghost.sh\"\n\
             [patterns.sse]\nurl = \"/s\"\n",
        )
        .unwrap();
        let mut given = RawScenario::default();
        given.set_flag("peers", path.display().to_string());
        given.set_flag("patterns", "sse");
        let study = with_defaults(given, true);
        let main = plans(&study).unwrap();
        let (all, notes) = with_peers(&study, main.clone()).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(all.len(), main.len());
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("the ghost peer's cells were left out")
                && notes[0].contains("`no-such-server-cb` is not installed")
                && notes[0].contains("scripts/install-ghost.sh"),
            "{notes:?}"
        );
    }

    #[test]
    fn a_bad_list_element_is_named() {
        let mut given = RawScenario::default();
        given.set_flag("clients", "10,lots");
        let err = plans(&with_defaults(given, false)).unwrap_err().to_string();
        assert!(err.contains("--clients") && err.contains("lots"), "{err}");
    }
}
