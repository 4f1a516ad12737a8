//! The logic of the fuzz targets in `fuzz/` (each target is one line calling a function
//! here), kept in the library so the tests run it on the seeds too.
//!
//! Beyond "never panics", each function checks properties that tie the parsers' output to
//! the decisions made with it:
//!
//! - password file: every accepted user is a trimmed, non-empty name without `:`, found
//!   by [`PasswordFile::get`] at a line that exists; every error names a line that exists.
//! - ACL file: the three trie walks agree. A topic name is receivable exactly when it is
//!   subscribable as a filter with no per-delivery check; a filter allowed *without* a
//!   per-delivery check never leads to a topic that [`Acl::may_receive`] refuses (the
//!   property that keeps denied messages from leaking through wildcards); `$SYS` and
//!   `$share` are never publishable.
//! - token claims: the same filter-versus-topic property for an `acl` claim, and no token
//!   made of fuzz input verifies against the fuzz key.

use ringmq_proto::topic;

use super::acl::{self, Acl, SubscribeVerdict};
use super::jwt::{self, JwtVerifier};
use super::password::{PasswordFile, PasswordHash};
use super::rules::{Access, Who};

/// How many lines `data` has, as the parsers number them.
fn line_count(data: &[u8]) -> usize {
    data.split(|&b| b == b'\n').count()
}

/// Fuzz target `auth_password_file`.
pub fn fuzz_password_file(data: &[u8]) {
    match PasswordFile::parse(data) {
        Ok(file) => {
            for name in file.usernames() {
                assert!(!name.is_empty() && !name.contains(':') && name.trim() == name);
                let entry = file.get(name).expect("a listed user is found");
                assert!((1..=line_count(data)).contains(&entry.line));
            }
        }
        Err(e) => assert!(e.line <= line_count(data), "{e}"),
    }
    if let Ok(text) = std::str::from_utf8(data) {
        // Decoding alone (no verification: a valid `$7$` may ask for a million rounds).
        let _ = PasswordHash::parse(text.trim());
    }
}

/// Up to `max` distinct words of `data` that are valid topic filters.
fn filters_in(data: &[u8], max: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(data);
    let mut found: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        if found.len() >= max {
            break;
        }
        if topic::validate_filter(word).is_ok() && !found.iter().any(|f| f == word) {
            found.push(word.to_owned());
        }
    }
    found
}

/// Topic names a filter matches: its wildcards replaced by a few choices of levels.
fn names_for(filter: &str, client_id: &str, username: &str) -> Vec<String> {
    let mut names = Vec::new();
    for fill in ["x", client_id, username, ""] {
        let levels: Vec<&str> = topic::levels(filter)
            .map(|l| match l {
                "+" | "%c" | "%u" => fill,
                other => other,
            })
            .collect();
        let base = levels.join("/");
        let base = match base.strip_suffix("/#") {
            Some(prefix) => prefix.to_owned(),
            None if base == "#" => "x".to_owned(),
            None => base,
        };
        for name in [
            base.clone(),
            format!("{base}/{fill}"),
            format!("{base}/a/b"),
        ] {
            if topic::validate_name(&name).is_ok() && topic::matches(filter, &name) {
                names.push(name);
            }
        }
    }
    names
}

/// Fuzz target `auth_acl_file`.
pub fn fuzz_acl_file(data: &[u8]) {
    let acl = match Acl::parse(data) {
        Ok(acl) => acl,
        Err(e) => {
            assert!(e.line <= line_count(data), "{e}");
            return;
        }
    };
    let text = String::from_utf8_lossy(data);
    let mut users: Vec<Option<&str>> = vec![None];
    users.extend(
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("user "))
            .map(|u| Some(u.trim()))
            .take(2),
    );
    let mut filters = filters_in(data, 8);
    filters.extend(["#", "+/+", "$SYS/#", "a/b"].map(str::to_owned));
    for username in users {
        for client_id in ["c1", "a"] {
            check_acl_consistency(&acl, username, client_id, &filters);
        }
    }
}

fn check_acl_consistency(acl: &Acl, username: Option<&str>, client_id: &str, filters: &[String]) {
    for filter in filters {
        let verdict = acl.may_subscribe(username, client_id, filter);
        // A shared subscription receives the topics of the filter after `$share/{group}/`.
        let Ok(parsed) = topic::parse_filter(filter) else {
            assert_eq!(verdict, SubscribeVerdict::Refused, "{filter}");
            continue;
        };
        for name in names_for(parsed.filter(), client_id, username.unwrap_or("u")) {
            let receive = acl.may_receive(username, client_id, &name);
            if verdict
                == (SubscribeVerdict::Allowed {
                    check_each_delivery: false,
                })
            {
                assert!(receive, "{filter} allowed unchecked but {name} refused");
            }
            let as_filter = acl.may_subscribe(username, client_id, &name);
            if !name.starts_with("$share/") && name != "$share" {
                assert_eq!(
                    as_filter
                        == (SubscribeVerdict::Allowed {
                            check_each_delivery: false
                        }),
                    receive,
                    "{name}: subscribe {as_filter:?}, receive {receive}"
                );
            }
            if acl::is_reserved_for_broker(&name) {
                assert!(!acl.may_publish(username, client_id, &name));
            }
        }
    }
}

/// The key `auth_jwt_claims` checks tokens against.
const FUZZ_SECRET: &[u8] = b"ringmq fuzz key, not a secret, 32+ bytes";

/// Fuzz target `auth_jwt_claims`: the claims parser on the raw input, and the whole token
/// path on it as a token.
pub fn fuzz_jwt_claims(data: &[u8]) {
    if let Ok(token) = jwt::parse_claims(data) {
        if let Some(grants) = &token.grants {
            let who = Who::new("c1", Some("u"));
            for filter in filters_in(data, 8) {
                let covered = grants.covering_access(&filter, who).contains(Access::READ);
                for name in names_for(&filter, "c1", "u") {
                    if covered {
                        assert!(grants.topic_access(&name, who).contains(Access::READ));
                    }
                }
            }
        }
        let _ = token.check_time(1_800_000_000);
    }
    let verifier = JwtVerifier::from_key(FUZZ_SECRET, None).expect("the fuzz key is valid");
    assert!(verifier.verify_signature(data).is_err());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed seeds, run through the fuzz logic on every test run.
    fn seeds(target: &str) -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds")
            .join(target);
        let mut all: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        assert!(!all.is_empty(), "no seeds in {}", dir.display());
        all.sort();
        all
    }

    #[test]
    fn fuzz_seeds_pass_the_password_file_target() {
        for seed in seeds("auth_password_file") {
            fuzz_password_file(&seed);
        }
    }

    #[test]
    fn fuzz_seeds_pass_the_acl_file_target() {
        for seed in seeds("auth_acl_file") {
            fuzz_acl_file(&seed);
        }
    }

    #[test]
    fn fuzz_seeds_pass_the_jwt_claims_target() {
        for seed in seeds("auth_jwt_claims") {
            fuzz_jwt_claims(&seed);
        }
    }

    #[test]
    fn fuzz_names_for_only_yields_matching_names() {
        let names = names_for("a/+/#", "c1", "u");
        assert!(names.contains(&"a/x".to_owned()));
        assert!(names.contains(&"a/c1/a/b".to_owned()));
        assert!(names.iter().all(|n| topic::matches("a/+/#", n)));
    }
}
