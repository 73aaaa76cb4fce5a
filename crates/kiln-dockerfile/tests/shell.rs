//! Shell-word expansion against BuildKit's own test tables
//! (`../shared/conformance/shell/`), plus properties and edge cases.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kiln_dockerfile::shell::{Env, EnvCase, ExpandErrorKind, Lex, MAX_NESTING};
use kiln_testkit::need::{Conformance, need};
use proptest::prelude::*;

fn unix() -> Lex {
    Lex::new('\\')
}

fn windows() -> Lex {
    Lex {
        platform: EnvCase::Insensitive,
        ..Lex::new('\\')
    }
}

/// Fail with every collected failure at once.
fn assert_no_failures(what: &str, total: usize, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} of {total} {what} checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{what}: {total} checks passed");
}

// ---------------------------------------------------------------------------
// Conformance tables

#[test]
fn conformance_env_var_test() {
    let Some(dir) = need(Conformance("shell")) else {
        return;
    };
    let text = fs_err::read_to_string(dir.join("envVarTest")).unwrap();
    let env = vec![
        ("PWD".to_owned(), "/home".to_owned()),
        ("SHELL".to_owned(), "bash".to_owned()),
        ("KOREAN".to_owned(), "한국어".to_owned()),
        ("NULL".to_owned(), String::new()),
    ];
    let env_map: BTreeMap<String, String> = env.iter().cloned().collect();
    let mut failures = Vec::new();
    let mut total = 0;
    for (index, line) in text.lines().enumerate() {
        // Comments are recognised before trimming, as upstream does.
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.trim().split('|').collect();
        assert_eq!(fields.len(), 3, "line {}: {line:?}", index + 1);
        let (platform, input, expected) = (fields[0].trim(), fields[1].trim(), fields[2].trim());
        let lexers: &[(&str, Lex)] = match platform {
            "A" => &[("unix", unix()), ("windows", windows())],
            "U" => &[("unix", unix())],
            "W" => &[("windows", windows())],
            other => panic!("line {}: unknown platform {other:?}", index + 1),
        };
        for (name, lex) in lexers {
            for (env_name, got) in [
                ("list", lex.process_word(input, &env)),
                ("map", lex.process_word(input, &env_map)),
            ] {
                total += 1;
                let ok = match (&got, expected) {
                    (Err(_), "error") => true,
                    (Ok(value), _) => value == expected,
                    (Err(_), _) => false,
                };
                if !ok {
                    failures.push(format!(
                        "line {} [{name}, {env_name}] {input:?}: expected {expected:?}, got {got:?}",
                        index + 1
                    ));
                }
            }
        }
    }
    // 226 A rows × 2 lexers + 2 U + 2 W, each against a list and a map.
    assert_eq!(total, (226 * 2 + 4) * 2, "row count changed");
    assert_no_failures("envVarTest", total, &failures);
}

#[test]
fn conformance_words_test() {
    let Some(dir) = need(Conformance("shell")) else {
        return;
    };
    let text = fs_err::read_to_string(dir.join("wordsTest")).unwrap();
    let lex = unix();
    let mut env: Vec<(String, String)> = Vec::new();
    let mut failures = Vec::new();
    let mut total = 0;
    for (index, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(assignment) = line.strip_prefix("ENV ") {
            let assignment = assignment.trim_start_matches(' ');
            let (key, value) = assignment.split_once('=').unwrap_or((assignment, ""));
            env.push((key.to_owned(), value.to_owned()));
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(fields.len(), 2, "line {}: {line:?}", index + 1);
        let input = fields[0].trim();
        // Only left-trimmed: trailing spaces are part of the last word.
        let expected: Vec<&str> = fields[1].trim_start_matches(' ').split(',').collect();
        let env_map: BTreeMap<String, String> = env.iter().cloned().collect();
        for (env_name, got) in [
            ("list", lex.process_words(input, &env)),
            ("map", lex.process_words(input, &env_map)),
        ] {
            total += 1;
            let ok = match &got {
                Ok(words) => words == &expected,
                Err(_) => expected == ["error"],
            };
            if !ok {
                failures.push(format!(
                    "line {} [{env_name}] {input:?}: expected {expected:?}, got {got:?}",
                    index + 1
                ));
            }
        }
    }
    // 24 rows, each against a list and a map.
    assert_eq!(total, 24 * 2, "row count changed");
    assert_no_failures("wordsTest", total, &failures);
}

#[derive(serde::Deserialize)]
struct MatchCase {
    input: String,
    envs: BTreeMap<String, String>,
    expected: Option<String>,
    expected_error: bool,
    #[serde(default)]
    matched: Option<Vec<String>>,
    #[serde(default)]
    unmatched: Option<Vec<String>>,
    #[serde(default)]
    error_contains: Option<String>,
}

fn run_match_cases(file: &str, expected_rows: usize) {
    let Some(dir) = need(Conformance("shell")) else {
        return;
    };
    let text = fs_err::read_to_string(dir.join(file)).unwrap();
    let lex = unix();
    let mut failures = Vec::new();
    let mut total = 0;
    for (index, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        total += 1;
        let case: MatchCase = serde_json::from_str(line).unwrap();
        let got = lex.process_word_with_matches(&case.input, &case.envs);
        let problem = match (&got, case.expected_error) {
            (Err(err), true) => match &case.error_contains {
                Some(needle) if !err.to_string().contains(needle.as_str()) => {
                    Some(format!("error {:?} lacks {needle:?}", err.to_string()))
                }
                _ => None,
            },
            (Err(err), false) => Some(format!("unexpected error: {err}")),
            (Ok(done), true) => Some(format!("expected an error, got {:?}", done.value)),
            (Ok(done), false) => {
                let set = |names: &Option<Vec<String>>| -> Option<BTreeSet<String>> {
                    names.as_ref().map(|n| n.iter().cloned().collect())
                };
                if Some(&done.value) != case.expected.as_ref() {
                    Some(format!(
                        "expected {:?}, got {:?}",
                        case.expected, done.value
                    ))
                } else if set(&case.matched).is_some_and(|m| m != done.matched) {
                    Some(format!(
                        "matched {:?}, expected {:?}",
                        done.matched, case.matched
                    ))
                } else if set(&case.unmatched).is_some_and(|u| u != done.unmatched) {
                    Some(format!(
                        "unmatched {:?}, expected {:?}",
                        done.unmatched, case.unmatched
                    ))
                } else {
                    None
                }
            }
        };
        if let Some(problem) = problem {
            failures.push(format!("line {} {:?}: {problem}", index + 1, case.input));
        }
    }
    assert_eq!(total, expected_rows, "row count changed");
    assert_no_failures(file, total, &failures);
}

#[test]
fn conformance_process_with_matches() {
    run_match_cases("process-with-matches.jsonl", 47);
}

#[test]
fn conformance_process_word_extra() {
    run_match_cases("process-word-extra.jsonl", 9);
}

// ---------------------------------------------------------------------------
// Edge cases

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn word(lex: &Lex, input: &str, pairs: &[(&str, &str)]) -> String {
    lex.process_word(input, &env(pairs))
        .unwrap_or_else(|err| panic!("{input:?}: {err}"))
}

fn words(lex: &Lex, input: &str, pairs: &[(&str, &str)]) -> Vec<String> {
    lex.process_words(input, &env(pairs))
        .unwrap_or_else(|err| panic!("{input:?}: {err}"))
}

fn error(lex: &Lex, input: &str, pairs: &[(&str, &str)]) -> String {
    match lex.process_word(input, &env(pairs)) {
        Ok(value) => panic!("{input:?}: expected an error, got {value:?}"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn backtick_escape() {
    let lex = Lex::new('`');
    assert_eq!(word(&lex, r"C:\dir\$X", &[("X", "x")]), r"C:\dir\x");
    assert_eq!(word(&lex, "`$X", &[("X", "x")]), "$X");
    assert_eq!(word(&lex, "a` b", &[]), "a b");
    assert_eq!(words(&lex, "a` b c", &[]), ["a b", "c"]);
    assert_eq!(word(&lex, r#""a`"b""#, &[]), r#"a"b"#);
    // Inside double quotes, a backslash is ordinary with the backtick escape.
    assert_eq!(word(&lex, r#""a\""#, &[]), "a\\");
}

#[test]
fn escaped_dollar_and_escape_at_end() {
    let lex = unix();
    assert_eq!(word(&lex, r"\$X", &[("X", "x")]), "$X");
    assert_eq!(word(&lex, r"\\$X", &[("X", "x")]), r"\x");
    assert_eq!(word(&lex, r"\${X}", &[("X", "x")]), "${X}");
    assert_eq!(word(&lex, "x\\", &[]), "x");
}

#[test]
fn nested_defaults() {
    let lex = unix();
    assert_eq!(word(&lex, "${A:-${B}}", &[("B", "b")]), "b");
    assert_eq!(word(&lex, "${A:-${B:-c}}", &[]), "c");
    assert_eq!(word(&lex, "${A:-${B:-c}}", &[("A", "a")]), "a");
    assert_eq!(word(&lex, "${A:+[${B}]}", &[("A", "a"), ("B", "b")]), "[b]");
    // Quotes inside the operand are removed.
    assert_eq!(word(&lex, r#"${A:-"x  y"}"#, &[]), "x  y");
}

#[test]
fn default_values_split_into_words() {
    // The operand of `${X:-…}` is spliced unquoted, so its spaces split.
    let lex = unix();
    assert_eq!(words(&lex, "pre${A:-x y}post", &[]), ["prex", "ypost"]);
    assert_eq!(words(&lex, r#""pre${A:-x y}post""#, &[]), ["prex ypost"]);
}

#[test]
fn raw_quotes_and_escapes() {
    let lex = Lex {
        raw_quotes: true,
        ..unix()
    };
    assert_eq!(words(&lex, r#"a"b c"'d e'"#, &[]), [r#"a"b c"'d e'"#]);
    let lex = Lex {
        raw_escapes: true,
        ..unix()
    };
    assert_eq!(word(&lex, r"a\ b\$X", &[("X", "x")]), r"a\ b\$X");
    assert_eq!(words(&lex, r"a\ b c", &[]), [r"a\ b", "c"]);
    // In double quotes a kept escape that escapes nothing comes out twice
    // (lex.go writes it once as raw and once as the literal character).
    assert_eq!(word(&lex, r#""\"$X\t""#, &[("X", "x")]), r#"\"x\\t"#);
}

#[test]
fn skip_unset_env_keeps_references() {
    let lex = Lex {
        skip_unset_env: true,
        ..unix()
    };
    let set = [("S", "s")];
    assert_eq!(word(&lex, "$S $U ${U}", &set), "s $U ${U}");
    assert_eq!(word(&lex, "${U:-a b} ${S:-x}", &set), "${U:-a b} s");
    // The operand is kept as processed, not as written.
    assert_eq!(word(&lex, r#"${U:-"q"$S}"#, &set), "${U:-qs}");
    assert_eq!(word(&lex, "${U:=x}", &set), "${U:=x}");
    assert_eq!(word(&lex, "${U#p} ${U%%p}", &set), "${U#p} ${U%%p}");
    // BuildKit writes a single `/` back for `${U//p/r}`.
    assert_eq!(word(&lex, "${U//p/r}", &set), "${U/p/r}");
    // An unsupported operator on a set variable is still an error.
    assert!(lex.process_word("${S:=x}", &env(&set)).is_err());
}

#[test]
fn heredoc_detection_modes() {
    // heredocsFromLine: RawQuotes + RawEscapes + SkipUnsetEnv.
    let lex = Lex {
        raw_quotes: true,
        raw_escapes: true,
        skip_unset_env: true,
        ..unix()
    };
    assert_eq!(
        words(&lex, r#"cat <<"EOF" >$OUT ${N:-1} \$X"#, &[]),
        [r#"cat"#, r#"<<"EOF""#, ">$OUT", "${N:-1}", r"\$X"]
    );
    // Heredoc name detection: SkipUnsetEnv, quotes processed, then kept.
    let plain = Lex {
        skip_unset_env: true,
        ..unix()
    };
    assert_eq!(words(&plain, r#"<<"E"OF"#, &[]), ["<<EOF"]);
    let raw = Lex {
        raw_quotes: true,
        ..plain
    };
    assert_eq!(words(&raw, r#"<<"E"OF"#, &[]), [r#"<<"E"OF"#]);
    assert_eq!(words(&raw, "<<$NAME", &[]), ["<<$NAME"]);
}

#[test]
fn skip_process_quotes() {
    let lex = Lex {
        skip_process_quotes: true,
        ..unix()
    };
    assert_eq!(word(&lex, r#"'$X' "$X""#, &[("X", "x")]), r#"'x' "x""#);
    assert_eq!(words(&lex, r#""a b""#, &[]), [r#""a"#, r#"b""#]);
}

#[test]
fn error_messages_match_buildkit() {
    let lex = unix();
    assert_eq!(
        error(&lex, "${VAR:?message}", &[]),
        r#"failed to process "${VAR:?message}": VAR: message"#
    );
    assert_eq!(
        error(&lex, "${VAR?}", &[]),
        r#"failed to process "${VAR?}": VAR: is not allowed to be unset"#
    );
    assert_eq!(
        error(&lex, "${VAR:?}", &[("VAR", "")]),
        r#"failed to process "${VAR:?}": VAR: is not allowed to be empty"#
    );
    assert_eq!(
        error(&lex, "${VAR:=x}", &[]),
        r#"failed to process "${VAR:=x}": unsupported modifier (:=) in substitution"#
    );
    assert_eq!(
        error(&lex, "a${VAR", &[]),
        "failed to process \"a${VAR\": unsupported modifier (\u{fffd}) in substitution"
    );
    assert_eq!(
        error(&lex, "${VAR:-x", &[]),
        r#"failed to process "${VAR:-x": syntax error: missing '}'"#
    );
    assert_eq!(
        error(&lex, r#"${VAR:-"x}"#, &[]),
        r#"failed to process "${VAR:-\"x}": syntax error: missing '}'"#
    );
    assert_eq!(
        error(&lex, "${}", &[]),
        r#"failed to process "${}": syntax error: bad substitution"#
    );
    assert_eq!(
        error(&lex, "${V/x", &[]),
        r#"failed to process "${V/x": syntax error: missing '/' in ${}"#
    );
    assert_eq!(
        error(&lex, "'a\tb", &[]),
        r#"failed to process "'a\tb": unexpected end of statement while looking for matching single-quote"#
    );
    assert_eq!(
        error(&lex, r#""ab"#, &[]),
        r#"failed to process "\"ab": unexpected end of statement while looking for matching double-quote"#
    );
    assert_eq!(
        error(&lex, r"${V#\x}", &[]),
        r#"failed to process "${V#\\x}": invalid pattern (\x) in substitution: invalid escape '\x'"#
    );
    // `%` searches from the right by reversing the pattern, and the message
    // shows it reversed.
    assert_eq!(
        error(&lex, r"${V%ab\c}", &[("V", "v")]),
        r#"failed to process "${V%ab\\c}": invalid pattern (\cba) in substitution: invalid escape '\c'"#
    );
    let err = lex.process_word("${A:#x}", &env(&[])).unwrap_err();
    assert_eq!(
        err.kind,
        ExpandErrorKind::UnsupportedModifier {
            modifier: ":#".to_owned()
        }
    );
    assert_eq!(err.word, "${A:#x}");
}

#[test]
fn trim_and_replace_operators() {
    let lex = unix();
    let e = [("P", "/usr/local/bin/tool.tar.gz"), ("S", "aXbXc")];
    assert_eq!(word(&lex, "${P#*/}", &e), "usr/local/bin/tool.tar.gz");
    assert_eq!(word(&lex, "${P##*/}", &e), "tool.tar.gz");
    assert_eq!(word(&lex, "${P%.*}", &e), "/usr/local/bin/tool.tar");
    assert_eq!(word(&lex, "${P%%.*}", &e), "/usr/local/bin/tool");
    assert_eq!(word(&lex, "${S/X/-}", &e), "a-bXc");
    assert_eq!(word(&lex, "${S//X/-}", &e), "a-b-c");
    // Quotes in a pattern are removed before matching, so '*' is a wildcard.
    assert_eq!(word(&lex, "${S#'*'X}", &e), "bXc");
    // Replacing all goes through Go's ReplaceAllString, which expands `$0`
    // in the replacement; an escaped `\$` reaches it (the escape is kept).
    assert_eq!(word(&lex, r"${S//X/<\$0>}", &e), r"a<\X>b<\X>c");
    assert_eq!(word(&lex, r"${S/X/<\$0>}", &e), r"a<\$0>bXc");
    // An unset variable is empty, and a bad pattern is still an error.
    assert_eq!(word(&lex, "${U#x}${U/x/y}", &e), "");
    assert!(lex.process_word(r"${U#\x}", &env(&e)).is_err());
}

#[test]
fn windows_names_ignore_case() {
    let lex = windows();
    let e = [("Path", "C:\\bin"), ("PATH", "D:\\bin")];
    // The last key equal after upper-casing wins.
    assert_eq!(word(&lex, "$path", &e), "D:\\bin");
    let done = lex
        .process_word_with_matches("$path $nope", &env(&e))
        .unwrap();
    assert_eq!(done.matched, BTreeSet::from(["path".to_owned()]));
    assert_eq!(done.unmatched, BTreeSet::from(["nope".to_owned()]));
    assert_eq!(word(&unix(), "$path", &e), "");
}

#[test]
fn env_implementations_agree() {
    let list = env(&[("A", "1"), ("B", "2"), ("A", "3")]);
    let btree: BTreeMap<String, String> = list.iter().cloned().collect();
    let hash: HashMap<String, String> = list.iter().cloned().collect();
    let lex = unix();
    for got in [
        lex.process_word("$A$B$C", &list),
        lex.process_word("$A$B$C", list.as_slice()),
        lex.process_word("$A$B$C", &btree),
        lex.process_word("$A$B$C", &hash),
        lex.process_word("$A$B$C", &[("A", "3"), ("B", "2")]),
    ] {
        assert_eq!(got.unwrap(), "32");
    }
    assert_eq!(list.keys(), ["A", "B", "A"]);
}

#[test]
fn positional_and_special_parameters() {
    let lex = unix();
    let done = lex
        .process_word_with_matches("$10x$@y${#}z$$", &env(&[("10", "ten")]))
        .unwrap();
    assert_eq!(done.value, "tenxyz");
    assert_eq!(
        done.unmatched,
        BTreeSet::from(["@", "#", "$"].map(str::to_owned))
    );
    // A byte order mark at the start is dropped, as Go's text/scanner does.
    assert_eq!(word(&lex, "\u{feff}a\u{feff}", &[]), "a\u{feff}");
}

#[test]
fn empty_quotes_make_no_word() {
    let lex = unix();
    assert_eq!(words(&lex, r#"a "" b"#, &[]), ["a", "b"]);
    assert_eq!(words(&lex, r#""""#, &[]), Vec::<String>::new());
    assert_eq!(words(&lex, "  a  ", &[]), ["a"]);
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let lex = unix();
    let ok = format!(
        "{}x{}",
        "${A:-".repeat(MAX_NESTING),
        "}".repeat(MAX_NESTING)
    );
    assert_eq!(lex.process_word(&ok, &env(&[])).unwrap(), "x");
    let deep = "${A:-".repeat(100_000);
    let err = lex.process_word(&deep, &env(&[])).unwrap_err();
    assert_eq!(err.kind, ExpandErrorKind::TooDeep { limit: MAX_NESTING });
    let deep = format!("{}\"", "\"${A:-".repeat(100_000));
    assert!(lex.process_word(&deep, &env(&[])).is_err());
}

// ---------------------------------------------------------------------------
// Properties

/// Text without anything the lexer treats specially.
fn plain_text() -> impl Strategy<Value = String> {
    "[^$'\"\\\\]*"
}

/// Variable values that are not special inside `${V:-…}` operands either.
fn plain_value() -> impl Strategy<Value = String> {
    "[^$'\"\\\\}]*"
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_]{0,8}"
}

proptest! {
    #[test]
    fn plain_words_expand_to_themselves(text in plain_text()) {
        let expected = text.strip_prefix('\u{feff}').unwrap_or(&text);
        prop_assert_eq!(unix().process_word(&text, &env(&[])).unwrap(), expected);
        prop_assert_eq!(windows().process_word(&text, &env(&[])).unwrap(), expected);
    }

    #[test]
    fn never_panics(text in any::<String>(), value in any::<String>()) {
        let e = env(&[("A", &value), ("B", "")]);
        for lex in [
            unix(),
            windows(),
            Lex::new('`'),
            Lex { raw_quotes: true, raw_escapes: true, skip_unset_env: true, ..unix() },
            Lex { skip_process_quotes: true, ..unix() },
        ] {
            let _ = lex.process_word(&text, &e);
            let _ = lex.process_words(&text, &e);
            let _ = lex.process_word_with_matches(&text, &e);
        }
    }

    #[test]
    fn never_panics_on_shell_like_text(
        text in "([$'\"\\\\{}:#%/?*+=a-cA-C ._-]|\\$\\{|:-|##|%%|//){0,40}",
        value in "[a-c*?\\\\/ ]{0,6}",
    ) {
        let e = env(&[("A", &value), ("a", "x"), ("B", "")]);
        for lex in [unix(), windows(), Lex { skip_unset_env: true, raw_escapes: true, ..unix() }] {
            let _ = lex.process_word(&text, &e);
            let _ = lex.process_words(&text, &e);
        }
    }

    #[test]
    fn default_operator(var in name(), value in proptest::option::of(plain_value()), fallback in plain_value()) {
        let e = match &value {
            Some(value) => env(&[(var.as_str(), value.as_str())]),
            None => env(&[]),
        };
        let got = unix().process_word(&format!("${{{var}:-{fallback}}}"), &e).unwrap();
        let expected = match &value {
            Some(value) if !value.is_empty() => value,
            _ => &fallback,
        };
        prop_assert_eq!(&got, expected);
    }

    #[test]
    fn alternative_operator(var in name(), value in proptest::option::of(plain_value()), alt in plain_value()) {
        let e = match &value {
            Some(value) => env(&[(var.as_str(), value.as_str())]),
            None => env(&[]),
        };
        let got = unix().process_word(&format!("${{{var}+{alt}}}"), &e).unwrap();
        let expected = if value.is_some() { alt.as_str() } else { "" };
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn single_quotes_are_literal(text in "[^']*", prefix in plain_text()) {
        let prefix = prefix.trim_start_matches('\u{feff}');
        let got = unix().process_word(&format!("{prefix}'{text}'"), &env(&[("A", "x")])).unwrap();
        prop_assert_eq!(got, format!("{prefix}{text}"));
    }

    #[test]
    fn values_are_not_re_expanded(value in any::<String>()) {
        let e = env(&[("V", &value)]);
        prop_assert_eq!(&unix().process_word("$V", &e).unwrap(), &value);
        prop_assert_eq!(&unix().process_word("\"${V}\"", &e).unwrap(), &value);
    }

    #[test]
    fn unquoted_values_split_on_white_space(parts in proptest::collection::vec("[a-z]{1,5}", 0..6), sep in "[ \t\n]{1,3}") {
        let value = parts.join(&sep);
        let got = unix().process_words("$V", &env(&[("V", &value)])).unwrap();
        prop_assert_eq!(got, parts);
    }

    #[test]
    fn prefix_and_suffix_trims_recompose(var in name(), head in "[a-z]{0,5}", tail in "[a-z/.]{0,8}") {
        // ${V#head} leaves tail, ${V%tail} leaves head, for literal patterns.
        let value = format!("{head}{tail}");
        let e = env(&[(var.as_str(), value.as_str())]);
        prop_assert_eq!(unix().process_word(&format!("${{{var}#{head}}}"), &e).unwrap(), tail.clone());
        prop_assert_eq!(unix().process_word(&format!("${{{var}%{tail}}}"), &e).unwrap(), head.clone());
    }
}
