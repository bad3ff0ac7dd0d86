//! The HTTPS serving certificate: either files the operator provides, or a certificate the server
//! issues to itself (recorded in the ledger like any other) and renews at two thirds of its life.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use ca_store::{Protocol, Requester};
use rustls::ServerConfig;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

use crate::config::TlsConfig;
use crate::issuer::{CertificateRequest, Issuance, Profile, Subject, SubjectPublicKey, keys};

/// Serves whichever certificate is current; swapped atomically on renewal.
#[derive(Debug)]
pub struct ServingCertificate {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ServingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| Arc::clone(&c))
    }
}

impl ServingCertificate {
    fn new(key: CertifiedKey) -> Self {
        Self {
            current: RwLock::new(Arc::new(key)),
        }
    }

    fn replace(&self, key: CertifiedKey) {
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(key);
        }
    }

    /// The leaf currently served.
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.current
            .read()
            .ok()
            .and_then(|c| c.cert.first().cloned())
    }
}

/// rustls server configuration (ring provider, HTTP/2 and HTTP/1.1) around a resolver.
pub fn server_config(resolver: Arc<ServingCertificate>) -> Result<ServerConfig> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(Arc::new(OptionalClientCertificate(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))))
            .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Loads operator-provided files, or issues the first self-signed-by-us certificate.
/// Returns the resolver and, for self-issued certificates, its notBefore/notAfter.
pub async fn initial(
    tls: &TlsConfig,
    issuance: &Issuance,
) -> Result<(
    Arc<ServingCertificate>,
    Option<(OffsetDateTime, OffsetDateTime)>,
)> {
    if let (Some(cert_file), Some(key_file)) = (&tls.cert_file, &tls.key_file) {
        let chain = crate::issuer::hierarchy::parse_certs(
            &std::fs::read_to_string(cert_file)
                .with_context(|| format!("reading {}", cert_file.display()))?,
        )?;
        let key_pem = std::fs::read_to_string(key_file)
            .with_context(|| format!("reading {}", key_file.display()))?;
        let (_, pkcs8) = keys::load_pem(&key_pem)?;
        let signing = any_supported_type(&PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8)))
            .map_err(|e| anyhow!("serving key: {e}"))?;
        return Ok((
            Arc::new(ServingCertificate::new(CertifiedKey::new(chain, signing))),
            None,
        ));
    }
    let (key, validity) = self_issue(tls, issuance).await?;
    Ok((Arc::new(ServingCertificate::new(key)), Some(validity)))
}

/// Renews the self-issued certificate at two thirds of its lifetime, forever. Failures are
/// retried every minute while the old certificate is still served.
pub async fn renew_forever(
    resolver: Arc<ServingCertificate>,
    tls: TlsConfig,
    issuance: Issuance,
    mut validity: (OffsetDateTime, OffsetDateTime),
) {
    loop {
        let (not_before, not_after) = validity;
        let lifetime: time::Duration = not_after - not_before;
        let renew_at = not_before + lifetime * 2 / 3;
        let wait: time::Duration = renew_at - OffsetDateTime::now_utc();
        // At least 10 s apart: an issuer near its end truncates every certificate to its own
        // notAfter, and renewing at two thirds of ever shorter lives would fill the ledger.
        let wait = Duration::try_from(wait)
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_secs(10));
        tokio::time::sleep(wait).await;
        match self_issue(&tls, &issuance).await {
            Ok((key, new_validity)) => {
                resolver.replace(key);
                validity = new_validity;
                tracing::info!(not_after = %new_validity.1, "renewed the serving certificate");
            }
            Err(e) => {
                tracing::error!(error = %e, "renewing the serving certificate failed; retrying in 1m");
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
    }
}

fn serving_names(tls: &TlsConfig) -> (Vec<String>, Vec<IpAddr>) {
    let mut dns = vec!["localhost".to_owned()];
    let mut ips: Vec<IpAddr> = vec![[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()];
    if let Some(host) = hostname() {
        dns.push(host);
    }
    for name in &tls.names {
        match name.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => dns.push(name.to_ascii_lowercase()),
        }
    }
    dns.sort();
    dns.dedup();
    ips.sort();
    ips.dedup();
    (dns, ips)
}

fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/etc/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())?;
    crate::names::normalize_dns_name(name.trim())
}

async fn self_issue(
    tls: &TlsConfig,
    issuance: &Issuance,
) -> Result<(CertifiedKey, (OffsetDateTime, OffsetDateTime))> {
    let key = keys::generate_p256()?;
    let public_key =
        SubjectPublicKey::from_spki_der(&rcgen::PublicKeyData::subject_public_key_info(&key))?;
    let (dns, ips) = serving_names(tls);
    let mut req = CertificateRequest::new(public_key, Profile::TlsServer);
    req.subject = Subject::common_name(dns.first().cloned().unwrap_or_default());
    req.dns_names = dns;
    req.ip_addresses = ips;
    req.lifetime = Some(tls.lifetime);
    let requester = Requester::new(Protocol::Internal, "ca-server");
    let request_id = uuid::Uuid::new_v4().to_string();
    let signed = issuance
        .issue(&req, &requester, &request_id)
        .await
        .context("issuing the serving certificate")?;
    let mut chain = vec![signed.der.clone()];
    chain.extend(signed.chain.iter().cloned());
    let signing = any_supported_type(&PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        key.serialize_der(),
    )))
    .map_err(|e| anyhow!("serving key: {e}"))?;
    Ok((
        CertifiedKey::new(chain, signing),
        (signed.not_before, signed.not_after),
    ))
}

/// Asks for, but never requires, a client certificate; the Vault `cert` auth method decides
/// whether a presented certificate is trusted (as Vault's listener does). The handshake signature
/// still proves the client holds the certificate's key.
#[derive(Debug)]
struct OptionalClientCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::server::danger::ClientCertVerifier for OptionalClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
