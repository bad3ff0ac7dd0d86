//! `GET /v1/ledger/certificates` and `GET /v1/ledger/summary`: the expiry reports
//! ([`crate::report`]) over HTTP, in the Vault envelope, as token routes of the Vault table: a
//! token whose policy grants `read` on `ledger/certificates` or `ledger/summary` (e.g.
//! `path "ledger/*" { capabilities = ["read"] }`).
//!
//! Query parameters are the CLI's flags with underscores: `within=30d`, `include_expired=true`,
//! `issuer`, `profile`, `namespace`, `spiffe_prefix`, `san`, `requester`, `origin`,
//! `include_revoked`, `include_superseded`, plus `limit` (≤ 1000) and `cursor` (from the previous
//! page's `next_cursor`).

use axum::response::Response;
use serde_json::{Map, Value, json};

use super::routes::{Route, ops, token};
use super::values::{bool_field, string_field};
use super::{Call, VaultError, VaultState, envelope};
use crate::auth::Authorized;
use crate::report;

/// The `ledger` routes.
pub static ROUTES: &[Route] = &[
    token!("certificates", ops::READ, certificates),
    token!("summary", ops::READ, summary),
];

fn optional(data: &Map<String, Value>, key: &str) -> Option<String> {
    Some(string_field(data, key)).filter(|s| !s.is_empty())
}

fn filters(data: &Map<String, Value>) -> Result<report::Filters, VaultError> {
    let within = optional(data, "within")
        .map(|w| crate::duration::parse(&w))
        .transpose()
        .map_err(|e| VaultError::bad_request(format!("within: {e}")))?;
    let origin = optional(data, "origin")
        .map(|o| {
            ca_store::Origin::parse(&o)
                .ok_or_else(|| VaultError::bad_request("origin must be issued or observed"))
        })
        .transpose()?;
    Ok(report::Filters {
        within,
        include_expired: bool_field(data, "include_expired", false)?,
        issuer: optional(data, "issuer"),
        profile: optional(data, "profile"),
        namespace: optional(data, "namespace"),
        spiffe_prefix: optional(data, "spiffe_prefix"),
        san: optional(data, "san"),
        requester: optional(data, "requester"),
        origin,
        include_revoked: bool_field(data, "include_revoked", false)?,
        include_superseded: bool_field(data, "include_superseded", false)?,
    })
}

/// Cursor = `<not_after>.<id>` of the last row of the previous page.
fn parse_cursor(s: &str) -> Option<(i64, i64)> {
    let (a, b) = s.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn certificates(
    state: &VaultState,
    req: &Call,
    _: &Authorized,
) -> Result<Response, VaultError> {
    let now = now();
    let mut query = filters(&req.data)?.to_query(now);
    let limit = match optional(&req.data, "limit") {
        None => 100,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| VaultError::bad_request("limit must be between 1 and 1000"))?,
    };
    query.limit = limit;
    if let Some(cursor) = optional(&req.data, "cursor") {
        query.after =
            Some(parse_cursor(&cursor).ok_or_else(|| VaultError::bad_request("malformed cursor"))?);
    }
    let rows = state.store.expiring(&query).await?;
    let next_cursor = (rows.len() == limit as usize)
        .then(|| rows.last())
        .flatten()
        .map(|r| format!("{}.{}", r.certificate.not_after, r.id));
    let names = report::ca_names(&state.issuance.issuers().current());
    let items: Vec<report::Item> = rows.iter().map(|r| report::item(r, now, &names)).collect();
    Ok(envelope(
        Some(json!({ "certificates": items, "next_cursor": next_cursor })),
        Vec::new(),
        None,
    ))
}

async fn summary(state: &VaultState, _: &Call, _: &Authorized) -> Result<Response, VaultError> {
    let now = now();
    let summary = state.store.summary(now).await?;
    let mut data = serde_json::to_value(&summary)
        .map_err(|e| VaultError::internal("encoding the summary", e))?;
    if let Some(obj) = data.as_object_mut() {
        obj.insert(
            "earliest_expiration_date".into(),
            summary
                .earliest_not_after
                .map(report::rfc3339)
                .map_or(Value::Null, Value::String),
        );
        obj.insert(
            "certificate_authorities".into(),
            serde_json::to_value(report::authorities(
                &state.issuance.issuers().current(),
                now,
            ))
            .unwrap_or(Value::Null),
        );
    }
    Ok(envelope(Some(data), Vec::new(), None))
}
