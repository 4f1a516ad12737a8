//! The TLS listeners' settings: the certificate chain, its key and the client CA read
//! from PEM files into one rustls `ServerConfig` (TLS 1.2 and 1.3, the `ring` provider),
//! and read again on SIGHUP. The shards hold it through a `TlsAcceptor`: a reload swaps
//! it whole, so new handshakes use the new certificates while open connections keep
//! theirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ringmq_shard::tls::TlsAcceptor;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ProducesTickets, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};

/// Where the TLS listeners' certificates come from (`--tls-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates client certificates are verified against (PEM); `None`: clients
    /// are not asked for one.
    pub client_ca: Option<PathBuf>,
    /// Whether a client without a certificate is refused (needs `client_ca`).
    pub require_client_cert: bool,
}

/// The TLS settings the shards read, and how to read them again.
pub struct Tls {
    files: TlsFiles,
    pub acceptor: Arc<TlsAcceptor>,
    /// Kept across reloads, so session tickets issued before a reload still resume.
    ticketer: Arc<dyn ProducesTickets>,
}

impl Tls {
    /// Reads the files; an error names the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Tls, String> {
        let ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| format!("cannot set up TLS session tickets: {e}"))?;
        let config = server_config(&files, &ticketer)?;
        Ok(Tls {
            files,
            acceptor: TlsAcceptor::new(config),
            ticketer,
        })
    }

    /// Reads the files again and, if they are good, makes new handshakes use them; if
    /// not, the settings in use stay and the error says why.
    pub fn reload(&self) -> Result<(), String> {
        let config = server_config(&self.files, &self.ticketer)?;
        self.acceptor.replace(config);
        Ok(())
    }
}

/// ring, not aws-lc-rs: it builds with a C compiler alone (what `.ci/run` has), at the
/// cost of no post-quantum key exchange (X25519MLKEM768); the same choice as the webhook
/// client's, so one provider is compiled in. Key exchange prefers X25519, then P-256:
/// ring's own order puts P-384 first, whose arithmetic it does without assembly, and a
/// handshake then costs several times the CPU.
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::kx_group;
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    Arc::new(provider)
}

/// Builds the server settings from the files.
pub fn server_config(
    files: &TlsFiles,
    ticketer: &Arc<dyn ProducesTickets>,
) -> Result<Arc<ServerConfig>, String> {
    let chain = read_certs(&files.cert, "--tls-cert")?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        format!(
            "--tls-key {}: no private key read: {e}",
            files.key.display()
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings: {e}"))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(path, "--tls-client-ca")? {
                roots
                    .add(cert)
                    .map_err(|e| format!("--tls-client-ca {}: {e}", path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = if files.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("--tls-client-ca {}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "--tls-cert {} with --tls-key {}: {e}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    config.ticketer = ticketer.clone();
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file; at least one.
fn read_certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}
