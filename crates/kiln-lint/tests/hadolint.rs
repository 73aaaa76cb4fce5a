//! hadolint's rules, one by one: where each reports (the line its
//! instruction starts on) and what it leaves alone. Their agreement with
//! hadolint itself on real Dockerfiles is hadolint_oracle.rs.

use kiln_lint::{Config, Severity};

/// The lines where `rule` reports in `dockerfile`.
fn lines(rule: &str, dockerfile: &str) -> Vec<usize> {
    lines_with(rule, dockerfile, &Config::default())
}

fn lines_with(rule: &str, dockerfile: &str, config: &Config) -> Vec<usize> {
    kiln_lint::lint_with("Dockerfile", dockerfile.as_bytes(), config)
        .expect("lints")
        .into_iter()
        .filter(|f| f.rule == rule)
        .map(|f| f.line)
        .collect()
}

/// (rule, Dockerfile, the lines it reports): each rule with at least one
/// case that reports and one that does not.
const CASES: &[(&str, &str, &[usize])] = &[
    (
        "DL3000",
        "FROM a:1\nWORKDIR app\nWORKDIR /app\nWORKDIR $HOME\nWORKDIR C:\\\\x\n",
        &[2],
    ),
    ("DL3001", "FROM a:1\nRUN ps aux\nRUN echo ps\n", &[2]),
    (
        "DL3002",
        "FROM a:1\nUSER root\nFROM b:1\nUSER root\nUSER app\n",
        &[2],
    ),
    (
        "DL3003",
        "FROM a:1\nRUN cd /x && make\nRUN sh -c 'cd /x'\n",
        &[2],
    ),
    ("DL3004", "FROM a:1\nRUN sudo \\\n  make\nRUN make\n", &[2]),
    (
        "DL3006",
        "FROM debian AS base\nFROM base\nFROM debian:12\nFROM $IMG\nFROM scratch\nFROM a@sha256:00\n",
        &[1],
    ),
    (
        "DL3007",
        "FROM debian:latest\nFROM debian:12\nFROM debian:latest@sha256:00\n",
        &[1],
    ),
    (
        "DL3008",
        "FROM a:1\nRUN apt-get install -y curl\nRUN apt-get install -y curl=7.0 ./x.deb\nRUN sudo apt-get install -y curl\n",
        &[2],
    ),
    (
        "DL3009",
        "FROM a:1\nRUN apt-get update && apt-get install -y x\nRUN apt-get update && rm -rf /var/lib/apt/lists/*\nRUN --mount=type=cache,target=/var/lib/apt/lists apt-get update\n",
        &[2],
    ),
    (
        "DL3009",
        "FROM a:1 AS unused\nRUN apt-get update\nFROM b:1\nRUN true\n",
        &[],
    ),
    (
        "DL3010",
        "FROM a:1\nCOPY app.tar.gz /tmp/\nRUN tar -xzf /tmp/app.tar.gz\nCOPY b.tgz /b.tgz\n",
        &[2],
    ),
    (
        "DL3011",
        "FROM a:1\nEXPOSE 80 70000\nEXPOSE 8080/tcp\n",
        &[2],
    ),
    (
        "DL3012",
        "FROM a:1\nHEALTHCHECK CMD [\"a\"]\nHEALTHCHECK NONE\nFROM b:1\nHEALTHCHECK NONE\n",
        &[3],
    ),
    (
        "DL3013",
        "FROM a:1\nRUN pip install flask\nRUN pip install flask==3.0 -r r.txt\nRUN pip install 'flask>=3'\nRUN python -m pip install ./pkg\n",
        &[2],
    ),
    (
        "DL3014",
        "FROM a:1\nRUN apt-get install curl\nRUN apt-get -qq install curl\nRUN apt-get install --yes curl\n",
        &[2],
    ),
    (
        "DL3015",
        "FROM a:1\nRUN apt-get install -y curl\nRUN apt-get install -y --no-install-recommends curl\n",
        &[2],
    ),
    (
        "DL3016",
        "FROM a:1\nRUN npm install express\nRUN npm install express@4 @scope/x@1 ./local\nRUN npm install\n",
        &[2],
    ),
    (
        "DL3018",
        "FROM a:1\nRUN apk add curl\nRUN apk add --no-cache curl=8.0-r0 -t .deps\n",
        &[2],
    ),
    (
        "DL3019",
        "FROM a:1\nRUN apk add curl=8\nRUN apk add --no-cache curl=8\nRUN --mount=type=cache,target=/var/cache/apk apk add curl=8\n",
        &[2],
    ),
    (
        "DL3020",
        "FROM a:1\nADD app /app\nADD app.tar.gz /app\nADD https://x/y /y\n",
        &[2],
    ),
    (
        "DL3021",
        "FROM a:1\nCOPY a b /dest\nCOPY a b /dest/\nCOPY a /dest\n",
        &[2],
    ),
    (
        "DL3022",
        "FROM a:1 AS build\nFROM b:1\nCOPY --from=biuld /x /x\nCOPY --from=build /x /x\nCOPY --from=0 /x /x\nCOPY --from=img:1 /x /x\n",
        &[3],
    ),
    (
        "DL3023",
        "FROM a:1 AS build\nCOPY --from=build /x /x\nFROM b:1\nCOPY --from=build /x /x\n",
        &[2],
    ),
    (
        "DL3024",
        "FROM a:1 AS x\nFROM b:1 AS x\nFROM c:1 AS y\n",
        &[2],
    ),
    (
        "DL3025",
        "FROM a:1\nCMD run it\nENTRYPOINT [\"run\"]\nHEALTHCHECK CMD curl x\n",
        &[2, 4],
    ),
    (
        "DL3027",
        "FROM a:1\nRUN apt install x\nRUN apt-get install -y x\n",
        &[2],
    ),
    (
        "DL3028",
        "FROM a:1\nRUN gem install rails\nRUN gem install rails:7.1\nRUN gem install rails -v 7.1\n",
        &[2],
    ),
    (
        "DL3029",
        "FROM --platform=linux/amd64 a:1\nFROM --platform=$BUILDPLATFORM a:1\n",
        &[1],
    ),
    (
        "DL3030",
        "FROM a:1\nRUN yum install x-1.0 && yum clean all\nRUN yum install -y x-1.0 && yum clean all\n",
        &[2],
    ),
    (
        "DL3032",
        "FROM a:1\nRUN yum install -y x-1.0\nRUN yum install -y x-1.0 && yum clean all\n",
        &[2],
    ),
    (
        "DL3033",
        "FROM a:1\nRUN yum install -y x && yum clean all\nRUN yum install -y x-1.0.2 && yum clean all\n",
        &[2],
    ),
    (
        "DL3034",
        "FROM a:1\nRUN zypper install x=1 && zypper clean\nRUN zypper -n install x=1 && zypper clean\n",
        &[2],
    ),
    (
        "DL3035",
        "FROM a:1\nRUN zypper dist-upgrade\nRUN zypper refresh\n",
        &[2],
    ),
    (
        "DL3036",
        "FROM a:1\nRUN zypper -n install x=1\nRUN zypper -n install x=1 && zypper clean\n",
        &[2],
    ),
    (
        "DL3037",
        "FROM a:1\nRUN zypper -n install x && zypper clean\nRUN zypper -n install x=1 && zypper clean\n",
        &[2],
    ),
    (
        "DL3038",
        "FROM a:1\nRUN dnf install x-1.0 && dnf clean all\nRUN dnf install -y x-1.0 && dnf clean all\n",
        &[2],
    ),
    (
        "DL3040",
        "FROM a:1\nRUN dnf install -y x-1.0\nRUN dnf install -y x-1.0 && dnf clean all\n",
        &[2],
    ),
    (
        "DL3041",
        "FROM a:1\nRUN dnf install -y x && dnf clean all\nRUN dnf install -y x-1.0 && dnf clean all\n",
        &[2],
    ),
    (
        "DL3042",
        "FROM a:1\nRUN pip install x==1\nRUN pip install --no-cache-dir x==1\nRUN PIP_NO_CACHE_DIR=1 pip install x==1\n",
        &[2],
    ),
    (
        "DL3042",
        "FROM a:1\nENV PIP_NO_CACHE_DIR=true\nRUN pip install x==1\n",
        &[],
    ),
    ("DL3044", "FROM a:1\nENV A=1 B=$A\nENV C=$A\n", &[2]),
    (
        "DL3045",
        "FROM a:1\nCOPY x y\nWORKDIR /app\nCOPY x y\nFROM b:1\nCOPY x /y\n",
        &[2],
    ),
    (
        "DL3046",
        "FROM a:1\nRUN useradd -u 123456 app\nRUN useradd -l -u 123456 app\nRUN useradd -u 1000 app\n",
        &[2],
    ),
    (
        "DL3047",
        "FROM a:1\nRUN wget https://x\nRUN wget -q https://x\nRUN wget --progress=dot:giga https://x\n",
        &[2],
    ),
    (
        "DL3048",
        "FROM a:1\nLABEL Maintainer=x\nLABEL org.opencontainers.image.title=x\n",
        &[2],
    ),
    (
        "DL3059",
        "FROM a:1\nRUN a\nRUN b\nRUN c && d\nRUN e\nENV X=1\nRUN f\n",
        &[3],
    ),
    (
        "DL3060",
        "FROM a:1\nRUN yarn install\nRUN yarn install && yarn cache clean\n",
        &[2],
    ),
    (
        "DL3062",
        "FROM a:1\nRUN go install example.com/x@latest\nRUN go install example.com/x@v1.2.0\nRUN go install ./cmd/x\n",
        &[2],
    ),
    ("DL3063", "FROM a:1 AS scratch\nFROM a:1 AS base\n", &[1]),
    (
        "DL3064",
        "FROM a:1\nARG GITHUB_TOKEN\nENV DB_PASSWORD=x\nARG VERSION\n",
        &[2, 3],
    ),
    (
        "DL3065",
        "FROM --platform=$TARGETPLATFORM a:1\nFROM --platform=$BUILDPLATFORM a:1\n",
        &[1],
    ),
    (
        "DL3066",
        "FROM a:1\nUSER app\nUSER 1000:1000\nARG UID\nUSER $UID\n",
        &[2],
    ),
    (
        "DL3067",
        "FROM a:1 AS b\nFROM scratch\nCOPY --from=b / /\nCOPY --from=b /app /\n",
        &[3],
    ),
    ("DL4000", "FROM a:1\nMAINTAINER me\n", &[2]),
    (
        "DL4001",
        "FROM a:1\nRUN curl -o x https://x\nRUN wget -q https://y\nFROM b:1\nRUN wget -q https://z\n",
        &[3],
    ),
    (
        "DL4003",
        "FROM a:1\nCMD [\"a\"]\nCMD [\"b\"]\nFROM b:1\nCMD [\"c\"]\n",
        &[3],
    ),
    (
        "DL4004",
        "FROM a:1\nENTRYPOINT [\"a\"]\nENTRYPOINT [\"b\"]\n",
        &[3],
    ),
    (
        "DL4005",
        "FROM a:1\nRUN ln -sf /bin/bash /bin/sh\nRUN ln -s a b\n",
        &[2],
    ),
    (
        "DL4006",
        "FROM a:1\nRUN a | b\nSHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]\nRUN a | b\nFROM b:1\nRUN a || b\n",
        &[2],
    ),
];

#[test]
fn each_dl_rule_reports_where_and_only_where_hadolint_does() {
    for (rule, dockerfile, expected) in CASES {
        assert_eq!(
            lines(rule, dockerfile),
            *expected,
            "{rule} on\n{dockerfile}"
        );
    }
}

#[test]
fn continuation_and_heredoc_runs_report_at_the_instructions_line() {
    let df = "FROM a:1\nRUN echo \\\n  # a comment\n  && apt-get install -y \\\n     curl\n";
    assert_eq!(lines("DL3008", df), [2]);
    let df = "FROM a:1\nRUN <<EOF\napt-get update\ncd /x\nEOF\n";
    assert_eq!(lines("DL3003", df), [2]);
    // A heredoc given to a program is text, not commands.
    let df = "FROM a:1\nRUN python3 <<EOF\ncd /x\nEOF\n";
    assert!(lines("DL3003", df).is_empty());
    let df = "# escape=`\nFROM a:1\nRUN apt-get install `\n  curl\n";
    assert_eq!(lines("DL3014", df), [3]);
    // Exec form is read as its words.
    assert_eq!(
        lines(
            "DL3014",
            "FROM a:1\nRUN [\"apt-get\", \"install\", \"x\"]\n"
        ),
        [2]
    );
}

#[test]
fn onbuild_triggers_are_checked_on_their_own() {
    let df = "FROM a:1\nONBUILD RUN apt-get install curl\nONBUILD RUN cd /x\n";
    // DL3014 is one of the rules hadolint applies to triggers; DL3003 is not.
    assert_eq!(lines("DL3014", df), [2]);
    assert!(lines("DL3003", df).is_empty());
}

#[test]
fn hadolint_ignore_comments_apply_to_the_next_line() {
    let df = "FROM a:1\n# hadolint ignore=DL3014,DL3015\nRUN apt-get install curl=1\nRUN apt-get install curl=1\n";
    assert_eq!(lines("DL3014", df), [4]);
    assert_eq!(lines("DL3015", df), [4]);
    let df = "# hadolint global ignore=DL3014\nFROM a:1\nRUN apt-get install curl=1\n";
    assert!(lines("DL3014", df).is_empty());
    // A blank line between: the comment is not the line above.
    let df = "FROM a:1\n# hadolint ignore=DL3014\n\nRUN apt-get install curl=1\n";
    assert_eq!(lines("DL3014", df), [4]);
    // disable-ignore-pragma turns them off; DL1001 (off by default) finds them.
    let config =
        Config::from_hadolint_yaml("disable-ignore-pragma: true\noverride:\n  warning: [DL1001]\n")
            .unwrap();
    let df = "FROM a:1\n# hadolint ignore=DL3014\nRUN apt-get install curl=1\n";
    assert_eq!(lines_with("DL3014", df, &config), [3]);
    assert_eq!(lines_with("DL1001", df, &config), [2]);
    assert!(lines("DL1001", df).is_empty());
}

#[test]
fn the_configuration_ignores_overrides_and_trusts() {
    let df = "FROM a:1\nRUN apt-get install curl\nFROM evil.example.org/x:1\n";
    let config = Config::from_hadolint_yaml(
        "ignored: [DL3015]\noverride:\n  error: [DL3014]\n  ignore: [DL3008]\n  info: [DL3057]\ntrustedRegistries: [docker.io, '*.example.com']\n",
    )
    .unwrap();
    let findings = kiln_lint::lint_with("Dockerfile", df.as_bytes(), &config).unwrap();
    let get = |rule: &str| findings.iter().find(|f| f.rule == rule);
    assert!(get("DL3015").is_none() && get("DL3008").is_none());
    assert_eq!(get("DL3014").unwrap().severity, Severity::Error);
    assert_eq!(
        get("DL3057").map(|f| (f.line, f.severity)),
        Some((1, Severity::Info))
    );
    assert_eq!(lines_with("DL3026", df, &config), [3]);
    assert!(
        lines("DL3026", df).is_empty(),
        "no trustedRegistries: no DL3026"
    );
    let trusted =
        Config::from_hadolint_yaml("trustedRegistries: ['*.example.org', docker.io]\n").unwrap();
    assert!(lines_with("DL3026", df, &trusted).is_empty());
}
