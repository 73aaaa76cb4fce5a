//! `--fix` on small Dockerfiles: what each fix writes, that comments,
//! continuations and everything else stay, that the fixed text lints clean
//! for the rules fixed, and what is left alone.

use kiln_lint::{Config, fix_with, lint};

/// The fixed text and the rules fixed.
fn fix(dockerfile: &str) -> (String, Vec<&'static str>) {
    let fixed = fix_with("Dockerfile", dockerfile.as_bytes(), &Config::default()).expect("lints");
    let rules = fixed.fixed.iter().map(|f| f.rule).collect();
    (String::from_utf8(fixed.text).unwrap(), rules)
}

/// The fixed text, which must lint clean for the rules fixed (and, for
/// KLxxx, keep no finding the old text did not have).
fn fixed(dockerfile: &str) -> String {
    let (text, rules) = fix(dockerfile);
    let after = lint("Dockerfile", text.as_bytes()).expect("the fixed text lints");
    let left: Vec<(&str, usize)> = after
        .iter()
        .filter(|f| rules.contains(&f.rule))
        .map(|f| (f.rule, f.line))
        .collect();
    assert!(left.is_empty(), "still {left:?} in:\n{text}");
    let before: Vec<&str> = lint("Dockerfile", dockerfile.as_bytes())
        .unwrap()
        .iter()
        .map(|f| f.rule)
        .collect();
    let new: Vec<&str> = after
        .iter()
        .map(|f| f.rule)
        .filter(|r| r.starts_with("KL") && !before.contains(r))
        .collect();
    assert!(new.is_empty(), "the fix made {new:?}:\n{text}");
    text
}

#[test]
fn kl101_gets_yes_and_the_frontend_for_the_install_only() {
    assert_eq!(
        fixed(
            "FROM debian:12\n# the tools\nRUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\\n    --mount=type=cache,target=/var/lib/apt,sharing=locked \\\n    apt-get update && apt-get install curl\n"
        ),
        "FROM debian:12\n# the tools\nRUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\\n    --mount=type=cache,target=/var/lib/apt,sharing=locked \\\n    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get -y install curl\n"
    );
    // Only what is missing: an ARG in effect is the frontend.
    let (text, rules) = fix(
        "FROM debian:12\nARG DEBIAN_FRONTEND=noninteractive\nRUN --mount=type=cache,target=/var/cache/apt --mount=type=cache,target=/var/lib/apt apt-get install \\\n      curl\n",
    );
    assert_eq!(rules, ["KL101"]);
    assert!(
        text.contains("apt-get -y install \\\n      curl\n"),
        "{text}"
    );
    assert!(
        !text.contains("DEBIAN_FRONTEND=noninteractive apt-get"),
        "{text}"
    );
}

#[test]
fn kl102_gets_a_timeout_for_each_installer() {
    let text = fixed(
        "FROM python:3.12\nRUN --mount=type=cache,target=/root/.cache/pip pip install flask\n\
         RUN --mount=type=cache,target=/root/.cache/pip python3 -m pip install -r req.txt\n\
         RUN --mount=type=cache,target=/root/.cache/uv uv pip install numpy\n",
    );
    assert_eq!(
        text,
        "FROM python:3.12\nRUN --mount=type=cache,target=/root/.cache/pip pip --default-timeout=60 install flask\n\
         RUN --mount=type=cache,target=/root/.cache/pip python3 -m pip --default-timeout=60 install -r req.txt\n\
         RUN --mount=type=cache,target=/root/.cache/uv UV_HTTP_TIMEOUT=60 uv pip install numpy\n"
    );
}

#[test]
fn kl104_gets_a_cache_mount_after_run() {
    let text = fixed(
        "FROM python:3.12\nENV PIP_DEFAULT_TIMEOUT=60\nRUN pip install flask  # the app\nRUN --network=host npm ci\n",
    );
    assert_eq!(
        text,
        "FROM python:3.12\nENV PIP_DEFAULT_TIMEOUT=60\nRUN --mount=type=cache,target=/root/.cache/pip pip install flask  # the app\nRUN --mount=type=cache,target=/root/.npm --network=host npm ci\n"
    );
    // Exec form takes a mount too.
    let (text, rules) = fix("FROM node:20\nRUN [\"npm\", \"ci\"]\n");
    assert_eq!(rules, ["KL104"]);
    assert_eq!(
        text,
        "FROM node:20\nRUN --mount=type=cache,target=/root/.npm [\"npm\", \"ci\"]\n"
    );
}

#[test]
fn kl105_drops_the_purge_and_its_and_and_keeps_the_layout() {
    let apt = "--mount=type=cache,target=/var/cache/apt,sharing=locked --mount=type=cache,target=/var/lib/apt,sharing=locked";
    // In the middle of a line, at the end of a continued instruction, and
    // the flag that turns pip's cache off.
    let text = fixed(&format!(
        "FROM debian:12\nENV DEBIAN_FRONTEND=noninteractive\n\
         RUN {apt} apt-get update && apt-get install -y curl && apt-get clean\n\
         RUN {apt} \\\n    apt-get update \\\n    && apt-get install -y git \\\n    && apt-get clean\n\
         RUN --mount=type=cache,target=/root/.cache/pip pip install --no-cache-dir --default-timeout=60 flask\n"
    ));
    assert_eq!(
        text,
        format!(
            "FROM debian:12\nENV DEBIAN_FRONTEND=noninteractive\n\
             RUN {apt} apt-get update && apt-get install -y curl\n\
             RUN {apt} \\\n    apt-get update \\\n    && apt-get install -y git\n\
             RUN --mount=type=cache,target=/root/.cache/pip pip install --default-timeout=60 flask\n"
        )
    );
    // A continued line of its own, and a purge first after RUN.
    let text = fixed(&format!(
        "FROM debian:12\nENV DEBIAN_FRONTEND=noninteractive\n\
         RUN {apt} apt-get update \\\n    && apt-get clean \\\n    && apt-get install -y curl\n\
         RUN --mount=type=cache,target=/root/.cache/pip pip cache purge && PIP_DEFAULT_TIMEOUT=9 pip install x\n"
    ));
    assert_eq!(
        text,
        format!(
            "FROM debian:12\nENV DEBIAN_FRONTEND=noninteractive\n\
             RUN {apt} apt-get update \\\n    && apt-get install -y curl\n\
             RUN --mount=type=cache,target=/root/.cache/pip PIP_DEFAULT_TIMEOUT=9 pip install x\n"
        )
    );
}

#[test]
fn kl105_leaves_a_purge_that_is_the_whole_step() {
    let (text, rules) =
        fix("FROM debian:12\nRUN --mount=type=cache,target=/var/cache/apt apt-get clean\n");
    assert!(rules.is_empty(), "{rules:?}");
    assert_eq!(
        text,
        "FROM debian:12\nRUN --mount=type=cache,target=/var/cache/apt apt-get clean\n"
    );
}

#[test]
fn kl108_moves_the_update_into_the_install_and_drops_its_run() {
    let apt = "--mount=type=cache,target=/var/cache/apt,sharing=locked --mount=type=cache,target=/var/lib/apt,sharing=locked";
    let text = fixed(&format!(
        "FROM debian:12\n# refresh the lists\nRUN apt-get update\n\n# what we need\nRUN {apt} DEBIAN_FRONTEND=noninteractive apt-get install -y curl\nCMD [\"curl\"]\n"
    ));
    assert_eq!(
        text,
        format!(
            "FROM debian:12\n# refresh the lists\n\n# what we need\nRUN {apt} apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y curl\nCMD [\"curl\"]\n"
        )
    );
    // An update RUN that does more stays; no fix.
    let (_, rules) = fix(&format!(
        "FROM debian:12\nRUN apt-get update && echo done\nRUN {apt} DEBIAN_FRONTEND=noninteractive apt-get install -y curl\n"
    ));
    assert!(!rules.contains(&"KL108"), "{rules:?}");
}

#[test]
fn all_at_once_on_one_command() {
    let text = fixed("FROM debian:12\nRUN apt-get update\nRUN apt-get install curl\n");
    assert_eq!(
        text,
        "FROM debian:12\nRUN --mount=type=cache,target=/var/cache/apt,sharing=locked --mount=type=cache,target=/var/lib/apt,sharing=locked apt-get update && DEBIAN_FRONTEND=noninteractive apt-get -y install curl\n"
    );
}

#[test]
fn heredocs_escapes_and_crlf_are_kept() {
    let text = fixed(
        "# escape=`\r\nFROM python:3.12\r\nRUN <<EOF\r\nset -e\r\npip install flask\r\nEOF\r\n",
    );
    assert_eq!(
        text,
        "# escape=`\r\nFROM python:3.12\r\nRUN --mount=type=cache,target=/root/.cache/pip <<EOF\r\nset -e\r\npip --default-timeout=60 install flask\r\nEOF\r\n"
    );
}

#[test]
fn nothing_to_fix_is_the_same_bytes() {
    let clean = "FROM scratch\nCOPY a /a\n";
    let (text, rules) = fix(clean);
    assert_eq!((text.as_str(), rules.len()), (clean, 0));
    // An ignored rule is not fixed either.
    let mut config = Config::default();
    config.ignored.insert("KL104".into());
    let out = fix_with("Dockerfile", b"FROM node:20\nRUN npm ci\n", &config).unwrap();
    assert!(out.fixed.is_empty());
}

/// Over the real-world Dockerfiles of ../shared/conformance: a fixed file
/// parses, each fix took its finding away
/// (KL105 aside: a KL104 mount may bring a purge to light).
#[test]
fn real_dockerfiles_fix_cleanly() {
    use kiln_testkit::need::{Conformance, need};
    let Some(real) = need(Conformance("real-dockerfiles")) else {
        return;
    };
    let mut files: Vec<std::path::PathBuf> = fs_err::read_dir(&real)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n != "INDEX.tsv" && n != "README.md")
        })
        .collect();
    files.sort();
    let mut fixes = 0;
    for file in files {
        let text = fs_err::read(&file).unwrap();
        let Ok(out) = fix_with("Dockerfile", &text, &Config::default()) else {
            continue; // a file the frontend refuses: lint_cli.rs's business
        };
        let after = lint("Dockerfile", &out.text)
            .unwrap_or_else(|e| panic!("{}: the fix broke it: {e}", file.display()));
        let before = lint("Dockerfile", &text).unwrap();
        for rule in ["KL101", "KL102", "KL104", "KL108"] {
            let count = |fs: &[kiln_lint::Finding]| fs.iter().filter(|f| f.rule == rule).count();
            let fixed = out.fixed.iter().filter(|f| f.rule == rule).count();
            assert_eq!(
                count(&after),
                count(&before) - fixed,
                "{}: {rule}\n{}",
                file.display(),
                String::from_utf8_lossy(&out.text)
            );
        }
        fixes += out.fixed.len();
    }
    assert!(fixes > 0, "the real files have something to fix");
}
