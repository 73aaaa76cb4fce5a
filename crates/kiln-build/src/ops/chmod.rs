//! `--chmod`: an octal mode, or a symbolic one as chmod(1) takes it.
//!
//! BuildKit's Dockerfile frontend (`dispatchCopy` in
//! `frontend/dockerfile/dockerfile2llb/convert_copy.go`) first reads the
//! value with Go's `strconv.ParseUint(v, 8, 32)`; a number above 07777, or a
//! value that looks numeric but is not octal, is refused with "invalid chmod
//! parameter: '64a'. it should be octal string and between 0 and 07777".
//! Anything else goes to `github.com/tonistiigi/dchapes-mode`, a port of
//! BSD's setmode(3), and the copy applies it to each entry's own mode
//! (`fsutil/copy`'s `copyFileInfo`: `modeSet.Apply(fi.Mode())`).
//!
//! The symbolic grammar and its evaluation follow setmode(3) exactly
//! (clauses, `=` clearing, `u`/`g`/`o` copies, `X`, `s`, `t`). A clause
//! without `u`/`g`/`o`/`a` is filtered by the umask, as setmode does with
//! the process umask: kiln uses 022, the umask dockerd gives itself and so
//! BuildKit inside it (moby's `setDefaultUmask`), so `+w` means `u+w` as in
//! a shell.

use super::error::CopyError;

const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const S_ISVTX: u32 = 0o1000;
const S_IRWXU: u32 = 0o700;
const S_IRWXG: u32 = 0o070;
const S_IRWXO: u32 = 0o007;
/// setmode's `STANDARD_BITS`: set-id and the nine permission bits.
const STANDARD_BITS: u32 = S_ISUID | S_ISGID | S_IRWXU | S_IRWXG | S_IRWXO;
/// The umask a clause without "who" is filtered by (see the module doc).
const UMASK: u32 = 0o022;

const NON_OCTAL: &str = "it should be octal string and between 0 and 07777";

/// A parsed `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chmod {
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// Replaces the permission and special bits.
    Octal(u32),
    Symbolic(Vec<Cmd>),
}

/// One of setmode's `bitcmd`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Set(u32),
    Clear(u32),
    /// `+X`: set these bits if the original mode has any execute bit or is
    /// a directory.
    SetX(u32),
    /// `u`, `g` or `o` on the right of an operator: copy that class's bits
    /// (as they are at this point) into the target classes.
    Copy {
        from: u8,
        to_user: bool,
        to_group: bool,
        to_other: bool,
        clear: bool,
        set: bool,
        bits: u32,
    },
}

impl Chmod {
    /// Parses a `--chmod` value with BuildKit's rules (see the module doc).
    pub fn parse(value: &str) -> Result<Chmod, CopyError> {
        let invalid = |reason| CopyError::InvalidChmod {
            value: value.to_owned(),
            reason,
        };
        if !value.is_empty() && value.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            // ParseUint(v, 8, 32): leading zeros are fine, the bit size is
            // 32, and anything above 07777 is refused.
            return match u32::from_str_radix(value, 8) {
                Ok(mode) if mode <= 0o7777 => Ok(Chmod {
                    kind: Kind::Octal(mode),
                }),
                _ => Err(invalid(NON_OCTAL)),
            };
        }
        if value.as_bytes().first().is_some_and(u8::is_ascii_digit) {
            // setmode reads a value starting with a digit as a number; Go's
            // ParseInt fails on it, and BuildKit turns that NumError into
            // the octal message.
            return Err(invalid(NON_OCTAL));
        }
        parse_symbolic(value.as_bytes())
            .map(|cmds| Chmod {
                kind: Kind::Symbolic(cmds),
            })
            .ok_or_else(|| invalid("invalid syntax"))
    }

    /// The octal mode, for a value given as a number.
    pub fn octal(&self) -> Option<u32> {
        match self.kind {
            Kind::Octal(mode) => Some(mode),
            Kind::Symbolic(_) => None,
        }
    }

    /// The permission and special bits (`0o7777`) an entry whose own bits
    /// are `mode` gets.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let cmds = match &self.kind {
            Kind::Octal(m) => return *m,
            Kind::Symbolic(cmds) => cmds,
        };
        let old = mode & 0o7777;
        let mut new = old;
        for cmd in cmds {
            match *cmd {
                Cmd::Set(bits) => new |= bits,
                Cmd::Clear(bits) => new &= !bits,
                Cmd::SetX(bits) => {
                    if old & 0o111 != 0 || is_dir {
                        new |= bits;
                    }
                }
                Cmd::Copy {
                    from,
                    to_user,
                    to_group,
                    to_other,
                    clear,
                    set,
                    bits,
                } => {
                    let value = match from {
                        b'u' => (new & S_IRWXU) >> 6,
                        b'g' => (new & S_IRWXG) >> 3,
                        _ => new & S_IRWXO,
                    };
                    let targets = [(to_user, 6), (to_group, 3), (to_other, 0)];
                    if clear {
                        let clear_value = if set { 0o7 } else { value };
                        for (on, shift) in targets {
                            if on {
                                new &= !((clear_value << shift) & bits);
                            }
                        }
                    }
                    if set {
                        for (on, shift) in targets {
                            if on {
                                new |= (value << shift) & bits;
                            }
                        }
                    }
                }
            }
        }
        new
    }
}

/// setmode(3)'s symbolic grammar; `None` for a syntax error (where the Go
/// port returns `ErrSyntax`, or would index past the end of the string).
fn parse_symbolic(mut s: &[u8]) -> Option<Vec<Cmd>> {
    if s.is_empty() {
        return None;
    }
    let mask = !UMASK;
    let mut cmds = Vec::new();
    let mut equal_done = false;
    loop {
        let mut who = 0;
        while let Some(c) = s.first() {
            who |= match c {
                b'a' => STANDARD_BITS,
                b'u' => S_ISUID | S_IRWXU,
                b'g' => S_ISGID | S_IRWXG,
                b'o' => S_IRWXO,
                _ => break,
            };
            s = &s[1..];
        }
        loop {
            let (&op, rest) = s.split_first()?;
            s = rest;
            match op {
                b'+' | b'-' => {}
                b'=' => equal_done = false,
                _ => return None,
            }
            who &= !S_ISVTX;
            let (mut perm, mut perm_x) = (0, 0);
            loop {
                let b = s.first().copied().unwrap_or(0);
                match b {
                    b'r' => perm |= 0o444,
                    b's' => {
                        // Set-id bits mean nothing for "other" alone.
                        if who == 0 || who & !S_IRWXO != 0 {
                            perm |= S_ISUID | S_ISGID;
                        }
                    }
                    b't' => {
                        if who == 0 || who & !S_IRWXO != 0 {
                            who |= S_ISVTX;
                            perm |= S_ISVTX;
                        }
                    }
                    b'w' => perm |= 0o222,
                    b'X' => {
                        if op == b'+' {
                            perm_x = 0o111;
                        }
                    }
                    b'x' => perm |= 0o111,
                    b'u' | b'g' | b'o' => {
                        // A copy flushes what came before it.
                        if perm != 0 {
                            add(&mut cmds, op, who, perm, mask);
                            perm = 0;
                        }
                        if op == b'=' {
                            equal_done = true;
                        }
                        if perm_x != 0 {
                            add(&mut cmds, b'X', who, perm_x, mask);
                            perm_x = 0;
                        }
                        add_copy(&mut cmds, b, who, op, mask);
                    }
                    _ => {
                        if perm != 0 || (op == b'=' && !equal_done) {
                            if op == b'=' {
                                equal_done = true;
                            }
                            add(&mut cmds, op, who, perm, mask);
                        }
                        if perm_x != 0 {
                            add(&mut cmds, b'X', who, perm_x, mask);
                        }
                        break;
                    }
                }
                s = &s[1..];
            }
            match s.first() {
                None => return Some(cmds),
                Some(b',') => {
                    s = &s[1..];
                    break;
                }
                Some(_) => continue,
            }
        }
    }
}

/// setmode's `addcmd` for `=`, `+`, `-` and `X`.
fn add(cmds: &mut Vec<Cmd>, op: u8, who: u32, perm: u32, mask: u32) {
    let bits = if who != 0 { who & perm } else { mask & perm };
    match op {
        b'=' => {
            cmds.push(Cmd::Clear(if who != 0 { who } else { STANDARD_BITS }));
            cmds.push(Cmd::Set(bits));
        }
        b'+' => cmds.push(Cmd::Set(bits)),
        b'-' => cmds.push(Cmd::Clear(bits)),
        _ => cmds.push(Cmd::SetX(bits)),
    }
}

/// setmode's `addcmd` for a `u`, `g` or `o` copy.
fn add_copy(cmds: &mut Vec<Cmd>, from: u8, who: u32, op: u8, mask: u32) {
    let (to_user, to_group, to_other, bits) = if who != 0 {
        (who & 0o400 != 0, who & 0o040 != 0, who & 0o004 != 0, !0)
    } else {
        (true, true, true, mask)
    };
    cmds.push(Cmd::Copy {
        from,
        to_user,
        to_group,
        to_other,
        clear: op != b'+',
        set: op != b'-',
        bits,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(value: &str, mode: u32) -> u32 {
        Chmod::parse(value).unwrap().apply(mode, false)
    }

    #[test]
    fn octal_values_replace_the_mode() {
        assert_eq!(Chmod::parse("0755").unwrap().octal(), Some(0o755));
        assert_eq!(apply("600", 0o4777), 0o600);
        assert_eq!(apply("4755", 0o644), 0o4755);
        assert_eq!(apply("0", 0o644), 0);
        assert_eq!(apply("07777", 0), 0o7777);
    }

    #[test]
    fn buildkit_error_text_for_numeric_values() {
        for bad in ["64a", "8", "10000", "99999999999", "0x1ff"] {
            let err = Chmod::parse(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "invalid chmod parameter: '{bad}'. it should be octal string and between 0 and 07777"
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn symbolic_syntax_errors() {
        for bad in ["", "u", "u+q", "z+x", "u+x,", "+x,,", "a"] {
            assert!(Chmod::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn symbolic_values() {
        assert_eq!(apply("u+x", 0o644), 0o744);
        assert_eq!(apply("u+x,g-r", 0o644), 0o704);
        assert_eq!(apply("a=r", 0o755), 0o444);
        assert_eq!(apply("go-w", 0o777), 0o755);
        assert_eq!(apply("+x", 0o644), 0o755);
        // The umask filters clauses without "who".
        assert_eq!(apply("+w", 0o444), 0o644);
        assert_eq!(apply("=rw,+X", 0o644), 0o644);
        assert_eq!(apply("=rw,+X", 0o744), 0o755);
        assert_eq!(apply("=rw,+X", 0o755), 0o755);
        assert_eq!(apply("u=rwx,go=u-w", 0o600), 0o755);
        assert_eq!(apply("go=", 0o777), 0o700);
        assert_eq!(apply("g=u", 0o640), 0o660);
        assert_eq!(apply("u+s", 0o755), 0o4755);
        assert_eq!(apply("o+t", 0o755), 0o755);
        assert_eq!(apply("+t", 0o755), 0o1755);
        assert_eq!(apply("a+X", 0o600), 0o600);
        assert_eq!(Chmod::parse("a+X").unwrap().apply(0o600, true), 0o711);
    }

    /// GNU chmod(1) with umask 022 agrees with setmode on these. (Not on
    /// `X` after `=`: GNU tests the mode as changed so far, setmode the
    /// mode it started from, so `=rw,+X` keeps 0755 a 0755 here.)
    #[test]
    fn symbolic_values_agree_with_chmod_1() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            "u+x",
            "g-r",
            "a=r",
            "go-w",
            "+x",
            "+X",
            "u=rwx,go=u-w",
            "go=",
            "g=u",
            "o=g",
            "u-x,g+w",
            "a-rwx",
            "ug+rw,o-r",
            "u=,g=r",
            "+r",
            "-w",
            "a+rwx,o-w",
            "u+rwx,g=u",
        ];
        let modes = [0o644, 0o755, 0o600, 0o000, 0o777, 0o741];
        for value in cases {
            for &mode in &modes {
                let path = dir.path().join("f");
                fs_err::write(&path, b"").unwrap();
                use std::os::unix::fs::PermissionsExt;
                fs_err::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
                let status = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(format!(
                        "umask 022 && chmod -- '{value}' '{}'",
                        path.display()
                    ))
                    .status()
                    .unwrap();
                assert!(status.success(), "chmod {value}");
                let want = fs_err::metadata(&path).unwrap().permissions().mode() & 0o7777;
                assert_eq!(
                    apply(value, mode),
                    want,
                    "{value} on {mode:o}: want {want:o}"
                );
            }
        }
    }
}
