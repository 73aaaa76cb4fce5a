//! `RUN --mount=...` (BuildKit's `instructions/commands_runmount.go`).
//!
//! A mount is a CSV record of `key=value` fields (and a few bare keys).
//! BuildKit reads it twice: when parsing, only to check the CSV and that
//! `from` holds no variable; when the stage is lowered, with each value
//! expanded first, for everything. [`parse_mount`] does both, depending on
//! whether it is given an expander.

use std::fmt;

use crate::goconv::{parse_bool, parse_u32, quote, ram_in_bytes};
use crate::suggest::suggest;

/// What a mount provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MountType {
    /// A directory or file of the context, a stage or an image (the default).
    #[default]
    Bind,
    /// A persistent cache directory.
    Cache,
    /// An empty tmpfs.
    Tmpfs,
    /// A build secret, as a file or an environment variable.
    Secret,
    /// The forwarded SSH agent socket.
    Ssh,
}

impl MountType {
    const ALL: [MountType; 5] = [
        MountType::Bind,
        MountType::Cache,
        MountType::Tmpfs,
        MountType::Secret,
        MountType::Ssh,
    ];

    /// The name as written in `type=`.
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

impl fmt::Display for MountType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How concurrent builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShareMode {
    /// Used by all writers at once (BuildKit's default for caches).
    Shared,
    /// A new copy when the cache is in use.
    Private,
    /// One writer at a time; others wait.
    Locked,
}

impl ShareMode {
    const ALL: [ShareMode; 3] = [ShareMode::Shared, ShareMode::Private, ShareMode::Locked];

    /// The name as written in `sharing=`.
    pub fn as_str(self) -> &'static str {
        match self {
            ShareMode::Shared => "shared",
            ShareMode::Private => "private",
            ShareMode::Locked => "locked",
        }
    }
}

impl fmt::Display for ShareMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `--mount`, with the defaults BuildKit's parser applies.
///
/// Defaults applied later, by the lowering (BuildKit's
/// `dockerfile2llb/convert_runmount.go` and `convert_secrets.go`,
/// `convert_ssh.go`), are not filled in here: a cache's id defaults to its
/// cleaned target and its sharing to `shared`; a secret's id to its
/// `source`, else `id`, else the target's base name, and its target to
/// `/run/secrets/<id>`; an SSH mount's id to `default`; a relative target
/// is joined to the working directory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mount {
    /// `type=`; `bind` when not given.
    pub kind: MountType,
    /// `from=`: a stage, an image or a named context.
    pub from: Option<String>,
    /// `source=`, `src=`.
    pub source: Option<String>,
    /// `target=`, `dst=`, `destination=`.
    pub target: Option<String>,
    /// `ro`/`readonly`, `rw`/`readwrite`; when neither is given, read-only
    /// except for `cache` and `tmpfs`.
    pub read_only: bool,
    /// `size=` of a tmpfs in bytes; 0 for no limit.
    pub size_limit: i64,
    /// `id=`: the cache, secret or SSH agent id.
    pub id: Option<String>,
    /// `sharing=` of a cache.
    pub sharing: Option<ShareMode>,
    /// `required` of a secret or SSH mount.
    pub required: bool,
    /// `env=` of a secret: the variable to expose it in (`Some("")` asks for
    /// the default name).
    pub env: Option<String>,
    /// `mode=` (octal) of a cache, secret or SSH mount.
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// Why a mount was refused: BuildKit's message, or the expander's error.
#[derive(Debug)]
pub(crate) enum MountError<E> {
    Invalid(String),
    Expand(E),
}

impl<E> From<String> for MountError<E> {
    fn from(message: String) -> Self {
        MountError::Invalid(message)
    }
}

/// Every key a mount takes, for suggestions.
const KEYS: [&str; 19] = [
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

/// Expands one value of a mount (BuildKit's `SingleWordExpander`).
pub(crate) type ExpandWord<'a, E> = &'a mut dyn FnMut(&str) -> Result<String, E>;

/// Reads one `--mount` value. Without `expand`, as BuildKit's parser does:
/// the CSV is checked and `from` read (a `$` followed by anything refused);
/// nothing else. With `expand`, every value is expanded and read.
pub(crate) fn parse_mount<E>(
    spec: &str,
    mut expand: Option<ExpandWord<'_, E>>,
) -> Result<Mount, MountError<E>> {
    let fields = csv_fields(spec).map_err(|e| format!("failed to parse csv mounts: {e}"))?;
    let mut m = Mount::default();
    let mut ro_auto = true;
    let secret_or_ssh = |m: &Mount| matches!(m.kind, MountType::Secret | MountType::Ssh);
    let unexpected =
        |key: &str, m: &Mount| format!("unexpected key '{key}' for mount type '{}'", m.kind);
    let invalid = |key: &str, value: &str| format!("invalid value for {key}: {value}");

    for field in &fields {
        let (key, value) = match field.split_once('=') {
            Some((key, value)) => (key.to_lowercase(), Some(value)),
            None => (field.to_lowercase(), None),
        };
        let Some(value) = value else {
            if expand.is_none() {
                continue;
            }
            match key.as_str() {
                "readonly" | "ro" => {
                    m.read_only = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.read_only = false;
                    ro_auto = false;
                }
                "required" if secret_or_ssh(&m) => m.required = true,
                "required" => return Err(unexpected(&key, &m).into()),
                _ => {
                    return Err(format!("invalid field '{field}' must be a key=value pair").into());
                }
            }
            continue;
        };
        let value = match expand.as_mut() {
            Some(expand) => expand(value).map_err(MountError::Expand)?,
            None if key == "from" => {
                // A `$` that is the last character cannot start a variable.
                if value.find('$').is_some_and(|at| at + 1 != value.len()) {
                    return Err(
                        "'from' doesn't support variable expansion, define alias stage instead"
                            .to_string()
                            .into(),
                    );
                }
                value.to_string()
            }
            None => continue,
        };
        let non_empty = |v: String| Some(v).filter(|v| !v.is_empty());
        match key.as_str() {
            "type" => {
                let lower = value.to_lowercase();
                let Some(kind) = MountType::ALL.into_iter().find(|t| t.as_str() == lower) else {
                    let names = MountType::ALL.map(MountType::as_str);
                    return Err(with_suggestion(
                        format!("unsupported mount type {}", quote(&value)),
                        suggest(&value, &names, true),
                    )
                    .into());
                };
                m.kind = kind;
            }
            "from" => m.from = non_empty(value),
            "source" | "src" => m.source = non_empty(value),
            "target" | "dst" | "destination" => m.target = non_empty(value),
            "readonly" | "ro" => {
                m.read_only = parse_bool(&value).ok_or_else(|| invalid(&key, &value))?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.read_only = !parse_bool(&value).ok_or_else(|| invalid(&key, &value))?;
                ro_auto = false;
            }
            "required" if secret_or_ssh(&m) => {
                m.required = parse_bool(&value).ok_or_else(|| invalid(&key, &value))?;
            }
            "required" => return Err(unexpected(&key, &m).into()),
            "size" if m.kind == MountType::Tmpfs => {
                m.size_limit = ram_in_bytes(&value).ok_or_else(|| invalid(&key, &value))?;
            }
            "size" => return Err(unexpected(&key, &m).into()),
            "id" => m.id = non_empty(value),
            "sharing" => {
                let lower = value.to_lowercase();
                let Some(mode) = ShareMode::ALL.into_iter().find(|s| s.as_str() == lower) else {
                    let names = ShareMode::ALL.map(ShareMode::as_str);
                    return Err(with_suggestion(
                        format!("unsupported sharing value {}", quote(&value)),
                        suggest(&value, &names, true),
                    )
                    .into());
                };
                m.sharing = Some(mode);
            }
            "mode" => {
                m.mode = Some(
                    parse_u32(&value, 8)
                        .ok_or_else(|| format!("invalid value {value} for mode"))?,
                );
            }
            "uid" => {
                m.uid = Some(
                    parse_u32(&value, 10)
                        .ok_or_else(|| format!("invalid value {value} for uid"))?,
                );
            }
            "gid" => {
                m.gid = Some(
                    parse_u32(&value, 10)
                        .ok_or_else(|| format!("invalid value {value} for gid"))?,
                );
            }
            "env" => m.env = Some(value),
            _ => {
                return Err(with_suggestion(
                    format!("unexpected key '{key}' in '{field}'"),
                    suggest(&key, &KEYS, true),
                )
                .into());
            }
        }
    }

    if !matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    ) {
        for (set, what) in [
            (m.mode.is_some(), "mode"),
            (m.uid.is_some(), "uid"),
            (m.gid.is_some(), "gid"),
        ] {
            if set {
                let kind = quote(m.kind.as_str());
                return Err(format!("{what} not allowed for {kind} type mounts").into());
            }
        }
    }
    if ro_auto {
        m.read_only = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if m.kind == MountType::Secret {
        if m.from.is_some() {
            return Err("secret mount should not have a from".to_string().into());
        }
        if m.sharing.is_some() {
            return Err("secret mount should not define sharing".to_string().into());
        }
        if m.source.is_none() && m.target.is_none() && m.id.is_none() {
            return Err("invalid secret mount. one of source, target required"
                .to_string()
                .into());
        }
        if m.source.is_some() && m.id.is_some() {
            return Err("both source and id can't be set".to_string().into());
        }
    }
    if m.sharing.is_some() && m.kind != MountType::Cache {
        return Err(format!("invalid cache sharing set for {} mount", m.kind).into());
    }
    Ok(m)
}

/// `message (did you mean x?)`.
pub(crate) fn with_suggestion(message: String, suggestion: Option<String>) -> String {
    match suggestion {
        Some(s) => format!("{message} (did you mean {s}?)"),
        None => message,
    }
}

/// The fields of one CSV record, as Go's `encoding/csv` reads a line (and
/// tonistiigi/go-csvvalue, which BuildKit uses, mimics): fields separated by
/// `,`; a field that starts with `"` is quoted, `""` inside it being one
/// `"`; a `"` anywhere else is an error.
pub(crate) fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let line = line
        .strip_suffix("\r\n")
        .or_else(|| line.strip_suffix('\n'))
        .unwrap_or(line);
    if line.is_empty() {
        return Err("EOF".to_string());
    }
    let error =
        |column: usize, what: &str| format!("parse error on line 1, column {column}: {what}");
    let bytes = line.as_bytes();
    let mut fields = Vec::new();
    let mut pos = 0;
    loop {
        if bytes.get(pos) != Some(&b'"') {
            let end = line[pos..].find(',').map_or(line.len(), |i| pos + i);
            let field = &line[pos..end];
            if let Some(q) = field.find('"') {
                return Err(error(pos + q + 1, "bare \" in non-quoted-field"));
            }
            fields.push(field.to_string());
            if end == line.len() {
                return Ok(fields);
            }
            pos = end + 1;
            continue;
        }
        // Quoted field.
        let mut field = String::new();
        pos += 1;
        loop {
            let Some(q) = line[pos..].find('"') else {
                return Err(error(
                    line.len() + 1,
                    "extraneous or missing \" in quoted-field",
                ));
            };
            field.push_str(&line[pos..pos + q]);
            pos += q + 1;
            match bytes.get(pos) {
                Some(b'"') => {
                    field.push('"');
                    pos += 1;
                }
                Some(b',') => {
                    fields.push(field);
                    pos += 1;
                    break;
                }
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(_) => return Err(error(pos, "extraneous or missing \" in quoted-field")),
            }
        }
        if pos == line.len() {
            // A trailing comma: one more, empty field.
            fields.push(String::new());
            return Ok(fields);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type NoError = std::convert::Infallible;

    fn read(spec: &str) -> Result<Mount, String> {
        let mut same = |v: &str| Ok::<_, NoError>(v.to_string());
        parse_mount::<NoError>(spec, Some(&mut same)).map_err(|e| match e {
            MountError::Invalid(m) => m,
            MountError::Expand(never) => match never {},
        })
    }

    fn parse_time(spec: &str) -> Result<Mount, String> {
        parse_mount::<NoError>(spec, None).map_err(|e| match e {
            MountError::Invalid(m) => m,
            MountError::Expand(never) => match never {},
        })
    }

    #[test]
    fn csv() {
        assert_eq!(csv_fields("a,\"b,c\",d").unwrap(), ["a", "b,c", "d"]);
        assert_eq!(csv_fields("\"a\"\"b\"").unwrap(), ["a\"b"]);
        assert_eq!(csv_fields("a,").unwrap(), ["a", ""]);
        assert_eq!(csv_fields("\"a\",").unwrap(), ["a", ""]);
        assert_eq!(csv_fields("").unwrap_err(), "EOF");
        assert!(
            csv_fields("a\"b")
                .unwrap_err()
                .contains("bare \" in non-quoted-field")
        );
        assert!(
            csv_fields("\"ab")
                .unwrap_err()
                .contains("extraneous or missing \"")
        );
        assert!(
            csv_fields("\"a\"b")
                .unwrap_err()
                .contains("extraneous or missing \"")
        );
    }

    #[test]
    fn defaults_per_type() {
        let bind = read("target=/src").unwrap();
        assert_eq!(bind.kind, MountType::Bind);
        assert!(bind.read_only);
        let cache = read("type=cache,target=/root/.cache").unwrap();
        assert!(!cache.read_only);
        assert_eq!(cache.sharing, None);
        let tmpfs = read("type=tmpfs,target=/t,size=64m").unwrap();
        assert!(!tmpfs.read_only);
        assert_eq!(tmpfs.size_limit, 64 << 20);
        let secret = read("type=secret,id=aws,required,env=AWS,mode=0400,uid=1,gid=2").unwrap();
        assert!(secret.read_only && secret.required);
        assert_eq!(secret.env.as_deref(), Some("AWS"));
        assert_eq!(
            (secret.mode, secret.uid, secret.gid),
            (Some(0o400), Some(1), Some(2))
        );
        let ssh = read("type=ssh,required=false").unwrap();
        assert_eq!(ssh.kind, MountType::Ssh);
        assert!(!ssh.required);
        let rw = read("type=bind,rw,from=build,source=/out,dst=/in").unwrap();
        assert!(!rw.read_only);
        assert_eq!(rw.from.as_deref(), Some("build"));
        assert_eq!(rw.target.as_deref(), Some("/in"));
        let ro = read("type=cache,ro=true,sharing=LOCKED").unwrap();
        assert!(ro.read_only);
        assert_eq!(ro.sharing, Some(ShareMode::Locked));
    }

    #[test]
    fn parse_time_reads_only_from() {
        let m = parse_time("type=cache,target=/x,from=build,ro,bogus=1").unwrap();
        assert_eq!(m.kind, MountType::Bind);
        assert_eq!(m.from.as_deref(), Some("build"));
        assert_eq!(m.target, None);
        assert_eq!(
            parse_time("from=$stage,type=cache").unwrap_err(),
            "'from' doesn't support variable expansion, define alias stage instead"
        );
        assert!(parse_time("from=stage$").is_ok());
    }

    #[test]
    fn refusals() {
        let cases = [
            (
                "typ=tmpfs",
                "unexpected key 'typ' in 'typ=tmpfs' (did you mean type?)",
            ),
            (
                "type=tmp",
                "unsupported mount type \"tmp\" (did you mean tmpfs?)",
            ),
            (
                "type=cache,sharing=lock",
                "unsupported sharing value \"lock\" (did you mean locked?)",
            ),
            (
                "type=bind,size=1",
                "unexpected key 'size' for mount type 'bind'",
            ),
            (
                "type=cache,required",
                "unexpected key 'required' for mount type 'cache'",
            ),
            ("type=tmpfs,size=big", "invalid value for size: big"),
            ("ro=maybe", "invalid value for ro: maybe"),
            ("type=cache,mode=9", "invalid value 9 for mode"),
            ("uid=x", "invalid value x for uid"),
            (
                "target=/x,mode=0700",
                "mode not allowed for \"bind\" type mounts",
            ),
            (
                "type=tmpfs,gid=1",
                "gid not allowed for \"tmpfs\" type mounts",
            ),
            ("bogus", "invalid field 'bogus' must be a key=value pair"),
            (
                "type=secret,id=a,from=b",
                "secret mount should not have a from",
            ),
            (
                "type=secret,id=a,sharing=shared",
                "secret mount should not define sharing",
            ),
            (
                "type=secret",
                "invalid secret mount. one of source, target required",
            ),
            (
                "type=secret,source=a,id=b",
                "both source and id can't be set",
            ),
            (
                "sharing=private",
                "invalid cache sharing set for bind mount",
            ),
        ];
        for (spec, message) in cases {
            assert_eq!(read(spec).unwrap_err(), message, "{spec}");
        }
    }
}
