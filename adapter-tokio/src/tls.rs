//! MQTT over TLS: the rustls server configuration of the `[tls]` listener.
//!
//! MQTT 3.1.1 section 5.4.5 recommends TLS; the broker serves TLS 1.2 and 1.3 with rustls and
//! its `ring` provider, passed explicitly so no process-wide default provider is needed.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::TlsConfig;

/// Builds the TLS acceptor from the PEM certificate chain and private key of `config`.
///
/// The key may be PKCS#8, PKCS#1 (RSA) or SEC1 (EC). Errors name `tls.cert` or `tls.key` and
/// the file.
pub fn acceptor(config: &TlsConfig) -> anyhow::Result<TlsAcceptor> {
    acceptor_of("tls", &config.cert, &config.key)
}

/// Builds a TLS acceptor from the PEM certificate chain `cert` and private key `key` of the
/// configuration table `table` (`tls` or `websocket_tls`), which errors name.
pub fn acceptor_of(table: &str, cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let cert_field = format!("{table}.cert");
    let key_field = format!("{table}.key");
    let certs = load_certs_of(&cert_field, cert)?;
    let key_der = load_key(&key_field, key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("tls: the ring provider supports no safe protocol version")?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            anyhow!(
                "{key_field}: {} does not fit the certificate in {} or is unsupported: {e}",
                key.display(),
                cert.display()
            )
        })?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// Reads `path`, naming `field` in the error.
fn read(field: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow!("{field}: cannot read {}: {e}", path.display()))
}

/// The certificates of the PEM file at `path`, naming `field` in errors.
fn load_certs_of(field: &str, path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let bytes = read(field, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| anyhow!("{field}: {}: bad PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(anyhow!(
            "{field}: {}: no CERTIFICATE block found",
            path.display()
        ));
    }
    Ok(certs)
}

/// Builds a TLS client that trusts the CA certificates of the PEM file `ca` (tap mode's
/// connection to the upstream broker). Errors name `upstream.tls.ca` and the file.
pub fn connector(ca: &Path) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs_of("upstream.tls.ca", ca)? {
        roots
            .add(cert)
            .map_err(|e| anyhow!("upstream.tls.ca: {}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("tls: the ring provider supports no safe protocol version")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(client)))
}

/// The first private key of the PEM file at `path`, naming `field` in errors.
fn load_key(field: &str, path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let bytes = read(field, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => anyhow!(
            "{field}: {}: no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block found",
            path.display()
        ),
        e => anyhow!("{field}: {}: bad PEM: {e}", path.display()),
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use rustls_pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "activity-broker-tls-{tag}-{}-{n}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Writes a self-signed `localhost` certificate and its key; returns the config and the
    /// certificate in DER.
    fn self_signed(dir: &Path) -> (TlsConfig, CertificateDer<'static>) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let config = TlsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&config.cert, certified.cert.pem()).unwrap();
        std::fs::write(&config.key, certified.signing_key.serialize_pem()).unwrap();
        (config, certified.cert.der().clone())
    }

    #[tokio::test]
    async fn handshake_over_loopback() {
        let dir = TempDir::new("handshake");
        let (config, cert) = self_signed(&dir.0);
        let acceptor = acceptor(&config).unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await.unwrap();
            tls.write_all(&buf).await.unwrap();
            tls.shutdown().await.unwrap();
        });

        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(b"MQTT").await.unwrap();
        let mut echoed = Vec::new();
        tls.read_to_end(&mut echoed).await.unwrap();
        assert_eq!(echoed, b"MQTT");
        server.await.unwrap();
    }

    /// The message of the error `config` is refused with.
    fn error_of(config: &TlsConfig) -> String {
        match acceptor(config) {
            Ok(_) => panic!("{config:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn errors_name_the_field() {
        let dir = TempDir::new("errors");
        let (config, _) = self_signed(&dir.0);

        let missing = TlsConfig {
            cert: dir.0.join("absent.pem"),
            ..config.clone()
        };
        let message = error_of(&missing);
        assert!(message.starts_with("tls.cert: cannot read "), "{message}");

        // The certificate file holds no key.
        let no_key = TlsConfig {
            key: config.cert.clone(),
            ..config.clone()
        };
        let message = error_of(&no_key);
        assert!(
            message.starts_with("tls.key: ") && message.contains("no PRIVATE KEY"),
            "{message}"
        );

        // The key file holds no certificate.
        let no_cert = TlsConfig {
            cert: config.key.clone(),
            ..config.clone()
        };
        let message = error_of(&no_cert);
        assert!(
            message.starts_with("tls.cert: ") && message.contains("no CERTIFICATE"),
            "{message}"
        );

        // A key that does not belong to the certificate.
        let other = rcgen::KeyPair::generate().unwrap();
        let other_key = dir.0.join("other.pem");
        std::fs::write(&other_key, other.serialize_pem()).unwrap();
        let mismatched = TlsConfig {
            key: other_key,
            ..config
        };
        let message = error_of(&mismatched);
        assert!(message.starts_with("tls.key: "), "{message}");
    }
}
