//! ACME resource objects as stored (JSON columns) and as sent on the wire (RFC 8555 §7.1).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An identifier (`dns` or `ip`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identifier {
    /// `dns` or `ip`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The name or address.
    pub value: String,
}

/// A challenge as stored inside its authorization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredChallenge {
    /// `http-01`, `dns-01`, `tls-alpn-01`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Random token.
    pub token: String,
    /// `pending`, `processing`, `valid`, `invalid`.
    pub status: String,
    /// Unix seconds of successful validation.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub validated: Option<i64>,
    /// Problem document of a failed validation.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<Value>,
}

/// newAccount payload.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewAccount {
    /// Contact URLs.
    #[serde(default)]
    pub contact: Option<Vec<String>>,
    /// Agreement to the terms of service.
    #[serde(default)]
    pub terms_of_service_agreed: Option<bool>,
    /// Only look the account up.
    #[serde(default)]
    pub only_return_existing: Option<bool>,
    /// EAB JWS.
    #[serde(default)]
    pub external_account_binding: Option<super::jws::FlattenedJws>,
}

/// Account update payload.
#[derive(Debug, Default, Deserialize)]
pub struct AccountUpdate {
    /// New contact URLs.
    #[serde(default)]
    pub contact: Option<Vec<String>>,
    /// `deactivated` to deactivate.
    #[serde(default)]
    pub status: Option<String>,
}

/// newOrder payload.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewOrder {
    /// Requested identifiers (cert-manager sends `null` for URI-only certificates).
    #[serde(default)]
    pub identifiers: Option<Vec<Identifier>>,
    /// RFC 3339.
    #[serde(default)]
    pub not_before: Option<String>,
    /// RFC 3339.
    #[serde(default)]
    pub not_after: Option<String>,
    /// Profile name.
    #[serde(default)]
    pub profile: Option<String>,
    /// ARI certificate identifier of the certificate this order replaces.
    #[serde(default)]
    pub replaces: Option<String>,
}

/// finalize payload.
#[derive(Debug, Deserialize)]
pub struct Finalize {
    /// base64url DER CSR.
    pub csr: String,
}

/// revokeCert payload.
#[derive(Debug, Deserialize)]
pub struct Revoke {
    /// base64url DER certificate.
    pub certificate: String,
    /// RFC 5280 reason code.
    #[serde(default)]
    pub reason: Option<i32>,
}

/// Inner keyChange payload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyChange {
    /// Account URL.
    pub account: String,
    /// The key being replaced.
    pub old_key: super::jws::Jwk,
}
