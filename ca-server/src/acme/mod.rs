//! The ACME server (RFC 8555; Boulder's "WFE"): directory, nonces, JWS-authenticated requests,
//! accounts, orders, authorizations, challenges, finalization, certificate download, revocation,
//! key rollover and ARI (RFC 9773).
//!
//! Handlers authenticate the request ([`AcmeState::authenticate`]), apply policy
//! ([`crate::policy`]), run validations through [`crate::validation`] and issue through
//! [`crate::issuer::Issuance`]. Errors become problem documents only at this edge, and every
//! response — errors included — carries a fresh `Replay-Nonce`.
//!
//! Paths live under `/acme/`; clients must start at `/acme/directory`.

mod handlers;
pub mod jws;
pub mod model;
pub mod nonce;
pub mod problem;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;

use crate::http::listener::ConnectionInfo;
use crate::issuer::{Issuance, Profile};
use crate::policy::IdentifierPolicy;
use crate::validation::{ValidationConfig, Validator};
use jws::{Jwk, ProtectedHeader};
use problem::{AcmeError, ProblemType};

/// Largest JWS body accepted (a CSR for many names fits easily).
pub const MAX_BODY: usize = 64 * 1024;

/// `[acme]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AcmeConfig {
    /// Serve ACME at all.
    pub enabled: bool,
    /// Base URL clients use (e.g. `https://ca-server.ca-system.svc`); default: from the request.
    pub external_url: Option<String>,
    /// `meta.termsOfService`; when set, new accounts must agree.
    pub terms_of_service: Option<String>,
    /// `meta.website`.
    pub website: Option<String>,
    /// Require External Account Binding for new accounts.
    pub require_eab: bool,
    /// Profiles offered in `meta.profiles`.
    pub profiles: Vec<Profile>,
    /// Profile of orders that name none.
    pub default_profile: Profile,
    /// Which identifiers may be ordered.
    pub policy: IdentifierPolicy,
    /// How long a pending order and its authorizations live.
    #[serde(with = "crate::duration::serde_duration")]
    pub order_lifetime: Duration,
    /// How long a challenge POST waits for its validation before answering `processing`.
    #[serde(with = "crate::duration::serde_duration")]
    pub challenge_wait: Duration,
    /// VA settings.
    pub validation: ValidationConfig,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            external_url: None,
            terms_of_service: None,
            website: None,
            require_eab: false,
            profiles: vec![
                Profile::TlsServer,
                Profile::TlsServerClient,
                Profile::Spiffe,
            ],
            default_profile: Profile::TlsServer,
            policy: IdentifierPolicy::default(),
            order_lifetime: Duration::from_secs(7 * 86_400),
            challenge_wait: Duration::from_secs(3),
            validation: ValidationConfig::default(),
        }
    }
}

/// Shared state of the ACME handlers.
#[derive(Clone)]
pub struct AcmeState {
    inner: Arc<Inner>,
}

struct Inner {
    config: AcmeConfig,
    store: Arc<dyn ca_store::Store>,
    issuance: Issuance,
    nonces: nonce::Nonces,
    validator: Validator,
    crl: crate::http::crl::CrlCache,
    /// Opens EAB MAC keys.
    seal: Arc<crate::seal::Seal>,
    /// Accounts read by `kid` on every request, trusted for 2 s (see [`crate::ttl_cache`]):
    /// a deactivation or key change on another replica applies here within that time.
    accounts: crate::ttl_cache::TtlCache<String, ca_store::acme::AccountRow>,
}

/// A request whose JWS verified.
pub(crate) struct Authenticated {
    /// Decoded payload (empty for POST-as-GET).
    pub payload: Vec<u8>,
    /// The account, for `kid` requests.
    pub account: Option<ca_store::acme::AccountRow>,
    /// The key, for `jwk` requests.
    pub jwk: Option<Jwk>,
    /// The protected header.
    pub header: ProtectedHeader,
    /// The base URL of this server as the client sees it.
    pub base: String,
}

impl Authenticated {
    /// The payload parsed as JSON `T` (malformed otherwise).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, AcmeError> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| AcmeError::malformed(format!("invalid request payload: {e}")))
    }

    /// True for POST-as-GET.
    pub fn is_post_as_get(&self) -> bool {
        self.payload.is_empty()
    }

    /// The verified account (kid requests only).
    pub fn account(&self) -> Result<&ca_store::acme::AccountRow, AcmeError> {
        self.account.as_ref().ok_or_else(|| {
            AcmeError::malformed("this request must be signed with an account (kid)")
        })
    }
}

/// Whether a request must carry `jwk` (new accounts) or `kid` (everything else), or either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signer {
    Jwk,
    Kid,
    Either,
}

impl AcmeState {
    /// Builds the ACME service over the shared store, issuance and CRL cache.
    pub async fn new(
        config: AcmeConfig,
        store: Arc<dyn ca_store::Store>,
        issuance: Issuance,
        crl: crate::http::crl::CrlCache,
        seal: Arc<crate::seal::Seal>,
    ) -> anyhow::Result<Self> {
        let nonces = nonce::Nonces::new(Arc::clone(&store), &seal).await?;
        seal_legacy_eab_keys(store.as_ref(), &seal).await?;
        let validator = Validator::new(config.validation.clone())?;
        let state = Self {
            inner: Arc::new(Inner {
                config,
                store,
                issuance,
                nonces,
                validator,
                crl,
                seal,
                accounts: crate::ttl_cache::TtlCache::new(Duration::from_secs(2), 10_000),
            }),
        };
        let purger = state.inner.nonces.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(600));
            loop {
                tick.tick().await;
                if let Err(e) = purger.purge().await {
                    tracing::warn!(error = %e, "purging used nonces failed");
                }
            }
        });
        Ok(state)
    }

    fn config(&self) -> &AcmeConfig {
        &self.inner.config
    }

    /// This server's base URL: configured, or from the request (HTTP/2 `:authority` or the
    /// HTTP/1.1 `Host` header) and the connection's scheme.
    pub(crate) fn base_url(
        &self,
        uri: &axum::http::Uri,
        headers: &HeaderMap,
        conn: Option<&ConnectionInfo>,
    ) -> String {
        if let Some(url) = &self.config().external_url {
            return url.trim_end_matches('/').to_owned();
        }
        let scheme = match conn {
            Some(c) if !c.tls => "http",
            _ => "https",
        };
        let host = uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
            .unwrap_or("localhost");
        format!("{scheme}://{host}")
    }

    /// Verifies a POSTed JWS: content type, size, algorithm, URL, signature, nonce, signer.
    pub(crate) async fn authenticate(
        &self,
        uri: &axum::http::Uri,
        headers: &HeaderMap,
        conn: Option<&ConnectionInfo>,
        body: &Bytes,
        signer: Signer,
    ) -> Result<Authenticated, AcmeError> {
        let path = uri.path();
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with("application/jose+json") {
            return Err(
                AcmeError::malformed("Content-Type must be application/jose+json")
                    .with_status(axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE),
            );
        }
        let decoded = jws::decode(body)?;
        jws::check_account_alg(&decoded.header.alg)?;
        let base = self.base_url(uri, headers, conn);
        let expected_url = format!("{base}{path}");
        match &decoded.header.url {
            Some(url) if *url == expected_url => {}
            Some(url) => {
                return Err(AcmeError::unauthorized(format!(
                    "JWS url {url:?} does not match the request URL {expected_url:?}"
                )));
            }
            None => return Err(AcmeError::malformed("JWS protected header lacks url")),
        }
        let (key, account, jwk) = match (&decoded.header.jwk, &decoded.header.kid, signer) {
            (Some(_), Some(_), _) => {
                return Err(AcmeError::malformed("JWS must carry jwk or kid, not both"));
            }
            (Some(jwk), None, Signer::Jwk | Signer::Either) => {
                (jwk.key()?, None, Some(jwk.clone()))
            }
            (None, Some(kid), Signer::Kid | Signer::Either) => {
                let prefix = format!("{base}/acme/acct/");
                let id = kid.strip_prefix(&prefix).ok_or_else(|| {
                    AcmeError::new(
                        ProblemType::AccountDoesNotExist,
                        format!("unknown account {kid}"),
                    )
                })?;
                let account = match self.inner.accounts.get(id) {
                    Some(account) => account,
                    None => {
                        let account = self.inner.store.account(id).await?.ok_or_else(|| {
                            AcmeError::new(
                                ProblemType::AccountDoesNotExist,
                                format!("unknown account {kid}"),
                            )
                        })?;
                        self.inner.accounts.put(id.to_owned(), account.clone());
                        account
                    }
                };
                let jwk: Jwk = serde_json::from_str(&account.jwk)
                    .map_err(|e| AcmeError::internal("stored account key", e))?;
                (jwk.key()?, Some(account), None)
            }
            (None, None, _) => {
                return Err(AcmeError::malformed(
                    "JWS protected header lacks jwk and kid",
                ));
            }
            (_, _, Signer::Jwk) => {
                return Err(AcmeError::malformed("this request must be signed with jwk"));
            }
            (_, _, _) => {
                return Err(AcmeError::malformed("this request must be signed with kid"));
            }
        };
        key.verify(
            &decoded.header.alg,
            &decoded.signing_input,
            &decoded.signature,
        )?;
        let nonce = decoded
            .header
            .nonce
            .as_deref()
            .ok_or_else(AcmeError::bad_nonce)?;
        self.inner.nonces.redeem(nonce).await?;
        if let Some(account) = &account
            && account.status != "valid"
        {
            return Err(AcmeError::unauthorized(format!(
                "account is {}",
                account.status
            )));
        }
        Ok(Authenticated {
            payload: decoded.payload,
            account,
            jwk,
            header: decoded.header,
            base,
        })
    }
}

/// The purpose an EAB MAC key is sealed for: bound to its kid.
pub fn eab_purpose(kid: &str) -> String {
    format!("eab:{kid}")
}

/// EAB keys stored in clear by an earlier version are sealed in place.
async fn seal_legacy_eab_keys(
    store: &dyn ca_store::Store,
    seal: &crate::seal::Seal,
) -> Result<(), ca_store::Error> {
    for key in store.eab_keys().await? {
        if !crate::seal::Seal::is_sealed_bytes(&key.hmac_key) {
            let sealed = seal.seal_bytes(&eab_purpose(&key.kid), &key.hmac_key);
            store.set_eab_hmac_key(&key.kid, &sealed).await?;
            tracing::info!(kid = %key.kid, "sealed an EAB MAC key stored in clear");
        }
    }
    Ok(())
}

/// Adds `Replay-Nonce`, `Cache-Control: no-store` and the directory `Link` to every response.
async fn replay_nonce(State(state): State<AcmeState>, request: Request, next: Next) -> Response {
    let base = state.base_url(
        request.uri(),
        request.headers(),
        request.extensions().get::<ConnectionInfo>(),
    );
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&state.inner.nonces.issue()) {
        headers.insert("replay-nonce", v);
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&format!("<{base}/acme/directory>;rel=\"index\"")) {
        headers.append(header::LINK, v);
    }
    response
}

/// The ACME routes, mounted at the root router. Every answer is a problem document or a resource,
/// with a fresh `Replay-Nonce`: wrong methods get 405 and unknown paths under `/acme/` 404, both
/// as problems (clients retry badNonce and parse problems on every response).
pub fn router(state: AcmeState, in_flight: crate::http::limit::InFlight) -> Router {
    use axum::routing::any;
    use handlers::*;
    Router::new()
        .route(
            "/acme/directory",
            get(directory).fallback(method_not_allowed),
        )
        .route(
            "/acme/new-nonce",
            get(new_nonce_get)
                .head(new_nonce_head)
                .fallback(method_not_allowed),
        )
        .route(
            "/acme/new-account",
            post(new_account).fallback(method_not_allowed),
        )
        .route(
            "/acme/acct/{id}",
            post(account).fallback(method_not_allowed),
        )
        .route(
            "/acme/acct/{id}/orders",
            post(account_orders).fallback(method_not_allowed),
        )
        .route(
            "/acme/key-change",
            post(key_change).fallback(method_not_allowed),
        )
        .route(
            "/acme/new-order",
            post(new_order).fallback(method_not_allowed),
        )
        .route("/acme/order/{id}", post(order).fallback(method_not_allowed))
        .route(
            "/acme/order/{id}/finalize",
            post(finalize).fallback(method_not_allowed),
        )
        .route(
            "/acme/authz/{id}",
            post(authorization).fallback(method_not_allowed),
        )
        .route(
            "/acme/chall/{authz}/{index}",
            post(challenge).fallback(method_not_allowed),
        )
        .route(
            "/acme/cert/{serial}",
            post(certificate).fallback(method_not_allowed),
        )
        .route(
            "/acme/cert/{serial}/{alternate}",
            post(alternate_certificate).fallback(method_not_allowed),
        )
        .route(
            "/acme/revoke-cert",
            post(revoke_certificate).fallback(method_not_allowed),
        )
        .route(
            "/acme/renewal-info/{id}",
            get(renewal_info).fallback(method_not_allowed),
        )
        .route("/acme", any(unknown_resource))
        .route("/acme/", any(unknown_resource))
        .route("/acme/{*rest}", any(unknown_resource))
        // Inside the nonce layer: a shed request still gets a fresh nonce to retry with.
        .layer(middleware::from_fn_with_state(
            (in_flight, busy as crate::http::limit::Busy),
            crate::http::limit::shed,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), replay_nonce))
        .with_state(state)
}

/// The server is full: 503 + Retry-After as a problem document.
fn busy() -> Response {
    axum::response::IntoResponse::into_response(
        problem::AcmeError::unavailable("the server is busy; retry shortly").with_retry_after(1),
    )
}

/// 405 as a problem document.
async fn method_not_allowed() -> problem::AcmeError {
    problem::AcmeError::malformed("method not allowed for this ACME resource")
        .with_status(axum::http::StatusCode::METHOD_NOT_ALLOWED)
}

/// 404 as a problem document for any other path under `/acme/`.
async fn unknown_resource() -> problem::AcmeError {
    problem::AcmeError::not_found("ACME resource")
}

/// A POSTed ACME request before authentication: headers, connection, path and a bounded body.
pub(crate) struct AcmePost {
    uri: axum::http::Uri,
    headers: HeaderMap,
    conn: Option<ConnectionInfo>,
    body: Bytes,
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for AcmePost {
    type Rejection = AcmeError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        // Read up to 1 MiB so a moderately oversized request still gets its 413 problem document
        // (closing mid-upload makes clients see a broken pipe instead); refuse anything over 64 KiB.
        let too_large = || {
            AcmeError::malformed(format!("request body is larger than {MAX_BODY} bytes"))
                .with_status(axum::http::StatusCode::PAYLOAD_TOO_LARGE)
        };
        let body = axum::body::to_bytes(body, 16 * MAX_BODY)
            .await
            .map_err(|_| too_large())?;
        if body.len() > MAX_BODY {
            return Err(too_large());
        }
        Ok(Self {
            conn: parts.extensions.get::<ConnectionInfo>().cloned(),
            headers: parts.headers,
            uri: parts.uri,
            body,
        })
    }
}

impl AcmeState {
    /// Records an account change (status, key, contact) and refreshes this replica's cache.
    pub(crate) async fn update_account(
        &self,
        account: &ca_store::acme::AccountRow,
    ) -> Result<(), ca_store::Error> {
        self.inner.accounts.forget(&account.id);
        self.inner.store.update_account(account).await?;
        self.inner.accounts.put(account.id.clone(), account.clone());
        Ok(())
    }

    /// [`AcmeState::authenticate`] for an extracted request.
    pub(crate) async fn verify(
        &self,
        req: &AcmePost,
        signer: Signer,
    ) -> Result<Authenticated, AcmeError> {
        self.authenticate(&req.uri, &req.headers, req.conn.as_ref(), &req.body, signer)
            .await
    }
}
