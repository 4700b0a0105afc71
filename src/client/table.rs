//! Plain-text output: aligned tables and, on a terminal, colours for up
//! and down.

use std::fmt::Write;

/// Whether output carries ANSI colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub color: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Up,
    Down,
    Dim,
    Bold,
}

impl Tone {
    /// The tone of a signed change.
    pub fn of(change: f64) -> Tone {
        if change > 0.0 {
            Tone::Up
        } else if change < 0.0 {
            Tone::Down
        } else {
            Tone::Plain
        }
    }
}

impl Style {
    pub fn paint(self, text: &str, tone: Tone) -> String {
        let code = match tone {
            Tone::Plain => return text.to_string(),
            Tone::Up => "32",
            Tone::Down => "31",
            Tone::Dim => "2",
            Tone::Bold => "1",
        };
        if self.color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }
}

/// A table whose first column is left-aligned and the others right-aligned.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<(String, Tone)>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table { headers: headers.to_vec(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<(String, Tone)>) {
        self.rows.push(cells);
    }

    /// A row with no colours.
    pub fn plain(&mut self, cells: Vec<String>) {
        self.row(cells.into_iter().map(|c| (c, Tone::Plain)).collect());
    }

    pub fn render(&self, style: Style) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, (text, _)) in row.iter().enumerate() {
                widths[i] = widths[i].max(text.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<(String, Tone)> = self.headers.iter().map(|h| (h.to_string(), Tone::Dim)).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, (text, tone))| {
                    let padded = if i == 0 {
                        format!("{text:<w$}", w = widths[i])
                    } else {
                        format!("{text:>w$}", w = widths[i])
                    };
                    style.paint(&padded, *tone)
                })
                .collect();
            writeln!(out, "{}", cells.join("  ").trim_end()).expect("writing to a String");
        }
        out
    }
}

/// A price with two decimals from 1 up, six below.
pub fn price(value: f64) -> String {
    if value >= 1.0 { format!("{value:.2}") } else { format!("{value:.6}") }
}

/// A JSON value as text: strings as they are (decimals stay exact).
pub fn text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Null => "—".into(),
        other => other.to_string(),
    }
}

/// `+1.25 %`.
pub fn percent(value: f64) -> String {
    format!("{value:+.2} %")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_and_colours_only_when_asked() {
        let mut table = Table::new(&["SYMBOL", "PRICE"]);
        table.row(vec![("AAPL".into(), Tone::Plain), ("150.00".into(), Tone::Up)]);
        table.plain(vec!["BTC-USD".into(), "64000.00".into()]);
        let plain = table.render(Style { color: false });
        assert_eq!(plain, "SYMBOL      PRICE\nAAPL       150.00\nBTC-USD  64000.00\n");
        let coloured = table.render(Style { color: true });
        assert!(coloured.contains("\x1b[32m  150.00\x1b[0m"), "{coloured:?}");
    }

    #[test]
    fn prices_and_changes_read_like_a_ticker() {
        assert_eq!(price(229.456), "229.46");
        assert_eq!(price(0.1234567), "0.123457");
        assert_eq!(percent(1.0), "+1.00 %");
        assert_eq!(percent(-0.5), "-0.50 %");
    }
}
