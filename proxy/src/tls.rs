//! TLS settings made into rustls configurations: towards the nodes (`backend_tls`, a client
//! configuration, used by `transport`) and towards clients (`tls`, a server configuration,
//! used by `listener`). The PEM files are read here, and every error names its field.
//!
//! Both use rustls with the `ring` provider and its safe defaults (TLS 1.2 and 1.3).

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::{BackendTlsConfig, ClientTlsConfig};

/// Why TLS settings could not be used; the text names the field (`backend_tls.ca_file: ...`).
#[derive(Debug, thiserror::Error)]
#[error("{section}.{field}: {reason}")]
pub struct TlsSetupError {
    section: &'static str,
    field: &'static str,
    reason: String,
}

/// What [`client_config`] makes of `backend_tls`.
pub struct ClientSide {
    /// The rustls configuration.
    pub config: Arc<ClientConfig>,
    /// The name every node's certificate is checked against, instead of its host.
    pub server_name: Option<ServerName<'static>>,
    /// SHA-1 of the settings and of every file's contents: the same digest makes the same
    /// connections (rotated files do not).
    pub digest: String,
}

/// The configuration towards the nodes.
///
/// # Errors
/// A file cannot be read or holds no usable PEM item, a certificate is refused, only one of
/// `cert_file` and `key_file` is set, or `server_name` is not a valid name.
pub fn client_config(config: &BackendTlsConfig) -> Result<ClientSide, TlsSetupError> {
    let mut files = Files::new("backend_tls", format!("{config:?}"));
    let roots = match &config.ca_file {
        Some(path) => files.roots("ca_file", path)?,
        None => {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if roots.is_empty() {
                return Err(files.fail(
                    "ca_file",
                    "not set, and the system has no CA certificates (install ca-certificates or set ca_file)",
                ));
            }
            roots
        }
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| files.fail("enabled", e))?
        .with_root_certificates(roots);
    let client = match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => {
            let chain = files.certs("cert_file", cert)?;
            let key = files.key("key_file", key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| files.fail("key_file", e))?
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => return Err(files.fail("key_file", "cert_file is set: give its key too")),
        (None, Some(_)) => {
            return Err(files.fail("cert_file", "key_file is set: give its certificate too"))
        }
    };
    let server_name = match &config.server_name {
        Some(name) => Some(
            ServerName::try_from(name.clone())
                .map_err(|e| files.fail("server_name", format!("{name:?}: {e}")))?,
        ),
        None => None,
    };
    Ok(ClientSide {
        config: Arc::new(client),
        server_name,
        digest: files.digest.digest().to_string(),
    })
}

/// The configuration towards clients: the proxy's certificate, and with `ca_file` the CAs a
/// client's certificate must be signed by (clients without one are refused).
///
/// # Errors
/// `cert_file` or `key_file` is not set, a file cannot be read or holds no usable PEM item,
/// or the key does not fit the certificate.
pub fn server_config(config: &ClientTlsConfig) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let mut files = Files::new("tls", String::new());
    let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) else {
        let missing = if config.cert_file.is_none() {
            "cert_file"
        } else {
            "key_file"
        };
        return Err(files.fail(missing, "required to accept TLS clients"));
    };
    let chain = files.certs("cert_file", cert)?;
    let key = files.key("key_file", key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| files.fail("listen", e))?;
    let builder = match &config.ca_file {
        Some(path) => {
            let roots = files.roots("ca_file", path)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| files.fail("ca_file", e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let server = builder
        .with_single_cert(chain, key)
        .map_err(|e| files.fail("key_file", e))?;
    Ok(Arc::new(server))
}

/// The TLS listener's configuration in force; a reload replaces it for new clients.
pub struct Acceptor(arc_swap::ArcSwap<tokio_rustls::TlsAcceptor>);

impl Acceptor {
    /// An acceptor with `config`.
    pub fn new(config: Arc<ServerConfig>) -> Arc<Acceptor> {
        Arc::new(Acceptor(arc_swap::ArcSwap::from_pointee(config.into())))
    }

    /// The configuration for the next client.
    pub fn current(&self) -> Arc<tokio_rustls::TlsAcceptor> {
        self.0.load_full()
    }

    /// Uses `config` from the next client on.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        self.0.store(Arc::new(config.into()));
    }
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Acceptor")
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the PEM files of one section, hashing what it reads.
struct Files {
    section: &'static str,
    digest: sha1_smol::Sha1,
}

impl Files {
    fn new(section: &'static str, settings: String) -> Files {
        let mut digest = sha1_smol::Sha1::new();
        digest.update(settings.as_bytes());
        Files { section, digest }
    }

    fn fail(&self, field: &'static str, reason: impl std::fmt::Display) -> TlsSetupError {
        TlsSetupError {
            section: self.section,
            field,
            reason: reason.to_string(),
        }
    }

    fn read(&mut self, field: &'static str, path: &Path) -> Result<Vec<u8>, TlsSetupError> {
        let bytes = std::fs::read(path)
            .map_err(|e| self.fail(field, format!("cannot read {}: {e}", path.display())))?;
        self.digest.update(&bytes);
        Ok(bytes)
    }

    /// Every certificate in the file (at least one).
    fn certs(
        &mut self,
        field: &'static str,
        path: &Path,
    ) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
        let pem = self.read(field, path)?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.fail(field, format!("{}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(self.fail(
                field,
                format!("{}: no PEM certificate in it", path.display()),
            ));
        }
        Ok(certs)
    }

    fn key(
        &mut self,
        field: &'static str,
        path: &Path,
    ) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
        let pem = self.read(field, path)?;
        PrivateKeyDer::from_pem_slice(&pem)
            .map_err(|e| self.fail(field, format!("{}: {e}", path.display())))
    }

    fn roots(&mut self, field: &'static str, path: &Path) -> Result<RootCertStore, TlsSetupError> {
        let mut roots = RootCertStore::empty();
        for cert in self.certs(field, path)? {
            roots
                .add(cert)
                .map_err(|e| self.fail(field, format!("{}: {e}", path.display())))?;
        }
        Ok(roots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_name_the_field() {
        let mut config = BackendTlsConfig {
            enabled: true,
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..BackendTlsConfig::default()
        };
        let err = client_config(&config).err().unwrap().to_string();
        assert!(err.starts_with("backend_tls.ca_file: cannot read"), "{err}");

        let dir = std::env::temp_dir().join(format!("slotway-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        config.ca_file = Some(empty.clone());
        let err = client_config(&config).err().unwrap().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");

        let mut server = ClientTlsConfig {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            ..ClientTlsConfig::default()
        };
        let err = server_config(&server).err().unwrap().to_string();
        assert_eq!(err, "tls.cert_file: required to accept TLS clients");
        server.cert_file = Some(empty.clone());
        server.key_file = Some(empty);
        let err = server_config(&server).err().unwrap().to_string();
        assert!(
            err.starts_with("tls.cert_file: ") && err.contains("no PEM certificate"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
