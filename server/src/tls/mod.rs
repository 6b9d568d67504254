//! TLS on the node's ports: the PEM material a node is given (`--tls-ca`, `--tls-cert`,
//! `--tls-key`), the rustls server configuration built from it (TLS 1.3 only, client
//! certificates verified against the CA) and kept re-readable ([`ServerTls`], reloaded on
//! SIGHUP so certificates rotate without a restart); in [`identity`], what a verified
//! certificate says about who is on the other end; in [`stream`], the accepted connection and
//! its handshake. Issuing certificates is [`certs`] (`synod certs`).

pub mod certs;
pub mod identity;
pub mod stream;

use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use serde::Deserialize;
use synod_client::tls::{load_certs, load_key, load_roots, provider, tls13_only, TlsError};
use tokio_rustls::TlsAcceptor;

use crate::error::ServerError;

/// The PEM files of one TLS identity and the CA it trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA bundle: the certificates of connecting clients are verified against it.
    pub ca: PathBuf,
    /// This node's certificate chain (leaf first).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// Whether a client must present a certificate on the secure client port.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuth {
    /// A client without a certificate signed by the CA is refused during the handshake.
    #[default]
    Required,
    /// A client may connect without a certificate (it then has no `x509` identity and
    /// authenticates with `addauth digest`, if at all); a certificate it does present must be
    /// valid.
    Optional,
}

/// The rustls configuration of the secure client port.
pub fn server_config(
    files: &TlsFiles,
    client_auth: ClientAuth,
) -> Result<Arc<ServerConfig>, ServerError> {
    let roots = Arc::new(load_roots(&files.ca)?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
    let verifier = match client_auth {
        ClientAuth::Required => verifier,
        ClientAuth::Optional => verifier.allow_unauthenticated(),
    }
    .build()
    .map_err(|e| TlsError::Rejected {
        context: format!("client verifier for {}", files.ca.display()),
        detail: e.to_string(),
    })?;
    let config = tls13_only(ServerConfig::builder_with_provider(provider()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&files.cert)?, load_key(&files.key)?)
        .map_err(|e| TlsError::Rejected {
            context: format!("{} with {}", files.cert.display(), files.key.display()),
            detail: e.to_string(),
        })?;
    Ok(Arc::new(config))
}

/// A port's server TLS: the files it was read from and the configuration currently in force,
/// re-read by [`ServerTls::reload`]. A connection keeps the configuration it was accepted with.
pub struct ServerTls {
    /// Where the material is read from (again on every reload).
    files: TlsFiles,
    /// Whether clients must present a certificate.
    client_auth: ClientAuth,
    /// The acceptor new connections use.
    current: RwLock<TlsAcceptor>,
}

impl ServerTls {
    /// Reads the files; an error names the file that is unusable.
    pub fn load(files: &TlsFiles, client_auth: ClientAuth) -> Result<Arc<ServerTls>, ServerError> {
        let acceptor = TlsAcceptor::from(server_config(files, client_auth)?);
        Ok(Arc::new(ServerTls {
            files: files.clone(),
            client_auth,
            current: RwLock::new(acceptor),
        }))
    }

    /// The acceptor for the next connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the files; on an error the configuration in force stays (and the error says
    /// which file is at fault).
    pub fn reload(&self) -> Result<(), ServerError> {
        let acceptor = TlsAcceptor::from(server_config(&self.files, self.client_auth)?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = acceptor;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::certs::{create_ca, issue, Subject, Validity};
    use std::path::Path;

    #[test]
    fn unusable_material_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = create_ca("test CA", Validity::days(1)).expect("CA");
        let node = |id| Subject::Node {
            id,
            hosts: vec!["127.0.0.1".into()],
        };
        let (ca_crt, _) = ca.write(dir.path(), "ca").expect("write");
        let (n1_crt, n1_key) = issue(&ca, &node(1), Validity::days(1))
            .expect("node 1")
            .write(dir.path(), "node1")
            .expect("write");
        let (_, n2_key) = issue(&ca, &node(2), Validity::days(1))
            .expect("node 2")
            .write(dir.path(), "node2")
            .expect("write");
        let files = |cert: &Path, key: &Path| TlsFiles {
            ca: ca_crt.clone(),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        };
        assert!(server_config(&files(&n1_crt, &n1_key), ClientAuth::Required).is_ok());
        // Node 1's certificate with node 2's key.
        let e = server_config(&files(&n1_crt, &n2_key), ClientAuth::Required)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("node1.crt"), "{e}");
        // A missing file, and a key file given as the certificate.
        let missing = dir.path().join("nope.crt");
        let e = server_config(&files(&missing, &n1_key), ClientAuth::Optional)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("nope.crt"), "{e}");
        let e = server_config(&files(&n1_key, &n1_key), ClientAuth::Optional)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("no certificate"), "{e}");
    }
}
