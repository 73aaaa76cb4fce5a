//! Throwaway certificates: a CA that issues server certificates, and a
//! self-signed ES256 key for signing registry tokens.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate authority for tests.
pub struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    cert_pem: String,
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, "kiln test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert_pem = params.self_signed(&key).expect("CA certificate").pem();
        TestCa {
            params,
            key,
            cert_pem,
        }
    }

    /// The CA certificate, to trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn issue(&self, names: &[&str]) -> IssuedCert {
        self.issue_for(names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate (TLS client authentication) named `name`.
    pub fn issue_client(&self, name: &str) -> IssuedCert {
        self.issue_for(&[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue_for(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> IssuedCert {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("certificate params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("certificate key");
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("certificate");
        IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl Default for TestCa {
    fn default() -> TestCa {
        TestCa::new()
    }
}

/// The token issuer's key: ES256, with a self-signed certificate that goes
/// into the registry's `rootcertbundle` and each token's `x5c` header.
pub(crate) struct SigningKey {
    pub(crate) cert_pem: String,
    pub(crate) cert_der: Vec<u8>,
    key: ring::signature::EcdsaKeyPair,
}

impl SigningKey {
    pub(crate) fn new() -> SigningKey {
        let key = KeyPair::generate().expect("token key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("token params");
        params
            .distinguished_name
            .push(DnType::CommonName, "kiln test token issuer");
        let cert = params.self_signed(&key).expect("token certificate");
        let rng = ring::rand::SystemRandom::new();
        let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            key.serialized_der(),
            &rng,
        )
        .expect("ring accepts rcgen's PKCS#8");
        SigningKey {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key: signer,
        }
    }

    /// An ES256 signature in JOSE form (r ‖ s).
    pub(crate) fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = ring::rand::SystemRandom::new();
        self.key
            .sign(&rng, message)
            .expect("ECDSA signing")
            .as_ref()
            .to_vec()
    }
}
