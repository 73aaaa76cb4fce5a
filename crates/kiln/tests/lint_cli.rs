//! `kiln lint` as a user runs it: formats, exit statuses, --ignore,
//! --fail-level, stdin, parse errors, `--fix` (and a fixed file built);
//! and over real-world Dockerfiles.

use assert_cmd::Command;
use kiln_testkit::need::{Conformance, need};
use serde_json::Value;

fn kiln() -> Command {
    Command::cargo_bin("kiln").unwrap()
}

/// A warning (KL108) on line 2, an error (KL103) on line 4.
const DOCKERFILE: &str = "FROM debian:12\nRUN apt-get update\nRUN DEBIAN_FRONTEND=noninteractive apt-get install -y curl \\\n && curl https://example.com\n";

fn lint(args: &[&str], stdin: &str) -> (i32, String, String) {
    let out = kiln()
        .arg("lint")
        .args(args)
        .write_stdin(stdin.to_string())
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn text_lists_findings_and_fails_on_errors() {
    let (code, out, _) = lint(&["-"], DOCKERFILE);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        "<stdin>:2 DL3009 info: apt-get update without `rm -rf /var/lib/apt/lists/*` in the same RUN\n\
         <stdin>:2 KL108 warning: `apt-get update` runs in another step than the `apt-get install` on line 3\n\
         <stdin>:3 DL3008 warning: apt-get install curl without a version (`curl=<version>`)\n\
         <stdin>:3 DL3015 info: apt-get install without --no-install-recommends\n\
         <stdin>:3 KL104 warning: `apt-get` downloads into the apt cache with no --mount=type=cache for it\n\
         <stdin>:4 KL103 error: `curl` without a timeout (add --max-time or --connect-timeout with --speed-time)\n"
    );
}

#[test]
fn ignore_and_fail_level_decide_the_exit_status() {
    assert_eq!(lint(&["--ignore", "KL103", "-"], DOCKERFILE).0, 0);
    assert_eq!(
        lint(
            &["--ignore", "KL103", "--fail-level", "warning", "-"],
            DOCKERFILE
        )
        .0,
        1
    );
    let (code, out, _) = lint(
        &[
            "--ignore", "KL103", "--ignore", "kl104", "--ignore", "KL108", "--ignore", "DL3008",
            "--ignore", "dl3009", "--ignore", "DL3015", "-",
        ],
        DOCKERFILE,
    );
    assert_eq!((code, out.as_str()), (0, ""));
    assert_eq!(
        lint(&["--fail-level", "style", "-"], "FROM x:1\nRUN true\n").0,
        0
    );
    // DL3048 is hadolint's one rule at level style.
    assert_eq!(
        lint(&["--fail-level", "style", "-"], "FROM x:1\nLABEL Bad=1\n").0,
        1
    );
    assert_eq!(
        lint(&["--fail-level", "info", "-"], "FROM x:1\nLABEL Bad=1\n").0,
        0
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(lint(&["--ignore", "KL999", "-"], DOCKERFILE).0, 2);
    assert_eq!(lint(&["--fail-level", "fatal", "-"], DOCKERFILE).0, 2);
    assert_eq!(lint(&["--format", "xml", "-"], DOCKERFILE).0, 2);
}

#[test]
fn json_is_an_array_of_findings() {
    let (code, out, _) = lint(&["--format", "json", "-"], DOCKERFILE);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    let first = &v.as_array().unwrap()[0];
    let keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["file", "line", "message", "rule", "severity", "why"]);
    assert_eq!(
        (first["rule"].as_str(), first["line"].as_u64()),
        (Some("DL3009"), Some(2))
    );
    assert_eq!(first["severity"], "info");
    let (code, out, _) = lint(&["--format", "json", "-"], "FROM x:1\n");
    assert_eq!((code, out.trim()), (0, "[]"));
}

#[test]
fn sarif_is_a_minimal_valid_log() {
    let (_, out, _) = lint(&["--format", "sarif", "-"], DOCKERFILE);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["version"], "2.1.0");
    let run = &v["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    assert!(rules.iter().any(|r| r["id"] == "KL101"));
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 6);
    let error = &results[5];
    assert_eq!(
        (error["ruleId"].as_str(), error["level"].as_str()),
        (Some("KL103"), Some("error"))
    );
    let location = &error["locations"][0]["physicalLocation"];
    assert_eq!(location["artifactLocation"]["uri"], "%3Cstdin%3E");
    assert_eq!(location["region"]["startLine"], 4);
    let index = error["ruleIndex"].as_u64().unwrap() as usize;
    assert_eq!(rules[index]["id"], "KL103");
    // Not validated against the SARIF schema: check-jsonschema (the
    // pipeline validators) has no SARIF schema built in, and the project
    // vendors no schemas; the fields code scanning reads are checked above.
}

#[test]
fn a_file_that_does_not_parse_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("Dockerfile.bad");
    fs_err::write(&bad, "FROM x\nRUN --mont=type=cache true\n").unwrap();
    let good = dir.path().join("Dockerfile");
    fs_err::write(&good, "FROM x\nRUN curl https://x\n").unwrap();
    let out = kiln().arg("lint").arg(&bad).arg(&good).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:2:", bad.display())),
        "{stderr}"
    );
    // The other file is still linted.
    assert!(String::from_utf8_lossy(&out.stdout).contains("Dockerfile:2 KL103"));
    // The default file is ./Dockerfile.
    let out = kiln().arg("lint").current_dir(dir.path()).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Dockerfile:1 DL3006 warning: FROM x has no tag\n\
         Dockerfile:2 KL103 error: `curl` without a timeout (add --max-time or --connect-timeout with --speed-time)\n"
    );
}

/// A Dockerfile with a finding of each origin: DL3006 (warning), KL103
/// (error), MaintainerDeprecated (BuildKit, warning), DL4000 (error).
const MIXED: &str = "FROM x\nMAINTAINER me\nRUN curl https://x\n";

fn lint_in(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = kiln()
        .current_dir(dir)
        .env("HOME", dir.join("home"))
        .env_remove("XDG_CONFIG_HOME")
        .arg("lint")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn rules(out: &str) -> Vec<&str> {
    out.lines()
        .map(|l| l.split(' ').nth(1).unwrap_or(""))
        .collect()
}

#[test]
fn a_hadolint_configuration_is_found_as_hadolint_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    fs_err::write(dir.path().join("Dockerfile"), MIXED).unwrap();
    let (code, out, _) = lint_in(dir.path(), &[]);
    assert_eq!(code, 1);
    assert_eq!(
        rules(&out),
        ["DL3006", "DL4000", "MaintainerDeprecated", "KL103"]
    );
    // ~/.hadolint.yaml, then ./.hadolint.yaml, which comes first.
    fs_err::create_dir(dir.path().join("home")).unwrap();
    fs_err::write(
        dir.path().join("home/.hadolint.yaml"),
        "ignored: [DL3006]\n",
    )
    .unwrap();
    let (_, out, _) = lint_in(dir.path(), &[]);
    assert_eq!(rules(&out), ["DL4000", "MaintainerDeprecated", "KL103"]);
    fs_err::write(
        dir.path().join(".hadolint.yaml"),
        "ignored:\n  - DL4000\n  - KL103\noverride:\n  info: [DL3006]\nfailure-threshold: info\n",
    )
    .unwrap();
    let (code, out, _) = lint_in(dir.path(), &[]);
    assert_eq!(
        out,
        "Dockerfile:1 DL3006 info: FROM x has no tag\nDockerfile:2 MaintainerDeprecated warning: Maintainer instruction is deprecated in favor of using label\n"
    );
    assert_eq!(code, 1, "failure-threshold: info");
    // --fail-level wins over failure-threshold.
    assert_eq!(lint_in(dir.path(), &["--fail-level", "error"]).0, 0);
    // --config names another file, and the search is not made.
    fs_err::write(
        dir.path().join("other.yaml"),
        "ignored: [MaintainerDeprecated]\n",
    )
    .unwrap();
    let (_, out, _) = lint_in(dir.path(), &["--config", "other.yaml"]);
    assert_eq!(rules(&out), ["DL3006", "DL4000", "KL103"]);
}

#[test]
fn a_configuration_that_cannot_be_read_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    fs_err::write(dir.path().join("Dockerfile"), MIXED).unwrap();
    fs_err::write(
        dir.path().join("bad.yaml"),
        "override:\n  fatal: [DL3006]\n",
    )
    .unwrap();
    let (code, out, err) = lint_in(dir.path(), &["--config", "bad.yaml"]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(err.contains("bad.yaml") && err.contains("fatal"), "{err}");
    let (code, _, err) = lint_in(dir.path(), &["--config", "missing.yaml"]);
    assert_eq!(code, 2);
    assert!(err.contains("missing.yaml"), "{err}");
}

#[test]
fn inline_hadolint_and_check_comments_are_honoured() {
    let df = "# check=skip=MaintainerDeprecated\n# hadolint ignore=DL3006\nFROM x\nMAINTAINER me\n";
    let (_, out, _) = lint(&["-"], df);
    assert_eq!(rules(&out), ["DL4000"]);
    let df = "# check=error=true\nFROM x:1\nMAINTAINER me\n";
    let (code, out, _) = lint(&["--ignore", "DL4000", "-"], df);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        "<stdin>:3 MaintainerDeprecated error: Maintainer instruction is deprecated in favor of using label\n"
    );
}

#[test]
fn real_dockerfiles_lint_without_crashing_and_the_same_twice() {
    let Some(dir) = need(Conformance("real-dockerfiles")) else {
        return;
    };
    let mut files: Vec<_> = fs_err::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n != "INDEX.tsv" && n != "README.md")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in files {
        let run = || {
            kiln()
                .args(["lint", "--format", "json"])
                .arg(&file)
                .output()
                .unwrap()
        };
        let (a, b) = (run(), run());
        let code = a.status.code();
        assert!(
            matches!(code, Some(0 | 1)),
            "{}: {code:?} {}",
            file.display(),
            String::from_utf8_lossy(&a.stderr)
        );
        assert!(
            !String::from_utf8_lossy(&a.stderr).contains("panicked"),
            "{}",
            file.display()
        );
        assert_eq!(a.stdout, b.stdout, "{}", file.display());
        if code == Some(1) && a.stdout.starts_with(b"[]") {
            panic!(
                "{} failed without findings: {}",
                file.display(),
                String::from_utf8_lossy(&a.stderr)
            );
        }
    }
}

/// `kiln build --lint` prints the findings before building;
/// `--lint=error` fails on one at level error before anything is built
/// (no store is even opened: the base does not exist anywhere).
#[test]
fn build_lint_prints_findings_first_and_lint_error_fails_before_building() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let ctx = work.path().join("ctx");
    fs_err::create_dir(&ctx).unwrap();
    fs_err::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    let build = |lint: &str| {
        let out = kiln()
            .env("KILN_ROOT", &root)
            .args(["build", lint, "--progress", "plain"])
            .arg(&ctx)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, err) = build("--lint=error");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("Dockerfile:4 KL103 error: `curl` without a timeout"),
        "{err}"
    );
    assert!(
        err.contains("1 lint finding at level error (--lint=error); nothing was built"),
        "{err}"
    );
    assert!(!root.exists(), "no store opened");
    // Only warnings: printed, and the build goes on (its store opened;
    // here it then fails on its base, which no registry has).
    fs_err::write(
        ctx.join("Dockerfile"),
        "FROM kiln.invalid/none:1\nRUN apt-get update\nRUN DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tzdata\n",
    )
    .unwrap();
    let (code, err) = build("--lint=error");
    assert!(err.contains("Dockerfile:2 KL108 warning"), "{err}");
    assert!(!err.contains("nothing was built"), "{err}");
    assert_ne!(code, 0, "{err}");
    assert!(root.exists(), "the build went on: {err}");
}

/// `--fix` rewrites the file in place (its comments, continuations and
/// mode kept), says what it fixed, and reports what is left; a second run
/// has nothing to do. From standard input the fixed file is the output.
#[test]
fn fix_rewrites_the_file_and_reports_what_is_left() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Dockerfile");
    fs_err::write(&file, DOCKERFILE).unwrap();
    fs_err::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (code, out, err) = lint_in(dir.path(), &["--fix", "Dockerfile"]);
    assert_eq!(code, 1, "the curl without a timeout is left: {out}{err}");
    assert!(
        err.contains("fixed Dockerfile:2 KL108: `apt-get update` runs in another step"),
        "{err}"
    );
    assert!(err.contains("fixed Dockerfile:3 KL104"), "{err}");
    let text = fs_err::read_to_string(&file).unwrap();
    assert_eq!(
        text,
        "FROM debian:12\nRUN --mount=type=cache,target=/var/cache/apt,sharing=locked \
         --mount=type=cache,target=/var/lib/apt,sharing=locked apt-get update && \
         DEBIAN_FRONTEND=noninteractive apt-get install -y curl \\\n && curl https://example.com\n"
    );
    assert_eq!(
        fs_err::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o640
    );
    assert_eq!(rules(&out), ["DL3008", "DL3015", "KL103"], "{out}");
    let (_, _, err) = lint_in(dir.path(), &["--fix", "Dockerfile"]);
    assert!(!err.contains("fixed"), "{err}");
    assert_eq!(fs_err::read_to_string(&file).unwrap(), text);

    let (code, out, err) = lint(&["--fix", "-"], DOCKERFILE);
    assert_eq!(code, 1);
    assert_eq!(out, text, "the fixed Dockerfile");
    assert!(err.contains("<stdin>:3 KL103 error"), "{err}");
}

/// The fixed file still builds, and where the original hung (a prompt, here
/// a fake apt-get that refuses to ask) the fixed one does not.
#[test]
fn a_fixed_dockerfile_builds() {
    use std::process::Command as Std;
    if kiln_testkit::need::need(kiln_testkit::need::Runc).is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let tree = work.path().join("rootfs");
    kiln_testkit::busybox::rootfs(&tree, &[]);
    // apt-get fails where the real one would wait for an answer; pip takes
    // anything.
    let fake_apt = "#!/bin/sh\n\
        case \" $* \" in *\" install \"*)\n\
          case \" $* \" in *\" -y \"*) ;; *) [ \"$DEBIAN_FRONTEND\" = noninteractive ] \
            || { echo 'apt-get: would ask' >&2; exit 1; } ;; esac ;;\n\
        esac\n\
        echo \"apt-get $*\"\n";
    fs_err::write(tree.join("bin/apt-get"), fake_apt).unwrap();
    fs_err::write(tree.join("bin/pip"), "#!/bin/sh\necho \"pip $*\"\n").unwrap();
    for f in ["bin/apt-get", "bin/pip"] {
        use std::os::unix::fs::PermissionsExt as _;
        fs_err::set_permissions(tree.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let tarball = work.path().join("rootfs.tar");
    assert!(
        Std::new("tar")
            .arg("cf")
            .arg(&tarball)
            .arg("-C")
            .arg(&tree)
            .arg(".")
            .status()
            .unwrap()
            .success()
    );
    let kiln_at = |args: &[&str]| {
        Std::new(assert_cmd::cargo::cargo_bin("kiln"))
            .env("KILN_ROOT", &root)
            .env("KILN_PROGRESS", "plain")
            .args(args)
            .output()
            .unwrap()
    };
    let out = kiln_at(&[
        "import",
        tarball.to_str().unwrap(),
        "--tag",
        "kiln.test/fakes:1",
    ]);
    assert!(out.status.success(), "{out:?}");
    let ctx = work.path().join("ctx");
    fs_err::create_dir(&ctx).unwrap();
    let dockerfile = ctx.join("Dockerfile");
    fs_err::write(
        &dockerfile,
        "FROM kiln.test/fakes:1\n# the lists, then the tools\nRUN apt-get update\n\
         RUN apt-get install curl \\\n      git\n\
         RUN pip install flask && pip cache purge\n\
         RUN --mount=type=cache,target=/root/.cache/pip pip install --no-cache-dir requests\n",
    )
    .unwrap();
    let build = || kiln_at(&["build", ctx.to_str().unwrap()]);
    let before = build();
    assert!(!before.status.success(), "the prompt fails the original");
    assert!(
        String::from_utf8_lossy(&before.stderr).contains("apt-get: would ask"),
        "{before:?}"
    );
    let (_, _, err) = lint_in(&ctx, &["--fix", "Dockerfile"]);
    for rule in ["KL101", "KL102", "KL104", "KL105", "KL108"] {
        assert!(
            err.contains(&format!(" {rule}: ")),
            "{rule} not fixed: {err}"
        );
    }
    let fixed = fs_err::read_to_string(&dockerfile).unwrap();
    assert!(fixed.contains("# the lists, then the tools\n"), "{fixed}");
    assert!(fixed.contains("\\\n      git\n"), "{fixed}");
    let after = build();
    assert!(
        after.status.success(),
        "the fixed file builds:\n{fixed}\n{}",
        String::from_utf8_lossy(&after.stderr)
    );
    let log = String::from_utf8_lossy(&after.stderr);
    assert!(log.contains("apt-get -y install curl git"), "{log}");
    assert!(
        log.contains("pip --default-timeout=60 install requests"),
        "{log}"
    );
}

/// `kiln lint` reads the Dockerfile's directory as its context (or
/// `--context DIR`): KL110 with the sizes it found, an ignore file that
/// leaves the heavy paths out, BuildKit's CopyIgnoredFile.
#[test]
fn the_context_of_a_dockerfile_is_linted_too() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    let write = |path: &str, bytes: &[u8]| {
        let path = ctx.join(path);
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(path, bytes).unwrap();
    };
    write(
        "Dockerfile",
        b"FROM python:3.12\nWORKDIR /app\nCOPY requirements.txt .\nCOPY . .\n",
    );
    write("requirements.txt", b"flask==3.0.0\n");
    write(".git/objects/pack/pack-1.pack", &vec![7u8; 3 * 1024 * 1024]);
    write("models/tiny.safetensors", &vec![1u8; 2 * 1024 * 1024]);
    write("app/__pycache__/x.pyc", b"small");
    let kl110 = |args: &[&str]| -> (i32, Vec<(u64, String)>) {
        let out = kiln()
            .arg("lint")
            .args(["--format", "json"])
            .args(args)
            .output()
            .unwrap();
        let findings: Value = serde_json::from_slice(&out.stdout).unwrap();
        let got = findings
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["rule"] == "KL110" || f["rule"] == "CopyIgnoredFile")
            .map(|f| {
                (
                    f["line"].as_u64().unwrap(),
                    format!(
                        "{}: {}",
                        f["rule"].as_str().unwrap(),
                        f["message"].as_str().unwrap()
                    ),
                )
            })
            .collect();
        (out.status.code().unwrap(), got)
    };
    let dockerfile = ctx.join("Dockerfile");
    let (code, got) = kl110(&[dockerfile.to_str().unwrap()]);
    assert_eq!(code, 0, "KL110 is a warning");
    let messages: Vec<&str> = got.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(got.len(), 3, "{got:#?}");
    assert_eq!(got[0].0, 3);
    // 3 MiB + 2 MiB + the small files.
    assert!(
        messages[0].starts_with(
            "KL110: no .dockerignore: the build reads a context of 5.0 MiB in 5 files"
        ),
        "{messages:?}"
    );
    assert!(
        messages[1].starts_with("KL110: .git (the git history, 3.0 MiB) is sent by COPY ."),
        "{messages:?}"
    );
    assert!(
        messages[2].starts_with("KL110: models/tiny.safetensors (model weights, 2.0 MiB)"),
        "{messages:?}"
    );
    assert!(got[1..].iter().all(|(l, _)| *l == 4));

    // An ignore file that leaves them out: nothing; copying an ignored
    // file: BuildKit's check.
    write(".dockerignore", b".git\nmodels\nrequirements.txt\n");
    let (_, got) = kl110(&[dockerfile.to_str().unwrap()]);
    assert_eq!(
        got,
        [(
            3,
            "CopyIgnoredFile: Attempting to Copy file \"requirements.txt\" that is excluded by .dockerignore"
                .to_string()
        )]
    );
    // `<Dockerfile>.dockerignore` beside it wins over the context's.
    write("Dockerfile.dockerignore", b".git\n");
    let (_, got) = kl110(&[dockerfile.to_str().unwrap()]);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].1.starts_with("KL110: models/tiny.safetensors"),
        "{got:?}"
    );

    // Standard input has no context unless given one.
    let stdin = fs_err::read_to_string(&dockerfile).unwrap();
    let (_, out, _) = lint(&["--format", "json", "-"], &stdin);
    assert!(!out.contains("KL110"), "{out}");
    let (_, out, _) = lint(
        &["--format", "json", "--context", ctx.to_str().unwrap(), "-"],
        &stdin,
    );
    // Without `Dockerfile.dockerignore` beside standard input, the
    // context's .dockerignore applies.
    assert!(out.contains("CopyIgnoredFile"), "{out}");

    // A context that is not a directory is the file's error.
    let (code, _, err) = lint(&["--context", "/nonexistent/ctx", "-"], &stdin);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/ctx"), "{err}");
}
