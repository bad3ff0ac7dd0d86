//! `ca-server ledger observe`: certificates we did not issue, recorded in the ledger with their
//! source so the same reports, metrics and alerts cover them (layers 1 and 3 of the guide).
//!
//! Sources:
//! * PEM or DER files, and directories of them (e.g. kubeadm's `/etc/kubernetes/pki`): every
//!   `CERTIFICATE` block; private keys and other PEM blocks are skipped unread;
//! * kubeconfig files: `client-certificate-data` (embedded) and `client-certificate` (a path);
//! * TLS endpoints (`tls:host:port`): the chain the server presents, as a blackbox probe sees it.
//!   Nothing is trusted or refused: an expired or unknown chain is exactly what to record.
//!
//! Names follow kubeadm: `pki/apiserver.crt` → `apiserver`, `pki/etcd/server.crt` →
//! `etcd-server`, `admin.conf` → `admin.conf`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use ca_store::{NewCertificate, ObservedCertificate, Protocol, Requester};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::X509Certificate;

/// What was found at one source, before recording.
#[derive(Debug, Default)]
pub struct Found {
    /// Certificates to record.
    pub certificates: Vec<ObservedCertificate>,
    /// Sources that could not be read or parsed, with the reason (reported, not fatal).
    pub problems: Vec<String>,
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
                Err(e) => found.problems.push(format!("{target}: {e:#}")),
            }
            continue;
        }
        let path = PathBuf::from(target);
        if path.is_dir() {
            walk(&path, &path, &mut found, now);
        } else {
            let name = default_name(&path, path.parent().unwrap_or(Path::new("")));
            file(&path, &name, &mut found, now);
        }
    }
    found
}

fn walk(root: &Path, dir: &Path, found: &mut Found, now: i64) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            found.problems.push(format!("{}: {e}", dir.display()));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            walk(root, &path, found, now);
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
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            found.problems.push(format!("{}: {e}", path.display()));
            return;
        }
    };
    let display = path.display().to_string();
    let text = String::from_utf8_lossy(&bytes);
    if text.contains("-----BEGIN CERTIFICATE-----") {
        let source = format!("file:{display}");
        for (i, der) in pem_certificates(&text).iter().enumerate() {
            let name = if i == 0 {
                name.to_owned()
            } else {
                format!("{name}[{i}]")
            };
            push(found, der, &source, &name, now);
        }
    } else if text.contains("client-certificate") {
        kubeconfig(path, &text, name, found, now);
    } else if text.contains("-----BEGIN") {
        // A key or another PEM object: not ours to read.
    } else if x509_parser::parse_x509_certificate(&bytes).is_ok() {
        push(found, &bytes, &format!("file:{display}"), name, now);
    }
}

fn pem_certificates(text: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let body = &rest[start + "-----BEGIN CERTIFICATE-----".len()..];
        let Some(end) = body.find("-----END CERTIFICATE-----") else {
            break;
        };
        let b64: String = body[..end].split_whitespace().collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) {
            out.push(der);
        }
        rest = &body[end..];
    }
    out
}

/// The client certificates of a kubeconfig (`users[].user.client-certificate[-data]`), read
/// line by line: the two keys are plain scalars in every kubeconfig kubectl and kubeadm write.
fn kubeconfig(path: &Path, text: &str, name: &str, found: &mut Found, now: i64) {
    let source = format!("kubeconfig:{}", path.display());
    for line in text.lines() {
        let line = line.trim();
        if let Some(value) = line.strip_prefix("client-certificate-data:") {
            let value = value.trim().trim_matches('"');
            match base64::engine::general_purpose::STANDARD.decode(value) {
                Ok(pem) => {
                    for der in pem_certificates(&String::from_utf8_lossy(&pem)) {
                        push(found, &der, &source, name, now);
                    }
                }
                Err(_) => found.problems.push(format!(
                    "{}: client-certificate-data is not base64",
                    path.display()
                )),
            }
        } else if let Some(value) = line.strip_prefix("client-certificate:") {
            let referenced = PathBuf::from(value.trim().trim_matches('"'));
            let referenced = if referenced.is_relative() {
                path.parent().unwrap_or(Path::new("")).join(referenced)
            } else {
                referenced
            };
            match std::fs::read_to_string(&referenced) {
                Ok(pem) => {
                    for der in pem_certificates(&pem) {
                        push(found, &der, &source, name, now);
                    }
                }
                Err(e) => found.problems.push(format!(
                    "{}: {}: {e}",
                    path.display(),
                    referenced.display()
                )),
            }
        }
    }
}

fn push(found: &mut Found, der: &[u8], source: &str, name: &str, now: i64) {
    match describe(der, source, now) {
        Ok(certificate) => found.certificates.push(ObservedCertificate {
            certificate,
            source: source.to_owned(),
            name: name.to_owned(),
        }),
        Err(e) => found.problems.push(format!("{source}: {e}")),
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
}
