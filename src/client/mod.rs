//! `lizards client`: the terminal client for people (docs/client.md). Every
//! command talks to a running gateway's public API, as the web UI does.

mod account;
mod alerts;
mod api;
mod credentials;
mod market;
mod menu;
mod portfolio;
mod prompt;
mod table;
mod watch;

use std::{io::IsTerminal, path::PathBuf, time::Duration};

use clap::{Args, Subcommand, ValueEnum};
use lizards_shared::{Symbol, store::CandleInterval};

use api::Api;
pub use api::ClientError;
use prompt::Prompt;
use table::Style;

#[derive(Debug, Args)]
pub struct ClientCommand {
    /// The Lizards gateway to talk to.
    #[arg(long, env = "LIZARDS_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Where the sign-in is kept [default: $XDG_CONFIG_HOME/lizards, else ~/.config/lizards].
    #[arg(long, env = "LIZARDS_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    #[arg(long, env = "XDG_CONFIG_HOME", hide = true)]
    xdg_config_home: Option<PathBuf>,
    /// Colours for up and down: `auto` when writing to a terminal and
    /// NO_COLOR is unset.
    #[arg(long, value_enum, default_value = "auto")]
    color: ColorChoice,
    #[arg(long, env = "NO_COLOR", hide = true)]
    no_color: Option<String>,
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// Without a command, an interactive menu offers them all.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// Create an account, then sign in.
    Register(SignIn),
    /// Sign in; the token is kept in the config directory.
    Login(SignIn),
    /// Forget the saved sign-in.
    Logout,
    /// The latest price of each symbol.
    Quote {
        #[arg(required = true, value_parser = symbol)]
        symbols: Vec<Symbol>,
    },
    /// The mean of a symbol's last N prices.
    Mean {
        #[arg(value_parser = symbol)]
        symbol: Symbol,
        /// How many of the latest prices (at most 10000).
        #[arg(long, default_value_t = 10)]
        last: u32,
    },
    /// A symbol's recent prices, newest first, or OHLC candles.
    History {
        #[arg(value_parser = symbol)]
        symbol: Symbol,
        /// How many prices or candles.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Candles of this size instead of single prices: 1m, 5m, 15m, 1h or 1d.
        #[arg(long, value_parser = interval)]
        interval: Option<CandleInterval>,
    },
    /// A live table of prices, until Ctrl-C or `--for`.
    Watch {
        #[arg(required = true, value_parser = symbol)]
        symbols: Vec<Symbol>,
        /// Stop after this long (e.g. `30s`, `5m`).
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
    },
    /// Your alert rules and recent alerts; add or delete rules.
    Alerts {
        #[command(subcommand)]
        action: Option<alerts::AlertsAction>,
    },
    /// Your cash, positions and P&L; deposit, buy, sell, orders.
    Portfolio {
        #[command(subcommand)]
        action: Option<portfolio::PortfolioAction>,
    },
}

#[derive(Debug, Args)]
pub struct SignIn {
    /// Asked for when not given.
    #[arg(long)]
    email: Option<String>,
    /// Asked for (without echo) when not given.
    #[arg(long, env = "LIZARDS_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

fn symbol(text: &str) -> Result<Symbol, String> {
    Symbol::parse(text).map_err(|e| e.to_string())
}

fn interval(text: &str) -> Result<CandleInterval, String> {
    text.parse().map_err(|_| format!("'{text}' is not a candle interval: use 1m, 5m, 15m, 1h or 1d"))
}

/// What every command needs: the API, where the sign-in lives, how to
/// print, and the terminal to ask questions on.
pub struct Client {
    api: Api,
    dir: PathBuf,
    style: Style,
    prompt: Prompt,
}

impl ClientCommand {
    pub async fn run(self) -> Result<(), ClientError> {
        let dir = self.config_dir.clone().unwrap_or_else(|| credentials::default_dir(self.xdg_config_home.clone()));
        let color = match self.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => std::io::stdout().is_terminal() && self.no_color.is_none_or(|v| v.is_empty()),
        };
        let api = Api::new(&self.url, credentials::load(&dir));
        let mut client = Client { api, dir, style: Style { color }, prompt: Prompt::new() };
        match self.action {
            Some(action) => client.run(action).await,
            None => menu::run(&mut client).await,
        }
    }
}

impl Client {
    async fn run(&mut self, action: Action) -> Result<(), ClientError> {
        match action {
            Action::Register(sign_in) => self.register(sign_in).await,
            Action::Login(sign_in) => self.login(sign_in).await,
            Action::Logout => self.logout(),
            Action::Quote { symbols } => self.quote(&symbols).await,
            Action::Mean { symbol, last } => self.mean(&symbol, last).await,
            Action::History { symbol, limit, interval } => self.history(&symbol, limit, interval).await,
            Action::Watch { symbols, duration } => self.watch(symbols, duration).await,
            Action::Alerts { action } => self.alerts(action.unwrap_or(alerts::AlertsAction::List)).await,
            Action::Portfolio { action } => self.portfolio(action.unwrap_or(portfolio::PortfolioAction::Show)).await,
        }
    }
}
