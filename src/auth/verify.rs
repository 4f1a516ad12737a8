//! Off the shards: the verification pool, the cache of verified credentials, and the
//! counters.
//!
//! Password hashes are slow on purpose (tens of milliseconds for argon2id) and RS256/ES256
//! signatures cost tens of microseconds, so no shard computes them. A shard that needs one
//! parks the CONNECT and hands a job to the [`VerifyPool`]: a few plain threads reading
//! one bounded queue. The answer comes back on the shard's own bounded reply channel
//! ([`Replies`]), which the shard drains each loop turn without blocking; the pool calls
//! the shard's wake callback after each answer so a sleeping shard looks.
//!
//! Bounds, and what happens at them:
//!
//! - The pool's queue holds [`PoolConfig::queue`] jobs. When it is full, the CONNECT is
//!   refused at once with "server busy" (MQTT 5: 0x89 Server busy; 3.1.1: 0x03 Server
//!   unavailable) and counted in [`AuthStats::refused_busy`]: a flood of new clients meets
//!   a fast, explicit answer instead of a queue of minutes.
//! - Each shard has at most [`ReplyTo`]'s `capacity` jobs outstanding; past that its
//!   CONNECTs are refused the same way. That is also the reply channel's size, so the pool
//!   never waits on a slow shard.
//! - The [`CredentialCache`] holds at most its capacity of verified credentials; past that
//!   the oldest entry goes. It is keyed by HMAC-SHA256 of the username and password under a
//!   random per-process key: it never holds a password, and its keys are useless outside
//!   this process. A reload builds a new [`Authenticator`] and with it
//!   an empty cache, so a changed password file takes effect for every client at once.
//!
//! The cache is read by shards: striped locks, and a shard only ever *tries* a stripe's
//! lock — a stripe busy with another thread counts as a miss and the CONNECT goes to the
//! pool, so no shard ever waits on a lock.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use hmac::{KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{Authenticator, Grant, Refusal};

/// Counters for authentication, shared by every generation of the
/// [`Authenticator`] (they survive reloads) and read by `/metrics`.
#[derive(Debug, Default)]
pub struct AuthStats {
    /// Connections allowed (any way: anonymous, password, token, certificate).
    pub allowed: AtomicU64,
    /// Credentials found in the cache (no hash computed).
    pub cache_hits: AtomicU64,
    /// Credentials not in the cache (sent to the pool).
    pub cache_misses: AtomicU64,
    /// Password hashes computed (`$6$`, `$7$`, argon2id).
    pub hashes_computed: AtomicU64,
    /// Token signatures checked.
    pub tokens_checked: AtomicU64,
    /// Refused: bad username or password, bad or expired token.
    pub refused_bad_credentials: AtomicU64,
    /// Refused: not authorized (anonymous not allowed, token for another client id).
    pub refused_not_authorized: AtomicU64,
    /// Refused: banned.
    pub refused_banned: AtomicU64,
    /// Refused: an MQTT 5 authentication method this broker does not offer.
    pub refused_bad_method: AtomicU64,
    /// Refused: the pool's queue or the shard's outstanding-job bound was full.
    pub refused_busy: AtomicU64,
}

impl AuthStats {
    pub(crate) fn count_refusal(&self, refusal: Refusal) {
        let counter = match refusal {
            Refusal::BadCredentials => &self.refused_bad_credentials,
            Refusal::NotAuthorized => &self.refused_not_authorized,
            Refusal::Banned => &self.refused_banned,
            Refusal::BadAuthMethod => &self.refused_bad_method,
            Refusal::ServerBusy => &self.refused_busy,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters' current values, named as `/metrics` shows them.
    pub fn snapshot(&self) -> [(&'static str, u64); 10] {
        let v = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("auth_allowed_total", v(&self.allowed)),
            ("auth_cache_hits_total", v(&self.cache_hits)),
            ("auth_cache_misses_total", v(&self.cache_misses)),
            ("auth_hashes_computed_total", v(&self.hashes_computed)),
            ("auth_tokens_checked_total", v(&self.tokens_checked)),
            (
                "auth_refused_bad_credentials_total",
                v(&self.refused_bad_credentials),
            ),
            (
                "auth_refused_not_authorized_total",
                v(&self.refused_not_authorized),
            ),
            ("auth_refused_banned_total", v(&self.refused_banned)),
            ("auth_refused_bad_method_total", v(&self.refused_bad_method)),
            ("auth_refused_busy_total", v(&self.refused_busy)),
        ]
    }
}

/// The answer to one parked CONNECT.
#[derive(Debug)]
pub struct Verified {
    /// The ticket the shard gave when it parked the CONNECT.
    pub ticket: u64,
    pub outcome: Result<Grant, Refusal>,
}

/// Where the pool sends a shard's answers. Cloned into each job; created with
/// [`reply_channel`].
#[derive(Clone)]
pub struct ReplyTo {
    tx: Sender<Verified>,
    outstanding: Arc<AtomicUsize>,
    capacity: usize,
    wake: Arc<dyn Fn() + Send + Sync>,
}

impl fmt::Debug for ReplyTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ReplyTo {{ outstanding: {}, capacity: {} }}",
            self.outstanding.load(Ordering::Relaxed),
            self.capacity
        )
    }
}

impl ReplyTo {
    /// Takes one of the shard's outstanding-job slots, if one is free.
    fn reserve(&self) -> bool {
        self.outstanding
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok()
    }

    fn release(&self) {
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
    }

    fn send(&self, verified: Verified) {
        // The channel holds `capacity` answers and at most `capacity` jobs are
        // outstanding, so it always has room; if the shard has gone, the answer is moot.
        let _ = self.tx.try_send(verified);
        (self.wake)();
    }
}

/// A shard's end of its reply channel.
#[derive(Debug)]
pub struct Replies {
    rx: Receiver<Verified>,
    outstanding: Arc<AtomicUsize>,
}

impl Replies {
    /// The next answer, if one is waiting. Never blocks.
    pub fn try_recv(&self) -> Option<Verified> {
        let verified = self.rx.try_recv().ok()?;
        // The slot is free once the shard holds the answer.
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
        Some(verified)
    }

    /// Jobs submitted by this shard and not yet answered and received.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }
}

/// A reply channel for one shard: at most `capacity` CONNECTs of this shard wait on the
/// pool at once. `wake` is called (on a pool thread) after each answer is sent; it must be
/// cheap and must not block (an eventfd write, an `IORING_OP_MSG_RING` doorbell).
pub fn reply_channel(capacity: usize, wake: Arc<dyn Fn() + Send + Sync>) -> (ReplyTo, Replies) {
    let capacity = capacity.max(1);
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let outstanding = Arc::new(AtomicUsize::new(0));
    (
        ReplyTo {
            tx,
            outstanding: Arc::clone(&outstanding),
            capacity,
            wake,
        },
        Replies { rx, outstanding },
    )
}

/// What a job checks.
pub(crate) enum Work {
    Password {
        username: Box<str>,
        password: Zeroizing<Vec<u8>>,
    },
    Token {
        token: Zeroizing<Vec<u8>>,
        /// The CONNECT username, when the token came in the password.
        username: Option<Box<str>>,
    },
}

/// One parked CONNECT on its way through the pool.
pub(crate) struct Job {
    /// The generation that parked it: the answer is judged by the rules in force then.
    pub auth: Arc<Authenticator>,
    pub work: Work,
    pub client_id: Box<str>,
    pub key: CacheKey,
    pub now: u64,
    pub ticket: u64,
    pub reply: ReplyTo,
}

/// Sizes of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Verification threads. Each argon2id check holds its memory cost (19 MiB for new
    /// hashes) while it runs.
    pub threads: usize,
    /// Jobs waiting for a thread, across all shards.
    pub queue: usize,
}

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig {
            threads: 2,
            queue: 1024,
        }
    }
}

/// The handle shards use to submit jobs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PoolHandle {
    jobs: Sender<Job>,
}

impl PoolHandle {
    /// Queues a job, or hands it back when the queue is full.
    pub(crate) fn submit(&self, job: Job) -> Result<(), Refusal> {
        if !job.reply.reserve() {
            return Err(Refusal::ServerBusy);
        }
        let reply = job.reply.clone();
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                reply.release();
                Err(Refusal::ServerBusy)
            }
        }
    }
}

/// The verification threads.
pub struct VerifyPool {
    handle: PoolHandle,
    /// Dropped by [`VerifyPool::shutdown`]: the threads stop even while generations of the
    /// `Authenticator` (which hold pool handles) are still alive.
    stop: Sender<()>,
    workers: Vec<JoinHandle<()>>,
}

impl VerifyPool {
    /// Starts `config.threads` threads named `ringmq-auth-N`.
    pub fn start(config: PoolConfig) -> std::io::Result<VerifyPool> {
        let (tx, rx) = crossbeam_channel::bounded::<Job>(config.queue.max(1));
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let mut workers = Vec::new();
        for i in 0..config.threads.max(1) {
            let rx = rx.clone();
            let stopped = stopped.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("ringmq-auth-{i}"))
                    .spawn(move || {
                        loop {
                            crossbeam_channel::select! {
                                recv(rx) -> job => match job {
                                    Ok(job) => run(job),
                                    Err(_) => break,
                                },
                                recv(stopped) -> _ => break,
                            }
                        }
                    })?,
            );
        }
        Ok(VerifyPool {
            handle: PoolHandle { jobs: tx },
            stop,
            workers,
        })
    }

    pub fn handle(&self) -> PoolHandle {
        self.handle.clone()
    }

    /// Stops the threads once each finishes the check in hand, and waits for them. Jobs
    /// still queued are dropped unanswered (their shards are stopping too); later
    /// submissions are refused as busy.
    pub fn shutdown(self) {
        drop(self.stop);
        for worker in self.workers {
            let _ = worker.join();
        }
    }
}

fn run(job: Job) {
    let Job {
        auth,
        work,
        client_id,
        key,
        now,
        ticket,
        reply,
    } = job;
    let outcome = auth.finish_parked(&work, &client_id, key, now);
    reply.send(Verified { ticket, outcome });
}

/// A cache key: HMAC-SHA256 of what was presented. Never the password itself.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

/// What the cache remembers about a key.
#[derive(Debug, Clone)]
pub(crate) enum Cached {
    /// The password is right for this username.
    Password,
    /// The password is wrong for this username.
    WrongPassword,
    /// The token is genuine; its claims (the time window is checked again on each use).
    Token(Arc<super::jwt::VerifiedToken>),
    /// The token is forged or malformed (expiry is not cached: it depends on the clock).
    BadToken,
}

struct Stripe {
    entries: HashMap<CacheKey, Cached>,
    order: VecDeque<CacheKey>,
}

/// The number of independently locked parts of the cache.
const STRIPES: usize = 16;

/// A bounded map from presented credentials to what verifying them found.
pub struct CredentialCache {
    hmac_key: [u8; 32],
    stripes: Box<[Mutex<Stripe>]>,
    per_stripe: usize,
}

impl fmt::Debug for CredentialCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialCache {{ capacity: {} }}", self.capacity())
    }
}

impl CredentialCache {
    /// A cache of about `capacity` entries (rounded up to a multiple of 16; 0 turns it off)
    /// under a fresh random key.
    pub fn new(capacity: usize) -> CredentialCache {
        let mut hmac_key = [0u8; 32];
        getrandom::fill(&mut hmac_key).expect("the system random source is available");
        CredentialCache {
            hmac_key,
            stripes: (0..STRIPES)
                .map(|_| {
                    Mutex::new(Stripe {
                        entries: HashMap::new(),
                        order: VecDeque::new(),
                    })
                })
                .collect(),
            per_stripe: capacity.div_ceil(STRIPES),
        }
    }

    pub fn capacity(&self) -> usize {
        self.per_stripe * STRIPES
    }

    /// The key for `parts`, each length-prefixed so `("ab", "c")` and `("a", "bc")` differ.
    pub fn key(&self, kind: u8, parts: &[&[u8]]) -> CacheKey {
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.hmac_key)
            .expect("HMAC takes any key length");
        mac.update(&[kind]);
        for part in parts {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part);
        }
        CacheKey(mac.finalize().into_bytes().into())
    }

    fn stripe(&self, key: &CacheKey) -> &Mutex<Stripe> {
        &self.stripes[key.0[0] as usize % STRIPES]
    }

    /// Looks a key up without ever waiting: a stripe locked by another thread is a miss.
    pub(crate) fn try_get(&self, key: &CacheKey) -> Option<Cached> {
        if self.per_stripe == 0 {
            return None;
        }
        match self.stripe(key).try_lock() {
            Ok(stripe) => stripe.entries.get(key).cloned(),
            Err(TryLockError::WouldBlock) => None,
            Err(TryLockError::Poisoned(p)) => p.into_inner().entries.get(key).cloned(),
        }
    }

    /// Remembers a result, dropping the stripe's oldest entry when it is full. Called from
    /// pool threads, which may wait for the lock.
    pub(crate) fn insert(&self, key: CacheKey, value: Cached) {
        if self.per_stripe == 0 {
            return;
        }
        let mut stripe = self
            .stripe(&key)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if stripe.entries.insert(key, value).is_none() {
            stripe.order.push_back(key);
            while stripe.entries.len() > self.per_stripe {
                match stripe.order.pop_front() {
                    Some(old) => {
                        stripe.entries.remove(&old);
                    }
                    None => break,
                }
            }
        }
    }

    /// Forgets everything.
    pub fn clear(&self) {
        for stripe in self.stripes.iter() {
            let mut stripe = stripe.lock().unwrap_or_else(|p| p.into_inner());
            stripe.entries.clear();
            stripe.order.clear();
        }
    }

    /// How many entries are held now.
    pub fn len(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).entries.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_cache_is_bounded_and_evicts_oldest() {
        let cache = CredentialCache::new(32); // 2 per stripe
        let keys: Vec<CacheKey> = (0..200u32)
            .map(|i| cache.key(0, &[&i.to_le_bytes()]))
            .collect();
        for k in &keys {
            cache.insert(*k, Cached::Password);
        }
        assert_eq!(cache.len(), 32);
        // The last key inserted into each stripe is still there.
        let last = keys.last().unwrap();
        assert!(cache.try_get(last).is_some());
        assert!(cache.try_get(&keys[0]).is_none());
        cache.clear();
        assert!(cache.is_empty());
        let off = CredentialCache::new(0);
        off.insert(keys[0], Cached::Password);
        assert!(off.try_get(&keys[0]).is_none());
    }

    #[test]
    fn verify_cache_keys_separate_fields_and_processes() {
        let cache = CredentialCache::new(16);
        assert_ne!(cache.key(0, &[b"ab", b"c"]), cache.key(0, &[b"a", b"bc"]));
        assert_ne!(cache.key(0, &[b"a"]), cache.key(1, &[b"a"]));
        assert_eq!(cache.key(0, &[b"a", b"b"]), cache.key(0, &[b"a", b"b"]));
        // Another cache has another random key.
        let other = CredentialCache::new(16);
        assert_ne!(cache.key(0, &[b"a"]), other.key(0, &[b"a"]));
    }

    #[test]
    fn verify_cache_try_get_never_waits() {
        let cache = CredentialCache::new(16);
        let key = cache.key(0, &[b"u", b"p"]);
        cache.insert(key, Cached::Password);
        let guard = cache.stripe(&key).lock().unwrap();
        // Held by "another thread": a miss, not a wait.
        assert!(cache.try_get(&key).is_none());
        drop(guard);
        assert!(cache.try_get(&key).is_some());
    }

    #[test]
    fn verify_reply_channel_bounds_outstanding_jobs() {
        let woken = Arc::new(AtomicUsize::new(0));
        let w = Arc::clone(&woken);
        let (reply, replies) = reply_channel(
            2,
            Arc::new(move || {
                w.fetch_add(1, Ordering::Relaxed);
            }),
        );
        assert!(reply.reserve());
        assert!(reply.reserve());
        assert!(!reply.reserve());
        reply.send(Verified {
            ticket: 7,
            outcome: Err(Refusal::BadCredentials),
        });
        assert_eq!(woken.load(Ordering::Relaxed), 1);
        assert_eq!(replies.outstanding(), 2);
        let got = replies.try_recv().unwrap();
        assert_eq!(got.ticket, 7);
        assert_eq!(replies.outstanding(), 1);
        assert!(replies.try_recv().is_none());
        assert!(reply.reserve());
    }
}
