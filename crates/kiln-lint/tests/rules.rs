//! Each rule on small Dockerfiles: what it finds, on which line, and what
//! it leaves alone.

/// kiln's own findings (KLxxx); hadolint's and BuildKit's rules have
/// their own tests (hadolint.rs, buildkit.rs).
fn hits(dockerfile: &str) -> Vec<(&'static str, usize)> {
    kiln_lint::lint("Dockerfile", dockerfile.as_bytes())
        .expect("lints")
        .into_iter()
        .filter(|f| f.rule.starts_with("KL"))
        .map(|f| (f.rule, f.line))
        .collect()
}

/// Only the findings of one rule.
fn rule(id: &str, dockerfile: &str) -> Vec<usize> {
    hits(dockerfile)
        .into_iter()
        .filter(|(r, _)| *r == id)
        .map(|(_, l)| l)
        .collect()
}

const CACHED_APT: &str = "--mount=type=cache,target=/var/cache/apt";

#[test]
fn kl101_apt_install_without_yes_or_frontend() {
    assert_eq!(
        rule(
            "KL101",
            "FROM debian:12\nRUN apt-get update && apt-get install curl\n"
        ),
        [2]
    );
    // -y but no DEBIAN_FRONTEND
    assert_eq!(
        rule("KL101", "FROM debian:12\nRUN apt-get install -y curl\n"),
        [2]
    );
    // Both, in all their spellings.
    for ok in [
        "DEBIAN_FRONTEND=noninteractive apt-get install -y curl",
        "DEBIAN_FRONTEND=noninteractive apt-get -qq install curl",
        "DEBIAN_FRONTEND=noninteractive apt-get install --yes curl",
        "DEBIAN_FRONTEND=noninteractive apt-get install --assume-yes curl",
        "DEBIAN_FRONTEND=noninteractive apt-get install -qy curl",
        "DEBIAN_FRONTEND=noninteractive apt-get -o APT::Get::Assume-Yes=true install curl",
        "export DEBIAN_FRONTEND=noninteractive && apt-get install -y curl",
        "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y curl",
        "apt-get update; apt-get --version",
    ] {
        assert_eq!(
            rule("KL101", &format!("FROM debian:12\nRUN {ok}\n")),
            Vec::<usize>::new(),
            "{ok}"
        );
    }
    assert!(
        rule(
            "KL101",
            "FROM debian:12\nENV DEBIAN_FRONTEND=noninteractive\nRUN apt-get install -y x\n"
        )
        .is_empty()
    );
    assert!(
        rule(
            "KL101",
            "FROM debian:12\nARG DEBIAN_FRONTEND=noninteractive\nRUN apt-get install -y x\n"
        )
        .is_empty()
    );
    // A global ARG is not in effect inside a stage that does not declare it.
    assert_eq!(
        rule(
            "KL101",
            "ARG DEBIAN_FRONTEND=noninteractive\nFROM debian:12\nRUN apt-get install -y x\n"
        ),
        [3]
    );
    // ... and is where it does, with the global default.
    assert!(rule("KL101", "ARG DEBIAN_FRONTEND=noninteractive\nFROM debian:12\nARG DEBIAN_FRONTEND\nRUN apt-get install -y x\n").is_empty());
    // Inherited from the stage built on.
    assert!(rule("KL101", "FROM debian:12 AS base\nENV DEBIAN_FRONTEND=noninteractive\nFROM base\nRUN apt-get install -y x\n").is_empty());
}

#[test]
fn kl101_continuations_heredocs_exec_form_and_escape() {
    let df = "FROM debian:12\nRUN apt-get update \\\n  # a comment inside\n  && apt-get install \\\n     curl\n";
    assert_eq!(rule("KL101", df), [4]);
    let df = "FROM debian:12\nRUN <<EOF\nset -e\napt-get update\napt-get install curl\nEOF\n";
    assert_eq!(rule("KL101", df), [5]);
    let df = "FROM debian:12\nRUN <<EOF bash\napt-get install -y curl\nEOF\n";
    assert_eq!(rule("KL101", df), [3]);
    // A heredoc fed to python is not shell.
    let df = "FROM debian:12\nRUN python3 <<EOF\napt-get install curl\nEOF\n";
    assert!(rule("KL101", df).is_empty());
    let df = "FROM debian:12\nRUN <<EOF\n#!/usr/bin/env python3\napt-get install curl\nEOF\n";
    assert!(rule("KL101", df).is_empty());
    let df = "FROM debian:12\nRUN [\"apt-get\", \"install\", \"curl\"]\n";
    assert_eq!(rule("KL101", df), [2]);
    let df = "FROM debian:12\nRUN [\"/bin/sh\", \"-c\", \"apt-get install -y curl\"]\n";
    assert_eq!(rule("KL101", df), [2]);
    let df = "# escape=`\nFROM debian:12\nRUN apt-get update `\n && apt-get install C:\\tools `\n  curl\n";
    assert_eq!(rule("KL101", df), [4]);
}

#[test]
fn shell_rules_stop_under_a_non_posix_shell() {
    let df = "FROM windows\nSHELL [\"powershell\", \"-Command\"]\nRUN apt-get install curl; curl https://x\n";
    assert!(hits(df).is_empty(), "{:?}", hits(df));
    // Exec form is still read, whatever the SHELL.
    let df = "FROM windows\nSHELL [\"powershell\"]\nRUN [\"curl\", \"https://x\"]\n";
    assert_eq!(rule("KL103", df), [3]);
    // Back to a POSIX shell.
    let df = "FROM x\nSHELL [\"pwsh\"]\nSHELL [\"/bin/bash\", \"-c\"]\nRUN curl https://x\n";
    assert_eq!(rule("KL103", df), [4]);
}

#[test]
fn kl102_python_installs_without_timeout() {
    let df = "FROM python:3.12\nRUN pip install flask \\\n && python3 -m pip install -r r.txt\nRUN uv pip install x\nRUN poetry install\n";
    assert_eq!(rule("KL102", df), [2, 3, 4, 5]);
    for ok in [
        "pip install --default-timeout=60 flask",
        "pip install --timeout 60 flask",
        "pip --default-timeout=60 install flask",
        "PIP_DEFAULT_TIMEOUT=60 pip3 install flask",
        "UV_HTTP_TIMEOUT=60 uv pip install flask",
        "timeout 600 pip install flask",
        "pip --version",
        "pip freeze",
    ] {
        assert!(
            rule("KL102", &format!("FROM python:3.12\nRUN {ok}\n")).is_empty(),
            "{ok}"
        );
    }
    assert!(
        rule(
            "KL102",
            "FROM python:3.12\nENV PIP_DEFAULT_TIMEOUT=100\nRUN pip install x\n"
        )
        .is_empty()
    );
}

#[test]
fn kl103_downloads_without_timeout() {
    let df = "FROM x\nRUN curl -fsSL https://a | sh\nRUN wget -qO- https://b > f\nRUN curl -fsSLo f https://c\n";
    assert_eq!(rule("KL103", df), [2, 3, 4]);
    for ok in [
        "curl -fsSL --max-time 60 https://a",
        "curl -m 60 https://a",
        "curl -fsSm60 https://a",
        "curl --connect-timeout 5 --speed-time 30 https://a",
        "wget -T 30 https://a",
        "wget --timeout=30 https://a",
        "wget -qT30 https://a",
        "timeout 60 curl https://a",
    ] {
        assert!(
            rule("KL103", &format!("FROM x\nRUN {ok}\n")).is_empty(),
            "{ok}"
        );
    }
    // -o takes an argument: the m in `-om` is the file name.
    assert_eq!(rule("KL103", "FROM x\nRUN curl -om https://a\n"), [2]);
    // Quoted text is not a command.
    assert!(rule("KL103", "FROM x\nRUN echo 'curl https://a'\n").is_empty());
}

#[test]
fn kl112_background_processes() {
    let df = "FROM x\nRUN redis-server & sleep 1\nRUN nohup x\nRUN service mysql start && mysql < s.sql\nRUN /etc/init.d/nginx start\n";
    assert_eq!(rule("KL112", df), [2, 3, 4, 5]);
    for ok in [
        "make 2>&1 | tee log",
        "make &> log",
        "a && b || c",
        "server & pid=$! ; client ; wait",
        "service mysql status",
        "echo '&'",
    ] {
        assert!(
            rule("KL112", &format!("FROM x\nRUN {ok}\n")).is_empty(),
            "{ok}"
        );
    }
}

#[test]
fn kl108_update_apart_from_install() {
    let df = "FROM debian:12\nRUN apt-get update\nRUN echo hi\nRUN apt-get install -y x\n";
    assert_eq!(rule("KL108", df), [2]);
    assert!(
        rule(
            "KL108",
            "FROM debian:12\nRUN apt-get update && apt-get install -y x\n"
        )
        .is_empty()
    );
    // Another stage does not count.
    assert!(
        rule(
            "KL108",
            "FROM debian:12\nRUN apt-get update\nFROM debian:12\nRUN apt-get install -y x\n"
        )
        .is_empty()
    );
}

#[test]
fn kl109_add_url_without_checksum() {
    let df = "FROM x\nADD https://example.com/a.tgz /a\nADD --checksum=sha256:0123 https://example.com/b /b\nADD https://github.com/a/b.git /src\nADD https://github.com/a/b.git?ref=v1&keep-git-dir=1 /src\nADD local.tgz /c\n";
    assert_eq!(rule("KL109", df), [2]);
}

#[test]
fn kl111_unpinned_base_of_a_shared_stage() {
    let df = "FROM ubuntu AS base\nFROM base AS a\nFROM node:latest AS b\nFROM alpine:3.20 AS c\nFROM scratch\nCOPY --from=b /x /x\nCOPY --from=c /y /y\n";
    assert_eq!(rule("KL111", df), [1, 3]);
    // Not built on: an unpinned final image is another matter.
    assert!(rule("KL111", "FROM ubuntu\nRUN true\n").is_empty());
    assert!(rule("KL111", "FROM ubuntu@sha256:abcd AS base\nFROM base\n").is_empty());
    assert!(rule("KL111", "ARG V=1\nFROM node:$V AS base\nFROM base\n").is_empty());
    assert_eq!(
        rule("KL111", "FROM registry:5000/img AS base\nFROM base\n"),
        [1]
    );
    assert_eq!(
        rule(
            "KL111",
            "FROM alpine AS tools\nFROM scratch\nRUN --mount=from=tools,target=/t true\n"
        ),
        [1]
    );
}

#[test]
fn kl106_context_copied_before_install() {
    let df = "FROM python:3.12\nWORKDIR /app\nCOPY . .\nRUN pip install -r requirements.txt\n";
    assert_eq!(rule("KL106", df), [3]);
    let ok = "FROM python:3.12\nCOPY requirements.txt .\nRUN pip install -r requirements.txt\nCOPY . .\n";
    assert!(rule("KL106", ok).is_empty());
    let ok = "FROM node:22\nCOPY . .\nRUN npm run build\n";
    assert!(rule("KL106", ok).is_empty());
    assert_eq!(
        rule("KL106", "FROM node:22\nCOPY ./ /app\nRUN npm ci\n"),
        [2]
    );
}

#[test]
fn kl107_heavy_frameworks_in_one_step() {
    let df = "FROM python:3.12\nRUN pip install torch==2.3 torchvision \\\n && pip install 'jax[cuda12]'\n";
    assert_eq!(rule("KL107", df), [2]);
    assert!(rule("KL107", "FROM python:3.12\nRUN pip install torch torchvision torchaudio\nRUN pip install tensorflow\n").is_empty());
}

#[test]
fn kl104_install_without_cache_mount() {
    let df = "FROM python:3.12\nRUN pip install --default-timeout=60 x\nRUN npm ci\nRUN go mod download\n";
    assert_eq!(rule("KL104", df), [2, 3, 4]);
    let ok = format!(
        "FROM python:3.12\nRUN --mount=type=cache,target=/root/.cache/pip pip install --default-timeout=60 x\nRUN {CACHED_APT} apt-get install -y x\nRUN --mount=type=cache,target=/go/pkg/mod go mod download\n"
    );
    assert!(rule("KL104", &ok).is_empty());
    let ok = "FROM x\nENV PIP_CACHE_DIR=/pipcache\nRUN --mount=type=cache,target=/pipcache pip install --timeout=5 y\n";
    assert!(rule("KL104", ok).is_empty());
}

#[test]
fn kl105_purge_of_a_mounted_cache() {
    let df = format!(
        "FROM debian:12\nRUN {CACHED_APT} \\\n    apt-get install -y x \\\n && apt-get clean\nRUN --mount=type=cache,target=/root/.cache/pip \\\n  pip install --no-cache-dir --timeout=9 x\nRUN --mount=type=cache,target=/root/.cache rm -rf /root/.cache/pip\n"
    );
    assert_eq!(rule("KL105", &df), [4, 6, 7]);
    // Housekeeping inside a mounted cache is not a purge.
    let df = "FROM x\nRUN --mount=type=cache,target=./.git rm -f ./.git/*.lock\n";
    assert!(rule("KL105", df).is_empty());
    let df = "FROM x\nRUN --mount=type=cache,target=/var/lib/apt rm -rf /var/lib/apt/lists/*\n";
    assert_eq!(rule("KL105", df), [2]);
    // Without the mount, cleaning keeps the layer small: fine.
    assert!(
        rule(
            "KL105",
            "FROM debian:12\nRUN apt-get install -y x && apt-get clean\n"
        )
        .is_empty()
    );
}

#[test]
fn parse_errors_name_the_line() {
    let err = kiln_lint::lint("Dockerfile", b"FROM x\nRUN --mont=type=cache true\n").unwrap_err();
    assert!(err.to_string().starts_with("line 2:"), "{err}");
}

#[test]
fn findings_carry_file_severity_and_why() {
    let findings = kiln_lint::lint("a/Dockerfile", b"FROM x\nRUN curl https://x\n").unwrap();
    let f = findings.iter().find(|f| f.rule == "KL103").unwrap();
    assert_eq!(
        (f.rule, f.severity, f.file.as_str(), f.line),
        ("KL103", kiln_lint::Severity::Error, "a/Dockerfile", 2)
    );
    assert!(!f.why.is_empty());
}
