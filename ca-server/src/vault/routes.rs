//! The Vault surface's route table: every path it serves, the operations each accepts, and
//! whether it is public or needs a token — declared once, like Vault's
//! `PathsSpecial.Unauthenticated`. A token route's handler takes an [`Authorized`], which only the
//! auth layer makes, so a route cannot skip the check; a path absent from the table does not
//! exist.
//!
//! Paths are matched after [`super::request::normalize_path`], segment by segment: literal
//! segments, `+` for exactly one segment, or a final `*` for one or more (each captured into
//! [`Call::params`]; `*` as the remaining segments joined with `/`).

use std::future::Future;
use std::pin::Pin;

use axum::response::Response;

use super::request::{Call, Operation};
use super::{VaultConfig, VaultError, VaultState};
use crate::auth::Authorized;

/// What a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Response, VaultError>> + Send>>;

/// A route's handler, and so its access.
#[derive(Clone, Copy)]
pub enum Handler {
    /// Anyone may call it (health, CA certificates, CRLs, logins).
    Public(fn(VaultState, Call) -> HandlerFuture),
    /// A token whose policies allow the request.
    Token(fn(VaultState, Call, Authorized) -> HandlerFuture),
}

/// Whether a write creates or updates (Vault's existence check): the object it names.
#[derive(Debug, Clone, Copy)]
pub struct Existence {
    /// Stored object kind.
    pub kind: &'static str,
    /// Its mount: `Some` for a fixed one (policies: `""`), `None` for the route's mount.
    pub mount: Option<&'static str>,
}

/// One route.
#[derive(Clone, Copy)]
pub struct Route {
    /// Segments after the mount; `+` matches one segment, a final `*` the rest.
    pub pattern: &'static str,
    /// Operations it accepts; others answer 405.
    pub ops: &'static [Operation],
    /// Handler and access.
    pub handler: Handler,
    /// For writes: the object whose existence makes the write an update rather than a create.
    pub existence: Option<Existence>,
}

impl Route {
    /// Whether anyone may call it.
    pub fn is_public(&self) -> bool {
        matches!(self.handler, Handler::Public(_))
    }
}

/// Declares a public route.
macro_rules! public {
    ($pattern:expr, $ops:expr, $f:path) => {
        $crate::vault::routes::Route {
            pattern: $pattern,
            ops: $ops,
            handler: $crate::vault::routes::Handler::Public(|state, call| {
                Box::pin(async move { $f(&state, &call).await })
            }),
            existence: None,
        }
    };
}

/// Declares a token route.
macro_rules! token {
    ($pattern:expr, $ops:expr, $f:path) => {
        token!($pattern, $ops, $f, None)
    };
    ($pattern:expr, $ops:expr, $f:path, $existence:expr) => {
        $crate::vault::routes::Route {
            pattern: $pattern,
            ops: $ops,
            handler: $crate::vault::routes::Handler::Token(|state, call, who| {
                Box::pin(async move { $f(&state, &call, &who).await })
            }),
            existence: $existence,
        }
    };
}

pub(crate) use {public, token};

/// Operation sets.
pub mod ops {
    use super::Operation::{self, *};
    /// GET.
    pub const READ: &[Operation] = &[Read];
    /// POST/PUT.
    pub const WRITE: &[Operation] = &[Write];
    /// LIST.
    pub const LIST: &[Operation] = &[List];
    /// GET or LIST.
    pub const READ_LIST: &[Operation] = &[Read, List];
    /// GET, POST/PUT, DELETE.
    pub const CRUD: &[Operation] = &[Read, Write, Delete];
    /// GET or POST/PUT.
    pub const READ_WRITE: &[Operation] = &[Read, Write];
}

/// A mounted set of routes.
#[derive(Clone)]
pub struct Backend {
    /// The path prefix it serves (`sys`, `auth/token`, `auth/kubernetes`, `pki_int`, `ledger`).
    pub prefix: String,
    /// The mount name handlers and stored objects use (`kubernetes`, `pki_int`; empty for
    /// `sys`, `auth/token` and `ledger`).
    pub mount: String,
    /// Its routes, most specific first.
    pub routes: &'static [Route],
}

/// Every backend of the server, longest prefix first.
pub struct Table {
    backends: Vec<Backend>,
}

impl Table {
    /// The table for a configuration: `sys`, token auth, each auth mount, each PKI mount, ledger.
    pub fn new(config: &VaultConfig) -> Self {
        let mut backends = vec![
            Backend {
                prefix: "sys".into(),
                mount: String::new(),
                routes: super::sys::ROUTES,
            },
            Backend {
                prefix: "auth/token".into(),
                mount: String::new(),
                routes: super::tokens::ROUTES,
            },
            Backend {
                prefix: "ledger".into(),
                mount: String::new(),
                routes: super::ledger::ROUTES,
            },
        ];
        for (mount, method) in &config.auth_mounts {
            let routes = match method.as_str() {
                "kubernetes" => super::logins::KUBERNETES,
                "approle" => super::logins::APPROLE,
                "cert" => super::logins::CERT,
                _ => continue,
            };
            backends.push(Backend {
                prefix: format!("auth/{mount}"),
                mount: mount.clone(),
                routes,
            });
        }
        for mount in &config.pki_mounts {
            backends.push(Backend {
                prefix: mount.clone(),
                mount: mount.clone(),
                routes: super::pki::ROUTES,
            });
        }
        backends.sort_by_key(|b| std::cmp::Reverse(b.prefix.len()));
        Self { backends }
    }

    /// Every backend (for tests that walk the table).
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// The route serving `path`, its mount and its `+` captures.
    pub fn resolve(&self, path: &str) -> Option<(&Route, &str, Vec<String>)> {
        let backend = self.backends.iter().find(|b| {
            path.strip_prefix(b.prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })?;
        let rest = path[backend.prefix.len()..].trim_start_matches('/');
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        for route in backend.routes {
            let mut pattern: Vec<&str> = route.pattern.split('/').collect();
            // A trailing `*` captures one or more remaining segments as one parameter.
            let tail = pattern.last() == Some(&"*");
            if tail {
                pattern.pop();
                if parts.len() <= pattern.len() {
                    continue;
                }
            } else if pattern.len() != parts.len() {
                continue;
            }
            let mut params = Vec::new();
            let matched = pattern.iter().zip(&parts).all(|(p, part)| {
                if *p == "+" {
                    params.push((*part).to_owned());
                    true
                } else {
                    p == part
                }
            });
            if matched {
                if tail {
                    params.push(parts[pattern.len()..].join("/"));
                }
                return Some((route, backend.mount.as_str(), params));
            }
        }
        None
    }
}

/// Mount names that would shadow the server's own prefixes.
pub fn check_mounts(config: &VaultConfig) -> anyhow::Result<()> {
    for mount in &config.pki_mounts {
        let first = mount.split('/').next().unwrap_or_default();
        if mount.is_empty()
            || ["sys", "auth", "ledger"].contains(&first)
            || super::request::normalize_path(mount).ok().as_deref() != Some(mount.as_str())
        {
            anyhow::bail!("[vault] pki_mounts: {mount:?} is not a usable mount path");
        }
    }
    for (mount, method) in &config.auth_mounts {
        if mount == "token"
            || mount.is_empty()
            || super::request::normalize_path(mount).ok().as_deref() != Some(mount.as_str())
        {
            anyhow::bail!("[vault] auth_mounts: {mount:?} is not a usable mount path");
        }
        if !["kubernetes", "approle", "cert"].contains(&method.as_str()) {
            anyhow::bail!(
                "[vault] auth_mounts: {mount:?} has unknown method {method:?} (kubernetes, approle, cert)"
            );
        }
    }
    Ok(())
}
