//! Helpers at the bottom of the module graph: sizes and times as docker prints them, and the
//! one size parser every input goes through (flags, manifests, `config.toml`).

use std::time::Duration;

/// Bytes in docker's decimal style: `1.2kB`, `34.5MB`, `2GB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        // docker shows 3 significant digits: 1.23MB, 12.3MB, 123MB
        let digits = if v >= 100.0 {
            0
        } else if v >= 10.0 {
            1
        } else {
            2
        };
        let s = format!("{v:.digits$}");
        let s = if digits > 0 {
            s.trim_end_matches('0').trim_end_matches('.')
        } else {
            &s
        };
        format!("{s}{}", UNITS[unit])
    }
}

/// A duration as docker's "About a minute", "3 hours", "2 weeks" (without "ago").
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..60 => format!("{s} seconds"),
        60..120 => "About a minute".into(),
        120..3600 => format!("{} minutes", s / 60),
        3600..7200 => "About an hour".into(),
        7200..172800 => format!("{} hours", s / 3600),
        172800..1209600 => format!("{} days", s / 86400),
        1209600..5259600 => format!("{} weeks", s / 604800),
        5259600..63115200 => format!("{} months", s / 2629800),
        _ => format!("{} years", s / 31557600),
    }
}

/// "3 hours ago" for a time in nanoseconds since the epoch.
pub fn ago(ns: i64) -> String {
    let now = crate::store::now_ns();
    let d = Duration::from_nanos(now.saturating_sub(ns).max(0) as u64);
    format!("{} ago", human_duration(d))
}

/// RFC 3339 with nanoseconds, UTC, for JSON output.
pub fn rfc3339(ns: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64);
    humantime::format_rfc3339_nanos(t).to_string()
}

/// Parses `HUP`, `SIGHUP`, `hup` or `1`.
pub fn parse_signal(s: &str) -> anyhow::Result<i32> {
    if let Ok(n) = s.parse::<i32>()
        && (1..=64).contains(&n)
    {
        return Ok(n);
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| {
            crate::error::user(format!("invalid signal {s:?}"))
                .hint("use a name like TERM, HUP, KILL or a number")
                .into()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(1234), "1.23kB");
        assert_eq!(human_size(12_345_678), "12.3MB");
        assert_eq!(human_size(123_456_789), "123MB");
        assert_eq!(human_size(2_000_000_000), "2GB");
    }

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(human_duration(Duration::from_secs(45)), "45 seconds");
        assert_eq!(human_duration(Duration::from_secs(90)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(180)), "3 minutes");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600)), "3 hours");
        assert_eq!(human_duration(Duration::from_secs(3 * 86400)), "3 days");
        assert_eq!(human_duration(Duration::from_secs(15 * 86400)), "2 weeks");
    }

    #[test]
    fn rfc3339_is_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
    }
}

/// A point in time from the command line, in ns since the epoch: a duration back from now
/// (`90s`, `24h`, `7d`), an RFC 3339 time (`2026-11-28T10:00:00Z`), or Unix seconds.
pub fn parse_time_arg(s: &str) -> Result<i64, crate::error::UserError> {
    let s = s.trim();
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(crate::store::now_ns().saturating_sub(d.as_nanos() as i64));
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64));
    }
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs.saturating_mul(1_000_000_000));
    }
    Err(crate::error::user(format!("{s:?} is not a time"))
        .hint("give a duration back from now (90s, 24h, 7d), an RFC 3339 time, or Unix seconds"))
}

/// Why a size did not parse: what is wrong, and what to write instead. Callers put the
/// place (a flag, `file:line:col`) around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeError {
    /// What is wrong with it: `unknown unit "Q"`, `too large`.
    pub reason: String,
    pub hint: &'static str,
}

impl SizeError {
    /// `invalid size "12Q": unknown unit "Q"`.
    pub fn message(&self, input: &str) -> String {
        format!("invalid size {input:?}: {}", self.reason)
    }
}

/// What every size error suggests.
pub const SIZE_HINT: &str = "write a number with a binary unit, e.g. \"512k\", \"64MiB\", \"1G\" (b, k, m, g, t, p, with or without \"b\"/\"ib\"; all are powers of 1024)";

/// Parses a size into bytes: the one grammar of `-m`, `--memory-swap`, manifest sizes,
/// `config.toml` and log policies.
///
/// `NUMBER [UNIT]`, no space in between, case-insensitive. NUMBER is decimal digits with an
/// optional fraction (`1.5`), rounded down to a whole byte. UNIT is `b`, or one of `k m g t p`
/// optionally followed by `b` or `ib`; every unit is binary, as docker's `RAMInBytes`
/// (go-units) reads `--memory`: `64m` = `64MB` = `64MiB` = 67108864. Unlike go-units, a space
/// before the unit and exponents (`1e3`) are refused, so a manifest's JSON Schema pattern
/// can say exactly what is accepted.
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    const KIB: u64 = 1024;
    let err = |reason: String| SizeError {
        reason,
        hint: SIZE_HINT,
    };
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let unit_lc = unit.to_ascii_lowercase();
    let factor = match unit_lc.as_bytes() {
        [] | [b'b'] => 1,
        [p] | [p, b'b'] | [p, b'i', b'b'] => match p {
            b'k' => KIB,
            b'm' => KIB.pow(2),
            b'g' => KIB.pow(3),
            b't' => KIB.pow(4),
            b'p' => KIB.pow(5),
            _ => return Err(err(format!("unknown unit {unit:?}"))),
        },
        _ => return Err(err(format!("unknown unit {unit:?}"))),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() || frac.contains('.') || (num.contains('.') && frac.is_empty()) {
        return Err(err("expected a number before the unit".into()));
    }
    let too_big = || SizeError {
        reason: "too large".into(),
        hint: "sizes are limited to 2^64 bytes",
    };
    let int: u64 = int.parse().map_err(|_| too_big())?;
    let mut bytes = int.checked_mul(factor).ok_or_else(too_big)?;
    if !frac.is_empty() {
        // fraction * factor, rounded down, computed exactly on the digits we keep.
        let digits = &frac[..frac.len().min(12)];
        let f: u128 = digits.parse().unwrap_or(0);
        let scale = 10u128.pow(digits.len() as u32);
        let extra = u64::try_from(f * u128::from(factor) / scale).map_err(|_| too_big())?;
        bytes = bytes.checked_add(extra).ok_or_else(too_big)?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn docker_and_manifest_forms_are_one_grammar() {
        for (s, n) in [
            ("0", 0),
            ("100", 100),
            ("100b", 100),
            ("100B", 100),
            ("512k", 512 << 10),
            ("512K", 512 << 10),
            ("512kb", 512 << 10),
            ("512KiB", 512 << 10),
            ("64m", 64 << 20),
            ("64M", 64 << 20),
            ("64mb", 64 << 20),
            ("64MB", 64 << 20),
            ("64MiB", 64 << 20),
            ("64mib", 64 << 20),
            ("1g", 1 << 30),
            ("1G", 1 << 30),
            ("1GiB", 1 << 30),
            ("2t", 2 << 40),
            ("1p", 1 << 50),
            ("1.5k", 1536),
            ("0.5g", 512 << 20),
            (" 64m ", 64 << 20),
        ] {
            assert_eq!(parse_size(s), Ok(n), "{s}");
        }
        for s in [
            "",
            "x",
            "k",
            "b",
            "12Q",
            "1.2.3m",
            "-1",
            "1 G",
            "1.m",
            ".5m",
            "64ib",
            "64i",
            "64mbb",
            "64mi",
            "1e3",
            "1kk",
            "99999999999999999999",
            "16385p",
            "0x10",
        ] {
            let e = parse_size(s).expect_err(s);
            let m = e.message(s);
            assert!(m.starts_with(&format!("invalid size {s:?}: ")), "{m}");
        }
    }
}

#[cfg(test)]
mod time_arg_tests {
    use super::*;

    #[test]
    fn parses_durations_times_and_seconds() {
        let now = crate::store::now_ns();
        let t = parse_time_arg("2h").unwrap();
        assert!((now - t - 7_200_000_000_000).abs() < 5_000_000_000);
        assert_eq!(
            parse_time_arg("1970-01-01T00:01:00Z").unwrap(),
            60_000_000_000
        );
        assert_eq!(parse_time_arg("60").unwrap(), 60_000_000_000);
        let err = parse_time_arg("yesterday").unwrap_err();
        assert!(err.hint.unwrap().contains("24h"));
    }
}
