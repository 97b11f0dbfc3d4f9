//! TLS on the remoting port (rocketmq-remoting.md section 9.2): rustls with the ring provider.
//!
//! RocketMQ serves TLS and plaintext on the same port and its Java client, by default, does not
//! verify the server certificate (`tls.client.authServer=false`, `tls.test.mode.enable=true`).
//! [`TlsConfig::insecure_skip_verify`] therefore defaults to `true`; set it to `false` to verify
//! against `ca_file` (or the webpki roots when no file is given).
//!
//! Invariants: the frame format inside TLS is unchanged, so the connection code is the same for
//! both transports; certificate files are read each time a connector is built, so a rotated
//! client certificate takes effect on the next reconnect.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio_rustls::TlsConnector;

use super::ClientError;

/// How to open TLS connections to name servers and brokers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file with the CA certificates that sign the server certificates. Without it the
    /// public webpki roots are used (only relevant when verifying).
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to servers that ask for a client certificate.
    pub client_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// Accept any server certificate (the Java client's default behaviour). The handshake
    /// signatures are still checked, so the session is encrypted, but not authenticated.
    pub insecure_skip_verify: bool,
    /// Name to verify the server certificate against (and to send as SNI); defaults to the
    /// host part of the address being connected to.
    pub server_name: Option<String>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            ca_file: None,
            client_cert: None,
            client_key: None,
            insecure_skip_verify: true,
            server_name: None,
        }
    }
}

/// The setting of a [`TlsConfig`] that [`TlsConfig::check`] found unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsSetting {
    /// [`TlsConfig::ca_file`].
    CaFile,
    /// [`TlsConfig::client_cert`].
    ClientCert,
    /// [`TlsConfig::client_key`] (also when it is not the key of the certificate).
    ClientKey,
    /// The `server_name` field of [`TlsConfig`].
    ServerName,
}

impl TlsConfig {
    /// Builds a connector from this configuration, reading the certificate and key files.
    ///
    /// # Errors
    /// [`ClientError::Tls`] when a file cannot be read or parsed, when only one of
    /// `client_cert` and `client_key` is set, or when rustls rejects the combination.
    pub fn connector(&self) -> Result<TlsConnector, ClientError> {
        self.build(false).map_err(|(_, e)| e)
    }

    /// Checks this configuration before anything connects: builds a connector as
    /// [`Self::connector`] does, reading the CA file even when verification is off (so a broken
    /// file is reported at startup, not when someone turns verification on), and checks
    /// `server_name`.
    ///
    /// # Errors
    /// The setting at fault (`None` for a failure no setting causes) and the
    /// [`ClientError::Tls`] describing it.
    pub fn check(&self) -> Result<(), (Option<TlsSetting>, ClientError)> {
        if let Some(name) = &self.server_name {
            parse_server_name(name).map_err(|e| (Some(TlsSetting::ServerName), e))?;
        }
        self.build(true).map(drop)
    }

    /// The connector, each failure tagged with the setting it is about; `always_read_ca` reads
    /// and checks the CA file also when verification is off (and the file is not used).
    fn build(
        &self,
        always_read_ca: bool,
    ) -> Result<TlsConnector, (Option<TlsSetting>, ClientError)> {
        let ca = |e| (Some(TlsSetting::CaFile), e);
        let provider = Arc::new(crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| (None, tls_error("protocol versions", None, &e)))?;
        let mut roots = RootCertStore::empty();
        match &self.ca_file {
            Some(path) if always_read_ca || !self.insecure_skip_verify => {
                for cert in read_certs(path, "CA file").map_err(ca)? {
                    roots
                        .add(cert)
                        .map_err(|e| ca(tls_error("CA file", Some(path), &e)))?;
                }
            }
            None if !self.insecure_skip_verify => {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            _ => {}
        }
        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Self::accept_any_server_cert(provider))
        } else {
            builder.with_root_certificates(roots)
        };
        let config = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert, "client certificate")
                    .map_err(|e| (Some(TlsSetting::ClientCert), e))?;
                let key_der =
                    read_key(key, "client key").map_err(|e| (Some(TlsSetting::ClientKey), e))?;
                // Both files parse, so what rustls rejects is the pair: the key is not the
                // certificate's, or of a kind it cannot sign with.
                builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                    (
                        Some(TlsSetting::ClientKey),
                        tls_error("client key", Some(key), &e),
                    )
                })?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(path), None) | (None, Some(path)) => {
                let missing = if self.client_key.is_none() {
                    TlsSetting::ClientKey
                } else {
                    TlsSetting::ClientCert
                };
                return Err((
                    Some(missing),
                    ClientError::Tls {
                        what: "client certificate",
                        path: Some(path.clone()),
                        reason: "client_cert and client_key must be set together".to_owned(),
                    },
                ));
            }
        };
        Ok(TlsConnector::from(Arc::new(config)))
    }

    /// A verifier that accepts any server certificate but still checks the handshake
    /// signatures with `provider`. Shared with the webhook client (its `insecure_skip_verify`),
    /// so there is one such verifier in the crate.
    pub(crate) fn accept_any_server_cert(
        provider: Arc<CryptoProvider>,
    ) -> Arc<dyn ServerCertVerifier> {
        Arc::new(AcceptAnyServerCert { provider })
    }

    /// The name to present for `addr` (`host:port`).
    pub(crate) fn server_name(&self, addr: &str) -> Result<ServerName<'static>, ClientError> {
        let host = match &self.server_name {
            Some(name) => name.as_str(),
            None => host_of(addr),
        };
        parse_server_name(host)
    }
}

fn parse_server_name(host: &str) -> Result<ServerName<'static>, ClientError> {
    ServerName::try_from(host.to_owned()).map_err(|e| ClientError::Tls {
        what: "server name",
        path: None,
        reason: format!("`{host}`: {e}"),
    })
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn tls_error(what: &'static str, path: Option<&Path>, e: &dyn std::fmt::Display) -> ClientError {
    ClientError::Tls {
        what,
        path: path.map(Path::to_path_buf),
        reason: e.to_string(),
    }
}

fn open(path: &Path, what: &'static str) -> Result<BufReader<File>, ClientError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|e| tls_error(what, Some(path), &e))
}

/// Every certificate of the PEM file at `path`, at least one; `what` names the file in errors.
/// Shared with the webhook client's TLS settings.
pub(crate) fn read_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let mut reader = open(path, what)?;
    let certs = rustls_pemfile::certs(&mut reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(what, Some(path), &e))?;
    if certs.is_empty() {
        return Err(tls_error(what, Some(path), &"no PEM certificate found"));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of the PEM file at `path`; `what` names the
/// file in errors. Shared with the webhook client's TLS settings.
pub(crate) fn read_key(
    path: &Path,
    what: &'static str,
) -> Result<PrivateKeyDer<'static>, ClientError> {
    let mut reader = open(path, what)?;
    rustls_pemfile::private_key(&mut reader)
        .map_err(|e| tls_error(what, Some(path), &e))?
        .ok_or_else(|| tls_error(what, Some(path), &"no PEM private key found"))
}

/// The Java client's default: any server certificate is accepted.
#[derive(Debug)]
struct AcceptAnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_builds() {
        let config = TlsConfig::default();
        assert!(config.insecure_skip_verify);
        assert!(config.connector().is_ok());
        let verifying = TlsConfig {
            insecure_skip_verify: false,
            ..TlsConfig::default()
        };
        assert!(verifying.connector().is_ok());
    }

    #[test]
    fn missing_files_are_reported_with_their_path() {
        let config = TlsConfig {
            ca_file: Some(PathBuf::from("/nonexistent/ca.pem")),
            insecure_skip_verify: false,
            ..TlsConfig::default()
        };
        match config.connector().map(|_| ()) {
            Err(ClientError::Tls {
                what: "CA file",
                path: Some(p),
                ..
            }) => assert_eq!(p, PathBuf::from("/nonexistent/ca.pem")),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn empty_pem_and_half_client_auth_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, b"not a pem").expect("write");
        let config = TlsConfig {
            ca_file: Some(empty.clone()),
            insecure_skip_verify: false,
            ..TlsConfig::default()
        };
        assert!(matches!(
            config.connector(),
            Err(ClientError::Tls {
                what: "CA file",
                ..
            })
        ));
        let half = TlsConfig {
            client_cert: Some(empty),
            ..TlsConfig::default()
        };
        assert!(matches!(
            half.connector(),
            Err(ClientError::Tls {
                what: "client certificate",
                ..
            })
        ));
    }

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/client/testdata")
            .join(name)
    }

    #[test]
    fn check_names_the_setting_at_fault() {
        let dir = tempfile::tempdir().expect("tempdir");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, b"not a pem").expect("write");
        let setting = |config: TlsConfig| config.check().err().map(|(setting, _)| setting);
        let good = TlsConfig {
            ca_file: Some(testdata("ca.pem")),
            client_cert: Some(testdata("leaf.pem")),
            client_key: Some(testdata("leaf.key")),
            insecure_skip_verify: false,
            server_name: Some("broker.example".to_owned()),
        };
        assert!(good.check().is_ok());
        // Read although verification is off and the connector does not use it.
        let ca = TlsConfig {
            ca_file: Some(garbage.clone()),
            insecure_skip_verify: true,
            ..good.clone()
        };
        assert!(ca.connector().is_ok());
        assert_eq!(setting(ca), Some(Some(TlsSetting::CaFile)));
        let cert = TlsConfig {
            client_cert: Some(garbage.clone()),
            ..good.clone()
        };
        assert_eq!(setting(cert), Some(Some(TlsSetting::ClientCert)));
        let key = TlsConfig {
            client_key: Some(garbage),
            ..good.clone()
        };
        assert_eq!(setting(key), Some(Some(TlsSetting::ClientKey)));
        // Both parse, but the key is not the certificate's.
        let pair = TlsConfig {
            client_cert: Some(testdata("ca.pem")),
            ..good.clone()
        };
        assert_eq!(setting(pair), Some(Some(TlsSetting::ClientKey)));
        let name = TlsConfig {
            server_name: Some("not a host name!".to_owned()),
            ..good
        };
        assert_eq!(setting(name), Some(Some(TlsSetting::ServerName)));
    }

    #[test]
    fn server_name_defaults_to_host() {
        let config = TlsConfig::default();
        assert_eq!(
            config.server_name("broker-1.example:10911").expect("name"),
            ServerName::try_from("broker-1.example").expect("literal")
        );
        assert!(matches!(
            config.server_name("127.0.0.1:10911").expect("ip"),
            ServerName::IpAddress(_)
        ));
        assert_eq!(host_of("[::1]:10911"), "::1");
    }
}
