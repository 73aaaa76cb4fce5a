//! A conformance case: a Dockerfile, its context, how to build it, and what
//! to expect. The project's own cases are folders under
//! `tests/buildkit-cases/<name>/`: a `Dockerfile` (with `{{busybox}}`-style
//! placeholders for the base images), the context files beside it, and an
//! optional `case.json`:
//!
//! ```json
//! {
//!   "build_args": {"NAME": "value"},
//!   "target": "stage",
//!   "platform": "linux/arm64",
//!   "dockerfile": "Dockerfile.other",
//!   "secrets": {"id": "content"},
//!   "setup": ["mkdir empty", "mkfifo pipe", "chmod 0600 file", "chown 1234:5678 file",
//!             "symlink TARGET LINK", "hardlink EXISTING NEW", "write PATH TEXT",
//!             "tar OUT.tar DIR", "targz OUT.tar.gz DIR", "remove PATH"],
//!   "expect_error": "key phrase of the error",    // or true: any error
//!   "known_difference": "why kiln cannot agree yet"
//! }
//! ```
//!
//! `setup` does what git cannot keep (empty directories, fifos, modes,
//! owners); every path is inside the context. All context mtimes are then
//! set to `CONTEXT_MTIME`, so "kept from the input" can be told apart from
//! "made during the build" (see `compare`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::base::BaseImages;

/// mtime of every context file: 2020-01-01T00:00:00Z.
pub(crate) const CONTEXT_MTIME: u64 = 1_577_836_800;

/// What a build should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expect {
    Success,
    /// Both builders fail; when given, both errors carry the phrase.
    Failure(Option<String>),
    /// Either outcome, as long as both builders reach it; when both fail,
    /// kiln's error carries each of these phrases that BuildKit's has.
    Agree(Vec<String>),
}

/// Where the context files come from.
#[derive(Debug, Clone)]
pub(crate) enum Files {
    /// Copy this directory (less `case.json`).
    Dir(PathBuf),
    /// Write these files (relative path, content); a path ending in `/` is
    /// a directory.
    List(Vec<(String, Vec<u8>)>),
}

#[derive(Debug, Clone)]
pub(crate) struct Case {
    pub(crate) name: String,
    /// The Dockerfile's text, placeholders not yet replaced.
    pub(crate) dockerfile: String,
    /// Its name in the context.
    pub(crate) dockerfile_name: String,
    pub(crate) files: Files,
    pub(crate) setup: Vec<String>,
    pub(crate) build_args: BTreeMap<String, String>,
    pub(crate) target: Option<String>,
    pub(crate) platform: Option<String>,
    pub(crate) secrets: BTreeMap<String, String>,
    pub(crate) expect: Expect,
    pub(crate) known_difference: Option<String>,
    /// Paths whose content is random by design (`/dev/urandom`, `date`):
    /// compared by type, mode and owner, not size or content.
    pub(crate) volatile: Vec<String>,
}

impl Case {
    pub(crate) fn new(
        name: impl Into<String>,
        dockerfile: impl Into<String>,
        files: Files,
    ) -> Case {
        Case {
            name: name.into(),
            dockerfile: dockerfile.into(),
            dockerfile_name: "Dockerfile".into(),
            files,
            setup: Vec::new(),
            build_args: BTreeMap::new(),
            target: None,
            platform: None,
            secrets: BTreeMap::new(),
            expect: Expect::Success,
            known_difference: None,
            volatile: Vec::new(),
        }
    }

    /// Makes the build context in `dir`, Dockerfile included.
    pub(crate) fn prepare(&self, dir: &Path, bases: &BaseImages) -> Result<(), String> {
        fs_err::create_dir_all(dir).map_err(|e| e.to_string())?;
        match &self.files {
            Files::Dir(src) => {
                let out = Command::new("cp")
                    .args(["-a", "--no-preserve=ownership", "--"])
                    .arg(format!("{}/.", src.display()))
                    .arg(dir)
                    .output()
                    .map_err(|e| e.to_string())?;
                if !out.status.success() {
                    return Err(String::from_utf8_lossy(&out.stderr).into_owned());
                }
                let _ = fs_err::remove_file(dir.join("case.json"));
                // Git keeps only the executable bit: make modes what a
                // checkout with umask 022 gives, whatever the local umask.
                run_sh(
                    dir,
                    "find . -type d -exec chmod 0755 {} + && find . -type f -perm -u+x -exec chmod 0755 {} + && find . -type f ! -perm -u+x -exec chmod 0644 {} +",
                )?;
            }
            Files::List(files) => {
                for (path, content) in files {
                    let full = dir.join(path.trim_end_matches('/'));
                    if path.ends_with('/') {
                        fs_err::create_dir_all(&full).map_err(|e| e.to_string())?;
                    } else {
                        if let Some(parent) = full.parent() {
                            fs_err::create_dir_all(parent).map_err(|e| e.to_string())?;
                        }
                        fs_err::write(&full, content).map_err(|e| e.to_string())?;
                    }
                }
            }
        }
        let text = bases.substitute(&self.dockerfile)?;
        fs_err::write(dir.join(&self.dockerfile_name), text).map_err(|e| e.to_string())?;
        touch_all(dir)?;
        for op in &self.setup {
            setup_op(dir, op)?;
        }
        touch_all(dir)
    }
}

fn run_sh(dir: &Path, script: &str) -> Result<(), String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Every path's mtime (symlinks' own too) to `CONTEXT_MTIME`.
fn touch_all(dir: &Path) -> Result<(), String> {
    run_sh(
        dir,
        &format!("find . -exec touch -h -d @{CONTEXT_MTIME} {{}} +"),
    )
}

/// Quotes a word for `sh`.
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn setup_op(dir: &Path, op: &str) -> Result<(), String> {
    let words: Vec<&str> = op.splitn(3, ' ').collect();
    let inside = |p: &str| -> Result<String, String> {
        if p.starts_with('/') || p.split('/').any(|c| c == "..") {
            Err(format!("setup {op:?}: {p} is outside the context"))
        } else {
            Ok(q(p))
        }
    };
    let script = match words.as_slice() {
        ["mkdir", p] => format!("mkdir -p {}", inside(p)?),
        ["mkfifo", p] => format!("mkfifo {}", inside(p)?),
        ["socket", p] => format!(
            "python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' {}",
            inside(p)?
        ),
        ["chmod", mode, p] => format!("chmod {} {}", q(mode), inside(p)?),
        ["chown", owner, p] => format!("chown -h {} {}", q(owner), inside(p)?),
        ["symlink", target, link] => format!("ln -sfn {} {}", q(target), inside(link)?),
        ["hardlink", existing, new] => format!("ln -f {} {}", inside(existing)?, inside(new)?),
        ["remove", p] => format!("rm -rf {}", inside(p)?),
        ["write", p, text] => format!(
            "mkdir -p \"$(dirname {p})\" && printf '%s\\n' {t} > {p}",
            p = inside(p)?,
            t = q(text)
        ),
        ["tar", out, src] => format!(
            "touch -h -d @{CONTEXT_MTIME} -- {s} && tar --numeric-owner -cf {o} -C {s} .",
            o = inside(out)?,
            s = inside(src)?
        ),
        ["targz", out, src] => format!(
            "find {s} -exec touch -h -d @{CONTEXT_MTIME} {{}} + && tar --numeric-owner -czf {o} -C {s} .",
            o = inside(out)?,
            s = inside(src)?
        ),
        _ => return Err(format!("unknown setup step {op:?}")),
    };
    run_sh(dir, &script)
}

/// The project's own cases: every folder of `root` with a Dockerfile.
pub(crate) fn load_own(root: &Path) -> Result<Vec<Case>, String> {
    let mut cases = Vec::new();
    let mut dirs: Vec<PathBuf> = fs_err::read_dir(root)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let meta: Value = match fs_err::read(dir.join("case.json")) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| format!("{name}/case.json: {e}"))?
            }
            Err(_) => Value::Null,
        };
        let dockerfile_name = meta["dockerfile"]
            .as_str()
            .unwrap_or("Dockerfile")
            .to_string();
        let dockerfile =
            fs_err::read_to_string(dir.join(&dockerfile_name)).map_err(|e| e.to_string())?;
        let mut case = Case::new(format!("own/{name}"), dockerfile, Files::Dir(dir.clone()));
        case.dockerfile_name = dockerfile_name;
        apply_meta(&mut case, &meta).map_err(|e| format!("{name}/case.json: {e}"))?;
        cases.push(case);
    }
    Ok(cases)
}

/// Reads the fields of a `case.json` into `case`.
pub(crate) fn apply_meta(case: &mut Case, meta: &Value) -> Result<(), String> {
    let strings = |v: &Value| -> BTreeMap<String, String> {
        v.as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    };
    if let Some(obj) = meta.as_object() {
        for key in obj.keys() {
            if ![
                "build_args",
                "target",
                "platform",
                "dockerfile",
                "secrets",
                "setup",
                "expect_error",
                "known_difference",
                "comment",
            ]
            .contains(&key.as_str())
            {
                return Err(format!("unknown key {key:?}"));
            }
        }
    }
    case.build_args.extend(strings(&meta["build_args"]));
    case.secrets.extend(strings(&meta["secrets"]));
    if let Some(t) = meta["target"].as_str() {
        case.target = Some(t.to_string());
    }
    if let Some(p) = meta["platform"].as_str() {
        case.platform = Some(p.to_string());
    }
    if let Some(setup) = meta["setup"].as_array() {
        case.setup
            .extend(setup.iter().filter_map(|s| s.as_str().map(str::to_string)));
    }
    match &meta["expect_error"] {
        Value::Bool(true) => case.expect = Expect::Failure(None),
        Value::String(s) => case.expect = Expect::Failure(Some(s.clone())),
        _ => {}
    }
    if let Some(k) = meta["known_difference"].as_str() {
        case.known_difference = Some(k.to_string());
    }
    Ok(())
}
