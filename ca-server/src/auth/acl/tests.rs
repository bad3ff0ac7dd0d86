use proptest::prelude::*;
use serde_json::json;

use super::*;

fn acl(texts: &[&str]) -> Acl {
    let policies: Vec<Policy> = texts
        .iter()
        .map(|t| Policy::parse(t).expect("valid policy"))
        .collect();
    Acl::new(&policies)
}

fn data(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn allowed(acl: &Acl, path: &str, op: AclOperation, body: Value) -> bool {
    matches!(acl.check(path, op, &data(body)), Decision::Allowed { .. })
}

#[test]
fn comments_grant_nothing() {
    let text = r#"
        # path "pki_int/issue/web" { capabilities = ["update"] }
        // path "pki_int/sign/web" { capabilities = ["update"] }
        /* path "sys/policy/*" { capabilities = ["update"] } */
        path "pki_int/roles/+" { capabilities = ["read"] } # a trailing comment
    "#;
    let policy = Policy::parse(text).expect("parses");
    assert_eq!(policy.rules.len(), 1);
    let acl = Acl::new([&policy]);
    for path in ["pki_int/issue/web", "pki_int/sign/web", "sys/policy/admin"] {
        assert!(
            !allowed(&acl, path, AclOperation::Update, json!({})),
            "{path}"
        );
    }
    assert!(allowed(
        &acl,
        "pki_int/roles/web",
        AclOperation::Read,
        json!({})
    ));
}

#[test]
fn parameter_constraints_are_enforced() {
    let acl = acl(&[r#"
        path "pki_int/issue/web" {
          capabilities = ["update"]
          allowed_parameters = {
            "common_name" = ["web.default.svc", "*.team-a.svc"]
            "ttl" = []
          }
        }
        path "pki_int/sign/web" {
          capabilities = ["update"]
          denied_parameters = { "alt_names" = [] , "ttl" = ["8760h"] }
          required_parameters = ["csr"]
        }
    "#]);
    let op = AclOperation::Update;
    assert!(allowed(
        &acl,
        "pki_int/issue/web",
        op,
        json!({"common_name": "web.default.svc"})
    ));
    assert!(allowed(
        &acl,
        "pki_int/issue/web",
        op,
        json!({"common_name": "x.team-a.svc", "ttl": "1h"})
    ));
    assert!(!allowed(
        &acl,
        "pki_int/issue/web",
        op,
        json!({"common_name": "ceo.bank.example"})
    ));
    assert!(
        !allowed(
            &acl,
            "pki_int/issue/web",
            op,
            json!({"common_name": "web.default.svc", "alt_names": "x"})
        ),
        "unlisted keys are refused"
    );
    assert!(allowed(&acl, "pki_int/sign/web", op, json!({"csr": "…"})));
    assert!(!allowed(
        &acl,
        "pki_int/sign/web",
        op,
        json!({"csr": "…", "alt_names": "a"})
    ));
    assert!(
        !allowed(
            &acl,
            "pki_int/sign/web",
            op,
            json!({"csr": "…", "TTL": "8760h"})
        ),
        "keys compare case-insensitively"
    );
    assert!(allowed(
        &acl,
        "pki_int/sign/web",
        op,
        json!({"csr": "…", "ttl": "1h"})
    ));
    assert!(
        !allowed(&acl, "pki_int/sign/web", op, json!({"common_name": "a"})),
        "csr is required"
    );
}

#[test]
fn what_cannot_be_enforced_is_refused() {
    for text in [
        "path \"a\" {\n capabilities = [\"read\"]\n min_wrapping_ttl = \"1s\"\n}",
        "path \"a\" {\n capabilities = [\"read\"]\n control_group = {}\n}",
        "path \"a\" {\n capabilities = [\"read\"]\n bogus = true\n}",
        r#"path "a" { capabilities = ["reed"] }"#,
        r#"path "a" { capabilities = [] }"#,
        r#"path "secret/{{identity.entity.id}}/*" { capabilities = ["read"] }"#,
        r#"path "a/*/b" { capabilities = ["read"] }"#,
        r#"path "a/b+/c" { capabilities = ["read"] }"#,
        "path \"a\" { capabilities = [\"read\"] }\npath \"b\" { capabilities = [\"${var.x}\"] }",
        r#"path "a" { capabilities = [read] }"#,
        r#"name = "x""#,
        "path \"a\" { capabilities = [\"read\"]",
        "",
        "# only a comment",
        r#"{"path": {"a": {"capabilities": ["read"], "max_wrapping_ttl": "1h"}}}"#,
        // A repeated key would make a JSON reader keep only the last: refused instead.
        r#"{"path": {"pki_int/roles/*": {"capabilities": ["deny"]}}, "path": {"pki_int/*": {"capabilities": ["read"]}}}"#,
        r#"{"path": {"a": {"capabilities": ["deny"], "capabilities": ["read"]}}}"#,
        r#"{"path": {"a": {"capabilities": ["deny"]}, "a": {"capabilities": ["read"]}}}"#,
    ] {
        assert!(Policy::parse(text).is_err(), "{text}");
    }
}

#[test]
fn json_and_legacy_forms() {
    let acl = acl(&[
        r#"{"path": {"pki/sign/*": {"capabilities": ["update"]}, "pki/roles/web": {"policy": "read"}}}"#,
        r#"path "pki/tidy" { policy = "write" }"#,
    ]);
    assert!(allowed(&acl, "pki/sign/x", AclOperation::Update, json!({})));
    assert!(allowed(
        &acl,
        "pki/roles/web",
        AclOperation::List,
        json!({})
    ));
    assert!(!allowed(
        &acl,
        "pki/roles/web",
        AclOperation::Update,
        json!({})
    ));
    assert!(allowed(&acl, "pki/tidy", AclOperation::Create, json!({})));
}

#[test]
fn the_most_specific_rule_wins_and_deny_wins_its_pattern() {
    let broad_allow_narrow_deny = acl(&[
        r#"path "pki_int/*" { capabilities = ["create", "read", "update", "list"] }"#,
        r#"path "pki_int/sign/admin" { capabilities = ["deny"] }
           path "sys/policy/admin" { capabilities = ["deny"] }
           path "sys/policy/*" { capabilities = ["update"] }"#,
    ]);
    let op = AclOperation::Update;
    assert!(allowed(
        &broad_allow_narrow_deny,
        "pki_int/sign/web",
        op,
        json!({})
    ));
    assert!(!allowed(
        &broad_allow_narrow_deny,
        "pki_int/sign/admin",
        op,
        json!({})
    ));
    assert!(!allowed(
        &broad_allow_narrow_deny,
        "sys/policy/admin",
        op,
        json!({})
    ));
    assert!(allowed(
        &broad_allow_narrow_deny,
        "sys/policy/other",
        op,
        json!({})
    ));

    // Vault's priority: later first wildcard, then no glob, then fewer +, then longer.
    let ranked = acl(&[r#"
        path "secret/*" { capabilities = ["deny"] }
        path "secret/+/x" { capabilities = ["read"] }
        path "secret/a/*" { capabilities = ["update"] }
        path "secret/+/+" { capabilities = ["list"] }
    "#]);
    assert!(
        allowed(&ranked, "secret/a/x", AclOperation::Update, json!({})),
        "secret/a/* starts its wildcard later"
    );
    assert!(
        allowed(&ranked, "secret/b/x", AclOperation::Read, json!({})),
        "fewer + wins"
    );
    assert!(allowed(
        &ranked,
        "secret/b/y",
        AclOperation::List,
        json!({})
    ));
    assert!(
        !allowed(&ranked, "secret/b/y/z", AclOperation::Read, json!({})),
        "secret/* denies"
    );

    // Same pattern in two policies: capabilities join; a deny leaves only deny.
    let joined = acl(&[
        r#"path "pki/issue/web" { capabilities = ["read"] }"#,
        r#"path "pki/issue/web" { capabilities = ["update"] }"#,
    ]);
    assert!(allowed(
        &joined,
        "pki/issue/web",
        AclOperation::Update,
        json!({})
    ));
    assert!(allowed(
        &joined,
        "pki/issue/web",
        AclOperation::Read,
        json!({})
    ));
    let denied = acl(&[
        r#"path "pki/issue/web" { capabilities = ["update"] }"#,
        r#"path "pki/issue/web" { capabilities = ["deny"] }"#,
    ]);
    assert!(!allowed(
        &denied,
        "pki/issue/web",
        AclOperation::Update,
        json!({})
    ));
    assert_eq!(denied.capabilities("pki/issue/web"), vec!["deny"]);
}

#[test]
fn create_and_update_are_distinct() {
    let acl = acl(&[r#"path "pki/roles/+" { capabilities = ["create"] }"#]);
    assert!(allowed(
        &acl,
        "pki/roles/new",
        AclOperation::Create,
        json!({})
    ));
    assert!(!allowed(
        &acl,
        "pki/roles/new",
        AclOperation::Update,
        json!({})
    ));
    assert!(
        !allowed(&acl, "pki/roles/a/b", AclOperation::Create, json!({})),
        "+ is one segment"
    );
}

#[test]
fn an_empty_acl_denies_and_root_allows() {
    let none = Acl::new([]);
    assert_eq!(
        none.check("sys/health", AclOperation::Read, &Map::new()),
        Decision::Denied
    );
    assert_eq!(
        Acl::root().check("anything/at/all", AclOperation::Delete, &Map::new()),
        Decision::Allowed { sudo: true }
    );
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("pki_int".to_owned()),
        Just("sign".to_owned()),
        Just("admin".to_owned()),
        Just("web".to_owned()),
        "[a-z0-9_.-]{1,8}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    proptest::collection::vec(segment(), 1..6).prop_map(|s| s.join("/"))
}

proptest! {
    /// No path under a denied pattern is ever allowed, whatever broad rule also matches.
    #[test]
    fn a_deny_is_never_bypassed(rest in path(), op in prop_oneof![
        Just(AclOperation::Read), Just(AclOperation::Update), Just(AclOperation::Create),
        Just(AclOperation::List), Just(AclOperation::Delete)]) {
        let acl = acl(&[
            r#"path "*" { capabilities = ["create", "read", "update", "delete", "list", "sudo"] }"#,
            r#"path "pki_int/+/*" { capabilities = ["read", "update"] }"#,
            r#"path "pki_int/sign/admin*" { capabilities = ["deny"] }"#,
        ]);
        let denied = format!("pki_int/sign/admin{}", rest);
        prop_assert_eq!(acl.check(&denied, op, &Map::new()), Decision::Denied);
        let denied_below = format!("pki_int/sign/admin/{}", rest);
        prop_assert_eq!(acl.check(&denied_below, op, &Map::new()), Decision::Denied);
    }

    /// A rule never grants outside its pattern: an ACL with one exact rule allows that path only.
    #[test]
    fn exact_rules_match_only_themselves(a in path(), b in path()) {
        let text = format!("path \"{a}\" {{ capabilities = [\"read\"] }}");
        let acl = acl(&[&text]);
        prop_assert_eq!(acl.check(&b, AclOperation::Read, &Map::new()) != Decision::Denied, a == b);
    }

    /// Parameter values outside `allowed_parameters` are refused, whatever the key's case.
    #[test]
    fn allowed_parameters_hold(value in "[a-z.]{1,20}", upper in any::<bool>()) {
        let acl = acl(&["path \"pki/issue/web\" {\n capabilities = [\"update\"]\n allowed_parameters = { \"common_name\" = [\"web.svc\"] }\n}"]);
        let key = if upper { "COMMON_NAME" } else { "common_name" };
        let mut body = Map::new();
        body.insert(key.to_owned(), Value::String(value.clone()));
        let verdict = acl.check("pki/issue/web", AclOperation::Update, &body);
        prop_assert_eq!(verdict != Decision::Denied, value == "web.svc");
    }

    /// Arbitrary text never panics the parser; what parses has rules with valid patterns.
    #[test]
    fn parsing_never_panics(text in "\\PC{0,200}") {
        if let Ok(policy) = Policy::parse(&text) {
            for rule in &policy.rules {
                prop_assert!(check_pattern(&rule.path).is_ok());
            }
        }
    }
}
