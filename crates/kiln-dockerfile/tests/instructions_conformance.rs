//! Typed instructions over real Dockerfiles: BuildKit's integration-test
//! Dockerfiles (`buildkit-integration`, with what each test expects) and
//! real-world ones (`real-dockerfiles`), from ../shared/conformance.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use fs_err as fs;
use kiln_dockerfile::instructions::{Command, parse_dockerfile};
use kiln_dockerfile::parse;
use kiln_testkit::need::{Conformance, need};
use serde_json::Value;

/// Error texts BuildKit's integration tests expect that come from reading
/// instructions (this module's job), with where they arise. Every other
/// expected error comes from the build itself (missing files, entitlements,
/// the lowering's own checks such as `invalid chmod parameter` or the
/// `--from` variable check, which need the stage's environment).
const INSTRUCTION_LEVEL: &[(&str, &str)] = &[
    ("unknown instruction: FNTRYPOINT", "parse"),
    ("did you mean ENTRYPOINT?", "parse"),
    ("unknown flag: --mont", "parse"),
    ("did you mean mount?", "parse"),
    (
        "'from' doesn't support variable expansion, define alias stage instead",
        "parse",
    ),
    ("dockerfile contains no stages to build", "parse"),
    // Mount keys are read when the mount is expanded.
    ("unexpected key 'typ'", "expand"),
    ("did you mean type?", "expand"),
    ("unsupported mount type \"tmp\"", "expand"),
    ("did you mean tmpfs?", "expand"),
];

/// Dockerfiles whose extracted text is not what the Go test builds, so
/// reading them proves nothing: the Go source appends to the literal
/// (`"ADD --keep-git-dir " + ...`), or its `%s` stands for whole instruction
/// lines, or the test expects the error inside a lint helper that
/// `meta.json` does not see.
const NOT_AS_BUILT: &[(&str, &str)] = &[
    (
        "dockerfile_addgit_test/testAddGitChecksumCache/Dockerfile",
        "literal continued in Go",
    ),
    (
        "dockerfile_addgit_test/testAddGitChecksumCache/Dockerfile.2",
        "literal continued in Go",
    ),
    (
        "dockerfile_platform_test/testPlatformWithOSVersion/Dockerfile.2",
        "literal continued in Go",
    ),
    (
        "dockerfile_targets_test/testTargetsList/Dockerfile",
        "literal continued in Go",
    ),
    (
        "dockerfile_copy_test/testChmodNonOctal/Dockerfile",
        "%s stands for instruction lines",
    ),
    (
        "dockerfile_heredoc_test/testOnBuildHeredoc/Dockerfile",
        "%s stands for instruction text",
    ),
    (
        "dockerfile_check_test/testWarningsBeforeError/Dockerfile",
        "expects `unknown instruction: BADCMD` (checked with the lint cases)",
    ),
];

/// A Go format string's directives replaced by a plain word, `%%` by `%`.
fn fill_go_format(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'%') {
            chars.next();
            out.push('%');
            continue;
        }
        // `%[1]s`, `%s`, `%d`, `%q`, `%v`: an argument index, then a verb.
        if chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c == ']' {
                    break;
                }
            }
        }
        chars.next();
        out.push_str("placeholder");
    }
    out
}

/// What reading a Dockerfile gives: `Ok` or the error's text, and for the
/// "expand" stage, the first mount that cannot be read in full.
fn read(src: &[u8]) -> (Result<(), String>, Option<String>) {
    let ast = match parse(src) {
        Ok(ast) => ast,
        Err(e) => return (Err(format!("syntax: {e}")), None),
    };
    let dockerfile = match parse_dockerfile(&ast) {
        Ok(d) => d,
        Err(e) => return (Err(e.to_string()), None),
    };
    let mut expand_error = None;
    for stage in &dockerfile.stages {
        for command in &stage.commands {
            // A mount with a variable can only be read once expanded
            // against the stage's environment; the others read the same.
            if let Command::Run(run) = command
                && !run.mount_specs.iter().any(|s| s.contains('$'))
                && let Err(e) = run.mounts_as_written()
                && expand_error.is_none()
            {
                expand_error = Some(e.to_string());
            }
        }
    }
    (Ok(()), expand_error)
}

#[test]
fn buildkit_integration_dockerfiles() {
    let Some(dir) = need(Conformance("buildkit-integration")) else {
        return;
    };
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut expected_elsewhere = Vec::new();
    let mut found_substrings = BTreeSet::new();
    let mut wanted_substrings = BTreeSet::new();
    for file_dir in common::sorted_dirs(&dir) {
        for test_dir in common::sorted_dirs(&file_dir) {
            let meta: Value =
                serde_json::from_str(&fs::read_to_string(test_dir.join("meta.json")).unwrap())
                    .unwrap();
            let expects_error = meta["expects_some_error"].as_bool().unwrap_or(false);
            let substrings: Vec<&str> = meta["error_substrings"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let name = test_dir
                .strip_prefix(&dir)
                .unwrap_or(&test_dir)
                .display()
                .to_string();
            let mut texts = Vec::new();
            for df in meta["dockerfiles"].as_array().unwrap() {
                let file = df["file"].as_str().unwrap();
                let mut src = fs::read_to_string(test_dir.join(file)).unwrap();
                if df["templated_go_fmt"].as_bool().unwrap_or(false) {
                    src = fill_go_format(&src);
                }
                checked += 1;
                let path = format!("{name}/{file}");
                if let Some((_, why)) = NOT_AS_BUILT.iter().find(|(p, _)| *p == path) {
                    eprintln!("not checked: {path}: {why}");
                    continue;
                }
                let (result, expand_error) = read(src.as_bytes());
                match result {
                    Ok(()) => {}
                    Err(e) if expects_error => texts.push(e),
                    Err(e) => failures.push(format!("{name}/{file}: {e}")),
                }
                if let Some(e) = expand_error {
                    if expects_error {
                        texts.push(e);
                    } else {
                        failures.push(format!("{name}/{file} (mount): {e}"));
                    }
                }
            }
            if expects_error {
                for s in &substrings {
                    let ours = INSTRUCTION_LEVEL.iter().any(|(known, _)| known == s);
                    let seen = texts.iter().any(|t| t.contains(s));
                    if ours {
                        wanted_substrings.insert(s.to_string());
                        if seen {
                            found_substrings.insert(s.to_string());
                        }
                    }
                }
                if texts.is_empty() {
                    expected_elsewhere.push(format!("{name} {substrings:?}"));
                } else {
                    eprintln!("errors at instruction level in {name}: {texts:#?}");
                }
            }
        }
    }
    eprintln!(
        "{checked} Dockerfiles read; {} tests expect an error this module does not raise \
         (the build raises it):\n  {}",
        expected_elsewhere.len(),
        expected_elsewhere.join("\n  ")
    );
    assert!(
        checked >= 450,
        "expected the ~480 upstream Dockerfiles, read {checked}"
    );
    assert!(
        failures.is_empty(),
        "{} refused:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let missing: Vec<_> = wanted_substrings.difference(&found_substrings).collect();
    assert!(
        missing.is_empty(),
        "expected errors not raised: {missing:?}"
    );
    assert_eq!(
        wanted_substrings.len(),
        INSTRUCTION_LEVEL.len(),
        "every instruction-level substring should be expected by some test: {wanted_substrings:?}"
    );
}

#[test]
fn real_dockerfiles_all_read() {
    let Some(dir) = need(Conformance("real-dockerfiles")) else {
        return;
    };
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "INDEX.tsv"))
        .collect();
    files.sort();
    let mut failures = Vec::new();
    let mut commands = 0;
    for path in &files {
        let src = fs::read(path).unwrap();
        let ast = match parse(&src) {
            Ok(ast) => ast,
            Err(e) => {
                failures.push(format!("{}: syntax: {e}", name_of(path)));
                continue;
            }
        };
        match parse_dockerfile(&ast) {
            Ok(d) => {
                for stage in &d.stages {
                    commands += stage.commands.len();
                    for command in &stage.commands {
                        if let Command::Run(run) = command
                            && let Err(e) = run.mounts_as_written()
                        {
                            failures.push(format!("{}: {e}", name_of(path)));
                        }
                    }
                }
            }
            Err(e) => failures.push(format!("{}: {e}", name_of(path))),
        }
    }
    eprintln!("{} real Dockerfiles, {commands} commands", files.len());
    assert!(
        files.len() >= 36,
        "expected 36 real Dockerfiles, found {}",
        files.len()
    );
    assert!(failures.is_empty(), "refused:\n{}", failures.join("\n"));
}

/// BuildKit's `docker build --check` cases: their Dockerfiles are valid,
/// except the one that expects `dockerfile parse error on line 4: unknown
/// instruction: BADCMD`, which must read as exactly that.
#[test]
fn lint_case_dockerfiles() {
    let Some(dir) = need(Conformance("buildkit-lint")) else {
        return;
    };
    let text = fs::read_to_string(dir.join("cases.jsonl")).unwrap();
    let mut checked = 0;
    let mut parse_errors = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let case: Value = serde_json::from_str(line).unwrap();
        let Some(src) = case["Dockerfile"].as_str() else {
            continue; // an unresolved Go expression
        };
        let func = case["go_func"].as_str().unwrap_or("?");
        let build_err = case["BuildErr"].as_str();
        checked += 1;
        let ast = parse(src.as_bytes()).unwrap_or_else(|e| panic!("{func}: syntax: {e}"));
        match (parse_dockerfile(&ast), build_err) {
            (Err(e), Some(want)) if want.starts_with("dockerfile parse error") => {
                assert_eq!(e.to_string(), want, "{func}");
                parse_errors += 1;
            }
            (Ok(_), Some(want)) => {
                assert!(
                    !want.starts_with("dockerfile parse error"),
                    "{func}: not refused"
                )
            }
            (Ok(_), None) => {}
            (Err(e), want) => panic!("{func}: refused with {e}, BuildKit: {want:?}"),
        }
    }
    assert!(
        checked >= 87,
        "expected the 87 resolved lint cases, read {checked}"
    );
    assert_eq!(parse_errors, 1);
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
