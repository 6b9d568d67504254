//! Issuing certificates for people who have never made one (`synod certs`, with rcgen): a CA,
//! node certificates (naming the node id and the hosts the node is reached at) and client
//! certificates (naming a person or service and its institution). Keys are ECDSA P-256. Keys are
//! written readable by their owner only, and nothing is ever overwritten.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::error::ServerError;
use crate::tls::identity::NODE_URI_PREFIX;

/// A certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Not before this time.
    pub not_before: OffsetDateTime,
    /// Not after this time.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (clocks of different machines differ) for `days` days.
    pub fn days(days: u32) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(i64::from(days)),
        }
    }
}

/// Who a certificate is for.
#[derive(Debug, Clone)]
pub enum Subject {
    /// A node: CN `node-<id>`, a `urn:synod:node:<id>` URI SAN, and a DNS or IP SAN per host;
    /// usable as a server (its ports) and as a client (dialling its peers).
    Node {
        /// The node id.
        id: u64,
        /// Host names and IP addresses it is reached at.
        hosts: Vec<String>,
    },
    /// A client: CN `name` (its `x509` identity), O `institution`; usable as a client only.
    Client {
        /// Person or service name.
        name: String,
        /// The institution it belongs to.
        institution: Option<String>,
    },
}

fn ca_params(name: &str, validity: Validity) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params
}

/// A new self-signed CA.
pub fn create_ca(name: &str, validity: Validity) -> Result<Issued, ServerError> {
    let key = KeyPair::generate()?;
    let cert = ca_params(name, validity).self_signed(&key)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A certificate for `subject`, signed by `ca`.
pub fn issue(ca: &Issued, subject: &Subject, validity: Validity) -> Result<Issued, ServerError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    match subject {
        Subject::Node { id, hosts } => {
            dn.push(DnType::CommonName, format!("node-{id}"));
            params
                .subject_alt_names
                .push(SanType::URI(format!("{NODE_URI_PREFIX}{id}").try_into()?));
            for host in hosts {
                params.subject_alt_names.push(match host.parse::<IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(host.as_str().try_into()?),
                });
            }
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
        }
        Subject::Client { name, institution } => {
            dn.push(DnType::CommonName, name.as_str());
            if let Some(o) = institution {
                dn.push(DnType::OrganizationName, o.as_str());
            }
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
    }
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

impl Issued {
    /// Reads a certificate and key written by [`Issued::write`].
    pub fn read(cert: &Path, key: &Path) -> Result<Issued, ServerError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|e| ServerError::Config(format!("cannot read {}: {e}", p.display())))
        };
        Ok(Issued {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }

    /// Writes `<dir>/<stem>.crt` (mode 0644) and `<dir>/<stem>.key` (mode 0600); refuses to
    /// overwrite either. Returns their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), ServerError> {
        std::fs::create_dir_all(dir)?;
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        for p in [&cert, &key] {
            if p.exists() {
                return Err(ServerError::Config(format!(
                    "{} exists: not overwriting it",
                    p.display()
                )));
            }
        }
        write_new(&key, self.key_pem.as_bytes(), 0o600)?;
        write_new(&cert, self.cert_pem.as_bytes(), 0o644)?;
        Ok((cert, key))
    }
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ServerError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| ServerError::Config(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// `synod certs ...`: the command line.
#[derive(Debug, Parser)]
#[command(
    name = "synod certs",
    about = "Create a CA and the node and client certificates signed by it"
)]
pub struct CertsArgs {
    /// Directory of the CA (`ca.crt`, `ca.key`) and of the certificates written.
    #[arg(long, default_value = "certs")]
    pub dir: PathBuf,
    /// Days the certificate is valid.
    #[arg(long)]
    pub days: Option<u32>,
    #[command(subcommand)]
    pub command: CertsCommand,
}

/// What `synod certs` creates.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// A new CA: `ca.crt` (give it to every node and client) and `ca.key` (keep it safe).
    CreateCa {
        /// The CA's common name.
        #[arg(long, default_value = "synod CA")]
        name: String,
    },
    /// A node certificate `node<ID>.{crt,key}`, naming its id and the hosts it is reached at.
    CreateNode {
        /// The node id.
        #[arg(long)]
        id: u64,
        /// A host name or IP address the node is reached at (repeat for several).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
    },
    /// A client certificate `<NAME>.{crt,key}`: its holder's identity is `x509:<NAME>`.
    CreateClient {
        /// The identity (certificate common name).
        #[arg(long)]
        name: String,
        /// The institution (certificate organisation).
        #[arg(long)]
        institution: Option<String>,
    },
}

/// Runs `synod certs`; returns what it wrote, for the operator.
pub fn run(args: &CertsArgs) -> Result<Vec<PathBuf>, ServerError> {
    let ca_cert = args.dir.join("ca.crt");
    let ca_key = args.dir.join("ca.key");
    let (issued, stem) = match &args.command {
        CertsCommand::CreateCa { name } => (
            create_ca(name, Validity::days(args.days.unwrap_or(3650)))?,
            "ca".to_string(),
        ),
        CertsCommand::CreateNode { id, hosts } => (
            issue(
                &Issued::read(&ca_cert, &ca_key)?,
                &Subject::Node {
                    id: *id,
                    hosts: hosts.clone(),
                },
                Validity::days(args.days.unwrap_or(825)),
            )?,
            format!("node{id}"),
        ),
        CertsCommand::CreateClient { name, institution } => {
            if name.is_empty() || name.contains(['/', '\0']) || name.starts_with('.') {
                return Err(ServerError::Config(format!(
                    "--name {name:?}: not usable as a file name"
                )));
            }
            (
                issue(
                    &Issued::read(&ca_cert, &ca_key)?,
                    &Subject::Client {
                        name: name.clone(),
                        institution: institution.clone(),
                    },
                    Validity::days(args.days.unwrap_or(825)),
                )?,
                name.clone(),
            )
        }
    };
    let (cert, key) = issued.write(&args.dir, &stem)?;
    Ok(vec![cert, key])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::identity::CertIdentity;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("issued PEM parses")
    }

    #[test]
    fn issued_certificates_carry_the_identities_they_are_read_back_as() {
        let ca = create_ca("test CA", Validity::days(1)).expect("CA");
        let node = issue(
            &ca,
            &Subject::Node {
                id: 3,
                hosts: vec!["127.0.0.1".into(), "zk3.lab.example".into()],
            },
            Validity::days(1),
        )
        .expect("node certificate");
        let node_der = der(&node.cert_pem);
        let id = CertIdentity::from_der(node_der.as_ref()).expect("node identity");
        assert_eq!(
            (id.name.as_str(), id.institution, id.node_id),
            ("node-3", None, Some(3))
        );
        assert_eq!(id.fingerprint.len(), 64, "a SHA-256 in hex");
        let alice = issue(
            &ca,
            &Subject::Client {
                name: "alice".into(),
                institution: Some("lab-3".into()),
            },
            Validity::days(1),
        )
        .expect("client certificate");
        let alice = CertIdentity::from_der(der(&alice.cert_pem).as_ref()).expect("identity");
        assert_eq!(
            (
                alice.name.as_str(),
                alice.institution.as_deref(),
                alice.node_id
            ),
            ("alice", Some("lab-3"), None)
        );
        assert_ne!(alice.fingerprint, id.fingerprint);
    }

    #[test]
    fn files_are_written_once_with_private_keys_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = create_ca("test CA", Validity::days(1)).expect("CA");
        let (cert, key) = ca.write(dir.path(), "ca").expect("write");
        let mode = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0)
        };
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&cert), 0o644);
        assert!(ca.write(dir.path(), "ca").is_err(), "never overwrites");
        let back = Issued::read(&cert, &key).expect("read back");
        assert_eq!(back.cert_pem, ca.cert_pem);
    }
}
