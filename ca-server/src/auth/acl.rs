//! ACL policies with Vault's semantics: parsed with a real HCL parser (so `#`, `//` and `/* */`
//! comments grant nothing), compiled into an [`Acl`] per token, and evaluated on the normalised
//! request path, its operation and its parameters.
//!
//! - Paths: exact, a trailing `*` glob (prefix), and `+` for exactly one segment. When several
//!   rules match, Vault's priority decides: an exact rule wins; otherwise the rule whose first
//!   wildcard comes later, then one that does not end in `*`, then fewer `+`, then the longer,
//!   then the lexicographically greater.
//! - Rules for the same pattern in several policies merge: capabilities join, and `deny` leaves
//!   only `deny`; parameter constraints join as Vault joins them.
//! - `allowed_parameters`, `denied_parameters` and `required_parameters` are enforced on reads
//!   and writes. Anything a policy may say that this server cannot enforce (wrapping TTLs, MFA,
//!   control groups, identity templates) is refused when the policy is written, never stored and
//!   ignored.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A capability a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// Refuses everything, whatever else matches the same pattern.
    Deny,
    /// Write to a path that does not exist yet.
    Create,
    /// Read.
    Read,
    /// Write to a path that exists, and actions (`sign`, `issue`, logins…).
    Update,
    /// Partial update.
    Patch,
    /// Delete.
    Delete,
    /// List.
    List,
    /// Root-protected paths.
    Sudo,
}

impl Capability {
    fn parse(s: &str) -> Result<Self, PolicyError> {
        Ok(match s {
            "deny" => Self::Deny,
            "create" => Self::Create,
            "read" => Self::Read,
            "update" => Self::Update,
            "patch" => Self::Patch,
            "delete" => Self::Delete,
            "list" => Self::List,
            "sudo" => Self::Sudo,
            other => return Err(PolicyError(format!("invalid capability {other:?}"))),
        })
    }

    /// The capability's name in policies.
    pub fn name(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Create => "create",
            Self::Read => "read",
            Self::Update => "update",
            Self::Patch => "patch",
            Self::Delete => "delete",
            Self::List => "list",
            Self::Sudo => "sudo",
        }
    }
}

/// What a request does, in ACL terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclOperation {
    /// GET.
    Read,
    /// LIST.
    List,
    /// A write to a path with no object yet.
    Create,
    /// A write to an existing object, or an action.
    Update,
    /// DELETE.
    Delete,
}

impl AclOperation {
    fn capability(self) -> Capability {
        match self {
            Self::Read => Capability::Read,
            Self::List => Capability::List,
            Self::Create => Capability::Create,
            Self::Update => Capability::Update,
            Self::Delete => Capability::Delete,
        }
    }
}

/// Why a policy text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

/// One `path` block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRule {
    /// The pattern (no leading `/`).
    pub path: String,
    /// Granted capabilities.
    pub capabilities: BTreeSet<Capability>,
    /// Parameter → allowed values (empty: any value). Absent map: no constraint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_parameters: Option<BTreeMap<String, Vec<Value>>>,
    /// Parameter → denied values (empty: the parameter itself is denied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied_parameters: Option<BTreeMap<String, Vec<Value>>>,
    /// Parameters that must be present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_parameters: Vec<String>,
}

/// A parsed policy: its rules, in the order written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The `path` blocks.
    pub rules: Vec<PathRule>,
}

/// Keys a `path` block may hold that this server does not enforce: refused, not ignored.
const UNSUPPORTED_KEYS: [&str; 4] = [
    "min_wrapping_ttl",
    "max_wrapping_ttl",
    "mfa_methods",
    "control_group",
];

impl Policy {
    /// Parses a policy in Vault's HCL form, or its JSON form (`{"path": {"…": {…}}}`).
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let trimmed = text.trim_start();
        let rules = if trimmed.starts_with('{') {
            parse_json(trimmed)?
        } else {
            parse_hcl(text)?
        };
        if rules.is_empty() {
            return Err(PolicyError("the policy has no path rules".into()));
        }
        Ok(Self { rules })
    }
}

fn parse_hcl(text: &str) -> Result<Vec<PathRule>, PolicyError> {
    use hcl::{BlockLabel, Structure};
    let body = hcl::parse(text).map_err(|e| PolicyError(format!("invalid HCL: {e}")))?;
    let mut rules = Vec::new();
    for structure in body.into_inner() {
        let block = match structure {
            Structure::Block(block) if block.identifier.as_str() == "path" => block,
            Structure::Block(block) => {
                return Err(PolicyError(format!(
                    "invalid key {:?} (only path blocks are allowed)",
                    block.identifier.as_str()
                )));
            }
            Structure::Attribute(attr) => {
                return Err(PolicyError(format!(
                    "invalid key {:?} (only path blocks are allowed)",
                    attr.key.as_str()
                )));
            }
        };
        let pattern = match block.labels.as_slice() {
            [BlockLabel::String(p)] => p.clone(),
            [BlockLabel::Identifier(p)] => p.as_str().to_owned(),
            _ => return Err(PolicyError("a path block takes exactly one path".into())),
        };
        let mut fields = Map::new();
        for item in block.body.into_inner() {
            let (key, value) = match item {
                Structure::Attribute(attr) => (attr.key.as_str().to_owned(), hcl_value(attr.expr)?),
                // HCL1 style: `allowed_parameters { "key" = [...] }`.
                Structure::Block(inner) if inner.labels.is_empty() => {
                    let mut object = Map::new();
                    for nested in inner.body.into_inner() {
                        match nested {
                            Structure::Attribute(attr) => {
                                object.insert(attr.key.as_str().to_owned(), hcl_value(attr.expr)?);
                            }
                            Structure::Block(_) => {
                                return Err(PolicyError(format!(
                                    "path {pattern:?}: unexpected nested block"
                                )));
                            }
                        }
                    }
                    (inner.identifier.as_str().to_owned(), Value::Object(object))
                }
                Structure::Block(inner) => {
                    return Err(PolicyError(format!(
                        "path {pattern:?}: unexpected block {:?}",
                        inner.identifier.as_str()
                    )));
                }
            };
            if fields.insert(key.clone(), value).is_some() {
                return Err(PolicyError(format!("path {pattern:?}: {key} given twice")));
            }
        }
        rules.push(rule(pattern, &fields)?);
    }
    Ok(rules)
}

/// An HCL expression as a plain value: literals, arrays and objects only.
fn hcl_value(expr: hcl::Expression) -> Result<Value, PolicyError> {
    use hcl::{Expression, ObjectKey};
    Ok(match expr {
        Expression::Null => Value::Null,
        Expression::Bool(b) => Value::Bool(b),
        Expression::Number(n) => {
            serde_json::to_value(n).map_err(|e| PolicyError(format!("number: {e}")))?
        }
        Expression::String(s) => Value::String(s),
        Expression::Array(items) => {
            Value::Array(items.into_iter().map(hcl_value).collect::<Result<_, _>>()?)
        }
        Expression::Object(object) => {
            let mut out = Map::new();
            for (key, value) in object {
                let key = match key {
                    ObjectKey::Identifier(id) => id.as_str().to_owned(),
                    ObjectKey::Expression(Expression::String(s)) => s,
                    _ => {
                        return Err(PolicyError("object keys must be names or strings".into()));
                    }
                };
                out.insert(key, hcl_value(value)?);
            }
            Value::Object(out)
        }
        Expression::Parenthesis(inner) => hcl_value(*inner)?,
        _ => {
            return Err(PolicyError(
                "policies may hold only literal values (no interpolation, variables or functions)"
                    .into(),
            ));
        }
    })
}

/// A JSON value read without letting a repeated key replace an earlier one (serde_json keeps
/// the last): a policy must never silently lose a rule, a `deny` least of all.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, MapAccess, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
                Ok(Value::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
                Ok(Value::from(n))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
                Ok(Value::from(n))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
                Ok(Value::from(n))
            }
            fn visit_str<E>(self, s: &str) -> Result<Value, E> {
                Ok(Value::String(s.to_owned()))
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut items = Vec::new();
                while let Some(Strict(v)) = seq.next_element()? {
                    items.push(v);
                }
                Ok(Value::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let mut out = Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    if out.contains_key(&key) {
                        return Err(A::Error::custom(format!("key {key:?} given twice")));
                    }
                    let Strict(v) = map.next_value()?;
                    out.insert(key, v);
                }
                Ok(Value::Object(out))
            }
        }
        d.deserialize_any(V).map(Strict)
    }
}

fn parse_json(text: &str) -> Result<Vec<PathRule>, PolicyError> {
    let Strict(doc) =
        serde_json::from_str(text).map_err(|e| PolicyError(format!("invalid JSON: {e}")))?;
    let Value::Object(doc) = doc else {
        return Err(PolicyError("a JSON policy is an object".into()));
    };
    let mut rules = Vec::new();
    for (key, value) in doc {
        if key != "path" {
            return Err(PolicyError(format!(
                "invalid key {key:?} (only path is allowed)"
            )));
        }
        // `"path": {"p": {…}}` or `"path": [{"p": {…}}, …]`.
        let entries: Vec<Map<String, Value>> = match value {
            Value::Object(m) => vec![m],
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::Object(m) => Ok(m),
                    _ => Err(PolicyError("path entries are objects".into())),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(PolicyError("path is an object".into())),
        };
        for entry in entries {
            for (pattern, fields) in entry {
                let Value::Object(fields) = fields else {
                    return Err(PolicyError(format!("path {pattern:?} is not an object")));
                };
                rules.push(rule(pattern, &fields)?);
            }
        }
    }
    Ok(rules)
}

fn string_list(key: &str, value: &Value) -> Result<Vec<String>, PolicyError> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| PolicyError(format!("{key}: expected a list of strings")))
            })
            .collect(),
        _ => Err(PolicyError(format!("{key}: expected a list of strings"))),
    }
}

fn parameter_map(
    key: &str,
    value: &Value,
) -> Result<Option<BTreeMap<String, Vec<Value>>>, PolicyError> {
    let Value::Object(map) = value else {
        return Err(PolicyError(format!("{key}: expected an object of lists")));
    };
    let mut out = BTreeMap::new();
    for (name, values) in map {
        let values = match values {
            Value::Array(items) => items.clone(),
            Value::Null => Vec::new(),
            _ => return Err(PolicyError(format!("{key}.{name}: expected a list"))),
        };
        out.insert(name.to_ascii_lowercase(), values);
    }
    Ok(Some(out))
}

/// Builds one rule from a path block's fields, refusing what cannot be enforced.
fn rule(pattern: String, fields: &Map<String, Value>) -> Result<PathRule, PolicyError> {
    let path = check_pattern(&pattern)?;
    let mut rule = PathRule {
        path,
        ..PathRule::default()
    };
    for (key, value) in fields {
        match key.as_str() {
            "capabilities" => {
                for c in string_list(key, value)? {
                    rule.capabilities.insert(Capability::parse(&c)?);
                }
            }
            // The legacy shorthand.
            "policy" => {
                let caps: &[Capability] = match value.as_str() {
                    Some("deny") => &[Capability::Deny],
                    Some("read") => &[Capability::Read, Capability::List],
                    Some("write") => &[
                        Capability::Create,
                        Capability::Read,
                        Capability::Update,
                        Capability::Delete,
                        Capability::List,
                    ],
                    Some("sudo") => &[
                        Capability::Create,
                        Capability::Read,
                        Capability::Update,
                        Capability::Delete,
                        Capability::List,
                        Capability::Sudo,
                    ],
                    _ => {
                        return Err(PolicyError(format!(
                            "path {pattern:?}: policy must be deny, read, write or sudo"
                        )));
                    }
                };
                rule.capabilities.extend(caps);
            }
            "allowed_parameters" => rule.allowed_parameters = parameter_map(key, value)?,
            "denied_parameters" => rule.denied_parameters = parameter_map(key, value)?,
            "required_parameters" => {
                rule.required_parameters = string_list(key, value)?
                    .into_iter()
                    .map(|p| p.to_ascii_lowercase())
                    .collect();
            }
            k if UNSUPPORTED_KEYS.contains(&k) => {
                return Err(PolicyError(format!(
                    "path {pattern:?}: {k} is not supported by this server; remove it"
                )));
            }
            other => {
                return Err(PolicyError(format!(
                    "path {pattern:?}: invalid key {other:?}"
                )));
            }
        }
    }
    if rule.capabilities.is_empty() {
        return Err(PolicyError(format!(
            "path {pattern:?}: no capabilities given"
        )));
    }
    Ok(rule)
}

/// A pattern: no identity templates, `*` only at the end, `+` only as a whole segment.
fn check_pattern(pattern: &str) -> Result<String, PolicyError> {
    let p = pattern.trim_start_matches('/');
    let bad = |why: &str| Err(PolicyError(format!("path {pattern:?}: {why}")));
    if p.contains("{{") {
        return bad("templated policies are not supported");
    }
    if p.chars().any(char::is_control) {
        return bad("control characters are not allowed");
    }
    let body = p.strip_suffix('*').unwrap_or(p);
    if body.contains('*') {
        return bad("* is allowed only at the end of a path");
    }
    if body
        .split('/')
        .any(|segment| segment.contains('+') && segment != "+")
    {
        return bad("+ must be a whole path segment");
    }
    Ok(p.to_owned())
}

/// The merged permissions of one pattern.
#[derive(Debug, Clone, Default)]
struct Permissions {
    capabilities: BTreeSet<Capability>,
    allowed: Option<BTreeMap<String, Vec<Value>>>,
    denied: Option<BTreeMap<String, Vec<Value>>>,
    required: BTreeSet<String>,
}

impl Permissions {
    /// Vault's merge: capabilities join (`deny` alone stays), an empty value list means "any"
    /// (allowed) or "all" (denied) and wins over a list.
    fn merge(&mut self, rule: &PathRule) {
        if self.capabilities.contains(&Capability::Deny) {
            return;
        }
        if rule.capabilities.contains(&Capability::Deny) {
            *self = Self {
                capabilities: [Capability::Deny].into(),
                ..Self::default()
            };
            return;
        }
        self.capabilities.extend(rule.capabilities.iter().copied());
        merge_parameters(&mut self.allowed, &rule.allowed_parameters);
        merge_parameters(&mut self.denied, &rule.denied_parameters);
        self.required
            .extend(rule.required_parameters.iter().cloned());
    }

    fn allows_parameters(&self, op: AclOperation, data: &Map<String, Value>) -> bool {
        if !matches!(
            op,
            AclOperation::Read | AclOperation::Create | AclOperation::Update
        ) {
            return true;
        }
        let lower: HashMap<String, &Value> = data
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        if self.required.iter().any(|p| !lower.contains_key(p)) {
            return false;
        }
        if lower.is_empty() {
            return true;
        }
        if let Some(denied) = &self.denied {
            if denied.contains_key("*") {
                return false;
            }
            for (name, value) in &lower {
                if let Some(values) = denied.get(name)
                    && value_in_list(value, values)
                {
                    return false;
                }
            }
        }
        let Some(allowed) = &self.allowed else {
            return true;
        };
        if allowed.is_empty() {
            return true;
        }
        let any_key = allowed.contains_key("*");
        if any_key && allowed.len() == 1 {
            return true;
        }
        lower.iter().all(|(name, value)| match allowed.get(name) {
            Some(values) => value_in_list(value, values),
            None => any_key,
        })
    }
}

fn merge_parameters(
    into: &mut Option<BTreeMap<String, Vec<Value>>>,
    from: &Option<BTreeMap<String, Vec<Value>>>,
) {
    let Some(from) = from else { return };
    let Some(into) = into else {
        *into = Some(from.clone());
        return;
    };
    for (key, values) in from {
        match into.get_mut(key) {
            Some(existing) if existing.is_empty() || values.is_empty() => existing.clear(),
            Some(existing) => existing.extend(values.iter().cloned()),
            None => {
                into.insert(key.clone(), values.clone());
            }
        }
    }
}

/// Vault's `valueInParameterList`: an empty list holds every value; strings match with a
/// leading or trailing `*` glob; other values must be equal.
fn value_in_list(value: &Value, list: &[Value]) -> bool {
    list.is_empty()
        || list.iter().any(|item| match (item, value) {
            (Value::String(pattern), Value::String(v)) => glob_string_match(pattern, v),
            _ => item == value,
        })
}

fn glob_string_match(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
        (Some(_), Some(_)) if pattern.len() >= 2 => value.contains(&pattern[1..pattern.len() - 1]),
        (Some(suffix), None) => value.ends_with(suffix),
        (None, Some(prefix)) => value.starts_with(prefix),
        _ => pattern == value,
    }
}

/// A non-exact pattern, with what Vault's priority rules compare.
#[derive(Debug)]
struct Wildcard {
    pattern: String,
    /// The pattern without its trailing `*`.
    body: String,
    segments: Vec<String>,
    glob: bool,
    first_wildcard: usize,
    plus_count: usize,
    permissions: Permissions,
}

impl Wildcard {
    fn new(pattern: &str, permissions: Permissions) -> Self {
        let glob = pattern.ends_with('*');
        let body = pattern.strip_suffix('*').unwrap_or(pattern).to_owned();
        let segments: Vec<String> = body.split('/').map(str::to_owned).collect();
        let plus_count = segments.iter().filter(|s| *s == "+").count();
        Self {
            pattern: pattern.to_owned(),
            first_wildcard: body.find('+').unwrap_or(body.len()),
            segments,
            body,
            glob,
            plus_count,
            permissions,
        }
    }

    fn matches(&self, path: &str) -> bool {
        if self.plus_count == 0 {
            // A plain glob: a prefix of the path.
            return path.starts_with(&self.body);
        }
        let parts: Vec<&str> = path.split('/').collect();
        let n = self.segments.len();
        if parts.len() < n || (!self.glob && parts.len() != n) {
            return false;
        }
        self.segments
            .iter()
            .zip(&parts)
            .enumerate()
            .all(|(i, (segment, part))| {
                (segment == "+" && !part.is_empty())
                    || segment == part
                    || (self.glob && i + 1 == n && part.starts_with(segment.as_str()))
            })
    }

    /// Vault's `higherPriorityThan`.
    fn outranks(&self, other: &Self) -> bool {
        if self.first_wildcard != other.first_wildcard {
            return self.first_wildcard > other.first_wildcard;
        }
        if self.glob != other.glob {
            return !self.glob;
        }
        if self.plus_count != other.plus_count {
            return self.plus_count < other.plus_count;
        }
        if self.pattern.len() != other.pattern.len() {
            return self.pattern.len() > other.pattern.len();
        }
        self.pattern > other.pattern
    }
}

/// The compiled policies of one token.
#[derive(Debug, Default)]
pub struct Acl {
    root: bool,
    exact: HashMap<String, Permissions>,
    wildcards: Vec<Wildcard>,
}

/// The outcome of an ACL check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; `sudo` when the matching rule also grants sudo (or the token is root).
    Allowed {
        /// Whether the rule grants sudo.
        sudo: bool,
    },
    /// Refused.
    Denied,
}

impl Acl {
    /// The `root` policy: everything.
    pub fn root() -> Self {
        Self {
            root: true,
            ..Self::default()
        }
    }

    /// Compiles policies into one ACL.
    pub fn new<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> Self {
        let mut merged: BTreeMap<String, Permissions> = BTreeMap::new();
        for policy in policies {
            for rule in &policy.rules {
                merged.entry(rule.path.clone()).or_default().merge(rule);
            }
        }
        let mut acl = Self::default();
        for (pattern, permissions) in merged {
            if pattern.ends_with('*') || pattern.split('/').any(|s| s == "+") {
                acl.wildcards.push(Wildcard::new(&pattern, permissions));
            } else {
                acl.exact.insert(pattern, permissions);
            }
        }
        acl
    }

    fn permissions(&self, path: &str) -> Option<&Permissions> {
        if let Some(p) = self.exact.get(path) {
            return Some(p);
        }
        let mut best: Option<&Wildcard> = None;
        for w in self.wildcards.iter().filter(|w| w.matches(path)) {
            if best.is_none_or(|b| w.outranks(b)) {
                best = Some(w);
            }
        }
        best.map(|w| &w.permissions)
    }

    /// May `op` be performed on `path` (normalised, no leading `/`) with parameters `data`?
    pub fn check(&self, path: &str, op: AclOperation, data: &Map<String, Value>) -> Decision {
        if self.root {
            return Decision::Allowed { sudo: true };
        }
        let Some(p) = self.permissions(path) else {
            return Decision::Denied;
        };
        if p.capabilities.contains(&Capability::Deny)
            || !p.capabilities.contains(&op.capability())
            || !p.allows_parameters(op, data)
        {
            return Decision::Denied;
        }
        Decision::Allowed {
            sudo: p.capabilities.contains(&Capability::Sudo),
        }
    }

    /// The capabilities this ACL grants on `path` (`sys/capabilities-self`): `root`, `deny`,
    /// or the granted names.
    pub fn capabilities(&self, path: &str) -> Vec<&'static str> {
        if self.root {
            return vec!["root"];
        }
        match self.permissions(path) {
            None => vec!["deny"],
            Some(p) if p.capabilities.contains(&Capability::Deny) => vec!["deny"],
            Some(p) => p.capabilities.iter().map(|c| c.name()).collect(),
        }
    }
}

#[cfg(test)]
mod tests;

/// The `default` policy every token gets unless it asks not to (`no_default_policy`): what a
/// token may do with itself. Writing a policy named `default` replaces it.
pub const DEFAULT_POLICY: &str = r#"# Tokens may look themselves up, renew and revoke themselves, and ask what they may do.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/revoke-self" {
  capabilities = ["update"]
}
path "sys/capabilities-self" {
  capabilities = ["update"]
}
"#;

/// A stored policy: its text exactly as written (what `policy read` returns).
#[derive(Debug, Serialize, Deserialize)]
struct StoredPolicy {
    policy: String,
}

const POLICY_KIND: &str = "policy";

impl super::Auth {
    /// The parsed policy `name`, from the cache when fresh. `default` falls back to
    /// [`DEFAULT_POLICY`]; `root` is not a stored policy (see [`super::Auth::acl`]).
    pub async fn policy(&self, name: &str) -> Result<Option<std::sync::Arc<Policy>>, super::Error> {
        if let Some(p) = self.cache.policy(name) {
            return Ok(Some(p));
        }
        let text = match self.policy_text(name).await? {
            Some(text) => text,
            None => return Ok(None),
        };
        match Policy::parse(&text) {
            Ok(policy) => {
                let policy = std::sync::Arc::new(policy);
                self.cache.put_policy(name, &policy);
                Ok(Some(policy))
            }
            Err(e) => {
                // Stored policies parsed when written; this one cannot be trusted to mean what
                // its author meant, so it grants nothing.
                tracing::warn!(policy = name, error = %e, "stored policy does not parse; it grants nothing");
                Ok(None)
            }
        }
    }

    /// The text of policy `name` as written.
    pub async fn policy_text(&self, name: &str) -> Result<Option<String>, super::Error> {
        match self.store.object(POLICY_KIND, "", name).await? {
            Some(body) => match serde_json::from_str::<StoredPolicy>(&body) {
                Ok(stored) => Ok(Some(stored.policy)),
                Err(_) => {
                    // Written by a version whose parser was a text scanner (commented lines became
                    // grants): refuse to guess what it meant.
                    tracing::warn!(
                        policy = name,
                        "policy stored by an earlier version grants nothing until written again"
                    );
                    Ok(None)
                }
            },
            None if name == "default" => Ok(Some(DEFAULT_POLICY.to_owned())),
            None => Ok(None),
        }
    }

    /// Parses and stores a policy; `root` cannot be written.
    pub async fn put_policy(&self, name: &str, text: &str) -> Result<(), super::Error> {
        check_policy_name(name)?;
        if name == "root" {
            return Err(super::Error::Invalid(
                "cannot update the root policy".into(),
            ));
        }
        let policy = Policy::parse(text)
            .map_err(|e| super::Error::Invalid(format!("failed to parse policy: {e}")))?;
        let body = serde_json::to_string(&StoredPolicy {
            policy: text.to_owned(),
        })
        .map_err(|e| super::Error::Internal(e.to_string()))?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.store
            .put_object(POLICY_KIND, "", name, &body, now)
            .await?;
        self.cache.put_policy(name, &std::sync::Arc::new(policy));
        Ok(())
    }

    /// Deletes a policy; `root` and `default` cannot be deleted.
    pub async fn delete_policy(&self, name: &str) -> Result<(), super::Error> {
        if name == "root" || name == "default" {
            return Err(super::Error::Invalid(format!(
                "cannot delete the {name} policy"
            )));
        }
        self.store.delete_object(POLICY_KIND, "", name).await?;
        self.cache.forget_policy(name);
        Ok(())
    }

    /// Every policy name, `default` and `root` included.
    pub async fn policy_names(&self) -> Result<Vec<String>, super::Error> {
        let mut names = self.store.object_names(POLICY_KIND, "").await?;
        for builtin in ["default", "root"] {
            if !names.iter().any(|n| n == builtin) {
                names.push(builtin.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }
}

/// Policy names: Vault's characters, bounded.
fn check_policy_name(name: &str) -> Result<(), super::Error> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(super::Error::Invalid(format!(
            "invalid policy name {:?}",
            crate::policy::shorten(name)
        )))
    }
}
