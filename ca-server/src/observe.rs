//! `ca-server ledger observe`: certificates we did not issue, recorded in the ledger with their
//! source so the same reports, metrics and alerts cover them (layers 1 and 3 of the guide).
//!
//! Sources:
//! * PEM or DER files, and directories of them (e.g. kubeadm's `/etc/kubernetes/pki`): every
//!   `CERTIFICATE` block; private keys and other PEM blocks are skipped unread;
//! * kubeconfig files (parsed as YAML, block or flow style): `client-certificate-data`
//!   (embedded) and `client-certificate` (a path);
//! * TLS endpoints (`tls:host:port`): the chain the server presents, as a blackbox probe sees it.
//!   Nothing is trusted or refused: an expired or unknown chain is exactly what to record.
//!
//! Directory symlinks are not followed and no directory is entered twice; every file that holds
//! no certificate gets one warning line ([`Found::problems`]), and [`Found::exit_code`] tells
//! complete, partial and failed runs apart.
//!
//! Names follow kubeadm: `pki/apiserver.crt` → `apiserver`, `pki/etcd/server.crt` →
//! `etcd-server`, `admin.conf` → `admin.conf`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use ca_store::{NewCertificate, ObservedCertificate, Protocol, Requester};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::X509Certificate;
use yaml_rust2::{Yaml, YamlLoader};

/// What kind of trouble a source gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// A target could not be reached or read at all (missing path, endpoint down).
    Unreachable,
    /// A file that holds no certificate (garbage, empty, a key, truncated or broken PEM), or
    /// something deliberately not followed (a directory symlink).
    Skipped,
}

/// One warning about one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Its kind.
    pub kind: ProblemKind,
    /// The path or endpoint and what is wrong.
    pub message: String,
}

/// What was found, before recording.
#[derive(Debug, Default)]
pub struct Found {
    /// Certificates to record.
    pub certificates: Vec<ObservedCertificate>,
    /// One line per source that could not be read or held no certificate (reported, not fatal).
    pub problems: Vec<Problem>,
}

impl Found {
    fn problem(&mut self, kind: ProblemKind, message: String) {
        self.problems.push(Problem { kind, message });
    }

    /// The exit status `ledger observe` reports: 0 when everything was a certificate and read;
    /// 1 when nothing usable was found or a target could not be reached; 3 when certificates were
    /// found but some files were skipped.
    pub fn exit_code(&self) -> u8 {
        if self.certificates.is_empty()
            || self
                .problems
                .iter()
                .any(|p| p.kind == ProblemKind::Unreachable)
        {
            1
        } else if self.problems.is_empty() {
            0
        } else {
            3
        }
    }
}

/// Collects certificates from files, directories, kubeconfigs and `tls:host:port` endpoints.
pub async fn collect(targets: &[String], now: i64) -> Found {
    let mut found = Found::default();
    for target in targets {
        if let Some(endpoint) = target.strip_prefix("tls:") {
            match probe(endpoint).await {
                Ok(chain) => {
                    let source = format!("tls:{endpoint}");
                    for (i, der) in chain.iter().enumerate() {
                        let name = if i == 0 {
                            endpoint.to_owned()
                        } else {
                            format!("{endpoint} chain[{i}]")
                        };
                        push(&mut found, der, &source, &name, now);
                    }
                }
                Err(e) => found.problem(ProblemKind::Unreachable, format!("{target}: {e:#}")),
            }
            continue;
        }
        let path = PathBuf::from(target);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                let mut visited = HashSet::new();
                walk(&path, &path, &mut visited, &mut found, now);
            }
            Ok(_) => {
                let name = default_name(&path, path.parent().unwrap_or(Path::new("")));
                file(&path, &name, &mut found, now);
            }
            Err(e) => found.problem(ProblemKind::Unreachable, format!("{target}: {e}")),
        }
    }
    found
}

/// Walks a directory tree without following directory symlinks, and never entering a directory
/// twice (bind mounts, hard-linked trees): each certificate is found once, under its real path.
fn walk(root: &Path, dir: &Path, visited: &mut HashSet<(u64, u64)>, found: &mut Found, now: i64) {
    use std::os::unix::fs::MetadataExt;
    let identity = match std::fs::metadata(dir) {
        Ok(meta) => (meta.dev(), meta.ino()),
        Err(e) => {
            found.problem(ProblemKind::Unreachable, format!("{}: {e}", dir.display()));
            return;
        }
    };
    if !visited.insert(identity) {
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            found.problem(ProblemKind::Unreachable, format!("{}: {e}", dir.display()));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let Ok(link) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let is_dir = std::fs::metadata(&path).is_ok_and(|m| m.is_dir());
        if link.file_type().is_symlink() && is_dir {
            found.problem(
                ProblemKind::Skipped,
                format!("{}: a directory symlink, not followed", path.display()),
            );
        } else if is_dir {
            walk(root, &path, visited, found, now);
        } else if is_candidate(&path) {
            let name = default_name(&path, root);
            file(&path, &name, found, now);
        }
    }
}

/// Certificate-looking files and kubeconfigs; keys are never opened.
fn is_candidate(path: &Path) -> bool {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    matches!(
        ext.as_str(),
        "crt" | "pem" | "cert" | "cer" | "der" | "conf" | "kubeconfig"
    )
}

/// kubeadm-style name: the path below the observed root, without extension, `/` → `-`;
/// kubeconfigs keep their file name.
fn default_name(path: &Path, root: &Path) -> String {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if file_name.ends_with(".conf") || file_name.ends_with(".kubeconfig") {
        return file_name.to_owned();
    }
    let relative = path.strip_prefix(root).unwrap_or(path).with_extension("");
    let parts: Vec<&str> = relative
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .collect();
    // Observing /etc/kubernetes names pki/apiserver.crt `apiserver`, as kubeadm does.
    let parts = match parts.split_first() {
        Some((&"pki", rest)) if !rest.is_empty() => rest,
        _ => &parts[..],
    };
    parts.join("-")
}

fn file(path: &Path, name: &str, found: &mut Found, now: i64) {
    match read_bounded(path) {
        Ok(bytes) => contents(path, &bytes, name, found, now),
        Err(Unreadable::Io(e)) => {
            found.problem(ProblemKind::Unreachable, format!("{}: {e}", path.display()))
        }
        Err(why) => found.problem(ProblemKind::Skipped, format!("{}: {why}", path.display())),
    }
}

/// Largest file read: certificate bundles and kubeconfigs are kilobytes.
const MAX_FILE: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
enum Unreadable {
    #[error("{0}")]
    Io(std::io::Error),
    #[error("not a regular file (a FIFO, socket or device); not read")]
    NotRegular,
    #[error("larger than {} MiB; not a certificate file", MAX_FILE / 1024 / 1024)]
    TooLarge,
}

/// Reads a regular file of at most [`MAX_FILE`] bytes. A FIFO named `*.crt` would block the walk
/// forever and `/dev/zero` would exhaust memory, so neither is opened for reading.
fn read_bounded(path: &Path) -> Result<Vec<u8>, Unreadable> {
    use std::io::Read as _;
    let meta = std::fs::metadata(path).map_err(Unreadable::Io)?;
    if !meta.is_file() {
        return Err(Unreadable::NotRegular);
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(Unreadable::Io)?
        .take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(Unreadable::Io)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(Unreadable::TooLarge);
    }
    Ok(bytes)
}

/// What a file read from `path` holds: PEM certificates, a kubeconfig's client certificates
/// (a `client-certificate` path is read relative to `path`), or one DER certificate. Anything
/// else is one [`ProblemKind::Skipped`] line naming the file.
pub fn contents(path: &Path, bytes: &[u8], name: &str, found: &mut Found, now: i64) {
    let display = path.display().to_string();
    let skipped = |found: &mut Found, why: &str| {
        found.problem(ProblemKind::Skipped, format!("{display}: {why}"));
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return skipped(found, "empty");
    }
    let text = String::from_utf8_lossy(bytes);
    if text.contains("-----BEGIN CERTIFICATE-----") {
        let source = format!("file:{display}");
        match pem_certificates(&text) {
            Ok(ders) => {
                for (i, der) in ders.iter().enumerate() {
                    let name = if i == 0 {
                        name.to_owned()
                    } else {
                        format!("{name}[{i}]")
                    };
                    push(found, der, &source, &name, now);
                }
            }
            Err(why) => skipped(found, &why),
        }
    } else if let Some(config) = kubeconfig_document(&text) {
        kubeconfig(path, &config, name, found, now);
    } else if text.contains("-----BEGIN") {
        // A key or another PEM object: not ours to read.
        skipped(
            found,
            "no certificate in it (a key or another PEM object; not read)",
        );
    } else if x509_parser::parse_x509_certificate(bytes).is_ok() {
        push(found, bytes, &format!("file:{display}"), name, now);
    } else {
        skipped(
            found,
            "not a certificate (neither PEM, nor DER X.509, nor a kubeconfig)",
        );
    }
}

/// Every `CERTIFICATE` block, strictly: a truncated block or bad base64 is an error.
fn pem_certificates(text: &str) -> Result<Vec<Vec<u8>>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let ders: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(text.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("broken PEM: {e}"))?;
    if ders.is_empty() {
        return Err("broken PEM: no complete CERTIFICATE block".into());
    }
    Ok(ders)
}

/// The file as a kubeconfig: a YAML mapping with `users` (block or flow style alike).
fn kubeconfig_document(text: &str) -> Option<Yaml> {
    let mut docs = YamlLoader::load_from_str(text).ok()?;
    let doc = docs.drain(..).next()?;
    (doc["users"].as_vec().is_some() || doc["kind"].as_str() == Some("Config")).then_some(doc)
}

/// The client certificates of a kubeconfig: `users[].user.client-certificate-data` (base64 PEM)
/// and `client-certificate` (a path, relative to the kubeconfig).
fn kubeconfig(path: &Path, config: &Yaml, name: &str, found: &mut Found, now: i64) {
    let source = format!("kubeconfig:{}", path.display());
    let mut any = false;
    for user in config["users"].as_vec().into_iter().flatten() {
        let user = &user["user"];
        if let Some(value) = user["client-certificate-data"].as_str() {
            any = true;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .map_err(|_| "client-certificate-data is not base64".to_owned())
                .and_then(|pem| pem_certificates(&String::from_utf8_lossy(&pem)));
            match decoded {
                Ok(ders) => ders
                    .iter()
                    .for_each(|der| push(found, der, &source, name, now)),
                Err(why) => {
                    found.problem(ProblemKind::Skipped, format!("{}: {why}", path.display()))
                }
            }
        }
        if let Some(value) = user["client-certificate"].as_str() {
            any = true;
            let referenced = PathBuf::from(value);
            let referenced = if referenced.is_relative() {
                path.parent().unwrap_or(Path::new("")).join(referenced)
            } else {
                referenced
            };
            let read = read_bounded(&referenced)
                .map_err(|e| format!("{}: {e}", referenced.display()))
                .and_then(|pem| pem_certificates(&String::from_utf8_lossy(&pem)));
            match read {
                Ok(ders) => ders
                    .iter()
                    .for_each(|der| push(found, der, &source, name, now)),
                Err(why) => {
                    found.problem(ProblemKind::Skipped, format!("{}: {why}", path.display()))
                }
            }
        }
    }
    if !any {
        found.problem(
            ProblemKind::Skipped,
            format!(
                "{}: a kubeconfig with no client certificate",
                path.display()
            ),
        );
    }
}

fn push(found: &mut Found, der: &[u8], source: &str, name: &str, now: i64) {
    match describe(der, source, now) {
        Ok(certificate) => found.certificates.push(ObservedCertificate {
            certificate,
            source: source.to_owned(),
            name: name.to_owned(),
        }),
        Err(e) => found.problem(ProblemKind::Skipped, format!("{source}: {e}")),
    }
}

/// A ledger row for a certificate issued elsewhere.
pub fn describe(der: &[u8], source: &str, now: i64) -> Result<NewCertificate> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).context("not a parseable X.509 certificate")?;
    let mut serial = cert.raw_serial().to_vec();
    while serial.len() > 1 && serial[0] == 0 {
        serial.remove(0);
    }
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    let mut uris = Vec::new();
    let mut emails = Vec::new();
    let mut is_ca = false;
    let (mut server, mut client) = (false, false);
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(n) => dns_names.push(n.to_ascii_lowercase()),
                        GeneralName::URI(u) => uris.push((*u).to_owned()),
                        GeneralName::RFC822Name(e) => emails.push((*e).to_owned()),
                        GeneralName::IPAddress(ip) => {
                            if let Some(ip) = ip_text(ip) {
                                ip_addresses.push(ip);
                            }
                        }
                        _ => {}
                    }
                }
            }
            ParsedExtension::BasicConstraints(bc) => is_ca = bc.ca,
            ParsedExtension::ExtendedKeyUsage(eku) => {
                server = eku.server_auth;
                client = eku.client_auth;
            }
            _ => {}
        }
    }
    let profile = match (is_ca, server, client) {
        (true, _, _) => "ca",
        (false, true, true) => "tls-server-client",
        (false, true, false) => "tls-server",
        (false, false, true) => "tls-client",
        _ => "other",
    };
    let spiffe_id = uris.iter().find(|u| u.starts_with("spiffe://")).cloned();
    let workload_namespace = crate::names::workload_namespace(spiffe_id.as_deref(), &dns_names);
    Ok(NewCertificate {
        serial,
        issuer_id: common_name(&cert, true).unwrap_or_else(|| cert.issuer().to_string()),
        profile: profile.to_owned(),
        subject: cert.subject().to_string(),
        common_name: common_name(&cert, false),
        dns_names,
        ip_addresses,
        uris,
        emails,
        spiffe_id,
        key_algorithm: key_algorithm(&cert),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        requester: Requester::new(Protocol::Observed, source),
        request_id: String::new(),
        created_at: now,
        der: der.to_vec(),
        crl_shard: None,
        workload_namespace,
    })
}

fn common_name(cert: &X509Certificate<'_>, issuer: bool) -> Option<String> {
    let name = if issuer {
        cert.issuer()
    } else {
        cert.subject()
    };
    name.iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| std::net::IpAddr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| std::net::IpAddr::from(b).to_string()),
        _ => None,
    }
}

fn key_algorithm(cert: &X509Certificate<'_>) -> String {
    use x509_parser::public_key::PublicKey;
    match cert.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => format!("RSA-{}", rsa.key_size()),
        Ok(PublicKey::EC(ec)) => match ec.key_size() {
            256 => "ECDSA-P256".into(),
            384 => "ECDSA-P384".into(),
            521 => "ECDSA-P521".into(),
            n => format!("ECDSA-{n}"),
        },
        Ok(_) => cert.public_key().algorithm.algorithm.to_id_string(),
        Err(_) => "unknown".into(),
    }
}

/// The chain a TLS server presents (leaf first), without judging it.
async fn probe(endpoint: &str) -> Result<Vec<Vec<u8>>> {
    let (host, port) = endpoint
        .rsplit_once(':')
        .context("expected tls:host:port")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().context("bad port")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(crate::validation::AcceptAnyCertificate(
            provider,
        )))
        .with_no_client_auth();
    let server_name =
        rustls::pki_types::ServerName::try_from(host.to_owned()).context("bad host name")?;
    let work = async {
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(server_name, tcp)
            .await?;
        let (_, session) = tls.get_ref();
        Ok::<_, std::io::Error>(
            session
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.to_vec()).collect())
                .unwrap_or_default(),
        )
    };
    let chain: Vec<Vec<u8>> = tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .context("timed out")??;
    if chain.is_empty() {
        bail!("the server presented no certificate");
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeadm_names() {
        let root = Path::new("/etc/kubernetes/pki");
        assert_eq!(
            default_name(Path::new("/etc/kubernetes/pki/apiserver.crt"), root),
            "apiserver"
        );
        assert_eq!(
            default_name(Path::new("/etc/kubernetes/pki/etcd/server.crt"), root),
            "etcd-server"
        );
        assert_eq!(
            default_name(Path::new("/etc/kubernetes/admin.conf"), root),
            "admin.conf"
        );
        assert!(!is_candidate(Path::new(
            "/etc/kubernetes/pki/apiserver.key"
        )));
    }

    /// A FIFO named like a certificate blocked the walk forever, and a kubeconfig naming
    /// `/dev/zero` as its client certificate read until memory ran out.
    #[test]
    fn fifos_and_devices_are_not_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("stuck.crt");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        std::fs::write(
            dir.path().join("zero.conf"),
            "apiVersion: v1\nkind: Config\nusers:\n- name: z\n  user:\n    client-certificate: /dev/zero\n",
        )
        .expect("write");
        let target = dir.path().display().to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            let _ = tx.send(runtime.block_on(collect(&[target], 0)));
        });
        let found = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("observe finished instead of blocking on a FIFO or reading /dev/zero");
        let messages: Vec<&str> = found.problems.iter().map(|p| p.message.as_str()).collect();
        assert!(
            messages
                .iter()
                .any(|m| m.contains("stuck.crt") && m.contains("not a regular file")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("zero.conf") && m.contains("/dev/zero")),
            "{messages:?}"
        );
        assert_eq!(found.exit_code(), 1, "nothing usable was found");
    }
}
