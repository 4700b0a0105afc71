//! Password rules and argon2 hashes (argon2id, the crate's default
//! parameters: 19 MiB, 2 passes). Hashing takes tens of milliseconds of CPU,
//! so it runs on the blocking pool, never on a runtime thread, and at most
//! [`MAX_CONCURRENT_HASHES`] at once: 500 logins at the same moment wait
//! their turn instead of asking for 500 × 19 MiB.

use std::sync::LazyLock;

use tokio::sync::Semaphore;

use argon2::{
    Argon2,
    password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
};

use crate::error::ApiError;

pub const MIN_LENGTH: usize = 8;
/// Longer passwords would only make hashing slower (a cheap way to burn
/// the server's CPU).
pub const MAX_LENGTH: usize = 128;

/// Hashes computed at once in this process (each holds 19 MiB while it
/// runs); the others wait. More than the cores would only queue in the
/// blocking pool anyway.
pub const MAX_CONCURRENT_HASHES: usize = 4;

static HASHING: Semaphore = Semaphore::const_new(MAX_CONCURRENT_HASHES);

/// Runs `work` on the blocking pool once a hashing slot is free.
async fn hashing<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let _slot = HASHING.acquire().await.ok()?;
    tokio::task::spawn_blocking(work).await.ok()
}

/// A hash nobody's password matches, verified when the e-mail is unknown
/// so a login takes as long whether or not the account exists.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| hash_now("not a real password").expect("hashing works"));

/// A password that meets the rules.
pub fn check(password: &str) -> Result<(), ApiError> {
    let length = password.chars().count();
    if length < MIN_LENGTH {
        return Err(ApiError::invalid("password", format!("must be at least {MIN_LENGTH} characters")));
    }
    if length > MAX_LENGTH {
        return Err(ApiError::invalid("password", format!("must be at most {MAX_LENGTH} characters")));
    }
    Ok(())
}

pub async fn hash(password: &str) -> Result<String, ApiError> {
    let password = password.to_string();
    hashing(move || hash_now(&password)).await.ok_or(ApiError::Internal)?
}

/// Whether `password` matches `hash`; `None` checks against a dummy hash
/// (always false, same cost).
pub async fn verify(password: &str, hash: Option<&str>) -> bool {
    let password = password.to_string();
    let hash = hash.map_or_else(|| DUMMY_HASH.clone(), str::to_string);
    hashing(move || {
        PasswordHash::new(&hash)
            .is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .unwrap_or(false)
}

fn hash_now(password: &str) -> Result<String, ApiError> {
    // A fresh random salt per hash (the `getrandom` feature).
    Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(|error| {
        tracing::error!(%error, "password hashing failed");
        ApiError::Internal
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let hashed = hash("correct horse").await.unwrap();
        assert!(hashed.starts_with("$argon2id$"));
        assert!(verify("correct horse", Some(&hashed)).await);
        assert!(!verify("correct horsE", Some(&hashed)).await);
        assert!(!verify("correct horse", None).await, "the dummy hash matches nothing");
        assert!(!verify("x", Some("not a hash")).await);
    }

    #[test]
    fn passwords_need_8_to_128_characters() {
        assert!(check("1234567").is_err());
        assert!(check("12345678").is_ok());
        assert!(check(&"é".repeat(128)).is_ok(), "characters, not bytes");
        assert!(check(&"a".repeat(129)).is_err());
    }
}
