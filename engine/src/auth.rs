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

/// The email as logins are keyed: trimmed, lower-cased.
fn email_key(email: &str) -> Vec<u8> {
    email.trim().to_lowercase().into_bytes()
}

/// Every login with this email starts with these bytes (the email and a 0 byte, which no
/// email holds).
pub fn login_prefix(email: &str) -> Vec<u8> {
    let mut key = email_key(email);
    key.push(0);
    key
}

/// The store key of one agent's login. Agents of different workspaces may share an email
/// (one person in two agencies, or someone naming another's address): each has a login of
/// its own, so none can take or block another's.
pub fn login_key(email: &str, agent: AgentId) -> Vec<u8> {
    let mut key = login_prefix(email);
    key.extend_from_slice(&agent.to_bytes());
    key
}

/// Where a login was kept before logins were per agent (the email alone): still read, and
/// moved to [`login_key`] when its password next changes.
pub fn legacy_login_key(email: &str) -> Vec<u8> {
    email_key(email)
}

/// Sign-in tries at most this many logins of one email (each costs a hash), the most
/// recently changed first.
pub const MAX_LOGINS_PER_EMAIL: usize = 8;

/// The logins of an email, the most recently changed first, at most
/// [`MAX_LOGINS_PER_EMAIL`].
pub fn logins_for_email(store: &crate::store::Store, email: &str) -> crate::Result<Vec<Login>> {
    let mut logins: Vec<Login> =
        store.with_prefix(crate::catalogue::Ks::Login, &login_prefix(email))?;
    if let Some(legacy) =
        store.get::<Login>(crate::catalogue::Ks::Login, &legacy_login_key(email))?
    {
        if !logins.iter().any(|l| l.agent_id == legacy.agent_id) {
            logins.push(legacy);
        }
    }
    logins.sort_by_key(|l| std::cmp::Reverse(l.updated_at));
    logins.truncate(MAX_LOGINS_PER_EMAIL);
    Ok(logins)
}

/// The login of one agent, if it has a password.
pub fn login_of(
    store: &crate::store::Store,
    email: &str,
    agent: AgentId,
) -> crate::Result<Option<Login>> {
    if let Some(login) =
        store.get::<Login>(crate::catalogue::Ks::Login, &login_key(email, agent))?
    {
        return Ok(Some(login));
    }
    Ok(store
        .get::<Login>(crate::catalogue::Ks::Login, &legacy_login_key(email))?
        .filter(|l| l.agent_id == agent))
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
        let agent = AgentId::new();
        assert_eq!(
            login_key(" Ana@Acme.io ", agent),
            login_key("ana@acme.io", agent)
        );
        assert_ne!(
            login_key("ana@acme.io", agent),
            login_key("ana@acme.io", AgentId::new())
        );
        // One email's logins are never another's whose address it begins.
        assert!(login_key("ana@acme.io", agent).starts_with(&login_prefix("ana@acme.io")));
        assert!(!login_key("ana@acme.io", agent).starts_with(&login_prefix("ana@acme.i")));
        assert_ne!(secret_key("a"), secret_key("b"));
    }
}
