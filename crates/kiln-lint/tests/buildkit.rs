//! BuildKit's checks, one by one, and the `# check=` directive. Their
//! agreement with BuildKit's own cases is buildkit_checks.rs.

use kiln_lint::Severity;

fn lines(rule: &str, dockerfile: &str) -> Vec<usize> {
    kiln_lint::lint("Dockerfile", dockerfile.as_bytes())
        .expect("lints")
        .into_iter()
        .filter(|f| f.rule == rule)
        .map(|f| f.line)
        .collect()
}

const CASES: &[(&str, &str, &[usize])] = &[
    (
        "StageNameCasing",
        "FROM a:1 AS Build\nFROM a:1 AS build2\n",
        &[1],
    ),
    (
        "FromAsCasing",
        "FROM a:1 as x\nFROM a:1 AS y\nfrom a:1 as z\n",
        &[1],
    ),
    (
        "ConsistentInstructionCasing",
        "FROM a:1\nrun true\nRUN true\nRUN true\n",
        &[2],
    ),
    (
        "DuplicateStageName",
        "FROM a:1 AS x\nFROM a:1 AS x\nFROM a:1 AS y\n",
        &[2],
    ),
    (
        "ReservedStageName",
        "FROM a:1 AS context\nFROM a:1 AS ctx\n",
        &[1],
    ),
    (
        "JSONArgsRecommended",
        "FROM a:1 AS base\nCMD run it\nENTRYPOINT [\"run\"]\nFROM base\nSHELL [\"/bin/bash\", \"-c\"]\nCMD run it\n",
        &[2],
    ),
    (
        "MaintainerDeprecated",
        "FROM a:1\nMAINTAINER me\nLABEL a=b\n",
        &[2],
    ),
    (
        "UndefinedArgInFrom",
        "ARG TAG=1\nFROM a:$TAG\nFROM a:$TGA\nFROM --platform=$BUILDPLATFORM a:1\n",
        &[3],
    ),
    (
        "WorkdirRelativePath",
        "FROM a:1 AS base\nWORKDIR app\nWORKDIR sub\nFROM base\nWORKDIR more\n",
        &[2],
    ),
    (
        "UndefinedVar",
        "FROM a:1\nARG A\nENV B=$A\nCOPY $C /x\nENV PATH=/x:$PATH\n",
        &[4],
    ),
    (
        "MultipleInstructionsDisallowed",
        "FROM a:1\nCMD [\"a\"]\nCMD [\"b\"]\nENTRYPOINT [\"c\"]\n",
        &[2],
    ),
    (
        "LegacyKeyValueFormat",
        "FROM a:1\nENV A 1\nENV B=2\nLABEL c d\n",
        &[2, 4],
    ),
    (
        "RedundantTargetPlatform",
        "FROM --platform=$TARGETPLATFORM a:1\nFROM --platform=$BUILDPLATFORM a:1\n",
        &[1],
    ),
    (
        "SecretsUsedInArgOrEnv",
        "FROM a:1\nARG GITHUB_TOKEN\nENV DB_PASSWORD=x\nARG PUBLIC_KEY\nENV TOKENIZER=x\n",
        &[2, 3],
    ),
    (
        "InvalidDefaultArgInFrom",
        "ARG IMG\nARG OK=alpine\nFROM $IMG\nFROM $OK\n",
        &[3],
    ),
    (
        "FromPlatformFlagConstDisallowed",
        "FROM --platform=linux/amd64 a:1\nFROM --platform=linux/arm64 a:1 AS build-arm64\n",
        &[1],
    ),
    (
        "ExposeProtoCasing",
        "FROM a:1\nEXPOSE 80/TCP\nEXPOSE 81/udp\n",
        &[2],
    ),
    (
        "ExposeInvalidFormat",
        "FROM a:1\nEXPOSE 127.0.0.1:80:80\nEXPOSE 80\n",
        &[2],
    ),
    (
        "NoEmptyContinuation",
        "FROM a:1\nRUN a \\\n\n  b\nRUN c \\\n  d\n",
        &[4],
    ),
];

#[test]
fn each_check_reports_where_and_only_where_buildkit_does() {
    for (rule, dockerfile, expected) in CASES {
        assert_eq!(
            lines(rule, dockerfile),
            *expected,
            "{rule} on\n{dockerfile}"
        );
    }
}

#[test]
fn checks_see_only_the_stages_the_build_needs_when_dispatching() {
    // Stage `unused` is not built: BuildKit does not dispatch its ENV.
    let df = "FROM a:1 AS unused\nENV A 1\nFROM a:1\nENV B 2\n";
    assert_eq!(lines("LegacyKeyValueFormat", df), [4]);
    // Parsing checks see every stage.
    assert_eq!(
        lines("StageNameCasing", "FROM a:1 AS Unused\nFROM a:1\n"),
        [1]
    );
}

#[test]
fn the_check_directive_skips_experiments_and_errors() {
    let df = "# check=skip=MaintainerDeprecated,StageNameCasing\nFROM a:1 AS X\nMAINTAINER me\nCMD run\n";
    assert!(lines("MaintainerDeprecated", df).is_empty());
    assert!(lines("StageNameCasing", df).is_empty());
    assert_eq!(lines("JSONArgsRecommended", df), [4]);
    assert!(
        lines(
            "JSONArgsRecommended",
            "# check=skip=all\nFROM a:1\nCMD run\n"
        )
        .is_empty()
    );
    // A `# check=` comment above an instruction is for that instruction.
    let df = "FROM a:1\n# check=skip=JSONArgsRecommended\nCMD run\nENTRYPOINT run\n";
    assert_eq!(lines("JSONArgsRecommended", df), [4]);
    // Experimental checks run only when asked for.
    let df = "# bar the bar\nARG foo=1\nFROM a:1\n";
    assert!(lines("InvalidDefinitionDescription", df).is_empty());
    let asked = format!("# check=experimental=InvalidDefinitionDescription\n\n{df}");
    assert_eq!(lines("InvalidDefinitionDescription", &asked), [4]);
    // error=true: BuildKit fails the build, so they are errors.
    let df = "# check=error=true\nFROM a:1\nMAINTAINER me\n";
    let f = kiln_lint::lint("Dockerfile", df.as_bytes()).unwrap();
    let m = f.iter().find(|f| f.rule == "MaintainerDeprecated").unwrap();
    assert_eq!(m.severity, Severity::Error);
    // hadolint's DL4000 on the same line keeps its own level.
    assert_eq!(
        f.iter().find(|f| f.rule == "DL4000").unwrap().severity,
        Severity::Error
    );
    let d = f.iter().find(|f| f.rule == "DL3006");
    assert!(d.is_none());
}
