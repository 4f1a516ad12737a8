//! Authentication and authorization: who may connect, and what each client may publish,
//! subscribe to and receive.
//!
//! The parts, in the order a CONNECT meets them:
//!
//! - [`Authenticator`] (this file): the facade a shard calls with a CONNECT's credentials.
//!   It answers at once (allowed, or refused with a reason) or parks the CONNECT while the
//!   slow part runs elsewhere. One `Authenticator` is one generation of the configuration:
//!   reloading builds a new one ([`Authenticator::load`]) and the wiring swaps it in.
//! - [`password`]: the mosquitto password file (`user:$7$…`, `$6$`, `$argon2id$`) and
//!   `ringmq passwd`.
//! - [`jwt`]: signed tokens (HS256, RS256, ES256) with `exp`, `nbf`, `sub`, `clientid` and
//!   EMQX's `acl` claim.
//! - [`verify`]: the verification pool that runs hashes and signatures off the shards, the
//!   cache of verified credentials, and the counters.
//! - [`acl`]: mosquitto's ACL file, compiled into per-user tries ([`rules`] is the trie).
//! - [`ClientAcl`] (this file): one connection's view of the rules, resolved at CONNECT,
//!   asked on every PUBLISH, SUBSCRIBE and delivery.
//! - [`current`]: the generation in force, which a reload replaces and shards pick up.
//! - [`fuzz`]: the fuzz targets' logic.
//!
//! # How the broker uses it (the wiring)
//!
//! At start-up, on the control thread:
//!
//! ```ignore
//! let stats = Arc::new(AuthStats::default());               // lives for the process
//! let pool = VerifyPool::start(PoolConfig::default())?;     // only if config.needs_pool()
//! let auth: Arc<Authenticator> = Authenticator::load(&config, Some(pool.handle()), stats)?;
//! // Shards read the current generation from an `ArcSwap<Authenticator>` (or receive it in
//! // a control message) at the start of each loop turn.
//! ```
//!
//! Each shard makes its reply channel once, with a wake callback that rings its doorbell:
//!
//! ```ignore
//! let (reply_to, replies) = verify::reply_channel(MAX_PARKED_CONNECTS, wake);
//! ```
//!
//! On CONNECT (after the ban list, which the wiring keeps, and the client id checks):
//!
//! ```ignore
//! let creds = Credentials { client_id, username, password, auth_method, certificate_cn };
//! match auth.authenticate(&creds, &reply_to, ticket, unix_now()) {
//!     Decision::Allowed(grant) => continue_connect(grant),  // keep grant.acl; close at grant.expires_at
//!     Decision::Refused(why) => refuse(why.reason_code() /* v5 */, why.return_code() /* 3.1.1 */),
//!     Decision::Parked => park(ticket),                      // stop reading this connection
//! }
//! ```
//!
//! `ticket` is the shard's own number for the parked connection (its slab key and a
//! generation, so an answer for a connection that closed meanwhile is recognised and
//! dropped). Each loop turn: `while let Some(Verified { ticket, outcome }) =
//! replies.try_recv() { … }` resumes or refuses the parked CONNECT. The shard's CONNECT
//! deadline still applies while parked.
//!
//! On PUBLISH: `grant.acl.may_publish(topic)`; refused → 3.1.1: acknowledge as usual and
//! drop; 5.0: PUBACK/PUBREC 0x87. On SUBSCRIBE: `acl.may_subscribe(filter)`; `Refused` →
//! SUBACK 0x80 (3.1.1) / 0x87 (5.0); `Allowed { check_each_delivery }` → remember the flag
//! with the subscription. On delivery: live messages through a subscription whose flag is
//! set, and *every* retained, queued or resent message, call `acl.may_receive(topic)` and
//! skip (for QoS 1/2: complete silently) what it refuses. [`ClientAcl::is_unrestricted`]
//! lets the hot path skip all of it when nothing is configured.
//!
//! On reload (SIGHUP): build a new generation with [`Authenticator::load`]; on failure keep
//! the old one and log the error (it names the file and line). On success swap it in; each
//! shard then calls [`Authenticator::rebind`] for each of its connections: `Ok(acl)` →
//! replace the connection's `ClientAcl` (new rules take effect at once); `Err(_)` →
//! disconnect it (5.0: DISCONNECT 0x98 Administrative action), as mosquitto disconnects
//! clients that a reload no longer admits. Existing subscriptions are then re-checked with
//! `may_subscribe` by the wiring (or their deliveries checked each time).
//!
//! # Refusals
//!
//! | [`Refusal`] | MQTT 5 CONNACK | 3.1.1 CONNACK | when |
//! |---|---|---|---|
//! | `BadCredentials` | 0x86 Bad user name or password | 0x04 | wrong password, unknown user, bad/expired token, unverifiable username |
//! | `NotAuthorized` | 0x87 Not authorized | 0x05 | anonymous when not allowed; token for another client id |
//! | `Banned` | 0x8A Banned | 0x05 | the wiring's ban list |
//! | `BadAuthMethod` | 0x8C Bad authentication method | 0x04 | an MQTT 5 Authentication Method (enhanced auth is not offered) |
//! | `ServerBusy` | 0x89 Server busy | 0x03 Server unavailable | the verification queue is full |
//!
//! # Who is allowed
//!
//! In order, the first that applies decides:
//!
//! 1. An MQTT 5 Authentication Method → `BadAuthMethod`.
//! 2. With `--tls-cn-as-username` and a verified client certificate: allowed, the
//!    certificate's CN is the username.
//! 3. The username is in the password file → its password is checked (cache, else pool).
//! 4. A JWT key is configured and the token field (`--jwt-from`) is not empty → the token
//!    is checked (cache, else pool).
//! 5. A username or password was given and a credential source is configured (password
//!    file, JWT key, CN as username) but nothing above verified it → `BadCredentials`.
//! 6. Otherwise the client is anonymous: allowed when `--allow-anonymous` (default: true
//!    only when no password file, JWT key or client CA is configured), else
//!    `NotAuthorized`. With no credential source at all, a username is taken at its word
//!    for the ACL file, as mosquitto does.
//!
//! # Limits
//!
//! | what | bound | at the bound |
//! |---|---|---|
//! | password file | 32 MiB, 200,000 users, lines of 66,559 bytes | load refused, error names the line |
//! | `$7$` iterations / argon2id cost | 1,000,000 / m ≤ 256 MiB, t ≤ 16, p ≤ 16 | load refused |
//! | ACL file | 4 MiB, 100,000 rules, 100,000 users, 1,000,000 trie nodes | load refused |
//! | token | 8 KiB, 64 `acl` filters | CONNECT refused (bad credentials) |
//! | verification queue | [`PoolConfig::queue`] (1,024) | CONNECT refused, server busy, counted |
//! | parked CONNECTs per shard | the reply channel's capacity | CONNECT refused, server busy, counted |
//! | credential cache | `cache_capacity` (65,536) | oldest entry evicted |

pub mod acl;
pub mod current;
pub mod fuzz;
pub mod jwt;
pub mod password;
pub mod rules;
pub mod verify;

use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ringmq_proto::mqtt::{ConnectReturnCode, ReasonCode};
use zeroize::Zeroizing;

pub use acl::{Acl, SubscribeVerdict};
pub use current::CurrentAuth;
pub use jwt::{JwtVerifier, TokenSource};
pub use password::PasswordFile;
pub use verify::{
    AuthStats, PoolConfig, PoolHandle, Replies, ReplyTo, Verified, VerifyPool, reply_channel,
};

use acl::Subject;
use jwt::{TokenGrants, VerifiedToken};
use rules::{Access, NodeId, Who};
use verify::{CacheKey, Cached, CredentialCache, Job, Work};

/// Why a CONNECT is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    BadCredentials,
    NotAuthorized,
    Banned,
    BadAuthMethod,
    ServerBusy,
}

impl Refusal {
    /// The MQTT 5 CONNACK reason code.
    pub const fn reason_code(self) -> ReasonCode {
        match self {
            Refusal::BadCredentials => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            Refusal::NotAuthorized => ReasonCode::NOT_AUTHORIZED,
            Refusal::Banned => ReasonCode::BANNED,
            Refusal::BadAuthMethod => ReasonCode::BAD_AUTHENTICATION_METHOD,
            Refusal::ServerBusy => ReasonCode::SERVER_BUSY,
        }
    }

    /// The MQTT 3.1.1 CONNACK return code.
    pub const fn return_code(self) -> ConnectReturnCode {
        ConnectReturnCode::from_reason(self.reason_code())
    }

    /// A reason string for the MQTT 5 CONNACK. It never says which of username and
    /// password was wrong.
    pub const fn reason_string(self) -> &'static str {
        match self {
            Refusal::BadCredentials => "bad username or password",
            Refusal::NotAuthorized => "not authorized",
            Refusal::Banned => "banned",
            Refusal::BadAuthMethod => "authentication method not supported",
            Refusal::ServerBusy => "server busy, try again later",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason_string())
    }
}

/// What a CONNECT presents.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    /// MQTT 5 Authentication Method property, if any.
    pub auth_method: Option<&'a str>,
    /// The common name of a client certificate the TLS layer verified, if any.
    pub certificate_cn: Option<&'a str>,
}

/// The answer to a CONNECT.
#[derive(Debug)]
pub enum Decision {
    Allowed(Grant),
    Refused(Refusal),
    /// The answer will come on the shard's [`Replies`] with the ticket given.
    Parked,
}

/// What an admitted client gets.
#[derive(Debug)]
pub struct Grant {
    /// What it may publish, subscribe to and receive.
    pub acl: ClientAcl,
    /// When its token expires (seconds since the epoch): close the connection then.
    pub expires_at: Option<u64>,
}

/// How a client was admitted, so a reload can tell whether it still would be.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    /// No credentials verified.
    Anonymous,
    /// A password-file user; the fingerprint of the hash it matched.
    Password(u64),
    /// A token (still trusted after a reload while a JWT key is configured).
    Token,
    /// A client certificate's CN.
    Certificate,
}

/// One connection's rules, resolved when it was admitted.
///
/// Without any configuration it holds nothing (one null pointer per connection) and every
/// check is a comparison of the topic's first bytes (`$SYS` stays unwritable).
#[derive(Debug, Default)]
pub struct ClientAcl(Option<Box<Bound>>);

#[derive(Debug)]
struct Bound {
    acl: Option<Arc<Acl>>,
    user_root: Option<NodeId>,
    patterns_grant: bool,
    client_id: Box<str>,
    /// The username the rules know the client by: the CONNECT username, a token's `sub`,
    /// or a certificate's CN.
    username: Option<Box<str>>,
    token: Option<Arc<TokenGrants>>,
    origin: Origin,
}

impl ClientAcl {
    /// Everything allowed but writing to `$SYS`.
    pub const fn unrestricted() -> ClientAcl {
        ClientAcl(None)
    }

    /// Whether every publish (except to `$SYS`), subscription and delivery is allowed, so
    /// the caller can skip the checks.
    pub fn is_unrestricted(&self) -> bool {
        self.0
            .as_ref()
            .is_none_or(|b| b.acl.is_none() && b.token.is_none())
    }

    /// The username the rules apply to.
    pub fn username(&self) -> Option<&str> {
        self.0.as_ref().and_then(|b| b.username.as_deref())
    }

    /// May this client publish to the topic name `topic`?
    pub fn may_publish(&self, topic: &str) -> bool {
        if acl::is_reserved_for_broker(topic) {
            return false;
        }
        self.0
            .as_ref()
            .is_none_or(|b| b.allows(topic, Access::WRITE))
    }

    /// May a message published on `topic` be delivered to this client (live, retained,
    /// queued or resent)?
    pub fn may_receive(&self, topic: &str) -> bool {
        self.0
            .as_ref()
            .is_none_or(|b| b.allows(topic, Access::READ))
    }

    /// May this client subscribe to `filter` (`$share/{group}/` is looked through)?
    pub fn may_subscribe(&self, filter: &str) -> SubscribeVerdict {
        let Some(bound) = &self.0 else {
            return SubscribeVerdict::Allowed {
                check_each_delivery: false,
            };
        };
        let Ok(parsed) = ringmq_proto::topic::parse_filter(filter) else {
            return SubscribeVerdict::Refused;
        };
        bound.subscribe(parsed.filter())
    }
}

impl Bound {
    fn who(&self) -> Who<'_> {
        Who::new(&self.client_id, self.username.as_deref())
    }

    fn subject(&self) -> Subject<'_> {
        Subject::resolved(self.user_root, self.who(), self.patterns_grant)
    }

    fn allows(&self, topic: &str, needed: Access) -> bool {
        let file = self
            .acl
            .as_ref()
            .map(|acl| acl.topic_access(&self.subject(), topic));
        if file.is_some_and(Access::denies) {
            return false;
        }
        match (&self.token, file) {
            // A token's `acl` claim replaces the file's grants; the file's denies stay.
            (Some(token), _) => token.topic_access(topic, self.who()).contains(needed),
            (None, Some(file)) => file.contains(needed),
            (None, None) => true,
        }
    }

    fn subscribe(&self, filter: &str) -> SubscribeVerdict {
        let subject = self.subject();
        let file = self
            .acl
            .as_ref()
            .map(|acl| acl.covering_access(&subject, filter));
        if file.is_some_and(Access::denies) {
            return SubscribeVerdict::Refused;
        }
        let granted = match (&self.token, file) {
            (Some(token), _) => token
                .covering_access(filter, self.who())
                .contains(Access::READ),
            (None, Some(file)) => file.contains(Access::READ),
            (None, None) => true,
        };
        if !granted {
            return SubscribeVerdict::Refused;
        }
        SubscribeVerdict::Allowed {
            check_each_delivery: self
                .acl
                .as_ref()
                .is_some_and(|acl| acl.deny_overlaps(&subject, filter)),
        }
    }
}

/// Where the configuration comes from: the flags (and config file keys) of issue-level
/// options `--password-file`, `--acl-file`, `--jwt-key`, `--jwt-from`,
/// `--allow-anonymous`, `--tls-client-ca`, `--tls-cn-as-username`.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub password_file: Option<PathBuf>,
    pub acl_file: Option<PathBuf>,
    pub jwt_key_file: Option<PathBuf>,
    pub jwt_from: TokenSource,
    /// When set, tokens must name this audience in `aud`.
    pub jwt_audience: Option<String>,
    /// `None`: the default, see [`AuthConfig::allow_anonymous`].
    pub allow_anonymous: Option<bool>,
    /// A client CA is configured (`--tls-client-ca`).
    pub client_ca: bool,
    pub cn_as_username: bool,
    /// Entries in the cache of verified credentials; 0 turns it off.
    pub cache_capacity: usize,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            password_file: None,
            acl_file: None,
            jwt_key_file: None,
            jwt_from: TokenSource::Password,
            jwt_audience: None,
            allow_anonymous: None,
            client_ca: false,
            cn_as_username: false,
            cache_capacity: 65_536,
        }
    }
}

impl AuthConfig {
    /// `--allow-anonymous`, or its default: true only when no password file, JWT key or
    /// client CA is configured.
    pub fn allow_anonymous(&self) -> bool {
        self.allow_anonymous.unwrap_or(
            self.password_file.is_none() && self.jwt_key_file.is_none() && !self.client_ca,
        )
    }

    /// Whether this configuration needs the verification pool (a password file or a JWT
    /// key).
    pub fn needs_pool(&self) -> bool {
        self.password_file.is_some() || self.jwt_key_file.is_some()
    }
}

/// Why a configuration could not be loaded. The message names the file and the line.
#[derive(Debug)]
pub enum LoadError {
    Password(PathBuf, password::PasswordFileError),
    Acl(PathBuf, acl::AclError),
    JwtKey(PathBuf, jwt::JwtKeyError),
    /// A password file or JWT key needs the verification pool, and none was given.
    NoPool,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Password(p, e) => write!(f, "password file {}: {e}", p.display()),
            LoadError::Acl(p, e) => write!(f, "ACL file {}: {e}", p.display()),
            LoadError::JwtKey(p, e) => write!(f, "JWT key {}: {e}", p.display()),
            LoadError::NoPool => write!(f, "authentication needs the verification pool"),
        }
    }
}

impl std::error::Error for LoadError {}

/// The parts of a configuration, already loaded (what [`Authenticator::load`] reads from
/// files; tests and benchmarks build it directly).
#[derive(Debug, Default)]
pub struct Sources {
    pub passwords: Option<PasswordFile>,
    pub acl: Option<Acl>,
    pub jwt: Option<JwtVerifier>,
    pub jwt_from: TokenSource,
    pub allow_anonymous: bool,
    pub cn_as_username: bool,
}

/// One generation of the authentication configuration, and the decisions made with it.
#[derive(Debug)]
pub struct Authenticator {
    passwords: Option<PasswordFile>,
    acl: Option<Arc<Acl>>,
    jwt: Option<JwtVerifier>,
    jwt_from: TokenSource,
    allow_anonymous: bool,
    cn_as_username: bool,
    cache: CredentialCache,
    stats: Arc<AuthStats>,
    pool: Option<PoolHandle>,
}

/// Cache key domains, so a password and a token with the same bytes never collide.
const KEY_PASSWORD: u8 = 1;
const KEY_TOKEN: u8 = 2;

impl Authenticator {
    /// Reads every configured file and builds a generation. Reload is this same call; the
    /// caller swaps the result in. `stats` is shared by all generations.
    pub fn load(
        config: &AuthConfig,
        pool: Option<PoolHandle>,
        stats: Arc<AuthStats>,
    ) -> Result<Arc<Authenticator>, LoadError> {
        if config.needs_pool() && pool.is_none() {
            return Err(LoadError::NoPool);
        }
        let passwords = match &config.password_file {
            Some(path) => {
                Some(PasswordFile::load(path).map_err(|e| LoadError::Password(path.clone(), e))?)
            }
            None => None,
        };
        let acl = match &config.acl_file {
            Some(path) => Some(Acl::load(path).map_err(|e| LoadError::Acl(path.clone(), e))?),
            None => None,
        };
        let jwt = match &config.jwt_key_file {
            Some(path) => Some(
                JwtVerifier::load(path, config.jwt_audience.as_deref())
                    .map_err(|e| LoadError::JwtKey(path.clone(), e))?,
            ),
            None => None,
        };
        let sources = Sources {
            passwords,
            acl,
            jwt,
            jwt_from: config.jwt_from,
            allow_anonymous: config.allow_anonymous(),
            cn_as_username: config.cn_as_username,
        };
        Ok(Arc::new(Authenticator::new(
            sources,
            pool,
            stats,
            config.cache_capacity,
        )))
    }

    /// A generation from loaded parts.
    pub fn new(
        sources: Sources,
        pool: Option<PoolHandle>,
        stats: Arc<AuthStats>,
        cache_capacity: usize,
    ) -> Authenticator {
        Authenticator {
            passwords: sources.passwords,
            acl: sources.acl.map(Arc::new),
            jwt: sources.jwt,
            jwt_from: sources.jwt_from,
            allow_anonymous: sources.allow_anonymous,
            cn_as_username: sources.cn_as_username,
            cache: CredentialCache::new(cache_capacity),
            stats,
            pool,
        }
    }

    /// Nothing configured: everybody admitted, everything allowed (but writing `$SYS`).
    pub fn open(stats: Arc<AuthStats>) -> Authenticator {
        Authenticator::new(
            Sources {
                allow_anonymous: true,
                ..Sources::default()
            },
            None,
            stats,
            0,
        )
    }

    pub fn stats(&self) -> &Arc<AuthStats> {
        &self.stats
    }

    /// The compiled ACL file, if one is configured.
    pub fn acl(&self) -> Option<&Arc<Acl>> {
        self.acl.as_ref()
    }

    /// Whether some source can verify a username (so an unverified one is refused).
    fn verifies_usernames(&self) -> bool {
        self.passwords.is_some() || self.jwt.is_some() || self.cn_as_username
    }

    /// Whether nothing at all is configured (connections get an empty [`ClientAcl`]).
    fn is_open(&self) -> bool {
        !self.verifies_usernames() && self.acl.is_none() && self.allow_anonymous
    }

    /// Decides a CONNECT. `ticket` names it on the shard's [`Replies`] if it is parked;
    /// `now` is the wall clock in seconds since the epoch (for token times). Never blocks
    /// and never computes a hash or a signature.
    pub fn authenticate(
        self: &Arc<Self>,
        creds: &Credentials<'_>,
        reply: &ReplyTo,
        ticket: u64,
        now: u64,
    ) -> Decision {
        let decision = self.decide(creds, reply, ticket, now);
        match &decision {
            Decision::Allowed(_) => {
                self.stats.allowed.fetch_add(1, Ordering::Relaxed);
            }
            Decision::Refused(why) => self.stats.count_refusal(*why),
            Decision::Parked => {}
        }
        decision
    }

    fn decide(
        self: &Arc<Self>,
        creds: &Credentials<'_>,
        reply: &ReplyTo,
        ticket: u64,
        now: u64,
    ) -> Decision {
        if creds.auth_method.is_some() {
            return Decision::Refused(Refusal::BadAuthMethod);
        }
        if let Some(cn) = creds.certificate_cn.filter(|_| self.cn_as_username) {
            return Decision::Allowed(self.grant(
                creds.client_id,
                Some(cn),
                Origin::Certificate,
                None,
                None,
            ));
        }
        if let (Some(username), Some(entry)) = (creds.username, self.password_entry(creds)) {
            return self.decide_password(username, entry, creds, reply, ticket, now);
        }
        if let Some(token) = self.token_field(creds) {
            if token.len() > jwt::MAX_TOKEN_BYTES {
                return Decision::Refused(Refusal::BadCredentials);
            }
            let key = self.cache.key(KEY_TOKEN, &[token]);
            let username = self.token_username(creds);
            return match self.cache.try_get(&key) {
                Some(Cached::Token(verified)) => {
                    self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                    match self.token_grant(&verified, creds.client_id, username, now) {
                        Ok(grant) => Decision::Allowed(grant),
                        Err(why) => Decision::Refused(why),
                    }
                }
                Some(Cached::BadToken) => {
                    self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                    Decision::Refused(Refusal::BadCredentials)
                }
                _ => self.park(
                    Work::Token {
                        token: Zeroizing::new(token.to_vec()),
                        username: username.map(Into::into),
                    },
                    creds.client_id,
                    key,
                    reply,
                    ticket,
                    now,
                ),
            };
        }
        if self.verifies_usernames() && (creds.username.is_some() || creds.password.is_some()) {
            return Decision::Refused(Refusal::BadCredentials);
        }
        if !self.allow_anonymous {
            return Decision::Refused(Refusal::NotAuthorized);
        }
        // With no credential source, a username is taken at its word (as in mosquitto).
        let username = creds.username.filter(|_| !self.verifies_usernames());
        Decision::Allowed(self.grant(creds.client_id, username, Origin::Anonymous, None, None))
    }

    /// The password file's entry for the CONNECT's username, if there is one.
    fn password_entry(&self, creds: &Credentials<'_>) -> Option<&password::UserEntry> {
        self.passwords.as_ref()?.get(creds.username?)
    }

    /// A password-file user's CONNECT: the cache, else the pool.
    fn decide_password(
        self: &Arc<Self>,
        username: &str,
        entry: &password::UserEntry,
        creds: &Credentials<'_>,
        reply: &ReplyTo,
        ticket: u64,
        now: u64,
    ) -> Decision {
        let Some(password) = creds.password else {
            return Decision::Refused(Refusal::BadCredentials);
        };
        let key = self
            .cache
            .key(KEY_PASSWORD, &[username.as_bytes(), password]);
        match self.cache.try_get(&key) {
            Some(Cached::Password) => {
                self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                Decision::Allowed(self.password_grant(creds.client_id, username, entry))
            }
            Some(Cached::WrongPassword) => {
                self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                Decision::Refused(Refusal::BadCredentials)
            }
            _ => self.park(
                Work::Password {
                    username: username.into(),
                    password: Zeroizing::new(password.to_vec()),
                },
                creds.client_id,
                key,
                reply,
                ticket,
                now,
            ),
        }
    }

    /// The token, if a JWT key is configured and the CONNECT's token field is not empty.
    fn token_field<'a>(&self, creds: &Credentials<'a>) -> Option<&'a [u8]> {
        self.jwt.as_ref()?;
        match self.jwt_from {
            TokenSource::Password => creds.password,
            TokenSource::Username => creds.username.map(str::as_bytes),
        }
        .filter(|t| !t.is_empty())
    }

    /// The CONNECT username that goes with a token: only when the token is the password.
    fn token_username<'a>(&self, creds: &Credentials<'a>) -> Option<&'a str> {
        match self.jwt_from {
            TokenSource::Password => creds.username,
            TokenSource::Username => None,
        }
    }

    fn park(
        self: &Arc<Self>,
        work: Work,
        client_id: &str,
        key: CacheKey,
        reply: &ReplyTo,
        ticket: u64,
        now: u64,
    ) -> Decision {
        self.stats.cache_misses.fetch_add(1, Ordering::Relaxed);
        let Some(pool) = &self.pool else {
            // `load` refuses a configuration that needs the pool without one.
            return Decision::Refused(Refusal::ServerBusy);
        };
        let job = Job {
            auth: Arc::clone(self),
            work,
            client_id: client_id.into(),
            key,
            now,
            ticket,
            reply: reply.clone(),
        };
        match pool.submit(job) {
            Ok(()) => Decision::Parked,
            Err(why) => Decision::Refused(why),
        }
    }

    /// Runs on a pool thread: the slow check, the cache update, the decision.
    pub(crate) fn finish_parked(
        &self,
        work: &Work,
        client_id: &str,
        key: CacheKey,
        now: u64,
    ) -> Result<Grant, Refusal> {
        let outcome = match work {
            Work::Password { username, password } => {
                match self.passwords.as_ref().and_then(|p| p.get(username)) {
                    // A storm of clients with the same credentials parks them all before
                    // the first hash is done: the ones queued behind it find its answer.
                    Some(entry) if matches!(self.cache.try_get(&key), Some(Cached::Password)) => {
                        self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                        Ok(self.password_grant(client_id, username, entry))
                    }
                    Some(_) if matches!(self.cache.try_get(&key), Some(Cached::WrongPassword)) => {
                        self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                        Err(Refusal::BadCredentials)
                    }
                    Some(entry) => {
                        self.stats.hashes_computed.fetch_add(1, Ordering::Relaxed);
                        if entry.hash.verify(password) {
                            self.cache.insert(key, Cached::Password);
                            Ok(self.password_grant(client_id, username, entry))
                        } else {
                            self.cache.insert(key, Cached::WrongPassword);
                            Err(Refusal::BadCredentials)
                        }
                    }
                    None => Err(Refusal::BadCredentials),
                }
            }
            Work::Token { token, username } => match &self.jwt {
                Some(jwt) => {
                    self.stats.tokens_checked.fetch_add(1, Ordering::Relaxed);
                    match jwt.verify_signature(token) {
                        Ok(verified) => {
                            let verified = Arc::new(verified);
                            self.cache.insert(key, Cached::Token(Arc::clone(&verified)));
                            self.token_grant(&verified, client_id, username.as_deref(), now)
                        }
                        Err(_) => {
                            self.cache.insert(key, Cached::BadToken);
                            Err(Refusal::BadCredentials)
                        }
                    }
                }
                None => Err(Refusal::BadCredentials),
            },
        };
        match &outcome {
            Ok(_) => {
                self.stats.allowed.fetch_add(1, Ordering::Relaxed);
            }
            Err(why) => self.stats.count_refusal(*why),
        }
        outcome
    }

    /// A genuine token's decision for this CONNECT at `now`.
    fn token_grant(
        &self,
        token: &VerifiedToken,
        client_id: &str,
        connect_username: Option<&str>,
        now: u64,
    ) -> Result<Grant, Refusal> {
        token.check_time(now).map_err(|_| Refusal::BadCredentials)?;
        if token.client_id.as_deref().is_some_and(|id| id != client_id) {
            return Err(Refusal::NotAuthorized);
        }
        let username = match (token.subject.as_deref(), connect_username) {
            (Some(sub), Some(name)) if sub != name => return Err(Refusal::BadCredentials),
            (Some(sub), _) => Some(sub),
            (None, name) => name,
        };
        Ok(self.grant(
            client_id,
            username,
            Origin::Token,
            token.grants.clone(),
            token.expires_at,
        ))
    }

    /// What a password-file user who gave the right password may do.
    fn password_grant(
        &self,
        client_id: &str,
        username: &str,
        entry: &password::UserEntry,
    ) -> Grant {
        self.grant(
            client_id,
            Some(username),
            Origin::Password(fingerprint(&entry.hash)),
            None,
            None,
        )
    }

    fn grant(
        &self,
        client_id: &str,
        username: Option<&str>,
        origin: Origin,
        token: Option<Arc<TokenGrants>>,
        expires_at: Option<u64>,
    ) -> Grant {
        Grant {
            acl: self.bind(client_id, username, origin, token),
            expires_at,
        }
    }

    fn bind(
        &self,
        client_id: &str,
        username: Option<&str>,
        origin: Origin,
        token: Option<Arc<TokenGrants>>,
    ) -> ClientAcl {
        if self.is_open() && token.is_none() {
            return ClientAcl::unrestricted();
        }
        let (user_root, patterns_grant) = match &self.acl {
            Some(acl) => {
                let subject = acl.subject(username, client_id);
                (subject.user_root(), subject.patterns_grant())
            }
            None => (None, true),
        };
        ClientAcl(Some(Box::new(Bound {
            acl: self.acl.clone(),
            user_root,
            patterns_grant,
            client_id: client_id.into(),
            username: username.map(Into::into),
            token,
            origin,
        })))
    }

    /// After a reload: the connection's rules under this (new) generation, or the reason
    /// it is no longer admitted. `client_id` and `connect_username` are the connection's
    /// (needed for connections admitted while nothing was configured, whose
    /// [`ClientAcl`] holds nothing).
    pub fn rebind(
        &self,
        current: &ClientAcl,
        client_id: &str,
        connect_username: Option<&str>,
    ) -> Result<ClientAcl, Refusal> {
        let (origin, username, token) = match &current.0 {
            Some(b) => (b.origin.clone(), b.username.as_deref(), b.token.clone()),
            None => (Origin::Anonymous, connect_username, None),
        };
        let still_admitted = match &origin {
            Origin::Anonymous => {
                self.allow_anonymous && !(self.verifies_usernames() && connect_username.is_some())
            }
            Origin::Password(print) => self
                .passwords
                .as_ref()
                .and_then(|p| username.and_then(|u| p.get(u)))
                .is_some_and(|entry| fingerprint(&entry.hash) == *print),
            Origin::Token => self.jwt.is_some(),
            Origin::Certificate => self.cn_as_username,
        };
        if !still_admitted {
            return Err(Refusal::NotAuthorized);
        }
        let username = match origin {
            Origin::Anonymous if self.verifies_usernames() => None,
            _ => username,
        };
        Ok(self.bind(client_id, username, origin, token))
    }
}

/// A stand-in for a hash, to tell on reload whether a user's password changed.
fn fingerprint(hash: &password::PasswordHash) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    hash.hash(&mut hasher);
    hasher.finish()
}

/// Why a bounded read failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    TooLarge,
    Io(io::Error),
}

/// Reads a whole file of at most `max` bytes.
pub(crate) fn read_bounded(path: &Path, max: usize) -> Result<Vec<u8>, ReadError> {
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() > max {
        return Err(ReadError::TooLarge);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests;
