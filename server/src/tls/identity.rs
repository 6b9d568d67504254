//! Who a verified certificate names: its subject's common name is the `x509` identity ACLs
//! grant to (`x509:alice`, as ZooKeeper's X509AuthenticationProvider gives one), its
//! organisation names the institution, and a URI subject alternative name
//! `urn:synod:node:<id>` marks a node's certificate.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The URI SAN prefix of a node certificate; the node id follows it.
pub const NODE_URI_PREFIX: &str = "urn:synod:node:";

/// What a verified certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// The subject's common name (CN): the `x509` identity's id.
    pub name: String,
    /// The subject's organisation (O): the institution, if the certificate names one.
    pub institution: Option<String>,
    /// The node id, if this is a node certificate (a `urn:synod:node:<id>` URI SAN).
    pub node_id: Option<u64>,
    /// The SHA-256 of the certificate (DER), in hex: which certificate it was, for the audit
    /// trail (a CN may be reissued).
    pub fingerprint: String,
}

/// Why a certificate gives no identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Not a DER X.509 certificate (rustls verified it, so this is not expected).
    #[error("certificate does not parse: {0}")]
    Parse(String),
    /// The subject has no common name, or it is not UTF-8.
    #[error("certificate subject has no usable common name (CN)")]
    NoCommonName,
    /// Two node ids, or a node URI whose id is not a number.
    #[error("certificate names node ids ambiguously: {0}")]
    BadNodeUri(String),
}

impl CertIdentity {
    /// Reads the identity of a DER certificate (the leaf of a verified chain).
    pub fn from_der(der: &[u8]) -> Result<CertIdentity, IdentityError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| IdentityError::Parse(e.to_string()))?;
        let subject = cert.subject();
        let name = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .filter(|cn| !cn.is_empty())
            .ok_or(IdentityError::NoCommonName)?
            .to_string();
        let institution = subject
            .iter_organization()
            .next()
            .and_then(|o| o.as_str().ok())
            .map(str::to_string);
        let mut node_id = None;
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for general in &san.value.general_names {
                let GeneralName::URI(uri) = general else {
                    continue;
                };
                let Some(id) = uri.strip_prefix(NODE_URI_PREFIX) else {
                    continue;
                };
                let id: u64 = id
                    .parse()
                    .map_err(|_| IdentityError::BadNodeUri(uri.to_string()))?;
                if node_id.is_some_and(|n| n != id) {
                    return Err(IdentityError::BadNodeUri(uri.to_string()));
                }
                node_id = Some(id);
            }
        }
        use sha2::Digest as _;
        let fingerprint = sha2::Sha256::digest(der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(CertIdentity {
            name,
            institution,
            node_id,
            fingerprint,
        })
    }

    /// The identity of the peer of a server-side TLS session, if it presented a certificate.
    pub fn of_session(
        conn: &rustls::ServerConnection,
    ) -> Option<Result<CertIdentity, IdentityError>> {
        conn.peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| CertIdentity::from_der(leaf.as_ref()))
    }
}
