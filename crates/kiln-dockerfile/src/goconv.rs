//! The few Go standard-library conversions whose exact behaviour shows in
//! BuildKit's messages or decides what it accepts: `strconv.Quote`,
//! `strconv.ParseBool`/`ParseUint`/`ParseInt`, `time.ParseDuration` and
//! docker/go-units' `RAMInBytes`.

use crate::shell::unicode::is_print;

/// Go's `strconv.Quote` (what `%q` prints), used by BuildKit's AST dump and
/// in its messages: quotes and backslashes escaped, printable characters
/// (Go's `IsPrint`) kept, everything else as `\a`…`\v`, `\xNN`, `\uNNNN`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' | '\\' => {
                out.push('\\');
                out.push(ch);
            }
            _ if is_print(ch) => out.push(ch),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            _ if ch < ' ' || ch == '\x7f' => out.push_str(&format!("\\x{:02x}", u32::from(ch))),
            _ if u32::from(ch) < 0x10000 => out.push_str(&format!("\\u{:04x}", u32::from(ch))),
            _ => out.push_str(&format!("\\U{:08x}", u32::from(ch))),
        }
    }
    out.push('"');
    out
}

/// `strconv.ParseBool`.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// `strconv.ParseUint(s, radix, 32)` for an explicit radix: digits of that
/// radix only (no sign, no prefix, no underscores), at most `u32::MAX`.
pub(crate) fn parse_u32(s: &str, radix: u32) -> Option<u32> {
    if s.is_empty() || !s.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(s, radix).ok()
}

/// `strconv.ParseInt(s, 10, 32)`, with Go's error text.
pub(crate) fn parse_i32(s: &str) -> Result<i32, String> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "strconv.ParseInt: parsing {}: invalid syntax",
            quote(s)
        ));
    }
    // Only a range problem is left: `i32` parsing accepts the same text.
    s.parse::<i32>()
        .map_err(|_| format!("strconv.ParseInt: parsing {}: value out of range", quote(s)))
}

/// The quoting `time` uses in its errors: like `strconv.Quote` for printable
/// ASCII, every byte of anything else as `\xNN`.
fn time_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c.is_ascii() && c >= ' ' && c != '\u{7f}' {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
    }
    out.push('"');
    out
}

const NANOS_PER: &[(&str, u64)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),  // µ, the micro sign
    ("\u{3bc}s", 1_000), // μ, the Greek letter mu
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// `time.ParseDuration`: a signed sequence of decimal numbers, each with an
/// optional fraction and a unit (`300ms`, `-1.5h`, `2h45m`). Returns
/// nanoseconds, or Go's error text.
pub fn parse_duration(orig: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {}", time_quote(orig));
    const LIMIT: u64 = 1 << 63;

    let mut s = orig.as_bytes();
    let mut neg = false;
    if let Some((&c, rest)) = s.split_first()
        && (c == b'-' || c == b'+')
    {
        neg = c == b'-';
        s = rest;
    }
    if s == b"0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        if !(s[0] == b'.' || s[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // Whole part; overflow is an error.
        let mut whole: u64 = 0;
        let mut i = 0;
        while i < s.len() && s[i].is_ascii_digit() {
            if whole > LIMIT / 10 {
                return Err(invalid());
            }
            whole = whole * 10 + u64::from(s[i] - b'0');
            if whole > LIMIT {
                return Err(invalid());
            }
            i += 1;
        }
        let pre = i > 0;
        s = &s[i..];

        // Fraction; past 63 bits it only stops gaining precision.
        let mut frac: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut post = false;
        if s.first() == Some(&b'.') {
            s = &s[1..];
            let mut j = 0;
            let mut overflow = false;
            while j < s.len() && s[j].is_ascii_digit() {
                if !overflow {
                    if frac > (LIMIT - 1) / 10 {
                        overflow = true;
                    } else {
                        let next = frac * 10 + u64::from(s[j] - b'0');
                        if next > LIMIT {
                            overflow = true;
                        } else {
                            frac = next;
                            scale *= 10.0;
                        }
                    }
                }
                j += 1;
            }
            post = j > 0;
            s = &s[j..];
        }
        if !pre && !post {
            return Err(invalid());
        }

        let unit_len = s
            .iter()
            .position(|&b| b == b'.' || b.is_ascii_digit())
            .unwrap_or(s.len());
        if unit_len == 0 {
            return Err(format!(
                "time: missing unit in duration {}",
                time_quote(orig)
            ));
        }
        let (unit, rest) = s.split_at(unit_len);
        s = rest;
        let Some(&(_, per)) = NANOS_PER.iter().find(|(name, _)| name.as_bytes() == unit) else {
            return Err(format!(
                "time: unknown unit {} in duration {}",
                time_quote(&String::from_utf8_lossy(unit)),
                time_quote(orig)
            ));
        };
        if whole > LIMIT / per {
            return Err(invalid());
        }
        let mut v = whole * per;
        if frac > 0 {
            // Go goes through float64 here, to stay exact to the nanosecond
            // for fractions of hours; truncation as Go's conversion does.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let add = (frac as f64 * (per as f64 / scale)) as u64;
            v += add;
            if v > LIMIT {
                return Err(invalid());
            }
        }
        total += v;
        if total > LIMIT {
            return Err(invalid());
        }
    }
    if neg {
        // `total` is at most 2^63 here, and -(2^63) is representable.
        #[allow(clippy::cast_possible_wrap)]
        return Ok((total as i64).wrapping_neg());
    }
    i64::try_from(total).map_err(|_| invalid())
}

/// docker/go-units' `RAMInBytes`: a decimal number with an optional binary
/// suffix (`k`, `m`, `g`, `t`, `p`, each optionally followed by `b` or `ib`,
/// any case; or just `b`), optionally separated by one space. `None` when
/// the text is not such a size.
pub fn ram_in_bytes(s: &str) -> Option<i64> {
    let sep = s.rfind(|c: char| c.is_ascii_digit() || c == '.' || c == ' ')?;
    let (num, suffix) = if s.as_bytes()[sep] == b' ' {
        (&s[..sep], &s[sep + 1..])
    } else {
        (&s[..=sep], &s[sep + 1..])
    };
    let size = parse_go_float(num)?;
    if size < 0.0 {
        return None;
    }
    let suffix = suffix.to_ascii_lowercase();
    let mult: f64 = match suffix.as_bytes() {
        [] | [b'b'] => 1.0,
        [unit, rest @ ..] => {
            let exp = match unit {
                b'k' => 1,
                b'm' => 2,
                b'g' => 3,
                b't' => 4,
                b'p' => 5,
                _ => return None,
            };
            if !matches!(rest, [] | [b'b'] | [b'i', b'b']) {
                return None;
            }
            1024f64.powi(exp)
        }
    };
    // Go converts with int64(size); out-of-range values are not worth
    // imitating bit for bit, saturate instead.
    #[allow(clippy::cast_possible_truncation)]
    Some((size * mult) as i64)
}

/// `strconv.ParseFloat(s, 64)` for the decimal forms a size is written in.
fn parse_go_float(s: &str) -> Option<f64> {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    // Rust also accepts "inf"/"nan" spellings; Go's sizes never reach here
    // with them (a size must end in a digit, a dot or a space).
    if body.is_empty()
        || body
            .chars()
            .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
    {
        return None;
    }
    s.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_go_does() {
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("1ms"), Ok(1_000_000));
        assert_eq!(parse_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_duration("2h45m"), Ok(9_900_000_000_000));
        assert_eq!(parse_duration("-3s"), Ok(-3_000_000_000));
        assert_eq!(parse_duration(".5s"), Ok(500_000_000));
        assert_eq!(parse_duration("1\u{b5}s"), Ok(1_000));
        assert_eq!(
            parse_duration("1"),
            Err("time: missing unit in duration \"1\"".to_string())
        );
        assert_eq!(
            parse_duration("1x"),
            Err("time: unknown unit \"x\" in duration \"1x\"".to_string())
        );
        assert_eq!(
            parse_duration("abc"),
            Err("time: invalid duration \"abc\"".to_string())
        );
        assert_eq!(
            parse_duration(""),
            Err("time: invalid duration \"\"".to_string())
        );
        assert_eq!(
            parse_duration(".s"),
            Err("time: invalid duration \".s\"".to_string())
        );
        assert_eq!(
            parse_duration("9999999999999999999h"),
            Err("time: invalid duration \"9999999999999999999h\"".to_string())
        );
    }

    #[test]
    fn sizes_parse_as_go_units_does() {
        assert_eq!(ram_in_bytes("100"), Some(100));
        assert_eq!(ram_in_bytes("64m"), Some(64 << 20));
        assert_eq!(ram_in_bytes("1.5GiB"), Some(3 << 29));
        assert_eq!(ram_in_bytes("1 kb"), Some(1024));
        assert_eq!(ram_in_bytes("32b"), Some(32));
        assert_eq!(ram_in_bytes("1x"), None);
        assert_eq!(ram_in_bytes("1kbb"), None);
        assert_eq!(ram_in_bytes("-1"), None);
        assert_eq!(ram_in_bytes("abc"), None);
    }

    #[test]
    fn integers_and_bools() {
        assert_eq!(parse_u32("0755", 8), Some(0o755));
        assert_eq!(parse_u32("8", 8), None);
        assert_eq!(parse_u32("+1", 10), None);
        assert_eq!(parse_u32("4294967296", 10), None);
        assert_eq!(parse_i32("-3"), Ok(-3));
        assert_eq!(
            parse_i32("x"),
            Err("strconv.ParseInt: parsing \"x\": invalid syntax".to_string())
        );
        assert_eq!(
            parse_i32("99999999999"),
            Err("strconv.ParseInt: parsing \"99999999999\": value out of range".to_string())
        );
        assert_eq!(parse_bool("T"), Some(true));
        assert_eq!(parse_bool("yes"), None);
        assert_eq!(quote("a\"b\n"), "\"a\\\"b\\n\"");
    }
}
