//! `alerts`: your rules and recent alerts; `alerts add`, `alerts delete`.

use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use lizards_shared::Symbol;
use serde_json::{Value, json};

use super::{
    Client,
    api::ClientError,
    market::local_time,
    table::{Table, Tone, text},
};

#[derive(Debug, Clone, Subcommand)]
pub enum AlertsAction {
    /// Your rules and latest alerts (the default).
    List,
    /// Add a rule: `add AAPL above 150`, `add BTC-USD change -5 --window 60`,
    /// `add portfolio change 10`.
    Add {
        /// A symbol, or `portfolio` for the value of your portfolio.
        target: String,
        kind: Kind,
        /// A price for above/below, a signed percent for change.
        #[arg(allow_negative_numbers = true)]
        threshold: f64,
        /// For change: measured over this many minutes instead of since the
        /// rule was created or last fired.
        #[arg(long)]
        window: Option<u32>,
        /// Quiet time after firing (default 15m).
        #[arg(long, value_parser = humantime::parse_duration)]
        cooldown: Option<Duration>,
    },
    /// Delete a rule by its id (`alerts` lists them).
    Delete { id: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    Above,
    Below,
    #[value(alias = "change_pct")]
    Change,
}

/// The API's rule body for `target kind threshold`.
fn rule_body(target: &str, kind: Kind, threshold: f64) -> Result<Value, ClientError> {
    if target.eq_ignore_ascii_case("portfolio") {
        return match kind {
            Kind::Change => Ok(json!({ "kind": "portfolio_change_pct", "threshold": threshold })),
            _ => Err(ClientError::Input("a portfolio rule is `portfolio change <percent>`".into())),
        };
    }
    let symbol = Symbol::parse(target).map_err(|e| ClientError::Input(e.to_string()))?;
    let kind = match kind {
        Kind::Above => "above",
        Kind::Below => "below",
        Kind::Change => "change_pct",
    };
    Ok(json!({ "symbol": symbol, "kind": kind, "threshold": threshold }))
}

/// "AAPL above 150", "portfolio moves +10 %".
fn describe(rule: &Value) -> String {
    let threshold = rule["threshold"].as_f64().unwrap_or_default();
    let symbol = rule["symbol"].as_str().unwrap_or("portfolio");
    match rule["kind"].as_str().unwrap_or_default() {
        "above" => format!("{symbol} above {threshold}"),
        "below" => format!("{symbol} below {threshold}"),
        "portfolio_change_pct" => format!("portfolio moves {threshold:+} %"),
        _ => match rule["window"].as_u64() {
            Some(window) => format!("{symbol} moves {threshold:+} % within {window} min"),
            None => format!("{symbol} moves {threshold:+} %"),
        },
    }
}

impl Client {
    pub(super) async fn alerts(&self, action: AlertsAction) -> Result<(), ClientError> {
        match action {
            AlertsAction::List => self.list_alerts().await,
            AlertsAction::Add { target, kind, threshold, window, cooldown } => {
                let mut body = rule_body(&target, kind, threshold)?;
                if let Some(window) = window {
                    body["window"] = json!(window);
                }
                if let Some(cooldown) = cooldown {
                    body["cooldown"] = json!(cooldown.as_secs());
                }
                let rule = self.api.post("/alerts/rules", body, true).await?;
                println!("Created rule {}: {}.", text(&rule["id"]), describe(&rule));
                Ok(())
            }
            AlertsAction::Delete { id } => {
                let path = format!(
                    "/alerts/rules/{}",
                    percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC)
                );
                self.api.delete(&path).await?;
                println!("Deleted rule {id}.");
                Ok(())
            }
        }
    }

    async fn list_alerts(&self) -> Result<(), ClientError> {
        let rules = self.api.get_mine("/alerts/rules").await?;
        let rules = rules["rules"].as_array().cloned().unwrap_or_default();
        if rules.is_empty() {
            println!("No rules: `lizards client alerts add AAPL above 150` adds one.");
        } else {
            let mut table = Table::new(&["RULE", "CONDITION", "COOLDOWN", "LAST FIRED"]);
            for rule in &rules {
                let cooldown =
                    rule["cooldown"].as_u64().map(|s| humantime::format_duration(Duration::from_secs(s)).to_string());
                let fired =
                    rule["last_fired_at"].as_str().map_or("never".into(), |t| local_time(t, "%Y-%m-%d %H:%M:%S"));
                table.plain(vec![text(&rule["id"]), describe(rule), cooldown.unwrap_or_default(), fired]);
            }
            print!("{}", table.render(self.style));
        }
        let alerts = self.api.get_mine("/alerts?limit=10").await?;
        let alerts = alerts["alerts"].as_array().cloned().unwrap_or_default();
        println!();
        if alerts.is_empty() {
            println!("No alerts yet.");
            return Ok(());
        }
        let mut table = Table::new(&["FIRED", "ALERT", "DELIVERIES"]);
        for alert in &alerts {
            let deliveries: Vec<String> = alert["deliveries"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| format!("{} {}", text(&d["channel"]), text(&d["status"])))
                .collect();
            table.row(vec![
                (local_time(alert["fired_at"].as_str().unwrap_or_default(), "%Y-%m-%d %H:%M:%S"), Tone::Plain),
                (text(&alert["message"]), Tone::Bold),
                (deliveries.join(", "), Tone::Dim),
            ]);
        }
        print!("{}", table.render(self.style));
        Ok(())
    }
}
