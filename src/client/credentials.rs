//! The signed-in user's token, kept between runs in the user's config
//! directory (`$LIZARDS_CONFIG_DIR`, else `$XDG_CONFIG_HOME/lizards`, else
//! `~/.config/lizards`) as `credentials.json`, readable by its owner only.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::api::ClientError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    /// The gateway the token was issued by.
    pub url: String,
    pub email: String,
    pub access_token: String,
}

/// The default config directory when `--config-dir` is not given.
pub fn default_dir(xdg_config_home: Option<PathBuf>) -> PathBuf {
    xdg_config_home
        .filter(|dir| dir.is_absolute())
        .or_else(|| std::env::home_dir().map(|home| home.join(".config")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("lizards")
}

fn file(dir: &Path) -> PathBuf {
    dir.join("credentials.json")
}

fn failed(dir: &Path, reason: impl ToString) -> ClientError {
    ClientError::Credentials { path: file(dir).display().to_string(), reason: reason.to_string() }
}

/// The saved sign-in, if any. An unreadable file counts as none.
pub fn load(dir: &Path) -> Option<Credentials> {
    let text = std::fs::read_to_string(file(dir)).ok()?;
    serde_json::from_str(&text).ok()
}

pub fn save(dir: &Path, credentials: &Credentials) -> Result<(), ClientError> {
    std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
    let path = file(dir);
    let text = serde_json::to_string_pretty(credentials).expect("credentials serialize");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut out = options.open(&path).map_err(|e| failed(dir, e))?;
    std::io::Write::write_all(&mut out, text.as_bytes()).map_err(|e| failed(dir, e))
}

pub fn forget(dir: &Path) -> Result<bool, ClientError> {
    match std::fs::remove_file(file(dir)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(failed(dir, e)),
    }
}
