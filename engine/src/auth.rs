//! Signing in from a browser: passwords (argon2id), sessions and invitations. Secrets are
//! random 256-bit values shown once; the store keeps their SHA-256 only (like API tokens),
//! and a password only as its argon2id hash.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::admin::token_hash;
use crate::ids::{AgentId, WorkspaceId};
use crate::time::UnixMillis;

/// Shortest and longest password accepted (in characters).
pub const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 10..=200;

/// How long a session lasts after sign-in.
pub const SESSION_MS: UnixMillis = 14 * 24 * 60 * 60 * 1000;

/// How long an invitation can be accepted.
pub const INVITE_MS: UnixMillis = 7 * 24 * 60 * 60 * 1000;

/// A signed-in browser (`session`, by the SHA-256 of its cookie's secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub agent_id: AgentId,
    pub workspace_id: WorkspaceId,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
}

/// Who signs in with an email (`login`, by the lowercased email), and how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    pub agent_id: AgentId,
    pub workspace_id: WorkspaceId,
    /// argon2id, in the PHC string format (parameters and salt included).
    pub password_hash: String,
    pub updated_at: UnixMillis,
}

/// An invitation to choose a password (`invite`, by the SHA-256 of its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    pub agent_id: AgentId,
    pub workspace_id: WorkspaceId,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
}

/// A new random secret (session cookie, invitation code): 256 bits, hex.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The store key of a secret.
pub fn secret_key(secret: &str) -> Vec<u8> {
    token_hash(secret).to_vec()
}

/// The store key of an email's login.
pub fn login_key(email: &str) -> Vec<u8> {
    email.trim().to_lowercase().into_bytes()
}

/// Why a password is refused, if it is.
pub fn password_problem(password: &str) -> Option<String> {
    let chars = password.chars().count();
    (!PASSWORD_CHARS.contains(&chars)).then(|| {
        format!(
            "a password is {} to {} characters",
            PASSWORD_CHARS.start(),
            PASSWORD_CHARS.end()
        )
    })
}

/// The argon2id hash of `password` with a fresh salt (OWASP's parameters, the crate's
/// defaults: 19 MiB, 2 passes). Slow on purpose: call it off the async runtime.
pub fn hash_password(password: &str) -> crate::Result<String> {
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| crate::Error::Storage(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| crate::Error::Storage(format!("hashing a password: {e}")))
}

/// Whether `password` matches the stored hash (constant time within argon2). Slow on
/// purpose: call it off the async runtime.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let hash = hash_password("correct horse battery").expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse battery!", &hash));
        assert!(!verify_password("correct horse battery", "not a hash"));
        let again = hash_password("correct horse battery").expect("hash");
        assert_ne!(hash, again, "a fresh salt each time");
    }

    #[test]
    fn short_and_long_passwords_are_refused() {
        assert!(password_problem("short").is_some());
        assert!(password_problem(&"x".repeat(201)).is_some());
        assert!(password_problem("ten chars!").is_none());
    }

    #[test]
    fn emails_are_keyed_case_insensitively() {
        assert_eq!(login_key(" Ana@Acme.io "), login_key("ana@acme.io"));
        assert_ne!(secret_key("a"), secret_key("b"));
    }
}
