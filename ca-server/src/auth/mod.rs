//! Who is calling, and may they (the Vault surface's deny-by-default layer).
pub mod acl;
