//! The tests' admin-port client ([`AdminHttp`], on ureq): plaintext HTTP to `--insecure` nodes,
//! HTTPS to secure ones — trusting the ensemble's CA and presenting a client certificate (the
//! ensemble's operator, or any other a test wants to try).

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};

/// Largest reply body read (a snapshot download is the largest the tests ask for).
const MAX_BODY: u64 = 1 << 30;

/// An admin-port client. Cheap to clone.
#[derive(Clone)]
pub struct AdminHttp {
    /// The connection pool and its TLS configuration.
    agent: ureq::Agent,
    /// `https` or `http`.
    scheme: &'static str,
}

impl std::fmt::Debug for AdminHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminHttp")
            .field("scheme", &self.scheme)
            .finish()
    }
}

/// Reads a PEM file.
fn read(path: &Path) -> io::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn invalid(path: &Path, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {e}", path.display()),
    )
}

impl AdminHttp {
    /// Plaintext HTTP (`--insecure` nodes).
    pub fn plain() -> AdminHttp {
        AdminHttp {
            agent: Self::agent(TlsConfig::default()),
            scheme: "http",
        }
    }

    /// HTTPS trusting `ca`, presenting `identity` (certificate and key files) if given.
    pub fn https(ca: &Path, identity: Option<(&Path, &Path)>) -> io::Result<AdminHttp> {
        let ca_pem = read(ca)?;
        let roots = ureq::tls::parse_pem(&ca_pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                Ok(_) => None,
                Err(e) => Some(Err(invalid(ca, e))),
            })
            .collect::<io::Result<Vec<Certificate<'static>>>>()?;
        let mut tls = TlsConfig::builder().root_certs(RootCerts::Specific(Arc::new(roots)));
        if let Some((cert, key)) = identity {
            let chain = Certificate::from_pem(&read(cert)?).map_err(|e| invalid(cert, e))?;
            let key = PrivateKey::from_pem(&read(key)?).map_err(|e| invalid(key, e))?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&[chain], key)));
        }
        Ok(AdminHttp {
            agent: Self::agent(tls.build()),
            scheme: "https",
        })
    }

    fn agent(tls: TlsConfig) -> ureq::Agent {
        ureq::Agent::config_builder()
            .tls_config(tls)
            // Statuses are results here (401, 403, 503 are what some tests expect).
            .http_status_as_error(false)
            .proxy(None)
            .build()
            .into()
    }

    /// One request to `addr` with an optional JSON body, bounded by `timeout` as a whole:
    /// (status, body).
    pub fn request(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: Option<&str>,
        timeout: Duration,
    ) -> io::Result<(u16, Vec<u8>)> {
        let url = format!("{}://{addr}{path}", self.scheme);
        let method: ureq::http::Method = method
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{method}: {e}")))?;
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("content-type", "application/json")
            .body(body.unwrap_or_default().to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut response = ureq::RequestExt::with_agent(request, &self.agent)
            .configure()
            .timeout_global(Some(timeout))
            .build()
            .run()
            .map_err(|e| io::Error::other(format!("{url}: {e}")))?;
        let status = response.status().as_u16();
        let data = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| io::Error::other(format!("{url}: reading the body: {e}")))?;
        Ok((status, data))
    }

    /// `GET path`: the body of a `200` answer; any other status is an error.
    pub fn get(&self, addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<String> {
        let (status, body) = self.request(addr, "GET", path, None, timeout)?;
        let body = String::from_utf8_lossy(&body).into_owned();
        if status != 200 {
            return Err(io::Error::other(format!(
                "GET {path} on {addr}: {status} {body}"
            )));
        }
        Ok(body)
    }
}
