//! JSON Web Tokens as credentials: a signed token in the CONNECT password (or username)
//! proves who the client is, until when, and optionally which topics it may use.
//!
//! ## Keys
//!
//! `--jwt-key FILE` holds either a PEM public key — RSA (tokens signed RS256) or EC P-256
//! (ES256), as `-----BEGIN PUBLIC KEY-----` or `-----BEGIN RSA PUBLIC KEY-----` — or, for
//! HS256, the raw shared secret: the file's bytes, less one final newline (`\n` or
//! `\r\n`), at least 32 bytes (RFC 7518 §3.2 asks for a key as long as the hash). Only the
//! key's algorithm is accepted: a token whose header names another (`none`, HS256 signed
//! with an RSA public key as the secret, RS512, …) is refused. A private key is refused
//! when the file is loaded: the broker only ever needs the public half.
//!
//! ## Claims
//!
//! ```json
//! {
//!   "exp": 1767225600,
//!   "nbf": 1767139200,
//!   "sub": "alice",
//!   "clientid": "alice-phone",
//!   "acl": {
//!     "pub": ["devices/%c/state"],
//!     "sub": ["devices/%c/commands/#", "broadcast/#"],
//!     "all": ["users/%u/#"]
//!   }
//! }
//! ```
//!
//! - `exp` and `nbf` (seconds since the epoch, integer or fractional) are enforced with no
//!   leeway: refused from `exp` on and before `nbf`. A token without `exp` never expires;
//!   with one, the connection is closed when it passes ([`VerifiedToken::expires_at`]).
//! - `sub`, when present, is the client's username for the ACL file (its `user` block and
//!   `%u`), whatever the CONNECT username says; a CONNECT username that differs from it is
//!   refused (bad username or password), so one user's token cannot be used in another's
//!   name. Without `sub` the CONNECT username (if the token came in the password) is used.
//! - `clientid`, when present, must equal the CONNECT client id (else: not authorized).
//! - `aud` is checked only when the broker is given an audience; then it must contain it.
//! - `acl` is EMQX's JWT ACL claim (its "old format", the one EMQX 4 and 5 both read):
//!   `pub`, `sub` and `all` list topic filters the client may publish to, subscribe to
//!   (and receive from), or both. `%c` and `%u` stand for the client id and username as
//!   whole levels. With the claim, *only* what it lists is granted — the ACL file's grants
//!   do not add to it, its `deny` rules still apply. Without it, the ACL file alone decides
//!   (and without a file, everything is allowed). An `acl` claim in any other shape (EMQX
//!   5.5's rule list, say) refuses the token rather than being ignored, since ignoring it
//!   would widen what the client may do.
//!
//! Tokens are at most [`MAX_TOKEN_BYTES`] and carry at most [`MAX_CLAIM_FILTERS`] filters.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::rules::{Access, NodeId, RuleTrie, Who};

/// The longest token accepted, in bytes: a CONNECT's password field is one of the places
/// a client can make the broker work, so it is bounded before anything is decoded.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// The most topic filters an `acl` claim may list (`pub`, `sub` and `all` together).
pub const MAX_CLAIM_FILTERS: usize = 64;
/// The shortest HS256 secret accepted, in bytes.
pub const MIN_HMAC_SECRET_BYTES: usize = 32;
/// The largest key file read.
const MAX_KEY_FILE_BYTES: usize = 64 * 1024;

/// Where the token is in the CONNECT (`--jwt-from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenSource {
    /// The password field (the username is then a name, checked against `sub`).
    #[default]
    Password,
    /// The username field (the password is ignored).
    Username,
}

/// Why a key file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtKeyError {
    Io(String),
    TooLarge,
    /// A PEM private key: give the broker the public key.
    PrivateKey,
    /// A PEM block that is neither an RSA nor an EC public key.
    UnsupportedPem(String),
    /// An HS256 secret shorter than [`MIN_HMAC_SECRET_BYTES`].
    SecretTooShort(usize),
}

impl fmt::Display for JwtKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtKeyError::Io(e) => write!(f, "cannot read the JWT key file: {e}"),
            JwtKeyError::TooLarge => write!(f, "JWT key file is larger than 64 KiB"),
            JwtKeyError::PrivateKey => write!(
                f,
                "the JWT key file holds a private key; give the broker the public key"
            ),
            JwtKeyError::UnsupportedPem(e) => write!(
                f,
                "the JWT key file is PEM but not an RSA or EC public key: {e}"
            ),
            JwtKeyError::SecretTooShort(n) => write!(
                f,
                "the HS256 secret is {n} bytes; it must be at least {MIN_HMAC_SECRET_BYTES}"
            ),
        }
    }
}

impl std::error::Error for JwtKeyError {}

/// Why a token was refused. The CONNECT is refused as bad credentials whichever it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_BYTES`].
    TooLong,
    /// Not three base64url parts with a JSON header and payload.
    Malformed,
    /// The header names an algorithm other than the key's.
    WrongAlgorithm,
    /// The signature does not verify with the key.
    BadSignature,
    /// `exp` has passed.
    Expired,
    /// `nbf` has not come yet.
    NotYetValid,
    /// `aud` does not name this broker's audience.
    WrongAudience,
    /// A claim has the wrong type, or `acl` holds something other than `pub`/`sub`/`all`
    /// lists of valid filters.
    BadClaims(String),
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::TooLong => write!(f, "token longer than {MAX_TOKEN_BYTES} bytes"),
            TokenError::Malformed => write!(f, "malformed token"),
            TokenError::WrongAlgorithm => write!(f, "token signed with another algorithm"),
            TokenError::BadSignature => write!(f, "bad token signature"),
            TokenError::Expired => write!(f, "token expired"),
            TokenError::NotYetValid => write!(f, "token not valid yet"),
            TokenError::WrongAudience => write!(f, "token for another audience"),
            TokenError::BadClaims(e) => write!(f, "bad token claims: {e}"),
        }
    }
}

impl std::error::Error for TokenError {}

/// The topic filters a token grants, compiled for the client that presented it.
#[derive(Debug)]
pub struct TokenGrants {
    trie: RuleTrie,
    root: NodeId,
}

impl TokenGrants {
    /// The access the claim gives on a topic name.
    pub fn topic_access(&self, topic: &str, who: Who<'_>) -> Access {
        self.trie.topic_access(self.root, topic, who)
    }

    /// The access of the claim filters that cover a subscription filter.
    pub fn covering_access(&self, filter: &str, who: Who<'_>) -> Access {
        self.trie.covering_access(self.root, filter, who)
    }
}

/// What a valid token says.
#[derive(Debug)]
pub struct VerifiedToken {
    /// `sub`: the username for ACL purposes.
    pub subject: Option<Box<str>>,
    /// `clientid`: the only client id this token may connect as.
    pub client_id: Option<Box<str>>,
    /// `exp`, seconds since the epoch: close the connection then.
    pub expires_at: Option<u64>,
    /// `nbf`, seconds since the epoch.
    pub not_before: Option<u64>,
    /// `acl`, when the token carries one.
    pub grants: Option<Arc<TokenGrants>>,
}

impl VerifiedToken {
    /// Whether the token is within its validity window at `now` (seconds since the epoch).
    pub fn check_time(&self, now: u64) -> Result<(), TokenError> {
        if self.expires_at.is_some_and(|exp| now >= exp) {
            return Err(TokenError::Expired);
        }
        if self.not_before.is_some_and(|nbf| now < nbf) {
            return Err(TokenError::NotYetValid);
        }
        Ok(())
    }
}

/// Checks tokens against one key.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JwtVerifier({:?})", self.algorithm())
    }
}

impl JwtVerifier {
    /// Reads `--jwt-key FILE`.
    pub fn load(path: &Path, audience: Option<&str>) -> Result<JwtVerifier, JwtKeyError> {
        let bytes = super::read_bounded(path, MAX_KEY_FILE_BYTES).map_err(|e| match e {
            super::ReadError::TooLarge => JwtKeyError::TooLarge,
            super::ReadError::Io(e) => JwtKeyError::Io(e.to_string()),
        })?;
        JwtVerifier::from_key(&bytes, audience)
    }

    /// A verifier for the key file's contents: PEM public key, or raw HS256 secret.
    pub fn from_key(bytes: &[u8], audience: Option<&str>) -> Result<JwtVerifier, JwtKeyError> {
        let (key, algorithm) = if bytes.starts_with(b"-----BEGIN") {
            if bytes
                .windows(b"PRIVATE KEY-----".len())
                .any(|w| w == b"PRIVATE KEY-----")
            {
                return Err(JwtKeyError::PrivateKey);
            }
            match DecodingKey::from_rsa_pem(bytes) {
                Ok(key) => (key, Algorithm::RS256),
                Err(rsa_error) => match DecodingKey::from_ec_pem(bytes) {
                    Ok(key) => (key, Algorithm::ES256),
                    Err(_) => return Err(JwtKeyError::UnsupportedPem(rsa_error.to_string())),
                },
            }
        } else {
            let secret = bytes
                .strip_suffix(b"\r\n")
                .or_else(|| bytes.strip_suffix(b"\n"))
                .unwrap_or(bytes);
            if secret.len() < MIN_HMAC_SECRET_BYTES {
                return Err(JwtKeyError::SecretTooShort(secret.len()));
            }
            let key = DecodingKey::from_secret(secret)
                .map_err(|_| JwtKeyError::SecretTooShort(secret.len()))?;
            (key, Algorithm::HS256)
        };
        let mut validation = Validation::new(algorithm);
        // Time claims are checked here against the caller's clock (so a cached token is
        // checked again on each use); only the signature and the algorithm are left to
        // the library.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        match audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(JwtVerifier { key, validation })
    }

    /// The one algorithm tokens must be signed with.
    pub fn algorithm(&self) -> Algorithm {
        self.validation.algorithms[0]
    }

    /// Verifies a token's signature and claims at `now` (seconds since the epoch).
    pub fn verify(&self, token: &[u8], now: u64) -> Result<VerifiedToken, TokenError> {
        let verified = self.verify_signature(token)?;
        verified.check_time(now)?;
        Ok(verified)
    }

    /// Verifies a token's signature, algorithm, audience and claim syntax, but not its time
    /// window: what stays true of a token for as long as the key is the same, so it can be
    /// cached, with [`VerifiedToken::check_time`] applied on each use.
    pub fn verify_signature(&self, token: &[u8]) -> Result<VerifiedToken, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        // The header first, so that its errors are not mistaken for the claims'.
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != self.algorithm() {
            return Err(TokenError::WrongAlgorithm);
        }
        let data =
            jsonwebtoken::decode::<RawClaims>(token, &self.key, &self.validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                        TokenError::WrongAlgorithm
                    }
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidEcdsaKey
                    | ErrorKind::InvalidRsaKey(_) => TokenError::BadSignature,
                    ErrorKind::InvalidAudience => TokenError::WrongAudience,
                    ErrorKind::InvalidClaimFormat(claim) => TokenError::BadClaims(claim.clone()),
                    // The signature verified, but the payload is not the claims this broker reads.
                    ErrorKind::Json(e) if e.is_data() => TokenError::BadClaims(e.to_string()),
                    _ => TokenError::Malformed,
                }
            })?;
        into_verified(data.claims)
    }
}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    exp: Option<serde_json::Number>,
    #[serde(default)]
    nbf: Option<serde_json::Number>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    clientid: Option<String>,
    #[serde(default)]
    acl: Option<AclClaim>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AclClaim {
    #[serde(default, rename = "pub")]
    publish: Vec<String>,
    #[serde(default, rename = "sub")]
    subscribe: Vec<String>,
    #[serde(default)]
    all: Vec<String>,
}

/// A NumericDate (RFC 7519 §2): seconds, possibly fractional; before 1970 counts as 0.
fn numeric_date(claim: &str, n: &serde_json::Number) -> Result<u64, TokenError> {
    if let Some(v) = n.as_u64() {
        return Ok(v);
    }
    match n.as_f64() {
        Some(v) if v.is_finite() => Ok(if v <= 0.0 {
            0
        } else if v >= u64::MAX as f64 {
            u64::MAX
        } else {
            v as u64
        }),
        _ => Err(TokenError::BadClaims(claim.to_owned())),
    }
}

/// Reads a token's payload (already verified) into what the broker uses.
pub fn parse_claims(payload: &[u8]) -> Result<VerifiedToken, TokenError> {
    if payload.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLong);
    }
    let raw: RawClaims =
        serde_json::from_slice(payload).map_err(|e| TokenError::BadClaims(e.to_string()))?;
    into_verified(raw)
}

fn into_verified(raw: RawClaims) -> Result<VerifiedToken, TokenError> {
    let grants = match raw.acl {
        None => None,
        Some(acl) => Some(Arc::new(compile_grants(&acl)?)),
    };
    Ok(VerifiedToken {
        subject: raw.sub.map(String::into_boxed_str),
        client_id: raw.clientid.map(String::into_boxed_str),
        expires_at: raw
            .exp
            .as_ref()
            .map(|n| numeric_date("exp", n))
            .transpose()?,
        not_before: raw
            .nbf
            .as_ref()
            .map(|n| numeric_date("nbf", n))
            .transpose()?,
        grants,
    })
}

fn compile_grants(acl: &AclClaim) -> Result<TokenGrants, TokenError> {
    let count = acl.publish.len() + acl.subscribe.len() + acl.all.len();
    if count > MAX_CLAIM_FILTERS {
        return Err(TokenError::BadClaims(format!(
            "acl lists {count} filters, at most {MAX_CLAIM_FILTERS}"
        )));
    }
    let mut trie = RuleTrie::new();
    let root = trie.add_root();
    let lists = [
        (&acl.publish, Access::WRITE),
        (&acl.subscribe, Access::READ),
        (&acl.all, Access::READ_WRITE),
    ];
    for (filters, access) in lists {
        for filter in filters {
            ringmq_proto::topic::validate_filter(filter)
                .map_err(|e| TokenError::BadClaims(format!("acl filter {filter:?}: {e}")))?;
            if ringmq_proto::topic::levels(filter)
                .any(|l| l != "%c" && l != "%u" && (l.contains("%c") || l.contains("%u")))
            {
                return Err(TokenError::BadClaims(format!(
                    "acl filter {filter:?}: %c and %u must be whole levels"
                )));
            }
            trie.insert(root, filter, access, true);
        }
    }
    trie.finish();
    Ok(TokenGrants { trie, root })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    pub const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-secret";
    pub const NOW: u64 = 1_800_000_000;

    // Test keys made with `openssl genpkey` for these tests only.
    pub const RSA_PRIVATE: &str = include_str!("testdata/rsa_private.pem");
    pub const RSA_PUBLIC: &str = include_str!("testdata/rsa_public.pem");
    pub const EC_PRIVATE: &str = include_str!("testdata/ec_private.pem");
    pub const EC_PUBLIC: &str = include_str!("testdata/ec_public.pem");

    pub fn hs256(claims: &serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET).unwrap(),
        )
        .unwrap()
    }

    fn verifier() -> JwtVerifier {
        JwtVerifier::from_key(SECRET, None).unwrap()
    }

    #[test]
    fn jwt_good_token_gives_subject_expiry_and_grants() {
        let token = hs256(&json!({
            "exp": NOW + 60, "nbf": NOW - 60, "sub": "alice", "clientid": "c1",
            "acl": {"pub": ["dev/%c/state"], "sub": ["cmd/#"], "all": ["u/%u/#"]}
        }));
        let t = verifier().verify(token.as_bytes(), NOW).unwrap();
        assert_eq!(t.subject.as_deref(), Some("alice"));
        assert_eq!(t.client_id.as_deref(), Some("c1"));
        assert_eq!(t.expires_at, Some(NOW + 60));
        let grants = t.grants.unwrap();
        let who = Who::new("c1", Some("alice"));
        assert_eq!(grants.topic_access("dev/c1/state", who), Access::WRITE);
        assert_eq!(grants.topic_access("dev/c2/state", who), Access::NONE);
        assert_eq!(grants.topic_access("cmd/x", who), Access::READ);
        assert_eq!(grants.topic_access("u/alice/x", who), Access::READ_WRITE);
        assert_eq!(grants.covering_access("cmd/+", who), Access::READ);
    }

    #[test]
    fn jwt_time_window_is_enforced_without_leeway() {
        let v = verifier();
        let expired = hs256(&json!({"exp": NOW}));
        assert_eq!(
            v.verify(expired.as_bytes(), NOW).unwrap_err(),
            TokenError::Expired
        );
        assert!(v.verify(expired.as_bytes(), NOW - 1).is_ok());
        let early = hs256(&json!({"nbf": NOW + 1}));
        assert_eq!(
            v.verify(early.as_bytes(), NOW).unwrap_err(),
            TokenError::NotYetValid
        );
        assert!(v.verify(early.as_bytes(), NOW + 1).is_ok());
        // Fractional NumericDates are accepted; no `exp` means no expiry.
        let fractional = hs256(&json!({"exp": (NOW as f64) + 0.5}));
        // (rounded down: the token lapses up to a second early, never late)
        assert_eq!(
            v.verify(fractional.as_bytes(), NOW - 1).unwrap().expires_at,
            Some(NOW)
        );
        let forever = hs256(&json!({"sub": "x"}));
        assert_eq!(v.verify(forever.as_bytes(), NOW).unwrap().expires_at, None);
        let bad_type = hs256(&json!({"exp": "tomorrow"}));
        assert!(matches!(
            v.verify(bad_type.as_bytes(), NOW).unwrap_err(),
            TokenError::BadClaims(_)
        ));
    }

    #[test]
    fn jwt_bad_signature_wrong_algorithm_and_malformed_are_refused() {
        let v = verifier();
        let other_key = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "x"}),
            &EncodingKey::from_secret(b"another secret that is long enough!!").unwrap(),
        )
        .unwrap();
        assert_eq!(
            v.verify(other_key.as_bytes(), NOW).unwrap_err(),
            TokenError::BadSignature
        );
        let hs384 = encode(
            &Header::new(Algorithm::HS384),
            &json!({"sub": "x"}),
            &EncodingKey::from_secret(SECRET).unwrap(),
        )
        .unwrap();
        assert_eq!(
            v.verify(hs384.as_bytes(), NOW).unwrap_err(),
            TokenError::WrongAlgorithm
        );
        // `alg: none` with an empty signature: an algorithm the library does not even
        // name, so the header does not parse.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4In0.";
        assert_eq!(
            v.verify(none.as_bytes(), NOW).unwrap_err(),
            TokenError::Malformed
        );
        // A payload byte changed after signing.
        let good = hs256(&json!({"sub": "alice"}));
        let mut parts: Vec<&str> = good.split('.').collect();
        let tampered_payload = hs256(&json!({"sub": "mallory"}));
        parts[1] = tampered_payload.split('.').nth(1).unwrap();
        assert_eq!(
            v.verify(parts.join(".").as_bytes(), NOW).unwrap_err(),
            TokenError::BadSignature
        );
        for junk in [&b"not a token"[..], b"a.b.c", b"", b"..."] {
            assert_eq!(v.verify(junk, NOW).unwrap_err(), TokenError::Malformed);
        }
        let long = vec![b'a'; MAX_TOKEN_BYTES + 1];
        assert_eq!(v.verify(&long, NOW).unwrap_err(), TokenError::TooLong);
    }

    #[test]
    fn jwt_rs256_and_es256_with_pem_public_keys() {
        let rsa = JwtVerifier::from_key(RSA_PUBLIC.as_bytes(), None).unwrap();
        assert_eq!(rsa.algorithm(), Algorithm::RS256);
        let claims = json!({"sub": "r", "exp": NOW + 5});
        let token = encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            rsa.verify(token.as_bytes(), NOW)
                .unwrap()
                .subject
                .as_deref(),
            Some("r")
        );
        // The classic confusion: HS256 signed with the RSA public key as the secret.
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            rsa.verify(confused.as_bytes(), NOW).unwrap_err(),
            TokenError::WrongAlgorithm
        );

        let ec = JwtVerifier::from_key(EC_PUBLIC.as_bytes(), None).unwrap();
        assert_eq!(ec.algorithm(), Algorithm::ES256);
        let token = encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap();
        assert!(ec.verify(token.as_bytes(), NOW).is_ok());
        assert_eq!(
            rsa.verify(token.as_bytes(), NOW).unwrap_err(),
            TokenError::WrongAlgorithm
        );
    }

    #[test]
    fn jwt_key_file_errors() {
        assert_eq!(
            JwtVerifier::from_key(RSA_PRIVATE.as_bytes(), None).unwrap_err(),
            JwtKeyError::PrivateKey
        );
        assert_eq!(
            JwtVerifier::from_key(b"short\n", None).unwrap_err(),
            JwtKeyError::SecretTooShort(5)
        );
        assert!(matches!(
            JwtVerifier::from_key(
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                None
            )
            .unwrap_err(),
            JwtKeyError::UnsupportedPem(_)
        ));
        // One final newline is not part of the secret.
        let mut with_newline = SECRET.to_vec();
        with_newline.extend_from_slice(b"\r\n");
        let v = JwtVerifier::from_key(&with_newline, None).unwrap();
        assert!(v.verify(hs256(&json!({})).as_bytes(), NOW).is_ok());
    }

    #[test]
    fn jwt_audience_when_configured() {
        let v = JwtVerifier::from_key(SECRET, Some("ringmq")).unwrap();
        assert!(
            v.verify(hs256(&json!({"aud": "ringmq"})).as_bytes(), NOW)
                .is_ok()
        );
        assert!(
            v.verify(hs256(&json!({"aud": ["x", "ringmq"]})).as_bytes(), NOW)
                .is_ok()
        );
        assert_eq!(
            v.verify(hs256(&json!({"aud": "other"})).as_bytes(), NOW)
                .unwrap_err(),
            TokenError::WrongAudience
        );
    }

    #[test]
    fn jwt_acl_claim_shapes() {
        let bad = [
            json!({"acl": [{"permission": "allow", "action": "publish", "topic": "t"}]}),
            json!({"acl": {"pub": ["a/#/b"]}}),
            json!({"acl": {"publish": ["a"]}}),
            json!({"acl": {"pub": "a"}}),
            json!({"acl": {"pub": ["dev-%c"]}}),
            json!({"acl": {"all": vec!["a"; MAX_CLAIM_FILTERS + 1]}}),
            json!({"sub": 5}),
        ];
        for claims in bad {
            assert!(
                matches!(
                    parse_claims(claims.to_string().as_bytes()),
                    Err(TokenError::BadClaims(_))
                ),
                "{claims}"
            );
        }
        let empty = parse_claims(br#"{"acl": {}}"#).unwrap();
        let grants = empty.grants.unwrap();
        assert_eq!(grants.topic_access("a", Who::NOBODY), Access::NONE);
    }
}
