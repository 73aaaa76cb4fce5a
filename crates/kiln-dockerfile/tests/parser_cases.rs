//! kiln's own golden parser cases: `tests/cases/<case>/Dockerfile` with the
//! expected `ast` (BuildKit's dump format, or `error: ...`) and
//! `commands.json` (what `kiln parse --format json` prints). Every case is
//! also checked against BuildKit's own parser by tests/parser_oracle.rs.
//! `KILN_BLESS=1 cargo test --test parser_cases` rewrites the expectations.

use std::path::{Path, PathBuf};

use fs_err as fs;

fn cases_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cases")
}

fn render(src: &[u8]) -> (String, String) {
    match kiln_dockerfile::parse(src) {
        Ok(ast) => {
            let directives: serde_json::Map<String, serde_json::Value> = ast
                .directives
                .iter()
                .map(|d| (d.name.clone(), d.value.clone().into()))
                .collect();
            let json = serde_json::json!({
                "directives": directives,
                "instructions": ast.command_views(),
                "warnings": ast.warnings.iter().map(|w| w.message.clone()).collect::<Vec<_>>(),
            });
            (
                ast.dump(),
                serde_json::to_string_pretty(&json).unwrap() + "\n",
            )
        }
        Err(e) => (format!("error: {e}\n"), "null\n".to_string()),
    }
}

fn check(path: &Path, got: &str, failures: &mut Vec<String>) {
    if std::env::var("KILN_BLESS").as_deref() == Ok("1") {
        fs::write(path, got).unwrap();
        return;
    }
    match fs::read_to_string(path) {
        Ok(want) if want == got => {}
        Ok(want) => failures.push(format!(
            "{}:\n--- want\n{want}--- got\n{got}",
            path.display()
        )),
        Err(_) => failures.push(format!(
            "{} is missing (run with KILN_BLESS=1)",
            path.display()
        )),
    }
}

#[test]
fn golden_parser_cases() {
    let mut dirs: Vec<PathBuf> = fs::read_dir(cases_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 20, "the cases folder lost cases");
    let mut failures = Vec::new();
    for dir in dirs {
        let src = fs::read(dir.join("Dockerfile")).unwrap();
        let (ast, json) = render(&src);
        check(&dir.join("ast"), &ast, &mut failures);
        check(&dir.join("commands.json"), &json, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
