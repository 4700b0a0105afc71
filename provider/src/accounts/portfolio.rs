//! Portfolio simulation: deposits, market orders at the latest
//! price, and an overview valued at the latest prices.

use std::time::Duration;

use chrono::Utc;
use lizards_shared::{
    Symbol,
    accounts::{Order, OrderRequest, Portfolio, Position, Side, UserId, ledger},
};
use rust_decimal::{Decimal, RoundingStrategy, prelude::ToPrimitive};
use serde::Deserialize;

use super::Accounts;
use crate::error::ApiError;

/// An order executes only at a price observed this recently.
pub const MAX_PRICE_AGE: Duration = Duration::from_secs(60);
/// Largest single deposit.
pub const MAX_DEPOSIT: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);
/// Largest quantity of one order.
pub const MAX_QUANTITY: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);
/// Places of a quantity (crypto trades in 10⁻⁸).
pub const QUANTITY_PLACES: u32 = 8;
/// Places kept of a price turned into money.
const PRICE_PLACES: u32 = 8;

#[derive(Debug, Clone, Deserialize)]
pub struct DepositInput {
    pub amount: Decimal,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OrderInput {
    pub symbol: String,
    pub side: String,
    pub quantity: Decimal,
}

/// A position valued at the latest price (when there is one).
pub struct Valued {
    pub position: Position,
    pub price: Option<Decimal>,
    pub value: Option<Decimal>,
    pub unrealised_pnl: Option<Decimal>,
}

pub struct Overview {
    pub portfolio: Portfolio,
    pub positions: Vec<Valued>,
    pub positions_value: Decimal,
    pub total_value: Decimal,
    pub unrealised_pnl: Decimal,
}

/// A quote's price as money.
pub fn money(price: f64) -> Option<Decimal> {
    Decimal::try_from(price)
        .ok()
        .map(|d| d.round_dp_with_strategy(PRICE_PLACES, RoundingStrategy::MidpointAwayFromZero).normalize())
}

fn positive(field: &'static str, value: Decimal, places: u32, max: Decimal) -> Result<Decimal, ApiError> {
    if value <= Decimal::ZERO {
        return Err(ApiError::invalid(field, "must be greater than zero"));
    }
    if value > max {
        return Err(ApiError::invalid(field, format!("must be at most {max}")));
    }
    if value.normalize().scale() > places {
        return Err(ApiError::invalid(field, format!("must have at most {places} decimal places")));
    }
    Ok(value.normalize())
}

impl Accounts {
    pub async fn deposit(&self, user: UserId, input: DepositInput) -> Result<Portfolio, ApiError> {
        let amount = positive("amount", input.amount, ledger::CASH_PLACES, MAX_DEPOSIT)?;
        let portfolio = self.store.deposit(user, amount).await?;
        self.metrics.portfolio_operations.with_label_values(&["deposit"]).inc();
        tracing::info!(user = %user, %amount, "deposit");
        Ok(portfolio)
    }

    /// A market order at the latest price: 422 when the symbol is unknown
    /// or the cash/holding does not cover it, 409 without a price from the
    /// last minute.
    pub async fn place_order(&self, user: UserId, input: OrderInput) -> Result<(Order, Portfolio), ApiError> {
        let side = Side::parse(&input.side).ok_or_else(|| ApiError::invalid("side", "must be 'buy' or 'sell'"))?;
        let quantity = positive("quantity", input.quantity, QUANTITY_PLACES, MAX_QUANTITY)?;
        let symbol = self.known_symbol("symbol", &input.symbol).await?;
        let price = self.fresh_price(&symbol).await?;
        self.interest.add(&symbol);
        let request = OrderRequest { symbol, side, quantity, price };
        let result = self.store.place_order(user, &request, Utc::now()).await;
        let outcome = if result.is_ok() { side.as_str() } else { "refused" };
        self.metrics.portfolio_operations.with_label_values(&[outcome]).inc();
        let (order, portfolio) = result?;
        tracing::info!(user = %user, order = %order.id, symbol = %order.symbol, side = %side, quantity = %quantity, price = %price, "order executed");
        Ok((order, portfolio))
    }

    async fn fresh_price(&self, symbol: &Symbol) -> Result<Decimal, ApiError> {
        let quote = self.latest(symbol).await;
        let max_age = chrono::Duration::from_std(MAX_PRICE_AGE).expect("small duration");
        match quote {
            Some(quote) if Utc::now() - quote.ts <= max_age => {
                money(quote.price).ok_or_else(|| ApiError::Conflict(format!("the price of {symbol} is not usable")))
            }
            _ => Err(ApiError::Conflict(format!(
                "no price for {symbol} from the last {} seconds; try again when it trades",
                MAX_PRICE_AGE.as_secs()
            ))),
        }
    }

    /// The portfolio with each position valued at its latest price.
    pub async fn overview(&self, user: UserId) -> Result<Overview, ApiError> {
        let portfolio = self.store.portfolio(user).await?;
        let mut positions = Vec::with_capacity(portfolio.positions.len());
        let (mut positions_value, mut unrealised_pnl) = (Decimal::ZERO, Decimal::ZERO);
        for position in &portfolio.positions {
            let price = self.latest(&position.symbol).await.and_then(|q| money(q.price));
            let value = price.map(|p| ledger::cents(p * position.quantity));
            let cost = ledger::cents(position.avg_cost * position.quantity);
            let pnl = value.map(|v| v - cost);
            positions_value += value.unwrap_or(cost);
            unrealised_pnl += pnl.unwrap_or_default();
            positions.push(Valued { position: position.clone(), price, value, unrealised_pnl: pnl });
        }
        let total_value = portfolio.cash + positions_value;
        Ok(Overview { portfolio, positions, positions_value, total_value, unrealised_pnl })
    }

    /// Cash plus positions at their latest prices, for portfolio rules
    /// (`None` for an empty portfolio).
    pub async fn portfolio_value(&self, user: UserId) -> Result<Option<f64>, ApiError> {
        let overview = self.overview(user).await?;
        Ok(overview.total_value.to_f64().filter(|v| *v > 0.0))
    }

    pub async fn orders(&self, user: UserId, limit: u32) -> Result<Vec<Order>, ApiError> {
        Ok(self.store.orders_of(user, limit).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    #[test]
    fn amounts_must_be_positive_bounded_and_not_too_precise() {
        assert_eq!(positive("amount", d("10.50"), 2, MAX_DEPOSIT).unwrap(), d("10.5"));
        for bad in ["0", "-1", "0.001", "1000000000.01"] {
            assert!(positive("amount", d(bad), 2, MAX_DEPOSIT).is_err(), "{bad}");
        }
        assert!(positive("quantity", d("0.00000001"), 8, MAX_QUANTITY).is_ok());
        assert!(positive("quantity", d("0.000000001"), 8, MAX_QUANTITY).is_err());
    }

    #[test]
    fn prices_become_short_decimals() {
        assert_eq!(money(150.23), Some(d("150.23")));
        assert_eq!(money(0.000012345), Some(d("0.00001235")));
        assert_eq!(money(f64::NAN), None);
    }
}
