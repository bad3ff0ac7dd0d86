//! `ca-server`: an in-cluster private CA for Kubernetes.
//!
//! Data flows one way: HTTP edge ([`http`]) → auth → policy → issuer ([`issuer`], the only holder
//! of private keys) → store (the `ca-store` crate, the only code that speaks SQL).
#![warn(missing_docs)]

pub mod acme;
pub mod auth;
pub mod backup;
pub mod config;
pub mod duration;
pub mod http;
pub mod issuer;
pub mod jose;
pub mod kube;
pub mod metrics;
pub mod names;
pub mod observe;
pub mod policy;
pub mod report;
pub mod seal;
pub mod server;
pub mod spiffe;
pub mod trust;
pub mod ttl_cache;
pub mod validation;
pub mod vault;
