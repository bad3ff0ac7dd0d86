//! AppRole: a machine logs in with a role ID (public, like a user name) and a secret ID (a
//! secret, stored only as its SHA-256 hash, with a TTL and a use limit).

use serde::{Deserialize, Serialize};
use serde_json::{Map, json};

use super::token::{TokenSpec, sha256_hex};
use super::{Auth, Error};

/// Object kind of roles.
pub const ROLE_KIND: &str = "approle_role";
const SECRET_KIND: &str = "approle_secret";

/// An AppRole role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppRole {
    /// The role ID (generated once, kept across updates).
    pub role_id: String,
    /// Policies of the tokens it makes.
    pub token_policies: Vec<String>,
    /// TTL of its tokens, seconds (0: the default).
    pub token_ttl: u64,
    /// Longest any of its tokens may live, renewals included, seconds (0: 768h).
    #[serde(default)]
    pub token_max_ttl: u64,
    /// Lifetime of secret IDs, seconds (0: no expiry).
    pub secret_id_ttl: u64,
    /// Uses of a secret ID (0: unlimited).
    pub secret_id_num_uses: i64,
    /// Whether logins need a secret ID.
    pub bind_secret_id: bool,
}

impl Default for AppRole {
    /// A secret ID is required unless the role says otherwise (a missing field must never
    /// open a role to anyone who knows its role ID).
    fn default() -> Self {
        Self {
            role_id: String::new(),
            token_policies: Vec::new(),
            token_ttl: 0,
            token_max_ttl: 0,
            secret_id_ttl: 0,
            secret_id_num_uses: 0,
            bind_secret_id: true,
        }
    }
}

impl super::AuthRole for AppRole {
    const KIND: &'static str = ROLE_KIND;

    /// No role may hand out root; a negative use count means nothing.
    fn validate(&self) -> Result<(), Error> {
        if self.secret_id_num_uses < 0 {
            return Err(Error::Invalid(
                "secret_id_num_uses cannot be negative".into(),
            ));
        }
        super::kubernetes::refuse_root_policy(&self.token_policies)
    }

    /// The role ID is made once and kept across updates; a role deleted and written again gets
    /// a new one.
    fn keep_from(&mut self, existing: Self) {
        self.role_id = existing.role_id;
    }
}

/// A secret ID as stored (under the hash of the secret). It belongs to one role *instance*: a
/// role deleted and written again gets a new role ID, and the old secret IDs do not open it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SecretRecord {
    role: String,
    #[serde(default)]
    role_id: String,
    expires_at: Option<i64>,
    uses_remaining: i64,
}

/// A fresh secret ID.
#[derive(Debug, Clone)]
pub struct SecretId {
    /// The secret (shown once).
    pub secret_id: String,
    /// Its accessor.
    pub accessor: String,
    /// TTL, seconds.
    pub ttl: u64,
    /// Uses, 0 unlimited.
    pub num_uses: i64,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Auth {
    /// Issues a secret ID for a role.
    pub async fn approle_secret_id(&self, mount: &str, name: &str) -> Result<SecretId, Error> {
        let role: AppRole = self.json(ROLE_KIND, mount, name).await?.ok_or_else(|| {
            Error::Invalid(format!(
                "role \"{}\" does not exist",
                crate::policy::shorten(name)
            ))
        })?;
        let secret_id = uuid::Uuid::new_v4().to_string();
        let ttl = role.secret_id_ttl;
        let record = SecretRecord {
            role: name.to_owned(),
            role_id: role.role_id.clone(),
            expires_at: (ttl > 0).then(|| now() + i64::try_from(ttl).unwrap_or(i64::MAX / 2)),
            uses_remaining: role.secret_id_num_uses,
        };
        self.put_json(SECRET_KIND, mount, &sha256_hex(&secret_id), &record)
            .await?;
        Ok(SecretId {
            secret_id,
            accessor: super::token::random_b64(12),
            ttl,
            num_uses: role.secret_id_num_uses,
        })
    }

    /// Checks a role ID and secret ID; returns the token the machine gets.
    pub async fn approle_login(
        &self,
        mount: &str,
        role_id: &str,
        secret_id: &str,
    ) -> Result<TokenSpec, Error> {
        let role_id = role_id.trim();
        let mut found = None;
        if !role_id.is_empty() {
            for name in self.store.object_names(ROLE_KIND, mount).await? {
                // Compared as digests, so the comparison's timing says nothing about the role ID.
                if let Some(role) = self.json::<AppRole>(ROLE_KIND, mount, &name).await?
                    && sha256_hex(&role.role_id) == sha256_hex(role_id)
                {
                    found = Some((name, role));
                    break;
                }
            }
        }
        let Some((name, role)) = found else {
            return Err(Error::Invalid("invalid role ID".into()));
        };
        if role.bind_secret_id {
            self.use_secret_id(mount, &name, &role.role_id, secret_id)
                .await?;
        }
        let mut meta = Map::new();
        meta.insert("auth_method".into(), json!("approle"));
        meta.insert("mount".into(), json!(mount));
        meta.insert("role_name".into(), json!(name));
        Ok(TokenSpec {
            policies: role.token_policies,
            display_name: format!("approle-{name}"),
            meta,
            ttl: (role.token_ttl > 0).then(|| std::time::Duration::from_secs(role.token_ttl)),
            no_default_policy: false,
            explicit_max_ttl: (role.token_max_ttl > 0)
                .then(|| std::time::Duration::from_secs(role.token_max_ttl)),
            renewable: true,
        })
    }

    /// Spends one use of a secret ID of role `name`: with a compare-and-set on the stored record,
    /// so concurrent logins cannot spend the same last use twice.
    async fn use_secret_id(
        &self,
        mount: &str,
        name: &str,
        role_id: &str,
        secret_id: &str,
    ) -> Result<(), Error> {
        let key = sha256_hex(secret_id.trim());
        let invalid = || Error::Invalid("invalid secret id".into());
        for _ in 0..8 {
            let body = self
                .store
                .object(SECRET_KIND, mount, &key)
                .await?
                .ok_or_else(invalid)?;
            let record: SecretRecord =
                serde_json::from_str(&body).map_err(|e| Error::Internal(e.to_string()))?;
            if record.role != name
                || record.role_id != role_id
                || record.expires_at.is_some_and(|e| e <= now())
            {
                return Err(invalid());
            }
            let spent = match record.uses_remaining {
                0 => return Ok(()),
                1 => {
                    self.store
                        .delete_object_if(SECRET_KIND, mount, &key, &body)
                        .await?
                }
                n => {
                    let updated = serde_json::to_string(&SecretRecord {
                        uses_remaining: n - 1,
                        ..record
                    })
                    .map_err(|e| Error::Internal(e.to_string()))?;
                    self.store
                        .replace_object(SECRET_KIND, mount, &key, &body, &updated, now())
                        .await?
                }
            };
            if spent {
                return Ok(());
            }
            // Another login spent a use meanwhile: read again.
        }
        Err(Error::Unavailable(
            "the secret ID is in heavy concurrent use; retry".into(),
        ))
    }

    /// Deletes a role and every secret ID issued for it.
    pub async fn delete_approle(&self, mount: &str, name: &str) -> Result<(), Error> {
        self.store.delete_object(ROLE_KIND, mount, name).await?;
        for key in self.store.object_names(SECRET_KIND, mount).await? {
            if let Some(record) = self.json::<SecretRecord>(SECRET_KIND, mount, &key).await?
                && record.role == name
            {
                self.store.delete_object(SECRET_KIND, mount, &key).await?;
            }
        }
        Ok(())
    }
}
