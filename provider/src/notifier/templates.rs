//! Notification texts: the e-mail's plain and HTML bodies come from the
//! templates beside this file (`{{name}}` placeholders), filled with the
//! alert's fields; values are HTML-escaped in the HTML body.

use lizards_shared::{
    accounts::{Alert, RuleKind, User},
    time,
};

const TEXT: &str = include_str!("templates/alert.txt");
const HTML: &str = include_str!("templates/alert.html");

/// An alert's rendered notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// What happened, in a few words: `AAPL rose above 150`.
pub fn headline(alert: &Alert) -> String {
    let symbol = alert.symbol.as_ref().map_or("portfolio", |s| s.as_str());
    let pct = alert.change_pct.unwrap_or(alert.threshold);
    match alert.kind {
        RuleKind::Above => format!("{symbol} rose above {}", alert.threshold),
        RuleKind::Below => format!("{symbol} fell below {}", alert.threshold),
        RuleKind::ChangePct => format!("{symbol} moved {pct:+.2}%"),
        RuleKind::PortfolioChangePct => format!("your portfolio moved {pct:+.2}%"),
    }
}

/// `Lizards alert: AAPL rose above 150`.
pub fn subject(alert: &Alert) -> String {
    format!("Lizards alert: {}", headline(alert))
}

/// The short text of a chat message.
pub fn chat_text(alert: &Alert) -> String {
    format!("Lizards alert: {}\n{}\nFired at {}", headline(alert), alert.message, time::rfc3339(&alert.fired_at))
}

pub fn render(alert: &Alert, user: &User) -> Rendered {
    let fields = fields(alert, user);
    Rendered {
        subject: subject(alert),
        text: fill(TEXT, &fields, |value| value.to_string()),
        html: fill(HTML, &fields, escape_html),
    }
}

fn fields(alert: &Alert, user: &User) -> Vec<(&'static str, String)> {
    let rule = match alert.kind {
        RuleKind::Above | RuleKind::Below => format!("{} {}", alert.kind, alert.threshold),
        RuleKind::ChangePct | RuleKind::PortfolioChangePct => format!("{} {:+}%", alert.kind, alert.threshold),
    };
    let dash = || "-".to_string();
    vec![
        ("headline", format!("Lizards alert: {}", headline(alert))),
        ("message", alert.message.clone()),
        ("symbol", alert.symbol.as_ref().map_or_else(|| "portfolio".to_string(), |s| s.to_string())),
        ("rule", rule),
        ("price", alert.price.map_or_else(dash, |p| p.to_string())),
        ("change_pct", alert.change_pct.map_or_else(dash, |p| format!("{p:+.2}%"))),
        ("fired_at", time::rfc3339(&alert.fired_at)),
        ("alert_id", alert.id.to_string()),
        ("email", user.email.to_string()),
    ]
}

/// Replaces every `{{name}}` of `template` with its field, passed through
/// `encode`; unknown placeholders stay as they are.
fn fill(template: &str, fields: &[(&str, String)], encode: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            rest = &rest[start..];
            break;
        };
        let name = after[..end].trim();
        match fields.iter().find(|(key, _)| *key == name) {
            Some((_, value)) => out.push_str(&encode(value)),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_unknown_ones_kept() {
        let fields = vec![("a", "1".to_string()), ("b", "<x>".to_string())];
        assert_eq!(fill("{{a}}-{{ b }}-{{c}}-{{", &fields, |v| v.to_string()), "1-<x>-{{c}}-{{");
        assert_eq!(fill("<p>{{b}}</p>", &fields, escape_html), "<p>&lt;x&gt;</p>");
    }

    #[test]
    fn html_special_characters_are_escaped() {
        assert_eq!(escape_html(r#"a&b<"c">'d'"#), "a&amp;b&lt;&quot;c&quot;&gt;&#39;d&#39;");
    }
}
