//! Password logins: argon2id hashes in PHC strings, checked off the async threads.
//!
//! The CONNECT username and password (MQTT 3.1.1 section 3.1.3.4 and 3.1.3.5) are checked
//! against the `[[users]]` of the configuration. A refusal becomes CONNACK return code 4 (bad
//! user name or password) or 5 (not authorized), section 3.2.2.3.

use std::collections::HashMap;
use std::sync::Arc;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{
    PasswordHash, PasswordHashString, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::config::{ConfigError, UserConfig, validate_users};

/// Hashes `password` with argon2id, default parameters and a random salt, into a PHC string.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
    Ok(hash.to_string())
}

/// The result of a login check, and the CONNACK return code of a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The client may connect.
    Allowed,
    /// Unknown user or wrong password: CONNACK return code 4 (0x04).
    BadCredentials,
    /// No username while anonymous clients are refused: CONNACK return code 5 (0x05).
    NotAuthorized,
}

impl AuthOutcome {
    /// The CONNACK return code (MQTT 3.1.1 section 3.2.2.3): 0, 4 or 5.
    pub const fn connack_code(self) -> u8 {
        match self {
            AuthOutcome::Allowed => 0x00,
            AuthOutcome::BadCredentials => 0x04,
            AuthOutcome::NotAuthorized => 0x05,
        }
    }
}

/// Checks logins against the configured users; cheap to clone.
///
/// At most as many argon2 checks as there are CPUs run at once (each holds its memory cost,
/// 19 MiB by default), so a flood of CONNECTs queues up instead of exhausting memory.
#[derive(Clone)]
pub struct Authenticator {
    /// The shared state.
    inner: Arc<Inner>,
}

/// The state shared by the clones of an [`Authenticator`].
struct Inner {
    /// The users' password hashes, by username.
    users: HashMap<String, PasswordHashString>,
    /// Whether a CONNECT without a username is allowed.
    allow_anonymous: bool,
    /// The hash checked for unknown users, so that they take as long as known ones.
    dummy: PasswordHashString,
    /// Bounds the number of argon2 checks running at once.
    permits: Semaphore,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("users", &self.inner.users.len())
            .field("allow_anonymous", &self.inner.allow_anonymous)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds the checker from the `[[users]]` tables; the error names the bad `users[i]`.
    pub fn new(users: &[UserConfig], allow_anonymous: bool) -> Result<Self, ConfigError> {
        validate_users(users)?;
        let mut hashes = HashMap::with_capacity(users.len());
        for (i, user) in users.iter().enumerate() {
            let hash =
                PasswordHashString::new(&user.password_hash).map_err(|e| ConfigError::Invalid {
                    field: format!("users[{i}].password_hash"),
                    message: format!("not a PHC string: {e}"),
                })?;
            hashes.insert(user.username.clone(), hash);
        }
        let dummy = dummy_hash(hashes.values().next()).map_err(|e| ConfigError::Invalid {
            field: "users".to_owned(),
            message: format!("cannot prepare password checks: {e}"),
        })?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Authenticator {
            inner: Arc::new(Inner {
                users: hashes,
                allow_anonymous,
                dummy,
                permits: Semaphore::new(cpus),
            }),
        })
    }

    /// Checks the CONNECT username and password.
    ///
    /// No username: [`AuthOutcome::Allowed`] if anonymous clients are allowed, else
    /// [`AuthOutcome::NotAuthorized`]. A username: [`AuthOutcome::Allowed`] if the password
    /// matches, else [`AuthOutcome::BadCredentials`]; unknown users and missing passwords are
    /// checked against a dummy hash so that they take as long as a wrong password. The argon2
    /// work runs in [`tokio::task::spawn_blocking`].
    pub async fn check(&self, username: Option<&str>, password: Option<&[u8]>) -> AuthOutcome {
        let Some(username) = username else {
            return if self.inner.allow_anonymous {
                AuthOutcome::Allowed
            } else {
                AuthOutcome::NotAuthorized
            };
        };
        // The semaphore is never closed, so acquiring fails only if it were; refuse then.
        let Ok(_permit) = self.inner.permits.acquire().await else {
            return AuthOutcome::BadCredentials;
        };
        let inner = Arc::clone(&self.inner);
        let username = username.to_owned();
        let password = password.map(<[u8]>::to_vec);
        let verified = tokio::task::spawn_blocking(move || {
            let known = inner.users.get(&username);
            let (hash, password) = match (known, password.as_deref()) {
                (Some(hash), Some(password)) => (hash, password),
                _ => (&inner.dummy, &b"\0no password\0"[..]),
            };
            let ok = Argon2::default()
                .verify_password(password, &hash.password_hash())
                .is_ok();
            // The dummy never matches: it hashes random bytes.
            ok && known.is_some()
        })
        .await;
        match verified {
            Ok(true) => AuthOutcome::Allowed,
            Ok(false) => AuthOutcome::BadCredentials,
            Err(e) => {
                tracing::error!(error = %e, "password check failed");
                AuthOutcome::BadCredentials
            }
        }
    }
}

/// A hash of random bytes, with the algorithm and parameters of `like` if given (so checking
/// it costs the same), else the defaults of [`hash_password`].
fn dummy_hash(like: Option<&PasswordHashString>) -> anyhow::Result<PasswordHashString> {
    let mut secret = [0u8; 32];
    OsRng.fill_bytes(&mut secret);
    let salt = SaltString::generate(&mut OsRng);
    let hasher = match like.map(PasswordHashString::password_hash) {
        Some(hash) => {
            let algorithm = Algorithm::try_from(hash.algorithm).unwrap_or_default();
            let version = hash
                .version
                .and_then(|v| Version::try_from(v).ok())
                .unwrap_or_default();
            let params = Params::try_from(&hash).unwrap_or_default();
            Argon2::new(algorithm, version, params)
        }
        None => Argon2::default(),
    };
    let hash: PasswordHash<'_> = hasher
        .hash_password(&secret, &salt)
        .map_err(|e| anyhow::anyhow!("cannot hash: {e}"))?;
    Ok(hash.serialize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, EXAMPLE_CONFIG};

    /// One user, `alice`, with password `secret`.
    fn users() -> Vec<UserConfig> {
        vec![UserConfig {
            username: "alice".to_owned(),
            password_hash: hash_password("secret").unwrap(),
        }]
    }

    #[test]
    fn hashes_are_salted_argon2id_phc_strings() {
        let a = hash_password("pw").unwrap();
        let b = hash_password("pw").unwrap();
        assert!(a.starts_with("$argon2id$v=19$"), "{a}");
        assert_ne!(a, b);
        let parsed = PasswordHash::new(&a).unwrap();
        Argon2::default().verify_password(b"pw", &parsed).unwrap();
    }

    #[tokio::test]
    async fn checks_passwords() {
        let auth = Authenticator::new(&users(), false).unwrap();
        assert_eq!(
            auth.check(Some("alice"), Some(b"secret")).await,
            AuthOutcome::Allowed
        );
        assert_eq!(
            auth.check(Some("alice"), Some(b"Secret")).await,
            AuthOutcome::BadCredentials
        );
        assert_eq!(
            auth.check(Some("alice"), None).await,
            AuthOutcome::BadCredentials
        );
        assert_eq!(
            auth.check(Some("bob"), Some(b"secret")).await,
            AuthOutcome::BadCredentials
        );
        assert_eq!(
            auth.check(Some(""), Some(b"")).await,
            AuthOutcome::BadCredentials
        );
        assert_eq!(auth.check(None, None).await, AuthOutcome::NotAuthorized);
        assert_eq!(
            auth.check(None, Some(b"secret")).await,
            AuthOutcome::NotAuthorized
        );
        assert_eq!(AuthOutcome::NotAuthorized.connack_code(), 5);
        assert_eq!(AuthOutcome::BadCredentials.connack_code(), 4);
    }

    #[tokio::test]
    async fn anonymous_clients() {
        let auth = Authenticator::new(&[], true).unwrap();
        assert_eq!(auth.check(None, None).await, AuthOutcome::Allowed);
        assert_eq!(
            auth.check(Some("alice"), Some(b"x")).await,
            AuthOutcome::BadCredentials
        );
    }

    #[tokio::test]
    async fn concurrent_checks_all_finish() {
        let auth = Authenticator::new(&users(), true).unwrap();
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let auth = auth.clone();
                tokio::spawn(async move {
                    let password: &[u8] = if i % 2 == 0 { b"secret" } else { b"nope" };
                    (i, auth.check(Some("alice"), Some(password)).await)
                })
            })
            .collect();
        for task in tasks {
            let (i, outcome) = task.await.unwrap();
            let expected = if i % 2 == 0 {
                AuthOutcome::Allowed
            } else {
                AuthOutcome::BadCredentials
            };
            assert_eq!(outcome, expected);
        }
    }

    #[test]
    fn example_config_users_build_an_authenticator() {
        let config = Config::from_toml_str(EXAMPLE_CONFIG).unwrap();
        Authenticator::new(&config.users, config.access.allow_anonymous).unwrap();
    }

    #[test]
    fn bad_hashes_name_the_user() {
        let mut users = users();
        users.push(UserConfig {
            username: "bob".into(),
            password_hash: "nope".into(),
        });
        let message = Authenticator::new(&users, true).unwrap_err().to_string();
        assert!(message.starts_with("users[1].password_hash:"), "{message}");
    }
}
