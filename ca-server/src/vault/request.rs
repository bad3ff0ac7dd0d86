//! Reading a Vault request once, strictly: the path normalised (the one spelling both the ACL
//! check and the router see), the operation, and the parameters.
//!
//! Vault's conventions: bodies are JSON whatever the Content-Type (cert-manager sends none) or
//! form-encoded; GET/DELETE query parameters are data; PUT = POST; LIST is the `LIST` verb or
//! `GET ?list=true`; the token comes in `X-Vault-Token` or `Authorization: Bearer`.

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, header};
use serde_json::{Map, Value};

use super::VaultError;
use crate::http::listener::ConnectionInfo;

/// Largest request body read.
pub const MAX_BODY: usize = 1024 * 1024;
/// Longest request path accepted.
const MAX_PATH: usize = 4096;

/// The operation a request performs, in Vault's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// GET or HEAD.
    Read,
    /// POST or PUT.
    Write,
    /// LIST, or GET ?list=true.
    List,
    /// DELETE.
    Delete,
}

/// A decoded request on its way to a handler.
#[derive(Debug)]
pub struct Call {
    /// The normalised path after `/v1/`: no empty, `.` or `..` segments, no leading or trailing
    /// `/`, percent-escapes decoded once.
    pub path: String,
    /// Operation.
    pub op: Operation,
    /// HEAD (answered without a body).
    pub head: bool,
    /// Body fields, plus query parameters for reads, lists and deletes.
    pub data: Map<String, Value>,
    /// Query parameters.
    pub query: Map<String, Value>,
    /// Headers.
    pub headers: HeaderMap,
    /// Connection facts (TLS client certificate for cert auth).
    pub conn: Option<ConnectionInfo>,
    /// The mount the router matched (`pki_int`, `kubernetes`, …; empty for `sys`).
    pub mount: String,
    /// The `+` segments of the matched route, in order.
    pub params: Vec<String>,
}

impl Call {
    /// The client token from `X-Vault-Token` or `Authorization: Bearer`.
    pub fn token(&self) -> Option<&str> {
        self.headers
            .get("x-vault-token")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                self.headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }

    /// The n-th `+` segment of the route.
    pub fn param(&self, n: usize) -> &str {
        self.params.get(n).map(String::as_str).unwrap_or_default()
    }
}

/// Percent-decodes once; `+` is a space only in form data. Invalid UTF-8 is an error.
fn decode_pct(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn parse_form(body: &str) -> Result<Map<String, Value>, VaultError> {
    let mut map = Map::new();
    for pair in body.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = || VaultError::bad_request("malformed form or query encoding");
        map.insert(
            decode_pct(k, true).ok_or_else(bad)?,
            Value::String(decode_pct(v, true).ok_or_else(bad)?),
        );
    }
    Ok(map)
}

/// The one spelling of a request path: percent-escapes decoded once, then empty and `.` segments
/// dropped and `..` resolved. Paths that climb above the root, or hold control characters, are
/// refused.
pub fn normalize_path(raw: &str) -> Result<String, VaultError> {
    let bad = |why: &str| VaultError::bad_request(format!("invalid request path: {why}"));
    if raw.len() > MAX_PATH {
        return Err(bad("too long"));
    }
    let decoded = decode_pct(raw, false).ok_or_else(|| bad("bad percent-encoding or UTF-8"))?;
    if decoded.chars().any(char::is_control) {
        return Err(bad("control characters"));
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(bad("it climbs above the root"));
                }
            }
            s => segments.push(s),
        }
    }
    Ok(segments.join("/"))
}

/// Reads a request: method, path, bounded and strictly decoded body and query.
pub async fn parse(request: Request) -> Result<Call, VaultError> {
    let (parts, body) = request.into_parts();
    let query = match parts.uri.query() {
        Some(q) => parse_form(q)?,
        None => Map::new(),
    };
    let list_param = query
        .get("list")
        .and_then(Value::as_str)
        .is_some_and(|v| v == "true");
    let (op, head) = match parts.method {
        Method::GET if list_param => (Operation::List, false),
        Method::GET => (Operation::Read, false),
        Method::HEAD => (Operation::Read, true),
        Method::POST | Method::PUT => (Operation::Write, false),
        Method::DELETE => (Operation::Delete, false),
        ref m if m.as_str() == "LIST" => (Operation::List, false),
        _ => return Err(VaultError::unsupported()),
    };
    let raw_path = parts.uri.path();
    let raw_path = raw_path.strip_prefix("/v1").unwrap_or(raw_path);
    let path = normalize_path(raw_path)?;

    let body: Bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| VaultError {
            status: axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            errors: vec![format!("request body larger than {MAX_BODY} bytes")],
        })?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| VaultError::bad_request("failed to parse JSON input: invalid UTF-8"))?;
    let trimmed = text.trim();
    let form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let mut data = if trimmed.is_empty() {
        Map::new()
    } else if form && !trimmed.starts_with('{') {
        parse_form(trimmed)?
    } else {
        match serde_json::from_str::<Value>(trimmed) {
            Ok(Value::Object(m)) => m,
            // `vault write -f` (a write with no fields) sends `null`.
            Ok(Value::Null) => Map::new(),
            _ => return Err(VaultError::bad_request("failed to parse JSON input")),
        }
    };
    if matches!(op, Operation::Read | Operation::Delete | Operation::List) {
        for (k, v) in &query {
            data.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    Ok(Call {
        path,
        op,
        head,
        data,
        query,
        headers: parts.headers,
        conn: parts.extensions.get::<ConnectionInfo>().cloned(),
        mount: String::new(),
        params: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spelling_per_path() {
        for (raw, normal) in [
            ("/pki_int/sign/web", "pki_int/sign/web"),
            ("/pki_int//sign/web", "pki_int/sign/web"),
            ("//pki_int/./sign//web/", "pki_int/sign/web"),
            ("/pki_int/x/../sign/web", "pki_int/sign/web"),
            ("/pki_int%2Fsign%2Fweb", "pki_int/sign/web"),
            ("/sys/policy//admin", "sys/policy/admin"),
            ("/sys/policy/%2e%2e/policy/admin", "sys/policy/admin"),
        ] {
            assert_eq!(normalize_path(raw).ok().as_deref(), Some(normal), "{raw}");
        }
        for bad in ["/../sys", "/a/%00/b", "/a/%zz", "/a/%ff", "/a\u{7}b"] {
            assert!(normalize_path(bad).is_err(), "{bad}");
        }
    }
}
