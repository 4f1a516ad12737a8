//! The facade: who is admitted, with what rules, through the pool and the cache.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use super::jwt::tests::{NOW, SECRET, hs256};
use super::*;

/// mosquitto_passwd -H sha512 (fast to verify, so the pool tests stay quick).
const CAROL_6: &str = "carol:$6$2nOhqxG1whzlSWKp$iY2uo3SdX0WirZ26a1wD74XWGyEtEGbl2K2M87ZSGruqfhM62ZybeB8/fsQc0tVOOVAcVECHsXVonsp7G8NHjA==";
const CAROL_PASSWORD: &[u8] = b"hunter2";
/// mosquitto_passwd (2.0 default, $7$ with 101 iterations).
const ALICE_7: &str = "alice:$7$101$ir/p3/xXSkdt03Yj$lh7WKjUabjH6NZCzmEzHKSa3Rc1ZmtC6R8C/azCgE8rzifXA1p9oU+tjjHZH6ni6kY1x8K4xNLS0ZOAyHL5c7A==";

struct Rig {
    auth: Arc<Authenticator>,
    stats: Arc<AuthStats>,
    reply: ReplyTo,
    replies: Replies,
    pool: Option<VerifyPool>,
}

impl Rig {
    fn new(sources: Sources) -> Rig {
        Rig::with(sources, 16, 1024, Arc::new(|| {}))
    }

    /// One pool thread with a queue of `queue` jobs, a cache of `cache` credentials, and
    /// `wake` called on the pool thread for each answer.
    fn with(
        sources: Sources,
        queue: usize,
        cache: usize,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Rig {
        let pool = VerifyPool::start(PoolConfig { threads: 1, queue }).unwrap();
        let stats = Arc::new(AuthStats::default());
        let auth = Arc::new(Authenticator::new(
            sources,
            Some(pool.handle()),
            Arc::clone(&stats),
            cache,
        ));
        let (reply, replies) = reply_channel(8, wake);
        Rig {
            auth,
            stats,
            reply,
            replies,
            pool: Some(pool),
        }
    }

    fn connect(&self, creds: Credentials<'_>, now: u64) -> Decision {
        self.auth.authenticate(&creds, &self.reply, 99, now)
    }

    /// Connects, waiting for the pool when the CONNECT is parked.
    fn connect_and_wait(&self, creds: Credentials<'_>, now: u64) -> Result<Grant, Refusal> {
        match self.connect(creds, now) {
            Decision::Allowed(grant) => Ok(grant),
            Decision::Refused(why) => Err(why),
            Decision::Parked => {
                let verified = wait(&self.replies);
                assert_eq!(verified.ticket, 99);
                verified.outcome
            }
        }
    }

    fn count(&self, counter: fn(&AuthStats) -> &std::sync::atomic::AtomicU64) -> u64 {
        counter(&self.stats).load(Ordering::Relaxed)
    }

    /// Drops the authenticator and waits for the pool's thread to end.
    fn shutdown(self) {
        drop(self.auth);
        if let Some(pool) = self.pool {
            pool.shutdown();
        }
    }
}

/// A wake callback that holds the pool thread until the test lets it go, so that the
/// pool's state is known at every step.
struct Gate {
    entered: crossbeam_channel::Receiver<()>,
    open: crossbeam_channel::Sender<()>,
}

impl Gate {
    fn new() -> (Gate, Arc<dyn Fn() + Send + Sync>) {
        let (entered_tx, entered) = crossbeam_channel::unbounded::<()>();
        let (open, gate_rx) = crossbeam_channel::unbounded::<()>();
        let wake = Arc::new(move || {
            entered_tx.send(()).unwrap();
            gate_rx.recv().unwrap();
        });
        (Gate { entered, open }, wake)
    }

    /// Waits until the pool thread is held in the callback.
    fn entered(&self) {
        self.entered.recv().unwrap();
    }

    /// Lets the held thread go on.
    fn open(&self) {
        self.open.send(()).unwrap();
    }
}

/// Carol's password file only.
fn carol_only() -> Sources {
    Sources {
        passwords: Some(passwords(&[CAROL_6])),
        ..Sources::default()
    }
}

/// The pool's answer. Waits on the pool thread, not on a clock: the bound only stops a
/// broken pool from hanging the test run.
fn wait(replies: &Replies) -> Verified {
    for _ in 0..60_000 {
        if let Some(v) = replies.try_recv() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("the verification pool never answered");
}

fn passwords(lines: &[&str]) -> PasswordFile {
    PasswordFile::parse(lines.join("\n").as_bytes()).unwrap()
}

fn creds<'a>(
    client_id: &'a str,
    username: Option<&'a str>,
    password: Option<&'a [u8]>,
) -> Credentials<'a> {
    Credentials {
        client_id,
        username,
        password,
        ..Credentials::default()
    }
}

#[test]
fn auth_refusal_codes_for_both_versions() {
    let table = [
        (Refusal::BadCredentials, 0x86, 0x04),
        (Refusal::NotAuthorized, 0x87, 0x05),
        (Refusal::Banned, 0x8A, 0x05),
        (Refusal::BadAuthMethod, 0x8C, 0x04),
        (Refusal::ServerBusy, 0x89, 0x03),
    ];
    for (refusal, v5, v311) in table {
        assert_eq!(refusal.reason_code().0, v5, "{refusal:?}");
        assert_eq!(refusal.return_code().0, v311, "{refusal:?}");
    }
}

#[test]
fn auth_allow_anonymous_default_depends_on_credential_sources() {
    let mut config = AuthConfig::default();
    assert!(config.allow_anonymous());
    config.acl_file = Some("acl".into());
    assert!(
        config.allow_anonymous(),
        "an ACL file alone keeps anonymous"
    );
    for set in [
        |c: &mut AuthConfig| c.password_file = Some("p".into()),
        |c: &mut AuthConfig| c.jwt_key_file = Some("k".into()),
        |c: &mut AuthConfig| c.client_ca = true,
    ] {
        let mut c = AuthConfig::default();
        set(&mut c);
        assert!(!c.allow_anonymous());
        c.allow_anonymous = Some(true);
        assert!(c.allow_anonymous());
    }
    let c = AuthConfig {
        allow_anonymous: Some(false),
        ..AuthConfig::default()
    };
    assert!(!c.allow_anonymous());
}

#[test]
fn auth_open_configuration_admits_everybody_unrestricted() {
    let auth = Arc::new(Authenticator::open(Arc::new(AuthStats::default())));
    let (reply, _replies) = reply_channel(1, Arc::new(|| {}));
    let decision = auth.authenticate(&creds("c1", Some("anyone"), Some(b"x")), &reply, 1, NOW);
    let Decision::Allowed(grant) = decision else {
        panic!("{decision:?}")
    };
    assert!(grant.acl.is_unrestricted());
    assert!(grant.acl.may_publish("a/b"));
    assert!(!grant.acl.may_publish("$SYS/broker/uptime"));
    assert!(grant.acl.may_receive("$SYS/broker/uptime"));
    assert_eq!(
        grant.acl.may_subscribe("#"),
        SubscribeVerdict::Allowed {
            check_each_delivery: false
        }
    );
    // MQTT 5 enhanced authentication is not offered.
    let with_method = Credentials {
        auth_method: Some("SCRAM-SHA-1"),
        ..creds("c1", None, None)
    };
    assert!(matches!(
        auth.authenticate(&with_method, &reply, 1, NOW),
        Decision::Refused(Refusal::BadAuthMethod)
    ));
}

#[test]
fn auth_password_checked_on_the_pool_then_cached() {
    let rig = Rig::new(Sources {
        passwords: Some(passwords(&[CAROL_6, ALICE_7])),
        ..Sources::default()
    });
    let carol = creds("c1", Some("carol"), Some(CAROL_PASSWORD));
    assert!(matches!(rig.connect(carol, NOW), Decision::Parked));
    let grant = wait(&rig.replies).outcome.unwrap();
    assert_eq!(grant.acl.username(), Some("carol"));
    assert_eq!(grant.expires_at, None);
    assert_eq!(rig.count(|s| &s.hashes_computed), 1);

    // A reconnect: answered at once from the cache, no hash computed.
    let Decision::Allowed(again) = rig.connect(carol, NOW) else {
        panic!("expected a cache hit")
    };
    assert_eq!(again.acl.username(), Some("carol"));
    assert_eq!(rig.count(|s| &s.hashes_computed), 1);
    assert_eq!(rig.count(|s| &s.cache_hits), 1);
    assert_eq!(rig.count(|s| &s.cache_misses), 1);

    // A wrong password: the pool says no, and so does the cache the second time.
    let wrong = creds("c1", Some("carol"), Some(b"hunter3"));
    assert_eq!(
        rig.connect_and_wait(wrong, NOW).unwrap_err(),
        Refusal::BadCredentials
    );
    assert!(matches!(
        rig.connect(wrong, NOW),
        Decision::Refused(Refusal::BadCredentials)
    ));
    assert_eq!(rig.count(|s| &s.hashes_computed), 2);

    // $7$ from mosquitto_passwd.
    let alice = creds("c2", Some("alice"), Some(b"secret1"));
    assert!(rig.connect_and_wait(alice, NOW).is_ok());

    // Unknown user, or no password: refused at once, no hash.
    for c in [
        creds("c3", Some("mallory"), Some(b"x")),
        creds("c3", Some("carol"), None),
        creds("c3", None, Some(b"x")),
    ] {
        assert!(matches!(
            rig.connect(c, NOW),
            Decision::Refused(Refusal::BadCredentials)
        ));
    }
    assert_eq!(rig.count(|s| &s.hashes_computed), 3);
    // Anonymous: not allowed by default with a password file.
    assert!(matches!(
        rig.connect(creds("c4", None, None), NOW),
        Decision::Refused(Refusal::NotAuthorized)
    ));
    assert_eq!(rig.count(|s| &s.refused_bad_credentials), 5);
    assert_eq!(rig.count(|s| &s.refused_not_authorized), 1);
    assert_eq!(rig.count(|s| &s.allowed), 3);
}

#[test]
fn auth_anonymous_allowed_beside_a_password_file() {
    let rig = Rig::new(Sources {
        passwords: Some(passwords(&[CAROL_6])),
        allow_anonymous: true,
        ..Sources::default()
    });
    let Decision::Allowed(grant) = rig.connect(creds("c1", None, None), NOW) else {
        panic!()
    };
    assert_eq!(grant.acl.username(), None);
    // A username that nothing can verify is refused, not treated as anonymous.
    assert!(matches!(
        rig.connect(creds("c1", Some("bob"), None), NOW),
        Decision::Refused(Refusal::BadCredentials)
    ));
}

#[test]
fn auth_full_queue_refuses_with_server_busy() {
    // One pool thread held by the gate, a queue of one, no cache: every CONNECT needs
    // the pool.
    let (gate, wake) = Gate::new();
    let rig = Rig::with(carol_only(), 1, 0, wake);
    let (auth, stats, reply, replies) = (&rig.auth, &rig.stats, &rig.reply, &rig.replies);
    let carol = creds("c1", Some("carol"), Some(CAROL_PASSWORD));

    assert!(matches!(
        auth.authenticate(&carol, reply, 1, NOW),
        Decision::Parked
    ));
    gate.entered(); // the thread is answering job 1, held in the wake callback
    assert!(matches!(
        auth.authenticate(&carol, reply, 2, NOW),
        Decision::Parked
    ));
    // The queue (one job) is full.
    assert!(matches!(
        auth.authenticate(&carol, reply, 3, NOW),
        Decision::Refused(Refusal::ServerBusy)
    ));
    assert_eq!(stats.refused_busy.load(Ordering::Relaxed), 1);
    gate.open();
    gate.entered();
    gate.open();
    let tickets: Vec<u64> = (0..2).map(|_| wait(replies).ticket).collect();
    assert_eq!(tickets, [1, 2]);
    assert_eq!(stats.hashes_computed.load(Ordering::Relaxed), 2);
    rig.shutdown();
}

#[test]
fn auth_a_storm_of_one_credential_is_hashed_once() {
    let (gate, wake) = Gate::new();
    let rig = Rig::with(carol_only(), 8, 64, wake);
    let (auth, stats, reply, replies) = (&rig.auth, &rig.stats, &rig.reply, &rig.replies);
    // The thread is held answering another CONNECT…
    let other = creds("c0", Some("carol"), Some(b"not the password"));
    assert!(matches!(
        auth.authenticate(&other, reply, 0, NOW),
        Decision::Parked
    ));
    gate.entered();
    // …while three reconnects with one credential queue behind it.
    let carol = creds("c1", Some("carol"), Some(CAROL_PASSWORD));
    for ticket in 1..=3 {
        assert!(matches!(
            auth.authenticate(&carol, reply, ticket, NOW),
            Decision::Parked
        ));
    }
    gate.open();
    for _ in 0..3 {
        gate.entered();
        gate.open();
    }
    assert!(wait(replies).outcome.is_err());
    for _ in 0..3 {
        assert!(wait(replies).outcome.is_ok());
    }
    // The two queued behind the first of them found its answer in the cache.
    assert_eq!(stats.hashes_computed.load(Ordering::Relaxed), 2);
    assert_eq!(stats.cache_hits.load(Ordering::Relaxed), 2);
    rig.shutdown();
}

#[test]
fn auth_shard_outstanding_bound_refuses_with_server_busy() {
    let rig = Rig::new(carol_only());
    let (reply, replies) = reply_channel(1, Arc::new(|| {}));
    let carol = creds("c1", Some("carol"), Some(b"not in the cache 1"));
    let other = creds("c1", Some("carol"), Some(b"not in the cache 2"));
    assert!(matches!(
        rig.auth.authenticate(&carol, &reply, 1, NOW),
        Decision::Parked
    ));
    // This shard already has its one job outstanding (answered or not, until received).
    assert!(matches!(
        rig.auth.authenticate(&other, &reply, 2, NOW),
        Decision::Refused(Refusal::ServerBusy)
    ));
    assert_eq!(wait(&replies).ticket, 1);
    assert!(matches!(
        rig.auth.authenticate(&other, &reply, 3, NOW),
        Decision::Parked
    ));
    assert_eq!(wait(&replies).ticket, 3);
}

fn jwt_rig(acl: Option<&str>) -> Rig {
    Rig::new(Sources {
        jwt: Some(JwtVerifier::from_key(SECRET, None).unwrap()),
        acl: acl.map(|text| Acl::parse(text.as_bytes()).unwrap()),
        ..Sources::default()
    })
}

#[test]
fn auth_token_checked_on_the_pool_cached_and_rechecked_for_time() {
    let rig = jwt_rig(None);
    let token = hs256(&json!({"sub": "alice", "exp": NOW + 100}));
    let c = creds("c1", None, Some(token.as_bytes()));
    let grant = rig.connect_and_wait(c, NOW).unwrap();
    assert_eq!(grant.expires_at, Some(NOW + 100));
    assert_eq!(grant.acl.username(), Some("alice"));
    assert_eq!(rig.count(|s| &s.tokens_checked), 1);
    // Cached: no second signature check...
    assert!(matches!(rig.connect(c, NOW + 50), Decision::Allowed(_)));
    assert_eq!(rig.count(|s| &s.tokens_checked), 1);
    // ...but the time window is checked on every use.
    assert!(matches!(
        rig.connect(c, NOW + 100),
        Decision::Refused(Refusal::BadCredentials)
    ));
    // Expired or not yet valid when first seen.
    let expired = hs256(&json!({"exp": NOW - 1}));
    assert_eq!(
        rig.connect_and_wait(creds("c1", None, Some(expired.as_bytes())), NOW)
            .unwrap_err(),
        Refusal::BadCredentials
    );
    let early = hs256(&json!({"nbf": NOW + 10}));
    assert_eq!(
        rig.connect_and_wait(creds("c1", None, Some(early.as_bytes())), NOW)
            .unwrap_err(),
        Refusal::BadCredentials
    );
    // A forged token.
    let forged = format!("{}x", hs256(&json!({"sub": "alice"})));
    assert_eq!(
        rig.connect_and_wait(creds("c1", None, Some(forged.as_bytes())), NOW)
            .unwrap_err(),
        Refusal::BadCredentials
    );
}

#[test]
fn auth_token_binds_username_and_client_id() {
    let rig = jwt_rig(None);
    let token = hs256(&json!({"sub": "alice", "clientid": "phone"}));
    let t = Some(token.as_bytes());
    assert!(
        rig.connect_and_wait(creds("phone", Some("alice"), t), NOW)
            .is_ok()
    );
    assert_eq!(
        rig.connect_and_wait(creds("phone", Some("bob"), t), NOW)
            .unwrap_err(),
        Refusal::BadCredentials
    );
    assert_eq!(
        rig.connect_and_wait(creds("laptop", Some("alice"), t), NOW)
            .unwrap_err(),
        Refusal::NotAuthorized
    );
    // No `sub`: the CONNECT username stands.
    let anonymous_token = hs256(&json!({}));
    let grant = rig
        .connect_and_wait(
            creds("c", Some("zed"), Some(anonymous_token.as_bytes())),
            NOW,
        )
        .unwrap();
    assert_eq!(grant.acl.username(), Some("zed"));
}

#[test]
fn auth_token_from_the_username_field() {
    let rig = Rig::new(Sources {
        jwt: Some(JwtVerifier::from_key(SECRET, None).unwrap()),
        jwt_from: TokenSource::Username,
        ..Sources::default()
    });
    let token = hs256(&json!({"sub": "alice"}));
    let grant = rig
        .connect_and_wait(creds("c", Some(&token), Some(b"ignored")), NOW)
        .unwrap();
    assert_eq!(grant.acl.username(), Some("alice"));
    assert_eq!(
        rig.connect_and_wait(creds("c", Some("not-a-token"), None), NOW)
            .unwrap_err(),
        Refusal::BadCredentials
    );
}

#[test]
fn auth_token_claims_replace_file_grants_but_not_file_denies() {
    let rig = jwt_rig(Some(
        "pattern readwrite dev/%c/#\n\
         topic deny dev/c1/locked\n\
         user alice\n\
         topic readwrite files/#\n\
         topic deny dev/c1/secret\n",
    ));
    // With a claim: only the claim grants.
    let token = hs256(&json!({
        "sub": "alice",
        "acl": {"pub": ["dev/%c/out"], "sub": ["dev/%c/#"]}
    }));
    let acl = rig
        .connect_and_wait(creds("c1", None, Some(token.as_bytes())), NOW)
        .unwrap()
        .acl;
    assert!(acl.may_publish("dev/c1/out"));
    assert!(!acl.may_publish("dev/c1/in")); // the file's pattern would allow it
    assert!(!acl.may_publish("files/a")); // so would alice's block
    assert!(acl.may_receive("dev/c1/in"));
    assert!(!acl.may_receive("dev/c1/secret")); // the file's deny stays
    assert_eq!(
        acl.may_subscribe("dev/c1/#"),
        SubscribeVerdict::Allowed {
            check_each_delivery: true
        }
    );
    assert_eq!(acl.may_subscribe("files/#"), SubscribeVerdict::Refused);
    assert_eq!(
        acl.may_subscribe("dev/c1/secret"),
        SubscribeVerdict::Refused
    );

    // Without a claim: the file decides, for the token's `sub`.
    let plain = hs256(&json!({"sub": "alice"}));
    let acl = rig
        .connect_and_wait(creds("c1", None, Some(plain.as_bytes())), NOW)
        .unwrap()
        .acl;
    assert!(acl.may_publish("dev/c1/in"));
    assert!(acl.may_publish("files/a"));
    assert!(!acl.may_publish("dev/c1/secret"));
    assert!(!acl.may_publish("other"));
}

#[test]
fn auth_certificate_cn_as_username() {
    let rig = Rig::new(Sources {
        cn_as_username: true,
        acl: Some(Acl::parse(b"user device-17\ntopic write telemetry/#\n").unwrap()),
        ..Sources::default()
    });
    let with_cert = Credentials {
        certificate_cn: Some("device-17"),
        username: Some("spoofed"),
        ..creds("c", None, None)
    };
    let Decision::Allowed(grant) = rig.connect(with_cert, NOW) else {
        panic!()
    };
    assert_eq!(grant.acl.username(), Some("device-17"));
    assert!(grant.acl.may_publish("telemetry/x"));
    // Without a certificate a username proves nothing.
    assert!(matches!(
        rig.connect(creds("c", Some("device-17"), None), NOW),
        Decision::Refused(Refusal::BadCredentials)
    ));
}

#[test]
fn auth_rebind_after_reload() {
    let stats = Arc::new(AuthStats::default());
    let rig = Rig::new(Sources {
        passwords: Some(passwords(&[CAROL_6, ALICE_7])),
        acl: Some(Acl::parse(b"user carol\ntopic read a/#\n").unwrap()),
        ..Sources::default()
    });
    let carol = rig
        .connect_and_wait(creds("c1", Some("carol"), Some(CAROL_PASSWORD)), NOW)
        .unwrap()
        .acl;
    assert!(!carol.may_publish("a/x"));

    // Same password, new rules: carol stays and gets the new rules at once.
    let new_rules = Authenticator::new(
        Sources {
            passwords: Some(passwords(&[CAROL_6])),
            acl: Some(Acl::parse(b"user carol\ntopic readwrite a/#\n").unwrap()),
            ..Sources::default()
        },
        None,
        Arc::clone(&stats),
        0,
    );
    let rebound = new_rules.rebind(&carol, "c1", Some("carol")).unwrap();
    assert!(rebound.may_publish("a/x"));

    // Password changed or user removed: no longer admitted.
    let changed = Authenticator::new(
        Sources {
            passwords: Some(passwords(&[&ALICE_7.replace("alice", "carol")])),
            ..Sources::default()
        },
        None,
        Arc::clone(&stats),
        0,
    );
    assert_eq!(
        changed.rebind(&carol, "c1", Some("carol")).unwrap_err(),
        Refusal::NotAuthorized
    );
    let removed = Authenticator::new(
        Sources {
            passwords: Some(passwords(&[ALICE_7])),
            ..Sources::default()
        },
        None,
        Arc::clone(&stats),
        0,
    );
    assert!(removed.rebind(&carol, "c1", Some("carol")).is_err());

    // An anonymous client of an open broker, after a password file appears.
    let open = ClientAcl::unrestricted();
    assert!(removed.rebind(&open, "c9", None).is_err());
    let open_again = Authenticator::open(Arc::clone(&stats));
    assert!(open_again.rebind(&open, "c9", Some("x")).is_ok());
}

#[test]
fn auth_load_reads_files_and_names_bad_lines() {
    let dir = std::env::temp_dir().join(format!("ringmq-auth-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pw = dir.join("passwords");
    let acl = dir.join("acl");
    std::fs::write(&pw, format!("{CAROL_6}\n")).unwrap();
    std::fs::write(&acl, "user carol\ntopic read #\nbogus line\n").unwrap();
    let pool = VerifyPool::start(PoolConfig::default()).unwrap();
    let config = AuthConfig {
        password_file: Some(pw.clone()),
        acl_file: Some(acl.clone()),
        ..AuthConfig::default()
    };
    let stats = Arc::new(AuthStats::default());
    let err = Authenticator::load(&config, Some(pool.handle()), Arc::clone(&stats)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "ACL file {}: line 3: unknown keyword \"bogus\" (expected \"user\", \"topic\" or \"pattern\")",
            acl.display()
        )
    );
    std::fs::write(&acl, "user carol\ntopic read #\n").unwrap();
    let auth = Authenticator::load(&config, Some(pool.handle()), Arc::clone(&stats)).unwrap();
    assert_eq!(auth.acl().unwrap().rule_count(), 1);
    assert!(matches!(
        Authenticator::load(&config, None, stats),
        Err(LoadError::NoPool)
    ));
    drop(auth);
    pool.shutdown();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn auth_pool_shutdown_does_not_wait_for_generations_to_drop() {
    let pool = VerifyPool::start(PoolConfig::default()).unwrap();
    let auth = Arc::new(Authenticator::new(
        carol_only(),
        Some(pool.handle()),
        Arc::new(AuthStats::default()),
        16,
    ));
    pool.shutdown(); // `auth` still holds a handle
    let (reply, _replies) = reply_channel(1, Arc::new(|| {}));
    let carol = creds("c1", Some("carol"), Some(CAROL_PASSWORD));
    assert!(matches!(
        auth.authenticate(&carol, &reply, 1, NOW),
        Decision::Refused(Refusal::ServerBusy)
    ));
}
