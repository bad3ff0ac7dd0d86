//! Backup and restore with the real binary: a backup taken while the server issues under load,
//! restored into a fresh data directory; the restored server reports, revokes and verifies what
//! the old one issued, and issues under the same root. A damaged backup, or a data directory
//! that is not empty, is refused before anything is written.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use conformance::openssl::verify;
use conformance::server::CaServer;
use conformance::vault::Vault;
use serde_json::{Value, json};

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = conformance::server::run(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

fn crl_text(dir: &Path, server: &CaServer) -> String {
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "20"])
        .arg(format!("{}/crl.pem", server.http_url()))
        .output()
        .expect("curl");
    std::fs::write(dir.join("crl.pem"), &out.stdout).expect("write");
    conformance::openssl::openssl(dir, &["crl", "-in", "crl.pem", "-noout", "-text"])
        .replace(':', "")
        .to_uppercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_into_a_working_server() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let data = dir.join("data");
    let server = CaServer::start(&data, &[]);
    let vault = Vault::connect(&server);
    vault
        .root(
            "POST",
            "pki_int/roles/web",
            json!({"allowed_domains": "backup.test", "allow_subdomains": true, "key_type": "any"}),
        )
        .await;
    let mut issued: Vec<(String, String)> = Vec::new();
    for i in 0..5 {
        let r = vault
            .root(
                "POST",
                "pki_int/issue/web",
                json!({"common_name": format!("c{i}.backup.test")}),
            )
            .await;
        let d = &r.json()["data"];
        issued.push((
            d["serial_number"].as_str().expect("serial").to_owned(),
            d["certificate"].as_str().expect("cert").to_owned(),
        ));
    }
    vault
        .root(
            "POST",
            "pki_int/revoke",
            json!({"serial_number": issued[0].0}),
        )
        .await;
    let bundle = conformance::openssl::curl_http(&format!("{}/ca/bundle.pem", server.http_url())).1;

    // Load while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = Arc::clone(&stop);
        let http = vault.http.fresh();
        let token = vault.token.clone();
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let body = json!({"common_name": format!("l{n}.backup.test")}).to_string();
                let r = http
                    .request_with(
                        "POST",
                        "/v1/pki_int/issue/web",
                        &[("x-vault-token", &token)],
                        None,
                        body.into_bytes(),
                    )
                    .await;
                assert_eq!(r.status, 200, "{}", r.text());
            }
            n
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let backup = dir.join("backup");
    let (ok, out, err) = tokio::task::block_in_place(|| {
        cli(&[
            "--data-dir",
            data.to_str().expect("utf-8"),
            "backup",
            "--out",
            backup.to_str().expect("utf-8"),
        ])
    });
    stop.store(true, Ordering::Relaxed);
    let during = load.await.expect("load");
    assert!(ok, "{err}");
    assert!(out.contains("sqlite"), "{out}");
    assert!(during > 0, "the server issued during the backup");

    // What the backup holds, and how.
    assert_eq!(mode(&backup), 0o700);
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(backup.join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    let files: Vec<&str> = manifest["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f[0].as_str().expect("name"))
        .collect();
    for needed in [
        "ca/issuing.crt",
        "ca/issuing.key",
        "ca/chain.pem",
        "ca/seal.key",
        "ledger.db",
    ] {
        assert!(files.contains(&needed), "{needed} in {files:?}");
        assert_eq!(mode(&backup.join(needed)), 0o600, "{needed}");
    }
    assert!(
        !backup.join("root-token").exists(),
        "the root token is not copied"
    );
    drop(server);

    // A damaged backup is refused before anything is written.
    let damaged = dir.join("damaged");
    std::process::Command::new("cp")
        .arg("-a")
        .arg(&backup)
        .arg(&damaged)
        .status()
        .expect("cp");
    let mut chain = std::fs::read(damaged.join("ca/chain.pem")).expect("read");
    chain[40] ^= 1;
    std::fs::set_permissions(
        damaged.join("ca/chain.pem"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    std::fs::write(damaged.join("ca/chain.pem"), chain).expect("write");
    let elsewhere = dir.join("elsewhere");
    let (ok, _, err) = cli(&[
        "--data-dir",
        elsewhere.to_str().expect("utf-8"),
        "restore",
        "--from",
        damaged.to_str().expect("utf-8"),
    ]);
    assert!(!ok && err.contains("does not match the manifest"), "{err}");
    assert!(!elsewhere.exists(), "nothing written for a damaged backup");
    // A data directory that holds a CA is refused.
    let (ok, _, err) = cli(&[
        "--data-dir",
        data.to_str().expect("utf-8"),
        "restore",
        "--from",
        backup.to_str().expect("utf-8"),
    ]);
    assert!(!ok && err.contains("already holds CA material"), "{err}");

    // Restore into a fresh data directory and serve it.
    let restored = dir.join("restored");
    let (ok, _, err) = cli(&[
        "--data-dir",
        restored.to_str().expect("utf-8"),
        "restore",
        "--from",
        backup.to_str().expect("utf-8"),
    ]);
    assert!(ok, "{err}");
    assert_eq!(mode(&restored.join("ca/issuing.key")), 0o600);
    let (ok, token, err) = cli(&[
        "--data-dir",
        restored.to_str().expect("utf-8"),
        "token",
        "root",
    ]);
    assert!(ok, "{err}");
    let server = CaServer::start(&restored, &[]);
    let vault = Vault {
        http: conformance::acme::Https::new(
            server.https,
            &format!("localhost:{}", server.https.port()),
            &bundle,
        ),
        token: token.trim().to_owned(),
    };
    let bundle_after =
        conformance::openssl::curl_http(&format!("{}/ca/bundle.pem", server.http_url())).1;
    assert_eq!(bundle_after, bundle, "the same root");

    // It reports what the old server issued, revocation included.
    let (ok, out, err) = cli(&[
        "--data-dir",
        restored.to_str().expect("utf-8"),
        "ledger",
        "search",
        "--san",
        "c1.backup.test",
        "-o",
        "json",
    ]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        report["certificates"].as_array().expect("items").len(),
        1,
        "{report}"
    );
    let r = vault
        .call("GET", &format!("pki_int/cert/{}", issued[0].0), None, None)
        .await;
    assert!(
        r.json()["data"]["revocation_time"].as_i64().expect("time") > 0,
        "{}",
        r.text()
    );

    // It revokes what the old server issued; its CRL lists both revocations.
    vault
        .root(
            "POST",
            "pki_int/revoke",
            json!({"serial_number": issued[1].0}),
        )
        .await;
    let crl = crl_text(dir, &server);
    for (serial, _) in &issued[..2] {
        assert!(
            crl.contains(&serial.replace(':', "").to_uppercase()),
            "{serial} in the CRL"
        );
    }
    assert!(!crl.contains(&issued[2].0.replace(':', "").to_uppercase()));

    // Old certificates verify against the restored bundle; new ones are issued under it.
    std::fs::write(dir.join("bundle.pem"), &bundle_after).expect("write");
    let chain = conformance::openssl::curl_http(&format!("{}/ca/chain.pem", server.http_url())).1;
    std::fs::write(dir.join("chain.pem"), &chain).expect("write");
    std::fs::write(dir.join("old.pem"), &issued[3].1).expect("write");
    let (ok, text) = verify(dir, "bundle.pem", Some("chain.pem"), "old.pem");
    assert!(ok, "{text}");
    let r = vault
        .root(
            "POST",
            "pki_int/issue/web",
            json!({"common_name": "new.backup.test"}),
        )
        .await;
    std::fs::write(
        dir.join("new.pem"),
        r.json()["data"]["certificate"].as_str().expect("cert"),
    )
    .expect("write");
    let (ok, text) = verify(dir, "bundle.pem", Some("chain.pem"), "new.pem");
    assert!(ok, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_deployment_backs_up_its_ca_material() {
    let db = tokio::task::spawn_blocking(conformance::postgres::test_database)
        .await
        .expect("postgres");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let data = dir.join("data");
    let server = CaServer::start(&data, &["--database-url", &db.url]);
    drop(server);
    let backup = dir.join("backup");
    let (ok, out, err) = cli(&[
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--database-url",
        &db.url,
        "backup",
        "--out",
        backup.to_str().expect("utf-8"),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("postgres") && err.contains("pg_dump"),
        "{out}{err}"
    );
    assert!(!backup.join("ledger.db").exists());
    // The CA material restores next to the same database (as after a lost volume).
    let restored = dir.join("restored");
    let (ok, _, err) = cli(&[
        "--data-dir",
        restored.to_str().expect("utf-8"),
        "--database-url",
        &db.url,
        "restore",
        "--from",
        backup.to_str().expect("utf-8"),
    ]);
    assert!(ok, "{err}");
    let _server = CaServer::start(&restored, &["--database-url", &db.url]);
    // Restoring it as SQLite is refused with the reason.
    let (ok, _, err) = cli(&[
        "--data-dir",
        dir.join("other").to_str().expect("utf-8"),
        "restore",
        "--from",
        backup.to_str().expect("utf-8"),
    ]);
    assert!(!ok && err.contains("pg_dump"), "{err}");
}
