//! TLS material and configurations: the PEM files a client (or a node) is given — a CA bundle,
//! a certificate chain and its private key — read into rustls types, and the client-side rustls
//! configuration built from them. TLS 1.3 only, with the `ring` provider. synod's server loads
//! its listeners' material with the same functions.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Why TLS material could not be loaded or a TLS configuration built. Cloneable and comparable
/// (it is carried inside [`crate::Error`]), so I/O and parse failures keep their kind and text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {path}: {kind}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        kind: std::io::ErrorKind,
    },
    /// A file is not valid PEM, or holds no item of the kind expected.
    #[error("{path}: no {what} in it ({detail})")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was looked for: "certificate" or "private key".
        what: &'static str,
        /// The parser's account.
        detail: String,
    },
    /// rustls refused the material (a CA certificate it cannot use, a key that does not match
    /// its certificate, an unsupported key type).
    #[error("{context}: {detail}")]
    Rejected {
        /// What was being built, e.g. the file whose content was refused.
        context: String,
        /// rustls's account.
        detail: String,
    },
    /// A client certificate was given without its key, or the other way round.
    #[error("a client certificate and its key go together: give both or neither")]
    CertWithoutKey,
    /// The host to verify the server's certificate against is neither a DNS name nor an IP
    /// address.
    #[error("{0:?} is not a valid server name for TLS")]
    ServerName(String),
}

/// The crypto provider every synod TLS configuration uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The only protocol version synod speaks.
pub static PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// Restricts a client or server configuration builder to [`PROTOCOL_VERSIONS`].
pub fn tls13_only<S: rustls::ConfigSide>(
    builder: rustls::ConfigBuilder<S, rustls::WantsVersions>,
) -> Result<rustls::ConfigBuilder<S, rustls::WantsVerifier>, TlsError> {
    builder
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| TlsError::Rejected {
            context: "TLS 1.3".into(),
            detail: e.to_string(),
        })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        path: path.to_path_buf(),
        kind: e.kind(),
    })
}

/// Every certificate in a PEM file, in order (a chain: the leaf first). At least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |detail: String| TlsError::Pem {
        path: path.to_path_buf(),
        what: "certificate",
        detail,
    };
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        what: "private key",
        detail: e.to_string(),
    })
}

/// The trust anchors in a PEM CA bundle.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Rejected {
            context: format!("CA certificate in {}", path.display()),
            detail: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// A client's TLS settings: whom to trust, and optionally the certificate it proves its own
/// identity with (the server's `x509` identity for it: its subject CN).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM bundle of the CA(s) whose server certificates are trusted.
    pub ca: PathBuf,
    /// PEM certificate chain to present (mutual TLS).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
}

impl TlsOptions {
    /// Trust `ca`; present no certificate.
    pub fn new(ca: impl Into<PathBuf>) -> Self {
        TlsOptions {
            ca: ca.into(),
            cert: None,
            key: None,
        }
    }

    /// Present `cert` (signed by a CA the server trusts) with its `key`.
    pub fn identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert = Some(cert.into());
        self.key = Some(key.into());
        self
    }

    /// Reads the files and builds the connector.
    pub fn connector(&self) -> Result<TlsConnector, TlsError> {
        Ok(TlsConnector::new(self.client_config()?))
    }

    /// Reads the files and builds the rustls client configuration (for other protocols over
    /// TLS: synodctl's HTTPS to the admin port).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let roots = load_roots(&self.ca)?;
        let builder = tls13_only(ClientConfig::builder_with_provider(provider()))?
            .with_root_certificates(roots);
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
                .map_err(|e| TlsError::Rejected {
                    context: format!("{} with {}", cert.display(), key.display()),
                    detail: e.to_string(),
                })?,
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(TlsError::CertWithoutKey),
        };
        Ok(Arc::new(config))
    }
}

impl TlsOptions {
    /// The certificates of the local cluster `scripts/cluster.sh` made
    /// (`$SYNOD_CLUSTER_DIR/certs`, default `target/synod-cluster/certs` below the working
    /// directory: its CA and the `admin` identity), if they exist.
    pub fn local_cluster() -> Option<TlsOptions> {
        let certs = std::env::var_os("SYNOD_CLUSTER_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target/synod-cluster"))
            .join("certs");
        let (ca, cert, key) = (
            certs.join("ca.crt"),
            certs.join("admin.crt"),
            certs.join("admin.key"),
        );
        (ca.is_file() && cert.is_file() && key.is_file())
            .then(|| TlsOptions::new(ca).identity(cert, key))
    }

    /// TLS as the environment asks, the way synodctl reads it: none if `SYNOD_INSECURE` is set
    /// (to anything but empty, `0` or `false`); the `SYNOD_TLS_CA` / `SYNOD_TLS_CERT` /
    /// `SYNOD_TLS_KEY` files if `SYNOD_TLS_CA` is set; else [`TlsOptions::local_cluster`].
    pub fn from_env() -> Option<TlsOptions> {
        let set = |v: &str| std::env::var_os(v).filter(|x| !x.is_empty());
        if set("SYNOD_INSECURE").is_some_and(|v| v != "0" && v != "false") {
            return None;
        }
        match set("SYNOD_TLS_CA") {
            Some(ca) => {
                let tls = TlsOptions::new(ca);
                Some(match (set("SYNOD_TLS_CERT"), set("SYNOD_TLS_KEY")) {
                    (Some(cert), Some(key)) => tls.identity(cert, key),
                    _ => tls,
                })
            }
            None => TlsOptions::local_cluster(),
        }
    }
}

/// Opens TLS sessions over TCP streams with one client configuration (cheap to clone).
#[derive(Clone)]
pub struct TlsConnector {
    /// The configuration every connection shares (its session cache too).
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector").finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// Wraps a rustls configuration built elsewhere (synod's peer links build their own).
    pub fn new(config: Arc<ClientConfig>) -> Self {
        TlsConnector { config }
    }

    /// The TLS handshake over `stream`, verifying the server's certificate against `host` (a
    /// DNS name or an IP address, as the certificate's subject alternative names give it).
    pub async fn connect(
        &self,
        host: &str,
        stream: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let name = ServerName::try_from(host.to_string()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                TlsError::ServerName(host.into()),
            )
        })?;
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await
    }
}
