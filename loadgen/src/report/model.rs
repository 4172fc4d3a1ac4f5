//! The analytic model of short and long polling, as pure functions of interval, event rate and RTT.

// Notation: `lambda` = events per second on one client's topic (publish rate / topics),
// `interval_s` = short-poll interval T, `timeout_s` = long-poll timeout τ, `rtt_ms` = one
// poll's round trip.

/// How the publisher spaces events (`arrival` in the scenario).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// One event every 1/λ seconds.
    Fixed,
    /// Exponential gaps with mean 1/λ.
    Poisson,
}

impl Arrival {
    /// Parses the scenario's `arrival` text; `None` when unknown.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "fixed" => Some(Arrival::Fixed),
            "poisson" => Some(Arrival::Poisson),
            _ => None,
        }
    }
}

/// Mean staleness of a short-polled event (ms): an event waits on average half an interval for
/// the next poll, then one round trip: `T/2 + RTT`.
pub fn short_poll_mean_staleness_ms(interval_s: f64, rtt_ms: f64) -> f64 {
    interval_s * 1000.0 / 2.0 + rtt_ms
}

/// The `q` quantile of short-poll staleness (ms): the wait for the next poll is uniform on
/// `[0, T)`, so `q·T + RTT` (p99 ≈ `0.99·T + RTT`).
pub fn short_poll_staleness_quantile_ms(q: f64, interval_s: f64, rtt_ms: f64) -> f64 {
    q * interval_s * 1000.0 + rtt_ms
}

/// Polls per delivered event (what `requests_per_event` measures: requests ÷ events received):
/// each client polls `1/T` times a second and receives `λ` events a second, so `1/(λT)`.
/// Below 1 when a poll carries several events (λT > 1); far above 1 when most polls come back
/// empty (λT ≪ 1). `None` when λT is not positive.
pub fn short_poll_requests_per_event(lambda: f64, interval_s: f64) -> Option<f64> {
    let per_poll = lambda * interval_s;
    (per_poll > 0.0 && per_poll.is_finite()).then(|| 1.0 / per_poll)
}

/// Fraction of short polls that find no new event. Poisson: `e^(−λT)`. Fixed arrivals with a
/// random poll phase: `max(0, 1 − λT)`.
pub fn short_poll_empty_fraction(lambda: f64, interval_s: f64, arrival: Arrival) -> f64 {
    let per_poll = (lambda * interval_s).max(0.0);
    match arrival {
        Arrival::Poisson => (-per_poll).exp(),
        Arrival::Fixed => (1.0 - per_poll).max(0.0),
    }
}

/// Fraction of long polls that time out empty. Poisson: `e^(−λτ)`; fixed: `max(0, 1 − λτ)`.
pub fn long_poll_timeout_fraction(lambda: f64, timeout_s: f64, arrival: Arrival) -> f64 {
    short_poll_empty_fraction(lambda, timeout_s, arrival)
}

/// Long polls per delivered event: every poll that does not time out returns at least one event,
/// so `1/(1 − timeout fraction)`, which tends to 1 when `λτ ≫ 1`. (Events that arrive while the
/// next poll is in flight share a response, so the measurement may fall slightly below.)
pub fn long_poll_requests_per_event(lambda: f64, timeout_s: f64, arrival: Arrival) -> Option<f64> {
    let answered = 1.0 - long_poll_timeout_fraction(lambda, timeout_s, arrival);
    (answered > 0.0).then(|| 1.0 / answered)
}

/// Bytes per delivered event of a polling pattern: every request costs `per_request` bytes (up
/// and down, headers and empty envelope), every event `per_event` bytes of body.
pub fn polling_bytes_per_event(requests_per_event: f64, per_request: f64, per_event: f64) -> f64 {
    requests_per_event * per_request + per_event
}

/// One polling cell's traffic, for [`fit_response_bytes`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrafficSample {
    pub requests: f64,
    pub events: f64,
    pub bytes_down: f64,
}

/// Response bytes split into a fixed part per response and a part per event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResponseBytes {
    /// Status line, headers and the JSON envelope of one (empty) response.
    pub per_response: f64,
    /// Bytes each event adds to a response body.
    pub per_event: f64,
    /// Cells the fit used.
    pub cells: usize,
}

/// Least-squares fit of `bytes_down = per_response·requests + per_event·events` over cells
/// (no intercept). Needs at least two cells with different requests-per-event ratios; `None`
/// when the system is degenerate or a coefficient comes out negative.
pub fn fit_response_bytes(samples: &[TrafficSample]) -> Option<ResponseBytes> {
    let (mut rr, mut re, mut ee, mut rb, mut eb) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for s in samples {
        rr += s.requests * s.requests;
        re += s.requests * s.events;
        ee += s.events * s.events;
        rb += s.requests * s.bytes_down;
        eb += s.events * s.bytes_down;
    }
    let det = rr * ee - re * re;
    // Relative test: collinear samples make det tiny compared with its terms.
    let degenerate = det.is_nan() || det <= 1e-9 * rr * ee;
    if samples.len() < 2 || degenerate {
        return None;
    }
    let per_response = (rb * ee - eb * re) / det;
    let per_event = (rr * eb - re * rb) / det;
    (per_response >= 0.0 && per_event >= 0.0).then_some(ResponseBytes {
        per_response,
        per_event,
        cells: samples.len(),
    })
}

/// Relative deviation of `measured` from `model`: `(measured − model) / model`; `None` when the
/// model is zero (see [`deviates`] for how fractions are judged).
pub fn relative_deviation(measured: f64, model: f64) -> Option<f64> {
    (model != 0.0 && model.is_finite() && measured.is_finite()).then(|| (measured - model) / model)
}

/// The tolerance beyond which a measurement is flagged as deviating from the model.
pub const TOLERANCE: f64 = 0.10;

/// How a quantity is compared with its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// Relative: |measured − model| / model.
    Relative,
    /// Absolute, for fractions in 0..=1: |measured − model| (percentage points).
    Absolute,
}

/// True when `measured` is further than [`TOLERANCE`] from `model` under `compare`.
pub fn deviates(measured: f64, model: f64, compare: Compare) -> bool {
    match compare {
        Compare::Absolute => (measured - model).abs() > TOLERANCE,
        Compare::Relative => match relative_deviation(measured, model) {
            Some(d) => d.abs() > TOLERANCE,
            None => measured.abs() > 0.0,
        },
    }
}

/// Ordinary least squares `y = slope·x + intercept` over `(x, y)` points, as `(slope, intercept)`;
/// `None` with fewer than two distinct x values. (Splits short-poll CPU per event into a part per
/// poll and a part per event.)
pub fn fit_line(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    if sxx <= 1e-12 * (1.0 + mean_x * mean_x) {
        return None;
    }
    let slope = sxy / sxx;
    Some((slope, mean_y - slope * mean_x))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * (1.0 + a.abs().max(b.abs()))
    }

    #[test]
    fn short_poll_staleness_is_half_an_interval_plus_a_round_trip() {
        assert!(close(short_poll_mean_staleness_ms(1.0, 2.0), 502.0));
        assert!(close(
            short_poll_staleness_quantile_ms(0.99, 1.0, 2.0),
            992.0
        ));
        assert!(close(
            short_poll_staleness_quantile_ms(0.99, 0.5, 0.0),
            495.0
        ));
    }

    #[test]
    fn short_poll_requests_per_event_is_one_over_lambda_t() {
        // 20 events/s, polled every 0.5 s: 10 events per poll.
        assert!(close(
            short_poll_requests_per_event(20.0, 0.5).unwrap(),
            0.1
        ));
        // 0.1 events/s polled every second: 10 polls per event.
        assert!(close(
            short_poll_requests_per_event(0.1, 1.0).unwrap(),
            10.0
        ));
        assert_eq!(short_poll_requests_per_event(0.0, 1.0), None);
    }

    #[test]
    fn empty_polls_depend_on_arrivals() {
        assert!(close(
            short_poll_empty_fraction(1.0, 1.0, Arrival::Poisson),
            (-1.0_f64).exp()
        ));
        assert!(close(
            short_poll_empty_fraction(0.25, 1.0, Arrival::Fixed),
            0.75
        ));
        assert_eq!(short_poll_empty_fraction(20.0, 0.5, Arrival::Fixed), 0.0);
        assert!(short_poll_empty_fraction(20.0, 0.5, Arrival::Poisson) < 1e-4);
    }

    #[test]
    fn long_polls_answer_about_once_per_event() {
        let busy = long_poll_requests_per_event(20.0, 30.0, Arrival::Poisson).unwrap();
        assert!(close(busy, 1.0));
        // One event a minute, 30 s timeout, fixed arrivals: two polls per event.
        let quiet = long_poll_requests_per_event(1.0 / 60.0, 30.0, Arrival::Fixed).unwrap();
        assert!(close(quiet, 2.0));
        let poisson = long_poll_requests_per_event(1.0 / 30.0, 30.0, Arrival::Poisson).unwrap();
        assert!(close(poisson, 1.0 / (1.0 - (-1.0_f64).exp())));
        assert_eq!(
            long_poll_requests_per_event(0.0, 30.0, Arrival::Fixed),
            None
        );
    }

    #[test]
    fn response_bytes_are_recovered_from_two_cells() {
        // 180 B per response, 170 B per event.
        let cell = |requests: f64, events: f64| TrafficSample {
            requests,
            events,
            bytes_down: 180.0 * requests + 170.0 * events,
        };
        let fit = fit_response_bytes(&[cell(300.0, 3000.0), cell(3000.0, 3000.0)]).unwrap();
        assert!(close(fit.per_response, 180.0), "{fit:?}");
        assert!(close(fit.per_event, 170.0), "{fit:?}");
        assert_eq!(fit.cells, 2);
        // One cell, or cells with the same ratio, cannot separate the two.
        assert_eq!(fit_response_bytes(&[cell(300.0, 3000.0)]), None);
        assert_eq!(
            fit_response_bytes(&[cell(300.0, 3000.0), cell(600.0, 6000.0)]),
            None
        );
        assert!(close(polling_bytes_per_event(0.1, 245.0, 170.0), 194.5));
    }

    #[test]
    fn deviations_flag_beyond_ten_percent() {
        assert!(close(relative_deviation(110.0, 100.0).unwrap(), 0.1));
        assert_eq!(relative_deviation(1.0, 0.0), None);
        assert!(!deviates(109.0, 100.0, Compare::Relative));
        assert!(deviates(111.0, 100.0, Compare::Relative));
        assert!(deviates(0.5, 0.0, Compare::Relative));
        assert!(!deviates(0.0, 0.0, Compare::Relative));
        assert!(!deviates(0.15, 0.08, Compare::Absolute));
        assert!(deviates(0.25, 0.08, Compare::Absolute));
        assert_eq!(Arrival::parse("Poisson"), Some(Arrival::Poisson));
        assert_eq!(Arrival::parse("burst"), None);
    }

    #[test]
    fn lines_fit_least_squares() {
        let (slope, intercept) = fit_line(&[(0.1, 30.0), (1.0, 120.0), (2.0, 220.0)]).unwrap();
        assert!((slope - 100.0).abs() < 1.0, "{slope}");
        assert!((intercept - 20.0).abs() < 2.0, "{intercept}");
        assert_eq!(fit_line(&[(1.0, 2.0)]), None);
        assert_eq!(fit_line(&[(1.0, 2.0), (1.0, 3.0)]), None);
    }
}
