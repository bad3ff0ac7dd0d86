//! A kubeadm-shaped `/etc/kubernetes` tree made with `openssl`: the three CAs (`kubernetes`,
//! `front-proxy-ca`, `etcd-ca`), the leaf certificates kubeadm writes under `pki/`, the
//! service-account key pair (PEM that is not a certificate), and kubeconfigs with embedded client
//! certificates — what `ca-server ledger observe` must understand on a control-plane node.

use std::path::Path;

use base64::Engine as _;

use crate::openssl::openssl;

/// Leaf certificates under `pki/` as (path without extension, CN, issuing CA, extended key usage).
pub const LEAVES: [(&str, &str, &str, &str); 7] = [
    ("apiserver", "kube-apiserver", "ca", "serverAuth"),
    (
        "apiserver-kubelet-client",
        "kube-apiserver-kubelet-client",
        "ca",
        "clientAuth",
    ),
    (
        "apiserver-etcd-client",
        "kube-apiserver-etcd-client",
        "etcd/ca",
        "clientAuth",
    ),
    (
        "front-proxy-client",
        "front-proxy-client",
        "front-proxy-ca",
        "clientAuth",
    ),
    (
        "etcd/server",
        "control-plane",
        "etcd/ca",
        "serverAuth,clientAuth",
    ),
    (
        "etcd/peer",
        "control-plane",
        "etcd/ca",
        "serverAuth,clientAuth",
    ),
    (
        "etcd/healthcheck-client",
        "kube-etcd-healthcheck-client",
        "etcd/ca",
        "clientAuth",
    ),
];

/// The CAs as (path without extension, CN).
pub const CAS: [(&str, &str); 3] = [
    ("ca", "kubernetes"),
    ("front-proxy-ca", "front-proxy-ca"),
    ("etcd/ca", "etcd-ca"),
];

/// kubeconfigs with embedded client certificates, as (file, CN).
pub const KUBECONFIGS: [(&str, &str); 4] = [
    ("admin.conf", "kubernetes-admin"),
    ("super-admin.conf", "kubernetes-super-admin"),
    ("controller-manager.conf", "system:kube-controller-manager"),
    ("scheduler.conf", "system:kube-scheduler"),
];

fn key(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &format!("{name}.key"),
        ],
    );
}

/// Signs `name.crt` for `cn` with `ca` (paths relative to `dir`), valid `days`.
pub fn leaf(dir: &Path, name: &str, cn: &str, ca: &str, eku: &str, days: u32) {
    key(dir, name);
    let ext = format!("{name}.ext");
    let san = if eku.contains("serverAuth") {
        format!(
            "subjectAltName=DNS:{},DNS:localhost,IP:127.0.0.1\n",
            cn.replace(':', "-")
        )
    } else {
        String::new()
    };
    std::fs::write(
        dir.join(&ext),
        format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={eku}\n{san}"),
    )
    .expect("write extensions");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            &format!("/CN={cn}"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            &days.to_string(),
            "-extfile",
            &ext,
            "-out",
            &format!("{name}.crt"),
        ],
    );
    for leftover in [ext, format!("{name}.csr")] {
        let _ = std::fs::remove_file(dir.join(leftover));
    }
}

/// Writes the tree under `root` (`root/pki/…`, `root/*.conf`): CAs valid 10 years, leaves and
/// kubeconfig client certificates valid `leaf_days`.
pub fn tree(root: &Path, leaf_days: u32) {
    let pki = root.join("pki");
    std::fs::create_dir_all(pki.join("etcd")).expect("mkdir pki/etcd");
    for (name, cn) in CAS {
        key(&pki, name);
        openssl(
            &pki,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                &format!("{name}.key"),
                "-subj",
                &format!("/CN={cn}"),
                "-days",
                "3650",
                "-out",
                &format!("{name}.crt"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            ],
        );
    }
    for (name, cn, ca, eku) in LEAVES {
        leaf(&pki, name, cn, ca, eku, leaf_days);
    }
    // The service-account key pair: PEM, but not certificates.
    openssl(
        &pki,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "sa.key",
        ],
    );
    openssl(
        &pki,
        &["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
    );
    let b64 = |p: &Path| {
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(p).expect("read pem"))
    };
    for (file, cn) in KUBECONFIGS {
        let stem = file.trim_end_matches(".conf");
        leaf(
            &pki,
            &format!("kubeconfig-{stem}"),
            cn,
            "ca",
            "clientAuth",
            leaf_days,
        );
        let cert = pki.join(format!("kubeconfig-{stem}.crt"));
        let key = pki.join(format!("kubeconfig-{stem}.key"));
        let kubeconfig = format!(
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: https://127.0.0.1:6443\n  name: kubernetes\ncontexts:\n- context:\n    cluster: kubernetes\n    user: {cn}\n  name: {cn}@kubernetes\ncurrent-context: {cn}@kubernetes\nkind: Config\npreferences: {{}}\nusers:\n- name: {cn}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\n",
            ca = b64(&pki.join("ca.crt")),
            cert = b64(&cert),
            key = b64(&key),
        );
        std::fs::write(root.join(file), kubeconfig).expect("write kubeconfig");
        // kubeadm does not keep these as files; only the kubeconfig holds them.
        std::fs::remove_file(cert).expect("rm");
        std::fs::remove_file(key).expect("rm");
    }
}
