//! Reads a regular expression in Go's syntax (`regexp/syntax` with the
//! `Perl` flags that `regexp.Compile` uses) and writes the same language in
//! the syntax of the `regex` crate.
//!
//! Only what [`super::compile`] can produce is supported, but that is more
//! than it looks: a pattern's `\x` reaches Go's parser as the escape `\x`
//! (so `\d` is a digit class and `\Q` starts a literal run), and a pattern's
//! `[` opens a class in which the generated `[^/]*` of a `*` is read as class
//! members. The two syntaxes differ exactly there (`[` nests classes in
//! Rust, `\d` is Unicode in Rust, `[^/]` is fine in both), so nothing is
//! passed through: every literal and class is written out explicitly.
//!
//! Upstream also leaves `|`, `{` and `}` unescaped (its escape table is
//! meant to hold them but is too small, see [`super::compile`]), so
//! alternation and counted repetition are reachable too.
//!
//! Where Go's parser fails, [`translate`] fails; the caller reports the
//! pattern as malformed, like upstream does when `regexp.Compile` fails.

use std::fmt::Write as _;

/// Go's parser rejected the expression (or it used `(?`, which the glob
/// compiler never emits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rejected;

type Parsed<'a, T> = Result<(T, &'a str), Rejected>;

/// Go's limit on a counted repetition (`x{n,m}`).
const MAX_REPEAT: u32 = 1000;

/// An open group (or the whole expression) being parsed.
#[derive(Default)]
struct Group {
    /// The finished alternatives before the last `|`.
    alternatives: Vec<String>,
    /// The atoms of the current alternative; a repetition operator applies
    /// to the last one.
    atoms: Vec<String>,
}

impl Group {
    fn finish(mut self) -> String {
        self.alternatives.push(self.atoms.concat());
        self.alternatives.join("|")
    }
}

/// Translates a Go regular expression into `regex` crate syntax with the
/// same matches.
pub(crate) fn translate(go: &str) -> Result<String, Rejected> {
    let mut groups: Vec<Group> = vec![Group::default()];
    let mut t = go;
    // Go (with Perl syntax) rejects stacked repetitions like `a**`.
    let mut after_repeat = false;
    while let Some(c) = t.chars().next() {
        let mut repeated = false;
        match c {
            '(' => {
                if t[1..].starts_with('?') {
                    return Err(Rejected);
                }
                groups.push(Group::default());
                t = &t[1..];
            }
            ')' => {
                if groups.len() < 2 {
                    return Err(Rejected);
                }
                let inner = groups.pop().ok_or(Rejected)?.finish();
                atoms(&mut groups)?.push(format!("(?:{inner})"));
                t = &t[1..];
            }
            '|' => {
                let group = groups.last_mut().ok_or(Rejected)?;
                let alternative = std::mem::take(&mut group.atoms).concat();
                group.alternatives.push(alternative);
                t = &t[1..];
            }
            '^' => {
                atoms(&mut groups)?.push(r"\A".to_owned());
                t = &t[1..];
            }
            '$' => {
                atoms(&mut groups)?.push(r"\z".to_owned());
                t = &t[1..];
            }
            '.' => {
                atoms(&mut groups)?.push(r"[^\n]".to_owned());
                t = &t[1..];
            }
            '[' => {
                let (class, rest) = parse_class(t)?;
                atoms(&mut groups)?.push(class);
                t = rest;
            }
            '*' | '+' | '?' | '{' => {
                let (operator, rest) = match c {
                    '{' => match parse_repeat(t) {
                        Some((min, max, rest)) => {
                            if min > MAX_REPEAT
                                || max.is_some_and(|max| max > MAX_REPEAT || min > max)
                            {
                                return Err(Rejected);
                            }
                            let max = max.map_or(String::new(), |max| max.to_string());
                            let operator = format!("{{{min},{max}}}");
                            (operator, rest)
                        }
                        // Not a well-formed count: `{` is a literal.
                        None => {
                            atoms(&mut groups)?.push(literal(u32::from('{')));
                            t = &t[1..];
                            after_repeat = false;
                            continue;
                        }
                    },
                    c => (c.to_string(), &t[1..]),
                };
                if after_repeat {
                    return Err(Rejected);
                }
                let mut rest = rest;
                // `*?`, `{2}?` and so on are the non-greedy forms.
                let lazy = rest.starts_with('?');
                if lazy {
                    rest = &rest[1..];
                }
                let atoms = atoms(&mut groups)?;
                let operand = atoms.pop().ok_or(Rejected)?;
                atoms.push(format!(
                    "(?:{operand}){operator}{}",
                    if lazy { "?" } else { "" }
                ));
                repeated = true;
                t = rest;
            }
            '\\' => {
                let (escaped, rest) = parse_backslash(t)?;
                atoms(&mut groups)?.extend(escaped);
                t = rest;
            }
            c => {
                atoms(&mut groups)?.push(literal(u32::from(c)));
                t = &t[c.len_utf8()..];
            }
        }
        after_repeat = repeated;
    }
    match <[Group; 1]>::try_from(groups) {
        Ok([whole]) => Ok(whole.finish()),
        // A group was left open.
        Err(_) => Err(Rejected),
    }
}

fn atoms(groups: &mut [Group]) -> Result<&mut Vec<String>, Rejected> {
    groups.last_mut().map(|g| &mut g.atoms).ok_or(Rejected)
}

/// Go's `parseRepeat`, `t` starting at `{`: `{n}`, `{n,}` or `{n,m}` with
/// decimal numbers without leading zeros. Returns the counts (`None` for no
/// maximum) and the rest; `None` if `t` is not of that form, in which case Go
/// reads the `{` as a literal. Numbers too large for Go are returned as
/// `u32::MAX`, for the caller to reject.
fn parse_repeat(t: &str) -> Option<(u32, Option<u32>, &str)> {
    let (min, rest) = parse_int(t.strip_prefix('{')?)?;
    let (max, rest) = match rest.strip_prefix(',') {
        None => (Some(min), rest),
        Some(rest) if rest.starts_with('}') => (None, rest),
        Some(rest) => {
            let (max, rest) = parse_int(rest)?;
            (Some(max), rest)
        }
    };
    Some((min, max, rest.strip_prefix('}')?))
}

/// Go's `parseInt` for repetition counts.
fn parse_int(t: &str) -> Option<(u32, &str)> {
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || (digits > 1 && t.starts_with('0')) {
        return None;
    }
    let value = t[..digits]
        .bytes()
        .try_fold(0u32, |n, d| {
            // Go gives up at 1e8; anything that large is rejected anyway.
            (n < 100_000_000).then(|| n * 10 + u32::from(d - b'0'))
        })
        .unwrap_or(u32::MAX);
    Some((value, &t[digits..]))
}

/// One code point as a `regex` atom. Go can name surrogates with `\x{...}`;
/// they never occur in a `str`, so such an atom matches nothing.
fn literal(c: u32) -> String {
    match char::from_u32(c) {
        Some(c) => format!(r"\x{{{:x}}}", u32::from(c)),
        None => NOTHING.to_owned(),
    }
}

/// A class that matches no character.
const NOTHING: &str = "[a&&b]";

/// A `\` outside a class: an assertion, a quoted run, a class, or one escaped
/// character. Returns the atoms it stands for.
fn parse_backslash(t: &str) -> Parsed<'_, Vec<String>> {
    let mut chars = t.chars();
    chars.next();
    match chars.next() {
        Some('A') => return Ok((vec![r"\A".to_owned()], &t[2..])),
        Some('z') => return Ok((vec![r"\z".to_owned()], &t[2..])),
        // Go's word boundaries are ASCII ones.
        Some('b') => return Ok((vec![r"(?-u:\b)".to_owned()], &t[2..])),
        Some('B') => return Ok((vec![r"(?-u:\B)".to_owned()], &t[2..])),
        // Go's "any byte"; not supported by Go either.
        Some('C') => return Err(Rejected),
        Some('Q') => {
            // Everything up to `\E` (or the end) is literal, `$` included.
            let quoted = &t[2..];
            let (lit, rest) = quoted.split_once(r"\E").unwrap_or((quoted, ""));
            let atoms = lit.chars().map(|c| literal(u32::from(c))).collect();
            return Ok((atoms, rest));
        }
        _ => {}
    }
    if let Some((set, rest)) = parse_unicode_class(t)? {
        return Ok((vec![format!("[{set}]")], rest));
    }
    if let Some((set, rest)) = parse_perl_class(t) {
        return Ok((vec![format!("[{set}]")], rest));
    }
    let (c, rest) = parse_escape(t)?;
    Ok((vec![literal(c)], rest))
}

/// Go's `parseEscape`: a single escaped character, `t` starting at the `\`.
fn parse_escape(t: &str) -> Parsed<'_, u32> {
    let mut chars = t[1..].chars();
    let c = chars.next().ok_or(Rejected)?;
    let mut rest = chars.as_str();
    let octal = |b: Option<&u8>| b.is_some_and(|b| (b'0'..=b'7').contains(b));
    match c {
        // Escaped punctuation is itself.
        c if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok((u32::from(c), rest)),
        // `\1`..`\7` alone would be a backreference, which Go rejects.
        '1'..='7' if !octal(rest.as_bytes().first()) => Err(Rejected),
        '0'..='7' => {
            let mut value = u32::from(c) - u32::from('0');
            for _ in 0..2 {
                match rest.as_bytes().first() {
                    Some(&d) if octal(Some(&d)) => {
                        value = value * 8 + u32::from(d - b'0');
                        rest = &rest[1..];
                    }
                    _ => break,
                }
            }
            Ok((value, rest))
        }
        'x' => {
            let mut chars = rest.chars();
            match chars.next().ok_or(Rejected)? {
                '{' => {
                    // Any number of hex digits up to `}`, at least one.
                    let braced = chars.as_str();
                    let end = braced.find('}').ok_or(Rejected)?;
                    let digits = &braced[..end];
                    if digits.is_empty() {
                        return Err(Rejected);
                    }
                    let value = digits.chars().try_fold(0u32, |value, c| {
                        let value = value * 16 + c.to_digit(16)?;
                        (value <= 0x10ffff).then_some(value)
                    });
                    Ok((value.ok_or(Rejected)?, &braced[end + 1..]))
                }
                high => {
                    let low = chars.next().ok_or(Rejected)?;
                    let value = high.to_digit(16).ok_or(Rejected)? * 16
                        + low.to_digit(16).ok_or(Rejected)?;
                    Ok((value, chars.as_str()))
                }
            }
        }
        // C escapes; Go has no `\b` here (that is a word boundary or an error).
        'a' => Ok((0x07, rest)),
        'f' => Ok((0x0c, rest)),
        'n' => Ok((0x0a, rest)),
        'r' => Ok((0x0d, rest)),
        't' => Ok((0x09, rest)),
        'v' => Ok((0x0b, rest)),
        _ => Err(Rejected),
    }
}

/// Go's `\d \s \w` and their negations, which are ASCII-only. Returns class
/// members in `regex` syntax (to be put inside `[...]`).
fn parse_perl_class(t: &str) -> Option<(String, &str)> {
    let set = match t.get(..2)? {
        r"\d" => "0-9",
        r"\D" => "[^0-9]",
        // No vertical tab: Go's `\s` is Perl's.
        r"\s" => r"\t\n\x0C\r ",
        r"\S" => r"[^\t\n\x0C\r ]",
        r"\w" => "0-9A-Za-z_",
        r"\W" => "[^0-9A-Za-z_]",
        _ => return None,
    };
    Some((set.to_owned(), &t[2..]))
}

/// Go's POSIX classes (`[:alpha:]`, `[:^alpha:]`), which are ASCII-only, as
/// class members in `regex` syntax.
fn posix_class(name: &str) -> Option<String> {
    let (negated, name) = match name.strip_prefix('^') {
        Some(name) => (true, name),
        None => (false, name),
    };
    let set = match name {
        "alnum" => "0-9A-Za-z",
        "alpha" => "A-Za-z",
        "ascii" => r"\x00-\x7F",
        "blank" => r"\t ",
        "cntrl" => r"\x00-\x1F\x7F",
        "digit" => "0-9",
        "graph" => r"!-~",
        "lower" => "a-z",
        "print" => r" -~",
        "punct" => r"!-/:-@\[-`\{-~",
        "space" => r"\t\n\x0B\x0C\r ",
        "upper" => "A-Z",
        "word" => "0-9A-Za-z_",
        "xdigit" => "0-9A-Fa-f",
        _ => return None,
    };
    Some(if negated {
        format!("[^{set}]")
    } else {
        set.to_owned()
    })
}

/// Go's `\pX`, `\p{Name}`, `\PX`, `\P{Name}` as class members in `regex`
/// syntax; `None` if `t` does not start with one.
///
/// From a `.dockerignore` pattern only the one-letter form is reachable (a
/// pattern's `{` reaches Go escaped), so only the general categories `C`,
/// `L`, `M`, `N`, `P`, `S`, `Z` matter in practice. Names are looked up the
/// way current Go does (case-insensitively); braced names that are not Go
/// category names are tried as scripts.
fn parse_unicode_class(t: &str) -> Result<Option<(String, &str)>, Rejected> {
    let negated = match t.get(..2) {
        Some(r"\p") => false,
        Some(r"\P") => true,
        _ => return Ok(None),
    };
    let after = &t[2..];
    let (mut name, rest) = match after.chars().next() {
        Some('{') => {
            let end = after.find('}').ok_or(Rejected)?;
            (&after[1..end], &after[end + 1..])
        }
        Some(c) => (&after[..c.len_utf8()], &after[c.len_utf8()..]),
        None => return Err(Rejected),
    };
    let mut negated = negated;
    if let Some(stripped) = name.strip_prefix('^') {
        negated = !negated;
        name = stripped;
    }
    let set = unicode_set(&canonical_name(name)).ok_or(Rejected)?;
    Ok(Some((
        if negated { format!("[^{set}]") } else { set },
        rest,
    )))
}

/// Go's `canonicalName`: `_`, `-` and spaces dropped, the first letter upper
/// case and the rest lower case.
fn canonical_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars().filter(|c| !matches!(c, '_' | '-' | ' ')) {
        if out.is_empty() {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// The members of a Go Unicode table, in `regex` syntax.
fn unicode_set(name: &str) -> Option<String> {
    let set = match name {
        "" => return None,
        "Any" => r"\x00-\x{10FFFF}".to_owned(),
        "Ascii" => r"\x00-\x7F".to_owned(),
        "Assigned" => r"\P{gc=Cn}".to_owned(),
        "Lc" => r"\p{gc=LC}".to_owned(),
        // Go's `C` has no unassigned code points, unlike Unicode's `Other`;
        // surrogates (`Cs`) never occur in a `str`.
        "C" => r"\p{gc=Cc}\p{gc=Cf}\p{gc=Co}".to_owned(),
        "Cs" => NOTHING.to_owned(),
        "Cc" | "Cf" | "Co" | "L" | "Ll" | "Lm" | "Lo" | "Lt" | "Lu" | "M" | "Mc" | "Me" | "Mn"
        | "N" | "Nd" | "Nl" | "No" | "P" | "Pc" | "Pd" | "Pe" | "Pf" | "Pi" | "Po" | "Ps" | "S"
        | "Sc" | "Sk" | "Sm" | "So" | "Z" | "Zl" | "Zp" | "Zs" => format!(r"\p{{gc={name}}}"),
        // Scripts and long category names; a name `regex` does not know
        // makes the whole pattern fail to build, which is reported as a
        // malformed pattern.
        name if name.len() > 1 && name.chars().all(|c| c.is_ascii_alphanumeric()) => {
            format!(r"\p{{{name}}}")
        }
        _ => return None,
    };
    Some(set)
}

/// Go's `parseClass`, `t` starting at the `[`. Returns the class as a
/// `regex` atom.
fn parse_class(t: &str) -> Parsed<'_, String> {
    let mut t = &t[1..];
    let negated = t.starts_with('^');
    if negated {
        t = &t[1..];
    }
    let mut members = String::new();
    // A `]` right after `[` or `[^` is a member, not the end.
    let mut first = true;
    while first || !t.starts_with(']') {
        first = false;
        if t.len() > 2
            && t.starts_with("[:")
            && let Some(end) = t[2..].find(":]")
        {
            // `[:name:]`; Go looks for the closing `:]` anywhere further on.
            let name = &t[2..2 + end];
            members.push_str(&posix_class(name).ok_or(Rejected)?);
            t = &t[2 + end + 2..];
            continue;
        }
        if let Some((set, rest)) = parse_unicode_class(t)? {
            members.push_str(&set);
            t = rest;
            continue;
        }
        if let Some((set, rest)) = parse_perl_class(t) {
            members.push_str(&set);
            t = rest;
            continue;
        }
        let (lo, rest) = class_char(t)?;
        t = rest;
        let mut hi = lo;
        // `a-]` is `a` and `-`: a `-` before the closing `]` is a member.
        if t.len() >= 2 && t.starts_with('-') && !t[1..].starts_with(']') {
            let (end, rest) = class_char(&t[1..])?;
            if end < lo {
                return Err(Rejected);
            }
            hi = end;
            t = rest;
        }
        push_range(&mut members, lo, hi);
    }
    let t = &t[1..];
    let class = if negated {
        format!("[^{members}]")
    } else {
        format!("[{members}]")
    };
    Ok((class, t))
}

/// Go's `parseClassChar`: one member character, escaped or not.
fn class_char(t: &str) -> Parsed<'_, u32> {
    match t.chars().next() {
        None => Err(Rejected),
        Some('\\') => parse_escape(t),
        Some(c) => Ok((u32::from(c), &t[c.len_utf8()..])),
    }
}

/// Appends the code points `lo..=hi` as class members, leaving out the
/// surrogates, which `regex` cannot name and a `str` never contains.
fn push_range(members: &mut String, lo: u32, hi: u32) {
    const SURROGATES: std::ops::RangeInclusive<u32> = 0xd800..=0xdfff;
    let mut write = |lo: u32, hi: u32| {
        if lo <= hi {
            // Writing to a String cannot fail.
            let _ = write!(members, r"\x{{{lo:x}}}-\x{{{hi:x}}}");
        }
    };
    if hi < *SURROGATES.start() || lo > *SURROGATES.end() {
        write(lo, hi);
    } else {
        write(lo, SURROGATES.start() - 1);
        write(SURROGATES.end() + 1, hi);
    }
    if members.is_empty() {
        // Only surrogates: keep the class well formed and empty.
        members.push_str(NOTHING);
    }
}

#[cfg(test)]
mod tests {
    use super::translate;

    fn matches(go: &str, text: &str) -> bool {
        let rust = translate(go).unwrap_or_else(|_| panic!("{go:?} should translate"));
        regex::Regex::new(&rust)
            .unwrap_or_else(|e| panic!("{go:?} -> {rust:?}: {e}"))
            .is_match(text)
    }

    #[test]
    fn generated_shapes() {
        assert!(matches(r"^a[^/]*/b$", "axx/b"));
        assert!(!matches(r"^a[^/]*/b$", "a/x/b"));
        assert!(matches(r"^(.*/)?dir2/[^/]*$", "dir2/x"));
        assert!(matches(r"^(.*/)?dir2/[^/]*$", "a/b/dir2/x"));
        assert!(!matches(r"^(.*/)?dir2/[^/]*$", "adir2/x"));
        assert!(matches(r"^\.[^/]*$", ".foo"));
        assert!(!matches(r"^\.[^/]*$", "foo"));
        // `.` does not match a newline in Go.
        assert!(!matches(r"^(.*/)?x$", "a\n/x"));
    }

    #[test]
    fn class_rules_are_go_s() {
        // `[` inside a class is a member, and the generated `]` closes it.
        assert!(matches(r"^[[^/]*]$", "[^^]"));
        assert!(matches(r"^[[^/]*]$", "]"));
        assert!(!matches(r"^[[^/]*]$", "a]"));
        // `]` first is a member; `-` last is a member.
        assert!(matches(r"^[]a]$", "]"));
        assert!(matches(r"^[a-]$", "-"));
        assert!(matches(r"^[[:alpha:]]$", "q"));
        assert!(!matches(r"^[[:^alpha:]]$", "q"));
        assert!(matches(r"^[\d]$", "7"));
        assert!(!matches(r"^\d$", "٣"));
        assert!(matches(r"^[^a]$", "\n"));
        assert!(matches(r"^\pL$", "ж"));
        assert!(matches(r"^\PL$", "1"));
        assert!(matches(r"^a\Qb[^/]*$", "ab[^/]*$ and more"));
        assert!(matches(r"^\x41\101\n$", "AA\n"));
    }

    #[test]
    fn alternation_and_counts() {
        assert!(matches(r"^a|b$", "axx"));
        assert!(matches(r"^a|b$", "xxb"));
        assert!(!matches(r"^a|b$", "xbx"));
        assert!(matches(r"^|8[^/]*$", "anything"));
        assert!(matches(r"^x{2}$", "xx"));
        assert!(!matches(r"^x{2}$", "x"));
        assert!(matches(r"^x{2,}$", "xxxx"));
        assert!(!matches(r"^x{1,2}$", "xxx"));
        // Not a count: literal braces.
        for (go, text) in [
            (r"^x{$", "x{"),
            (r"^x{,2}$", "x{,2}"),
            (r"^x{01}$", "x{01}"),
            (r"^{}$", "{}"),
        ] {
            assert!(matches(go, text), "{go:?}");
        }
    }

    #[test]
    fn braced_hex_escapes() {
        assert!(matches(r"^\x{41}\x{1F600}$", "A😀"));
        for go in [r"^\x{}$", r"^\x{110000}$", r"^\x{4g}$", r"^\x{41$"] {
            assert!(translate(go).is_err(), "{go:?}");
        }
    }

    #[test]
    fn go_accepts_repeated_anchors() {
        assert!(matches(r"^{2}a$", "a"));
        assert!(matches(r"^*a$", "a"));
    }

    #[test]
    fn go_rejections() {
        for go in [
            r"^[l-O]$",
            r"^[a",
            r"^\8$",
            r"^\1$",
            r"^\x\{41\}$",
            r"^\q$",
            r"^[\b]$",
            r"^\C$",
            r"^[[:foo:]]$",
            r"^a**$",
            r"^(a$",
            r"^a)$",
            r"^\p$",
            r"^\pX$",
            r"^[\Q]$",
            r"^(*)$",
            r"^x{1001}$",
            r"^x{3,2}$",
            r"^x{100000000}$",
            r"^x*{2}$",
            r"^a|*$",
        ] {
            assert!(translate(go).is_err(), "{go:?} should be rejected");
        }
    }
}
