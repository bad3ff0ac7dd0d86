//! Real ACME clients, unchanged, against the real server: lego (Debian package; ES256 account
//! keys) and certbot (PyPI; RSA account keys, RS256 like cert-manager). They obtain, renew and
//! revoke through http-01, dns-01 and tls-alpn-01 with their own responders, a real DNS server
//! (pebble-challtestsrv) and EAB; a pre-authorized binding needs no solver at all.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ca_store::{DatabaseUrl, ExpiryQuery};
use conformance::env::AcmeEnv;
use conformance::openssl::{openssl, verify};
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
    cmd.output().unwrap_or_else(|e| panic!("running lego: {e}"))
}

fn serial(dir: &Path, cert: &Path) -> String {
    openssl(
        dir,
        &[
            "x509",
            "-in",
            cert.to_str().expect("utf-8"),
            "-noout",
            "-serial",
        ],
    )
    .trim()
    .trim_start_matches("serial=")
    .to_owned()
}

fn unhex(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex"))
        .collect()
}

struct Ledger {
    rt: tokio::runtime::Runtime,
    store: std::sync::Arc<dyn ca_store::Store>,
}

impl Ledger {
    fn open(env: &AcmeEnv) -> Self {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let url = DatabaseUrl::sqlite_file(&env.server.data_dir.join("ledger.db"));
        let store = rt.block_on(ca_store::open(&url)).expect("ledger");
        Self { rt, store }
    }

    fn row(&self, serial_hex: &str) -> ca_store::CertificateRecord {
        self.rt
            .block_on(self.store.certificate_by_serial(&unhex(serial_hex)))
            .expect("read")
            .unwrap_or_else(|| panic!("serial {serial_hex} is not in the ledger"))
    }

    fn acme_rows(&self) -> Vec<ca_store::CertificateRecord> {
        let all = self
            .rt
            .block_on(self.store.expiring(&ExpiryQuery {
                limit: 1000,
                include_revoked: true,
                ..Default::default()
            }))
            .expect("read");
        all.into_iter()
            .filter(|r| r.certificate.requester.protocol == ca_store::Protocol::Acme)
            .collect()
    }
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

    let out = lego(
        &env,
        &state,
        &[&eab[..], &["--domains", "http.example.test", "revoke"]].concat(),
        &[],
    );
    assert!(out.status.success(), "revoke: {}", text(&out));
    let ledger = Ledger::open(&env);
    let row = ledger.row(&renewed);
    assert!(row.revoked_at.is_some(), "revocation reached the ledger");
    assert!(ledger.row(&first).revoked_at.is_none());
    let rows = ledger.acme_rows();
    assert!(rows.len() >= 4);
    assert!(rows.iter().all(|r| {
        r.certificate
            .requester
            .detail
            .get("eab_kid")
            .map(String::as_str)
            == Some("lego")
    }));
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
    assert!(
        !text(&out).contains("Trying to solve"),
        "no challenge was solved: {}",
        text(&out)
    );
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
}

fn certbot(env: &AcmeEnv, state: &Path, args: &[&str]) -> Output {
    let started = std::time::Instant::now();
    let out = certbot_inner(env, state, args);
    eprintln!("certbot {} took {:?}", args[0], started.elapsed());
    out
}

fn certbot_inner(env: &AcmeEnv, state: &Path, args: &[&str]) -> Output {
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
        .env("REQUESTS_CA_BUNDLE", &env.bundle)
        .output()
        .unwrap_or_else(|e| panic!("running certbot: {e}"))
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
    let ledger = Ledger::open(&env);
    let row = ledger.row(&renewed);
    assert_eq!(row.revocation_reason, Some(1), "keyCompromise recorded");
    assert!(ledger.acme_rows().iter().all(|r| {
        r.certificate
            .requester
            .detail
            .get("eab_kid")
            .map(String::as_str)
            == Some("certbot")
    }));
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
