//! The vocabulary the flags, the config file and the settings share: where a listener
//! listens, lists of cores, and what the host allows. A leaf: it imports nothing of its
//! siblings, so `cli` and `settings` both build on it without importing each other.

use std::fmt::{self, Display};
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use serde::Deserialize;

/// What the host allows; found at start by `system`, and passed in so tests can fake it.
#[derive(Debug, Clone)]
pub struct Host {
    /// Cores this process may run on (its affinity mask), ascending.
    pub cores: Vec<usize>,
    /// `std::thread::available_parallelism`.
    pub parallelism: usize,
    /// The open-file limit in force (the soft limit, after raising it to the hard one).
    pub nofile: u64,
}

/// Where a listener listens: an address, or nowhere (`none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum ListenAddr {
    Off,
    At(SocketAddr),
}

impl ListenAddr {
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            ListenAddr::Off => None,
            ListenAddr::At(a) => Some(a),
        }
    }
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<ListenAddr, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("none") {
            return Ok(ListenAddr::Off);
        }
        if s.is_empty() {
            return Err("empty address (use `none` to turn the listener off)".into());
        }
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(ListenAddr::At(a));
        }
        let expected = "expected IP:PORT (like 127.0.0.1:1883 or [::1]:1883), HOST:PORT, or `none`";
        if !s.contains(':') {
            return Err(format!("no port in `{s}`: {expected}"));
        }
        match s.to_socket_addrs() {
            Ok(mut addrs) => match addrs.next() {
                Some(a) => Ok(ListenAddr::At(a)),
                None => Err(format!("`{s}` resolves to no address")),
            },
            Err(e) => Err(format!("cannot resolve `{s}` ({e}): {expected}")),
        }
    }
}

impl TryFrom<String> for ListenAddr {
    type Error = String;
    fn try_from(s: String) -> Result<ListenAddr, String> {
        s.parse()
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Off => f.write_str("none"),
            ListenAddr::At(a) => a.fmt(f),
        }
    }
}

/// CPU cores as written in `--cores`: `0-3,8`, in the order given, each at most once.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct CoreList(pub Vec<usize>);

/// Cores `sched_setaffinity` can name with a `cpu_set_t`.
pub const MAX_CORE: usize = libc::CPU_SETSIZE as usize - 1;

impl FromStr for CoreList {
    type Err = String;

    fn from_str(s: &str) -> Result<CoreList, String> {
        let hint = "expected cores and ranges like `0-3,8`";
        let number = |t: &str| -> Result<usize, String> {
            let t = t.trim();
            match t.parse::<usize>() {
                Ok(n) if n <= MAX_CORE => Ok(n),
                Ok(n) => Err(format!(
                    "core {n} is past the highest core number, {MAX_CORE}"
                )),
                Err(_) => Err(format!("`{t}` is not a core number; {hint}")),
            }
        };
        let mut cores = Vec::new();
        for item in s.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(format!("empty item in `{s}`; {hint}"));
            }
            match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (number(a)?, number(b)?);
                    if a > b {
                        return Err(format!("range `{item}` runs backwards; write `{b}-{a}`"));
                    }
                    cores.extend(a..=b);
                }
                None => cores.push(number(item)?),
            }
        }
        let mut seen = [false; MAX_CORE + 1];
        for &c in &cores {
            if std::mem::replace(&mut seen[c], true) {
                return Err(format!("core {c} is listed twice in `{s}`"));
            }
        }
        Ok(CoreList(cores))
    }
}

impl TryFrom<String> for CoreList {
    type Error = String;
    fn try_from(s: String) -> Result<CoreList, String> {
        s.parse()
    }
}

impl Display for CoreList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Ranges(&self.0).fmt(f)
    }
}

/// Writes cores the way `--cores` takes them: `0-3,8`.
pub struct Ranges<'a>(pub &'a [usize]);

impl Display for Ranges<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        let s = self.0;
        while i < s.len() {
            let mut j = i;
            while j + 1 < s.len() && s[j + 1] == s[j] + 1 {
                j += 1;
            }
            if i > 0 {
                f.write_str(",")?;
            }
            if j > i {
                write!(f, "{}-{}", s[i], s[j])?;
            } else {
                write!(f, "{}", s[i])?;
            }
            i = j + 1;
        }
        Ok(())
    }
}

/// A rate as written in `--client-msg-rate` and its kin: `RATE` or `RATE:BURST`, per
/// second; the burst defaults to one second's worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RateText")]
pub struct RateSpec {
    pub per_s: u64,
    pub burst: u64,
}

/// A rate in the config file: a number, or a string `RATE:BURST`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RateText {
    Number(u64),
    Text(String),
}

impl TryFrom<RateText> for RateSpec {
    type Error = String;
    fn try_from(t: RateText) -> Result<RateSpec, String> {
        match t {
            RateText::Number(n) => RateSpec::new(n, n),
            RateText::Text(s) => s.parse(),
        }
    }
}

impl RateSpec {
    fn new(per_s: u64, burst: u64) -> Result<RateSpec, String> {
        if per_s == 0 || burst == 0 {
            return Err(
                "a rate and its burst must be at least 1 (leave the flag out for no limit)".into(),
            );
        }
        Ok(RateSpec { per_s, burst })
    }
}

impl FromStr for RateSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<RateSpec, String> {
        let hint = "expected RATE or RATE:BURST, whole numbers per second (like 100 or 100:500)";
        let number = |t: &str| {
            t.trim()
                .parse::<u64>()
                .map_err(|_| format!("`{}` is not a whole number; {hint}", t.trim()))
        };
        match s.split_once(':') {
            Some((rate, burst)) => RateSpec::new(number(rate)?, number(burst)?),
            None => {
                let rate = number(s)?;
                RateSpec::new(rate, rate)
            }
        }
    }
}

impl Display for RateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.per_s, self.burst)
    }
}

/// Where a CONNECT carries its JWT (`--jwt-from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum JwtFrom {
    /// The password field; the username, if any, must match the token's `sub`.
    #[default]
    Password,
    /// The username field.
    Username,
}

impl Display for JwtFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JwtFrom::Password => "password",
            JwtFrom::Username => "username",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_lists_parse() {
        assert_eq!("0-1".parse::<CoreList>().unwrap().0, [0, 1]);
        assert_eq!("0,2,4".parse::<CoreList>().unwrap().0, [0, 2, 4]);
        assert_eq!("0-3,8".parse::<CoreList>().unwrap().0, [0, 1, 2, 3, 8]);
        assert_eq!(" 3 , 1-2 ".parse::<CoreList>().unwrap().0, [3, 1, 2]);
        assert_eq!("5".parse::<CoreList>().unwrap().0, [5]);
    }

    #[test]
    fn bad_core_lists_say_what_is_wrong() {
        for (input, says) in [
            ("", "empty item"),
            ("0,,1", "empty item"),
            ("0-x", "`x` is not a core number"),
            ("a", "`a` is not a core number"),
            ("-1", "`` is not a core number"),
            ("3-1", "runs backwards"),
            ("0,1,0", "core 0 is listed twice"),
            ("0-2,1", "core 1 is listed twice"),
            ("5000", "past the highest core number"),
        ] {
            let e = input.parse::<CoreList>().unwrap_err();
            assert!(e.contains(says), "{input:?}: {e}");
        }
    }

    #[test]
    fn listen_addresses_parse() {
        assert_eq!("none".parse::<ListenAddr>().unwrap(), ListenAddr::Off);
        assert_eq!("NONE".parse::<ListenAddr>().unwrap(), ListenAddr::Off);
        let a: SocketAddr = "127.0.0.1:1883".parse().unwrap();
        assert_eq!(
            "127.0.0.1:1883".parse::<ListenAddr>().unwrap(),
            ListenAddr::At(a)
        );
        let v6: SocketAddr = "[::1]:0".parse().unwrap();
        assert_eq!("[::1]:0".parse::<ListenAddr>().unwrap(), ListenAddr::At(v6));
        assert!(matches!(
            "localhost:1883".parse::<ListenAddr>(),
            Ok(ListenAddr::At(_))
        ));
        assert!("".parse::<ListenAddr>().unwrap_err().contains("use `none`"));
        assert!(
            "127.0.0.1"
                .parse::<ListenAddr>()
                .unwrap_err()
                .contains("no port")
        );
        assert!("127.0.0.1:99999".parse::<ListenAddr>().is_err());
    }

    #[test]
    fn rates_parse() {
        let r = |s: &str| s.parse::<RateSpec>();
        assert_eq!(
            r("100").unwrap(),
            RateSpec {
                per_s: 100,
                burst: 100
            }
        );
        assert_eq!(
            r(" 10 : 50 ").unwrap(),
            RateSpec {
                per_s: 10,
                burst: 50
            }
        );
        assert!(r("0").unwrap_err().contains("at least 1"));
        assert!(r("10:0").unwrap_err().contains("at least 1"));
        assert!(
            r("ten")
                .unwrap_err()
                .contains("`ten` is not a whole number")
        );
        assert!(r("1:2:3").is_err());
        #[derive(Deserialize)]
        struct F {
            a: RateSpec,
            b: RateSpec,
        }
        let f: F = toml::from_str("a = 5\nb = \"5:9\"\n").unwrap();
        assert_eq!((f.a.burst, f.b.burst), (5, 9));
        assert_eq!(RateSpec { per_s: 5, burst: 9 }.to_string(), "5:9");
    }

    #[test]
    fn ranges_print_compactly() {
        assert_eq!(Ranges(&[0, 1, 2, 3, 8]).to_string(), "0-3,8");
        assert_eq!(Ranges(&[4, 2, 3]).to_string(), "4,2-3");
        assert_eq!(Ranges(&[5]).to_string(), "5");
        assert_eq!(Ranges(&[]).to_string(), "");
    }
}
