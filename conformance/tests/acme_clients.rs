//! Real ACME clients, unchanged, against the real server: lego (Debian package; ES256 account
//! keys) and certbot (PyPI; RSA account keys, RS256 like cert-manager). They obtain, renew and
//! revoke through http-01, dns-01 and tls-alpn-01 with their own responders, a real DNS server
//! (pebble-challtestsrv) and EAB; a pre-authorized binding needs no solver at all.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use conformance::env::AcmeEnv;
use conformance::openssl::{openssl, serial_hex, serial_of, verify};
use conformance::process::{CLIENT, output_within};
use conformance::tools::tool;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn lego(env: &AcmeEnv, state: &Path, args: &[&str], extra_env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(tool("lego"));
    cmd.args([
        "--server",
        &env.directory(),
        "--email",
        "ops@example.com",
        "--accept-tos",
        "--path",
    ])
    .arg(state)
    .args(args)
    .env("LEGO_CA_CERTIFICATES", &env.bundle);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    output_within(&mut cmd, CLIENT)
}

fn serial(dir: &Path, cert: &Path) -> Vec<u8> {
    serial_of(dir, cert.to_str().expect("utf-8"))
}

fn assert_verifies(env: &AcmeEnv, dir: &Path, leaf: &Path, chain: &Path) {
    let (ok, out) = verify(
        dir,
        env.bundle.to_str().expect("utf-8"),
        Some(chain.to_str().expect("utf-8")),
        leaf.to_str().expect("utf-8"),
    );
    assert!(ok, "{out}");
}

fn acme_rows(ledger: &conformance::ledger::Ledger) -> Vec<ca_store::CertificateRecord> {
    ledger
        .rows()
        .into_iter()
        .filter(|r| r.certificate.requester.protocol == ca_store::Protocol::Acme)
        .collect()
}

fn eab_kid(row: &ca_store::CertificateRecord) -> Option<&str> {
    row.certificate
        .requester
        .detail
        .get("eab_kid")
        .map(String::as_str)
}

/// Validations of `kind` that succeeded, per `/metrics` (0 when the family was never touched).
fn valid_validations(env: &AcmeEnv, kind: &str) -> f64 {
    env.metric(
        "ca_acme_challenge_validations_total",
        &[("type", kind), ("result", "valid")],
    )
    .unwrap_or(0.0)
}

#[test]
fn lego_obtains_renews_and_revokes_over_all_three_challenges_with_eab() {
    let env = AcmeEnv::start("require_eab = true");
    let dir = env.dir.path();
    let state = dir.join("lego");
    let http = format!("127.0.0.1:{}", env.http01_port);

    let out = lego(
        &env,
        &state,
        &[
            "--domains",
            "refused.example.test",
            "--http",
            "--http.port",
            &http,
            "run",
        ],
        &[],
    );
    assert!(!out.status.success());
    // lego reads meta.externalAccountRequired and refuses before registering.
    let said = text(&out);
    assert!(
        said.contains("externalAccountRequired")
            || said.contains("requires External Account Binding"),
        "{said}"
    );
    assert!(
        acme_rows(&env.ledger()).is_empty(),
        "nothing issued without EAB"
    );

    let (kid, hmac) = env.eab("lego", &[]);
    // `--flag=value`: a base64url key may start with `-`, which a separate argument would make
    // look like an option.
    let hmac_flag = format!("--hmac={hmac}");
    let eab = ["--eab", "--kid", kid.as_str(), hmac_flag.as_str()];
    let mut args = eab.to_vec();
    args.extend([
        "--domains",
        "http.example.test",
        "--http",
        "--http.port",
        &http,
        "run",
    ]);
    let out = lego(&env, &state, &args, &[]);
    assert!(out.status.success(), "http-01: {}", text(&out));
    let certs = state.join("certificates");
    assert_verifies(
        &env,
        dir,
        &certs.join("http.example.test.crt"),
        &certs.join("http.example.test.issuer.crt"),
    );

    let hook = env.dns.hook_script(dir);
    let dns_env = [
        ("EXEC_PATH", hook.display().to_string()),
        ("EXEC_POLLING_INTERVAL", "1".to_owned()),
        ("EXEC_PROPAGATION_TIMEOUT", "20".to_owned()),
        ("EXEC_SEQUENCE_INTERVAL", "1".to_owned()),
    ];
    let resolver = env.dns.dns.to_string();
    let out = lego(
        &env,
        &state,
        &[
            &eab[..],
            &[
                "--domains",
                "dns.example.test",
                "--domains",
                "*.dns.example.test",
                "--dns",
                "exec",
                "--dns.resolvers",
                &resolver,
                "--dns.disable-cp",
                "run",
            ],
        ]
        .concat(),
        &dns_env,
    );
    assert!(out.status.success(), "dns-01: {}", text(&out));
    let dump = openssl(
        dir,
        &[
            "x509",
            "-in",
            certs.join("dns.example.test.crt").to_str().expect("utf-8"),
            "-noout",
            "-ext",
            "subjectAltName",
        ],
    );
    assert!(
        dump.contains("DNS:*.dns.example.test") && dump.contains("DNS:dns.example.test"),
        "{dump}"
    );
    assert_verifies(
        &env,
        dir,
        &certs.join("dns.example.test.crt"),
        &certs.join("dns.example.test.issuer.crt"),
    );
    let row = env
        .ledger()
        .row(&serial(dir, &certs.join("dns.example.test.crt")));
    let mut names = row.certificate.dns_names.clone();
    names.sort();
    assert_eq!(names, ["*.dns.example.test", "dns.example.test"]);
    assert_eq!(eab_kid(&row), Some("lego"));
    assert!(
        valid_validations(&env, "dns-01") >= 2.0,
        "both names by dns-01"
    );

    let tls = format!("127.0.0.1:{}", env.tls_alpn01_port);
    let out = lego(
        &env,
        &state,
        &[
            &eab[..],
            &[
                "--domains",
                "alpn.example.test",
                "--tls",
                "--tls.port",
                &tls,
                "run",
            ],
        ]
        .concat(),
        &[],
    );
    assert!(out.status.success(), "tls-alpn-01: {}", text(&out));
    assert_verifies(
        &env,
        dir,
        &certs.join("alpn.example.test.crt"),
        &certs.join("alpn.example.test.issuer.crt"),
    );
    let row = env
        .ledger()
        .row(&serial(dir, &certs.join("alpn.example.test.crt")));
    assert_eq!(row.certificate.dns_names, ["alpn.example.test"]);
    assert_eq!(eab_kid(&row), Some("lego"));
    assert!(
        valid_validations(&env, "tls-alpn-01") >= 1.0,
        "validated through tls-alpn-01"
    );

    let cert = certs.join("http.example.test.crt");
    let first = serial(dir, &cert);
    let out = lego(
        &env,
        &state,
        &[
            &eab[..],
            &[
                "--domains",
                "http.example.test",
                "--http",
                "--http.port",
                &http,
                "renew",
                "--days",
                "9999",
                "--no-random-sleep",
            ],
        ]
        .concat(),
        &[],
    );
    assert!(out.status.success(), "renew: {}", text(&out));
    let renewed = serial(dir, &cert);
    assert_ne!(first, renewed, "renewal issued a new certificate");
    assert_verifies(
        &env,
        dir,
        &cert,
        &certs.join("http.example.test.issuer.crt"),
    );
    assert_eq!(
        env.ledger().row(&renewed).certificate.dns_names,
        ["http.example.test"]
    );

    // lego revokes with its account key (kid-signed revokeCert).
    let out = lego(
        &env,
        &state,
        &[&eab[..], &["--domains", "http.example.test", "revoke"]].concat(),
        &[],
    );
    assert!(out.status.success(), "revoke: {}", text(&out));
    let ledger = env.ledger();
    let row = ledger.row(&renewed);
    assert!(row.revoked_at.is_some(), "revocation reached the ledger");
    assert!(ledger.row(&first).revoked_at.is_none());
    // A revocation on this replica is in the next CRL served, and only it.
    let crl = env.crl();
    assert!(
        crl.lists(&renewed),
        "{} not in\n{}",
        serial_hex(&renewed),
        crl.text
    );
    assert!(
        !crl.lists(&first),
        "the replaced certificate was not revoked"
    );
    assert_eq!(crl.entries.len(), 1, "{}", crl.text);
    let rows = acme_rows(&ledger);
    assert_eq!(rows.len(), 4, "http, dns, alpn and the renewal, each once");
    assert!(rows.iter().all(|r| eab_kid(r) == Some("lego")));
}

#[test]
fn lego_with_a_preauthorized_binding_needs_no_solver() {
    let env = AcmeEnv::start("require_eab = true");
    let dir = env.dir.path();
    let state = dir.join("lego");
    let (kid, hmac) = env.eab("pre", &["--preauthorized", "--name", ".pre.example.test"]);
    // lego's solver listens on a port the server never contacts: any validation would fail.
    let unused = format!("127.0.0.1:{}", conformance::free_port());
    let out = lego(
        &env,
        &state,
        &[
            "--eab",
            "--kid",
            &kid,
            &format!("--hmac={hmac}"),
            "--domains",
            "app.pre.example.test",
            "--http",
            "--http.port",
            &unused,
            "run",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let certs = state.join("certificates");
    assert_verifies(
        &env,
        dir,
        &certs.join("app.pre.example.test.crt"),
        &certs.join("app.pre.example.test.issuer.crt"),
    );
    let ledger = env.ledger();
    let row = ledger.row(&serial(dir, &certs.join("app.pre.example.test.crt")));
    assert_eq!(row.certificate.dns_names, ["app.pre.example.test"]);
    assert_eq!(eab_kid(&row), Some("pre"));
    // No validation of any kind ran: the binding authorized the name.
    assert_eq!(
        env.metric("ca_acme_challenge_validations_total", &[]),
        None,
        "a validation was attempted"
    );
    let before = ledger.snapshot();
    let out = lego(
        &env,
        &state,
        &[
            "--eab",
            "--kid",
            &kid,
            &format!("--hmac={hmac}"),
            "--domains",
            "app.elsewhere.example.test",
            "--http",
            "--http.port",
            &unused,
            "run",
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("rejectedIdentifier"), "{}", text(&out));
    ledger.assert_unchanged(&before, "a name outside the binding");
    assert!(ledger.rows_naming("app.elsewhere.example.test").is_empty());
}

fn certbot(env: &AcmeEnv, state: &Path, args: &[&str]) -> Output {
    let started = std::time::Instant::now();
    let out = certbot_inner(env, state, args);
    eprintln!("certbot {} took {:?}", args[0], started.elapsed());
    out
}

fn certbot_inner(env: &AcmeEnv, state: &Path, args: &[&str]) -> Output {
    output_within(
        Command::new(tool("certbot"))
            .args([
                "--non-interactive",
                "--server",
                &env.directory(),
                "--config-dir",
            ])
            .arg(state.join("config"))
            .arg("--work-dir")
            .arg(state.join("work"))
            .arg("--logs-dir")
            .arg(state.join("logs"))
            .args(args)
            .env("REQUESTS_CA_BUNDLE", &env.bundle),
        CLIENT,
    )
}

fn live(state: &Path, name: &str, file: &str) -> PathBuf {
    state.join("config/live").join(name).join(file)
}

#[test]
fn certbot_obtains_renews_and_revokes_with_an_rsa_account_and_eab() {
    let env = AcmeEnv::start("require_eab = true");
    let dir = env.dir.path();
    let state = dir.join("certbot");
    let (kid, hmac) = env.eab("certbot", &[]);
    let out = certbot(
        &env,
        &state,
        &[
            "register",
            "--agree-tos",
            "-m",
            "ops@example.com",
            "--eab-kid",
            &kid,
            // One argument: a base64url key may start with `-`.
            &format!("--eab-hmac-key={hmac}"),
        ],
    );
    assert!(out.status.success(), "register: {}", text(&out));
    let account = std::fs::read_dir(state.join("config/accounts"))
        .expect("accounts")
        .count();
    assert_eq!(account, 1);

    let port = env.http01_port.to_string();
    let standalone = [
        "--standalone",
        "--http-01-port",
        port.as_str(),
        "--http-01-address",
        "127.0.0.1",
    ];
    let mut args = vec!["certonly", "-d", "cb-http.example.test"];
    args.extend(standalone);
    let out = certbot(&env, &state, &args);
    assert!(out.status.success(), "http-01: {}", text(&out));
    assert_verifies(
        &env,
        dir,
        &live(&state, "cb-http.example.test", "cert.pem"),
        &live(&state, "cb-http.example.test", "chain.pem"),
    );

    let hook = env.dns.hook_script(dir);
    let hook = hook.to_str().expect("utf-8");
    let out = certbot(
        &env,
        &state,
        &[
            "certonly",
            "--manual",
            "--preferred-challenges",
            "dns",
            "--manual-auth-hook",
            hook,
            "--manual-cleanup-hook",
            hook,
            "-d",
            "cb-dns.example.test",
        ],
    );
    assert!(out.status.success(), "dns-01: {}", text(&out));
    assert_verifies(
        &env,
        dir,
        &live(&state, "cb-dns.example.test", "cert.pem"),
        &live(&state, "cb-dns.example.test", "chain.pem"),
    );
    let row = env.ledger().row(&serial(
        dir,
        &live(&state, "cb-dns.example.test", "cert.pem"),
    ));
    assert_eq!(row.certificate.dns_names, ["cb-dns.example.test"]);
    assert!(valid_validations(&env, "dns-01") >= 1.0);

    let first = serial(dir, &live(&state, "cb-http.example.test", "cert.pem"));
    let mut args = vec![
        "renew",
        "--force-renewal",
        "--no-random-sleep-on-renew",
        "--cert-name",
        "cb-http.example.test",
    ];
    args.extend(standalone);
    let out = certbot(&env, &state, &args);
    assert!(out.status.success(), "renew: {}", text(&out));
    let renewed = serial(dir, &live(&state, "cb-http.example.test", "cert.pem"));
    assert_ne!(first, renewed);
    assert_verifies(
        &env,
        dir,
        &live(&state, "cb-http.example.test", "cert.pem"),
        &live(&state, "cb-http.example.test", "chain.pem"),
    );
    assert_eq!(
        env.ledger().row(&renewed).certificate.dns_names,
        ["cb-http.example.test"]
    );

    let out = certbot(
        &env,
        &state,
        &[
            "revoke",
            "--cert-name",
            "cb-http.example.test",
            "--reason",
            "keycompromise",
            "--no-delete-after-revoke",
        ],
    );
    assert!(out.status.success(), "revoke: {}", text(&out));
    let ledger = env.ledger();
    let row = ledger.row(&renewed);
    assert_eq!(row.revocation_reason, Some(1), "keyCompromise recorded");
    assert!(ledger.row(&first).revoked_at.is_none());
    let crl = env.crl();
    assert_eq!(
        crl.reason_of(&renewed),
        Some("Key Compromise"),
        "{}",
        crl.text
    );
    assert!(!crl.lists(&first), "{}", crl.text);
    assert_eq!(crl.entries.len(), 1, "{}", crl.text);
    let rows = acme_rows(&ledger);
    assert_eq!(rows.len(), 3, "cb-http, cb-dns and the renewed cb-http");
    assert!(rows.iter().all(|r| eab_kid(r) == Some("certbot")));
}

#[test]
fn certbot_and_lego_take_the_alternate_chain_they_prefer() {
    let mut env = AcmeEnv::start("");
    let dir = env.dir.path().to_owned();
    let ca_dir = env.server.data_dir.join("ca");
    let (cross, root) =
        conformance::openssl::cross_sign_issuing_ca(&dir, &ca_dir, "Alternate Root CA");
    std::fs::write(
        ca_dir.join("alternate-chain-1.pem"),
        format!("{cross}{root}"),
    )
    .expect("write");
    env.restart();

    let state = dir.join("certbot");
    let out = certbot(
        &env,
        &state,
        &["register", "--agree-tos", "-m", "ops@example.com"],
    );
    assert!(out.status.success(), "register: {}", text(&out));
    let port = env.http01_port.to_string();
    let obtain = |name: &str, preferred: Option<&str>| {
        let mut args = vec![
            "certonly",
            "--standalone",
            "--http-01-port",
            port.as_str(),
            "--http-01-address",
            "127.0.0.1",
            "-d",
            name,
        ];
        if let Some(p) = preferred {
            args.extend(["--preferred-chain", p]);
        }
        let out = certbot(&env, &state, &args);
        assert!(out.status.success(), "certonly {name}: {}", text(&out));
        std::fs::read_to_string(live(&state, name, "chain.pem")).expect("chain.pem")
    };

    // Asked for the alternate root, certbot follows the `Link: rel="alternate"` and keeps the
    // cross-signed chain, which verifies against that root.
    let chain = obtain("alt-chain.example.test", Some("Alternate Root CA"));
    assert!(chain.contains(cross.trim()), "{chain}");
    let (ok, out) = verify(
        &dir,
        "alt-root.crt",
        Some(
            live(&state, "alt-chain.example.test", "chain.pem")
                .to_str()
                .expect("utf-8"),
        ),
        live(&state, "alt-chain.example.test", "cert.pem")
            .to_str()
            .expect("utf-8"),
    );
    assert!(ok, "{out}");

    // Without a preference it keeps the default chain, which leads to the served bundle.
    let chain = obtain("default-chain.example.test", None);
    assert!(!chain.contains(cross.trim()));
    assert_verifies(
        &env,
        &dir,
        &live(&state, "default-chain.example.test", "cert.pem"),
        &live(&state, "default-chain.example.test", "chain.pem"),
    );

    // lego (ES256 account) makes the same choice by the root's common name.
    let lego_state = dir.join("lego");
    let http = format!("127.0.0.1:{}", env.http01_port);
    let out = lego(
        &env,
        &lego_state,
        &[
            "--domains",
            "lego-alt.example.test",
            "--http",
            "--http.port",
            &http,
            "run",
            "--preferred-chain",
            "Alternate Root CA",
        ],
        &[],
    );
    assert!(out.status.success(), "lego run: {}", text(&out));
    let issuer = lego_state.join("certificates/lego-alt.example.test.issuer.crt");
    let issuer = std::fs::read_to_string(&issuer).expect("issuer.crt");
    assert_eq!(
        issuer.trim(),
        cross.trim(),
        "lego kept the cross-signed chain"
    );
}
