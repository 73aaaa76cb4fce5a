//! The rules that need more than the Dockerfile: KL110 and BuildKit's
//! CopyIgnoredFile (given a context: its ignore file, its heavy paths),
//! and InvalidBaseImagePlatform (given the platform a base resolved to).

use kiln_dockerfile::dockerignore::{PatternMatcher, read_ignore_file};
use kiln_lint::{Config, Context, HeavyKind, HeavyPath, IgnoreFile, Severity};

const MIB: u64 = 1024 * 1024;

fn ignore(text: &str) -> Option<IgnoreFile> {
    Some(IgnoreFile {
        name: ".dockerignore".into(),
        patterns: PatternMatcher::new(&read_ignore_file(text).unwrap()).unwrap(),
    })
}

fn heavy(path: &str, kind: HeavyKind, bytes: u64) -> HeavyPath {
    HeavyPath {
        path: path.into(),
        kind,
        bytes,
    }
}

/// A context with an ignore file (`.dockerignore` text) or none, and
/// heavy paths.
fn context(ignore_text: Option<&str>, paths: Vec<HeavyPath>) -> Context {
    Context {
        ignore: ignore_text.and_then(ignore),
        heavy: paths,
        files: 120,
        bytes: 7 * MIB,
    }
}

/// The (rule, line, message) findings of `rule`.
fn found(dockerfile: &str, context: &Context, rule: &str) -> Vec<(usize, String)> {
    kiln_lint::lint_in_context(
        "Dockerfile",
        dockerfile.as_bytes(),
        &Config::default(),
        Some(context),
    )
    .unwrap()
    .into_iter()
    .filter(|f| f.rule == rule)
    .map(|f| (f.line, f.message))
    .collect()
}

fn lines(dockerfile: &str, context: &Context, rule: &str) -> Vec<usize> {
    found(dockerfile, context, rule)
        .into_iter()
        .map(|(l, _)| l)
        .collect()
}

#[test]
fn kl110_no_ignore_file_is_reported_at_the_first_read_of_the_context() {
    let none = context(None, Vec::new());
    let got = found(
        "FROM python:3.12\nRUN true\nCOPY requirements.txt .\nCOPY . /app\n",
        &none,
        "KL110",
    );
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, 3);
    assert!(got[0].1.starts_with("no .dockerignore"), "{}", got[0].1);
    assert!(got[0].1.contains("7.0 MiB in 120 files"), "{}", got[0].1);
    // A bind mount of the context reads it too.
    assert_eq!(
        lines(
            "FROM python:3.12\nRUN --mount=type=bind,target=/src make -C /src\n",
            &none,
            "KL110"
        ),
        [2]
    );
    // With an ignore file, even an empty one, or without reading the
    // context (an ADD of a URL, a COPY from a stage), nothing.
    let empty = context(Some(""), Vec::new());
    assert!(lines("FROM python:3.12\nCOPY . /app\n", &empty, "KL110").is_empty());
    assert!(
        lines(
            "FROM python:3.12 AS b\nRUN make\nFROM python:3.12\nCOPY --from=b /out /out\nADD --checksum=sha256:00 https://example.com/x.tgz /x\n",
            &none,
            "KL110"
        )
        .is_empty()
    );
    // A stage the build does not need reads nothing.
    assert!(
        lines(
            "FROM python:3.12 AS unused\nCOPY . /app\nFROM python:3.12\nRUN true\n",
            &none,
            "KL110"
        )
        .is_empty()
    );
    // Without a context, no KL110 at all.
    assert!(
        kiln_lint::lint("Dockerfile", b"FROM python:3.12\nCOPY . /app\n")
            .unwrap()
            .iter()
            .all(|f| f.rule != "KL110")
    );
}

#[test]
fn kl110_heavy_paths_sent_without_being_named() {
    let ctx = context(
        Some("*.log\n"),
        vec![
            heavy(".git", HeavyKind::Git, 45 * MIB),
            heavy("web/node_modules", HeavyKind::NodeModules, 300 * MIB),
            heavy("app/__pycache__", HeavyKind::PyCache, 100 * 1024),
            heavy("models/llama.safetensors", HeavyKind::Weights, 2048 * MIB),
        ],
    );
    let got = found("FROM python:3.12\nWORKDIR /app\nCOPY . .\n", &ctx, "KL110");
    let paths: Vec<&str> = got
        .iter()
        .map(|(_, m)| m.split(' ').next().unwrap())
        .collect();
    // The 100 KiB __pycache__ is below the threshold.
    assert_eq!(
        paths,
        [".git", "web/node_modules", "models/llama.safetensors"],
        "{got:?}"
    );
    assert!(got.iter().all(|(l, _)| *l == 3));
    assert_eq!(
        got[0].1,
        ".git (the git history, 45.0 MiB) is sent by COPY . though no instruction names it; add it to .dockerignore"
    );
    assert!(got[2].1.contains("model weights, 2.0 GiB"), "{}", got[2].1);

    // Sources that reach only part of the context send only that part.
    assert_eq!(
        found("FROM node:22\nCOPY web/ /web\n", &ctx, "KL110")
            .into_iter()
            .map(|(_, m)| m)
            .collect::<Vec<_>>()
            .len(),
        1
    );
    assert!(lines("FROM node:22\nCOPY src/ /src\n", &ctx, "KL110").is_empty());
    // Named: the file itself, a wildcard with a literal part, a directory
    // below the heavy one.
    let named = [
        "COPY models/llama.safetensors /m/",
        "COPY models/*.safetensors /m/",
        "COPY .git/HEAD /head",
    ];
    for copy in named {
        let df = format!("FROM python:3.12\n{copy}\n");
        let got = found(&df, &ctx, "KL110");
        let first = copy.split(' ').nth(1).unwrap();
        assert!(
            got.iter().all(|(_, m)| !m.contains("is sent by")),
            "{copy}: {got:?} ({first})"
        );
    }
    // `COPY models /m` sends the weights without naming them; `COPY * /`
    // names nothing either.
    assert_eq!(
        lines("FROM python:3.12\nCOPY models /m\n", &ctx, "KL110"),
        [2]
    );
    assert_eq!(
        lines("FROM python:3.12\nCOPY * /app/\n", &ctx, "KL110").len(),
        3
    );
    // --exclude leaves them out.
    assert!(
        lines(
            "FROM python:3.12\nCOPY --exclude=.git --exclude=web/node_modules --exclude=*.safetensors --exclude=models . /app\n",
            &ctx,
            "KL110"
        )
        .is_empty()
    );
    // Sources are expanded as the build expands them.
    assert_eq!(
        lines(
            "FROM python:3.12\nARG SRC=.\nCOPY ${SRC} /app\n",
            &ctx,
            "KL110"
        )
        .len(),
        3
    );
    // An ADD and a bind mount send too.
    assert_eq!(
        lines("FROM python:3.12\nADD . /app\n", &ctx, "KL110").len(),
        3
    );
    assert_eq!(
        found(
            "FROM python:3.12\nRUN --mount=type=bind,source=models,target=/m ls /m\n",
            &ctx,
            "KL110"
        ),
        [(
            2,
            "models/llama.safetensors (model weights, 2.0 GiB) is sent by RUN --mount=type=bind,source=models though no instruction names it; add it to .dockerignore".to_string()
        )]
    );
}

#[test]
fn kl110_heavy_kinds_by_name() {
    assert_eq!(HeavyKind::of(".git", true), Some(HeavyKind::Git));
    assert_eq!(HeavyKind::of(".git", false), None);
    assert_eq!(
        HeavyKind::of("node_modules", true),
        Some(HeavyKind::NodeModules)
    );
    assert_eq!(HeavyKind::of("__pycache__", true), Some(HeavyKind::PyCache));
    for weights in [
        "a.safetensors",
        "pytorch_model.bin",
        "m.PT",
        "x.onnx",
        "w.gguf",
    ] {
        assert_eq!(
            HeavyKind::of(weights, false),
            Some(HeavyKind::Weights),
            "{weights}"
        );
    }
    for other in ["bin", ".bin", "model.py", "weights.safetensors.txt"] {
        assert_eq!(HeavyKind::of(other, false), None, "{other}");
    }
    assert_eq!(HeavyKind::of("x.onnx", true), None);
}

#[test]
fn copy_ignored_file_as_buildkit_reports_it() {
    let ctx = context(Some("Dockerfile\n*/tmp/*\nsecrets\n"), Vec::new());
    let got = found(
        "FROM scratch\nCOPY Dockerfile .\nADD ./Dockerfile /windy\nCOPY ./a/tmp/x.txt secrets/key /\nCOPY app.py /\nCOPY --from=busybox /secrets /s\nADD https://example.com/secrets /s\n",
        &ctx,
        "CopyIgnoredFile",
    );
    assert_eq!(
        got,
        [
            (
                2,
                "Attempting to Copy file \"Dockerfile\" that is excluded by .dockerignore".into()
            ),
            (
                3,
                "Attempting to Add file \"Dockerfile\" that is excluded by .dockerignore".into()
            ),
            (
                4,
                "Attempting to Copy file \"a/tmp/x.txt\" that is excluded by .dockerignore".into()
            ),
            (
                4,
                "Attempting to Copy file \"secrets/key\" that is excluded by .dockerignore".into()
            ),
        ]
    );
    // `# check=skip=` and an exception in the ignore file turn it off; the
    // context root counts only for a pattern that excludes all of it.
    assert!(
        lines(
            "# check=skip=CopyIgnoredFile\nFROM scratch\nCOPY Dockerfile .\n",
            &ctx,
            "CopyIgnoredFile"
        )
        .is_empty()
    );
    let with_exception = context(Some("secrets\n!secrets/public\n"), Vec::new());
    assert!(
        lines(
            "FROM scratch\nCOPY secrets/key /\n",
            &with_exception,
            "CopyIgnoredFile"
        )
        .is_empty()
    );
    assert!(lines("FROM scratch\nCOPY . .\n", &ctx, "CopyIgnoredFile").is_empty());
    let all = context(Some("**\n"), Vec::new());
    assert_eq!(
        found("FROM scratch\nCOPY . .\n", &all, "CopyIgnoredFile"),
        [(
            2,
            "Attempting to Copy file \".\" that is excluded by .dockerignore".into()
        )]
    );
    // No ignore file: nothing to check.
    assert!(
        lines(
            "FROM scratch\nCOPY Dockerfile .\n",
            &context(None, Vec::new()),
            "CopyIgnoredFile"
        )
        .is_empty()
    );
}

#[test]
fn invalid_base_image_platform_compares_os_and_architecture() {
    let check = |text: &str, expected, actual| {
        kiln_lint::base_platform_finding(
            "Dockerfile",
            text.as_bytes(),
            &Config::default(),
            "alpine:3.20",
            expected,
            actual,
            2,
        )
    };
    let df = "# syntax=docker/dockerfile:1\nFROM alpine:3.20\n";
    let f = check(df, ("linux", "amd64", ""), ("linux", "arm64", "v8")).unwrap();
    assert_eq!(
        (f.rule, f.line, f.severity, f.message.as_str()),
        (
            "InvalidBaseImagePlatform",
            2,
            Severity::Warning,
            "Base image alpine:3.20 was pulled with platform \"linux/arm64/v8\", expected \"linux/amd64\" for current build"
        )
    );
    // The variant is not compared, as in BuildKit.
    assert!(check(df, ("linux", "arm", "v7"), ("linux", "arm", "v6")).is_none());
    assert!(check(df, ("linux", "amd64", ""), ("linux", "amd64", "")).is_none());
    assert!(check(df, ("linux", "amd64", ""), ("windows", "amd64", "")).is_some());
    // The file's `# check=` directive decides, as for every BuildKit check.
    let skipped = "# check=skip=InvalidBaseImagePlatform\nFROM alpine:3.20\n";
    assert!(check(skipped, ("linux", "amd64", ""), ("linux", "arm64", "")).is_none());
    let errors = "# check=error=true\nFROM alpine:3.20\n";
    assert_eq!(
        check(errors, ("linux", "amd64", ""), ("linux", "arm64", ""))
            .unwrap()
            .severity,
        Severity::Error
    );
}
