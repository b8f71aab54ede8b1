//! Authentication as clearml-server does it: Basic (access key / secret key) accepted on every
//! endpoint, Bearer HS256 JWTs issued by `auth.login` with the claims clients decode without
//! verifying (`api_version`, `server_version`, `feature_set`, `identity`, `exp`), revocation through
//! `auth.logout`, and the 401 subcodes 10/20/21/22/30.

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::doc::{self, Doc};
use super::error::ApiError;
use super::state::{Identity, Store};

/// API version the double reports by default (clearml-server 2.3; an older release set with
/// `ClearmlDouble::set_server_version` reports its own).
pub const API_VERSION: &str = "2.34";
/// Server version the double reports by default.
pub const SERVER_VERSION: &str = super::release::NEWEST;
/// Server build the double reports.
pub const SERVER_BUILD: &str = "double";
/// Default token lifetime (`default_expiration_sec`, 30 days).
pub const DEFAULT_EXPIRATION_SEC: i64 = 2_592_000;
/// Longest token lifetime a caller may ask for (`max_expiration_sec`, 1 year).
pub const MAX_EXPIRATION_SEC: i64 = 31_536_000;
/// Name of the session cookie `auth.login` sets and every call honours.
pub const AUTH_COOKIE: &str = "clearml_token_basic";

/// The claims of a token issued by the double.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Who the token authenticates.
    pub identity: Identity,
    /// Issued at (epoch seconds).
    pub iat: i64,
    /// Expiry (epoch seconds).
    pub exp: i64,
    /// Random session id (what revocation keys on).
    pub session_id: String,
    /// Always `Bearer`.
    pub auth_type: String,
    /// Server max API version, e.g. `2.34`.
    pub api_version: String,
    /// Server version, e.g. `2.3.0`.
    pub server_version: String,
    /// Server build.
    pub server_build: String,
    /// `basic` = the open-source server.
    pub feature_set: String,
}

/// A successfully authenticated call.
#[derive(Debug, Clone)]
pub(crate) struct Authed {
    /// Caller identity.
    pub identity: Identity,
    /// Session id when the call used a Bearer token.
    pub session: Option<String>,
}

/// Signs a new token for `identity`, valid `expiration_sec` from the store's clock.
pub(crate) fn issue_token(
    store: &mut Store,
    identity: &Identity,
    expiration_sec: i64,
) -> Result<String, ApiError> {
    let iat = store.now().timestamp();
    let claims = Claims {
        identity: identity.clone(),
        iat,
        exp: iat + expiration_sec,
        session_id: doc::new_id(),
        auth_type: "Bearer".into(),
        api_version: store.release.api.to_string(),
        server_version: store.release.text.clone(),
        server_build: SERVER_BUILD.into(),
        feature_set: "basic".into(),
    };
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&store.tokens.secret),
    )
    .map_err(|e| ApiError::internal(&format!("failed signing token: {e}")))?;
    store.tokens.issued.push(claims.session_id);
    Ok(token)
}

/// Decodes and validates a Bearer token (signature, expiry against the store clock, revocation).
pub(crate) fn verify_token(store: &Store, token: &str) -> Result<Claims, ApiError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(&store.tokens.secret),
        &validation,
    )
    .map_err(|e| {
        let reason = match e.kind() {
            ErrorKind::InvalidSignature => "Signature verification failed".to_string(),
            ErrorKind::InvalidToken => "Not enough segments".to_string(),
            _ => e.to_string(),
        };
        ApiError::invalid_token("invalid jwt token", &[("reason", reason)])
    })?;
    let claims = data.claims;
    let expired =
        claims.exp <= store.now().timestamp() || store.tokens.expired.contains(&claims.session_id);
    if expired {
        return Err(ApiError::invalid_token(
            "invalid jwt token",
            &[("reason", "Signature has expired".to_string())],
        ));
    }
    if store.tokens.revoked.contains(&claims.session_id) {
        return Err(ApiError::invalid_token("revoked token", &[]));
    }
    Ok(claims)
}

fn authorize_basic(store: &Store, payload: &str) -> Result<Identity, ApiError> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(payload.trim())
        .map_err(|e| ApiError::bad_credentials(&e.to_string()))?;
    // Python decodes the payload as latin-1: every byte is one character.
    let text: String = decoded.iter().map(|b| char::from(*b)).collect();
    let (key, secret) = text.split_once(':').unwrap_or((text.as_str(), ""));
    match store.credentials.get(key) {
        Some(c) if c.secret_key == secret => Ok(c.identity.clone()),
        _ => Err(ApiError::invalid_credentials(
            "failed to locate provided credentials",
        )),
    }
}

/// Authenticates a call from its `Authorization` header, or the session cookie when the header is absent.
pub(crate) fn authenticate(
    store: &Store,
    authorization: Option<&str>,
    cookie_token: Option<&str>,
) -> Result<Authed, ApiError> {
    let header = match (authorization, cookie_token) {
        (Some(h), _) => h.to_string(),
        (None, Some(token)) => format!("Bearer {token}"),
        (None, None) => return Err(ApiError::no_credentials()),
    };
    let (scheme, payload) = header.split_once(' ').unwrap_or((header.as_str(), ""));
    match scheme {
        "Basic" => Ok(Authed {
            identity: authorize_basic(store, payload)?,
            session: None,
        }),
        "Bearer" => {
            let claims = verify_token(store, payload.trim())?;
            Ok(Authed {
                identity: claims.identity,
                session: Some(claims.session_id),
            })
        }
        _ => Err(ApiError::bad_auth_type()),
    }
}

/// `auth.login`: a new token for the caller (Basic or Bearer), honouring `expiration_sec`.
pub(crate) fn login(store: &mut Store, authed: &Authed, data: &Doc) -> Result<Value, ApiError> {
    let expiration = match doc::opt_i64(data, "expiration_sec")? {
        None | Some(0) => DEFAULT_EXPIRATION_SEC,
        Some(sec) if !(1..=MAX_EXPIRATION_SEC).contains(&sec) => {
            return Err(ApiError::validation(format!(
                "Invalid expiration_sec (must be between 1 and {MAX_EXPIRATION_SEC}): expiration_sec={sec}"
            )));
        }
        Some(sec) => sec,
    };
    let token = issue_token(store, &authed.identity, expiration)?;
    Ok(json!({ "token": token }))
}

/// `auth.logout`: revokes the Bearer token the call was made with.
pub(crate) fn logout(store: &mut Store, authed: &Authed) -> Value {
    if let Some(session) = &authed.session {
        store.tokens.revoked.insert(session.clone());
    }
    json!({})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clearml::state::{DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY};
    use chrono::Duration;

    fn basic(key: &str, secret: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"))
        )
    }

    #[test]
    fn basic_and_bearer_and_their_failures() {
        let mut store = Store::new();
        let ok = authenticate(
            &store,
            Some(&basic(DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY)),
            None,
        )
        .expect("valid basic");
        assert_eq!(ok.identity, Identity::test_user());
        let bad = authenticate(&store, Some(&basic(DEFAULT_ACCESS_KEY, "nope")), None)
            .expect_err("wrong secret");
        assert_eq!((bad.code, bad.subcode), (401, 22));
        let none = authenticate(&store, None, None).expect_err("missing");
        assert_eq!((none.code, none.subcode), (401, 20));
        let scheme = authenticate(&store, Some("Digest abc"), None).expect_err("scheme");
        assert_eq!((scheme.code, scheme.subcode), (401, 10));
        let garbled = authenticate(&store, Some("Basic %%%"), None).expect_err("garbled");
        assert_eq!((garbled.code, garbled.subcode), (401, 21));

        let token = issue_token(&mut store, &Identity::test_user(), 60).expect("token");
        let authed = authenticate(&store, Some(&format!("Bearer {token}")), None).expect("bearer");
        assert!(authed.session.is_some());
        // The cookie is honoured when there is no header.
        authenticate(&store, None, Some(&token)).expect("cookie");

        store.clock_offset = Duration::seconds(61);
        let expired =
            authenticate(&store, Some(&format!("Bearer {token}")), None).expect_err("expired");
        assert_eq!((expired.code, expired.subcode), (401, 30));
        assert!(
            expired.msg.contains("Signature has expired"),
            "{}",
            expired.msg
        );

        store.clock_offset = Duration::zero();
        logout(&mut store, &authed);
        let revoked =
            authenticate(&store, Some(&format!("Bearer {token}")), None).expect_err("revoked");
        assert_eq!(revoked.msg, "Invalid token (revoked token)");

        let forged = authenticate(&store, Some("Bearer a.b.c"), None).expect_err("forged");
        assert_eq!((forged.code, forged.subcode), (401, 30));
    }
}
