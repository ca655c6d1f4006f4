//! Bearer tokens: JWTs verified by `jsonwebtoken` and static API keys (their SHA-256 in the
//! config file). JWT keys: an HS256 secret, RS256 / ES256 public keys (PEM files), and an
//! identity provider's JWK set by `kid` (`jwks_url` or `jwks_file`: Keycloak, ADFS, Azure AD).
//! Every key verifies exactly one algorithm; a token whose header names another, or `none`, is
//! refused. Default deny: no token, a bad signature, an expired token, a wrong issuer or
//! audience, or an unknown role is a 401 with a reason.

mod keys;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use keys::{JWKS_MIN_REFETCH, Jwks, JwksSource, PinnedKey, parse_jwks};

use super::{Principal, Scope};
use crate::net::HttpClient;
use crate::text::{clip, hex_prefix};

/// How long ahead a token's `exp` may be by default (`jwt.max_lifetime_secs`): a day.
const DEFAULT_MAX_LIFETIME_SECS: i64 = 86_400;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 30;

/// The auth config file (`--auth kpilens-auth.yaml`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The hierarchy scopes are nodes of.
    #[serde(default = "org")]
    pub hierarchy: String,
    pub roles: BTreeMap<String, RoleSpec>,
    #[serde(default)]
    pub jwt: Option<JwtSpec>,
    #[serde(default)]
    pub api_keys: Vec<ApiKeySpec>,
}

fn org() -> String {
    "org".to_string()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    /// Names, ID numbers and phones are shown unmasked to this role.
    #[serde(default)]
    pub personal_data: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSpec {
    /// Environment variable holding the HS256 secret (preferred: secrets stay out of files).
    #[serde(default)]
    pub hs256_secret_env: Option<String>,
    #[serde(default)]
    pub hs256_secret: Option<String>,
    /// PEM file (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY`), relative to the config file.
    #[serde(default)]
    pub rs256_public_key: Option<PathBuf>,
    /// PEM file (SPKI `PUBLIC KEY` on P-256), relative to the config file.
    #[serde(default)]
    pub es256_public_key: Option<PathBuf>,
    /// The identity provider's JWK set (`.../protocol/openid-connect/certs`): keys by `kid`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// A JWK set in a file, relative to the config file (read again like a fetched set).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// A token naming an unknown `kid` fetches the set again at most this often (default 10).
    #[serde(default)]
    pub jwks_refetch_secs: Option<u64>,
    /// Accept a `jwks_url` over plain `http://` (a test identity provider on loopback): whoever
    /// answers for that URL mints any principal, so it is refused unless said here, and logged.
    #[serde(default)]
    pub jwks_allow_http: bool,
    /// The longest a token may still be valid for when it is shown (default 86,400 s: a day).
    /// A token valid for years is a stolen key that never expires.
    #[serde(default)]
    pub max_lifetime_secs: Option<u64>,
    #[serde(default)]
    pub issuer: Option<String>,
    /// The `aud` this server is: a token must name it (as a string or in an array).
    #[serde(default)]
    pub audience: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySpec {
    pub name: String,
    /// Hex SHA-256 of the key: the key itself is never stored.
    pub sha256: String,
    pub role: String,
    #[serde(default)]
    pub scope: Scope,
}

/// The claims kpilens reads from a JWT.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: String,
    #[serde(default)]
    pub scope: Scope,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// One audience or several, as identity providers send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Why a request was not authenticated; always a 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AuthError {
    pub code: &'static str,
    pub message: String,
}

fn deny(code: &'static str, message: impl Into<String>) -> AuthError {
    AuthError {
        code,
        message: message.into(),
    }
}

/// A config file that cannot be used, naming the file and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {reason}")]
pub struct AuthConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

pub struct Authenticator {
    roles: BTreeMap<String, RoleSpec>,
    levels: Vec<String>,
    /// Keys from the config file, without a `kid`: chosen by the token's `alg`.
    static_keys: Vec<PinnedKey>,
    jwks: Option<Jwks>,
    issuer: Option<String>,
    audience: Option<String>,
    /// A JWT whose `exp` is further ahead than this (seconds) is refused.
    max_lifetime_secs: i64,
    /// SHA-256 hex of the key -> principal.
    api_keys: HashMap<String, Principal>,
}

impl Authenticator {
    /// Reads and checks the config file against the hierarchy's levels. Errors name file and key.
    pub fn load(
        path: &Path,
        levels_of: impl Fn(&str) -> Option<Vec<String>>,
    ) -> Result<Self, AuthConfigError> {
        let file = path.display().to_string();
        let error = |key: String, reason: String| AuthConfigError {
            file: file.clone(),
            key,
            reason,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| error(String::new(), format!("cannot read: {e}")))?;
        let de = serde_yaml_ng::Deserializer::from_str(&text);
        let config: AuthConfig = serde_path_to_error::deserialize(de)
            .map_err(|e| error(e.path().to_string(), e.inner().to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::new(config, base, levels_of).map_err(|(key, reason)| error(key, reason))
    }

    /// Checks a config; an error is (key, reason).
    pub fn new(
        config: AuthConfig,
        base: &Path,
        levels_of: impl Fn(&str) -> Option<Vec<String>>,
    ) -> Result<Self, (String, String)> {
        let levels = levels_of(&config.hierarchy).ok_or_else(|| {
            (
                "hierarchy".to_string(),
                format!("unknown hierarchy '{}'", config.hierarchy),
            )
        })?;
        let mut auth = Authenticator {
            roles: config.roles,
            levels,
            static_keys: Vec::new(),
            jwks: None,
            issuer: None,
            audience: None,
            max_lifetime_secs: DEFAULT_MAX_LIFETIME_SECS,
            api_keys: HashMap::new(),
        };
        if let Some(jwt) = config.jwt {
            auth.static_keys = static_keys(&jwt, base)?;
            let refetch = jwt
                .jwks_refetch_secs
                .map_or(JWKS_MIN_REFETCH, std::time::Duration::from_secs);
            auth.jwks = match (&jwt.jwks_url, &jwt.jwks_file) {
                (Some(_), Some(_)) => {
                    return Err((
                        "jwt".to_string(),
                        "give jwks_url or jwks_file, not both".to_string(),
                    ));
                }
                (Some(url), None) => {
                    HttpClient::check_url(url)
                        .map_err(|e| ("jwt.jwks_url".to_string(), e.to_string()))?;
                    if !url.starts_with("https://") {
                        if !jwt.jwks_allow_http {
                            return Err((
                                "jwt.jwks_url".to_string(),
                                format!(
                                    "'{}': key material must come over https (RFC 8414: a \
                                     jwks_uri uses https), or whoever answers for that URL mints \
                                     any principal; for a test identity provider on a trusted \
                                     network set jwt.jwks_allow_http: true",
                                    crate::text::clip(url)
                                ),
                            ));
                        }
                        tracing::warn!(url = %crate::text::clip(url), "INSECURE: JWT keys fetched over plain http (jwt.jwks_allow_http): anyone on the path can mint tokens");
                    }
                    Some(Jwks::new(JwksSource::Url(url.clone()), refetch))
                }
                (None, Some(path)) => {
                    let path = base.join(path);
                    let text = std::fs::read(&path).map_err(|e| {
                        (
                            "jwt.jwks_file".to_string(),
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })?;
                    parse_jwks(&text).map_err(|e| ("jwt.jwks_file".to_string(), e))?;
                    Some(Jwks::new(JwksSource::File(path), refetch))
                }
                (None, None) => None,
            };
            auth.issuer = jwt.issuer;
            auth.audience = jwt.audience;
            if let Some(max) = jwt.max_lifetime_secs {
                auth.max_lifetime_secs = i64::try_from(max).unwrap_or(i64::MAX);
            }
        }
        for (i, k) in config.api_keys.iter().enumerate() {
            let key = format!("api_keys[{i}]");
            let principal = auth
                .principal(&k.name, &k.role, k.scope.clone())
                .map_err(|e| (key.clone(), e.message))?;
            if k.sha256.len() != 64 || !k.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err((
                    format!("{key}.sha256"),
                    "64 hex digits (sha256sum of the key)".to_string(),
                ));
            }
            auth.api_keys
                .insert(k.sha256.to_ascii_lowercase(), principal);
        }
        Ok(auth)
    }

    /// The principal of an `Authorization` header value.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let header = header.ok_or_else(|| {
            deny(
                "missing_token",
                "this route needs a token: Authorization: Bearer <token>",
            )
        })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                deny(
                    "invalid_token",
                    "the Authorization header must be 'Bearer <token>'",
                )
            })?;
        if token.matches('.').count() == 2 {
            self.verify_jwt(token).await
        } else {
            let hash = hex_prefix(&Sha256::digest(token.as_bytes()), 64);
            self.api_keys
                .get(&hash)
                .cloned()
                .ok_or_else(|| deny("invalid_token", "unknown API key"))
        }
    }

    async fn verify_jwt(&self, token: &str) -> Result<Principal, AuthError> {
        // The header only chooses the key; the key's own algorithm is what is verified.
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            deny(
                "invalid_token",
                format!("the token's header is not a JWS header with a known alg: {e}"),
            )
        })?;
        let key = self.key_for(&header).await?;
        let mut validation = Validation::new(key.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        match &self.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| refusal(&e))?;
        let claims = data.claims;
        let ahead = claims.exp.saturating_sub(chrono::Utc::now().timestamp());
        if ahead > self.max_lifetime_secs.saturating_add(LEEWAY_SECS as i64) {
            return Err(deny(
                "invalid_token",
                format!(
                    "the token is valid for {ahead} s more, longer than the {} s this server \
                     accepts (jwt.max_lifetime_secs): ask the identity provider for a \
                     shorter-lived one",
                    self.max_lifetime_secs
                ),
            ));
        }
        self.principal(&claims.sub, &claims.role, claims.scope)
    }

    /// The key a token's header points at: its `kid` in the JWK set, or the configured key of
    /// its `alg`.
    async fn key_for(&self, header: &Header) -> Result<PinnedKey, AuthError> {
        if let (Some(kid), Some(jwks)) = (&header.kid, &self.jwks) {
            let key = jwks.key(kid).await.map_err(|e| deny("invalid_token", e))?;
            if key.alg != header.alg {
                return Err(deny(
                    "invalid_token",
                    format!(
                        "key '{}' verifies {:?}, not {:?}",
                        clip(kid),
                        key.alg,
                        header.alg
                    ),
                ));
            }
            return Ok(key);
        }
        self.static_keys
            .iter()
            .find(|k| k.alg == header.alg)
            .cloned()
            .ok_or_else(|| {
                deny(
                    "invalid_token",
                    format!("{:?} tokens are not accepted here", header.alg),
                )
            })
    }

    /// A principal for a role and scope, both checked against the configuration.
    pub fn principal(&self, name: &str, role: &str, scope: Scope) -> Result<Principal, AuthError> {
        let spec = self
            .roles
            .get(role)
            .ok_or_else(|| deny("invalid_claims", format!("unknown role '{}'", clip(role))))?;
        if let Some(level) = scope.0.keys().find(|l| !self.levels.contains(l)) {
            return Err(deny(
                "invalid_claims",
                format!(
                    "scope level '{}' is not a level of the hierarchy ({})",
                    clip(level),
                    self.levels.join(" > ")
                ),
            ));
        }
        Ok(Principal {
            name: name.to_string(),
            role: role.to_string(),
            scope,
            personal_data: spec.personal_data,
        })
    }
}

/// The keys named in the config file, each pinned to its algorithm.
fn static_keys(jwt: &JwtSpec, base: &Path) -> Result<Vec<PinnedKey>, (String, String)> {
    let mut keys = Vec::new();
    let secret = match (&jwt.hs256_secret_env, &jwt.hs256_secret) {
        (Some(var), _) => Some(std::env::var(var).map_err(|_| {
            (
                "jwt.hs256_secret_env".to_string(),
                format!("environment variable {var} is not set"),
            )
        })?),
        (None, s) => s.clone(),
    };
    if let Some(s) = secret {
        if s.len() < 32 {
            return Err((
                "jwt".to_string(),
                "the HS256 secret must be at least 32 bytes".to_string(),
            ));
        }
        let key = DecodingKey::from_secret(s.as_bytes())
            .map_err(|e| ("jwt.hs256_secret".to_string(), e.to_string()))?;
        keys.push(PinnedKey {
            alg: Algorithm::HS256,
            key,
        });
    }
    let pem_keys: [(&str, &Option<PathBuf>, Algorithm); 2] = [
        (
            "jwt.rs256_public_key",
            &jwt.rs256_public_key,
            Algorithm::RS256,
        ),
        (
            "jwt.es256_public_key",
            &jwt.es256_public_key,
            Algorithm::ES256,
        ),
    ];
    for (field, path, alg) in pem_keys {
        let Some(path) = path else { continue };
        let pem = std::fs::read(base.join(path)).map_err(|e| {
            (
                field.to_string(),
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let key = match alg {
            Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
            _ => DecodingKey::from_ec_pem(&pem),
        }
        .map_err(|e| (field.to_string(), format!("not a {alg:?} public key: {e}")))?;
        keys.push(PinnedKey { alg, key });
    }
    Ok(keys)
}

/// A verification failure as the client sees it: a code and a reason, never the key.
fn refusal(e: &jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        JwtErrorKind::InvalidSignature => {
            deny("invalid_signature", "the token's signature does not verify")
        }
        JwtErrorKind::ExpiredSignature => deny("token_expired", "the token has expired"),
        JwtErrorKind::ImmatureSignature => {
            deny("token_not_yet_valid", "the token is not valid yet (nbf)")
        }
        JwtErrorKind::InvalidIssuer => {
            deny("invalid_claims", "the token's issuer (iss) is not accepted")
        }
        JwtErrorKind::InvalidAudience => deny(
            "invalid_claims",
            "the token's audience (aud) is not this server",
        ),
        JwtErrorKind::MissingRequiredClaim(c) => {
            deny("invalid_claims", format!("the token has no '{c}' claim"))
        }
        JwtErrorKind::Json(e) => deny(
            "invalid_claims",
            format!("the token's claims are not kpilens claims (sub, role, scope, exp): {e}"),
        ),
        JwtErrorKind::InvalidAlgorithm => deny(
            "invalid_token",
            "the token's alg is not the algorithm of its key",
        ),
        _ => deny("invalid_token", format!("the token does not decode: {e}")),
    }
}

/// Signs HS256 claims (the demo's tokens; tests).
pub fn sign_hs256(secret: &[u8], claims: &Claims) -> String {
    EncodingKey::from_secret(secret)
        .and_then(|key| jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key))
        .expect("an HS256 secret is not empty")
}
