//! TLS from PEM files, for every door of the node that speaks it: DICOM TLS for the storage SCP
//! (PS3.15 Annex B.1, the secure transport connection profile; IHE ATNA's secure node), HTTPS on
//! the HTTP port (the same certificate), and the client side towards DICOM TLS destinations.
//!
//! The crypto provider is *ring*, passed explicitly rather than installed as the process
//! default, so nothing else in the process depends on which provider was installed first.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};

pub use tokio_rustls::TlsAcceptor;

/// The node's certificate and what it asks of clients.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM: the node's certificate, followed by any intermediate CA certificates.
    pub cert_file: PathBuf,
    /// PEM: the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM: the CA certificate(s) client certificates must chain to. When set, a client
    /// without a certificate signed by one of them is refused in the handshake.
    pub client_ca_file: Option<PathBuf>,
}

/// Why a TLS configuration could not be built. Texts name the file, never its contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {path}: {reason}")]
    Certificates { path: PathBuf, reason: String },
    #[error("no certificate in {0}")]
    NoCertificate(PathBuf),
    #[error("cannot read a private key from {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("invalid TLS configuration: {0}")]
    Config(String),
}

/// A certificate (PEM, the leaf first, then any intermediates) and its private key: the node's
/// own, or a client certificate for a destination.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Trust and identity of a TLS client (a DICOM TLS destination).
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// PEM: the CA certificate(s) the server's certificate must chain to; nothing else is
    /// trusted (no system store: a PACS has a site CA, not a public one).
    pub ca_file: PathBuf,
    /// The certificate presented when the server asks for one (IHE ATNA: nodes authenticate
    /// each other); None: no client certificate.
    pub identity: Option<Identity>,
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificates {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// The private key in `path`. Its parse error is rustls-pki-types' own: it says what is wrong,
/// not what was read.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The CA certificates in `path` as the only trust anchors.
fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in certificates(path)? {
        roots.add(ca).map_err(|e| TlsError::Certificates {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// Builds the server configuration: TLS 1.2 and 1.3 with rustls' safe defaults on ring, the
/// node's certificate, and client-certificate verification when `client_ca_file` is set.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&files.cert_file)?;
    let key = private_key(&files.key_file)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca_file {
        Some(ca_file) => {
            let roots = roots(ca_file)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("certificate and key: {e}")))?;
    Ok(Arc::new(config))
}

/// [`server_config`] as a [`TlsAcceptor`] for [`crate::StorageScp::serve_doors`].
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    Ok(TlsAcceptor::from(server_config(files)?))
}

/// HTTPS with the node's certificate: [`server_config`] without a client-certificate request
/// (browsers and DICOMweb clients authenticate by token or session, not certificate), offering
/// HTTP/1.1 by ALPN, which is what the node's HTTP server speaks.
pub fn https_acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, TlsError> {
    let config = server_config(&TlsFiles {
        cert_file: cert_file.to_owned(),
        key_file: key_file.to_owned(),
        client_ca_file: None,
    })?;
    let mut config = Arc::unwrap_or_clone(config);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The client side towards a DICOM TLS peer: TLS 1.2 and 1.3 on ring, the server's certificate
/// verified (chain to `ca_file`, validity, and the name the caller connects with), and the
/// client certificate if one is given.
pub fn client_config(tls: &ClientTls) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(&tls.ca_file)?);
    let config = match &tls.identity {
        Some(id) => builder
            .with_client_auth_cert(certificates(&id.cert_file)?, private_key(&id.key_file)?)
            .map_err(|e| TlsError::Config(format!("client certificate and key: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Checks that `name` can be verified against a certificate: a DNS name or an IP address.
pub fn check_server_name(name: &str) -> Result<(), TlsError> {
    ServerName::try_from(name)
        .map(|_| ())
        .map_err(|_| TlsError::Config(format!("{name:?} is not a host name or IP address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key file that is not a key: the error names the file and says what is wrong, and
    /// holds none of the file's contents (which could be a real key in the wrong format).
    #[test]
    fn errors_name_files_never_their_contents() {
        let dir = std::env::temp_dir().join(format!("vcnode-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = "c2VjcmV0LWtleS1tYXRlcmlhbC1kby1ub3QtbG9n";
        let key = dir.join("node.key");
        std::fs::write(
            &key,
            format!("-----BEGIN PRIVATE KEY-----\n{secret}!!\n-----END PRIVATE KEY-----\n"),
        )
        .unwrap();
        let cert = dir.join("node.pem");
        std::fs::write(&cert, format!("-----BEGIN CERTIFICATE-----\n{secret}\n")).unwrap();
        let errors = [
            server_config(&TlsFiles {
                cert_file: cert.clone(),
                key_file: key.clone(),
                client_ca_file: None,
            })
            .unwrap_err(),
            client_config(&ClientTls {
                ca_file: cert.clone(),
                identity: None,
            })
            .unwrap_err(),
            private_key(&key).unwrap_err(),
        ];
        for e in errors {
            let text = format!("{e} {e:?}");
            assert!(text.contains(dir.to_str().unwrap()), "names the file: {text}");
            assert!(!text.contains(secret), "no file contents: {text}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn server_names_are_dns_names_or_ip_addresses() {
        assert!(check_server_name("pacs.hospital.example").is_ok());
        assert!(check_server_name("127.0.0.1").is_ok());
        assert!(check_server_name("::1").is_ok());
        assert!(check_server_name("not a name").is_err());
        assert!(check_server_name("").is_err());
    }
}
