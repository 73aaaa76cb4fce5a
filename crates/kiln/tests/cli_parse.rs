//! `kiln parse` as a user runs it.

use assert_cmd::Command;
use serde_json::{Value, json};

fn kiln() -> Command {
    Command::cargo_bin("kiln").unwrap()
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    fs_err::write(&path, text).unwrap();
    path
}

#[test]
fn json_has_buildkit_parser_node_shape() {
    let dir = tempfile::tempdir().unwrap();
    let df = write(
        &dir,
        "Dockerfile",
        "# syntax=docker/dockerfile:1\nFROM img AS x\nENV A=1 B=\"two words\"\nENV OLD style value\n\
         RUN --mount=type=cache,target=/root/.cache/pip \\\n    pip install x\nRUN <<EOF\necho hi\nEOF\n\
         ONBUILD RUN echo y\nCMD [\"a\", \"b\"]\n",
    );
    let out = kiln()
        .args(["parse", "--format", "json"])
        .arg(&df)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["directives"], json!({"syntax": "docker/dockerfile:1"}));
    let ins = v["instructions"].as_array().unwrap();
    assert_eq!(ins[0]["value"], json!(["img", "AS", "x"]));
    assert_eq!(ins[1]["value"], json!(["A", "1", "B", "\"two words\""]));
    assert_eq!(ins[2]["value"], json!(["OLD", "style value"]));
    assert_eq!(
        ins[3],
        json!({"cmd": "RUN", "sub_cmd": null, "json": false,
               "original": "RUN --mount=type=cache,target=/root/.cache/pip     pip install x",
               "start_line": 5, "end_line": 6, "flags": ["--mount=type=cache,target=/root/.cache/pip"],
               "value": ["pip install x"], "heredocs": []})
    );
    assert_eq!(
        ins[4]["heredocs"],
        json!([{"name": "EOF", "file_descriptor": 0, "content": "echo hi\n"}])
    );
    assert_eq!(ins[4]["original"], json!("RUN <<EOF\necho hi\nEOF\n"));
    assert_eq!(
        (ins[5]["cmd"].clone(), ins[5]["sub_cmd"].clone()),
        (json!("ONBUILD"), json!("RUN"))
    );
    assert_eq!(
        (ins[6]["json"].clone(), ins[6]["value"].clone()),
        (json!(true), json!(["a", "b"]))
    );
}

#[test]
fn syntax_error_exits_nonzero_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let df = write(
        &dir,
        "Dockerfile",
        "FROM a\n\nCMD [\"echo\", [\"nested\"]]\n",
    );
    for format in ["json", "text"] {
        let out = kiln()
            .args(["parse", "--format", format])
            .arg(&df)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(out.stdout.is_empty(), "nothing printed on failure");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("Dockerfile:3: when using JSON array syntax"),
            "{err}"
        );
        assert!(err.contains(" 3 | CMD [\"echo\", [\"nested\"]]"), "{err}");
    }
}

#[test]
fn text_format_checks_instructions() {
    let dir = tempfile::tempdir().unwrap();
    let df = write(&dir, "Dockerfile", "FROM a\nRUNN echo hi\n");
    // BuildKit's parser accepts any keyword; the JSON view does too.
    kiln()
        .args(["parse", "--format", "json"])
        .arg(&df)
        .assert()
        .success();
    let out = kiln().arg("parse").arg(&df).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Dockerfile:2: unknown instruction: RUNN (did you mean RUN?)"),
        "{err}"
    );
}

#[test]
fn reads_standard_input_and_defaults_to_dockerfile() {
    let out = kiln()
        .args(["parse", "-"])
        .write_stdin("FROM scratch\nCOPY a /b\n")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FROM scratch") && text.contains("COPY a /b"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    write(&dir, "Dockerfile", "FROM busybox\n");
    kiln()
        .arg("parse")
        .current_dir(dir.path())
        .assert()
        .success();
}

#[test]
fn missing_file_names_the_path() {
    let out = kiln()
        .args(["parse", "/no/such/Dockerfile"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/Dockerfile"));
}
