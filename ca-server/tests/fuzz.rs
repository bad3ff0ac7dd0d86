//! Fuzzing on the stable toolchain: every parser that reads bytes a client, a workload or an
//! operator's files control, driven by proptest with byte-level generators — valid seeds (a
//! signed JWS, a CSR, a policy, a kubeconfig…) mutated by flips, inserts, deletions, splices and
//! "interesting" bytes, plus raw random bytes — and checked for more than "no panic": each target
//! states what must hold of whatever it accepts.
//!
//! In `cargo test` each target runs a few hundred cases (a regression run). For real fuzzing,
//! `conformance/scenarios/fuzz.sh` runs each for a time budget in release mode:
//!
//! - `FUZZ_SECONDS=<n>`: run each target for about n seconds (otherwise `FUZZ_CASES`, default
//!   300 cases);
//! - each target prints one JSON line: `{"fuzz": <target>, "executions": …, "seconds": …,
//!   "slowest_ms": …}`.
//!
//! A failing case is shrunk by proptest and its seed written to `tests/fuzz.regressions`, which
//! every later run replays first; a real finding also becomes a named regression test below.
//! A case slower than [`SLOW_CASE`] (`FUZZ_SLOW_CASE_MS` overrides it) fails too (a parser that
//! goes quadratic or worse on hostile input is a denial of service). Every target first runs on
//! genuine inputs it must accept, so its properties are never vacuous.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};

use ca_server::auth::acl::{Acl, AclOperation, Policy};
use ca_server::jose::Jwk;
use ca_server::spiffe::SpiffeId;

/// The longest any single case may take (a debug build on a loaded machine included);
/// `FUZZ_SLOW_CASE_MS` overrides it.
const SLOW_CASE: Duration = Duration::from_secs(2);

fn slow_case() -> Duration {
    std::env::var("FUZZ_SLOW_CASE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(SLOW_CASE, Duration::from_millis)
}

// --- The harness ---------------------------------------------------------------------------

/// One change to a seed. Positions are [`Index`]es, resolved against the input's length when
/// applied, so a mutation list stays meaningful as earlier ones grow or shrink the input.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Duplicate(Index, Index),
    Truncate(Index),
}

/// Bytes that parsers treat specially: delimiters, escapes, sign and length bytes, NUL, DEL, high
/// bit, UTF-8 lead bytes.
const INTERESTING: &[u8] =
    b"\0\x7f\x80\xff\xc0\xe2\"'\\/.%{}[]=,:#*+-_@\n\r\t \x30\x02\x03\x04\x05\x06\x81\x82\x83";

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1u8..=255).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<Index>(), prop::sample::select(INTERESTING)).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (
            any::<Index>(),
            prop::collection::vec(prop::sample::select(INTERESTING), 1..4)
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Duplicate(a, b)),
        any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn apply(input: &mut Vec<u8>, m: &Mutation) {
    let len = input.len();
    match m {
        Mutation::Flip(i, b) if len > 0 => input[i.index(len)] ^= b,
        Mutation::Set(i, b) if len > 0 => input[i.index(len)] = *b,
        Mutation::Insert(i, bytes) => {
            let at = i.index(len + 1);
            input.splice(at..at, bytes.iter().copied());
        }
        Mutation::Delete(i, n) if len > 0 => {
            let at = i.index(len);
            input.drain(at..(at + n).min(len));
        }
        Mutation::Duplicate(from, to) if len > 0 => {
            let start = from.index(len);
            let end = (start + 32).min(len);
            let chunk: Vec<u8> = input[start..end].to_vec();
            let at = to.index(len + 1);
            input.splice(at..at, chunk);
        }
        Mutation::Truncate(i) => input.truncate(i.index(len + 1)),
        _ => {}
    }
}

/// Seeds mutated one to eight times (four in five cases), or random bytes.
fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (
            prop::sample::select(seeds),
            prop::collection::vec(mutation(), 1..8)
        )
            .prop_map(|(mut seed, ms)| {
                ms.iter().for_each(|m| apply(&mut seed, m));
                seed
            }),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

/// Runs `target` on inputs from `strategy` for the configured budget and prints its figures.
/// `target` returns whether the input was accepted (parsed), so the figures show how much of the
/// fuzzing got past the first checks. Each of `controls` (unmutated, genuine inputs) must be
/// accepted first: a target that accepted nothing would make every "whatever it accepts" property
/// vacuous.
fn fuzz<S: Strategy>(
    name: &str,
    strategy: S,
    controls: &[S::Value],
    target: impl Fn(&S::Value) -> bool,
) {
    assert!(
        !controls.is_empty(),
        "fuzz target {name}: no positive control"
    );
    for control in controls {
        assert!(
            target(control),
            "fuzz target {name} refuses a genuine input: {control:?}"
        );
    }
    let slow = slow_case();
    let seconds = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(300);
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let executions = AtomicU64::new(0);
    let accepted = AtomicU64::new(0);
    let slowest = Mutex::new(Duration::ZERO);
    let started = Instant::now();
    loop {
        let chunk = if deadline.is_some() { 2_000 } else { cases };
        let mut runner = TestRunner::new(Config {
            cases: chunk,
            failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
            source_file: Some(file!()),
            test_name: Some(Box::leak(name.to_owned().into_boxed_str())),
            ..Config::default()
        });
        let outcome = runner.run(&strategy, |input| {
            let t = Instant::now();
            if target(&input) {
                accepted.fetch_add(1, Ordering::Relaxed);
            }
            let took = t.elapsed();
            executions.fetch_add(1, Ordering::Relaxed);
            let mut slowest = slowest.lock().expect("lock");
            *slowest = (*slowest).max(took);
            prop_assert!(took < slow, "one case took {took:?}");
            Ok(())
        });
        if let Err(e) = outcome {
            panic!("fuzz target {name}: {e}");
        }
        match deadline {
            Some(d) if Instant::now() < d => continue,
            _ => break,
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "fuzz": name,
            "executions": executions.load(Ordering::Relaxed),
            "accepted": accepted.load(Ordering::Relaxed),
            "seconds": started.elapsed().as_secs_f64(),
            "slowest_ms": slowest.lock().expect("lock").as_secs_f64() * 1000.0,
        })
    );
}

// --- JWS: decoding and verification of ACME requests ----------------------------------------

struct SignedJws {
    body: Vec<u8>,
    /// (signing input, signature) pairs made with real keys: nothing else may verify.
    genuine: HashSet<(Vec<u8>, Vec<u8>)>,
    parts: [Vec<u8>; 3],
    account: Jwk,
}

fn signed_jws_seeds() -> Vec<SignedJws> {
    let rng = ring::rand::SystemRandom::new();
    let mut out = Vec::new();
    for (alg, crv, signing, width) in [
        (
            "ES256",
            "P-256",
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            32,
        ),
        (
            "ES384",
            "P-384",
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            48,
        ),
    ] {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(signing, &rng).expect("key");
        let key = EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).expect("key");
        let point = key.public_key().as_ref();
        let (x, y) = (&point[1..1 + width], &point[1 + width..]);
        let jwk = serde_json::json!({
            "kty": "EC", "crv": crv,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        });
        for (header, payload) in [
            (
                serde_json::json!({"alg": alg, "jwk": jwk, "nonce": "abc", "url": "https://127.0.0.1/acme/new-account"}),
                br#"{"termsOfServiceAgreed":true,"contact":["mailto:a@example.com"]}"#.to_vec(),
            ),
            (
                serde_json::json!({"alg": alg, "kid": "https://127.0.0.1/acme/acct/1", "nonce": "n", "url": "https://127.0.0.1/acme/order/1"}),
                Vec::new(),
            ),
        ] {
            let protected = serde_json::to_vec(&header).expect("json");
            let (p64, b64) = (
                URL_SAFE_NO_PAD.encode(&protected),
                URL_SAFE_NO_PAD.encode(&payload),
            );
            let signing_input = format!("{p64}.{b64}").into_bytes();
            let sig = key.sign(&rng, &signing_input).expect("sign");
            let body = serde_json::to_vec(&serde_json::json!({
                "protected": p64, "payload": b64, "signature": URL_SAFE_NO_PAD.encode(sig.as_ref()),
            }))
            .expect("json");
            let mut genuine = HashSet::new();
            genuine.insert((signing_input, sig.as_ref().to_vec()));
            out.push(SignedJws {
                body,
                genuine,
                parts: [protected, payload, sig.as_ref().to_vec()],
                account: serde_json::from_value(jwk.clone()).expect("jwk"),
            });
        }
    }
    out
}

/// Decodes a request body as the ACME edge does and verifies it with the key in its header, or
/// (a `kid` request) with each account key. Returns the (signing input, signature) that verified.
fn verify_jws(body: &[u8], accounts: &[Jwk]) -> Option<(Vec<u8>, Vec<u8>)> {
    use ca_server::acme::jws;
    let decoded = jws::decode(body).ok()?;
    jws::check_account_alg(&decoded.header.alg).ok()?;
    let keys: Vec<&Jwk> = match &decoded.header.jwk {
        Some(jwk) => {
            let _ = jwk.thumbprint();
            vec![jwk]
        }
        None => accounts.iter().collect(),
    };
    keys.iter().find_map(|jwk| {
        let key = jwk.key().ok()?;
        key.verify(
            &decoded.header.alg,
            &decoded.signing_input,
            &decoded.signature,
        )
        .ok()?;
        Some((decoded.signing_input.clone(), decoded.signature.clone()))
    })
}

#[test]
fn jws_decoding_and_verification() {
    let seeds = signed_jws_seeds();
    let genuine: HashSet<(Vec<u8>, Vec<u8>)> =
        seeds.iter().flat_map(|s| s.genuine.clone()).collect();
    let bodies: Vec<Vec<u8>> = seeds.iter().map(|s| s.body.clone()).collect();
    let parts: Vec<[Vec<u8>; 3]> = seeds.iter().map(|s| s.parts.clone()).collect();
    let accounts: Vec<Jwk> = seeds.iter().map(|s| s.account.clone()).collect();
    for body in &bodies {
        assert!(
            verify_jws(body, &accounts).is_some(),
            "a genuine JWS verifies"
        );
    }
    // Whole-body mutations exercise the JSON and base64 layers; mutations of one decoded part,
    // re-encoded, reach the header parser, the JWK and the signature check.
    let part_mutations = (
        prop::sample::select(parts),
        0usize..3,
        prop::collection::vec(mutation(), 1..6),
    )
        .prop_map(|(mut parts, which, ms)| {
            ms.iter().for_each(|m| apply(&mut parts[which], m));
            let [protected, payload, sig] = parts.map(|p| URL_SAFE_NO_PAD.encode(p));
            serde_json::to_vec(&serde_json::json!({
                "protected": protected, "payload": payload, "signature": sig,
            }))
            .expect("json")
        });
    let strategy = prop_oneof![mutated(bodies.clone()), part_mutations];
    fuzz("jws", strategy, &bodies, |body| {
        let verified = verify_jws(body, &accounts);
        if let Some(pair) = &verified {
            assert!(
                genuine.contains(pair),
                "a JWS nobody signed verified: {}",
                String::from_utf8_lossy(body)
            );
        }
        // EAB and keyChange carry a JWS inside the payload: the same decoder reads it.
        if let Ok(decoded) = ca_server::acme::jws::decode(body)
            && let Ok(inner) =
                serde_json::from_slice::<ca_server::acme::jws::FlattenedJws>(&decoded.payload)
        {
            let _ = ca_server::acme::jws::decode_parts(&inner);
        }
        ca_server::acme::jws::decode(body).is_ok()
    });
}

// --- CSRs: ACME finalize (DER) and Vault sign (PEM) -----------------------------------------

fn csr_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for alg in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
    ] {
        let key = rcgen::KeyPair::generate_for(alg).expect("key");
        let mut params = rcgen::CertificateParams::new(vec![
            "web.example.com".to_owned(),
            "*.apps.example.com".to_owned(),
        ])
        .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "web.example.com");
        params.subject_alt_names.extend([
            rcgen::SanType::IpAddress("10.0.0.1".parse().expect("ip")),
            rcgen::SanType::URI(
                "spiffe://cluster.local/ns/default/sa/web"
                    .try_into()
                    .expect("uri"),
            ),
            rcgen::SanType::Rfc822Name("ops@example.com".try_into().expect("email")),
        ]);
        let csr = params.serialize_request(&key).expect("csr");
        seeds.push(csr.der().to_vec());
    }
    seeds
}

/// What a CSR asks for: only a genuine signer may have written these.
type Asked = (
    Option<String>,
    Vec<String>,
    Vec<std::net::IpAddr>,
    Vec<String>,
    Vec<String>,
);

fn asked(csr: &ca_server::issuer::csr::VerifiedCsr) -> Asked {
    (
        csr.common_name.clone(),
        csr.dns_names.clone(),
        csr.ip_addresses.clone(),
        csr.uris.clone(),
        csr.emails.clone(),
    )
}

#[test]
fn csr_parsing() {
    use ca_server::issuer::csr;
    let seeds = csr_seeds();
    let genuine: Vec<(Asked, Vec<u8>)> = seeds
        .iter()
        .map(|seed| {
            let parsed = csr::parse_der(seed).expect("a genuine CSR parses");
            assert_eq!(parsed.dns_names.len(), 2);
            (asked(&parsed), parsed.public_key.spki_der().to_vec())
        })
        .collect();
    fuzz("csr", mutated(seeds.clone()), &seeds, |der| {
        // The signature covers the request: whatever a mutation lets through asks for exactly
        // what a genuine signer asked for, with that signer's key.
        let parsed = csr::parse_der(der);
        if let Ok(parsed) = &parsed {
            let got = (asked(parsed), parsed.public_key.spki_der().to_vec());
            assert!(
                genuine.contains(&got),
                "a CSR nobody signed verified: {got:?}"
            );
        }
        let pem = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            STANDARD.encode(der)
        );
        let _ = csr::parse_pem(&pem);
        let _ = csr::parse_pem(&String::from_utf8_lossy(der));
        parsed.is_ok()
    });
}

// --- Vault requests: path normalisation, methods, query and body decoding -------------------

#[test]
fn vault_request_decoding() {
    use axum::body::Body;
    use axum::http::Request;
    use ca_server::vault::request;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let methods: &'static [&'static str] =
        &["GET", "POST", "PUT", "DELETE", "LIST", "HEAD", "PATCH"];
    let content_types: &'static [&'static str] =
        &["", "application/json", "application/x-www-form-urlencoded"];
    let paths = vec![
        b"/v1/pki_int/sign/web".to_vec(),
        b"/v1/sys/policy/admin?list=true".to_vec(),
        b"/v1/auth/kubernetes/login".to_vec(),
        b"/v1/pki_int/issue/web%2F..%2F..%2Fsys%2Fpolicy?format=pem&ttl=1h".to_vec(),
    ];
    let bodies = vec![
        br#"{"common_name":"web.example.com","ttl":"1h","alt_names":"a.example.com,b.example.com"}"#
            .to_vec(),
        b"common_name=web.example.com&ttl=1h&ip_sans=10.0.0.1".to_vec(),
        br#"{"policy":"path \"pki/*\" { capabilities = [\"read\"] }"}"#.to_vec(),
        Vec::new(),
    ];
    let controls = vec![
        ("POST", "", paths[0].clone(), bodies[0].clone()),
        (
            "POST",
            "application/x-www-form-urlencoded",
            paths[0].clone(),
            bodies[1].clone(),
        ),
        ("LIST", "", paths[1].clone(), bodies[3].clone()),
        ("GET", "", paths[3].clone(), bodies[3].clone()),
    ];
    let strategy = (
        prop::sample::select(methods),
        prop::sample::select(content_types),
        mutated(paths),
        mutated(bodies),
    );
    fuzz(
        "vault-request",
        strategy,
        &controls,
        |(method, content_type, path, body)| {
            let Ok(path) = std::str::from_utf8(path) else {
                return false;
            };
            let mut builder = Request::builder().method(*method).uri(path);
            if !content_type.is_empty() {
                builder = builder.header("content-type", *content_type);
            }
            let Ok(req) = builder.body(Body::from(body.clone())) else {
                return false; // not a request hyper would have delivered
            };
            if let Ok(call) = runtime.block_on(request::parse(req)) {
                // One spelling: what the ACL and the router see has no empty, `.` or `..`
                // segment and no control character.
                assert!(
                    call.path.is_empty()
                        || call
                            .path
                            .split('/')
                            .all(|s| !s.is_empty() && s != "." && s != ".."),
                    "{:?}",
                    call.path
                );
                assert!(!call.path.chars().any(char::is_control), "{:?}", call.path);
                return true;
            }
            false
        },
    );
}

// --- ACL policies (HCL and JSON) ------------------------------------------------------------

#[test]
fn acl_policies() {
    let seeds: Vec<Vec<u8>> = [
        "path \"pki_int/sign/web\" {\n  capabilities = [\"create\", \"update\"]\n  allowed_parameters = {\n    \"ttl\" = [\"1h\", \"24h\"]\n    \"*\" = []\n  }\n}\n",
        "# comment\npath \"pki_int/+/web*\" { capabilities = [\"read\", \"list\"] }\npath \"sys/*\" {\n  capabilities = [\"deny\"]\n}\n",
        "path \"auth/token/create\" {\n  capabilities = [\"update\", \"sudo\"]\n  denied_parameters = { \"policies\" = [\"root\"] }\n  required_parameters = [\"ttl\"]\n}\n",
        r#"{"path": {"pki/issue/*": {"capabilities": ["update"], "allowed_parameters": {"common_name": ["*.example.com"]}}}}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let words = prop::string::string_regex(
        r#"(path|capabilities|allowed_parameters|denied_parameters|\{|\}|\[|\]|=|"[a-z_/+*]{0,12}"|,|#|/\*|\*/|\n| |"create"|"sudo"|"deny"|<<EOF\n|EOF\n){0,40}"#,
    )
    .expect("regex")
    .prop_map(String::into_bytes);
    let strategy = prop_oneof![3 => mutated(seeds.clone()), 1 => words];
    let data = serde_json::Map::new();
    fuzz("acl-policy", strategy, &seeds, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        if let Ok(policy) = Policy::parse(&text) {
            assert!(!policy.rules.is_empty(), "a parsed policy has rules");
            let acl = Acl::new([&policy]);
            for path in [
                "pki_int/sign/web",
                "sys/policy/root",
                "auth/token/create",
                "",
            ] {
                let caps = acl.capabilities(path);
                assert!(!caps.contains(&"root"), "a written policy granted root");
                for op in [
                    AclOperation::Read,
                    AclOperation::List,
                    AclOperation::Create,
                    AclOperation::Update,
                    AclOperation::Delete,
                ] {
                    let _ = acl.check(path, op, &data);
                }
            }
            return true;
        }
        false
    });
}

// --- SPIFFE IDs -----------------------------------------------------------------------------

#[test]
fn spiffe_ids() {
    let seeds: Vec<Vec<u8>> = [
        "spiffe://cluster.local/ns/default/sa/web",
        "spiffe://example.org",
        "SPIFFE://td/a/b.c/d-e_f",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let shaped =
        prop::string::string_regex(r"(spiffe|SPIFFE|spiffe:|http)://[a-zA-Z0-9._/%:@?#\-]{0,48}")
            .expect("regex")
            .prop_map(String::into_bytes);
    let strategy = prop_oneof![mutated(seeds.clone()), shaped];
    fuzz("spiffe-id", strategy, &seeds, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        let parsed = SpiffeId::parse(&text);
        if let Ok(id) = &parsed {
            let td = id.trust_domain();
            assert!(!td.is_empty() && td.len() <= 255);
            assert!(
                td.bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_'))
            );
            if !id.is_root() {
                assert!(id.path()[1..].split('/').all(|s| {
                    !s.is_empty()
                        && s != "."
                        && s != ".."
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                }));
            }
            let rendered = id.to_string();
            assert_eq!(SpiffeId::parse(&rendered).as_ref(), Ok(id));
            assert!(rendered.len() <= 2048);
            assert_eq!(
                ca_server::names::workload_namespace(Some(&rendered), &[]).is_some(),
                id.path()
                    .split('/')
                    .skip_while(|s| *s != "ns")
                    .nth(1)
                    .is_some_and(|s| !s.is_empty()),
            );
        }
        parsed.is_ok()
    });
}

// --- Names: DNS names, e-mail addresses, URIs, durations, globs -----------------------------

#[test]
fn names_and_durations() {
    use ca_server::{duration, names};
    let seeds: Vec<Vec<u8>> = [
        "*.apps.example.com.",
        "web-1.default.svc.cluster.local",
        "ops.team+tag@Example.COM",
        "urn:ietf:params:acme:x",
        "2160h0m0s",
        "1.5h30m",
        "500ms",
        "86400",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let controls: Vec<Vec<u8>> = [
        "*.apps.example.com.",
        "web-1.default.svc.cluster.local",
        "2160h0m0s",
        "500ms",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz("names", mutated(seeds), &controls, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        let dns = names::normalize_dns_name(&text);
        if let Some(name) = &dns {
            assert!(name.len() <= 253, "{name}");
            assert_eq!(names::normalize_dns_name(name).as_ref(), Some(name));
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.*".contains(&b))
            );
        }
        if let Some(email) = names::normalize_email(&text) {
            assert!(email.len() <= names::MAX_EMAIL_LEN);
            assert_eq!(names::normalize_email(&email).as_ref(), Some(&email));
        }
        if names::is_valid_uri(&text) {
            assert!(!names::has_control_character(&text));
        }
        let ttl = duration::parse(&text);
        if let Ok(d) = ttl {
            assert!(d <= duration::MAX);
            let whole = Duration::from_secs(d.as_secs());
            assert_eq!(duration::parse(&duration::format_go(d)), Ok(whole));
        }
        dns.is_some() || ttl.is_ok()
    });
}

/// Reference matcher for the role glob (`*` any run, everything else literal), by dynamic
/// programming: slow and obviously right.
fn glob_reference(pattern: &[u8], value: &[u8]) -> bool {
    let mut table = vec![vec![false; value.len() + 1]; pattern.len() + 1];
    table[0][0] = true;
    for i in 1..=pattern.len() {
        for j in 0..=value.len() {
            table[i][j] = if pattern[i - 1] == b'*' {
                table[i - 1][j] || (j > 0 && table[i][j - 1])
            } else {
                j > 0 && table[i - 1][j - 1] && pattern[i - 1] == value[j - 1]
            };
        }
    }
    table[pattern.len()][value.len()]
}

#[test]
fn role_globs_agree_with_a_reference_matcher() {
    let strategy = (
        prop::string::string_regex("[ab.*]{0,12}").expect("regex"),
        prop::string::string_regex("[ab.]{0,14}").expect("regex"),
    );
    let controls = [
        ("a*b".to_owned(), "aab".to_owned()),
        ("*".to_owned(), String::new()),
        ("a.b".to_owned(), "a.b".to_owned()),
    ];
    fuzz("glob", strategy, &controls, |(pattern, value)| {
        let matched = ca_server::policy::identifiers::glob_matches(pattern, value);
        assert_eq!(
            matched,
            glob_reference(pattern.as_bytes(), value.as_bytes()),
            "pattern {pattern:?} value {value:?}"
        );
        matched
    });
}

// --- Files `ledger observe` reads: PEM, DER, kubeconfigs ------------------------------------

fn observed_file_seeds(dir: &Path) -> Vec<Vec<u8>> {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["kubernetes.default.svc".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let pem = cert.pem();
    std::fs::write(dir.join("client.crt"), &pem).expect("write");
    let data = STANDARD.encode(&pem);
    vec![
        pem.clone().into_bytes(),
        cert.der().to_vec(),
        format!("{pem}{pem}").into_bytes(),
        format!(
            "apiVersion: v1\nkind: Config\nusers:\n- name: admin\n  user:\n    client-certificate-data: {data}\n    client-key-data: AAAA\n"
        )
        .into_bytes(),
        format!(
            "{{apiVersion: v1, kind: Config, users: [{{name: a, user: {{client-certificate-data: {data}}}}}]}}"
        )
        .into_bytes(),
        b"apiVersion: v1\nkind: Config\nusers:\n- name: b\n  user:\n    client-certificate: client.crt\n"
            .to_vec(),
    ]
}

#[test]
fn observed_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seeds = observed_file_seeds(dir.path());
    let path = dir.path().join("input.conf");
    for seed in &seeds {
        let mut found = ca_server::observe::Found::default();
        ca_server::observe::contents(&path, seed, "input", &mut found, 0);
        assert!(!found.certificates.is_empty(), "a genuine seed is read");
        assert!(found.problems.is_empty(), "{:?}", found.problems);
    }
    fuzz("observe-file", mutated(seeds.clone()), &seeds, |bytes| {
        let mut found = ca_server::observe::Found::default();
        ca_server::observe::contents(&path, bytes, "input", &mut found, 0);
        // A file either yields certificates or says why not, in one line naming it.
        assert!(
            !found.certificates.is_empty() || !found.problems.is_empty(),
            "a file that held no certificate passed silently"
        );
        for p in &found.problems {
            assert!(p.message.contains("input.conf"), "{}", p.message);
        }
        for c in &found.certificates {
            assert!(
                x509_parser::parse_x509_certificate(&c.certificate.der).is_ok(),
                "recorded something that is not a certificate"
            );
        }
        !found.certificates.is_empty()
    });
}
