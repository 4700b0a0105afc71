//! `lizards client` without a command: a menu that asks for what each
//! command needs. A full command line (`quote AAPL MSFT`) works too.

use clap::Parser;
use lizards_shared::Symbol;

use super::{Action, Client, SignIn, alerts::AlertsAction, api::ClientError, portfolio::PortfolioAction};

const MENU: &str = "\
  1 quote      2 mean       3 history    4 watch (Ctrl-C stops)
  5 alerts     6 portfolio  7 register   8 login      9 logout
  q quit       or type a command, e.g. `portfolio buy AAPL 2`";

/// A command typed at the menu's prompt.
#[derive(Debug, Parser)]
#[command(name = "lizards client", no_binary_name = true, disable_help_flag = true)]
struct Line {
    #[command(subcommand)]
    action: Action,
}

pub async fn run(client: &mut Client) -> Result<(), ClientError> {
    loop {
        let who = match &client.api.credentials {
            Some(credentials) => format!("signed in as {}", credentials.email),
            None => "not signed in".into(),
        };
        println!("\nLizards at {} ({who})\n{MENU}", client.api.base);
        let Some(choice) = client.prompt.ask("> ").await else { return Ok(()) };
        let action = match choice.as_str() {
            "" => continue,
            "q" | "quit" | "exit" => return Ok(()),
            number if number.chars().all(|c| c.is_ascii_digit()) => match ask_for(client, number).await {
                Ok(Some(action)) => action,
                Ok(None) => continue,
                Err(error) => {
                    eprintln!("error: {error}");
                    continue;
                }
            },
            line => match Line::try_parse_from(line.split_whitespace()) {
                Ok(line) => line.action,
                Err(error) => {
                    eprintln!("{}", error.render());
                    continue;
                }
            },
        };
        if let Err(error) = client.run(action).await {
            eprintln!("error: {error}");
        }
    }
}

/// The action behind a menu number, asking for its arguments.
async fn ask_for(client: &mut Client, number: &str) -> Result<Option<Action>, ClientError> {
    Ok(Some(match number {
        "1" => Action::Quote { symbols: symbols(client, "Symbols: ").await? },
        "2" => {
            let symbol = one_symbol(client).await?;
            let last = client.prompt.ask("How many of the latest prices? [10] ").await.unwrap_or_default();
            let last = if last.is_empty() {
                10
            } else {
                last.parse().map_err(|_| ClientError::Input(format!("'{last}' is not a count")))?
            };
            Action::Mean { symbol, last }
        }
        "3" => Action::History { symbol: one_symbol(client).await?, limit: 20, interval: None },
        "4" => Action::Watch { symbols: symbols(client, "Symbols to watch: ").await?, duration: None },
        "5" => Action::Alerts { action: Some(AlertsAction::List) },
        "6" => Action::Portfolio { action: Some(PortfolioAction::Show) },
        "7" => Action::Register(SignIn { email: None, password: None }),
        "8" => Action::Login(SignIn { email: None, password: None }),
        "9" => Action::Logout,
        _ => {
            eprintln!("no such entry: {number}");
            return Ok(None);
        }
    }))
}

async fn one_symbol(client: &mut Client) -> Result<Symbol, ClientError> {
    let mut symbols = symbols(client, "Symbol: ").await?;
    Ok(symbols.swap_remove(0))
}

/// Symbols separated by spaces or commas, parsed at once.
async fn symbols(client: &mut Client, question: &str) -> Result<Vec<Symbol>, ClientError> {
    let answer = client.prompt.ask(question).await.unwrap_or_default();
    let symbols: Vec<Symbol> = answer
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| Symbol::parse(s).map_err(|e| ClientError::Input(e.to_string())))
        .collect::<Result<_, _>>()?;
    if symbols.is_empty() {
        return Err(ClientError::Input("no symbol given".into()));
    }
    Ok(symbols)
}
