//! The local mesh's certificates, generated per run: a cluster CA, the
//! kube-apiserver's serving certificate, the service-account signing key.
//!
//! Kubernetes needs all three before it starts: clients (kubectl, istiod)
//! verify the API server against the CA, and the API server signs the
//! service-account tokens that pilot-agent presents to istiod with the
//! signing key (TokenRequest / TokenReview, as in a cluster).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The PEM files of one run, in `<dir>/pki/`.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The cluster CA certificate (`certificate-authority` of the kubeconfig).
    pub ca_cert: PathBuf,
    /// The API server's serving certificate and key.
    pub apiserver_cert: PathBuf,
    pub apiserver_key: PathBuf,
    /// The service-account token signing key (PKCS#8).
    pub service_account_key: PathBuf,
    /// Its public half, which the API server verifies tokens with.
    pub service_account_pub: PathBuf,
}

impl Pki {
    /// Generates everything into `<dir>/pki/`.
    pub fn generate(dir: &Path) -> Result<Self> {
        let pki = dir.join("pki");
        std::fs::create_dir_all(&pki).with_context(|| format!("creating {}", pki.display()))?;

        let ca_key = KeyPair::generate().context("generating the CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "sandbox-router local mesh CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .context("self-signing the CA")?;
        let issuer = Issuer::new(ca_params, ca_key);

        let apiserver_key = KeyPair::generate().context("generating the API server key")?;
        let mut params = CertificateParams::new(vec![
            "localhost".to_owned(),
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
            "kubernetes.default.svc.cluster.local".to_owned(),
        ])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let apiserver_cert = params
            .signed_by(&apiserver_key, &issuer)
            .context("signing the API server certificate")?;

        let service_account_key =
            KeyPair::generate().context("generating the service-account signing key")?;

        let files = Self {
            ca_cert: pki.join("ca.crt"),
            apiserver_cert: pki.join("apiserver.crt"),
            apiserver_key: pki.join("apiserver.key"),
            service_account_key: pki.join("service-account.key"),
            service_account_pub: pki.join("service-account.pub"),
        };
        write(&files.ca_cert, &ca_cert.pem())?;
        write(&files.apiserver_cert, &apiserver_cert.pem())?;
        write(&files.apiserver_key, &apiserver_key.serialize_pem())?;
        write(
            &files.service_account_key,
            &service_account_key.serialize_pem(),
        )?;
        write(
            &files.service_account_pub,
            &service_account_key.public_key_pem(),
        )?;
        Ok(files)
    }
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}
