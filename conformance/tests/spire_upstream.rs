//! SPIRE's Vault UpstreamAuthority, replayed at the wire: its token checks (`lookup-self`, then
//! `renew-self` with increment 0), its `root/sign-intermediate` body (every field a string, the
//! subject and URI SAN copied from its CSR, `use_csr_values` unset), and what it reads back
//! (`certificate`, `issuing_ca`, `ca_chain` whose last entry is the upstream root and whose first
//! is byte-for-byte the new certificate). The intermediate then signs an X509-SVID the way the
//! SPIRE server would, and the SVID verifies against our published root.

use conformance::openssl::{openssl, verify};
use conformance::server::CaServer;
use conformance::vault::Vault;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spire_upstream_authority_replayed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let server = CaServer::start(&dir.join("data"), &[]);
    let vault = Vault::connect(&server);
    // The policy SPIRE's documentation gives its token.
    vault
        .policy(
            "spire",
            "path \"pki/root/sign-intermediate\" {\n  capabilities = [\"update\"]\n}\n",
        )
        .await;
    let token = vault.token_with(&["spire"]).await;

    // token_auth: lookup-self, then renew-self at once when renewable with a lease.
    let r = vault
        .call("GET", "auth/token/lookup-self", Some(&token), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let data = &r.json()["data"];
    assert_eq!(data["id"], token.as_str());
    assert_eq!(data["renewable"], true);
    let ttl = data["ttl"].as_i64().expect("ttl");
    assert!(ttl > 0);
    let r = vault
        .call(
            "PUT",
            "auth/token/renew-self",
            Some(&token),
            Some(json!({"increment": 0})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["auth"]["lease_duration"].as_i64().expect("lease") > 0);
    assert_eq!(r.json()["auth"]["renewable"], true);

    // The SPIRE server's CA key and CSR: subject C=US, O=SPIFFE, URI SAN the trust domain.
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "spire.key",
            "-subj",
            "/C=US/O=SPIFFE",
            "-addext",
            "subjectAltName=URI:spiffe://example.org",
            "-out",
            "spire.csr",
        ],
    );
    let csr = std::fs::read_to_string(dir.join("spire.csr")).expect("csr");
    let body = json!({
        "common_name": "", "organization": "SPIFFE", "country": "US",
        "uri_sans": "spiffe://example.org", "csr": csr, "ttl": "86400",
    });
    let r = vault
        .call(
            "PUT",
            "pki/root/sign-intermediate",
            Some(&token),
            Some(body),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let data = &r.json()["data"];
    let certificate = data["certificate"]
        .as_str()
        .expect("certificate (required)");
    let issuing_ca = data["issuing_ca"].as_str().expect("issuing_ca (required)");
    let ca_chain: Vec<&str> = data["ca_chain"]
        .as_array()
        .expect("ca_chain")
        .iter()
        .map(|v| v.as_str().expect("strings"))
        .collect();
    assert_eq!(
        ca_chain[0], certificate,
        "SPIRE drops the new certificate by exact comparison"
    );
    let upstream_root = *ca_chain.last().expect("a root");
    let published =
        conformance::openssl::curl_http(&format!("{}/ca/bundle.pem", server.http_url())).1;
    assert_eq!(
        published.trim(),
        upstream_root.trim(),
        "the last ca_chain entry is the root SPIRE will trust, ours"
    );
    // SPIRE's X509CaChain: certificate, then ca_chain minus itself and the root.
    let spire_chain: Vec<&str> = std::iter::once(certificate)
        .chain(
            ca_chain
                .iter()
                .copied()
                .filter(|c| *c != certificate && *c != upstream_root),
        )
        .collect();
    assert_eq!(spire_chain.len(), 2, "the intermediate and our issuing CA");
    assert_eq!(spire_chain[1], issuing_ca);

    std::fs::write(dir.join("spire-ca.pem"), certificate).expect("write");
    let text = openssl(dir, &["x509", "-in", "spire-ca.pem", "-noout", "-text"]);
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
    assert!(text.contains("URI:spiffe://example.org"), "{text}");
    assert!(text.contains("O = SPIFFE"), "{text}");

    // The SPIRE server signs a workload's SVID with it.
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "svid.key",
            "-subj",
            "/O=SPIRE",
            "-out",
            "svid.csr",
        ],
    );
    std::fs::write(
        dir.join("svid.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=critical,URI:spiffe://example.org/ns/default/sa/web\n",
    )
    .expect("write");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "svid.csr",
            "-CA",
            "spire-ca.pem",
            "-CAkey",
            "spire.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "svid.ext",
            "-out",
            "svid.pem",
        ],
    );
    std::fs::write(dir.join("root.pem"), upstream_root).expect("write");
    std::fs::write(dir.join("untrusted.pem"), spire_chain.join("\n")).expect("write");
    let (ok, text) = verify(dir, "root.pem", Some("untrusted.pem"), "svid.pem");
    assert!(ok, "the SVID verifies against our root: {text}");

    // The intermediate is in the ledger like any certificate.
    let serial = data["serial_number"].as_str().expect("serial");
    let r = vault
        .call("GET", &format!("pki/cert/{serial}"), None, None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // The token may do nothing else.
    let r = vault
        .call(
            "POST",
            "pki/issue/any",
            Some(&token),
            Some(json!({"common_name": "x"})),
        )
        .await;
    assert_eq!(r.status, 403);
}
