//! Secrets: read from a file when `<NAME>_FILE` is set (the convention of
//! Docker and Kubernetes secrets), and refused at start when weak or a known
//! placeholder, unless Lizards runs embedded on one machine.

use std::{ffi::OsString, fs, path::PathBuf};

use crate::config::Config;

/// Shortest accepted signing secret or bearer token, in bytes: HS256 keys
/// shorter than its 256-bit hash can be brute-forced offline from one token.
pub const MIN_TOKEN_BYTES: usize = 32;

/// Shortest accepted ADMIN_PASSWORD, in characters.
pub const MIN_ADMIN_PASSWORD: usize = 12;

/// Words that mark a value copied from an example rather than generated.
/// Compared with case and punctuation ignored, as whole values or parts.
const PLACEHOLDER_PARTS: &[&str] = &["replaceme", "changeme", "devonly", "example", "placeholder", "yoursecret"];
const PLACEHOLDER_VALUES: &[&str] = &["secret", "password", "admin", "token", "test", "default", "lizards"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("{name} and {name}_FILE are both set: set one of them")]
    Ambiguous { name: &'static str },
    #[error("{name}_FILE: cannot read {path}: {reason}")]
    Unreadable { name: &'static str, path: String, reason: String },
    #[error("{name}_FILE: {path} is empty")]
    Empty { name: &'static str, path: String },
    #[error(
        "{name} is {problem}; outside the embedded mode Lizards refuses weak secrets \
         (generate one with `openssl rand -hex 32`)"
    )]
    Weak { name: &'static str, problem: String },
}

/// Every secret setting with the field it fills.
fn secret_fields(config: &mut Config) -> [(&'static str, &mut Option<String>); 9] {
    [
        ("JWT_SECRET", &mut config.common.jwt_secret),
        ("REGISTRY_TOKEN", &mut config.common.registry_token),
        ("INGEST_TOKEN", &mut config.ingestion.ingest_token),
        ("ADMIN_PASSWORD", &mut config.provider.admin_password),
        ("SMTP_URL", &mut config.notifier.smtp_url),
        ("TELEGRAM_BOT_TOKEN", &mut config.notifier.telegram_bot_token),
        ("ALPHAVANTAGE_API_KEY", &mut config.ingestion.alphavantage_api_key),
        ("FINNHUB_API_KEY", &mut config.ingestion.finnhub_api_key),
        ("COINGECKO_API_KEY", &mut config.ingestion.coingecko_api_key),
    ]
}

/// Fills each secret whose `<NAME>_FILE` is set in `env` from that file (a
/// trailing newline is dropped). Setting both `<NAME>` and `<NAME>_FILE` is
/// an error rather than a guess.
pub fn read_files(config: &mut Config, env: impl Fn(&str) -> Option<OsString>) -> Result<(), SecretError> {
    for (name, field) in secret_fields(config) {
        let Some(path) = env(&format!("{name}_FILE")).filter(|p| !p.is_empty()) else { continue };
        if field.as_deref().is_some_and(|value| !value.is_empty()) {
            return Err(SecretError::Ambiguous { name });
        }
        let path = PathBuf::from(path);
        let shown = path.display().to_string();
        let text = fs::read_to_string(&path).map_err(|e| SecretError::Unreadable {
            name,
            path: shown.clone(),
            reason: e.kind().to_string(),
        })?;
        let value = text.trim_end_matches(['\r', '\n']);
        if value.is_empty() {
            return Err(SecretError::Empty { name, path: shown });
        }
        *field = Some(value.to_string());
    }
    Ok(())
}

/// Whether `value` looks copied from documentation or an example file.
pub fn is_placeholder(value: &str) -> bool {
    let folded: String = value.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect();
    folded.is_empty()
        || PLACEHOLDER_VALUES.contains(&folded.as_str())
        || PLACEHOLDER_PARTS.iter().any(|part| folded.contains(part))
}

/// Refuses weak secrets. Embedded mode (one process, no shared backends)
/// is exempt: its JWT secret is random and its admin password generated.
pub fn check(config: &Config, embedded: bool) -> Result<(), SecretError> {
    if embedded {
        return Ok(());
    }
    let tokens = [
        ("JWT_SECRET", &config.common.jwt_secret),
        ("REGISTRY_TOKEN", &config.common.registry_token),
        ("INGEST_TOKEN", &config.ingestion.ingest_token),
    ];
    for (name, value) in tokens {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            strong(name, value, value.len(), MIN_TOKEN_BYTES, "bytes")?;
        }
    }
    if let Some(password) = config.provider.admin_password.as_deref().filter(|v| !v.is_empty()) {
        strong("ADMIN_PASSWORD", password, password.chars().count(), MIN_ADMIN_PASSWORD, "characters")?;
    }
    Ok(())
}

fn strong(name: &'static str, value: &str, length: usize, min: usize, unit: &str) -> Result<(), SecretError> {
    if is_placeholder(value) {
        return Err(SecretError::Weak { name, problem: "a placeholder from an example".to_string() });
    }
    if length < min {
        return Err(SecretError::Weak { name, problem: format!("{length} {unit} long, at least {min} are required") });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const STRONG: &str = "3f9a1c0b7e5d4a2b8c6f0e1d2a3b4c5d6e7f8091a2b3c4d5";

    #[test]
    fn placeholders_are_recognised_whatever_their_case_and_punctuation() {
        for value in ["replace-me", "CHANGEME", "change_me", "secret", "dev-only-registry-token", "", "Password"] {
            assert!(is_placeholder(value), "{value:?}");
        }
        assert!(!is_placeholder(STRONG));
    }

    #[test]
    fn outside_embedded_mode_short_or_placeholder_secrets_are_refused() {
        let mut config = Config::defaults();
        config.common.jwt_secret = Some("short".into());
        assert!(check(&config, true).is_ok(), "embedded mode is exempt");
        let error = check(&config, false).unwrap_err();
        assert!(error.to_string().contains("JWT_SECRET is 5 bytes long"), "{error}");
        config.common.jwt_secret = Some("replace-me-with-something-at-least-32-bytes".into());
        assert!(matches!(check(&config, false), Err(SecretError::Weak { name: "JWT_SECRET", .. })));
        config.common.jwt_secret = Some(STRONG.into());
        config.provider.admin_password = Some("hunter22".into());
        assert!(matches!(check(&config, false), Err(SecretError::Weak { name: "ADMIN_PASSWORD", .. })));
        config.provider.admin_password = Some("correct horse battery".into());
        config.ingestion.ingest_token = Some("changeme".into());
        assert!(matches!(check(&config, false), Err(SecretError::Weak { name: "INGEST_TOKEN", .. })));
        config.ingestion.ingest_token = None;
        assert_eq!(check(&config, false), Ok(()));
    }

    #[test]
    fn a_secret_file_fills_its_setting_without_the_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt");
        fs::write(&path, format!("{STRONG}\n")).unwrap();
        let env: HashMap<String, OsString> = HashMap::from([("JWT_SECRET_FILE".to_string(), path.into_os_string())]);
        let mut config = Config::defaults();
        read_files(&mut config, |name| env.get(name).cloned()).unwrap();
        assert_eq!(config.common.jwt_secret.as_deref(), Some(STRONG));

        let error = read_files(&mut config, |name| env.get(name).cloned()).unwrap_err();
        assert_eq!(error, SecretError::Ambiguous { name: "JWT_SECRET" });

        let missing = HashMap::from([("ADMIN_PASSWORD_FILE".to_string(), OsString::from("/nonexistent/pw"))]);
        let error = read_files(&mut Config::defaults(), |name| missing.get(name).cloned()).unwrap_err();
        assert!(matches!(error, SecretError::Unreadable { name: "ADMIN_PASSWORD", .. }), "{error}");
    }
}
