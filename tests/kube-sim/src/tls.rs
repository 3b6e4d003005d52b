//! A throwaway certificate authority and a serving certificate for `127.0.0.1` /
//! `localhost`, so clients verify the simulator's TLS exactly as they verify a cluster's
//! (through `certificate-authority-data` in a kubeconfig).

use std::sync::Arc;

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct Tls {
    /// PEM of the CA that signed the serving certificate (what a kubeconfig trusts).
    pub ca_pem: String,
    pub config: Arc<rustls::ServerConfig>,
}

/// A fresh self-signed CA named `cn`: its certificate and what signs with it.
fn certificate_authority(cn: &str) -> anyhow::Result<(rcgen::Certificate, rcgen::Issuer<'static, KeyPair>)> {
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca_params.distinguished_name.push(DnType::CommonName, cn);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).context("self-signing the CA")?;
    Ok((ca_cert, rcgen::Issuer::new(ca_params, ca_key)))
}

pub fn generate(cluster: &str) -> anyhow::Result<Tls> {
    let (ca_cert, issuer) = certificate_authority(&format!("kube-sim-ca-{cluster}"))?;

    let key = KeyPair::generate().context("generating the serving key")?;
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "kubernetes.default.svc".to_string()])
        .context("serving certificate parameters")?;
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().expect("literal IP")));
    params
        .subject_alt_names
        .push(SanType::IpAddress("::1".parse().expect("literal IP")));
    params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the serving certificate")?;

    let chain = vec![CertificateDer::from(cert.der().to_vec())];
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .context("TLS server configuration")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Tls {
        ca_pem: ca_cert.pem(),
        config: Arc::new(config),
    })
}

/// A CA and a certificate it signed, in PEM: what a webhook server (or any HTTPS server a
/// test runs) serves, and the bundle its clients trust.
pub struct Issued {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Issues a serving certificate for `names` (DNS names or IP addresses) under a fresh CA.
pub fn issue(names: &[&str]) -> anyhow::Result<Issued> {
    issue_with_clients(names, &[]).map(|(issued, _)| issued)
}

/// Like [`issue`], plus client certificates signed by the same CA, one per
/// `(common name, organizations)`: as kube-apiserver reads a client certificate, the common
/// name is the user and the organizations its groups. Answers each client's
/// `(cert_pem, key_pem)`.
pub fn issue_with_clients(
    names: &[&str],
    clients: &[(&str, &[&str])],
) -> anyhow::Result<(Issued, Vec<(String, String)>)> {
    let (ca_cert, issuer) = certificate_authority("test-ca")?;
    let mut issued_clients = Vec::new();
    for (cn, orgs) in clients {
        let key = KeyPair::generate().context("generating a client key")?;
        let mut params = CertificateParams::new(Vec::<String>::new()).context("client certificate parameters")?;
        params.distinguished_name.push(DnType::CommonName, *cn);
        for o in *orgs {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&key, &issuer)
            .context("signing a client certificate")?;
        issued_clients.push((cert.pem(), key.serialize_pem()));
    }
    let issued = issue_under(&ca_cert, &issuer, names)?;
    Ok((issued, issued_clients))
}

fn issue_under(
    ca_cert: &rcgen::Certificate,
    issuer: &rcgen::Issuer<'static, KeyPair>,
    names: &[&str],
) -> anyhow::Result<Issued> {
    let key = KeyPair::generate().context("generating the serving key")?;
    let mut params = CertificateParams::new(Vec::<String>::new()).context("serving certificate parameters")?;
    for n in names {
        params.subject_alt_names.push(match n.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*n).try_into().context("a DNS name")?),
        });
    }
    params
        .distinguished_name
        .push(DnType::CommonName, names.first().copied().unwrap_or("server"));
    let cert = params
        .signed_by(&key, issuer)
        .context("signing the serving certificate")?;
    Ok(Issued {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}
