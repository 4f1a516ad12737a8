//! TLS from the client side. Certificates are made by the test (rcgen, ECDSA P-256): a
//! CA, a server certificate for `localhost` and `127.0.0.1`, client certificates with a
//! chosen CN, written as PEM files for the broker and for independent clients
//! (mosquitto_pub/sub, paho-mqtt, rumqttc). A blocking rustls client over a `TcpStream`
//! gives exact bytes (`RawMqtt`) and carries tungstenite for secure WebSocket.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::WAIT;
use super::broker::TempDir;
use super::raw::RawMqtt;

/// A certificate authority and what it signed, as PEM files in a temporary directory.
pub struct Pki {
    dir: TempDir,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    /// The CA's certificate: what clients trust, and what the broker verifies client
    /// certificates against (`--tls-client-ca`).
    pub ca: PathBuf,
    /// The server's certificate (`localhost`, `127.0.0.1`) and key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A client certificate and its key, as PEM files.
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// A fresh CA named `name` and a server certificate it signed.
    pub fn new(name: &str) -> Pki {
        let dir = TempDir::new(&format!("pki-{name}"));
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).unwrap();
        let ca = dir.file("ca.pem", &issuer.pem());
        let mut pki = Pki {
            dir,
            issuer,
            ca,
            cert: PathBuf::new(),
            key: PathBuf::new(),
        };
        let server = pki.sign(
            "server",
            vec!["localhost".into(), "127.0.0.1".into()],
            "localhost",
        );
        (pki.cert, pki.key) = (server.cert, server.key);
        pki
    }

    /// A client certificate whose subject CN is `cn`.
    pub fn client(&self, cn: &str) -> ClientCert {
        self.sign(&format!("client-{cn}"), Vec::new(), cn)
    }

    fn sign(&self, file: &str, names: Vec<String>, cn: &str) -> ClientCert {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ClientCert {
            cert: self.dir.file(&format!("{file}.pem"), &cert.pem()),
            key: self.dir.file(&format!("{file}.key"), &key.serialize_pem()),
        }
    }

    /// The broker flags for MQTT over TLS and secure WebSocket on free ports with this
    /// PKI's server certificate.
    pub fn broker_args(&self) -> Vec<String> {
        [
            "--mqtts",
            "127.0.0.1:0",
            "--wss",
            "127.0.0.1:0",
            "--tls-cert",
            path(&self.cert),
            "--tls-key",
            path(&self.key),
        ]
        .map(String::from)
        .to_vec()
    }

    /// A rustls client that trusts this CA, with a client certificate when given, for
    /// the protocol versions given (both when empty).
    pub fn client_config(
        &self,
        cert: Option<&ClientCert>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&self.ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let versions = if versions.is_empty() {
            rustls::DEFAULT_VERSIONS
        } else {
            versions
        };
        let provider = Arc::new(ring_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        let config = match cert {
            Some(c) => {
                let chain = CertificateDer::pem_file_iter(&c.cert)
                    .unwrap()
                    .map(|c| c.unwrap())
                    .collect();
                let key = PrivateKeyDer::from_pem_file(&c.key).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        Arc::new(config)
    }

    /// The CA certificate's PEM text (rumqttc takes it as bytes).
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(&self.ca).unwrap()
    }
}

/// The crypto provider the broker uses, for clients that want the same.
#[allow(deprecated)]
pub fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

pub fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// A blocking TLS connection to the broker.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// Connects to `addr` and completes the TLS handshake (server name `localhost`).
pub fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(WAIT))?;
    tcp.set_write_timeout(Some(WAIT))?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    // TLS 1.3: the server's answer to our certificate (a refusal) comes after our Finished.
    s.flush()?;
    Ok(s)
}

impl RawMqtt for TlsStream {
    const OVER: &'static str = " over TLS";

    fn set_read_wait(&mut self, wait: Duration) {
        self.sock.set_read_timeout(Some(wait)).unwrap();
    }
}
