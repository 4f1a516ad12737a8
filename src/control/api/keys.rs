//! API keys (`--api-key-file`): one key per line; blank lines and lines starting with `#`
//! are skipped, surrounding spaces trimmed. Only SHA-256 digests of the keys are kept in
//! memory, and a presented key is compared with every digest in constant time, so neither
//! the keys nor which prefix of one matched can be read from timings.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest key accepted: 16 characters (a guessable key is no key).
pub const MIN_KEY_LEN: usize = 16;
/// Most keys one file may hold.
pub const MAX_KEYS: usize = 1024;

/// The set of valid keys, as digests.
#[derive(Clone)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.digests.len())
    }
}

impl ApiKeys {
    /// Reads a key file; an error names the file and the line.
    pub fn load(path: &Path) -> Result<ApiKeys, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the API key file {}: {e}", path.display()))?;
        ApiKeys::parse(&text).map_err(|e| format!("API key file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<ApiKeys, String> {
        let mut digests = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let key = line.trim();
            if key.is_empty() || key.starts_with('#') {
                continue;
            }
            if key.len() < MIN_KEY_LEN {
                return Err(format!(
                    "line {}: a key must be at least {MIN_KEY_LEN} characters",
                    i + 1
                ));
            }
            if !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "line {}: a key is printable ASCII without spaces (it travels in a header)",
                    i + 1
                ));
            }
            if digests.len() == MAX_KEYS {
                return Err(format!("more than {MAX_KEYS} keys"));
            }
            digests.push(digest(key));
        }
        if digests.is_empty() {
            return Err("no key in the file (one key per line)".into());
        }
        Ok(ApiKeys { digests })
    }

    /// Whether `presented` is one of the keys. Every digest is compared, whatever matches.
    pub fn accepts(&self, presented: &str) -> bool {
        let d = digest(presented);
        let mut found = subtle::Choice::from(0);
        for k in &self.digests {
            found |= k.ct_eq(&d);
        }
        found.into()
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_and_matched_whole() {
        let keys = ApiKeys::parse("# ops\n\n  0123456789abcdef  \nfedcba9876543210-2\n").unwrap();
        assert!(keys.accepts("0123456789abcdef"));
        assert!(keys.accepts("fedcba9876543210-2"));
        assert!(!keys.accepts("0123456789abcde"));
        assert!(!keys.accepts("0123456789abcdef0"));
        assert!(!keys.accepts(""));
    }

    #[test]
    fn bad_files_say_why() {
        assert!(
            ApiKeys::parse("# nothing\n")
                .unwrap_err()
                .contains("no key")
        );
        assert!(ApiKeys::parse("short\n").unwrap_err().contains("line 1"));
        assert!(
            ApiKeys::parse("0123456789abcdef\nwith a space inside\n")
                .unwrap_err()
                .contains("line 2")
        );
    }
}
