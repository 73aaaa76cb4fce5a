//! hadolint 2.15.1 as the oracle of kiln's DL rules: over every real-world
//! Dockerfile of ../shared/conformance and every Unix one of BuildKit's
//! integration tests, kiln reports the same (rule, line) findings as
//! hadolint for each DL rule kiln implements, but for the differences
//! listed in [`KNOWN`] (each explained in docs/LINT.md).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_lint::{Origin, RULES};
use kiln_testkit::need::{Conformance, Hadolint, need};

/// Known differences: (file name ending, rule, line, who reports it).
/// Each is a place where kiln reads the Dockerfile as BuildKit does and
/// hadolint's parser does not (docs/LINT.md, "Differences from hadolint").
const KNOWN: &[(&str, &str, usize, Who)] = &[
    // PowerShell RUNs: ShellCheck cannot parse them, so hadolint counts
    // no command in them; kiln counts the commands its splitter finds.
    (
        "moby__moby__Dockerfile.windows",
        "DL3059",
        276,
        Who::OnlyHadolint,
    ),
    (
        "moby__moby__Dockerfile.windows",
        "DL3059",
        290,
        Who::OnlyHadolint,
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)]
enum Who {
    OnlyKiln,
    OnlyHadolint,
}

type Findings = BTreeSet<(String, usize)>;

fn files(real: &Path, integration: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs_err::read_dir(real)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n != "INDEX.tsv" && n != "README.md")
        })
        .collect();
    let mut stack = vec![integration.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs_err::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                stack.push(path);
            } else if name.starts_with("Dockerfile") && !name.contains("windows") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// hadolint's DL findings per file (files hadolint cannot parse, DL1000,
/// are left out), run with an empty configuration from an empty directory.
fn hadolint(program: &Path, files: &[PathBuf]) -> BTreeMap<PathBuf, Findings> {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("empty.yaml");
    fs_err::write(&config, "{}\n").unwrap();
    let mut out: BTreeMap<PathBuf, Findings> =
        files.iter().map(|f| (f.clone(), Findings::new())).collect();
    let mut unparsed = BTreeSet::new();
    for chunk in files.chunks(64) {
        let output = Command::new(program)
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .args(["--no-fail", "--format", "json", "--config"])
            .arg(&config)
            .args(chunk)
            .output()
            .unwrap();
        let findings: serde_json::Value =
            serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
                panic!(
                    "hadolint's output: {e}: {}",
                    String::from_utf8_lossy(&output.stderr)
                )
            });
        for f in findings.as_array().unwrap() {
            let file = PathBuf::from(f["file"].as_str().unwrap());
            let code = f["code"].as_str().unwrap().to_string();
            if code == "DL1000" {
                unparsed.insert(file.clone());
            }
            if code.starts_with("DL") {
                let line = f["line"].as_u64().unwrap() as usize;
                out.get_mut(&file).unwrap().insert((code, line));
            }
        }
    }
    out.retain(|f, _| !unparsed.contains(f));
    out
}

#[test]
fn dl_rules_agree_with_hadolint_on_real_dockerfiles() {
    let Some(real) = need(Conformance("real-dockerfiles")) else {
        return;
    };
    let Some(integration) = need(Conformance("buildkit-integration")) else {
        return;
    };
    let Some(program) = need(Hadolint) else {
        return;
    };
    let implemented: BTreeSet<&str> = RULES
        .iter()
        .filter(|r| r.origin == Origin::Hadolint && r.on_by_default)
        .map(|r| r.id)
        .collect();
    let files = files(&real, &integration);
    let oracle = hadolint(&program, &files);
    assert!(
        oracle.len() > 300,
        "hadolint read only {} files",
        oracle.len()
    );
    let mut compared = 0;
    let mut findings = 0;
    let mut differences = Vec::new();
    let mut known_seen = BTreeSet::new();
    for (file, expected) in &oracle {
        let text = fs_err::read(file).unwrap();
        // A file BuildKit refuses (some integration tests expect an
        // error) is not linted by kiln either.
        let Ok(got) = kiln_lint::lint(&file.display().to_string(), &text) else {
            continue;
        };
        compared += 1;
        let got: Findings = got
            .into_iter()
            .filter(|f| f.rule.starts_with("DL"))
            .map(|f| (f.rule.to_string(), f.line))
            .collect();
        let expected: Findings = expected
            .iter()
            .filter(|(code, _)| implemented.contains(code.as_str()))
            .cloned()
            .collect();
        findings += expected.len();
        let name = file.display().to_string();
        let known = |rule: &str, line: usize, who: Who| {
            KNOWN
                .iter()
                .position(|k| name.ends_with(k.0) && k.1 == rule && k.2 == line && k.3 == who)
        };
        for (rule, line) in got.difference(&expected) {
            match known(rule, *line, Who::OnlyKiln) {
                Some(k) => {
                    known_seen.insert(k);
                }
                None => differences.push(format!("{name}:{line} {rule}: only kiln reports it")),
            }
        }
        for (rule, line) in expected.difference(&got) {
            match known(rule, *line, Who::OnlyHadolint) {
                Some(k) => {
                    known_seen.insert(k);
                }
                None => differences.push(format!("{name}:{line} {rule}: only hadolint reports it")),
            }
        }
    }
    assert!(compared > 300, "only {compared} files compared");
    assert!(findings > 300, "only {findings} hadolint findings compared");
    assert!(
        differences.is_empty(),
        "{} differences from hadolint 2.15.1:\n{}",
        differences.len(),
        differences.join("\n")
    );
    let stale: Vec<_> = (0..KNOWN.len())
        .filter(|k| !known_seen.contains(k))
        .map(|k| KNOWN[k])
        .collect();
    assert!(
        stale.is_empty(),
        "known differences that no longer occur: {stale:?}"
    );
}
