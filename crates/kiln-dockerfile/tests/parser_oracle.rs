//! kiln's parser against BuildKit's own Go parser, run through its Python
//! binding (PyPI `dockerfile`, BuildKit v0.12.5), on every Dockerfile in the
//! conformance corpus and on thousands of generated ones.
//!
//! The oracle is found through `KILN_DOCKERFILE_ORACLE` (a Python with the
//! `dockerfile` package; `scripts/test` installs one), else `python3` if it
//! has the package; without it the tests skip, by kiln-testkit's rule
//! (`kiln_testkit::need`: a failure under `CI=true`).
//!
//! Known, deliberate differences from v0.12.5, where kiln follows current
//! BuildKit (whose parser test vectors it passes):
//! - blanks between `<<` and a heredoc name (`RUN << EOF`) make a heredoc;
//! - `# check=...` is a parser directive, so a later `# escape=` still is one;
//! - text after an exec-form JSON array makes the line shell form
//!   (`json.Unmarshal`; v0.12.5 decoded the first value and ignored the rest);
//! - the keyword is reported upper-cased (`cmd`, `sub_cmd`).
//!
//! Inputs touching those are counted, not compared. So are the binding's own
//! limits: it passes strings as C strings (a NUL ends them) and cannot return
//! strings that are not UTF-8.

mod common;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use fs_err as fs;
use kiln_testkit::need::{Conformance, Oracle, need};
use serde_json::Value;

/// Runs the oracle on a batch of Dockerfiles.
fn oracle(python: &PathBuf, texts: &[String]) -> Vec<Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/buildkit_parse.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the oracle");
    let input = serde_json::to_vec(texts).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "oracle failed");
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

/// kiln's answer in the oracle's shape.
fn kiln(text: &str) -> Value {
    match kiln_dockerfile::parse(text.as_bytes()) {
        Ok(ast) => serde_json::json!({ "ok": ast.command_views() }),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    }
}

/// Brings an oracle answer to kiln's conventions (upper-case keywords).
fn normalise(mut v: Value) -> Value {
    if let Some(cmds) = v.get_mut("ok").and_then(Value::as_array_mut) {
        for c in cmds {
            for key in ["cmd", "sub_cmd"] {
                if let Some(s) = c[key].as_str() {
                    c[key] = Value::String(s.to_uppercase());
                }
            }
        }
    }
    v
}

/// The binding hands strings over as C strings: each ends at its first NUL.
fn truncate_at_nul(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(s.split('\0').next().unwrap_or("").to_string()),
        Value::Array(a) => Value::Array(a.into_iter().map(truncate_at_nul).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (k, truncate_at_nul(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Where kiln follows current BuildKit rather than v0.12.5 (module doc).
fn known_version_difference(text: &str) -> bool {
    let blank_after_heredoc_marker = text.match_indices("<<").any(|(i, _)| {
        let rest = text[i + 2..].trim_start_matches('-');
        // A blank, or a line continuation that joins one in.
        rest.starts_with(char::is_whitespace) || rest.starts_with(['\\', '`'])
    });
    let check_directive = text
        .lines()
        .take_while(|l| l.trim_start().starts_with('#'))
        .any(|l| {
            l.trim_start()
                .trim_start_matches('#')
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("check")
        });
    let text_after_json_array = text.lines().any(|l| {
        l.contains('[')
            && l.match_indices(']')
                .any(|(i, _)| !l[i + 1..].trim_matches(char::is_whitespace).is_empty())
    });
    blank_after_heredoc_marker || check_directive || text_after_json_array
}

/// Compares; returns a description of each disagreement. Errors only need
/// to agree on being errors (the messages carry different line details).
fn compare(texts: &[String], answers: &[Value]) -> (Vec<String>, usize) {
    let mut failures = Vec::new();
    let mut masked = 0;
    for (text, want) in texts.iter().zip(answers) {
        if want.get("undecodable").is_some() {
            masked += 1;
            continue;
        }
        let want = normalise(want.clone());
        let got = truncate_at_nul(kiln(text));
        let same = match (want.get("ok"), got.get("ok")) {
            (Some(a), Some(b)) => a == b,
            (None, None) => true,
            _ => false,
        };
        if same {
            continue;
        }
        if known_version_difference(text) {
            masked += 1;
            continue;
        }
        failures.push(format!(
            "input {:?}\n  buildkit: {}\n  kiln:     {}",
            text,
            serde_json::to_string(&want).unwrap(),
            serde_json::to_string(&got).unwrap()
        ));
    }
    (failures, masked)
}

fn report(what: &str, total: usize, (failures, masked): (Vec<String>, usize)) {
    eprintln!(
        "{what}: {total} Dockerfiles, {} differ, {masked} not compared (known version differences, oracle limits)",
        failures.len()
    );
    let shown: Vec<&String> = failures.iter().take(25).collect();
    assert!(
        failures.is_empty(),
        "{} of {total} differ from BuildKit:\n{}",
        failures.len(),
        shown
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Every Dockerfile of the conformance vectors and of kiln's own cases;
/// `None` (the test skips) without the vectors.
fn corpus() -> Option<Vec<String>> {
    let parser = need(Conformance("buildkit-parser"))?;
    let negative = need(Conformance("buildkit-parser-negative"))?;
    let lineinfo = need(Conformance("buildkit-parser-lineinfo"))?;
    let real = need(Conformance("real-dockerfiles"))?;
    let integration = need(Conformance("buildkit-integration"))?;
    let mut texts = Vec::new();
    let mut add_file = |p: PathBuf| {
        if let Ok(bytes) = fs::read(&p) {
            texts.push(String::from_utf8_lossy(&bytes).into_owned());
        }
    };
    for dir in [parser, negative] {
        for case in common::sorted_dirs(&dir) {
            add_file(case.join("Dockerfile"));
        }
    }
    let own_cases = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    for case in common::sorted_dirs(&own_cases) {
        add_file(case.join("Dockerfile"));
    }
    add_file(lineinfo.join("Dockerfile"));
    let mut files: Vec<PathBuf> = fs::read_dir(&real)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files
        .into_iter()
        .filter(|f| f.extension().is_none_or(|e| e != "tsv"))
    {
        add_file(f);
    }
    for test in common::sorted_dirs(&integration) {
        let mut files: Vec<PathBuf> = fs::read_dir(&test)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files.into_iter().filter(|f| {
            f.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("Dockerfile"))
        }) {
            add_file(f);
        }
    }
    Some(texts)
}

#[test]
fn corpus_parses_like_buildkit() {
    let Some(python) = need(Oracle) else {
        return;
    };
    let Some(texts) = corpus() else {
        return;
    };
    let answers = oracle(&python, &texts);
    report("corpus", texts.len(), compare(&texts, &answers));
}

#[test]
fn generated_dockerfiles_parse_like_buildkit() {
    let Some(python) = need(Oracle) else {
        return;
    };
    let count: usize = std::env::var("KILN_ORACLE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let seed: u64 = std::env::var("KILN_ORACLE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6b696c6e);
    let mut rng = common::Rng::new(seed);
    let texts: Vec<String> = (0..count)
        .map(|_| common::gen_dockerfile(&mut rng))
        .collect();
    let answers = oracle(&python, &texts);
    report(
        &format!("generated (seed {seed})"),
        texts.len(),
        compare(&texts, &answers),
    );
}
