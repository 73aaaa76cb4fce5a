//! BuildKit's own parser test vectors (../shared/conformance): AST dumps,
//! rejected files, line numbers, heredoc extraction.

mod common;

use fs_err as fs;
use kiln_dockerfile::{Error, parse, parse_heredoc};
use kiln_testkit::need::{Conformance, need};
use serde_json::Value;

/// Every `buildkit-parser/<case>`: `result` is the AST dump, byte for byte.
#[test]
fn buildkit_parser_cases_dump_identically() {
    let Some(dir) = need(Conformance("buildkit-parser")) else {
        return;
    };
    let mut failures = Vec::new();
    let mut count = 0;
    for entry in common::sorted_dirs(&dir) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        let src = fs::read(entry.join("Dockerfile")).unwrap();
        let want = fs::read_to_string(entry.join("result")).unwrap();
        count += 1;
        match parse(&src) {
            Ok(ast) if ast.dump() == want => {}
            Ok(ast) => failures.push(format!("{name}:\n--- want\n{want}--- got\n{}", ast.dump())),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(count >= 33, "expected the 33 upstream cases, found {count}");
    assert!(
        failures.is_empty(),
        "{} of {count} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn buildkit_negative_cases_are_rejected() {
    let Some(dir) = need(Conformance("buildkit-parser-negative")) else {
        return;
    };
    let dirs = common::sorted_dirs(&dir);
    assert_eq!(dirs.len(), 4);
    for entry in dirs {
        let src = fs::read(entry.join("Dockerfile")).unwrap();
        assert!(parse(&src).is_err(), "{} was accepted", entry.display());
    }
}

#[test]
fn line_numbers_match_buildkit() {
    let Some(dir) = need(Conformance("buildkit-parser-lineinfo")) else {
        return;
    };
    let ast = parse(&fs::read(dir.join("Dockerfile")).unwrap()).unwrap();
    let lines: Vec<(usize, usize)> = ast
        .children
        .iter()
        .map(|n| (n.start_line, n.end_line))
        .collect();
    assert_eq!(lines, vec![(5, 5), (11, 12), (17, 31)]);
}

fn heredoc_json(doc: &kiln_dockerfile::Heredoc) -> Value {
    serde_json::json!({
        "Name": doc.name,
        "Content": doc.content,
        "Expand": doc.expand,
        "Chomp": doc.chomp,
        "FileDescriptor": doc.file_descriptor,
    })
}

#[test]
fn heredocs_extracted_like_buildkit() {
    let Some(dir) = need(Conformance("buildkit-heredoc")) else {
        return;
    };
    let case: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("parse-extracts-heredoc.json")).unwrap())
            .unwrap();
    let src = case["dockerfile"].as_str().unwrap();
    let ast = parse(src.as_bytes()).unwrap();
    let expected = case["expected"].as_array().unwrap();
    let mut failures = Vec::new();
    for (i, want) in expected.iter().enumerate() {
        let node = &ast.children[i + 1];
        let got = if node.heredocs.is_empty() {
            Value::Null
        } else {
            Value::Array(node.heredocs.iter().map(heredoc_json).collect())
        };
        if &got != want {
            failures.push(format!(
                "child {} `{}`: want {want}, got {got}",
                i + 1,
                node.original
            ));
        }
    }
    assert_eq!(ast.children.len(), expected.len() + 1);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn heredoc_helpers_like_buildkit() {
    let Some(dir) = need(Conformance("buildkit-heredoc")) else {
        return;
    };
    let h: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("heredoc-helpers.json")).unwrap())
            .unwrap();
    for word in h["ParseHeredoc_valid_name_EOF"].as_array().unwrap() {
        let word = word.as_str().unwrap();
        let doc = parse_heredoc(word).unwrap_or_else(|e| panic!("{word}: {e}"));
        assert_eq!(doc.map(|d| d.name), Some("EOF".to_string()), "{word}");
    }
    for word in h["ParseHeredoc_invalid_error"].as_array().unwrap() {
        let word = word.as_str().unwrap();
        assert!(parse_heredoc(word).is_err(), "{word} should be an error");
    }
    for word in h["ParseHeredoc_not_heredoc_nil"].as_array().unwrap() {
        let word = word.as_str().unwrap();
        assert_eq!(parse_heredoc(word).unwrap(), None, "{word}");
    }
    for c in h["ChompHeredocContent"].as_array().unwrap() {
        assert_eq!(
            kiln_dockerfile::chomp_heredoc_content(c["input"].as_str().unwrap()),
            c["expected"].as_str().unwrap()
        );
    }
    let json_form = &h["json_form_never_heredoc"];
    let ast = parse(json_form["dockerfile"].as_str().unwrap().as_bytes()).unwrap();
    for node in &ast.children[1..=3] {
        assert!(node.heredocs.is_empty(), "{}", node.original);
    }
    for c in h["heredocsFromLine"].as_array().unwrap() {
        let line = c["line"].as_str().unwrap();
        let names: Vec<String> = match c["heredoc_names"].as_array() {
            Some(a) => a.iter().map(|n| n.as_str().unwrap().to_string()).collect(),
            None => vec![],
        };
        // Terminate each heredoc in order, so the parser reads them all.
        let mut src = format!("{line}\n");
        for n in &names {
            src.push_str(n);
            src.push('\n');
        }
        let ast = parse(src.as_bytes()).unwrap();
        let got: Vec<String> = ast.children[0]
            .heredocs
            .iter()
            .map(|d| d.name.clone())
            .collect();
        assert_eq!(got, names, "{line}");
    }
}

#[test]
fn overlong_line_is_rejected_with_buildkit_message() {
    let mut src = b"FROM x\nRUN ".to_vec();
    src.extend(std::iter::repeat_n(b'a', 65536));
    src.push(b'\n');
    let err = parse(&src).unwrap_err();
    let Error::Parse { message, location } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        message,
        "dockerfile line greater than max allowed size of 65535"
    );
    assert_eq!(location.start_line, 2);
    // One byte shorter (the line with its newline fills the buffer) is fine.
    let mut ok = b"FROM x\n".to_vec();
    ok.extend(std::iter::repeat_n(b'a', 65535));
    ok.push(b'\n');
    assert!(parse(&ok).is_ok());
}
