//! BuildKit's own linter cases (../shared/conformance/buildkit-lint,
//! converted from `dockerfile_check_test.go`): for each Dockerfile, kiln
//! reports the same (check, line) warnings as `docker build --check`, but
//! for the check BuildKit can only make while building (the base image's
//! platform, which `kiln build` reports) and the cases that set build
//! arguments or a platform, which kiln lint does not take. A case with a
//! `.dockerignore` is linted with it as its context (CopyIgnoredFile).

use std::collections::BTreeSet;

use kiln_dockerfile::dockerignore::{PatternMatcher, read_ignore_file};
use kiln_lint::{Config, Context, IgnoreFile, Origin, RULES, Severity};
use kiln_testkit::need::{Conformance, need};

/// The check that needs the build: left out of the comparison.
const BUILD_ONLY: &[&str] = &["InvalidBaseImagePlatform"];

#[test]
fn buildkit_checks_agree_with_buildkits_own_cases() {
    let Some(dir) = need(Conformance("buildkit-lint")) else {
        return;
    };
    let text = fs_err::read_to_string(dir.join("cases.jsonl")).unwrap();
    let checks: BTreeSet<&str> = RULES
        .iter()
        .filter(|r| r.origin == Origin::Buildkit)
        .map(|r| r.id)
        .collect();
    let mut compared = 0;
    let mut with_ignore = 0;
    let mut differences = Vec::new();
    for line in text.lines() {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        let name = format!("{}:{}", case["go_func"].as_str().unwrap(), case["go_line"]);
        if case["fully_resolved"] != true || case.get("FrontendAttrs").is_some_and(|a| !a.is_null())
        {
            continue;
        }
        let dockerfile = case["Dockerfile"].as_str().unwrap();
        let context = case["DockerIgnore"].as_str().map(|text| Context {
            ignore: Some(IgnoreFile {
                name: ".dockerignore".into(),
                patterns: PatternMatcher::new(&read_ignore_file(text).unwrap()).unwrap(),
            }),
            ..Context::default()
        });
        with_ignore += usize::from(context.is_some());
        let Ok(findings) = kiln_lint::lint_in_context(
            "Dockerfile",
            dockerfile.as_bytes(),
            &Config::default(),
            context.as_ref(),
        ) else {
            continue;
        };
        compared += 1;
        let got: BTreeSet<(String, u64)> = findings
            .iter()
            .filter(|f| checks.contains(f.rule))
            .map(|f| (f.rule.to_string(), f.line as u64))
            .collect();
        let expected: BTreeSet<(String, u64)> = case["Warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| {
                (
                    w["RuleName"].as_str().unwrap().to_string(),
                    w["Line"].as_u64().unwrap(),
                )
            })
            .filter(|(r, _)| !BUILD_ONLY.contains(&r.as_str()))
            .collect();
        if got != expected {
            differences.push(format!(
                "{name}: kiln {got:?}, BuildKit {expected:?}\n{dockerfile}"
            ));
        }
        // `# check=error=true` makes them errors.
        if dockerfile.contains("error=true") && !expected.is_empty() {
            let levels: BTreeSet<Severity> = findings
                .iter()
                .filter(|f| checks.contains(f.rule))
                .map(|f| f.severity)
                .collect();
            if levels != BTreeSet::from([Severity::Error]) {
                differences.push(format!("{name}: error=true gives {levels:?}"));
            }
        }
    }
    assert!(compared > 60, "only {compared} cases compared");
    assert!(
        with_ignore >= 8,
        "only {with_ignore} cases with a .dockerignore"
    );
    assert!(
        differences.is_empty(),
        "{} cases differ:\n{}",
        differences.len(),
        differences.join("\n---\n")
    );
}
