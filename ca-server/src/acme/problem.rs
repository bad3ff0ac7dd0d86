//! Every ACME error URN we emit, and the one error type handlers return. Errors become
//! `application/problem+json` documents here and nowhere else; the document's `status` always equals
//! the HTTP status (cert-manager lets the body's status override the HTTP code).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

/// RFC 8555 §6.7 error types (plus RFC 9773's `alreadyReplaced` and the profiles draft's
/// `invalidProfile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ProblemType {
    AccountDoesNotExist,
    AlreadyReplaced,
    AlreadyRevoked,
    BadCsr,
    BadNonce,
    BadPublicKey,
    BadRevocationReason,
    BadSignatureAlgorithm,
    Caa,
    Connection,
    Dns,
    ExternalAccountRequired,
    IncorrectResponse,
    InvalidContact,
    InvalidProfile,
    Malformed,
    OrderNotReady,
    RateLimited,
    RejectedIdentifier,
    ServerInternal,
    Tls,
    Unauthorized,
    UnsupportedContact,
    UnsupportedIdentifier,
    UserActionRequired,
}

impl ProblemType {
    /// The URN.
    pub fn urn(self) -> &'static str {
        match self {
            ProblemType::AccountDoesNotExist => "urn:ietf:params:acme:error:accountDoesNotExist",
            ProblemType::AlreadyReplaced => "urn:ietf:params:acme:error:alreadyReplaced",
            ProblemType::AlreadyRevoked => "urn:ietf:params:acme:error:alreadyRevoked",
            ProblemType::BadCsr => "urn:ietf:params:acme:error:badCSR",
            ProblemType::BadNonce => "urn:ietf:params:acme:error:badNonce",
            ProblemType::BadPublicKey => "urn:ietf:params:acme:error:badPublicKey",
            ProblemType::BadRevocationReason => "urn:ietf:params:acme:error:badRevocationReason",
            ProblemType::BadSignatureAlgorithm => {
                "urn:ietf:params:acme:error:badSignatureAlgorithm"
            }
            ProblemType::Caa => "urn:ietf:params:acme:error:caa",
            ProblemType::Connection => "urn:ietf:params:acme:error:connection",
            ProblemType::Dns => "urn:ietf:params:acme:error:dns",
            ProblemType::ExternalAccountRequired => {
                "urn:ietf:params:acme:error:externalAccountRequired"
            }
            ProblemType::IncorrectResponse => "urn:ietf:params:acme:error:incorrectResponse",
            ProblemType::InvalidContact => "urn:ietf:params:acme:error:invalidContact",
            ProblemType::InvalidProfile => "urn:ietf:params:acme:error:invalidProfile",
            ProblemType::Malformed => "urn:ietf:params:acme:error:malformed",
            ProblemType::OrderNotReady => "urn:ietf:params:acme:error:orderNotReady",
            ProblemType::RateLimited => "urn:ietf:params:acme:error:rateLimited",
            ProblemType::RejectedIdentifier => "urn:ietf:params:acme:error:rejectedIdentifier",
            ProblemType::ServerInternal => "urn:ietf:params:acme:error:serverInternal",
            ProblemType::Tls => "urn:ietf:params:acme:error:tls",
            ProblemType::Unauthorized => "urn:ietf:params:acme:error:unauthorized",
            ProblemType::UnsupportedContact => "urn:ietf:params:acme:error:unsupportedContact",
            ProblemType::UnsupportedIdentifier => {
                "urn:ietf:params:acme:error:unsupportedIdentifier"
            }
            ProblemType::UserActionRequired => "urn:ietf:params:acme:error:userActionRequired",
        }
    }

    /// The HTTP status a problem of this type is served with by default.
    pub fn status(self) -> StatusCode {
        match self {
            ProblemType::AccountDoesNotExist => StatusCode::BAD_REQUEST,
            ProblemType::AlreadyReplaced => StatusCode::CONFLICT,
            ProblemType::Unauthorized | ProblemType::OrderNotReady => StatusCode::FORBIDDEN,
            ProblemType::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ProblemType::ServerInternal => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// An identifier-scoped sub-problem (RFC 8555 §6.7.1).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Subproblem {
    /// Error type URN.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Human-readable detail.
    pub detail: String,
    /// The identifier it concerns.
    pub identifier: Value,
}

/// An ACME error on its way to the client.
#[derive(Debug, Clone)]
pub struct AcmeError {
    /// Type.
    pub kind: ProblemType,
    /// Human-readable detail.
    pub detail: String,
    /// HTTP status (and the document's `status`).
    pub status: StatusCode,
    /// Per-identifier problems.
    pub subproblems: Vec<Subproblem>,
    /// Extra members (e.g. `algorithms` for badSignatureAlgorithm).
    pub extra: Option<(&'static str, Value)>,
    /// Seconds for `Retry-After` (overload, transient failures).
    pub retry_after: Option<u64>,
}

impl AcmeError {
    /// A problem with the type's default status.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            status: kind.status(),
            subproblems: Vec::new(),
            extra: None,
            retry_after: None,
        }
    }

    /// `malformed`.
    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Malformed, detail)
    }

    /// `unauthorized` (403).
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Unauthorized, detail)
    }

    /// 404 `malformed` for unknown resources.
    pub fn not_found(what: &str) -> Self {
        Self::malformed(format!("{what} not found")).with_status(StatusCode::NOT_FOUND)
    }

    /// The one badNonce wording clients recognise (acme.sh matches it).
    pub fn bad_nonce() -> Self {
        Self::new(
            ProblemType::BadNonce,
            "JWS has an invalid anti-replay nonce",
        )
    }

    /// A transient server-side failure: 503 + Retry-After, never a 4xx (cert-manager turns any
    /// 4xx into a failed order and hours of back-off).
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::ServerInternal, detail)
            .with_status(StatusCode::SERVICE_UNAVAILABLE)
            .with_retry_after(2)
    }

    /// An internal error: logged in full, reported as a generic 500.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{context}");
        Self::new(
            ProblemType::ServerInternal,
            "internal error; see server logs",
        )
    }

    /// Overrides the HTTP status.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Adds `Retry-After`.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The problem document.
    pub fn document(&self) -> Value {
        let mut doc = serde_json::json!({
            "type": self.kind.urn(),
            "detail": self.detail,
            "status": self.status.as_u16(),
        });
        if !self.subproblems.is_empty() {
            doc["subproblems"] = serde_json::to_value(&self.subproblems).unwrap_or(Value::Null);
        }
        if let Some((k, v)) = &self.extra {
            doc[*k] = v.clone();
        }
        doc
    }
}

/// Where in the protocol policy refused: it decides the problem type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// newOrder: identifier problems.
    NewOrder,
    /// finalize: everything about the CSR is `badCSR`.
    Finalize,
}

impl AcmeError {
    /// The one mapping from a policy refusal to a problem document.
    pub fn rejected(rejection: &crate::policy::Rejection, stage: Stage) -> Self {
        use crate::policy::{NameKind, Rejection};
        let kind = match (stage, rejection) {
            (Stage::Finalize, _) => ProblemType::BadCsr,
            (_, Rejection::UnsupportedIdentifier(_)) => ProblemType::UnsupportedIdentifier,
            (_, Rejection::Profile(_)) => ProblemType::InvalidProfile,
            (
                _,
                Rejection::Invalid {
                    kind: NameKind::Ip, ..
                }
                | Rejection::Malformed(_)
                | Rejection::NoNames(_),
            ) => ProblemType::Malformed,
            _ => ProblemType::RejectedIdentifier,
        };
        Self::new(kind, rejection.to_string())
    }
}

impl From<ca_store::Error> for AcmeError {
    fn from(e: ca_store::Error) -> Self {
        if e.is_transient() {
            tracing::warn!(error = %e, "database unavailable");
            AcmeError::unavailable("the database is temporarily unavailable; retry shortly")
        } else {
            AcmeError::internal("database error", e)
        }
    }
}

impl IntoResponse for AcmeError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.document())).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            headers.insert(header::RETRY_AFTER, v);
        }
        response
    }
}
