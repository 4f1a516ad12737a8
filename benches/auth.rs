//! Authorization and authentication costs: an ACL check with 1,000 rules (and 10,000, to
//! show the cost does not grow with the rule count) against no ACL, and one password
//! verification per hash format.
//!
//! `cargo bench -p ringmq --bench auth`. The ACL figures are per check; compare them
//! within one run (the machine is shared and noisy), not across runs.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use ringmq::auth::password::{PasswordHash, hash_argon2id};
use ringmq::auth::{Acl, AuthStats, Authenticator, ClientAcl, Credentials, Decision, Sources};

/// `5 * users` rules in the shape of a real deployment: `users` users with four topic
/// rules each (one of them a deny), and as many patterns.
fn rules(users: usize) -> String {
    let mut text = String::new();
    for p in 0..users {
        text.push_str(&format!("pattern readwrite site{p}/%c/#\n"));
    }
    for u in 0..users {
        text.push_str(&format!(
            "user user{u}\n\
             topic read sensors/+/user{u}/#\n\
             topic write commands/user{u}/+\n\
             topic readwrite shared/room{}/#\n\
             topic deny shared/room{}/admin\n",
            u % 10,
            u % 10
        ));
    }
    text
}

fn client_acl(sources: Sources, username: &str, client_id: &str) -> ClientAcl {
    // Grants come from the facade; the anonymous path admits without a pool.
    let auth = Arc::new(Authenticator::new(
        sources,
        None,
        Arc::new(AuthStats::default()),
        0,
    ));
    let (reply, _replies) = ringmq::auth::reply_channel(1, Arc::new(|| {}));
    let creds = Credentials {
        client_id,
        username: Some(username),
        ..Credentials::default()
    };
    match auth.authenticate(&creds, &reply, 0, 0) {
        Decision::Allowed(grant) => grant.acl,
        other => panic!("{other:?}"),
    }
}

fn acl_checks(c: &mut Criterion) {
    let with_rules = |users: usize| {
        let acl = Acl::parse(rules(users).as_bytes()).unwrap();
        assert_eq!(acl.rule_count(), 5 * users);
        client_acl(
            Sources {
                acl: Some(acl),
                allow_anonymous: true,
                ..Sources::default()
            },
            "user42",
            "dev-7",
        )
    };
    let with_acl = with_rules(200);
    let with_10_000 = with_rules(2_000);
    let without = client_acl(
        Sources {
            allow_anonymous: true,
            ..Sources::default()
        },
        "user42",
        "dev-7",
    );
    assert!(with_acl.may_publish("commands/user42/reboot"));
    assert!(with_acl.may_receive("sensors/t1/user42/temp"));
    assert!(!with_acl.may_receive("shared/room2/admin"));

    let mut group = c.benchmark_group("acl_check");
    group.bench_function("publish_no_acl", |b| {
        b.iter(|| black_box(&without).may_publish(black_box("commands/user42/reboot")))
    });
    group.bench_function("publish_1000_rules", |b| {
        b.iter(|| black_box(&with_acl).may_publish(black_box("commands/user42/reboot")))
    });
    group.bench_function("publish_10000_rules", |b| {
        b.iter(|| black_box(&with_10_000).may_publish(black_box("commands/user42/reboot")))
    });
    group.bench_function("receive_no_acl", |b| {
        b.iter(|| black_box(&without).may_receive(black_box("sensors/t1/user42/temp")))
    });
    group.bench_function("receive_1000_rules", |b| {
        b.iter(|| black_box(&with_acl).may_receive(black_box("sensors/t1/user42/temp")))
    });
    group.bench_function("receive_pattern_1000_rules", |b| {
        b.iter(|| black_box(&with_acl).may_receive(black_box("site150/dev-7/a/b")))
    });
    group.bench_function("receive_refused_1000_rules", |b| {
        b.iter(|| black_box(&with_acl).may_receive(black_box("other/topic/here")))
    });
    group.bench_function("subscribe_1000_rules", |b| {
        b.iter(|| black_box(&with_acl).may_subscribe(black_box("shared/room2/#")))
    });
    group.finish();
}

fn hash_checks(c: &mut Criterion) {
    // What mosquitto_passwd 2.0 writes (101 iterations), what later mosquitto writes
    // (210,000), and ringmq passwd's argon2id.
    let pbkdf2_101 = PasswordHash::parse(
        "$7$101$ir/p3/xXSkdt03Yj$lh7WKjUabjH6NZCzmEzHKSa3Rc1ZmtC6R8C/azCgE8rzifXA1p9oU+tjjHZH6ni6kY1x8K4xNLS0ZOAyHL5c7A==",
    )
    .unwrap();
    let argon2 = PasswordHash::parse(&hash_argon2id(b"secret1")).unwrap();
    let mut group = c.benchmark_group("password_verify");
    group.sample_size(10);
    group.bench_function("pbkdf2_sha512_101", |b| {
        b.iter(|| assert!(pbkdf2_101.verify(black_box(b"secret1"))))
    });
    let salt = "AAAAAAAAAAAAAAAA";
    let mut hash = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(b"secret1", &[0u8; 12], 210_000, &mut hash);
    use base64::Engine as _;
    let pbkdf2_210k = PasswordHash::parse(&format!(
        "$7$210000${salt}${}",
        base64::engine::general_purpose::STANDARD.encode(hash)
    ))
    .unwrap();
    group.bench_function("pbkdf2_sha512_210000", |b| {
        b.iter(|| assert!(pbkdf2_210k.verify(black_box(b"secret1"))))
    });
    group.bench_function("argon2id_m19456_t2_p1", |b| {
        b.iter(|| assert!(argon2.verify(black_box(b"secret1"))))
    });
    group.finish();
}

criterion_group!(benches, acl_checks, hash_checks);
criterion_main!(benches);
