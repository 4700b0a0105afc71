//! CoinGecko `simple/price`: the 11 cryptos of `COINS` in one request,
//! priced in USD, with 24 h volume and CoinGecko's update time.

use lizards_shared::Symbol;
use serde_json::Value;

use super::{
    Api, Item, RawRecord, Request, Response, SourceError,
    parse::{self, item_error},
    with_slash,
};

pub const ID: &str = "coingecko";
pub const DEFAULT_URL: &str = "https://api.coingecko.com/";

/// Lizards symbol → CoinGecko coin id.
pub const COINS: &[(&str, &str)] = &[
    ("BTC-USD", "bitcoin"),
    ("ETH-USD", "ethereum"),
    ("USDT-USD", "tether"),
    ("BNB-USD", "binancecoin"),
    ("SOL-USD", "solana"),
    ("XRP-USD", "ripple"),
    ("USDC-USD", "usd-coin"),
    ("STETH-USD", "staked-ether"),
    ("ADA-USD", "cardano"),
    ("AVAX-USD", "avalanche-2"),
    ("DOGE-USD", "dogecoin"),
];

pub struct CoinGecko {
    base: String,
    /// Demo API key (`x-cg-demo-api-key`), optional on the public API.
    key: Option<String>,
}

impl CoinGecko {
    pub fn new(base: &str, key: Option<String>) -> CoinGecko {
        CoinGecko { base: with_slash(base), key }
    }
}

fn coin_id(symbol: &Symbol) -> Option<&'static str> {
    COINS.iter().find(|(s, _)| *s == symbol.as_str()).map(|(_, id)| *id)
}

impl Api for CoinGecko {
    fn id(&self) -> &str {
        ID
    }

    fn kind(&self) -> &'static str {
        ID
    }

    fn base_url(&self) -> &str {
        &self.base
    }

    fn max_batch(&self) -> usize {
        COINS.len()
    }

    fn covers(&self, symbol: &Symbol) -> bool {
        coin_id(symbol).is_some()
    }

    fn request(&self, symbols: &[Symbol]) -> Request {
        let ids: Vec<&str> = symbols.iter().filter_map(coin_id).collect();
        let url = format!(
            "{}api/v3/simple/price?ids={}&vs_currencies=usd&include_24hr_vol=true&include_last_updated_at=true",
            self.base,
            ids.join(",")
        );
        let mut request = Request::get(url);
        if let Some(key) = &self.key {
            request.headers.push(("x-cg-demo-api-key", key.clone()));
        }
        request
    }

    fn parse(&self, symbols: &[Symbol], response: &Response) -> Result<Vec<Item>, SourceError> {
        if response.status != 200 {
            return Err(SourceError::Status(response.status));
        }
        let doc = parse::json(response)?;
        let coins = doc.as_object().ok_or_else(|| SourceError::WrongType {
            field: "(document)".into(),
            expected: "an object of coins",
            found: parse::describe(&doc),
        })?;
        let items = symbols
            .iter()
            .map(|symbol| {
                let Some(coin) = coin_id(symbol).and_then(|id| coins.get(id)) else {
                    return Err(item_error(symbol, SourceError::UnknownSymbol, &Value::Null));
                };
                let record = (|| {
                    let price = parse::price(parse::number(coin, "usd")?)?;
                    let ts = parse::unix_time(coin, "last_updated_at", false)?;
                    let volume = parse::volume(coin.get("usd_24h_vol").and_then(Value::as_f64));
                    Ok(RawRecord::new(ID, symbol, price, ts, volume, coin.clone()))
                })();
                record.map_err(|error| item_error(symbol, error, coin))
            })
            .collect();
        Ok(items)
    }
}
