//! The files attacked: modes of the data directory, the database and the keys; secrets that must
//! not be readable from a copy of the database; CA material that must never be created or
//! replaced without an explicit command (a missing key, an empty data directory against a
//! database that belongs to a CA, another CA's files against it, `cert sign` where there is no
//! CA).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use conformance::acme::b64_decode;
use conformance::server::{CaServer, binary, run};
use conformance::vault::Vault;
use serde_json::json;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// `ca-server serve` expected to refuse to start: returns its stderr. A server that starts
/// instead is killed after 30 s and the test fails.
fn serve_fails(data: &Path, extra: &[&str]) -> String {
    use conformance::process::{Bounded, run_within};
    let mut cmd = std::process::Command::new(binary());
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(extra)
        .env("CA_SERVER_LOG", "warn");
    match run_within(&mut cmd, None, std::time::Duration::from_secs(30)) {
        Bounded::TimedOut(_) => panic!("serve started on {} instead of refusing", data.display()),
        Bounded::Exited(out) => {
            assert!(
                !out.status.success(),
                "serve exited 0 on {}",
                data.display()
            );
            String::from_utf8_lossy(&out.stderr).into_owned()
        }
    }
}

fn digest_dir(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_private_and_sealed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let server = CaServer::start(&data, &[]);
    let vault = Vault::connect(&server);

    // A distinctive reviewer JWT, and an EAB key.
    let reviewer = "eyJhbGciOiJSUzI1NiJ9.reviewer-secret-7f3a9c.c2lnbmF0dXJl";
    vault
        .root(
            "POST",
            "auth/kubernetes/config",
            json!({"kubernetes_host": "https://127.0.0.1:6443", "token_reviewer_jwt": reviewer}),
        )
        .await;
    let config = vault
        .call("GET", "auth/kubernetes/config", Some(&vault.token), None)
        .await
        .text();
    assert!(
        !config.contains("reviewer-secret"),
        "never returned: {config}"
    );
    let out = run(&[
        "--data-dir",
        data.to_str().expect("utf-8"),
        "acme",
        "eab",
        "create",
        "--kid",
        "team-a",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mac_text = text
        .lines()
        .find_map(|l| l.strip_prefix("hmac_key:"))
        .map(|k| k.trim().to_owned())
        .expect("hmac_key");
    let mac = b64_decode(&mac_text).expect("base64url");
    let list = run(&[
        "--data-dir",
        data.to_str().expect("utf-8"),
        "acme",
        "eab",
        "list",
    ]);
    assert!(list.status.success());
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(&mac_text),
        "listing never shows MAC keys"
    );

    // Modes: the directory 0700, the database and its WAL 0600, keys and the token 0600.
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("ca")), 0o700);
    for f in [
        "ledger.db",
        "ledger.db-wal",
        "ca/issuing.key",
        "ca/root.key",
        "ca/seal.key",
        "root-token",
    ] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }

    // A copy of the database alone yields neither secret.
    let root_token = std::fs::read_to_string(data.join("root-token")).expect("token");
    let mut db = std::fs::read(data.join("ledger.db")).expect("db");
    db.extend(std::fs::read(data.join("ledger.db-wal")).unwrap_or_default());
    let contains = |needle: &[u8]| db.windows(needle.len()).any(|w| w == needle);
    // The rows holding the secrets are in the bytes searched (else the searches below prove
    // nothing).
    assert!(contains(b"team-a"), "the EAB key's row is in the copy");
    assert!(
        contains(b"https://127.0.0.1:6443"),
        "the kubernetes config row is in the copy"
    );
    assert!(!contains(&mac), "the EAB MAC key is sealed");
    assert!(
        !contains(b"reviewer-secret-7f3a9c"),
        "the reviewer JWT is sealed"
    );
    assert!(!contains(root_token.trim().as_bytes()), "tokens are hashed");

    // Looser modes are reported at start.
    drop(server);
    std::fs::set_permissions(
        data.join("ledger.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let server = CaServer::start(&data, &[]);
    let warned = server
        .log()
        .iter()
        .any(|l| l.contains("ledger.db") && l.contains("readable or writable by other users"));
    assert!(warned, "{:#?}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_material_is_never_created_over_a_missing_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    drop(CaServer::start(&data, &[]));
    let before = digest_dir(&data.join("ca"));

    // The issuing key missing (a Secret mounted without that item): refuse, name the file.
    let key = std::fs::read(data.join("ca/issuing.key")).expect("key");
    std::fs::remove_file(data.join("ca/issuing.key")).expect("rm");
    let err = serve_fails(&data, &[]);
    assert!(
        err.contains("issuing.key") && err.contains("missing"),
        "{err}"
    );
    let mut expected = before.clone();
    expected.retain(|(n, _)| n != "issuing.key");
    assert_eq!(digest_dir(&data.join("ca")), expected, "nothing replaced");
    // CLI commands do not create one either, nor a root token.
    let token = std::fs::read(data.join("root-token")).expect("root-token");
    let out = run(&["--data-dir", data.to_str().expect("utf-8"), "token", "root"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no token printed");
    assert_eq!(digest_dir(&data.join("ca")), expected, "nothing replaced");
    assert_eq!(
        std::fs::read(data.join("root-token")).expect("root-token"),
        token
    );
    std::fs::write(data.join("ca/issuing.key"), key).expect("restore");
    std::fs::set_permissions(
        data.join("ca/issuing.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");

    // The certificate missing, the key present: refuse too.
    let cert = std::fs::read(data.join("ca/issuing.crt")).expect("crt");
    std::fs::remove_file(data.join("ca/issuing.crt")).expect("rm");
    let err = serve_fails(&data, &[]);
    assert!(err.contains("issuing.crt"), "{err}");
    let mut expected = before.clone();
    expected.retain(|(n, _)| n != "issuing.crt");
    assert_eq!(digest_dir(&data.join("ca")), expected, "nothing replaced");
    std::fs::write(data.join("ca/issuing.crt"), cert).expect("restore");

    // chain.pem lost: the issuing CA would silently become everyone's trust anchor. Refused.
    let chain = std::fs::read(data.join("ca/chain.pem")).expect("chain");
    std::fs::remove_file(data.join("ca/chain.pem")).expect("rm");
    let err = serve_fails(&data, &[]);
    assert!(
        err.contains("chain.pem") && err.contains("not a root"),
        "{err}"
    );
    let mut expected = before.clone();
    expected.retain(|(n, _)| n != "chain.pem");
    assert_eq!(
        digest_dir(&data.join("ca")),
        expected,
        "chain.pem not recreated"
    );
    std::fs::write(data.join("ca/chain.pem"), chain).expect("restore");

    // seal.key lost: refused, and no new key left behind by the failed start.
    let seal = std::fs::read(data.join("ca/seal.key")).expect("seal");
    std::fs::remove_file(data.join("ca/seal.key")).expect("rm");
    let err = serve_fails(&data, &[]);
    assert!(err.contains("seal.key") && err.contains("restore"), "{err}");
    assert!(
        !data.join("ca/seal.key").exists(),
        "no seal key made by a failed start"
    );
    std::fs::write(data.join("ca/seal.key"), seal).expect("restore");
    std::fs::set_permissions(
        data.join("ca/seal.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");

    // root.key moved offline, as the docs advise: the server runs without it.
    std::fs::remove_file(data.join("ca/root.key")).expect("rm");
    drop(CaServer::start(&data, &[]));
    let mut expected = before.clone();
    expected.retain(|(n, _)| n != "root.key");
    assert_eq!(
        digest_dir(&data.join("ca")),
        expected,
        "no root.key recreated, nothing else changed"
    );

    // `cert sign` where there is no CA creates none.
    let empty = tmp.path().join("elsewhere");
    conformance::openssl::p256_csr(
        tmp.path(),
        "c",
        "/CN=a.example.test",
        Some("DNS:a.example.test"),
    );
    let out = run(&[
        "--data-dir",
        empty.to_str().expect("utf-8"),
        "cert",
        "sign",
        "--csr",
        tmp.path().join("c.csr").to_str().expect("utf-8"),
    ]);
    assert!(!out.status.success(), "cert sign without a CA");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no CA in"));
    assert!(!empty.join("ca").exists(), "no CA created");
    assert!(!empty.join("ledger.db").exists(), "no ledger created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_belongs_to_one_ca() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = tmp.path().join("a");
    drop(CaServer::start(&a, &[]));
    let db = format!("sqlite://{}", a.join("ledger.db").display());

    // An empty data directory against A's database: refuses instead of making a second root.
    let empty = tmp.path().join("empty");
    let store = conformance::ledger::open(&a, &[]).await;
    let before = conformance::ledger::Snapshot::take(&store).await;
    let err = serve_fails(&empty, &["--database-url", &db]);
    assert!(err.contains("already belongs to one"), "{err}");
    assert!(!empty.join("ca").exists(), "no CA created");
    before
        .assert_unchanged(&store, "an empty data directory against A's database")
        .await;

    // Another CA's files against A's database: refuses, naming the issuer it belongs to, and
    // writes nothing into it (not even its serving certificate).
    let b = tmp.path().join("b");
    drop(CaServer::start(&b, &[]));
    let b_ca = digest_dir(&b.join("ca"));
    let err = serve_fails(&b, &["--database-url", &db]);
    assert!(
        err.contains("this database belongs to the issuing CA") && err.contains("Issuing CA"),
        "{err}"
    );
    before
        .assert_unchanged(&store, "another CA's files against A's database")
        .await;
    assert_eq!(digest_dir(&b.join("ca")), b_ca, "B's files untouched");
    // A's own files still start against it.
    drop(CaServer::start(&a, &["--database-url", &db]));
}
