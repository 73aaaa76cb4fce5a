//! `.dockerignore` semantics: the upstream vectors (moby/patternmatcher's
//! tests), one test per rule, and properties.

use std::path::{Path, PathBuf};

use kiln_dockerfile::dockerignore::{
    MatchInfo, PatternError, PatternMatcher, clean_path, ignore_file_candidates, read_ignore_file,
};
use kiln_testkit::need::{Conformance, need};
use proptest::prelude::*;

// ---- helpers ----------------------------------------------------------------

fn matcher(patterns: &[&str]) -> PatternMatcher {
    PatternMatcher::new(patterns).unwrap_or_else(|e| panic!("{patterns:?}: {e}"))
}

fn excluded(patterns: &[&str], path: &str) -> bool {
    matcher(patterns)
        .matches_or_parent_matches(path)
        .unwrap_or_else(|e| panic!("{patterns:?} vs {path:?}: {e}"))
}

/// Matches `path` the way upstream's test walks it: each parent directory
/// (from `filepath.Dir`, split at `/`) first, passing its `MatchInfo` on.
fn walked(pm: &PatternMatcher, path: &str) -> Result<bool, PatternError> {
    let mut info = MatchInfo::default();
    if let Some(slash) = path.rfind('/') {
        let parent = clean_path(&path[..=slash]);
        if parent != "." {
            let parts: Vec<&str> = parent.split('/').collect();
            for i in 1..=parts.len() {
                info = pm
                    .matches_using_parent_results(&parts[..i].join("/"), &info)?
                    .1;
            }
        }
    }
    Ok(pm.matches_using_parent_results(path, &info)?.0)
}

/// Every way of asking whether `path` is excluded, which must agree.
fn all_answers(pm: &PatternMatcher, path: &str) -> Result<[bool; 3], PatternError> {
    Ok([
        pm.matches_or_parent_matches(path)?,
        walked(pm, path)?,
        pm.matches_using_parent_results(path, &MatchInfo::default())?
            .0,
    ])
}

/// The data rows of a conformance TSV file (header dropped), split at tabs.
fn tsv_rows(dir: &Path, file: &str) -> Vec<Vec<String>> {
    let text = fs_err::read_to_string(dir.join(file)).expect("read conformance file");
    text.lines()
        .skip(1)
        .filter(|line| !line.is_empty())
        .map(|line| line.split('\t').map(str::to_owned).collect())
        .collect()
}

fn json_patterns(field: &str) -> Vec<String> {
    serde_json::from_str(field).unwrap_or_else(|e| panic!("patterns {field:?}: {e}"))
}

fn assert_no_failures(what: &str, rows: usize, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} of {rows} {what} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---- upstream vectors -------------------------------------------------------

#[test]
fn conformance_single_patterns() {
    let Some(dir) = need(Conformance("dockerignore")) else {
        return;
    };
    let rows = tsv_rows(&dir, "cases.tsv");
    assert_eq!(rows.len(), 110, "cases.tsv rows");
    let mut failures = Vec::new();
    for row in &rows {
        let [pattern, path, expected] = row.as_slice() else {
            failures.push(format!("malformed row {row:?}"));
            continue;
        };
        let want = expected == "true";
        let answers =
            PatternMatcher::new(&[pattern.as_str()]).and_then(|pm| all_answers(&pm, path));
        match answers {
            Ok(got) if got == [want; 3] => {}
            other => failures.push(format!(
                "{pattern:?} vs {path:?}: want {want}, got [or-parent, walked, no-info] {other:?}"
            )),
        }
    }
    assert_no_failures("cases.tsv", rows.len(), &failures);
}

#[test]
fn conformance_pattern_lists() {
    let Some(dir) = need(Conformance("dockerignore")) else {
        return;
    };
    let rows = tsv_rows(&dir, "multi.tsv");
    assert_eq!(rows.len(), 10, "multi.tsv rows");
    let mut failures = Vec::new();
    for row in &rows {
        let [patterns, path, expected, go_test] = row.as_slice() else {
            failures.push(format!("malformed row {row:?}"));
            continue;
        };
        let want = expected == "true";
        let patterns = json_patterns(patterns);
        let answers = PatternMatcher::new(&patterns).and_then(|pm| all_answers(&pm, path));
        match answers {
            Ok(got) if got == [want; 3] => {}
            other => failures.push(format!(
                "{go_test}: {patterns:?} vs {path:?}: want {want}, got {other:?}"
            )),
        }
    }
    assert_no_failures("multi.tsv", rows.len(), &failures);
}

#[test]
fn conformance_errors() {
    let Some(dir) = need(Conformance("dockerignore")) else {
        return;
    };
    let rows = tsv_rows(&dir, "errors.tsv");
    assert_eq!(rows.len(), 18, "errors.tsv rows");
    let mut failures = Vec::new();
    for row in &rows {
        let [patterns, path, stage, go_test] = row.as_slice() else {
            failures.push(format!("malformed row {row:?}"));
            continue;
        };
        let patterns = json_patterns(patterns);
        let built = PatternMatcher::new(&patterns);
        let problem = match (stage.as_str(), built) {
            ("New", Err(_)) => None,
            ("New", Ok(_)) => Some("accepted by new".to_owned()),
            ("match", Err(e)) => Some(format!("rejected by new: {e}")),
            ("match", Ok(pm)) => {
                // Rejected on every attempt, by every way of matching.
                let results = [
                    pm.matches_or_parent_matches(path).err(),
                    pm.matches_or_parent_matches(path).err(),
                    walked(&pm, path).err(),
                    pm.matches_using_parent_results(path, &MatchInfo::default())
                        .err(),
                ];
                results
                    .iter()
                    .any(|e| !matches!(e, Some(PatternError::BadPattern { .. })))
                    .then(|| format!("match results {results:?}"))
            }
            (other, _) => Some(format!("unknown stage {other:?}")),
        };
        if let Some(problem) = problem {
            failures.push(format!(
                "{go_test}: {patterns:?} vs {path:?} ({stage}): {problem}"
            ));
        }
    }
    assert_no_failures("errors.tsv", rows.len(), &failures);
}

#[test]
fn conformance_read_all() {
    let Some(dir) = need(Conformance("dockerignore/ignorefile")) else {
        return;
    };
    let input = fs_err::read_to_string(dir.join("readall-input.dockerignore")).expect("input");
    let expected = fs_err::read_to_string(dir.join("readall-expected.txt")).expect("expected");
    let expected: Vec<&str> = expected.lines().collect();
    assert_eq!(read_ignore_file(&input).expect("read"), expected);
}

// ---- the rules, one by one --------------------------------------------------

#[test]
fn patterns_are_trimmed_and_cleaned_like_paths() {
    for pattern in [
        "docs/",
        "./docs",
        "docs//",
        "  docs  ",
        "x/../docs",
        "docs/.",
    ] {
        let pm = matcher(&[pattern]);
        assert_eq!(pm.patterns()[0].cleaned(), "docs", "{pattern:?}");
        assert!(pm.matches_or_parent_matches("docs/a.md").expect("match"));
        assert!(!pm.matches_or_parent_matches("docsy").expect("match"));
    }
    // Empty patterns are dropped; `!` is split off after cleaning.
    let pm = matcher(&["docs", "", "   ", " !docs/README.md/ "]);
    assert_eq!(pm.patterns().len(), 2);
    assert!(pm.patterns()[1].is_exclusion());
    assert_eq!(pm.patterns()[1].cleaned(), "docs/README.md");
    assert_eq!(pm.patterns()[1].to_string(), "!docs/README.md");
    // Matched paths are not cleaned.
    assert!(!excluded(&["docs"], "./docs"));
}

#[test]
fn leading_slash_is_removed_by_the_ignore_file_reader() {
    let patterns = read_ignore_file("/docs\n!/docs/keep\n! /tmp/x\n/\n").expect("read");
    assert_eq!(patterns, ["docs", "!docs/keep", "!tmp/x", "/"]);
    let pm = PatternMatcher::new(&patterns).expect("patterns");
    assert!(pm.matches_or_parent_matches("docs/a").expect("match"));
    assert!(!pm.matches_or_parent_matches("docs/keep").expect("match"));
    // Given directly to the matcher, a leading `/` stays and matches nothing
    // relative, as upstream.
    assert!(!excluded(&["/docs"], "docs"));
}

#[test]
fn ignore_file_comments_blanks_and_bom() {
    let text = "\u{feff}# comment\n  # not a comment\n\n\t\nbuild/\r\n!  keep  \n!\n";
    assert_eq!(
        read_ignore_file(text).expect("read"),
        ["# not a comment", "build", "!keep", "!"]
    );
    // A lone `!` is kept by the reader and rejected by the matcher.
    assert!(matches!(
        PatternMatcher::new(&["!"]),
        Err(PatternError::IllegalExclusion { .. })
    ));
    // A mark only counts at the very start.
    assert_eq!(
        read_ignore_file("a\n\u{feff}b").expect("read"),
        ["a", "\u{feff}b"]
    );
    assert!(read_ignore_file("").expect("read").is_empty());
}

#[test]
fn ignore_file_quirks_kept_from_upstream() {
    // The reader treats `!` only at the start of a line, the matcher after
    // cleaning: `/!./a` is read as `!./a`, which the matcher takes as an
    // exception for `./a`; `!/` is kept, and the matcher cleans it to the
    // rejected lone `!`.
    assert_eq!(
        read_ignore_file("/!./a\n!/\n").expect("read"),
        ["!./a", "!/"]
    );
    assert!(matches!(
        PatternMatcher::new(&["!/"]),
        Err(PatternError::IllegalExclusion { .. })
    ));
}

#[test]
fn ignore_file_lines_are_limited_like_docker_s() {
    let longest = "a".repeat(64 * 1024 - 1);
    assert_eq!(
        read_ignore_file(&longest).expect("read"),
        [longest.as_str()]
    );
    let too_long = format!("x\n{longest}b\n");
    assert_eq!(
        read_ignore_file(&too_long),
        Err(PatternError::LineTooLong { line: 2 })
    );
    let with_mark = format!("\u{feff}{}", "a".repeat(64 * 1024 - 3));
    assert_eq!(
        read_ignore_file(&with_mark),
        Err(PatternError::LineTooLong { line: 1 })
    );
}

#[test]
fn star_and_question_mark_stay_within_one_directory() {
    assert!(excluded(&["*.log"], "app.log"));
    assert!(!excluded(&["*.log"], "logs/app.log"));
    assert!(excluded(&["*/*.log"], "logs/app.log"));
    assert!(excluded(&["a?c"], "abc"));
    assert!(!excluded(&["a?c"], "a/c"));
}

#[test]
fn double_star_matches_any_number_of_directories() {
    assert!(excluded(&["**/*.pyc"], "x.pyc"));
    assert!(excluded(&["**/*.pyc"], "a/b/c/x.pyc"));
    assert!(excluded(&["**/__pycache__"], "pkg/mod/__pycache__/x"));
    assert!(excluded(&["a/**/b"], "a/b"));
    assert!(excluded(&["a/**/b"], "a/x/y/b"));
    assert!(!excluded(&["a/**/b"], "ab"));
    assert!(excluded(&["data/**"], "data/x/y"));
    assert!(!excluded(&["data/**"], "data"));
    assert!(excluded(&["**"], "anything/at/all"));
}

#[test]
fn classes_escapes_and_regex_characters() {
    assert!(excluded(&["[abc].txt"], "b.txt"));
    assert!(!excluded(&["[^abc].txt"], "b.txt"));
    assert!(excluded(&["[0-9]*"], "7up"));
    assert!(excluded(&[r"\*.txt"], "*.txt"));
    assert!(!excluded(&[r"\*.txt"], "a.txt"));
    assert!(excluded(&["a+b(c).{d}|$"], "a+b(c).{d}|$"));
    assert!(!excluded(&["a.c"], "abc"));
}

#[test]
fn go_regexp_syntax_leaks_through_like_upstream() {
    // An escaped letter reaches Go's regexp as a regexp escape.
    assert!(excluded(&[r"v\d"], "v7"));
    assert!(!excluded(&[r"v\d"], "vd"));
    // A `*` inside a class is read by Go's regexp as `[^/]` plus a `]`.
    assert!(excluded(&["[*]"], "]"));
    assert!(!excluded(&["[*]"], "*"));
    // Unknown escapes and backwards ranges are only found when matching.
    for pattern in [r"a\q", "[z-a]", "[Local-Only]"] {
        let pm = matcher(&[pattern]);
        assert!(
            matches!(
                pm.matches_or_parent_matches("x"),
                Err(PatternError::BadPattern { .. })
            ),
            "{pattern:?}"
        );
    }
}

#[test]
fn exceptions_apply_in_order_and_the_last_match_wins() {
    assert!(!excluded(&["*.md", "!README.md"], "README.md"));
    assert!(excluded(&["*.md", "!README.md"], "CHANGES.md"));
    assert!(excluded(&["!README.md", "*.md"], "README.md"));
    assert!(excluded(&["*.md", "!README.md", "README*"], "README.md"));
    assert!(!excluded(
        &["*", "!src", "src/*.tmp", "!src/keep.tmp"],
        "src/keep.tmp"
    ));
    assert!(excluded(
        &["*", "!src", "src/*.tmp", "!src/keep.tmp"],
        "src/x.tmp"
    ));
    assert!(!excluded(
        &["*", "!src", "src/*.tmp", "!src/keep.tmp"],
        "src/x.rs"
    ));
    assert!(!matcher(&["a", "b"]).exclusions());
    assert!(matcher(&["a", "!b"]).exclusions());
}

#[test]
fn excluded_directories_exclude_everything_below() {
    assert!(excluded(&["node_modules"], "node_modules"));
    assert!(excluded(&["node_modules"], "node_modules/x/y.js"));
    assert!(!excluded(&["node_modules"], "web/node_modules/x.js"));
    assert!(excluded(&["*/node_modules"], "web/node_modules/x.js"));
    assert!(excluded(&["docs/*"], "docs/a/b/c"));
    assert!(excluded(&[".git"], ".git/objects/pack/x"));
}

#[test]
fn exceptions_below_an_excluded_directory() {
    let patterns = ["docs", "!docs/README.md"];
    assert!(excluded(&patterns, "docs/guide.md"));
    assert!(!excluded(&patterns, "docs/README.md"));
    // `docs` itself is excluded, but a walker must still look inside it.
    let pm = matcher(&patterns);
    assert!(pm.matches_or_parent_matches("docs").expect("match"));
    assert!(!pm.can_skip_excluded_dir("docs"));
    // Other excluded directories can still be skipped.
    let pm = matcher(&["docs", "build", "!docs/README.md"]);
    assert!(pm.can_skip_excluded_dir("build"));
    assert!(!pm.can_skip_excluded_dir("docs"));
    // `docsy` is not above `docs/README.md`.
    assert!(matcher(&["docs*", "!docs/README.md"]).can_skip_excluded_dir("docsy"));
    // A trailing `/**` or `/*` does not make an exception a wildcard one.
    assert!(!matcher(&["*", "!web/static/**"]).can_skip_excluded_dir("web"));
    assert!(matcher(&["*", "!web/static/**"]).can_skip_excluded_dir("api"));
    // A wildcard exception can re-include anything, anywhere.
    let pm = matcher(&["build", "!**/*.md"]);
    assert!(!pm.can_skip_excluded_dir("build"));
    assert!(!excluded(&["build", "!**/*.md"], "build/x/notes.md"));
    // Without exceptions every excluded directory can be skipped.
    assert!(matcher(&["build"]).can_skip_excluded_dir("build"));
}

#[test]
fn walking_keeps_what_a_matched_pattern_said_about_a_parent() {
    // Upstream's walk keeps the patterns that matched a directory as matched
    // for everything below it; a pattern skipped for the directory is only
    // tried on the entry itself. Both quirks are reproduced on purpose.
    let pm = matcher(&["a", "!a/b", "a"]);
    assert!(pm.matches_or_parent_matches("a/b/c").expect("match"));
    assert!(!walked(&pm, "a/b/c").expect("walk"));
    // The same tree walked from the top, with the infos a walker would keep.
    let (a, info_a) = pm
        .matches_using_parent_results("a", &MatchInfo::default())
        .expect("a");
    let (ab, info_ab) = pm
        .matches_using_parent_results("a/b", &info_a)
        .expect("a/b");
    let (abc, _) = pm
        .matches_using_parent_results("a/b/c", &info_ab)
        .expect("a/b/c");
    assert_eq!((a, ab, abc), (true, false, false));
}

#[test]
fn match_info_from_another_matcher_is_rejected() {
    let (_, info) = matcher(&["a", "b"])
        .matches_using_parent_results("a", &MatchInfo::default())
        .expect("match");
    assert_eq!(
        matcher(&["a"]).matches_using_parent_results("a/x", &info),
        Err(PatternError::MatchInfoMismatch {
            expected: 1,
            got: 2
        })
    );
}

#[test]
fn errors_name_the_pattern() {
    let err = PatternMatcher::new(&["ok", "  [abc"]).expect_err("unclosed class");
    assert_eq!(err.to_string(), r#"syntax error in pattern "[abc""#);
    let err = PatternMatcher::new(&["! "]).expect_err("lone !");
    assert!(err.to_string().contains(r#""!""#), "{err}");
}

#[test]
fn no_patterns_exclude_nothing() {
    let none: [&str; 0] = [];
    assert!(!excluded(&none, "any/path"));
    assert!(matcher(&none).can_skip_excluded_dir("x"));
}

#[test]
fn dockerfile_specific_ignore_file_comes_first() {
    let candidates =
        ignore_file_candidates(Path::new("ctx/build/Dockerfile.dev"), Path::new("ctx"));
    assert_eq!(
        candidates,
        [
            PathBuf::from("ctx/build/Dockerfile.dev.dockerignore"),
            PathBuf::from("ctx/.dockerignore"),
        ]
    );
    assert_eq!(
        ignore_file_candidates(Path::new("Dockerfile"), Path::new(".")),
        [
            PathBuf::from("Dockerfile.dockerignore"),
            PathBuf::from("./.dockerignore")
        ]
    );
    assert_eq!(
        ignore_file_candidates(Path::new(".."), Path::new("/src")),
        [PathBuf::from("/src/.dockerignore")]
    );
}

// ---- properties -------------------------------------------------------------

/// Pattern text rich in the characters that mean something to the glob
/// syntax, to Go's regexp syntax, or to path cleaning.
fn pattern_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => r#"[ab/.*?\[\]\\!^$(){}|+:\-dpQExz0-9 ]{0,10}"#,
        1 => any::<String>(),
    ]
}

fn path_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[ab/.*?\\[\\]\\\\^$(){}:\\-0-9 ]{0,12}",
        1 => any::<String>(),
    ]
}

/// Pattern text without a leading `!` (after trimming), for inclusions.
fn inclusion_text() -> impl Strategy<Value = String> {
    pattern_text().prop_map(|p| p.trim().trim_start_matches('!').to_owned())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_input_never_panics(
        patterns in prop::collection::vec(pattern_text(), 0..4),
        path in path_text(),
        file in any::<String>(),
    ) {
        let _ = read_ignore_file(&file);
        let _ = clean_path(&path);
        let _ = ignore_file_candidates(Path::new(&path), Path::new(&file));
        if let Ok(pm) = PatternMatcher::new(&patterns) {
            let _ = pm.matches_or_parent_matches(&path);
            let _ = walked(&pm, &path);
            let _ = pm.can_skip_excluded_dir(&path);
            for pattern in pm.patterns() {
                let _ = pattern.to_string();
            }
        }
    }

    /// Walking down to a path agrees with looking at its parents directly
    /// wherever upstream's two functions agree: for one pattern, and for any
    /// list without exceptions (see
    /// `walking_keeps_what_a_matched_pattern_said_about_a_parent` for where
    /// they part).
    #[test]
    fn walking_equals_matching_with_parents(
        single in pattern_text(),
        list in prop::collection::vec(inclusion_text(), 1..4),
        path in path_text(),
    ) {
        for patterns in [vec![single.clone()], list.clone()] {
            let Ok(pm) = PatternMatcher::new(&patterns) else { continue };
            if let (Ok(direct), Ok(walk)) = (pm.matches_or_parent_matches(&path), walked(&pm, &path)) {
                prop_assert_eq!(direct, walk, "{:?} vs {:?}", patterns, path);
            }
        }
    }

    /// The reader emits non-empty, one-line, relative patterns: only the
    /// root `/` itself keeps a leading slash.
    #[test]
    fn read_patterns_are_relative(file in "[a-c/.! #\\n\\r\\t*]{0,40}") {
        for pattern in read_ignore_file(&file).expect("short lines") {
            prop_assert!(!pattern.is_empty());
            prop_assert!(!pattern.contains('\n'));
            prop_assert!(!pattern.starts_with('/') || pattern == "/", "{:?}", pattern);
        }
    }
}
