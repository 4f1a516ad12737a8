//! The password file: mosquitto's `user:hash` format, its hashes, and `ringmq passwd`.
//!
//! ## The format (as mosquitto reads it)
//!
//! One `username:hash` per line. A line whose first character is `#` is a comment, and so
//! (here) is a line whose first non-blank character is `#`; a line that is empty or only
//! white space is skipped. The username is everything before the first `:`, the hash
//! everything after it, each trimmed of surrounding white space (a username may contain
//! spaces inside). A `\r` before the `\n` is white space, so files written on Windows read
//! the same.
//!
//! mosquitto logs and drops a line it cannot use (no `:`, no hash, an unknown or
//! undecodable hash) and carries on; here any such line refuses the whole file with an
//! error naming the line, so a typo cannot silently lock a user out or leave a reload
//! half applied. A user named twice is an error too (mosquitto keeps both and uses one).
//!
//! ## Hashes
//!
//! - `$7$ITERATIONS$SALT$HASH`: PBKDF2-HMAC-SHA512, what `mosquitto_passwd` writes by
//!   default since 2.0 (101 iterations in 2.0, 210,000 later). Salt and hash in standard
//!   base64; the salt is 12 bytes (2.0) or 64 (later), the hash 64 bytes.
//! - `$6$SALT$HASH`: SHA-512 of the password followed by the salt (mosquitto ≤ 1.6, and
//!   `mosquitto_passwd -H sha512`). Weak: accepted so old files keep working.
//! - `$argon2id$v=19$m=...,t=...,p=...$SALT$HASH`: a PHC string, as written by
//!   `ringmq passwd`, mosquitto ≥ 2.1 and the reference `argon2` tool.
//!
//! A hash's cost is bounded before it is accepted ([`MAX_PBKDF2_ITERATIONS`],
//! [`MAX_ARGON2_MEMORY_KIB`] and the others), so a hostile or mistyped file cannot stall the
//! verification pool for minutes per CONNECT. Comparisons are constant-time.
//!
//! Passwords are bytes: MQTT passwords are binary data. mosquitto hashes a C string, so a
//! password containing a NUL byte matches only what precedes the NUL there; here the whole
//! password counts.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use argon2::password_hash::phc::PasswordHash as PhcString;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// The largest password file accepted, in bytes.
pub const MAX_PASSWORD_FILE_BYTES: usize = 32 << 20;
/// The longest line: a username of up to 65,535 bytes (the MQTT limit) and a hash.
pub const MAX_PASSWORD_LINE_BYTES: usize = 65_535 + 1_024;
/// The most users in one file.
pub const MAX_USERS: usize = 200_000;
/// The most PBKDF2 iterations a `$7$` hash may ask for (about half a second of one core).
pub const MAX_PBKDF2_ITERATIONS: u32 = 1_000_000;
/// The most memory an argon2id hash may ask for, in KiB (mosquitto ≥ 2.1 uses 46 MiB).
pub const MAX_ARGON2_MEMORY_KIB: u32 = 256 * 1024;
/// The most argon2id passes.
pub const MAX_ARGON2_TIME_COST: u32 = 16;
/// The most argon2id lanes.
pub const MAX_ARGON2_PARALLELISM: u32 = 16;

/// argon2id parameters for new hashes: OWASP's recommendation (19 MiB, 2 passes, 1 lane),
/// also the `argon2` crate's default. Verification takes what each hash says.
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
pub const ARGON2_TIME_COST: u32 = 2;
pub const ARGON2_PARALLELISM: u32 = 1;

const SHA512_LEN: usize = 64;

/// A stored password hash, decoded once when the file is read.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum PasswordHash {
    /// `$6$`: SHA-512(password ‖ salt).
    Sha512 {
        salt: Box<[u8]>,
        hash: [u8; SHA512_LEN],
    },
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2Sha512 {
        iterations: u32,
        salt: Box<[u8]>,
        hash: [u8; SHA512_LEN],
    },
    /// `$argon2id$`: the PHC string, checked when read and parsed again to verify.
    Argon2id { phc: Box<str> },
}

impl fmt::Debug for PasswordHash {
    // Never print hash material, even in debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordHash::Sha512 { .. } => f.write_str("PasswordHash::Sha512"),
            PasswordHash::Pbkdf2Sha512 { iterations, .. } => {
                write!(
                    f,
                    "PasswordHash::Pbkdf2Sha512 {{ iterations: {iterations} }}"
                )
            }
            PasswordHash::Argon2id { .. } => f.write_str("PasswordHash::Argon2id"),
        }
    }
}

/// Why a hash string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashError {
    /// Not `$6$`, `$7$` or `$argon2id$` (a plain-text password, or another algorithm).
    UnknownFormat,
    /// The `$`-separated fields are missing or extra.
    Malformed,
    /// The `$7$` iteration count is not a number from 1 to [`MAX_PBKDF2_ITERATIONS`].
    BadIterations,
    /// The salt is not base64 of 12 or 64 bytes.
    BadSalt,
    /// The hash is not base64 of 64 bytes.
    BadDigest,
    /// The argon2id PHC string does not parse, or is another argon2 variant or version.
    BadArgon2,
    /// The argon2id cost passes the bounds.
    Argon2TooCostly,
}

impl fmt::Display for HashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HashError::UnknownFormat => {
                "unknown hash format (expected $7$, $6$ or $argon2id$; plain-text passwords are not accepted)"
            }
            HashError::Malformed => "malformed hash: wrong number of '$' fields",
            HashError::BadIterations => "bad $7$ iteration count (1 to 1000000)",
            HashError::BadSalt => "bad salt: not base64 of 12 or 64 bytes",
            HashError::BadDigest => "bad hash: not base64 of 64 bytes",
            HashError::BadArgon2 => "bad argon2id hash string",
            HashError::Argon2TooCostly => {
                "argon2id cost too high (at most m=262144, t=16, p=16)"
            }
        })
    }
}

impl std::error::Error for HashError {}

impl PasswordHash {
    /// Decodes one hash as it appears after the `:`.
    pub fn parse(s: &str) -> Result<PasswordHash, HashError> {
        if let Some(rest) = s.strip_prefix("$7$") {
            let mut fields = rest.split('$');
            let (Some(iterations), Some(salt), Some(hash), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(HashError::Malformed);
            };
            let iterations = iterations
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_PBKDF2_ITERATIONS).contains(n))
                .ok_or(HashError::BadIterations)?;
            Ok(PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt: decode_salt(salt)?,
                hash: decode_digest(hash)?,
            })
        } else if let Some(rest) = s.strip_prefix("$6$") {
            let mut fields = rest.split('$');
            let (Some(salt), Some(hash), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(HashError::Malformed);
            };
            Ok(PasswordHash::Sha512 {
                salt: decode_salt(salt)?,
                hash: decode_digest(hash)?,
            })
        } else if s.starts_with("$argon2id$") {
            let phc = PhcString::new(s).map_err(|_| HashError::BadArgon2)?;
            let params = argon2::Params::try_from(&phc).map_err(|_| HashError::BadArgon2)?;
            if phc.version != Some(argon2::Version::V0x13 as u32) || phc.hash.is_none() {
                return Err(HashError::BadArgon2);
            }
            if params.m_cost() > MAX_ARGON2_MEMORY_KIB
                || params.t_cost() > MAX_ARGON2_TIME_COST
                || params.p_cost() > MAX_ARGON2_PARALLELISM
            {
                return Err(HashError::Argon2TooCostly);
            }
            Ok(PasswordHash::Argon2id { phc: s.into() })
        } else {
            Err(HashError::UnknownFormat)
        }
    }

    /// Whether `password` hashes to this hash. Slow by design for `$7$` and argon2id: call
    /// it from the verification pool, never from a shard.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Sha512 { salt, hash } => {
                let mut digest = Sha512::new();
                digest.update(password);
                digest.update(salt);
                let computed = digest.finalize();
                bool::from(computed.as_slice().ct_eq(hash))
            }
            PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => {
                let mut computed = [0u8; SHA512_LEN];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut computed);
                bool::from(computed.ct_eq(hash))
            }
            PasswordHash::Argon2id { phc } => match PhcString::new(phc) {
                // The argon2 crate compares in constant time.
                Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
                Err(_) => false,
            },
        }
    }
}

fn decode_salt(b64: &str) -> Result<Box<[u8]>, HashError> {
    match BASE64.decode(b64) {
        Ok(salt) if salt.len() == 12 || salt.len() == 64 => Ok(salt.into_boxed_slice()),
        _ => Err(HashError::BadSalt),
    }
}

fn decode_digest(b64: &str) -> Result<[u8; SHA512_LEN], HashError> {
    BASE64
        .decode(b64)
        .ok()
        .and_then(|d| <[u8; SHA512_LEN]>::try_from(d.as_slice()).ok())
        .ok_or(HashError::BadDigest)
}

/// Hashes a password for a new entry: argon2id with [`ARGON2_MEMORY_KIB`],
/// [`ARGON2_TIME_COST`], [`ARGON2_PARALLELISM`], a random 16-byte salt, a 32-byte output,
/// as a PHC string.
pub fn hash_argon2id(password: &[u8]) -> String {
    let params = argon2::Params::new(
        ARGON2_MEMORY_KIB,
        ARGON2_TIME_COST,
        ARGON2_PARALLELISM,
        Some(argon2::Params::DEFAULT_OUTPUT_LEN),
    )
    .expect("the default argon2id parameters are valid");
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password)
        .expect("argon2id hashing with valid parameters and a system RNG does not fail")
        .to_string()
}

/// One user of a password file.
#[derive(Debug, Clone)]
pub struct UserEntry {
    pub hash: PasswordHash,
    /// The 1-based line it was read from.
    pub line: usize,
}

/// What went wrong on one line of a password file (line 0: the file as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordFileError {
    pub line: usize,
    pub kind: PasswordFileErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordFileErrorKind {
    Io(String),
    FileTooLarge,
    LineTooLong,
    NotUtf8,
    /// A line that is not blank, not a comment, and has no `:`.
    MissingColon,
    /// Nothing before the `:`.
    EmptyUsername,
    /// Nothing after the `:`.
    MissingHash,
    /// The hash is not one this broker can check.
    BadHash(HashError),
    /// The username was already defined on the given line.
    DuplicateUser(usize),
    TooManyUsers,
}

impl fmt::Display for PasswordFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: ", self.line)?;
        }
        match &self.kind {
            PasswordFileErrorKind::Io(e) => write!(f, "cannot read the password file: {e}"),
            PasswordFileErrorKind::FileTooLarge => write!(
                f,
                "password file is larger than {MAX_PASSWORD_FILE_BYTES} bytes"
            ),
            PasswordFileErrorKind::LineTooLong => {
                write!(f, "longer than {MAX_PASSWORD_LINE_BYTES} bytes")
            }
            PasswordFileErrorKind::NotUtf8 => write!(f, "not valid UTF-8"),
            PasswordFileErrorKind::MissingColon => write!(f, "expected username:hash"),
            PasswordFileErrorKind::EmptyUsername => write!(f, "empty username"),
            PasswordFileErrorKind::MissingHash => write!(f, "missing password hash"),
            PasswordFileErrorKind::BadHash(e) => write!(f, "{e}"),
            PasswordFileErrorKind::DuplicateUser(first) => {
                write!(f, "user already defined on line {first}")
            }
            PasswordFileErrorKind::TooManyUsers => write!(f, "more than {MAX_USERS} users"),
        }
    }
}

impl std::error::Error for PasswordFileError {}

/// A parsed password file.
#[derive(Debug, Default)]
pub struct PasswordFile {
    users: HashMap<Box<str>, UserEntry>,
}

impl PasswordFile {
    /// Reads and parses a password file.
    pub fn load(path: &Path) -> Result<PasswordFile, PasswordFileError> {
        let bytes =
            super::read_bounded(path, MAX_PASSWORD_FILE_BYTES).map_err(|e| PasswordFileError {
                line: 0,
                kind: match e {
                    super::ReadError::TooLarge => PasswordFileErrorKind::FileTooLarge,
                    super::ReadError::Io(e) => PasswordFileErrorKind::Io(e.to_string()),
                },
            })?;
        PasswordFile::parse(&bytes)
    }

    /// Parses the text of a password file.
    pub fn parse(text: &[u8]) -> Result<PasswordFile, PasswordFileError> {
        if text.len() > MAX_PASSWORD_FILE_BYTES {
            return Err(PasswordFileError {
                line: 0,
                kind: PasswordFileErrorKind::FileTooLarge,
            });
        }
        let mut users: HashMap<Box<str>, UserEntry> = HashMap::new();
        for (index, raw) in text.split(|&b| b == b'\n').enumerate() {
            let line = index + 1;
            let fail = |kind| PasswordFileError { line, kind };
            let Some((username, hash)) = parse_line(raw).map_err(fail)? else {
                continue;
            };
            let hash =
                PasswordHash::parse(hash).map_err(|e| fail(PasswordFileErrorKind::BadHash(e)))?;
            let count = users.len();
            match users.entry(username.into()) {
                MapEntry::Occupied(e) => {
                    return Err(fail(PasswordFileErrorKind::DuplicateUser(e.get().line)));
                }
                MapEntry::Vacant(e) => {
                    if count >= MAX_USERS {
                        return Err(fail(PasswordFileErrorKind::TooManyUsers));
                    }
                    e.insert(UserEntry { hash, line });
                }
            }
        }
        Ok(PasswordFile { users })
    }

    /// The entry for `username`, if the file names it.
    pub fn get(&self, username: &str) -> Option<&UserEntry> {
        self.users.get(username)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The usernames, in no particular order.
    pub fn usernames(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(|k| &**k)
    }
}

/// One line: `None` for a blank line or a comment, else the trimmed username and hash.
fn parse_line(raw: &[u8]) -> Result<Option<(&str, &str)>, PasswordFileErrorKind> {
    if raw.len() > MAX_PASSWORD_LINE_BYTES {
        return Err(PasswordFileErrorKind::LineTooLong);
    }
    let text = std::str::from_utf8(raw).map_err(|_| PasswordFileErrorKind::NotUtf8)?;
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let (username, hash) = trimmed
        .split_once(':')
        .ok_or(PasswordFileErrorKind::MissingColon)?;
    let (username, hash) = (username.trim(), hash.trim());
    if username.is_empty() {
        return Err(PasswordFileErrorKind::EmptyUsername);
    }
    if hash.is_empty() {
        return Err(PasswordFileErrorKind::MissingHash);
    }
    Ok(Some((username, hash)))
}

/// Why `ringmq passwd` could not update the file.
#[derive(Debug)]
pub enum PasswdError {
    /// The username cannot be written to the file and read back as the same name.
    BadUsername(&'static str),
    /// The existing file does not parse; it is left untouched.
    ExistingFile(PasswordFileError),
    Io(io::Error),
}

impl fmt::Display for PasswdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswdError::BadUsername(why) => write!(f, "bad username: {why}"),
            PasswdError::ExistingFile(e) => {
                write!(
                    f,
                    "the existing password file is not valid, fix it first: {e}"
                )
            }
            PasswdError::Io(e) => write!(f, "cannot write the password file: {e}"),
        }
    }
}

impl std::error::Error for PasswdError {}

impl From<io::Error> for PasswdError {
    fn from(e: io::Error) -> PasswdError {
        PasswdError::Io(e)
    }
}

/// What [`passwd`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswdOutcome {
    /// The user was new: a line was appended.
    Added,
    /// The user's line was rewritten in place.
    Replaced,
}

/// Checks a username for `ringmq passwd`: it must read back as itself.
pub fn check_username(username: &str) -> Result<(), &'static str> {
    if username.is_empty() {
        return Err("empty");
    }
    if username.len() > 65_535 {
        return Err("longer than 65535 bytes");
    }
    if username.contains(':') {
        return Err("contains ':'");
    }
    if username.chars().any(char::is_control) {
        return Err("contains a control character");
    }
    if username.trim() != username {
        return Err("starts or ends with white space");
    }
    if username.starts_with('#') {
        return Err("starts with '#' (the line would be a comment)");
    }
    Ok(())
}

/// `ringmq passwd FILE USER`: sets `user`'s password to an argon2id hash of `password`.
///
/// Every other line (comments, blank lines, other users, their hash formats) is kept as
/// it was. The user's line is rewritten where it stands, or appended. The file is written
/// to a temporary file in the same directory, flushed to disk, and renamed over the old
/// one, so a reader (the broker on SIGHUP) sees the old file or the new one, never half of
/// one. A new file is created readable by its owner only; an existing file keeps its
/// permissions. A file that does not parse is refused, not rewritten.
pub fn passwd(file: &Path, user: &str, password: &[u8]) -> Result<PasswdOutcome, PasswdError> {
    check_username(user).map_err(PasswdError::BadUsername)?;
    let (old, permissions) = match fs::metadata(file) {
        Ok(meta) => (
            super::read_bounded(file, MAX_PASSWORD_FILE_BYTES).map_err(|e| match e {
                super::ReadError::TooLarge => PasswdError::ExistingFile(PasswordFileError {
                    line: 0,
                    kind: PasswordFileErrorKind::FileTooLarge,
                }),
                super::ReadError::Io(e) => PasswdError::Io(e),
            })?,
            Some(meta.permissions()),
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (Vec::new(), None),
        Err(e) => return Err(e.into()),
    };
    let parsed = PasswordFile::parse(&old).map_err(PasswdError::ExistingFile)?;
    let new_line = format!("{user}:{}", hash_argon2id(password));
    let (text, outcome) = match parsed.get(user) {
        Some(entry) => (
            replace_line(&old, entry.line, &new_line),
            PasswdOutcome::Replaced,
        ),
        None => {
            let mut text = old;
            if !text.is_empty() && !text.ends_with(b"\n") {
                text.push(b'\n');
            }
            text.extend_from_slice(new_line.as_bytes());
            text.push(b'\n');
            (text, PasswdOutcome::Added)
        }
    };
    write_atomically(file, &text, permissions)?;
    Ok(outcome)
}

/// `text` with its 1-based line `line` replaced by `with` (the line's own `\r\n` or `\n`
/// ending is kept).
fn replace_line(text: &[u8], line: usize, with: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + with.len());
    for (index, piece) in text.split_inclusive(|&b| b == b'\n').enumerate() {
        if index + 1 == line {
            out.extend_from_slice(with.as_bytes());
            if piece.ends_with(b"\r\n") {
                out.extend_from_slice(b"\r\n");
            } else if piece.ends_with(b"\n") {
                out.push(b'\n');
            } else {
                // The last line had no newline; give the new one its own.
                out.push(b'\n');
            }
        } else {
            out.extend_from_slice(piece);
        }
    }
    out
}

fn write_atomically(
    file: &Path,
    text: &[u8],
    permissions: Option<fs::Permissions>,
) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;

    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    let name = file
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".tmp-{}", std::process::id()));
    let temp = dir.join(temp_name);
    let result = (|| {
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        out.write_all(text)?;
        if let Some(permissions) = permissions {
            out.set_permissions(permissions)?;
        }
        out.sync_all()?;
        drop(out);
        fs::rename(&temp, file)?;
        // The rename itself is durable once the directory is.
        fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known answers made with mosquitto_passwd 2.0.11 (Debian) and the reference argon2
    // tool (`echo -n hunter2 | argon2 somesaltsomesalt -id -t 2 -m 10 -p 1 -e`).
    const ALICE_7: &str = "$7$101$ir/p3/xXSkdt03Yj$lh7WKjUabjH6NZCzmEzHKSa3Rc1ZmtC6R8C/azCgE8rzifXA1p9oU+tjjHZH6ni6kY1x8K4xNLS0ZOAyHL5c7A==";
    const BOB_7: &str = "$7$101$XA2QR4wmS/2182/h$vRpl8G9rYoBi/w6hir7BLvSvuEOS2fGbVs2Wl+BoycN84ENcENH5q+YkKNDnI9Nm0bcE8j8sE2c2I6IGYHo7AA==";
    const CAROL_6: &str = "$6$2nOhqxG1whzlSWKp$iY2uo3SdX0WirZ26a1wD74XWGyEtEGbl2K2M87ZSGruqfhM62ZybeB8/fsQc0tVOOVAcVECHsXVonsp7G8NHjA==";
    const DAVE_ARGON2: &str = "$argon2id$v=19$m=1024,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$/jEQhe4337R1eGtnbNv/S4pua0XWOsHW/yP2HgHIA8s";

    #[test]
    fn password_known_answers_from_mosquitto_passwd_and_argon2() {
        let cases = [
            (ALICE_7, "secret1"),
            (BOB_7, "p@ss wörd"),
            (CAROL_6, "hunter2"),
            (DAVE_ARGON2, "hunter2"),
        ];
        for (hash, password) in cases {
            let parsed = PasswordHash::parse(hash).unwrap();
            assert!(parsed.verify(password.as_bytes()), "{hash}");
            assert!(!parsed.verify(b"wrong"), "{hash}");
            assert!(!parsed.verify(b""), "{hash}");
            let mut longer = password.as_bytes().to_vec();
            longer.push(b'x');
            assert!(!parsed.verify(&longer), "{hash}");
        }
    }

    #[test]
    fn password_hash_argon2id_uses_owasp_parameters_and_verifies() {
        let phc = hash_argon2id(b"s3cret");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        let parsed = PasswordHash::parse(&phc).unwrap();
        assert!(parsed.verify(b"s3cret"));
        assert!(!parsed.verify(b"s3cret "));
        // A fresh salt each time.
        assert_ne!(phc, hash_argon2id(b"s3cret"));
    }

    #[test]
    fn password_hash_parse_errors() {
        let digest = BASE64.encode([7u8; 64]);
        let salt12 = BASE64.encode([1u8; 12]);
        let salt64 = BASE64.encode([1u8; 64]);
        let cases = [
            ("plaintext".to_owned(), HashError::UnknownFormat),
            ("$5$abc$def".to_owned(), HashError::UnknownFormat),
            ("$argon2i$v=19$m=1024,t=2,p=1$c29tZXNhbHQ$aGFzaA".to_owned(), HashError::UnknownFormat),
            ("$7$101$".to_owned(), HashError::Malformed),
            (format!("$7$101${salt12}${digest}$x"), HashError::Malformed),
            (format!("$6${salt12}"), HashError::Malformed),
            (format!("$7$0${salt12}${digest}"), HashError::BadIterations),
            (format!("$7$-1${salt12}${digest}"), HashError::BadIterations),
            (format!("$7$1000001${salt12}${digest}"), HashError::BadIterations),
            (format!("$7$x${salt12}${digest}"), HashError::BadIterations),
            (format!("$7$101$!!!${digest}"), HashError::BadSalt),
            (format!("$7$101${}${digest}", BASE64.encode([1u8; 16])), HashError::BadSalt),
            (format!("$7$101${salt12}${}", BASE64.encode([1u8; 32])), HashError::BadDigest),
            (format!("$6${salt12}$!!"), HashError::BadDigest),
            ("$argon2id$v=19$m=1024,t=2,p=1$c29tZXNhbHQ".to_owned(), HashError::BadArgon2),
            ("$argon2id$garbage".to_owned(), HashError::BadArgon2),
            (
                "$argon2id$v=16$m=1024,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$/jEQhe4337R1eGtnbNv/S4pua0XWOsHW/yP2HgHIA8s".to_owned(),
                HashError::BadArgon2,
            ),
            (
                "$argon2id$v=19$m=1048576,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$/jEQhe4337R1eGtnbNv/S4pua0XWOsHW/yP2HgHIA8s".to_owned(),
                HashError::Argon2TooCostly,
            ),
            (
                "$argon2id$v=19$m=1024,t=17,p=1$c29tZXNhbHRzb21lc2FsdA$/jEQhe4337R1eGtnbNv/S4pua0XWOsHW/yP2HgHIA8s".to_owned(),
                HashError::Argon2TooCostly,
            ),
        ];
        for (hash, expected) in cases {
            assert_eq!(PasswordHash::parse(&hash), Err(expected), "{hash}");
        }
        assert!(PasswordHash::parse(&format!("$7$101${salt64}${digest}")).is_ok());
        assert!(PasswordHash::parse(&format!("$6${salt64}${digest}")).is_ok());
    }

    #[test]
    fn password_file_lines_like_mosquitto() {
        let text = format!(
            "# comment\n\
             \n\
             \x20 \t\n\
             \x20  # indented comment\n\
             alice:{ALICE_7}\r\n\
             \x20 bob smith \t:  {BOB_7}  \n\
             carol:{CAROL_6}"
        );
        let file = PasswordFile::parse(text.as_bytes()).unwrap();
        assert_eq!(file.len(), 3);
        assert_eq!(file.get("alice").unwrap().line, 5);
        assert!(file.get("alice").unwrap().hash.verify(b"secret1"));
        assert!(
            file.get("bob smith")
                .unwrap()
                .hash
                .verify("p@ss wörd".as_bytes())
        );
        assert_eq!(file.get("carol").unwrap().line, 7);
        assert!(file.get("bob").is_none());
        assert!(PasswordFile::parse(b"").unwrap().is_empty());
    }

    #[test]
    fn password_file_malformed_lines_name_the_line() {
        use PasswordFileErrorKind::*;
        let cases: Vec<(String, usize, PasswordFileErrorKind)> = vec![
            ("alice".to_owned(), 1, MissingColon),
            (format!("# c\n:{ALICE_7}"), 2, EmptyUsername),
            ("alice:".to_owned(), 1, MissingHash),
            ("alice:   \r".to_owned(), 1, MissingHash),
            (
                "alice:secret".to_owned(),
                1,
                BadHash(HashError::UnknownFormat),
            ),
            (
                format!("alice:{ALICE_7}:extra"),
                1,
                BadHash(HashError::BadDigest),
            ),
            (
                format!("alice:{ALICE_7}\n\nalice:{CAROL_6}"),
                3,
                DuplicateUser(1),
            ),
        ];
        for (text, line, kind) in cases {
            let got = PasswordFile::parse(text.as_bytes()).unwrap_err();
            assert_eq!(got, PasswordFileError { line, kind }, "{text:?}");
        }
        let mut not_utf8 = format!("alice:{ALICE_7}\nbob:").into_bytes();
        not_utf8.push(0xff);
        assert_eq!(
            PasswordFile::parse(&not_utf8).unwrap_err(),
            PasswordFileError {
                line: 2,
                kind: NotUtf8
            }
        );
        let long = format!("u:{}", "a".repeat(MAX_PASSWORD_LINE_BYTES));
        assert_eq!(
            PasswordFile::parse(long.as_bytes()).unwrap_err(),
            PasswordFileError {
                line: 1,
                kind: LineTooLong
            }
        );
        assert_eq!(
            PasswordFile::parse(b"alice:secret")
                .unwrap_err()
                .to_string(),
            "line 1: unknown hash format (expected $7$, $6$ or $argon2id$; plain-text passwords are not accepted)"
        );
    }

    #[test]
    fn password_file_user_count_is_bounded() {
        let mut text = String::new();
        for i in 0..=MAX_USERS {
            text.push_str(&format!("u{i}:{CAROL_6}\n"));
        }
        assert_eq!(
            PasswordFile::parse(text.as_bytes()).unwrap_err(),
            PasswordFileError {
                line: MAX_USERS + 1,
                kind: PasswordFileErrorKind::TooManyUsers
            }
        );
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ringmq-auth-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn password_passwd_adds_replaces_and_keeps_other_lines() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("passwd");
        let file = dir.join("passwords");
        assert_eq!(passwd(&file, "ann", b"one").unwrap(), PasswdOutcome::Added);
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let parsed = PasswordFile::load(&file).unwrap();
        assert!(parsed.get("ann").unwrap().hash.verify(b"one"));

        // A hand-written file with comments, CRLF, other formats and no final newline.
        let original = format!("# users\r\nalice:{ALICE_7}\r\nann:{CAROL_6}\r\n\ncarol:{CAROL_6}");
        fs::write(&file, &original).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(
            passwd(&file, "ann", b"two").unwrap(),
            PasswdOutcome::Replaced
        );
        assert_eq!(
            passwd(&file, "zoe", b"three").unwrap(),
            PasswdOutcome::Added
        );
        let text = fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines[0], "# users\r");
        assert_eq!(lines[1], format!("alice:{ALICE_7}\r"));
        assert!(lines[2].starts_with("ann:$argon2id$") && lines[2].ends_with('\r'));
        assert_eq!(lines[3], "");
        assert_eq!(lines[4], format!("carol:{CAROL_6}"));
        assert!(lines[5].starts_with("zoe:$argon2id$"));
        assert_eq!(lines[6], "");
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let parsed = PasswordFile::load(&file).unwrap();
        assert!(parsed.get("ann").unwrap().hash.verify(b"two"));
        assert!(!parsed.get("ann").unwrap().hash.verify(b"one"));
        assert!(parsed.get("zoe").unwrap().hash.verify(b"three"));
        assert!(parsed.get("alice").unwrap().hash.verify(b"secret1"));
        // No temporary file left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn password_passwd_refuses_bad_names_and_broken_files() {
        let dir = temp_dir("passwd-bad");
        let file = dir.join("passwords");
        for (name, why) in [
            ("", "empty"),
            ("a:b", "contains ':'"),
            ("a\nb", "contains a control character"),
            (" a", "starts or ends with white space"),
            ("#a", "starts with '#' (the line would be a comment)"),
        ] {
            match passwd(&file, name, b"x") {
                Err(PasswdError::BadUsername(got)) => assert_eq!(got, why, "{name:?}"),
                other => panic!("{name:?}: {other:?}"),
            }
        }
        fs::write(&file, "alice:plaintext\n").unwrap();
        match passwd(&file, "bob", b"x") {
            Err(PasswdError::ExistingFile(e)) => assert_eq!(e.line, 1),
            other => panic!("{other:?}"),
        }
        assert_eq!(fs::read_to_string(&file).unwrap(), "alice:plaintext\n");
        fs::remove_dir_all(&dir).unwrap();
    }
}
