use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::issuer::{Settings, keys};

fn role(v: serde_json::Value) -> Role {
    let mut r: Role = serde_json::from_value(v).expect("role");
    if r.key_type.is_empty() {
        r.key_type = "any".into();
    }
    r
}

fn p256() -> SubjectPublicKey {
    let key = keys::generate_p256().expect("key");
    SubjectPublicKey::from_spki_der(&rcgen::PublicKeyData::subject_public_key_info(&key))
        .expect("spki")
}

fn request(cn: Option<&str>, alt: &[&str]) -> SignRequest {
    SignRequest {
        mode: Mode::Issue,
        public_key: p256(),
        csr: None,
        common_name: cn.map(str::to_owned),
        alt_names: alt.iter().map(|s| (*s).to_owned()).collect(),
        ip_sans: vec![],
        uri_sans: vec![],
        other_sans: vec![],
        exclude_cn_from_sans: false,
        ttl: None,
        not_after: None,
    }
}

fn decide_as(
    role: &Role,
    workload: Option<Workload<'_>>,
    req: SignRequest,
) -> Result<Decision, Rejection> {
    let settings = Settings::default();
    decide(
        role,
        &Context {
            trust_domain: "cluster.local",
            workload,
            settings: &settings,
        },
        req,
    )
}

fn svc_role() -> Role {
    role(
        json!({"allowed_domains": ["svc.cluster.local"], "allow_subdomains": true, "key_type": "any"}),
    )
}

#[test]
fn vault_name_rules() {
    let r = role(json!({"allowed_domains": ["example.com"], "allow_subdomains": true}));
    assert!(r.allows_name("a.example.com"));
    assert!(r.allows_name("*.example.com"));
    assert!(
        !r.allows_name("example.com"),
        "bare domain needs allow_bare_domains"
    );
    assert!(!r.allows_name("a.example.org"));
    assert!(!r.allows_name("evilexample.com"));
    assert!(r.allows_name("localhost"));
    let bare = role(json!({"allowed_domains": ["example.com"], "allow_bare_domains": true}));
    assert!(bare.allows_name("example.com") && !bare.allows_name("a.example.com"));
    let glob =
        role(json!({"allowed_domains": ["*.svc.cluster.local"], "allow_glob_domains": true}));
    assert!(glob.allows_name("web.default.svc.cluster.local"));
    let any = role(json!({"allow_any_name": true}));
    assert!(any.allows_name("anything.test"));
    assert!(
        !any.allows_name("not a host"),
        "enforce_hostnames still applies"
    );
    let no_wild = role(
        json!({"allowed_domains": ["example.com"], "allow_subdomains": true, "allow_wildcard_certificates": false}),
    );
    assert!(!no_wild.allows_name("*.example.com"));
}

#[test]
fn emails_follow_the_domain_rules() {
    let r = svc_role();
    assert!(r.allows_name("ops@web.default.svc.cluster.local"));
    assert!(!r.allows_name("ceo@bank.example"));
    assert!(!r.allows_name("a@b@svc.cluster.local"));
    assert!(!r.allows_name("ops@*.svc.cluster.local"));

    // A CN that is an e-mail address is checked as one.
    let refused = decide_as(&r, None, request(Some("ceo@bank.example"), &[])).expect_err("refused");
    assert!(matches!(
        refused,
        Rejection::NotAllowed {
            kind: NameKind::Email,
            by: Authority::Role,
            ..
        }
    ));
    // alt_names e-mails too.
    let refused = decide_as(
        &r,
        None,
        request(Some("web.default.svc.cluster.local"), &["ceo@bank.example"]),
    )
    .expect_err("refused");
    assert!(matches!(
        refused,
        Rejection::NotAllowed {
            kind: NameKind::Email,
            ..
        }
    ));
    // Allowed ones are kept.
    let ok = decide_as(
        &r,
        None,
        request(
            Some("web.default.svc.cluster.local"),
            &["ops@team.svc.cluster.local"],
        ),
    )
    .expect("allowed");
    assert_eq!(ok.request.emails, vec!["ops@team.svc.cluster.local"]);
}

#[test]
fn identity_roles_give_a_workload_its_own_id_and_nothing_else() {
    let r = role(
        json!({"spiffe_from_identity": true, "require_cn": false, "key_type": "any", "allow_localhost": false}),
    );
    let me = Workload {
        namespace: "payments",
        service_account: "api",
    };
    let mut req = request(None, &[]);
    req.uri_sans = vec!["spiffe://cluster.local/ns/payments/sa/api".into()];
    let ok = decide_as(&r, Some(me), req).expect("own id");
    assert_eq!(
        ok.request.uris,
        vec!["spiffe://cluster.local/ns/payments/sa/api"]
    );
    assert_eq!(ok.request.profile, Profile::Spiffe);

    let mut other = request(None, &[]);
    other.uri_sans = vec!["spiffe://cluster.local/ns/kube-system/sa/admin".into()];
    assert!(
        decide_as(&r, Some(me), other)
            .expect_err("not own")
            .is_identity()
    );

    let no_login = decide_as(&r, None, request(None, &[])).expect_err("no workload");
    assert_eq!(no_login, Rejection::NoWorkloadIdentity);

    // Names the role does not grant do not ride along in the SVID.
    for extra in ["ceo@bank.example", "bank.example"] {
        let refused = decide_as(&r, Some(me), request(None, &[extra])).expect_err(extra);
        assert!(
            matches!(refused, Rejection::NotAllowed { .. }),
            "{extra}: {refused:?}"
        );
    }
}

#[test]
fn key_types() {
    let default = Role::default();
    assert!(default.check_key(KeyAlgorithm::Rsa(2048)).is_ok());
    assert_eq!(
        default.check_key(KeyAlgorithm::EcdsaP256),
        Err(Rejection::KeyType {
            required: "rsa".into()
        })
    );
    let any = role(json!({"key_type": "any"}));
    assert!(
        any.check_key(KeyAlgorithm::EcdsaP256).is_ok()
            && any.check_key(KeyAlgorithm::Rsa(4096)).is_ok()
    );
    assert!(
        role(json!({"key_type": "ec", "key_bits": 384}))
            .check_key(KeyAlgorithm::EcdsaP256)
            .is_err()
    );
}

#[test]
fn ips_uris_and_other_sans() {
    let r = role(
        json!({"allowed_domains": ["svc"], "allow_subdomains": true, "allow_ip_sans": false, "key_type": "any", "allowed_uri_sans": ["spiffe://cluster.local/ns/a/*"]}),
    );
    let mut ip = request(Some("a.svc"), &[]);
    ip.ip_sans = vec!["10.0.0.1".into()];
    assert!(matches!(
        decide_as(&r, None, ip).expect_err("ip"),
        Rejection::KindNotAllowed {
            kind: NameKind::Ip,
            ..
        }
    ));
    let mut bad_ip = request(Some("a.svc"), &[]);
    bad_ip.ip_sans = vec!["10.0.0.300".into()];
    assert!(matches!(
        decide_as(&r, None, bad_ip).expect_err("syntax"),
        Rejection::Invalid { .. }
    ));
    let mut uri = request(Some("a.svc"), &[]);
    uri.uri_sans = vec!["spiffe://cluster.local/ns/b/sa/x".into()];
    assert!(matches!(
        decide_as(&r, None, uri).expect_err("uri"),
        Rejection::NotAllowed {
            kind: NameKind::Uri,
            ..
        }
    ));
    let mut other = request(Some("a.svc"), &[]);
    other.other_sans = vec!["1.3.6.1.4.1.311.20.2.3;UTF8:admin@corp".into()];
    assert!(matches!(
        decide_as(&r, None, other).expect_err("other"),
        Rejection::KindNotAllowed {
            kind: NameKind::Other,
            ..
        }
    ));
}

#[test]
fn globbed_domains_judge_an_address_by_its_host() {
    let r = role(
        json!({"allowed_domains": ["team-a-*.svc.cluster.local"], "allow_glob_domains": true}),
    );
    assert!(r.allows_name("team-a-web.svc.cluster.local"));
    assert!(r.allows_name("ops@team-a-web.svc.cluster.local"));
    assert!(
        !r.allows_name("team-a-x@team-b.svc.cluster.local"),
        "the local part is not the host"
    );
}

#[test]
fn not_after_is_held_to_max_ttl() {
    let r = role(json!({"allow_any_name": true, "max_ttl": 3600, "key_type": "any"}));
    let mut req = request(Some("a.test"), &[]);
    req.not_after = Some(OffsetDateTime::now_utc() + time::Duration::days(300));
    let d = decide_as(&r, None, req).expect("allowed");
    let na = d.request.not_after.expect("not_after");
    assert!(na <= OffsetDateTime::now_utc() + time::Duration::seconds(3600));
    assert_eq!(d.warnings.len(), 1);
    let mut both = request(Some("a.test"), &[]);
    both.ttl = Some(Duration::from_secs(60));
    both.not_after = Some(OffsetDateTime::now_utc() + time::Duration::hours(1));
    assert!(matches!(
        decide_as(&r, None, both),
        Err(Rejection::Malformed(_))
    ));
}

#[test]
fn ttls_are_capped_by_the_role() {
    let r = role(json!({"allow_any_name": true, "max_ttl": 3600, "key_type": "any"}));
    let mut req = request(Some("a.test"), &[]);
    req.ttl = Some(Duration::from_secs(7200));
    let d = decide_as(&r, None, req).expect("allowed");
    assert_eq!(d.request.lifetime, Some(Duration::from_secs(3600)));
    assert_eq!(d.warnings.len(), 1);
}

fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("svc".to_owned()),
        Just("cluster".to_owned()),
        Just("local".to_owned()),
        Just("bank".to_owned()),
        Just("example".to_owned()),
        Just("*".to_owned()),
        "[a-z0-9-]{1,10}",
    ]
}

fn name() -> impl Strategy<Value = String> {
    (
        proptest::option::of("[a-z]{1,5}@"),
        proptest::collection::vec(label(), 1..6),
    )
        .prop_map(|(local, labels)| format!("{}{}", local.unwrap_or_default(), labels.join(".")))
}

proptest! {
    /// Whatever names are asked for, every name in a granted certificate is inside the role's
    /// domain: a DNS name or e-mail domain ending in `.svc.cluster.local`.
    #[test]
    fn nothing_outside_the_roles_domains(cn in proptest::option::of(name()), alt in proptest::collection::vec(name(), 0..5)) {
        let r = role(json!({"allowed_domains": ["svc.cluster.local"], "allow_subdomains": true, "allow_localhost": false, "key_type": "any"}));
        let alt_refs: Vec<&str> = alt.iter().map(String::as_str).collect();
        if let Ok(d) = decide_as(&r, None, request(cn.as_deref(), &alt_refs)) {
            let inside = |n: &str| {
                let host = n.rsplit_once('@').map_or(n, |(_, h)| h).to_ascii_lowercase();
                host.strip_prefix("*.").unwrap_or(&host).ends_with(".svc.cluster.local")
            };
            for n in d.request.dns_names.iter().chain(&d.request.emails) {
                prop_assert!(inside(n), "{} granted", n);
            }
            if let Some(cn) = &d.request.subject.common_name {
                prop_assert!(inside(cn), "CN {} granted", cn);
            }
            prop_assert!(d.request.uris.is_empty() && d.request.ip_addresses.is_empty());
        }
    }

    /// An identity role never grants any SPIFFE ID but the caller's own.
    #[test]
    fn never_another_identity(ns in "[a-z0-9-]{1,12}", sa in "[a-z0-9-]{1,12}", asked in proptest::option::of("spiffe://[a-z.]{1,12}/ns/[a-z0-9-]{1,12}/sa/[a-z0-9-]{1,12}")) {
        let r = role(json!({"spiffe_from_identity": true, "require_cn": false, "key_type": "any"}));
        let me = Workload { namespace: &ns, service_account: &sa };
        let mut req = request(None, &[]);
        req.uri_sans = asked.into_iter().collect();
        if let Ok(d) = decide_as(&r, Some(me), req) {
            prop_assert_eq!(d.request.uris, vec![format!("spiffe://cluster.local/ns/{ns}/sa/{sa}")]);
        }
    }
}
