//! Bearer tokens: JWTs signed HS256 (a configured secret) or RS256 (a configured public key),
//! and static API keys (their SHA-256 in the config file). Default deny: no token, a bad
//! signature, an expired token or an unknown role is a 401 with a JSON reason.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::{hmac, signature};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Principal, Scope};
use crate::catalog::{CatalogError, hex_prefix};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: i64 = 30;

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
    #[serde(default)]
    pub issuer: Option<String>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// Why a request was not authenticated; always a 401.
#[derive(Debug, Clone, PartialEq, Eq)]
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

pub struct Authenticator {
    roles: BTreeMap<String, RoleSpec>,
    levels: Vec<String>,
    hs256: Option<hmac::Key>,
    rs256: Option<Vec<u8>>,
    issuer: Option<String>,
    audience: Option<String>,
    /// SHA-256 hex of the key -> principal.
    api_keys: HashMap<String, Principal>,
}

impl Authenticator {
    /// Reads and checks the config file against the hierarchy's levels. Errors name file and key.
    pub fn load(
        path: &Path,
        levels_of: impl Fn(&str) -> Option<Vec<String>>,
    ) -> Result<Self, CatalogError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| CatalogError::new(&file, "", format!("cannot read: {e}")))?;
        let de = serde_yaml_ng::Deserializer::from_str(&text);
        let config: AuthConfig = serde_path_to_error::deserialize(de)
            .map_err(|e| CatalogError::new(&file, e.path().to_string(), e.inner().to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::new(config, base, levels_of)
            .map_err(|(key, reason)| CatalogError::new(&file, key, reason))
    }

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
            hs256: None,
            rs256: None,
            issuer: None,
            audience: None,
            api_keys: HashMap::new(),
        };
        if let Some(jwt) = config.jwt {
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
                auth.hs256 = Some(hmac::Key::new(hmac::HMAC_SHA256, s.as_bytes()));
            }
            if let Some(p) = &jwt.rs256_public_key {
                let pem = std::fs::read_to_string(base.join(p)).map_err(|e| {
                    (
                        "jwt.rs256_public_key".to_string(),
                        format!("cannot read {}: {e}", p.display()),
                    )
                })?;
                auth.rs256 = Some(
                    rsa_public_key(&pem).map_err(|e| ("jwt.rs256_public_key".to_string(), e))?,
                );
            }
            auth.issuer = jwt.issuer;
            auth.audience = jwt.audience;
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
    pub fn authenticate(&self, header: Option<&str>) -> Result<Principal, AuthError> {
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
            self.verify_jwt(token)
        } else {
            let hash = hex_prefix(&Sha256::digest(token.as_bytes()), 64);
            self.api_keys
                .get(&hash)
                .cloned()
                .ok_or_else(|| deny("invalid_token", "unknown API key"))
        }
    }

    fn verify_jwt(&self, token: &str) -> Result<Principal, AuthError> {
        let (signed, sig) = token.rsplit_once('.').expect("two dots");
        let (head, body) = signed.split_once('.').expect("two dots");
        let decode = |part: &str, what: &str| {
            URL_SAFE_NO_PAD.decode(part).map_err(|_| {
                deny(
                    "invalid_token",
                    format!("the token's {what} is not base64url"),
                )
            })
        };
        #[derive(Deserialize)]
        struct Header {
            alg: String,
        }
        let header: Header = serde_json::from_slice(&decode(head, "header")?).map_err(|_| {
            deny(
                "invalid_token",
                "the token's header is not JSON with an alg",
            )
        })?;
        let sig = decode(sig, "signature")?;
        let verified =
            match header.alg.as_str() {
                "HS256" => {
                    let key = self.hs256.as_ref().ok_or_else(|| {
                        deny("invalid_token", "HS256 tokens are not accepted here")
                    })?;
                    hmac::verify(key, signed.as_bytes(), &sig).is_ok()
                }
                "RS256" => {
                    let key = self.rs256.as_ref().ok_or_else(|| {
                        deny("invalid_token", "RS256 tokens are not accepted here")
                    })?;
                    signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, key)
                        .verify(signed.as_bytes(), &sig)
                        .is_ok()
                }
                other => {
                    return Err(deny(
                        "invalid_token",
                        format!(
                            "unsupported alg '{}' (HS256 or RS256)",
                            crate::semantic::clip(other)
                        ),
                    ));
                }
            };
        if !verified {
            return Err(deny(
                "invalid_signature",
                "the token's signature does not verify",
            ));
        }
        let claims: Claims = serde_json::from_slice(&decode(body, "claims")?).map_err(|e| {
            deny(
                "invalid_claims",
                format!("the token's claims are not kpilens claims (sub, role, scope, exp): {e}"),
            )
        })?;
        let now = chrono::Utc::now().timestamp();
        if claims.exp + LEEWAY_SECS < now {
            return Err(deny("token_expired", "the token has expired"));
        }
        if claims.nbf.is_some_and(|nbf| nbf - LEEWAY_SECS > now) {
            return Err(deny(
                "token_not_yet_valid",
                "the token is not valid yet (nbf)",
            ));
        }
        if self.issuer.is_some() && claims.iss != self.issuer {
            return Err(deny(
                "invalid_claims",
                "the token's issuer (iss) is not accepted",
            ));
        }
        if self.audience.is_some() && claims.aud != self.audience {
            return Err(deny(
                "invalid_claims",
                "the token's audience (aud) is not this server",
            ));
        }
        self.principal(&claims.sub, &claims.role, claims.scope)
    }

    /// A principal for a role and scope, both checked against the configuration.
    pub fn principal(&self, name: &str, role: &str, scope: Scope) -> Result<Principal, AuthError> {
        let spec = self.roles.get(role).ok_or_else(|| {
            deny(
                "invalid_claims",
                format!("unknown role '{}'", crate::semantic::clip(role)),
            )
        })?;
        if let Some(level) = scope.0.keys().find(|l| !self.levels.contains(l)) {
            return Err(deny(
                "invalid_claims",
                format!(
                    "scope level '{}' is not a level of the hierarchy ({})",
                    crate::semantic::clip(level),
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

/// Signs HS256 claims (the demo's tokens; tests).
pub fn sign_hs256(secret: &[u8], claims: &Claims) -> String {
    let signed = signing_input("HS256", claims);
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, secret),
        signed.as_bytes(),
    );
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// `base64url(header).base64url(claims)` for an algorithm.
pub fn signing_input(alg: &str, claims: &Claims) -> String {
    let header = serde_json::json!({ "alg": alg, "typ": "JWT" });
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise"))
    )
}

/// The RSAPublicKey DER ring verifies with, from a PEM public key (SPKI or PKCS#1).
fn rsa_public_key(pem: &str) -> Result<Vec<u8>, String> {
    let label = pem
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("-----BEGIN ")
                .and_then(|l| l.strip_suffix("-----"))
        })
        .ok_or("not a PEM file")?
        .to_string();
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| format!("bad PEM base64: {e}"))?;
    match label.as_str() {
        "RSA PUBLIC KEY" => Ok(der),
        // SubjectPublicKeyInfo ::= SEQUENCE { algorithm SEQUENCE, subjectPublicKey BIT STRING }
        "PUBLIC KEY" => {
            let spki = der_element(&der, 0x30).ok_or("not a DER SEQUENCE")?;
            let algorithm_len = der_len(spki, 0x30).ok_or("no algorithm identifier")?;
            let bits =
                der_element(&spki[algorithm_len..], 0x03).ok_or("no public key bit string")?;
            match bits.split_first() {
                Some((0, key)) => Ok(key.to_vec()),
                _ => Err("the public key bit string is not byte-aligned".to_string()),
            }
        }
        other => Err(format!(
            "expected a PUBLIC KEY or RSA PUBLIC KEY, not {other}"
        )),
    }
}

/// The content of the DER element at the start of `der` with the given tag.
fn der_element(der: &[u8], tag: u8) -> Option<&[u8]> {
    let (header, len) = der_header(der, tag)?;
    der.get(header..header + len)
}

/// The whole length (header + content) of the DER element at the start of `der`.
fn der_len(der: &[u8], tag: u8) -> Option<usize> {
    let (header, len) = der_header(der, tag)?;
    Some(header + len)
}

fn der_header(der: &[u8], tag: u8) -> Option<(usize, usize)> {
    if *der.first()? != tag {
        return None;
    }
    let first = *der.get(1)? as usize;
    if first < 0x80 {
        return Some((2, first));
    }
    let n = first & 0x7f;
    if n == 0 || n > 4 {
        return None;
    }
    let len = der
        .get(2..2 + n)?
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | *b as usize);
    Some((2 + n, len))
}
