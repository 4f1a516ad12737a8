//! Just enough HTTP/1.1 (RFC 9110, 9112) for the WebSocket opening handshake: find the
//! end of a message head, split it into the start line and header fields, and read
//! comma-separated token lists. Everything borrows from the input; nothing allocates.

use crate::Decoded;
use crate::ws::handshake::HandshakeError;

const CRLF: &[u8] = b"\r\n";
/// The blank line that ends a message head.
const HEAD_END: &[u8] = b"\r\n\r\n";

/// A message head: its start line and the header block after it.
pub(super) struct Head<'a> {
    pub start_line: &'a [u8],
    /// The header lines, each ended by CRLF (empty when there are no headers).
    headers: &'a [u8],
}

/// Finds the message head at the front of `buf`. `Complete(head, consumed)` counts the
/// bytes up to and including the blank line. The limit applies to the bytes seen so far,
/// so a head that never ends fails as soon as `max_head_bytes` are in without a blank
/// line, and is never buffered past it.
pub(super) fn find_head(
    buf: &[u8],
    max_head_bytes: usize,
) -> Result<Decoded<Head<'_>>, HandshakeError> {
    let window = &buf[..buf.len().min(max_head_bytes)];
    let Some(pos) = window.windows(HEAD_END.len()).position(|w| w == HEAD_END) else {
        if buf.len() >= max_head_bytes {
            return Err(HandshakeError::HeadersTooLarge);
        }
        return Ok(Decoded::Partial {
            need: HEAD_END.len() - partial_terminator_len(buf),
        });
    };
    // `pos` is where the last line's CRLF starts; keep that CRLF with the headers.
    let lines = &buf[..pos + CRLF.len()];
    let first_crlf = lines
        .windows(CRLF.len())
        .position(|w| w == CRLF)
        .unwrap_or(pos);
    let (start_line, headers) = (&lines[..first_crlf], &lines[first_crlf + CRLF.len()..]);
    Ok(Decoded::Complete(
        Head {
            start_line,
            headers,
        },
        pos + HEAD_END.len(),
    ))
}

/// How many bytes at the end of `buf` could begin the blank line (`\r`, `\r\n`, `\r\n\r`).
fn partial_terminator_len(buf: &[u8]) -> usize {
    (1..HEAD_END.len())
        .rev()
        .find(|&n| buf.ends_with(&HEAD_END[..n]))
        .unwrap_or(0)
}

impl<'a> Head<'a> {
    /// The header fields as `(name, value)`, the value without surrounding whitespace;
    /// fails on a malformed line and when there are more than `max_headers`.
    pub fn headers(
        &self,
        max_headers: usize,
    ) -> impl Iterator<Item = Result<(&'a [u8], &'a [u8]), HandshakeError>> + use<'a> {
        let mut rest = self.headers;
        let mut count = 0;
        std::iter::from_fn(move || {
            let end = rest.windows(CRLF.len()).position(|w| w == CRLF)?;
            let line = &rest[..end];
            rest = &rest[end + CRLF.len()..];
            count += 1;
            if count > max_headers {
                rest = &[];
                return Some(Err(HandshakeError::TooManyHeaders));
            }
            Some(parse_field(line))
        })
    }
}

/// One `name: value` line. The name is a token with no whitespace before the colon;
/// the value may hold visible characters, spaces, tabs and non-ASCII bytes, but no other
/// control characters (a stray CR or LF included). A line that starts with whitespace
/// (obsolete line folding) is rejected.
fn parse_field(line: &[u8]) -> Result<(&[u8], &[u8]), HandshakeError> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(HandshakeError::MalformedHeader)?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if !is_token(name) || !value.iter().all(|&b| is_field_byte(b)) {
        return Err(HandshakeError::MalformedHeader);
    }
    Ok((name, trim(value)))
}

/// A non-empty run of RFC 9110 `tchar`s.
pub(super) fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A byte allowed in a field value: visible ASCII, space, tab, or obs-text (0x80–0xFF).
fn is_field_byte(b: u8) -> bool {
    matches!(b, b'\t' | b' '..=b'~' | 0x80..=0xff)
}

/// Optional whitespace (spaces and tabs) removed from both ends.
pub(super) fn trim(s: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().position(|b| !is_ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

/// The elements of a comma-separated list, trimmed, empty elements skipped.
pub(super) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|t| !t.is_empty())
}

/// Whether a comma-separated list holds `token`, compared ignoring ASCII case.
pub(super) fn list_contains(value: &[u8], token: &str) -> bool {
    tokens(value).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// Parses `HTTP/<major>.<minor>` and tells whether it is at least HTTP/1.1.
/// `None` when it is not an HTTP version at all.
pub(super) fn is_http_1_1_or_later(version: &[u8]) -> Option<bool> {
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Some((*major, *minor) >= (b'1', b'1'))
        }
        _ => None,
    }
}

/// Appends the decimal digits of `n` (no allocation beyond `out`).
pub(super) fn push_decimal(out: &mut Vec<u8>, n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_need_counts_the_missing_part_of_the_blank_line() {
        for (input, need) in [
            (&b"GET"[..], 4),
            (b"GET / HTTP/1.1\r", 3),
            (b"GET / HTTP/1.1\r\n", 2),
            (b"GET / HTTP/1.1\r\nA: b\r\n\r", 1),
        ] {
            assert!(matches!(find_head(input, 100), Ok(Decoded::Partial { need: n }) if n == need));
        }
    }

    #[test]
    fn lists_and_trimming() {
        assert!(list_contains(b" keep-alive ,\tUpgrade", "upgrade"));
        assert!(!list_contains(b"upgraded", "upgrade"));
        assert_eq!(trim(b" \t "), b"");
        assert_eq!(tokens(b"a,, b ,").collect::<Vec<_>>(), [&b"a"[..], b"b"]);
    }

    #[test]
    fn versions() {
        assert_eq!(is_http_1_1_or_later(b"HTTP/1.1"), Some(true));
        assert_eq!(is_http_1_1_or_later(b"HTTP/2.0"), Some(true));
        assert_eq!(is_http_1_1_or_later(b"HTTP/1.0"), Some(false));
        assert_eq!(is_http_1_1_or_later(b"HTTP/1.10"), None);
    }

    #[test]
    fn decimal() {
        for n in [0, 7, 10, 431, usize::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
