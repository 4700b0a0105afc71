//! `portfolio`: cash, positions and P&L; deposits and market orders.
//! Money stays the server's decimal strings, printed as they come.

use clap::Subcommand;
use lizards_shared::Symbol;
use serde_json::{Value, json};

use super::{
    Client,
    api::ClientError,
    market::local_time,
    table::{Table, Tone, text},
};

#[derive(Debug, Clone, Subcommand)]
pub enum PortfolioAction {
    /// Cash, positions at the latest prices, P&L (the default).
    Show,
    /// Add cash, in USD.
    Deposit { amount: String },
    /// Buy at the latest price.
    Buy {
        #[arg(value_parser = super::symbol)]
        symbol: Symbol,
        quantity: String,
    },
    /// Sell at the latest price.
    Sell {
        #[arg(value_parser = super::symbol)]
        symbol: Symbol,
        quantity: String,
    },
    /// Your orders, newest first.
    Orders {
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

/// The tone of a decimal string's sign.
fn tone(value: &Value) -> Tone {
    Tone::of(text(value).parse::<f64>().unwrap_or_default())
}

impl Client {
    pub(super) async fn portfolio(&self, action: PortfolioAction) -> Result<(), ClientError> {
        match action {
            PortfolioAction::Show => self.show_portfolio().await,
            PortfolioAction::Deposit { amount } => {
                let result = self.api.post("/portfolio/deposit", json!({ "amount": amount }), true).await?;
                println!("Deposited {amount} USD; cash is now {} USD.", text(&result["cash"]));
                Ok(())
            }
            PortfolioAction::Buy { symbol, quantity } => self.order(&symbol, "buy", &quantity).await,
            PortfolioAction::Sell { symbol, quantity } => self.order(&symbol, "sell", &quantity).await,
            PortfolioAction::Orders { limit } => self.orders(limit).await,
        }
    }

    async fn order(&self, symbol: &Symbol, side: &str, quantity: &str) -> Result<(), ClientError> {
        let body = json!({ "symbol": symbol, "side": side, "quantity": quantity });
        let order = self.api.post("/portfolio/orders", body, true).await?;
        let verb = if side == "buy" { "Bought" } else { "Sold" };
        println!(
            "{verb} {} {symbol} at {} USD ({} USD); cash is now {} USD.",
            text(&order["quantity"]),
            text(&order["price"]),
            text(&order["value"]),
            text(&order["portfolio"]["cash"]),
        );
        Ok(())
    }

    async fn show_portfolio(&self) -> Result<(), ClientError> {
        let p = self.api.get_mine("/portfolio").await?;
        let style = self.style;
        println!("Cash            {} USD", text(&p["cash"]));
        println!("Positions       {} USD", text(&p["positions_value"]));
        println!("Total value     {} USD", text(&p["total_value"]));
        println!("Unrealised P&L  {}", style.paint(&text(&p["unrealised_pnl"]), tone(&p["unrealised_pnl"])));
        println!("Realised P&L    {}", style.paint(&text(&p["realised_pnl"]), tone(&p["realised_pnl"])));
        let positions = p["positions"].as_array().cloned().unwrap_or_default();
        if positions.is_empty() {
            println!("\nNo positions: `lizards client portfolio buy AAPL 1` buys one.");
            return Ok(());
        }
        let mut table = Table::new(&["SYMBOL", "QUANTITY", "AVG COST", "PRICE", "VALUE", "P&L"]);
        for position in &positions {
            let cells =
                ["symbol", "quantity", "avg_cost", "price", "value"].map(|field| (text(&position[field]), Tone::Plain));
            let mut row = cells.to_vec();
            row.push((text(&position["unrealised_pnl"]), tone(&position["unrealised_pnl"])));
            table.row(row);
        }
        print!("\n{}", table.render(style));
        Ok(())
    }

    async fn orders(&self, limit: u32) -> Result<(), ClientError> {
        let body = self.api.get_mine(&format!("/portfolio/orders?limit={limit}")).await?;
        let orders = body["orders"].as_array().cloned().unwrap_or_default();
        if orders.is_empty() {
            println!("No orders yet.");
            return Ok(());
        }
        let mut table = Table::new(&["TIME", "SIDE", "SYMBOL", "QUANTITY", "PRICE"]);
        for order in &orders {
            let side = text(&order["side"]);
            let tone = if side == "buy" { Tone::Up } else { Tone::Down };
            table.row(vec![
                (local_time(order["at"].as_str().unwrap_or_default(), "%Y-%m-%d %H:%M:%S"), Tone::Plain),
                (side, tone),
                (text(&order["symbol"]), Tone::Plain),
                (text(&order["quantity"]), Tone::Plain),
                (text(&order["price"]), Tone::Plain),
            ]);
        }
        print!("{}", table.render(self.style));
        Ok(())
    }
}
