//! Consumes `alerts.eval` (every quote, competing consumers: each quote is
//! evaluated once whatever the number of providers) and evaluates the
//! rules about its symbol. Rule state lives in the SQL store and is saved
//! with compare-and-set, so two instances evaluating quotes of one symbol
//! at once never both fire a rule. Deliveries are acked after their rules'
//! states are saved; a database failure requeues them.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::Utc;
use lizards_shared::{
    Quote, Symbol,
    accounts::{
        AccountError, Alert, Channel, Delivery, DeliveryStatus, NewAlert, Rule, RuleId, RuleKind, RuleState, StateSave,
        UserId,
    },
    broker::{ALERTS_EVAL_QUEUE, Broker, ConsumeOptions, Consumer, Delivery as Message, consume_retrying},
    cache::{Cache, Quota},
    quote::decode_message,
    retry::Backoff,
    shutdown::Shutdown,
};
use rust_decimal::prelude::ToPrimitive;

use super::{
    Interest,
    eval::{self, Observation},
};
use crate::{accounts::Accounts, metrics::Metrics};

/// Deliveries taken (and acked) at once. Larger batches read and write
/// rules less often per quote: 256 → 1024 took ten flapping rules per
/// symbol from 959 to 1,856 quotes/s on PostgreSQL (docs/benchmarks.md).
const PREFETCH: u16 = 1024;
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Times a rule is re-read and re-evaluated after losing a compare-and-set.
const CONFLICT_RETRIES: usize = 3;

#[derive(Clone)]
pub struct Evaluator {
    pub broker: Arc<dyn Broker>,
    pub accounts: Arc<Accounts>,
    pub interest: Arc<Interest>,
    pub metrics: Metrics,
    /// Counts each user's notified alerts against `user_quota`, across
    /// instances when it is Redis.
    pub cache: Arc<dyn Cache>,
    pub user_quota: Quota,
}

impl Evaluator {
    pub async fn run(self, shutdown: Shutdown) {
        let Some(mut consumer) = consume_retrying(
            self.broker.as_ref(),
            ALERTS_EVAL_QUEUE,
            ConsumeOptions { prefetch: PREFETCH, no_ack: false },
            &shutdown,
        )
        .await
        else {
            return;
        };
        let mut backoff = Backoff::new(Duration::from_millis(100), MAX_BACKOFF);
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                delivery = consumer.next() => match delivery {
                    Some(delivery) => delivery,
                    None => break,
                },
            };
            let batch = take_ready(first, consumer.as_mut());
            if self.handle(batch).await {
                backoff.reset();
            } else if !backoff.wait(&shutdown).await {
                break;
            }
        }
        consumer.cancel().await;
        tracing::info!("alert evaluator stopped");
    }

    /// Evaluates a batch and acks it; on a database failure, requeues it
    /// all (`false`).
    async fn handle(&self, batch: Vec<Message>) -> bool {
        let taken = batch.len() as u64;
        let started = std::time::Instant::now();
        let ok = self.evaluate_batch(batch).await;
        // Busy time: quotes over its sum is what the evaluator could take.
        self.metrics.alert_batch_duration.observe(started.elapsed().as_secs_f64());
        // Counted once evaluated, so "consumed" means "its rules are saved".
        self.metrics.consumed.with_label_values(&[ALERTS_EVAL_QUEUE]).inc_by(taken);
        self.metrics.ops.operations.with_label_values(&["message"]).inc_by(taken);
        ok
    }

    async fn evaluate_batch(&self, batch: Vec<Message>) -> bool {
        let quotes: Vec<Quote> = batch
            .iter()
            .flat_map(|delivery| match decode_message(&delivery.body) {
                // The persistence queue dead-letters what cannot be read.
                Ok(decoded) => decoded.quotes,
                Err(error) => {
                    tracing::debug!(%error, "undecodable message skipped by the alert evaluator");
                    Vec::new()
                }
            })
            .filter(|quote| self.interest.contains(&quote.symbol))
            .collect();
        if let Err(error) = self.evaluate(&quotes).await {
            // Rules saved before the failure skip these quotes when they
            // come back: each rule ignores quotes older than it has seen.
            tracing::warn!(%error, "alert evaluation failed; quotes requeued");
            self.metrics.alert_evaluations.with_label_values(&["failed"]).inc();
            for delivery in batch {
                let _ = delivery.nack(true).await;
            }
            return false;
        }
        if let Some(last) = batch.into_iter().next_back()
            && let Err(error) = last.ack_through().await
        {
            tracing::warn!(%error, "ack failed; the quotes will be evaluated again (old ones change nothing)");
        }
        true
    }

    /// Evaluates a batch of quotes: the rules about each symbol are read
    /// once per batch and run over that symbol's quotes in order. An alert
    /// is stored with its rule's state as it fires; the other changed
    /// states of the batch are written together in one transaction. (A
    /// write per rule per quote limited the evaluator to ~100 quotes/s with
    /// ten flapping rules per symbol on PostgreSQL; docs/benchmarks.md.)
    async fn evaluate(&self, quotes: &[Quote]) -> Result<(), AccountError> {
        let work = self.rules_with_quotes(quotes).await?;
        let mut changed = Vec::new();
        let mut moved_on = Vec::new();
        for (rule, of_rule) in &work {
            match self.run_rule(&mut rule.clone(), of_rule).await {
                Ok(Some(save)) => changed.push(save),
                Ok(None) => {}
                Err(AccountError::Conflict) => moved_on.push(rule.id),
                Err(error) => return Err(error),
            }
        }
        if !changed.is_empty() {
            let lost = self.accounts.store.save_states(&changed).await?;
            let saved = (changed.len() - lost.len()) as u64;
            self.metrics.alert_evaluations.with_label_values(&["changed"]).inc_by(saved);
            moved_on.extend(lost);
        }
        // Another instance saved these first: run them again from what it
        // stored (quotes older than the rule has seen change nothing).
        for id in moved_on {
            if let Some((rule, of_rule)) = work.iter().find(|(rule, _)| rule.id == id) {
                self.rerun(rule, of_rule).await?;
            }
        }
        Ok(())
    }

    /// The rules each quoted symbol's quotes go through, with those quotes
    /// in batch order. Portfolio rules see the quotes of every symbol their
    /// owner holds.
    async fn rules_with_quotes<'q>(&self, quotes: &'q [Quote]) -> Result<Vec<(Rule, Vec<&'q Quote>)>, AccountError> {
        // Indexed, not searched: a batch holds PREFETCH messages of quotes and
        // may touch many symbols and many more rules.
        let mut by_symbol: HashMap<&Symbol, Vec<&Quote>> = HashMap::new();
        for quote in quotes {
            by_symbol.entry(&quote.symbol).or_default().push(quote);
        }
        let mut work: Vec<(Rule, Vec<&Quote>)> = Vec::new();
        let mut index: HashMap<RuleId, usize> = HashMap::new();
        for (symbol, of_symbol) in by_symbol {
            for rule in self.accounts.store.rules_for_quote(symbol).await? {
                match index.get(&rule.id) {
                    Some(&at) => work[at].1.extend(&of_symbol),
                    None => {
                        index.insert(rule.id, work.len());
                        work.push((rule, of_symbol.clone()));
                    }
                }
            }
        }
        for (_, of_rule) in &mut work {
            // Back in batch order (every quote is an element of one slice).
            of_rule.sort_by_key(|quote| std::ptr::from_ref::<Quote>(quote));
        }
        Ok(work)
    }

    /// Runs a rule again from its stored state and saves it on its own,
    /// a few times if other evaluators keep winning.
    async fn rerun(&self, rule: &Rule, quotes: &[&Quote]) -> Result<(), AccountError> {
        for _ in 0..CONFLICT_RETRIES {
            self.metrics.alert_evaluations.with_label_values(&["conflict"]).inc();
            let Some(mut fresh) = self.accounts.store.rule(rule.user_id, rule.id).await? else { return Ok(()) };
            match self.run_rule(&mut fresh, quotes).await {
                Ok(None) => return Ok(()),
                Ok(Some(save)) => match self.save(&mut fresh, &save.state, None).await {
                    Ok(_) => {
                        self.metrics.alert_evaluations.with_label_values(&["changed"]).inc();
                        return Ok(());
                    }
                    Err(AccountError::Conflict) => {}
                    Err(error) => return Err(error),
                },
                Err(AccountError::Conflict) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// One pass of a rule over its quotes. Alerts are stored as they fire
    /// (`rule.state` then follows what is stored, so a later conflict does
    /// not fire them twice); returns the final state to save, if it differs
    /// from the stored one in more than `observed_at`.
    async fn run_rule(&self, rule: &mut Rule, quotes: &[&Quote]) -> Result<Option<StateSave>, AccountError> {
        let mut state = rule.state.clone();
        for quote in quotes {
            let Some(observation) = self.observe(rule, quote).await? else { continue };
            let now = Utc::now();
            let Some(outcome) = eval::evaluate(&rule.spec, &state, observation, now) else { continue };
            state = outcome.state;
            let Some(firing) = outcome.fired else { continue };
            let alert = NewAlert {
                user_id: rule.user_id,
                rule_id: rule.id,
                symbol: rule.spec.symbol.clone(),
                kind: rule.spec.kind,
                threshold: rule.spec.threshold,
                price: Some(firing.value),
                change_pct: firing.change_pct,
                message: eval::message(&rule.spec, &firing),
                fired_at: now,
                channels: rule.spec.channels.clone(),
            };
            let stored = self.save(rule, &state, Some(&alert)).await?.ok_or(AccountError::Conflict)?;
            self.metrics.alert_evaluations.with_label_values(&["fired"]).inc();
            self.metrics.alerts_fired.with_label_values(&[stored.kind.as_str()]).inc();
            tracing::info!(user = %stored.user_id, rule = %rule.id, alert = %stored.id, message = %stored.message, "alert fired");
            if self.within_quota(stored.user_id).await {
                publish(&*self.broker, &self.accounts, &self.metrics, &stored).await;
            } else {
                self.suppress(&stored).await?;
            }
        }
        if state.active == rule.state.active && state.baseline == rule.state.baseline {
            self.metrics.alert_evaluations.with_label_values(&["unchanged"]).inc();
            return Ok(None);
        }
        Ok(Some(StateSave { rule: rule.id, expected_version: rule.state.version, state }))
    }

    /// Whether the user may be notified of one more alert now. A cache
    /// that cannot answer lets it through: a missed cap beats a missed alert.
    async fn within_quota(&self, user: UserId) -> bool {
        match self.cache.throttle(&format!("alerts:user:{user}"), self.user_quota, 1).await {
            Ok(throttle) => throttle.allowed,
            Err(error) => {
                tracing::warn!(%error, %user, "alert quota unknown (cache unreachable); notifying");
                self.metrics.errors.with_label_values(&["alert_quota"]).inc();
                true
            }
        }
    }

    /// Records an alert over its user's quota: kept, every delivery
    /// `suppressed`, and marked published so the outbox never sends it.
    async fn suppress(&self, alert: &Alert) -> Result<(), AccountError> {
        let reason = format!("over the user's quota of {} alerts", self.user_quota);
        for delivery in &alert.deliveries {
            let suppressed = Delivery {
                channel: delivery.channel,
                status: DeliveryStatus::Suppressed,
                attempts: 0,
                at: Utc::now(),
                error: Some(reason.clone()),
            };
            self.accounts.store.set_delivery(alert.id, &suppressed).await?;
        }
        self.accounts.store.mark_published(alert.id).await?;
        self.metrics.alert_evaluations.with_label_values(&["suppressed"]).inc();
        tracing::info!(user = %alert.user_id, alert = %alert.id, %reason, "alert suppressed");
        Ok(())
    }

    /// Saves `state` over `rule`'s stored version and moves `rule` to it.
    async fn save(
        &self,
        rule: &mut Rule,
        state: &RuleState,
        alert: Option<&NewAlert>,
    ) -> Result<Option<lizards_shared::accounts::Alert>, AccountError> {
        let stored = self.accounts.store.save_evaluation(rule.id, rule.state.version, state, alert).await?;
        rule.state = RuleState { version: rule.state.version + 1, ..state.clone() };
        Ok(stored)
    }

    /// What the rule compares with for this quote.
    async fn observe(&self, rule: &Rule, quote: &Quote) -> Result<Option<Observation>, AccountError> {
        if rule.spec.kind == RuleKind::PortfolioChangePct {
            return Ok(self.portfolio_value(rule, quote).await?.map(|value| Observation {
                value,
                at: quote.ts,
                reference: None,
            }));
        }
        let reference = match rule.spec.window_minutes {
            Some(minutes) => {
                let before = quote.ts - chrono::Duration::minutes(i64::from(minutes));
                match self.accounts.quotes.history(&quote.symbol, None, Some(before), 1).await {
                    Ok(quotes) => quotes.first().map(|q| q.price),
                    Err(error) => {
                        tracing::warn!(%error, "no history for a windowed change_pct rule");
                        None
                    }
                }
            }
            None => None,
        };
        Ok(Some(Observation { value: quote.price, at: quote.ts, reference }))
    }

    /// The user's cash plus positions, this quote's price for its symbol and
    /// the latest prices for the others.
    async fn portfolio_value(&self, rule: &Rule, quote: &Quote) -> Result<Option<f64>, AccountError> {
        let portfolio = self.accounts.store.portfolio(rule.user_id).await?;
        let mut value = portfolio.cash.to_f64().unwrap_or_default();
        for position in &portfolio.positions {
            let price = if position.symbol == quote.symbol {
                quote.price
            } else {
                match self.accounts.latest(&position.symbol).await {
                    Some(latest) => latest.price,
                    // Unknown value: better not to fire on a partial sum.
                    None => return Ok(None),
                }
            };
            value += position.quantity.to_f64().unwrap_or_default() * price;
        }
        Ok((value > 0.0).then_some(value))
    }
}

/// Whatever is ready now after `first`, up to the prefetch.
fn take_ready(first: Message, consumer: &mut dyn Consumer) -> Vec<Message> {
    let mut batch = vec![first];
    while batch.len() < usize::from(PREFETCH) {
        match consumer.try_next() {
            Some(delivery) => batch.push(delivery),
            None => break,
        }
    }
    batch
}

/// Publishes a stored alert and records it: published, and its `ws`
/// delivery sent (the frame goes to whichever of the user's sockets are
/// open). On failure the outbox publishes it later.
pub async fn publish(
    broker: &dyn Broker,
    accounts: &Accounts,
    metrics: &Metrics,
    alert: &lizards_shared::accounts::Alert,
) {
    if let Err(error) = super::publish(broker, alert).await {
        tracing::warn!(%error, alert = %alert.id, "alert not published yet; the outbox retries");
        metrics.errors.with_label_values(&["alert_publish"]).inc();
        return;
    }
    metrics.produced.with_label_values(&[lizards_shared::broker::ALERTS_EXCHANGE]).inc();
    let store = &accounts.store;
    let mut result = store.mark_published(alert.id).await;
    if result.is_ok() && alert.deliveries.iter().any(|d| d.channel == Channel::Ws) {
        let sent =
            Delivery { channel: Channel::Ws, status: DeliveryStatus::Sent, attempts: 1, at: Utc::now(), error: None };
        result = store.set_delivery(alert.id, &sent).await;
    }
    if let Err(error) = result {
        // Published twice at worst: the notifier skips channels already sent.
        tracing::warn!(%error, alert = %alert.id, "alert published but not marked");
    }
}
