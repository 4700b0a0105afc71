//! Portfolio arithmetic (docs/accounts.md, "Portfolio"), kept pure so both SQL stores apply the
//! very same rules inside their transactions.
//!
//! Cash moves in whole cents: an order's value is quantity × price rounded
//! half away from zero to 2 places. The average cost of a position is the
//! cash paid for it divided by the quantity held, kept to 8 places; selling
//! realises value − quantity × average cost (in cents) and leaves the
//! average cost of the rest unchanged.

use std::fmt;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// Places kept of a position's average cost.
pub const AVG_COST_PLACES: u32 = 8;
/// Places of cash amounts.
pub const CASH_PLACES: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }

    pub fn parse(text: &str) -> Option<Side> {
        match text {
            "buy" => Some(Side::Buy),
            "sell" => Some(Side::Sell),
            _ => None,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("insufficient cash: the order costs {needed} and the cash is {available}")]
    InsufficientCash { needed: Decimal, available: Decimal },
    #[error("insufficient quantity: selling {requested} but holding {held}")]
    InsufficientQuantity { requested: Decimal, held: Decimal },
    #[error("the order is worth less than one cent")]
    TooSmall,
    #[error("the amounts are too large to compute")]
    TooLarge,
}

/// A user's cash and their holding of one symbol (quantity 0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Book {
    pub cash: Decimal,
    pub realised_pnl: Decimal,
    pub quantity: Decimal,
    pub avg_cost: Decimal,
}

/// An executed order: the book after it and the cash that moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    pub book: Book,
    pub value: Decimal,
}

pub fn cents(amount: Decimal) -> Decimal {
    amount.round_dp_with_strategy(CASH_PLACES, RoundingStrategy::MidpointAwayFromZero)
}

/// Applies a buy or sell of `quantity` (> 0) at `price` (> 0) to `book`.
pub fn apply(book: Book, side: Side, quantity: Decimal, price: Decimal) -> Result<Fill, OrderError> {
    let value = cents(quantity.checked_mul(price).ok_or(OrderError::TooLarge)?);
    if value <= Decimal::ZERO {
        return Err(OrderError::TooSmall);
    }
    let book = match side {
        Side::Buy => buy(book, quantity, value)?,
        Side::Sell => sell(book, quantity, value)?,
    };
    Ok(Fill { book, value })
}

fn buy(book: Book, quantity: Decimal, value: Decimal) -> Result<Book, OrderError> {
    if value > book.cash {
        return Err(OrderError::InsufficientCash { needed: value, available: book.cash });
    }
    let held_cost = book.quantity.checked_mul(book.avg_cost).ok_or(OrderError::TooLarge)?;
    let total_cost = held_cost.checked_add(value).ok_or(OrderError::TooLarge)?;
    let new_quantity = book.quantity.checked_add(quantity).ok_or(OrderError::TooLarge)?;
    let avg_cost = total_cost
        .checked_div(new_quantity)
        .ok_or(OrderError::TooLarge)?
        .round_dp_with_strategy(AVG_COST_PLACES, RoundingStrategy::MidpointAwayFromZero);
    Ok(Book { cash: book.cash - value, realised_pnl: book.realised_pnl, quantity: new_quantity, avg_cost })
}

fn sell(book: Book, quantity: Decimal, value: Decimal) -> Result<Book, OrderError> {
    if quantity > book.quantity {
        return Err(OrderError::InsufficientQuantity { requested: quantity, held: book.quantity });
    }
    let cost = cents(quantity.checked_mul(book.avg_cost).ok_or(OrderError::TooLarge)?);
    let remaining = book.quantity - quantity;
    Ok(Book {
        cash: book.cash.checked_add(value).ok_or(OrderError::TooLarge)?,
        realised_pnl: book.realised_pnl + (value - cost),
        quantity: remaining,
        avg_cost: if remaining.is_zero() { Decimal::ZERO } else { book.avg_cost },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        text.parse().expect("decimal")
    }

    fn book(cash: &str, quantity: &str, avg_cost: &str) -> Book {
        Book { cash: d(cash), realised_pnl: Decimal::ZERO, quantity: d(quantity), avg_cost: d(avg_cost) }
    }

    #[test]
    fn buying_spends_cash_in_cents_and_averages_the_cost() {
        let fill = apply(book("1000", "0", "0"), Side::Buy, d("3"), d("100.005")).unwrap();
        assert_eq!(fill.value, d("300.02"), "300.015 rounds half away from zero");
        assert_eq!(fill.book.cash, d("699.98"));
        assert_eq!(fill.book.quantity, d("3"));
        assert_eq!(fill.book.avg_cost, d("100.00666667"));
        let again = apply(fill.book, Side::Buy, d("1"), d("200")).unwrap();
        assert_eq!(again.book.quantity, d("4"));
        assert_eq!(again.book.avg_cost, d("125.005"), "(300.02 + 200) / 4");
        assert_eq!(again.book.cash, d("499.98"));
    }

    #[test]
    fn selling_realises_the_difference_to_the_average_cost() {
        let fill = apply(book("0", "4", "125.005"), Side::Sell, d("1.5"), d("130")).unwrap();
        assert_eq!(fill.value, d("195.00"));
        assert_eq!(fill.book.cash, d("195.00"));
        assert_eq!(fill.book.realised_pnl, d("7.49"), "195.00 - cents(1.5 × 125.005 = 187.5075)");
        assert_eq!(fill.book.quantity, d("2.5"));
        assert_eq!(fill.book.avg_cost, d("125.005"), "the rest keeps its average cost");
        let all = apply(fill.book, Side::Sell, d("2.5"), d("100")).unwrap();
        assert_eq!(all.book.quantity, Decimal::ZERO);
        assert_eq!(all.book.avg_cost, Decimal::ZERO);
        assert_eq!(all.book.realised_pnl, d("7.49") + d("250.00") - d("312.51"));
    }

    #[test]
    fn fractional_quantities_are_fine() {
        let fill = apply(book("100", "0", "0"), Side::Buy, d("0.00123456"), d("65000")).unwrap();
        assert_eq!(fill.value, d("80.25"), "80.2464 in cents");
        assert_eq!(fill.book.quantity, d("0.00123456"));
    }

    #[test]
    fn buying_beyond_cash_or_selling_beyond_holding_is_refused() {
        let start = book("100", "1", "50");
        assert_eq!(
            apply(start, Side::Buy, d("2"), d("50.01")),
            Err(OrderError::InsufficientCash { needed: d("100.02"), available: d("100") })
        );
        assert_eq!(
            apply(start, Side::Sell, d("1.00000001"), d("50")),
            Err(OrderError::InsufficientQuantity { requested: d("1.00000001"), held: d("1") })
        );
        assert!(apply(start, Side::Buy, d("2"), d("50")).is_ok(), "exactly the cash is enough");
    }

    #[test]
    fn orders_worth_less_than_a_cent_or_too_large_are_refused() {
        assert_eq!(apply(book("100", "0", "0"), Side::Buy, d("0.0001"), d("1")), Err(OrderError::TooSmall));
        assert_eq!(apply(book("100", "0", "0"), Side::Buy, Decimal::MAX, d("2")), Err(OrderError::TooLarge));
    }
}
