//! Rule evaluation, pure: given a rule, its state and one observation (a
//! price, or a portfolio value), the next state and whether it fires.
//!
//! A rule fires when its condition *becomes* true (it was false at the
//! previous observation), and not within `cooldown` of its last firing. A
//! crossing inside the cooldown is remembered as "true", so firing again
//! takes a fresh crossing after the cooldown.

use chrono::{DateTime, Utc};
use lizards_shared::accounts::{RuleKind, RuleSpec, RuleState};

/// One thing to compare a rule with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// The price, or the portfolio's value.
    pub value: f64,
    /// Source time of the quote behind it.
    pub at: DateTime<Utc>,
    /// For windowed `change_pct` rules: the price `window` minutes before
    /// (`None` when history does not reach back that far).
    pub reference: Option<f64>,
}

/// What firing reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Firing {
    pub value: f64,
    pub change_pct: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub state: RuleState,
    pub fired: Option<Firing>,
}

/// The state of a new (or changed) rule given the current price or
/// portfolio value, if any.
pub fn initial_state(spec: &RuleSpec, current: Option<f64>, _now: DateTime<Utc>) -> RuleState {
    let current = current.filter(|v| v.is_finite() && *v > 0.0);
    let (active, baseline) = match spec.kind {
        RuleKind::Above | RuleKind::Below => (current.map(|v| holds(spec, v, None).0), None),
        RuleKind::ChangePct if spec.window_minutes.is_some() => (None, None),
        RuleKind::ChangePct | RuleKind::PortfolioChangePct => (current.map(|_| false), current),
    };
    RuleState { active, baseline, observed_at: None, last_fired_at: None, version: 0 }
}

/// Whether the condition holds for `value`, and the change it measured.
fn holds(spec: &RuleSpec, value: f64, base: Option<f64>) -> (bool, Option<f64>) {
    match spec.kind {
        RuleKind::Above => (value > spec.threshold, None),
        RuleKind::Below => (value < spec.threshold, None),
        RuleKind::ChangePct | RuleKind::PortfolioChangePct => {
            let Some(base) = base.filter(|b| *b > 0.0) else { return (false, None) };
            let pct = (value - base) / base * 100.0;
            let reached = if spec.threshold > 0.0 { pct >= spec.threshold } else { pct <= spec.threshold };
            (reached, Some(pct))
        }
    }
}

/// The next state after `observation` at wall-clock `now`; `None` when the
/// observation is older than one already evaluated (redelivered or out of
/// order) and changes nothing.
pub fn evaluate(spec: &RuleSpec, state: &RuleState, observation: Observation, now: DateTime<Utc>) -> Option<Outcome> {
    if state.observed_at.is_some_and(|seen| observation.at <= seen) || !observation.value.is_finite() {
        return None;
    }
    let windowed = spec.kind == RuleKind::ChangePct && spec.window_minutes.is_some();
    let base = if windowed { observation.reference } else { state.baseline };
    let mut next = RuleState { observed_at: Some(observation.at), ..state.clone() };
    let baseless = matches!(spec.kind, RuleKind::ChangePct | RuleKind::PortfolioChangePct) && !windowed;
    if baseless && base.is_none_or(|b| b <= 0.0) {
        // The first price (or first non-empty portfolio) becomes the baseline.
        next.baseline = (observation.value > 0.0).then_some(observation.value);
        next.active = Some(false);
        return Some(Outcome { state: next, fired: None });
    }
    let (condition, change_pct) = holds(spec, observation.value, base);
    let crossed = condition && state.active == Some(false);
    let cooling =
        state.last_fired_at.is_some_and(|fired| now < fired + chrono::Duration::seconds(i64::from(spec.cooldown)));
    next.active = Some(condition);
    if !crossed || cooling {
        return Some(Outcome { state: next, fired: None });
    }
    next.last_fired_at = Some(now);
    if baseless {
        // Further moves are measured from here, so the condition is false again.
        next.baseline = Some(observation.value);
        next.active = Some(false);
    }
    Some(Outcome { state: next, fired: Some(Firing { value: observation.value, change_pct }) })
}

/// The alert's text, e.g. "AAPL rose above 150: now 151.2".
pub fn message(spec: &RuleSpec, firing: &Firing) -> String {
    let symbol = spec.symbol.as_ref().map_or("portfolio", |s| s.as_str());
    let pct = firing.change_pct.unwrap_or_default();
    let now = readable(firing.value);
    match spec.kind {
        RuleKind::Above => format!("{symbol} rose above {}: now {now}", spec.threshold),
        RuleKind::Below => format!("{symbol} fell below {}: now {now}", spec.threshold),
        RuleKind::ChangePct => match spec.window_minutes {
            Some(window) => format!("{symbol} moved {pct:+.2}% in {window} min: now {now}"),
            None => format!("{symbol} moved {pct:+.2}%: now {now}"),
        },
        RuleKind::PortfolioChangePct => format!("Your portfolio moved {pct:+.2}%: now {:.2} USD", firing.value),
    }
}

/// A price as people read it: four decimals (eight below 1), without
/// trailing zeros; `413.4095917438002` is `413.4096`.
fn readable(price: f64) -> String {
    let text = if price.abs() >= 1.0 { format!("{price:.4}") } else { format!("{price:.8}") };
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use lizards_shared::{Symbol, accounts::Channel};

    use super::*;

    fn spec(kind: RuleKind, threshold: f64) -> RuleSpec {
        RuleSpec {
            symbol: Some(Symbol::parse("AAPL").unwrap()),
            kind,
            threshold,
            window_minutes: None,
            cooldown: 900,
            channels: vec![Channel::Ws],
        }
    }

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    /// Feeds `prices` one second apart; the seconds at which the rule fired.
    fn run(spec: &RuleSpec, start: Option<f64>, prices: &[(i64, f64)]) -> Vec<i64> {
        let mut state = initial_state(spec, start, t(0));
        let mut fired = Vec::new();
        for &(second, price) in prices {
            let observation = Observation { value: price, at: t(second), reference: None };
            if let Some(outcome) = evaluate(spec, &state, observation, t(second)) {
                if outcome.fired.is_some() {
                    fired.push(second);
                }
                state = outcome.state;
            }
        }
        fired
    }

    #[test]
    fn above_fires_once_on_the_crossing_not_on_every_tick() {
        let rule = spec(RuleKind::Above, 150.0);
        assert_eq!(run(&rule, Some(140.0), &[(1, 149.0), (2, 151.0), (3, 152.0), (4, 155.0)]), [2]);
    }

    #[test]
    fn a_second_crossing_inside_the_cooldown_does_not_fire_but_one_after_it_does() {
        let rule = spec(RuleKind::Above, 150.0);
        let prices = [(1, 151.0), (2, 149.0), (3, 151.0), (950, 149.0), (951, 151.0)];
        assert_eq!(run(&rule, Some(140.0), &prices), [1, 951]);
    }

    #[test]
    fn a_condition_already_true_at_creation_waits_for_a_fresh_crossing() {
        let rule = spec(RuleKind::Below, 100.0);
        assert_eq!(run(&rule, Some(90.0), &[(1, 80.0), (2, 101.0), (3, 99.0)]), [3]);
        assert_eq!(run(&rule, None, &[(1, 80.0), (2, 101.0), (3, 99.0)]), [3], "first quote only observes");
    }

    #[test]
    fn change_pct_measures_from_the_baseline_and_restarts_there_after_firing() {
        let up = spec(RuleKind::ChangePct, 5.0);
        assert_eq!(run(&up, Some(100.0), &[(1, 104.0), (2, 105.0), (3, 106.0), (1000, 110.3)]), [2, 1000]);
        let down = spec(RuleKind::ChangePct, -10.0);
        assert_eq!(run(&down, None, &[(1, 100.0), (2, 95.0), (3, 89.0)]), [3], "first quote is the baseline");
    }

    #[test]
    fn windowed_change_pct_compares_with_the_reference_price() {
        let rule = RuleSpec { window_minutes: Some(5), ..spec(RuleKind::ChangePct, 2.0) };
        let mut state = initial_state(&rule, Some(100.0), t(0));
        let observe = |state: &RuleState, second, value, reference| {
            evaluate(&rule, state, Observation { value, at: t(second), reference }, t(second)).unwrap()
        };
        let outcome = observe(&state, 1, 101.0, Some(100.0));
        assert_eq!(outcome.fired, None);
        state = outcome.state;
        let outcome = observe(&state, 2, 103.0, Some(100.0));
        assert_eq!(outcome.fired.map(|f| f.change_pct.unwrap().round()), Some(3.0));
        assert_eq!(observe(&outcome.state, 3, 90.0, None).fired, None, "no history that far back");
    }

    #[test]
    fn old_or_redelivered_observations_change_nothing() {
        let rule = spec(RuleKind::Above, 150.0);
        let state = RuleState { observed_at: Some(t(10)), active: Some(false), ..RuleState::default() };
        let old = Observation { value: 200.0, at: t(10), reference: None };
        assert_eq!(evaluate(&rule, &state, old, t(11)), None);
    }

    #[test]
    fn messages_say_what_happened() {
        let firing = Firing { value: 151.5, change_pct: None };
        assert_eq!(message(&spec(RuleKind::Above, 150.0), &firing), "AAPL rose above 150: now 151.5");
        let moved = Firing { value: 95.0, change_pct: Some(-5.0) };
        assert_eq!(message(&spec(RuleKind::ChangePct, -5.0), &moved), "AAPL moved -5.00%: now 95");
        let long = Firing { value: 413.4095917438002, change_pct: Some(0.02) };
        assert_eq!(message(&spec(RuleKind::ChangePct, 0.01), &long), "AAPL moved +0.02%: now 413.4096");
        let small = Firing { value: 0.000123456789, change_pct: Some(1.0) };
        assert_eq!(message(&spec(RuleKind::ChangePct, 1.0), &small), "AAPL moved +1.00%: now 0.00012346");
    }
}
