//! The keys JWTs are verified with, each pinned to one algorithm: an HS256 secret and RS256 /
//! ES256 public keys from the config, and an identity provider's JWK set (a URL or a file) by
//! `kid`, cached and fetched again when a token names a key it does not hold (key rotation) or
//! the set is older than [`JWKS_MAX_AGE`] (revocation).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::net::{HttpClient, Reach};

/// A fetched JWK set is used at most this long before it is fetched again.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(300);
/// By default an unknown `kid` fetches the set again at most this often (a flood of forged kids
/// must not become a flood of requests to the identity provider).
pub const JWKS_MIN_REFETCH: Duration = Duration::from_secs(10);
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);

/// A key and the one algorithm it verifies.
#[derive(Clone)]
pub struct PinnedKey {
    pub alg: Algorithm,
    pub key: DecodingKey,
}

pub enum JwksSource {
    Url(String),
    File(PathBuf),
}

/// An identity provider's keys by `kid`.
pub struct Jwks {
    source: JwksSource,
    min_refetch: Duration,
    client: HttpClient,
    state: RwLock<JwksState>,
    /// One fetch at a time; requests that miss wait for it instead of fetching too.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct JwksState {
    keys: HashMap<String, PinnedKey>,
    fetched_at: Option<Instant>,
}

impl Jwks {
    pub fn new(source: JwksSource, min_refetch: Duration) -> Self {
        Self {
            source,
            min_refetch,
            client: HttpClient::new(JWKS_TIMEOUT, Reach::Anywhere),
            state: RwLock::new(JwksState::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// The key `kid` names, fetching the set first when it is stale or lacks the kid.
    pub async fn key(&self, kid: &str) -> Result<PinnedKey, String> {
        let (found, age) = self.lookup(kid);
        let stale = age.is_none_or(|a| a > JWKS_MAX_AGE);
        match found {
            Some(key) if !stale => return Ok(key),
            None if age.is_some_and(|a| a < self.min_refetch) => {
                return Err(format!("no key with kid '{}'", crate::text::clip(kid)));
            }
            _ => {}
        }
        let _one = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        let (found, age) = self.lookup(kid);
        if age.is_none_or(|a| a >= self.min_refetch) {
            match self.fetch().await {
                Ok(keys) => {
                    tracing::info!(keys = keys.len(), "JWK set loaded");
                    *self.state.write().expect("jwks") = JwksState {
                        keys,
                        fetched_at: Some(Instant::now()),
                    };
                }
                // The last good set keeps verifying while the provider is unreachable.
                Err(e) => {
                    tracing::warn!(error = %e, "JWK set not refreshed");
                    if let Some(key) = found {
                        return Ok(key);
                    }
                    return Err(format!("the identity provider's keys are unavailable: {e}"));
                }
            }
        }
        self.lookup(kid)
            .0
            .ok_or_else(|| format!("no key with kid '{}'", crate::text::clip(kid)))
    }

    fn lookup(&self, kid: &str) -> (Option<PinnedKey>, Option<Duration>) {
        let state = self.state.read().expect("jwks");
        (
            state.keys.get(kid).cloned(),
            state.fetched_at.map(|t| t.elapsed()),
        )
    }

    async fn fetch(&self) -> Result<HashMap<String, PinnedKey>, String> {
        let body = match &self.source {
            JwksSource::File(path) => {
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
            }
            JwksSource::Url(url) => {
                let response = self.client.get(url).await.map_err(|e| e.to_string())?;
                if response.status != 200 {
                    return Err(format!("{url} answered {}", response.status));
                }
                response.body.to_vec()
            }
        };
        parse_jwks(&body)
    }
}

/// The verifying keys of a JWK set: public keys with a `kid`, not marked for encryption, each
/// pinned to its `alg` (or, without one, the algorithm its key type implies). Symmetric keys
/// are refused: a secret published in a key set is no secret.
pub fn parse_jwks(body: &[u8]) -> Result<HashMap<String, PinnedKey>, String> {
    let set: JwkSet = serde_json::from_slice(body).map_err(|e| format!("not a JWK set: {e}"))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let implied = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => Some(Algorithm::ES256),
                EllipticCurve::P384 => Some(Algorithm::ES384),
                _ => None,
            },
            AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
            AlgorithmParameters::OctetKey(_) => {
                tracing::warn!(kid, "symmetric key in the JWK set ignored");
                continue;
            }
            _ => continue,
        };
        let alg = match jwk.common.key_algorithm {
            Some(a) => match algorithm_of(a) {
                Some(a) => a,
                None => continue,
            },
            None => match implied {
                Some(a) => a,
                None => continue,
            },
        };
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => {
                keys.insert(kid, PinnedKey { alg, key });
            }
            Err(e) => tracing::warn!(kid, error = %e, "unusable key in the JWK set ignored"),
        }
    }
    Ok(keys)
}

/// Signature algorithms only: HMAC and encryption algorithms have no place in a key set.
fn algorithm_of(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}
