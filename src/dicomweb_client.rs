//! HTTP clients for the DICOMweb peers vcnode calls: STOW-RS destinations (`[[destinations]]`
//! of kind dicomweb, [`crate::export`]) and QIDO-RS/WADO-RS sources (`[[sources]]`,
//! [`crate::pull`]). Both are configured alike (url, tls, auth) and get their client here.

use std::time::Duration;

use crate::config::{AuthConfig, TlsConfig};

/// What a client is built from: one configured DICOMweb peer.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    /// "destination" or "source": how errors name it.
    pub role: &'static str,
    pub name: &'a str,
    pub url: &'a str,
    pub tls: Option<&'a TlsConfig>,
}

/// Why a peer's HTTP client cannot be built (its `tls.ca_file`, mostly).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{role} {name:?}: cannot read tls.ca_file {file}: {source}")]
    ReadCa {
        role: &'static str,
        name: String,
        file: String,
        source: std::io::Error,
    },
    #[error("{role} {name:?}: tls.ca_file {file} is not PEM: {source}")]
    NotPem {
        role: &'static str,
        name: String,
        file: String,
        source: reqwest::Error,
    },
    #[error("{role} {name:?}: tls.ca_file {file} holds no certificate")]
    NoCertificate {
        role: &'static str,
        name: String,
        file: String,
    },
    #[error("{role} {name:?}: cannot build its HTTP client: {source}")]
    Build {
        role: &'static str,
        name: String,
        source: reqwest::Error,
    },
}

/// The HTTP client of one peer. TLS is rustls with the system's CA store, Mozilla's roots and
/// the peer's `tls.ca_file`; an https:// peer is never called over plain http; no redirects
/// are followed, so credentials go only to the configured URL. `connect_timeout` bounds
/// connecting; each request sets its own overall limit.
pub fn client(peer: Peer<'_>, connect_timeout: Duration) -> Result<reqwest::Client, ClientError> {
    builder(peer, connect_timeout)?
        .build()
        .map_err(|source| ClientError::Build {
            role: peer.role,
            name: peer.name.to_string(),
            source,
        })
}

/// As [`client`], for a caller that sets more (e.g. a read timeout) before building.
pub fn builder(peer: Peer<'_>, connect_timeout: Duration) -> Result<reqwest::ClientBuilder, ClientError> {
    let https = peer.url.starts_with("https://");
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .https_only(https)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout);
    if let Some(ca) = peer.tls.and_then(|t| t.ca_file.as_ref()) {
        let file = ca.display().to_string();
        let pem = std::fs::read(ca).map_err(|source| ClientError::ReadCa {
            role: peer.role,
            name: peer.name.to_string(),
            file: file.clone(),
            source,
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| ClientError::NotPem {
            role: peer.role,
            name: peer.name.to_string(),
            file: file.clone(),
            source,
        })?;
        if certs.is_empty() {
            return Err(ClientError::NoCertificate {
                role: peer.role,
                name: peer.name.to_string(),
                file,
            });
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}

/// `req` with the peer's credentials (bearer token or basic `user:password`), if any.
pub fn authorized(req: reqwest::RequestBuilder, auth: Option<&AuthConfig>) -> reqwest::RequestBuilder {
    match auth {
        Some(a) if a.bearer.is_some() => req.bearer_auth(a.bearer.as_deref().unwrap_or("")),
        Some(a) => match a.basic.as_deref().and_then(|b| b.split_once(':')) {
            Some((user, pass)) => req.basic_auth(user, Some(pass)),
            None => req,
        },
        None => req,
    }
}

/// An error with its causes: reqwest's own text ("error sending request") hides the one an
/// operator needs (refused connection, unknown certificate issuer, ...).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}
