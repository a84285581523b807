//! Go durations: Calico's duration fields (`leakGracePeriod`, `keepaliveTime`,
//! `maxRestartTime`, ...) hold the text of a Go `time.Duration` (`90s`, `1h30m`, `1.5ms`).
//!
//! [`GoDuration::parse`] accepts exactly what Go's `time.ParseDuration` accepts: an optional
//! sign, then one or more `<decimal><unit>` with units `ns`, `us` (or `µs`/`μs`), `ms`, `s`,
//! `m`, `h`, a decimal being digits with an optional fraction (`1.5`, `.5`, `1.`); `0` alone
//! needs no unit. The value is whole nanoseconds in an `i64`, like Go's; a larger one is an
//! error. [`GoDuration`]'s `Display` writes what Go's `Duration.String` writes (`1h30m0s`,
//! `1.5ms`, `0s`), which parses back to the same value.

use std::fmt;
use std::time::Duration;

/// A Go `time.Duration`: signed whole nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration {
    nanos: i64,
}

/// Why a text is not a Go duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a duration ({reason}; e.g. 90s, 15m, 1h30m, 500ms)")]
pub struct GoDurationError {
    pub text: String,
    pub reason: &'static str,
}

const NANOS_PER: [(&str, u64); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),  // MICRO SIGN
    ("\u{3bc}s", 1_000), // GREEK SMALL LETTER MU
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3600 * 1_000_000_000),
];

/// The magnitude of `i64::MIN`: the largest a sum may reach before the sign is applied.
const MAX_MAGNITUDE: u64 = 1 << 63;

impl GoDuration {
    pub const ZERO: GoDuration = GoDuration { nanos: 0 };

    pub fn from_nanos(nanos: i64) -> GoDuration {
        GoDuration { nanos }
    }

    pub fn as_nanos(self) -> i64 {
        self.nanos
    }

    /// Parses `text` as Go's `time.ParseDuration` does (see the module doc).
    pub fn parse(text: &str) -> Result<GoDuration, GoDurationError> {
        let bad = |reason| GoDurationError {
            text: text.to_owned(),
            reason,
        };
        let (neg, mut rest) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        if rest == "0" {
            return Ok(GoDuration::ZERO);
        }
        if rest.is_empty() {
            return Err(bad("empty"));
        }
        let mut total: u64 = 0;
        while !rest.is_empty() {
            if !rest.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
                return Err(bad("a number must come before each unit"));
            }
            // The whole part, exactly; overflow is an error.
            let int_len = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let mut whole: u64 = 0;
            for d in rest[..int_len].bytes() {
                whole = whole
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(u64::from(d - b'0')))
                    .filter(|v| *v <= MAX_MAGNITUDE)
                    .ok_or_else(|| bad("out of range"))?;
            }
            let has_whole = int_len > 0;
            rest = &rest[int_len..];
            // The fraction: digits beyond what a u64 holds only lose precision, as in Go.
            let (mut frac, mut scale, mut has_frac) = (0u64, 1f64, false);
            if let Some(after_dot) = rest.strip_prefix('.') {
                let frac_len = after_dot
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(after_dot.len());
                let mut overflowed = false;
                for d in after_dot[..frac_len].bytes() {
                    if overflowed {
                        continue;
                    }
                    match frac
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(u64::from(d - b'0')))
                        .filter(|v| *v <= MAX_MAGNITUDE)
                    {
                        Some(v) => {
                            frac = v;
                            scale *= 10.0;
                        }
                        None => overflowed = true,
                    }
                }
                has_frac = frac_len > 0;
                rest = &after_dot[frac_len..];
            }
            if !has_whole && !has_frac {
                return Err(bad("a number must have digits"));
            }
            let unit_len = rest
                .find(|c: char| c == '.' || c.is_ascii_digit())
                .unwrap_or(rest.len());
            if unit_len == 0 {
                return Err(bad("missing unit"));
            }
            let unit = NANOS_PER
                .iter()
                .find(|(name, _)| *name == &rest[..unit_len])
                .map(|(_, n)| *n)
                .ok_or_else(|| bad("unknown unit (ns, us, µs, ms, s, m, h)"))?;
            rest = &rest[unit_len..];
            if whole > MAX_MAGNITUDE / unit {
                return Err(bad("out of range"));
            }
            let mut part = whole * unit;
            if frac > 0 {
                // As Go: the fraction in floating point, truncated to whole nanoseconds.
                part += (frac as f64 * (unit as f64 / scale)) as u64;
                if part > MAX_MAGNITUDE {
                    return Err(bad("out of range"));
                }
            }
            total = total
                .checked_add(part)
                .filter(|v| *v <= MAX_MAGNITUDE)
                .ok_or_else(|| bad("out of range"))?;
        }
        let nanos = if neg {
            0i64.checked_sub_unsigned(total)
        } else {
            i64::try_from(total).ok()
        };
        nanos
            .map(GoDuration::from_nanos)
            .ok_or_else(|| bad("out of range"))
    }

    /// As a std [`Duration`]; `None` when negative.
    pub fn to_std(self) -> Option<Duration> {
        u64::try_from(self.nanos).ok().map(Duration::from_nanos)
    }

    /// Whole seconds (the fraction dropped), `None` when negative or beyond `u32`.
    pub fn whole_secs_u32(self) -> Option<u32> {
        self.to_std().and_then(|d| u32::try_from(d.as_secs()).ok())
    }
}

impl std::str::FromStr for GoDuration {
    type Err = GoDurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GoDuration::parse(s)
    }
}

/// `n / 10^prec` with its fraction written without trailing zeros (and without the point when
/// it is zero): returns the text and the whole part.
fn with_fraction(n: u64, prec: u32) -> (String, u64) {
    let scale = 10u64.pow(prec);
    let frac = n % scale;
    let mut text = String::new();
    if frac != 0 {
        let digits = format!("{frac:0width$}", width = prec as usize);
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    (text, n / scale)
}

impl fmt::Display for GoDuration {
    /// Go's `Duration.String`: `0s`; under a second in the largest of ns, µs, ms with a
    /// fraction; else `[<h>h][<m>m]<s>[.<fraction>]s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let n = self.nanos.unsigned_abs();
        if n == 0 {
            return f.write_str("0s");
        }
        if n < 1_000_000_000 {
            let (unit, prec) = match n {
                ..1_000 => ("ns", 0),
                1_000..1_000_000 => ("\u{b5}s", 3),
                _ => ("ms", 6),
            };
            let (frac, whole) = with_fraction(n, prec);
            return write!(f, "{sign}{whole}{frac}{unit}");
        }
        let (frac, secs) = with_fraction(n, 9);
        let (mins, hours) = (secs / 60, secs / 3600);
        write!(f, "{sign}")?;
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if mins > 0 {
            write!(f, "{}m", mins % 60)?;
        }
        write!(f, "{}{frac}s", secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ns(text: &str) -> i64 {
        GoDuration::parse(text)
            .unwrap_or_else(|e| panic!("{e}"))
            .as_nanos()
    }

    /// Go's own ParseDuration table (time_test.go's cases), as values.
    #[test]
    fn what_go_accepts() {
        let s = 1_000_000_000i64;
        for (text, want) in [
            ("0", 0),
            ("5s", 5 * s),
            ("30s", 30 * s),
            ("1478s", 1478 * s),
            ("-5s", -5 * s),
            ("+5s", 5 * s),
            ("-0", 0),
            ("+0", 0),
            ("5.0s", 5 * s),
            ("5.6s", 5 * s + 600_000_000),
            ("5.s", 5 * s),
            (".5s", 500_000_000),
            ("1.0s", s),
            ("1.00s", s),
            ("1.004s", s + 4_000_000),
            ("1.0040s", s + 4_000_000),
            ("100.00100s", 100 * s + 1_000_000),
            ("10ns", 10),
            ("11us", 11_000),
            ("12\u{b5}s", 12_000),
            ("12\u{3bc}s", 12_000),
            ("13ms", 13_000_000),
            ("14s", 14 * s),
            ("15m", 15 * 60 * s),
            ("16h", 16 * 3600 * s),
            ("3h30m", (3 * 3600 + 30 * 60) * s),
            ("10.5s4m", 4 * 60 * s + 10 * s + 500_000_000),
            ("-2m3.4s", -(2 * 60 * s + 3 * s + 400_000_000)),
            (
                "1h2m3s4ms5us6ns",
                3600 * s + 2 * 60 * s + 3 * s + 4_000_000 + 5_000 + 6,
            ),
            ("39h9m14.425s", (39 * 3600 + 9 * 60 + 14) * s + 425_000_000),
            ("52763797000ns", 52_763_797_000),
            ("0.3333333333333333333h", 20 * 60 * s),
            ("9007199254740993ns", 9_007_199_254_740_993),
            ("9223372036854775807ns", i64::MAX),
            ("9223372036854775.807us", i64::MAX),
            ("9223372036s854ms775us807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("-9223372036854775.808us", i64::MIN),
            ("-9223372036s854ms775us808ns", i64::MIN),
            ("-2562047h47m16.854775808s", i64::MIN),
            ("0.100000000000000000000h", 6 * 60 * s),
            ("0.830103483285477580700h", 49 * 60 * s + 48_372_539_827),
        ] {
            assert_eq!(ns(text), want, "{text}");
        }
    }

    #[test]
    fn what_go_refuses() {
        for text in [
            "",
            "3",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "\u{85}\u{85}",
            "\u{fffd}",
            "15 m",
            "1.5",
            "9223372036854775808ns",
            "9223372036854775.808us",
            "9223372036854ms775us808ns",
            "-9223372036854775809ns",
            "3000000h",
        ] {
            let e = GoDuration::parse(text).unwrap_err();
            assert!(e.to_string().contains(&format!("{text:?}")), "{e}");
        }
    }

    #[test]
    fn written_as_go_writes_it() {
        let s = 1_000_000_000i64;
        for (nanos, want) in [
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1\u{b5}s"),
            (2_200_000, "2.2ms"),
            (3 * s + 300_000_000, "3.3s"),
            (4 * 60 * s + 5 * s, "4m5s"),
            (4 * 60 * s + 5 * s + 1_000_000, "4m5.001s"),
            (5 * 3600 * s + 6 * 60 * s + 7 * s + 1_000_000, "5h6m7.001s"),
            (8 * 60 * s + 1, "8m0.000000001s"),
            (3600 * s, "1h0m0s"),
            (i64::MAX, "2562047h47m16.854775807s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ] {
            assert_eq!(GoDuration::from_nanos(nanos).to_string(), want);
        }
    }

    proptest! {
        /// Every value survives writing and reading back, the whole i64 range.
        #[test]
        fn display_parses_back(nanos in any::<i64>()) {
            let d = GoDuration::from_nanos(nanos);
            prop_assert_eq!(GoDuration::parse(&d.to_string()), Ok(d));
        }

        /// Whole hours, minutes and seconds mean what they say, in any order and with zeros.
        #[test]
        fn components_add_up(h in 0i64..10_000, m in 0i64..1_000, sec in 0i64..1_000, ms in 0i64..1_000) {
            let text = format!("{m}m{h}h{ms}ms{sec}s");
            prop_assert_eq!(
                ns(&text),
                ((h * 3600 + m * 60 + sec) * 1_000 + ms) * 1_000_000
            );
        }

        /// Nothing but the grammar's characters parses: any text with another character fails.
        #[test]
        fn foreign_characters_are_refused(text in "[0-9.hms]{0,6}[abcdefgijklopqrtvwxyzA-Z ,;:/_][0-9.hms]{0,6}") {
            prop_assert!(GoDuration::parse(&text).is_err());
        }

        /// Never panics, whatever the input.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,24}") {
            let _ = GoDuration::parse(&text);
        }
    }
}
