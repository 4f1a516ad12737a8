//! TLS, the stage below a connection's others: TCP → TLS → [WebSocket] → service.
//!
//! rustls' unbuffered API, driven from the runtime's own buffers on the shard's thread:
//! nothing blocks and no thread is added. Received records go to rustls straight from the
//! receive buffer ([`Pump::feed`]); only bytes rustls cannot use yet (a record split across
//! receives, or the records of a handshake message not yet whole) are kept, in the
//! connection's `carry`, and only until they are used. What the service writes is staged
//! as plaintext and sealed into records when the connection's send is posted
//! ([`Pump::seal`], from `Io::start_send`), so a turn's writes go out in as few records as
//! they fill. rustls itself holds no buffer between records: an idle connection costs its
//! keys and handshake state, nothing more.
//!
//! [`TlsAcceptor`] holds a listener's `ServerConfig` and hands out sessions; a reload
//! swaps it whole (new handshakes use the new one, open connections keep theirs).
//! [`Pump`] is one connection's TLS, server or client (the swarm in `bench/` drives
//! clients with it), and [`Peer`] what the pump hands its output to.

use std::fmt;
use std::ops::DerefMut;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::pki_types::CertificateDer;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedConnectionCommon,
    UnbufferedStatus, WriteTraffic,
};
use rustls::{CommonState, ServerConfig};

use crate::conn::Transport;

/// The most received bytes one connection keeps while rustls cannot use them yet: a
/// handshake message of the largest size rustls takes (64 KiB, a client certificate chain)
/// in its records, plus the front of the next record. Past it the connection is closed.
pub const MAX_BUFFERED: usize = 80 * 1024;

/// Room for each record's head, explicit nonce, tag and TLS 1.3 content type when sizing a
/// buffer for sealed data (rustls says how much it needs if this falls short).
const RECORD_OVERHEAD: usize = 64;
/// Plaintext per record (rustls' default fragment size).
const RECORD_PLAINTEXT: usize = 16 * 1024;
/// States one `seal` goes through at most before it gives up (each consumes something).
const SEAL_STEPS: usize = 32;

/// A TLS listener's server settings, read by every shard at each accept and replaced
/// whole by a reload.
pub struct TlsAcceptor {
    config: ArcSwap<ServerConfig>,
}

impl TlsAcceptor {
    pub fn new(config: Arc<ServerConfig>) -> Arc<TlsAcceptor> {
        Arc::new(TlsAcceptor {
            config: ArcSwap::new(config),
        })
    }

    /// New handshakes use `config` from now on; open connections keep the one they began
    /// with.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        self.config.store(config);
    }

    /// The settings new handshakes use now.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.config.load_full()
    }

    /// A server session for a new connection.
    pub fn session(&self) -> Result<Pump<UnbufferedServerConnection>, rustls::Error> {
        UnbufferedServerConnection::new(self.config.load_full()).map(Pump::new)
    }
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor").finish_non_exhaustive()
    }
}

/// Two listeners' TLS settings are the same when they are the same acceptor.
impl PartialEq for TlsAcceptor {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for TlsAcceptor {}

/// A connection's TLS stage, as the connection holds it (`conn::Transport::Tls`).
pub struct TlsConn {
    /// The session: moved out while the runtime feeds it (the service may run meanwhile,
    /// and read `peer_cn`), so `None` only then.
    pub pump: Option<Box<Pump<UnbufferedServerConnection>>>,
    /// The stage above TLS: `Tcp` (MQTT over TLS), `WsHandshake` or `Ws` (WebSocket over
    /// TLS). Never `Tls`.
    pub inner: Transport,
    /// The client certificate's subject common name, once the handshake verified one.
    pub peer_cn: Option<Box<str>>,
    /// The handshake completed (known here while `pump` is out being fed).
    pub established: bool,
}

impl TlsConn {
    pub fn new(pump: Pump<UnbufferedServerConnection>, inner: Transport) -> TlsConn {
        TlsConn {
            pump: Some(Box::new(pump)),
            inner,
            peer_cn: None,
            established: false,
        }
    }

    /// Whether the handshake has not completed yet.
    pub fn handshaking(&self) -> bool {
        !self.established
    }

    /// Whether closing still owes the peer a close_notify (while the pump is out being
    /// fed, as far as is known here).
    pub fn owes_close_notify(&self) -> bool {
        match &self.pump {
            Some(p) => p.established && !p.close_notify_sent && !p.failed,
            None => self.established,
        }
    }
}

/// The two ends of rustls' unbuffered API: the broker's (server) and the swarm's (client).
pub trait Endpoint: DerefMut<Target = UnbufferedConnectionCommon<Self::Data>> {
    type Data;

    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
}

impl Endpoint for UnbufferedServerConnection {
    type Data = ServerConnectionData;

    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ServerConnectionData> {
        self.process_tls_records(incoming)
    }
}

impl Endpoint for UnbufferedClientConnection {
    type Data = ClientConnectionData;

    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ClientConnectionData> {
        self.process_tls_records(incoming)
    }
}

/// What a [`Pump`] hands its output to while it is fed.
pub trait Peer {
    /// TLS records to send to the other end, in this order, before anything sealed later.
    fn send(&mut self, records: &[u8]);
    /// The handshake completed (called once, before any application data): the peer's
    /// certificates and the negotiated parameters are in `state`.
    fn established(&mut self, state: &CommonState);
    /// Application data arrived; false when nothing more is wanted (the connection is
    /// closing), which stops the feed.
    fn received(&mut self, data: &[u8]) -> bool;
}

/// Where a feed left the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// The handshake waits for more from the other end.
    Handshaking,
    /// The handshake is done and everything received was handed over.
    Open,
    /// The other end sent close_notify: nothing more will come from it.
    PeerClosed,
    /// `Peer::received` said stop; bytes after that point were not looked at.
    Stopped,
}

/// Why a TLS connection failed.
#[derive(Debug)]
pub enum TlsError {
    /// rustls refused what the other end sent (a bad record, a failed handshake, …); the
    /// alert it answered with was handed to `Peer::send`.
    Rustls(rustls::Error),
    /// More than [`MAX_BUFFERED`] bytes that rustls could not use yet.
    TooMuchBuffered,
    /// The traffic keys are used up (the connection must end).
    Exhausted,
    /// rustls answered in a way this pump does not know.
    Unexpected(&'static str),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Rustls(e) => write!(f, "{e}"),
            TlsError::TooMuchBuffered => write!(
                f,
                "more than {MAX_BUFFERED} bytes of incomplete TLS records or handshake"
            ),
            TlsError::Exhausted => write!(f, "the traffic keys are used up"),
            TlsError::Unexpected(what) => write!(f, "unexpected TLS state: {what}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// One connection's TLS: rustls' connection and the received bytes it has not let go of.
pub struct Pump<E> {
    conn: E,
    /// Received bytes rustls could not use yet. Empty, and without an allocation, on a
    /// connection between records.
    pub carry: Vec<u8>,
    established: bool,
    close_notify_sent: bool,
    failed: bool,
}

impl<E: Endpoint> Pump<E> {
    pub fn new(conn: E) -> Pump<E> {
        Pump {
            conn,
            carry: Vec::new(),
            established: false,
            close_notify_sent: false,
            failed: false,
        }
    }

    /// Whether the handshake has completed.
    pub fn is_established(&self) -> bool {
        self.established
    }

    /// The session's protocol state (version, suite, peer certificates).
    pub fn state(&self) -> &CommonState {
        &self.conn
    }

    /// Starts the handshake from this end (a client's ClientHello): what there is to send
    /// goes to `peer`.
    pub fn start(&mut self, peer: &mut impl Peer) -> Result<Fed, TlsError> {
        self.feed(&mut [], peer)
    }

    /// Hands received bytes to rustls: records to send (handshake, alerts) and application
    /// data go to `peer`, in order. `input` is decrypted in place where it is whole; what
    /// rustls cannot use yet is copied to `carry` and used with the next bytes.
    pub fn feed(&mut self, input: &mut [u8], peer: &mut impl Peer) -> Result<Fed, TlsError> {
        let r = self.feed_inner(input, peer);
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    fn feed_inner(&mut self, input: &mut [u8], peer: &mut impl Peer) -> Result<Fed, TlsError> {
        let mut input = input;
        // Bytes kept from earlier receives come first: add the new ones behind them until
        // rustls lets go of all of them (it keeps what it has not used at the front).
        while !self.carry.is_empty() {
            let room = MAX_BUFFERED.saturating_sub(self.carry.len());
            if room == 0 {
                return Err(TlsError::TooMuchBuffered);
            }
            let k = room.min(input.len());
            self.carry.extend_from_slice(&input[..k]);
            input = &mut std::mem::take(&mut input)[k..];
            let mut carry = std::mem::take(&mut self.carry);
            let r = self.pump(&mut carry, peer);
            let used = r.as_ref().map_or(0, |&(used, _)| used);
            carry.drain(..used);
            self.carry = carry;
            let fed = r?.1;
            if input.is_empty() || matches!(fed, Fed::Stopped | Fed::PeerClosed) {
                return Ok(fed);
            }
        }
        let (used, fed) = self.pump(input, peer)?;
        if used < input.len() && !matches!(fed, Fed::Stopped | Fed::PeerClosed) {
            let rest = &input[used..];
            if rest.len() > MAX_BUFFERED {
                return Err(TlsError::TooMuchBuffered);
            }
            self.carry.extend_from_slice(rest);
        }
        Ok(fed)
    }

    /// Runs rustls over `buf` until it needs more bytes; returns how many it is done with
    /// (they may go) and where it stopped.
    fn pump(&mut self, buf: &mut [u8], peer: &mut impl Peer) -> Result<(usize, Fed), TlsError> {
        let mut used = 0;
        // Application data that completed the handshake is put back once, so the peer
        // hears `established` first.
        let mut held_back = false;
        loop {
            self.note_established(peer);
            let established = self.established;
            let UnbufferedStatus { mut discard, state } = self.conn.process(&mut buf[used..]);
            let state = match state {
                Ok(s) => s,
                Err(e) => {
                    used += discard;
                    self.send_alerts(&mut buf[used..], peer);
                    return Err(TlsError::Rustls(e));
                }
            };
            let mut stop = None;
            match state {
                ConnectionState::ReadTraffic(mut r) => {
                    if !established && !held_back {
                        held_back = true;
                    } else {
                        while let Some(record) = r.next_record() {
                            let record = record.map_err(TlsError::Rustls)?;
                            discard += record.discard;
                            if !peer.received(record.payload) {
                                stop = Some(Fed::Stopped);
                                break;
                            }
                        }
                    }
                }
                // Early data is never accepted (`max_early_data_size` stays 0): rustls
                // skips what a client offers without handing it over.
                ConnectionState::ReadEarlyData(_) => {
                    return Err(TlsError::Unexpected("early data"));
                }
                ConnectionState::EncodeTlsData(mut e) => encode(&mut e, peer)?,
                ConnectionState::TransmitTlsData(t) => t.done(),
                ConnectionState::BlockedHandshake => stop = Some(Fed::Handshaking),
                ConnectionState::WriteTraffic(_) => stop = Some(Fed::Open),
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    stop = Some(Fed::PeerClosed)
                }
                _ => return Err(TlsError::Unexpected("a new connection state")),
            }
            used += discard;
            if let Some(fed) = stop {
                // The last record may have completed the handshake with nothing to answer
                // (a TLS 1.2 client reading the server's Finished).
                self.note_established(peer);
                return Ok((used, fed));
            }
        }
    }

    /// Tells `peer` once that the handshake completed.
    fn note_established(&mut self, peer: &mut impl Peer) {
        if !self.established && !self.conn.is_handshaking() {
            self.established = true;
            peer.established(&self.conn);
        }
    }

    /// After rustls failed, hands on the alert it queued for the other end. One call
    /// only: rustls hands queued records out before it reads input again, and reading the
    /// bad input again would fail a second time.
    fn send_alerts(&mut self, buf: &mut [u8], peer: &mut impl Peer) {
        let UnbufferedStatus { state, .. } = self.conn.process(buf);
        if let Ok(ConnectionState::EncodeTlsData(mut e)) = state {
            let _ = encode(&mut e, peer);
        }
    }

    /// Seals `plain` into records appended to `out`, behind any record rustls still has to
    /// send, and a close_notify behind them when `close`. Returns false, leaving `plain`
    /// alone, while the handshake is not done. After a failure, or once the close_notify
    /// went, nothing more is sealed (`plain` counts as done).
    pub fn seal(&mut self, plain: &[u8], close: bool, out: &mut Vec<u8>) -> Result<bool, TlsError> {
        if self.failed || self.close_notify_sent {
            return Ok(true);
        }
        let mut carry = std::mem::take(&mut self.carry);
        let r = self.seal_inner(&mut carry, plain, close, out);
        self.carry = carry;
        if close {
            // One attempt is all a closing connection gets.
            self.close_notify_sent = true;
        }
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    fn seal_inner(
        &mut self,
        carry: &mut Vec<u8>,
        plain: &[u8],
        close: bool,
        out: &mut Vec<u8>,
    ) -> Result<bool, TlsError> {
        let mut used = 0;
        let mut sealed = None;
        for _ in 0..SEAL_STEPS {
            let UnbufferedStatus { mut discard, state } = self.conn.process(&mut carry[used..]);
            match state.map_err(TlsError::Rustls)? {
                ConnectionState::EncodeTlsData(mut e) => encode_into(&mut e, out)?,
                ConnectionState::TransmitTlsData(t) => t.done(),
                // Records left unread when the feed stopped: the connection is closing.
                ConnectionState::ReadTraffic(mut r) => {
                    while let Some(record) = r.next_record() {
                        discard += record.map_err(TlsError::Rustls)?.discard;
                    }
                }
                ConnectionState::ReadEarlyData(_) => {
                    return Err(TlsError::Unexpected("early data"));
                }
                ConnectionState::PeerClosed => {}
                ConnectionState::BlockedHandshake => sealed = Some(false),
                ConnectionState::Closed => sealed = Some(true),
                ConnectionState::WriteTraffic(mut w) => {
                    encrypt_into(&mut w, plain, out)?;
                    if close {
                        close_notify_into(&mut w, out)?;
                    }
                    sealed = Some(true);
                }
                _ => return Err(TlsError::Unexpected("a new connection state")),
            }
            used += discard;
            if let Some(sealed) = sealed {
                carry.drain(..used);
                return Ok(sealed);
            }
        }
        Err(TlsError::Unexpected("no end to the records to send"))
    }
}

/// Encodes a record rustls wants sent and hands it to `peer` (handshake and alerts only:
/// the copy costs nothing that matters there).
fn encode<D>(
    e: &mut rustls::unbuffered::EncodeTlsData<'_, D>,
    peer: &mut impl Peer,
) -> Result<(), TlsError> {
    let mut buf = Vec::new();
    encode_into(e, &mut buf)?;
    peer.send(&buf);
    Ok(())
}

fn encode_into<D>(
    e: &mut rustls::unbuffered::EncodeTlsData<'_, D>,
    out: &mut Vec<u8>,
) -> Result<(), TlsError> {
    let start = out.len();
    let mut room = 1024;
    loop {
        out.resize(start + room, 0);
        match e.encode(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size }))
                if required_size > room =>
            {
                room = required_size;
            }
            Err(_) => {
                out.truncate(start);
                return Err(TlsError::Unexpected("a record that cannot be encoded"));
            }
        }
    }
}

fn encrypt_into<D>(
    w: &mut WriteTraffic<'_, D>,
    plain: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), TlsError> {
    if plain.is_empty() {
        return Ok(());
    }
    let start = out.len();
    let records = plain.len().div_ceil(RECORD_PLAINTEXT);
    let mut room = plain.len() + records * RECORD_OVERHEAD;
    loop {
        out.resize(start + room, 0);
        match w.encrypt(plain, &mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size }))
                if required_size > room =>
            {
                room = required_size;
            }
            Err(_) => {
                out.truncate(start);
                return Err(TlsError::Exhausted);
            }
        }
    }
}

fn close_notify_into<D>(w: &mut WriteTraffic<'_, D>, out: &mut Vec<u8>) -> Result<(), TlsError> {
    let start = out.len();
    out.resize(start + RECORD_OVERHEAD, 0);
    match w.queue_close_notify(&mut out[start..]) {
        Ok(n) => {
            out.truncate(start + n);
            Ok(())
        }
        Err(_) => {
            out.truncate(start);
            Err(TlsError::Exhausted)
        }
    }
}

/// The subject common name of the end-entity certificate of a verified chain (the first),
/// if it has one that reads as text.
pub fn peer_common_name(chain: &[CertificateDer<'_>]) -> Option<Box<str>> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(chain.first()?.as_ref()).ok()?;
    let cn = cert.tbs_certificate().subject().common_name().ok()??;
    Some(cn.value().into())
}

/// Failures are logged at info, at most this many lines a second per shard; past it they
/// are only counted, and the next line says how many were not logged.
const LOG_LINES_PER_SECOND: u32 = 10;

thread_local! {
    /// This shard's log budget: the second it is for, lines logged in it, lines skipped.
    static LOG_BUDGET: std::cell::Cell<(u64, u32, u64)> = const { std::cell::Cell::new((0, 0, 0)) };
}

/// Logs a failed TLS session at info: the shard and what rustls said (alerts, certificate
/// verdicts, malformed records; never key material).
pub(crate) fn log_failure(shard: usize, handshaking: bool, e: &TlsError) {
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    LOG_BUDGET.with(|budget| {
        let (at, lines, skipped) = budget.get();
        let (lines, skipped) = if at == second {
            (lines, skipped)
        } else {
            (0, skipped)
        };
        if lines >= LOG_LINES_PER_SECOND {
            budget.set((second, lines, skipped + 1));
            return;
        }
        budget.set((second, lines + 1, 0));
        let stage = if handshaking { "handshake" } else { "session" };
        if skipped > 0 {
            tracing::info!(shard, error = %e, not_logged = skipped, "TLS {stage} failed");
        } else {
            tracing::info!(shard, error = %e, "TLS {stage} failed");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{PrivateKeyDer, ServerName};
    use rustls::server::WebPkiClientVerifier;
    use rustls::{ClientConfig, RootCertStore};

    /// A CA, a server certificate for `localhost` and a client certificate with CN
    /// `device-7`, all ECDSA P-256.
    struct Pki {
        ca: CertificateDer<'static>,
        server: (CertificateDer<'static>, PrivateKeyDer<'static>),
        client: (CertificateDer<'static>, PrivateKeyDer<'static>),
    }

    fn pki() -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf = |names: Vec<String>, cn: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(names).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
            let cert = params.signed_by(&key, &ca).unwrap();
            let key = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
            (cert.der().clone(), key)
        };
        Pki {
            ca: ca.der().clone(),
            server: leaf(vec!["localhost".into()], "localhost"),
            client: leaf(vec![], "device-7"),
        }
    }

    fn server_config(pki: &Pki, client_certs: bool) -> Arc<ServerConfig> {
        let builder = ServerConfig::builder();
        let builder = if client_certs {
            let mut roots = RootCertStore::empty();
            roots.add(pki.ca.clone()).unwrap();
            builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .unwrap(),
            )
        } else {
            builder.with_no_client_auth()
        };
        let (cert, key) = (pki.server.0.clone(), pki.server.1.clone_key());
        Arc::new(builder.with_single_cert(vec![cert], key).unwrap())
    }

    fn client(
        pki: &Pki,
        with_cert: bool,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> Pump<UnbufferedClientConnection> {
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca.clone()).unwrap();
        let builder =
            ClientConfig::builder_with_protocol_versions(&[version]).with_root_certificates(roots);
        let config = if with_cert {
            let (cert, key) = (pki.client.0.clone(), pki.client.1.clone_key());
            builder.with_client_auth_cert(vec![cert], key).unwrap()
        } else {
            builder.with_no_client_auth()
        };
        let name = ServerName::try_from("localhost").unwrap();
        Pump::new(UnbufferedClientConnection::new(Arc::new(config), name).unwrap())
    }

    /// One end as a test sees it: what it must send, what it got, what it learnt.
    #[derive(Default)]
    struct End {
        wire: Vec<u8>,
        got: Vec<u8>,
        established: bool,
        cn: Option<Box<str>>,
        stop_after: Option<usize>,
    }

    impl Peer for End {
        fn send(&mut self, records: &[u8]) {
            self.wire.extend_from_slice(records);
        }

        fn established(&mut self, state: &CommonState) {
            assert!(!self.established, "established twice");
            assert!(self.got.is_empty(), "data before established");
            self.established = true;
            self.cn = state.peer_certificates().and_then(peer_common_name);
        }

        fn received(&mut self, data: &[u8]) -> bool {
            self.got.extend_from_slice(data);
            self.stop_after.is_none_or(|n| self.got.len() < n)
        }
    }

    /// Moves what `from` has to send into `to`, `chunk` bytes per feed.
    fn deliver<E: Endpoint>(
        from: &mut End,
        to: &mut Pump<E>,
        to_end: &mut End,
        chunk: usize,
    ) -> Result<Fed, TlsError> {
        let mut wire = std::mem::take(&mut from.wire);
        let mut fed = Fed::Handshaking;
        for piece in wire.chunks_mut(chunk) {
            fed = to.feed(piece, to_end)?;
        }
        Ok(fed)
    }

    /// Runs the handshake, feeding the server `chunk` bytes at a time.
    fn handshake(
        pki: &Pki,
        client_certs: bool,
        chunk: usize,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> (
        Pump<UnbufferedClientConnection>,
        End,
        Pump<UnbufferedServerConnection>,
        End,
    ) {
        let acceptor = TlsAcceptor::new(server_config(pki, client_certs));
        let mut server = acceptor.session().unwrap();
        let mut client = client(pki, client_certs, version);
        let (mut c, mut s) = (End::default(), End::default());
        client.start(&mut c).unwrap();
        for _ in 0..8 {
            deliver(&mut c, &mut server, &mut s, chunk).unwrap();
            deliver(&mut s, &mut client, &mut c, 4096).unwrap();
            if server.is_established() && client.is_established() && c.wire.is_empty() {
                break;
            }
        }
        assert!(server.is_established() && client.is_established());
        // Each side heard of it exactly when it happened.
        assert!(c.established && s.established);
        assert_eq!(client.state().protocol_version(), Some(version.version));
        (client, c, server, s)
    }

    #[test]
    fn data_crosses_both_ways_whatever_the_split() {
        let pki = pki();
        let message: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let versions = [&rustls::version::TLS12, &rustls::version::TLS13];
        for (chunk, version) in [1, 5, 7, 100, 1000, 4096, 65536]
            .into_iter()
            .flat_map(|chunk| versions.map(|v| (chunk, v)))
        {
            let (mut client, mut c, mut server, mut s) = handshake(&pki, false, chunk, version);
            assert!(s.established && s.cn.is_none());
            // Client → server: several records, fed in pieces of `chunk`.
            assert!(client.seal(&message, false, &mut c.wire).unwrap());
            assert_eq!(
                deliver(&mut c, &mut server, &mut s, chunk).unwrap(),
                Fed::Open
            );
            assert_eq!(s.got, message, "chunk {chunk}");
            assert!(server.carry.is_empty(), "a whole record is not kept");
            // Server → client, then close_notify.
            assert!(server.seal(b"pong", true, &mut s.wire).unwrap());
            assert_eq!(
                deliver(&mut s, &mut client, &mut c, chunk).unwrap(),
                Fed::PeerClosed
            );
            assert!(c.got.ends_with(b"pong"));
            // Nothing is sealed after the close_notify.
            let mut after = Vec::new();
            assert!(server.seal(b"late", false, &mut after).unwrap());
            assert!(after.is_empty());
        }
    }

    #[test]
    fn a_verified_client_certificate_gives_its_common_name() {
        let pki = pki();
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let (_, _, server, s) = handshake(&pki, true, 4096, version);
            assert_eq!(s.cn.as_deref(), Some("device-7"));
            let chain = server.state().peer_certificates().unwrap();
            assert_eq!(peer_common_name(chain).as_deref(), Some("device-7"));
        }
        let (_, _, server, s) = handshake(&pki, true, 4096, &rustls::version::TLS13);
        assert_eq!(s.cn.as_deref(), Some("device-7"));
        let chain = server.state().peer_certificates().unwrap();
        assert_eq!(peer_common_name(chain).as_deref(), Some("device-7"));
    }

    #[test]
    fn a_client_without_a_required_certificate_is_refused_with_an_alert() {
        let pki = pki();
        let acceptor = TlsAcceptor::new(server_config(&pki, true));
        let mut server = acceptor.session().unwrap();
        let mut client = client(&pki, false, &rustls::version::TLS13);
        let (mut c, mut s) = (End::default(), End::default());
        client.start(&mut c).unwrap();
        let mut failed = None;
        for _ in 0..8 {
            if let Err(e) = deliver(&mut c, &mut server, &mut s, 4096) {
                failed = Some(e);
                break;
            }
            let _ = deliver(&mut s, &mut client, &mut c, 4096);
        }
        let e = failed.expect("the server refuses the handshake");
        assert!(matches!(e, TlsError::Rustls(_)), "{e}");
        assert!(!s.established);
        // The alert is on its way to the client.
        assert!(!s.wire.is_empty());
        let mut wire = s.wire.clone();
        assert!(client.feed(&mut wire, &mut c).is_err());
    }

    #[test]
    fn garbage_instead_of_a_client_hello_fails_with_an_alert() {
        let pki = pki();
        let acceptor = TlsAcceptor::new(server_config(&pki, false));
        let mut server = acceptor.session().unwrap();
        let mut s = End::default();
        let mut garbage = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        let e = server.feed(&mut garbage, &mut s).unwrap_err();
        assert!(matches!(e, TlsError::Rustls(_)), "{e}");
        // An alert record: content type 21.
        assert_eq!(s.wire.first(), Some(&21));
        // A failed session seals nothing more.
        let mut out = Vec::new();
        assert!(server.seal(b"x", true, &mut out).unwrap());
        assert!(out.is_empty());
    }

    #[test]
    fn a_handshake_message_dribbled_in_tiny_records_hits_the_bound() {
        let pki = pki();
        let acceptor = TlsAcceptor::new(server_config(&pki, false));
        let mut server = acceptor.session().unwrap();
        let mut s = End::default();
        // A ClientHello that says it is 60,000 bytes long, sent one byte per record: each
        // byte costs 6 on the wire, and rustls keeps them all until the message is whole.
        let mut body = vec![1u8, 0x00, 0xea, 0x60];
        body.resize(60_004, 0);
        let mut failed = None;
        for b in body {
            let mut record = [22, 3, 1, 0, 1, b];
            if let Err(e) = server.feed(&mut record, &mut s) {
                failed = Some(e);
                break;
            }
            assert!(server.carry.len() <= MAX_BUFFERED);
        }
        assert!(
            matches!(failed, Some(TlsError::TooMuchBuffered)),
            "{failed:?}"
        );
    }

    #[test]
    fn nothing_is_sealed_before_the_handshake() {
        let pki = pki();
        let acceptor = TlsAcceptor::new(server_config(&pki, false));
        let mut server = acceptor.session().unwrap();
        let mut out = Vec::new();
        assert!(!server.seal(b"early", false, &mut out).unwrap());
        assert!(out.is_empty());
    }

    #[test]
    fn stopping_leaves_the_rest_unread() {
        let pki = pki();
        let (mut client, mut c, mut server, mut s) =
            handshake(&pki, false, 4096, &rustls::version::TLS13);
        for word in [&b"first"[..], b"second"] {
            assert!(client.seal(word, false, &mut c.wire).unwrap());
        }
        s.stop_after = Some(1);
        assert_eq!(
            deliver(&mut c, &mut server, &mut s, 4096).unwrap(),
            Fed::Stopped
        );
        assert_eq!(s.got, b"first");
    }

    #[test]
    fn a_reload_changes_new_sessions_only() {
        let pki = pki();
        let acceptor = TlsAcceptor::new(server_config(&pki, false));
        let old = acceptor.current();
        let session = acceptor.session().unwrap();
        acceptor.replace(server_config(&pki, true));
        assert!(!Arc::ptr_eq(&old, &acceptor.current()));
        drop(session);
        assert_eq!(
            Arc::strong_count(&old),
            1,
            "only this test holds the old config"
        );
    }
}
