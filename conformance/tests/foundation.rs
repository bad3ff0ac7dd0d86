//! The foundation end to end: the real `ca-server` binary on an empty data directory, HTTPS
//! checked by curl against the served bundle, certificates of every profile verified by
//! `openssl verify`, CA adoption (kubeadm-style RSA root, intermediate with chain), SIGTERM.

use std::path::Path;

use ca_store::{DatabaseUrl, Protocol};
use conformance::openssl::{
    curl_http, curl_https, der_of, openssl, p256_csr, pem_blocks, serial_of, verify, x509_text,
};
use conformance::server::{CaServer, run};

fn fetch_bundle(server: &CaServer, dir: &Path) -> std::path::PathBuf {
    let (code, bundle) = curl_http(&format!("{}/ca/bundle.pem", server.http_url()));
    assert_eq!(code, 200);
    assert!(bundle.starts_with("-----BEGIN CERTIFICATE-----"));
    let path = dir.join("bundle.pem");
    std::fs::write(&path, bundle).expect("write bundle");
    path
}

/// Signs a CSR through the CLI for `profile` and returns the PEM chain file name. The file holds
/// the leaf, the issuing CA (`ca/issuing.crt`) and `parents` more certificates up to the root
/// (0 when the issuing CA is itself the root, as an adopted kubeadm CA is).
fn cli_sign(
    data_dir: &Path,
    work: &Path,
    name: &str,
    profile: &str,
    extra: &[&str],
    db: Option<&str>,
    parents: usize,
) -> String {
    let out_file = format!("{name}-chain.pem");
    let csr = work.join(format!("{name}.csr"));
    let out = work.join(&out_file);
    let mut args = vec![
        "cert",
        "sign",
        "--data-dir",
        data_dir.to_str().expect("utf-8 path"),
        "--profile",
        profile,
        "--csr",
        csr.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
    ];
    if let Some(url) = db {
        args.extend(["--database-url", url]);
    }
    args.extend(extra);
    let result = run(&args);
    assert!(
        result.status.success(),
        "cert sign {profile}: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    // Split the chain: leaf first, then issuing CA and root.
    let chain = std::fs::read_to_string(&out).expect("chain");
    let blocks = pem_blocks(&chain);
    assert_eq!(
        blocks.len(),
        2 + parents,
        "leaf, issuing CA and {parents} parents: {chain}"
    );
    let issuing = std::fs::read_to_string(data_dir.join("ca/issuing.crt")).expect("issuing.crt");
    assert_eq!(
        blocks[1],
        pem_blocks(&issuing)[0],
        "the issuing CA follows the leaf"
    );
    std::fs::write(work.join(format!("{name}.pem")), &blocks[0]).expect("leaf");
    std::fs::write(
        work.join(format!("{name}-untrusted.pem")),
        blocks[1..].concat(),
    )
    .expect("chain");
    out_file
}

/// Every file under `dir` (relative paths), none if it does not exist.
fn walk(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(
                walk(&path)
                    .into_iter()
                    .map(|f| format!("{}/{f}", entry.file_name().to_string_lossy())),
            );
        } else {
            found.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    found
}

#[test]
fn first_run_serves_health_and_bundle_over_https_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let mut server = CaServer::start(&data, &[]);
    let bundle = fetch_bundle(&server, tmp.path());

    // The HTTPS certificate chains to the served bundle and covers localhost and 127.0.0.1.
    let (code, body) = curl_https(&format!("{}/healthz", server.https_url()), &bundle);
    assert_eq!((code, body.trim()), (200, "ok"));
    let (code, body) = curl_https(
        &format!("https://127.0.0.1:{}/readyz", server.https.port()),
        &bundle,
    );
    assert_eq!(code, 200);
    let ready: serde_json::Value = serde_json::from_str(&body).expect("readyz JSON");
    assert_eq!(ready["status"], "ready");
    let (code, https_bundle) =
        curl_https(&format!("{}/ca/bundle.pem", server.https_url()), &bundle);
    assert_eq!(code, 200);
    assert_eq!(
        https_bundle,
        std::fs::read_to_string(&bundle).expect("bundle")
    );

    // Keys are private to the server's user.
    for key in ["ca/issuing.key", "ca/root.key"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(data.join(key))
                .expect("key")
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }

    let status = server.terminate();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    assert!(
        server.log().iter().any(|l| l.contains("\"stopped\"")),
        "logs its shutdown"
    );
}

#[test]
fn certificates_of_every_profile_verify_against_the_served_bundle() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path();
    let data = work.join("data");
    let server = CaServer::start(&data, &[]);
    let bundle = fetch_bundle(&server, work);
    let bundle = bundle.to_str().expect("utf-8");

    p256_csr(
        work,
        "server",
        "/CN=web.default.svc",
        Some("DNS:web.default.svc,DNS:web.default.svc.cluster.local,IP:10.96.0.10"),
    );
    p256_csr(work, "client", "/CN=kube-apiserver-etcd-client", None);
    p256_csr(
        work,
        "peer",
        "/CN=etcd-0",
        Some("DNS:etcd-0,DNS:localhost,IP:127.0.0.1"),
    );
    p256_csr(
        work,
        "svid",
        "/",
        Some("critical,URI:spiffe://cluster.local/ns/payments/sa/api"),
    );
    p256_csr(work, "subca", "/CN=identity.linkerd.cluster.local", None);

    let cases: [(&str, &str, &[&str], &[&str]); 5] = [
        (
            "server",
            "tls-server",
            &[],
            &["TLS Web Server Authentication"],
        ),
        (
            "client",
            "tls-client",
            &[],
            &["TLS Web Client Authentication"],
        ),
        (
            "peer",
            "tls-server-client",
            &[],
            &["TLS Web Server Authentication, TLS Web Client Authentication"],
        ),
        (
            "svid",
            "spiffe",
            &[],
            &["URI:spiffe://cluster.local/ns/payments/sa/api", "CA:FALSE"],
        ),
        (
            "subca",
            "ca",
            &["--common-name", "identity.linkerd.cluster.local"],
            &["CA:TRUE, pathlen:0", "Certificate Sign"],
        ),
    ];
    let ledger_url = DatabaseUrl::sqlite_file(&data.join("ledger.db"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ledger = rt
        .block_on(ca_store::open(&ledger_url))
        .expect("open ledger");
    for (name, profile, extra, expect) in cases {
        cli_sign(&data, work, name, profile, extra, None, 1);
        let (ok, text) = verify(
            work,
            bundle,
            Some(&format!("{name}-untrusted.pem")),
            &format!("{name}.pem"),
        );
        assert!(ok, "{profile}: openssl verify failed: {text}");
        let dump = x509_text(work, &format!("{name}.pem"));
        for needle in expect {
            assert!(
                dump.contains(needle),
                "{profile}: expected {needle:?} in\n{dump}"
            );
        }
        let serial = serial_of(work, &format!("{name}.pem"));
        let row = rt
            .block_on(ledger.certificate_by_serial(&serial))
            .expect("ledger read")
            .unwrap_or_else(|| panic!("{profile}: certificate missing from the ledger"));
        assert_eq!(row.certificate.profile, profile);
        assert_eq!(row.certificate.requester.protocol, Protocol::Cli);
        assert_eq!(
            row.certificate.der,
            der_of(work, &format!("{name}.pem")),
            "{profile}: the ledger holds this certificate"
        );
    }
}

#[test]
fn postgres_ledger_records_issuance() {
    let db = conformance::postgres::test_database();
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path();
    let data = work.join("data");
    let mut server = CaServer::start(&data, &["--database-url", &db.url]);
    let bundle = fetch_bundle(&server, work);
    let (code, body) = curl_https(&format!("{}/readyz", server.https_url()), &bundle);
    assert_eq!(code, 200, "{body}");

    p256_csr(
        work,
        "svid",
        "/",
        Some("URI:spiffe://cluster.local/ns/default/sa/web"),
    );
    cli_sign(&data, work, "svid", "spiffe", &[], Some(&db.url), 1);
    let (ok, text) = verify(
        work,
        bundle.to_str().expect("utf-8"),
        Some("svid-untrusted.pem"),
        "svid.pem",
    );
    assert!(ok, "{text}");

    let serial = serial_of(work, "svid.pem");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ledger = rt
        .block_on(ca_store::open(&DatabaseUrl::new(db.url.clone())))
        .expect("open");
    let row = rt
        .block_on(ledger.certificate_by_serial(&serial))
        .expect("read")
        .expect("recorded in Postgres");
    assert_eq!(
        row.certificate.spiffe_id.as_deref(),
        Some("spiffe://cluster.local/ns/default/sa/web")
    );
    // The server's own serving certificate is in the same ledger.
    let all = rt
        .block_on(ledger.expiring(&ca_store::ExpiryQuery {
            limit: 100,
            ..Default::default()
        }))
        .expect("list");
    assert!(
        all.iter()
            .any(|r| r.certificate.requester.protocol == Protocol::Internal)
    );
    assert!(server.terminate().success());
}

#[test]
fn adopts_a_kubeadm_style_rsa_ca() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path();
    // kubeadm's ca.key is PKCS#1 ("RSA PRIVATE KEY"); its ca.crt has CN=kubernetes.
    openssl(work, &["genrsa", "-traditional", "-out", "ca.key", "2048"]);
    let key = std::fs::read_to_string(work.join("ca.key")).expect("key");
    assert!(
        key.contains("BEGIN RSA PRIVATE KEY"),
        "fixture must be PKCS#1"
    );
    openssl(
        work,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=kubernetes",
            "-days",
            "3650",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            "-addext",
            "subjectAltName=DNS:kubernetes",
            "-out",
            "ca.crt",
        ],
    );
    let data = work.join("data");
    let init = run(&[
        "init",
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--import-cert",
        work.join("ca.crt").to_str().expect("utf-8"),
        "--import-key",
        work.join("ca.key").to_str().expect("utf-8"),
    ]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );

    let server = CaServer::start(&data, &[]);
    let bundle = fetch_bundle(&server, work);
    assert_eq!(
        std::fs::read_to_string(&bundle).expect("bundle").trim(),
        std::fs::read_to_string(work.join("ca.crt"))
            .expect("ca.crt")
            .trim(),
        "the adopted root is the trust bundle"
    );
    // An admin.conf-style client certificate signed by the RSA CA.
    p256_csr(
        work,
        "admin",
        "/O=kubeadm:cluster-admins/CN=kubernetes-admin",
        None,
    );
    cli_sign(
        &data,
        work,
        "admin",
        "tls-client",
        &["--organization", "kubeadm:cluster-admins"],
        None,
        0,
    );
    let (ok, text) = verify(work, "ca.crt", None, "admin.pem");
    assert!(ok, "{text}");
    let dump = x509_text(work, "admin.pem");
    assert!(
        dump.contains("sha256WithRSAEncryption"),
        "signed with the RSA CA key"
    );
    assert!(
        dump.contains("O=kubeadm:cluster-admins") || dump.contains("O = kubeadm:cluster-admins"),
        "{dump}"
    );
}

#[test]
fn adopts_an_intermediate_signed_by_an_offline_root() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path();
    openssl(
        work,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "root.key",
        ],
    );
    openssl(
        work,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "root.key",
            "-subj",
            "/O=Example/CN=Offline Root",
            "-days",
            "3650",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "root.crt",
        ],
    );
    // SEC1 ("EC PRIVATE KEY") intermediate key, as `openssl ecparam -genkey` writes it.
    openssl(
        work,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "int.key",
        ],
    );
    openssl(
        work,
        &[
            "req",
            "-new",
            "-key",
            "int.key",
            "-subj",
            "/O=Example/CN=Cluster Issuing CA",
            "-out",
            "int.csr",
        ],
    );
    std::fs::write(work.join("ext.cnf"), "basicConstraints=critical,CA:TRUE,pathlen:1\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n").expect("ext");
    openssl(
        work,
        &[
            "x509",
            "-req",
            "-in",
            "int.csr",
            "-CA",
            "root.crt",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-days",
            "1000",
            "-extfile",
            "ext.cnf",
            "-out",
            "int.crt",
        ],
    );

    let data = work.join("data");
    let p = |f: &str| work.join(f).to_str().expect("utf-8").to_owned();
    // The wrong key is refused and nothing is written.
    let bad = run(&[
        "init",
        "--data-dir",
        &p("data"),
        "--import-cert",
        &p("int.crt"),
        "--import-key",
        &p("root.key"),
        "--import-chain",
        &p("root.crt"),
    ]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("does not belong"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    // Nothing is left: no CA material, token or seal key, and not the ledger file the command
    // opened to check the database was free.
    let left: Vec<String> = walk(&data);
    assert!(
        left.is_empty(),
        "a refused init leaves nothing behind: {left:?}"
    );

    let init = run(&[
        "init",
        "--data-dir",
        &p("data"),
        "--import-cert",
        &p("int.crt"),
        "--import-key",
        &p("int.key"),
        "--import-chain",
        &p("root.crt"),
    ]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let server = CaServer::start(&data, &[]);
    let bundle = fetch_bundle(&server, work);
    assert_eq!(
        std::fs::read_to_string(&bundle).expect("bundle").trim(),
        std::fs::read_to_string(work.join("root.crt"))
            .expect("root")
            .trim()
    );
    let (code, chain) = curl_http(&format!("{}/ca/chain.pem", server.http_url()));
    assert_eq!(code, 200);
    assert_eq!(
        chain.matches("BEGIN CERTIFICATE").count(),
        2,
        "issuing CA then root"
    );

    p256_csr(
        work,
        "leaf",
        "/CN=app.example.internal",
        Some("DNS:app.example.internal"),
    );
    cli_sign(&data, work, "leaf", "tls-server", &[], None, 1);
    let (ok, text) = verify(work, "root.crt", Some("leaf-untrusted.pem"), "leaf.pem");
    assert!(ok, "{text}");
}
