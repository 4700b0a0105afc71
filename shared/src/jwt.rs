//! User tokens: HS256 JWTs with `sub` (user id), `email`, `role`, `ver`
//! (the account's token version), `iat` and `exp`. The provider issues them
//! at login; the gateway and the provider verify them with the same secret.
//! A signature only proves the token was issued: the provider also checks
//! `ver` against the account, whose version moves on every password, e-mail
//! or role change, so earlier tokens stop working at once.

use std::{
    fs,
    io::{self, Write},
    path::Path,
    time::Duration,
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::config::CommonConfig;

/// Clock skew tolerated between the service that issued a token and the
/// one verifying it.
const LEEWAY_SECONDS: u64 = 5;

/// Name of the embedded default secret's file in DATA_DIR.
const SECRET_FILE: &str = "jwt_secret";

/// Random bytes in a generated secret.
const SECRET_BYTES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

/// What a token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    pub email: String,
    pub role: Role,
    /// The account's token version when the token was issued (tokens from
    /// before versions existed count as version 0).
    #[serde(default)]
    pub ver: i64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl From<jsonwebtoken::errors::Error> for JwtError {
    fn from(error: jsonwebtoken::errors::Error) -> JwtError {
        match error.kind() {
            ErrorKind::ExpiredSignature => JwtError::Expired,
            _ => JwtError::Invalid(error.to_string()),
        }
    }
}

/// Issues and verifies HS256 tokens with one secret. Cloning shares nothing
/// mutable; keep one per service.
#[derive(Clone)]
pub struct Jwt {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt").finish_non_exhaustive()
    }
}

impl Jwt {
    pub fn new(secret: &[u8]) -> Jwt {
        // HS256 only: a token may not pick its own algorithm (`none`, or an
        // asymmetric one verified with the secret as a public key).
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECONDS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Jwt { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret), validation }
    }

    /// A token for user `sub` at token version `ver`, valid for `ttl` from now.
    pub fn issue(&self, sub: &str, email: &str, role: Role, ver: i64, ttl: Duration) -> Result<String, JwtError> {
        let iat = chrono::Utc::now().timestamp();
        let ttl = i64::try_from(ttl.as_secs()).map_err(|_| JwtError::Invalid(format!("ttl {ttl:?} is too long")))?;
        let exp = iat.checked_add(ttl).ok_or_else(|| JwtError::Invalid(format!("ttl {ttl}s is too long")))?;
        self.sign(&Claims { sub: sub.to_string(), email: email.to_string(), role, ver, iat, exp })
    }

    /// The claims of a token this secret signed with HS256 and that has not
    /// expired.
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        Ok(jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?.claims)
    }

    fn sign(&self, claims: &Claims) -> Result<String, JwtError> {
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)?)
    }

    /// The secret from config: JWT_SECRET when set, else the embedded default kept in DATA_DIR/jwt_secret (random 32 bytes, hex; created once with mode 0600, read back on later starts).
    ///
    /// The file's text is used exactly as a JWT_SECRET value would be, so
    /// copying it into JWT_SECRET elsewhere yields the same keys.
    pub fn from_config(common: &CommonConfig) -> io::Result<Jwt> {
        match common.jwt_secret.as_deref() {
            Some(secret) if !secret.is_empty() => Ok(Jwt::new(secret.as_bytes())),
            _ => Ok(Jwt::new(embedded_secret(&common.data_dir)?.as_bytes())),
        }
    }
}

/// Reads DATA_DIR/jwt_secret, creating it first if missing.
fn embedded_secret(data_dir: &Path) -> io::Result<String> {
    let path = data_dir.join(SECRET_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => return checked_secret(text, &path),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    fs::create_dir_all(data_dir)?;
    let secret = hex(&rand::random::<[u8; SECRET_BYTES]>());
    // Written in full to a private file first, then linked into place:
    // linking fails if the name exists, so of several services starting
    // at once exactly one creates the secret, and nobody reads it half
    // written. The losers read the winner's.
    let draft = data_dir.join(format!(".{SECRET_FILE}.{}.{}", std::process::id(), hex(&rand::random::<[u8; 8]>())));
    write_private(&draft, &secret)?;
    let linked = fs::hard_link(&draft, &path);
    fs::remove_file(&draft)?;
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created the JWT secret (set JWT_SECRET to share it elsewhere)");
            Ok(secret)
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => checked_secret(fs::read_to_string(&path)?, &path),
        Err(error) => Err(error),
    }
}

fn checked_secret(text: String, path: &Path) -> io::Result<String> {
    let secret = text.trim();
    if secret.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is empty: delete it to create a new secret, or set JWT_SECRET", path.display()),
        ));
    }
    Ok(secret.to_string())
}

/// Creates `path` (it must not exist) readable and writable by its owner
/// only, and writes `text` to it.
fn write_private(path: &Path, text: &str) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const HOUR: Duration = Duration::from_secs(3600);

    fn jwt() -> Jwt {
        Jwt::new(b"test secret, long enough for HS256")
    }

    #[test]
    fn an_issued_token_verifies_to_its_claims() {
        let jwt = jwt();
        let token = jwt.issue("user-7", "ada@example.com", Role::Admin, 0, HOUR).expect("issued");
        let claims = jwt.verify(&token).expect("verifies");
        assert_eq!(claims.sub, "user-7");
        assert_eq!(claims.email, "ada@example.com");
        assert_eq!(claims.role, Role::Admin);
        assert_eq!(claims.exp - claims.iat, 3600);
        assert!((claims.iat - chrono::Utc::now().timestamp()).abs() <= 5);
    }

    #[test]
    fn roles_are_lowercase_in_the_token() {
        assert_eq!(serde_json::to_value(Role::User).expect("serializes"), "user");
        assert_eq!(serde_json::to_value(Role::Admin).expect("serializes"), "admin");
    }

    #[test]
    fn a_tampered_token_is_invalid() {
        let jwt = jwt();
        let token = jwt.issue("user-7", "ada@example.com", Role::User, 0, HOUR).expect("issued");
        let (unsigned, signature) = token.rsplit_once('.').expect("signed");
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        let forged = format!("{unsigned}.{flipped}{}", &signature[1..]);
        assert!(matches!(jwt.verify(&forged), Err(JwtError::Invalid(_))));

        // An admin payload (signed by someone else) under the user's signature.
        let admin = Jwt::new(b"forger").issue("user-7", "ada@example.com", Role::Admin, 0, HOUR).expect("issued");
        let (admin_unsigned, _) = admin.rsplit_once('.').expect("signed");
        let promoted = format!("{admin_unsigned}.{signature}");
        assert!(matches!(jwt.verify(&promoted), Err(JwtError::Invalid(_))));
    }

    #[test]
    fn an_expired_token_is_expired() {
        let jwt = jwt();
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: "user-7".into(),
            email: "ada@example.com".into(),
            role: Role::User,
            ver: 0,
            iat: now - 7200,
            exp: now - 60,
        };
        let token = jwt.sign(&claims).expect("signed");
        assert!(matches!(jwt.verify(&token), Err(JwtError::Expired)));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_invalid() {
        let token = Jwt::new(b"another secret").issue("user-7", "a@example.com", Role::Admin, 0, HOUR).expect("issued");
        assert!(matches!(jwt().verify(&token), Err(JwtError::Invalid(_))));
    }

    #[test]
    fn unsigned_and_garbage_tokens_are_invalid() {
        let jwt = jwt();
        let token = jwt.issue("user-7", "ada@example.com", Role::Admin, 0, HOUR).expect("issued");
        let payload = token.split('.').nth(1).expect("a payload");
        // base64url of {"alg":"none","typ":"JWT"}
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        for token in [format!("{none}.{payload}."), format!("{none}.{payload}")] {
            assert!(matches!(jwt.verify(&token), Err(JwtError::Invalid(_))), "{token}");
        }
        for token in ["", "garbage", "a.b.c", "...", "\u{fffd}.\u{fffd}.\u{fffd}"] {
            assert!(matches!(jwt.verify(token), Err(JwtError::Invalid(_))), "{token:?}");
        }
    }

    #[test]
    fn a_token_without_the_claims_is_invalid() {
        let jwt = jwt();
        #[derive(Serialize)]
        struct Partial {
            sub: &'static str,
            exp: i64,
        }
        let partial = Partial { sub: "user-7", exp: chrono::Utc::now().timestamp() + 3600 };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &partial, &jwt.encoding).expect("signed");
        assert!(matches!(jwt.verify(&token), Err(JwtError::Invalid(_))));
    }

    #[test]
    fn the_configured_secret_is_used_as_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::for_tests(dir.path());
        config.common.jwt_secret = Some("configured".to_string());
        let token = Jwt::from_config(&config.common)
            .expect("keys")
            .issue("u", "e@example.com", Role::User, 0, HOUR)
            .expect("issued");
        assert!(Jwt::new(b"configured").verify(&token).is_ok());
        assert!(!dir.path().join(SECRET_FILE).exists(), "no file when JWT_SECRET is set");
    }

    #[test]
    fn the_default_secret_is_created_once_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        let config = Config::for_tests(&data_dir);

        let first = Jwt::from_config(&config.common).expect("creates the secret");
        let path = data_dir.join(SECRET_FILE);
        let written = fs::read_to_string(&path).expect("secret file");
        let secret = written.trim();
        assert_eq!(secret.len(), 2 * SECRET_BYTES);
        assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()), "{secret}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let token = first.issue("u", "e@example.com", Role::User, 0, HOUR).expect("issued");
        let second = Jwt::from_config(&config.common).expect("reads the secret");
        assert_eq!(fs::read_to_string(&path).expect("secret file"), written, "not rewritten");
        assert!(second.verify(&token).is_ok(), "a restart verifies earlier tokens");
        assert!(Jwt::new(secret.as_bytes()).verify(&token).is_ok(), "the file's text is the secret");
        let leftovers = fs::read_dir(&data_dir).expect("data dir").count();
        assert_eq!(leftovers, 1, "only the secret file is left");

        let elsewhere = tempfile::tempdir().expect("tempdir");
        let other = Jwt::from_config(&Config::for_tests(elsewhere.path()).common).expect("another secret");
        assert!(other.verify(&token).is_err(), "each DATA_DIR gets its own random secret");
    }

    #[test]
    fn services_starting_together_agree_on_one_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config::for_tests(dir.path());
        let jwts: Vec<Jwt> = std::thread::scope(|scope| {
            let starts: Vec<_> = (0..8).map(|_| scope.spawn(|| Jwt::from_config(&config.common))).collect();
            starts.into_iter().map(|start| start.join().expect("no panic").expect("a secret")).collect()
        });
        let token = jwts[0].issue("u", "e@example.com", Role::User, 0, HOUR).expect("issued");
        assert!(jwts.iter().all(|jwt| jwt.verify(&token).is_ok()), "every service verifies the others' tokens");
    }

    #[test]
    fn an_empty_secret_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(SECRET_FILE), "\n").expect("written");
        let error = Jwt::from_config(&Config::for_tests(dir.path()).common).expect_err("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
