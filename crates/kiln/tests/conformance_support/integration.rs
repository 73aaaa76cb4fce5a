//! BuildKit's own integration Dockerfiles
//! (`../shared/conformance/buildkit-integration/<file>/<goFunc>/`), read
//! where they lie (never copied into the repository) and adapted to run
//! offline:
//!
//! - Windows variants, and Dockerfiles that need what this machine cannot
//!   give (the network, git, an SSH agent, named contexts, entitlements,
//!   CDI devices, a `# syntax=` frontend image, labs-only flags) are
//!   skipped, each with its reason (`KILN_CONFORMANCE_SHOW_SKIPS=1` lists
//!   them);
//! - `templated_go_fmt` ones get their `%s` filled: the busybox image
//!   unless the table below says otherwise;
//! - Docker Hub names (`busybox`, `alpine`, `debian`, with any tag) in
//!   `FROM`, `--from=` and `from=` become the loopback registry's copies;
//! - the context is made from `meta.json`'s `context_entries` (a file
//!   holding `<name>-data` unless the table gives its content, a directory
//!   when another entry is below it, a small archive for `*.tar*`), plus
//!   what the table adds (symlinks, `.dockerignore` files, build args).
//!
//! The Go tests check their own expectations; here only agreement counts,
//! so any outcome is fine as long as both builders reach the same one
//! (with, when both fail, the error phrases BuildKit's message has).

use std::path::Path;

use serde_json::Value;

use super::case::{Case, Expect, Files};

/// A tar archive (uncompressed) with a directory and a file in it.
fn small_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        if path.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
        }
        h.set_mtime(1_500_000_000);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, *data).expect("tar in memory");
    }
    b.into_inner().expect("tar in memory")
}

/// How a test is adapted: why it is skipped, or what it needs.
#[derive(Default)]
struct Adapt {
    skip: Option<&'static str>,
    /// Values for `%s` in order (the last one repeats).
    fill: Vec<&'static str>,
    files: Vec<(&'static str, Vec<u8>)>,
    setup: Vec<&'static str>,
    build_args: Vec<(&'static str, &'static str)>,
    secrets: Vec<(&'static str, &'static str)>,
    target: Option<&'static str>,
    platform: Option<&'static str>,
    dockerfile_name: Option<&'static str>,
    /// Paths whose content is random by design.
    volatile: Vec<&'static str>,
    /// Why kiln differs from Docker 26's BuildKit here, on purpose.
    known: Option<&'static str>,
    /// Text replacements in the Dockerfile (after `fill`).
    replace: Vec<(&'static str, &'static str)>,
}

fn skip(why: &'static str) -> Adapt {
    Adapt {
        skip: Some(why),
        ..Adapt::default()
    }
}

/// What is known about one Go test (by function, and Dockerfile file name).
fn adapt(func: &str, file: &str) -> Adapt {
    const NETWORK: &str = "needs the network (a URL, git or a package manager)";
    const NAMED: &str = "named build contexts (--build-context) are not part of this comparison";
    const CHAINED: &str = "builds on the image an earlier Dockerfile of the test pushed (image chaining is not adapted)";
    match (func, file) {
        (
            "testDockerfileADDFromURL"
            | "testAddURLChmod"
            | "testAddGitChecksumCache"
            | "testGitQueryString",
            _,
        ) => skip(NETWORK),
        ("testAddChecksum", "Dockerfile.7") => Adapt {
            fill: vec![
                "{{busybox}}",
                "sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d",
            ],
            files: vec![("foo", b"contents0".to_vec())],
            ..Adapt::default()
        },
        ("testAddChecksum", _) => skip(NETWORK),
        ("testDockerfileAddArchive", "Dockerfile.5" | "Dockerfile.6" | "Dockerfile.7") => {
            skip(NETWORK)
        }
        ("testSourceDateEpochStageHTTPArchive" | "testSourceDateEpochStageOverride", _) => {
            skip(NETWORK)
        }
        ("testReproSourceDateEpoch", _) => {
            skip("needs the amd64/debian image and the SOURCE_DATE_EPOCH exporter option")
        }
        ("testDockerfileCheckHostname", _) => skip("needs --add-host and a hostname option"),
        ("testRunDefaultNetwork", _) => skip(
            "depends on the host's network interface names (kiln's default network is the host's)",
        ),
        ("testRunGlobalNetwork" | "testRunHostNetwork", _) => {
            skip("needs a TCP server and the network.host entitlement")
        }
        ("testInsecureDevicesWhitelist", _) => skip(NETWORK),
        ("testDeviceRunEnv", _) => skip("CDI devices (RUN --device)"),
        ("testCgroupParent" | "testLinuxResources", _) => {
            skip("reads cgroup settings that belong to the daemon, not the Dockerfile")
        }
        ("testTarContext" | "testTarContextExternalDockerfile", _) => {
            skip("the context as a tarball on standard input")
        }
        ("testDockerfileFromHTTP", _) => skip("a Dockerfile fetched over HTTP"),
        ("testPullScratch", "Dockerfile.2") => skip(NETWORK),
        ("testCopyFollowAllSymlinks", _) => {
            skip("its context has a symlink out of the context (../bar)")
        }
        (f, _)
            if f.starts_with("testNamed")
                || f == "testSourcePolicyWithNamedContext"
                || f == "testEagerNamedContextLookup" =>
        {
            skip(NAMED)
        }
        ("testOnBuildNamedContext", _) => skip(NAMED),
        (
            "testGatewayProvenanceNestedInputProducer"
            | "testGatewayProvenancePlainLLBInputFallback"
            | "testFrontendDeduplicateSources",
            _,
        ) => skip(NAMED),
        (
            "testCacheImportExport"
            | "testCacheMultiPlatformImportExport"
            | "testImageManifestCacheImportExport"
            | "testCopyWildcardCache"
            | "testMountRWCache",
            _,
        ) => Adapt {
            volatile: vec!["/unique"],
            ..Adapt::default()
        },
        // BuildKit's cache mounts are shared by every build of the daemon,
        // and testMountArg fills /mycache2: own targets keep this case apart
        // (what it tests, the default id being the target, is unchanged).
        ("testCacheMountDefaultID", _) => Adapt {
            replace: vec![("/mycache", "/defaultid-cache")],
            ..Adapt::default()
        },
        ("testNoCache", _) => Adapt {
            volatile: vec!["/unique", "/unique2"],
            ..Adapt::default()
        },
        ("testDuplicateLayersProvenance", _) => Adapt {
            volatile: vec!["/a.txt", "/b.txt"],
            ..Adapt::default()
        },
        ("testGlobalArgErrors", _) => Adapt {
            fill: vec!["{{busybox}}"],
            known: Some(
                "Docker 26's frontend ignores expansion errors in global ARGs; \
                 kiln reports them, as newer BuildKit does",
            ),
            ..Adapt::default()
        },
        ("testInvalidJSONCommands", _) => Adapt {
            known: Some(
                "Docker 26's parser runs the JSON array and drops text after it; \
                 kiln takes the line as shell form, as newer BuildKit does",
            ),
            ..Adapt::default()
        },
        ("testAddInvalidChmod" | "testCopyInvalidChmod", _) => Adapt {
            known: Some(
                "Docker 26's frontend accepts a --chmod that is not octal or above 07777; \
                 kiln rejects it, as newer BuildKit does",
            ),
            ..Adapt::default()
        },
        ("testSecretAsEnviron" | "testSecretAsEnvironWithFileMount", _) => Adapt {
            secrets: vec![("mysecret", "pw")],
            known: Some(
                "RUN --mount=type=secret,env= is newer than Docker 26's frontend; kiln has it",
            ),
            ..Adapt::default()
        },
        ("testRunSecuritySandbox", _) => Adapt {
            known: Some(
                "RUN --security is labs-only in Docker 26's frontend; kiln accepts sandbox",
            ),
            ..Adapt::default()
        },
        ("testDockerfileAddArchive", "Dockerfile.3") => Adapt {
            known: Some("ADD --unpack is newer than Docker 26's frontend; kiln has it"),
            ..Adapt::default()
        },
        ("testOCILayoutProvenance", "Dockerfile.2") => skip(NAMED),
        (
            "testOnBuildCleared"
            | "testOnBuildNewDeps"
            | "testOnBuildWithCacheMount"
            | "testOnBuildWithChildStage"
            | "testOnBuildHeredoc",
            f,
        ) if f != "Dockerfile" => skip(CHAINED),
        ("testMaintainBaseOSVersion", "Dockerfile.2" | "Dockerfile.3") => skip(CHAINED),
        ("testTargetStageNameArg", "Dockerfile.2") => skip(CHAINED),
        ("testTargetStageNameArg", _) => Adapt {
            target: Some("foo"),
            known: Some(
                "TARGETSTAGE is newer than Docker 26's frontend (empty there); kiln sets it",
            ),
            ..Adapt::default()
        },
        ("testCopyChmod", _) => Adapt {
            build_args: vec![("mode", "755")],
            known: Some(
                "Docker 26's frontend leaves --chmod=${mode} unexpanded and ignores it; \
                 kiln expands it, as newer BuildKit does",
            ),
            files: vec![
                ("foo", b"foo-contents".to_vec()),
                ("bar", b"bar-contents".to_vec()),
            ],
            ..Adapt::default()
        },
        ("testCopyChown", _) => Adapt {
            build_args: vec![("group", "nobody")],
            files: vec![
                ("foo", b"foo-contents".to_vec()),
                ("bar/sub", b"sub-contents".to_vec()),
            ],
            ..Adapt::default()
        },
        ("testDockerfileAddChownExpand", _) => Adapt {
            build_args: vec![("group", "nobody")],
            ..Adapt::default()
        },
        ("testCopyChownCreateDest", _) => Adapt {
            build_args: vec![("group", "user")],
            ..Adapt::default()
        },
        ("testCopyChownExistingDir", _) => Adapt {
            dockerfile_name: Some("Dockerfile.web"),
            setup: vec!["symlink Dockerfile.web Dockerfile"],
            target: Some("copy_from"),
            ..Adapt::default()
        },
        ("testSymlinkedDockerfile", _) => Adapt {
            dockerfile_name: Some("Dockerfile.web"),
            setup: vec!["symlink Dockerfile.web Dockerfile"],
            ..Adapt::default()
        },
        ("testDockerfileLowercase", _) => Adapt {
            dockerfile_name: Some("dockerfile"),
            ..Adapt::default()
        },
        ("testCopyThroughSymlinkContext", _) => Adapt {
            setup: vec!["symlink sub link", "chmod 0700 sub", "chmod 0600 sub/foo"],
            ..Adapt::default()
        },
        ("testCopySymlinks", _) => Adapt {
            files: vec![
                ("bar", b"bar-contents".to_vec()),
                ("sub/subfile", b"subfile-contents".to_vec()),
            ],
            setup: vec![
                "remove baz",
                "remove sub/baz",
                "remove sub/lfile",
                "symlink bar foo",
                "symlink bar/baz baz",
                "symlink subfile sub/lfile",
                "symlink ../second sub/baz",
            ],
            ..Adapt::default()
        },
        ("testCopySocket", _) => Adapt {
            setup: vec!["socket socket.sock"],
            ..Adapt::default()
        },
        ("testContextChangeDirToFile", _) => Adapt {
            files: vec![("foo/bar", b"contents".to_vec())],
            ..Adapt::default()
        },
        ("testDefaultEnvWithArgs", _) => Adapt {
            files: vec![(
                "myscript.sh",
                b"#!/bin/sh\necho -n $my_arg $* > /out\n".to_vec(),
            )],
            setup: vec!["chmod 0755 myscript.sh"],
            build_args: vec![("my_arg", "other_val")],
            ..Adapt::default()
        },
        ("testDockerignore", _) => Adapt {
            files: vec![(
                ".dockerignore",
                b"ba*\nDockerfile\n!bay\n.dockerignore\n".to_vec(),
            )],
            ..Adapt::default()
        },
        ("testDockerignoreInvalid", _) => Adapt {
            files: vec![(".dockerignore", b"!\n".to_vec())],
            ..Adapt::default()
        },
        ("testDockerignoreOverride", f) => Adapt {
            files: vec![
                ("Dockerfile.dockerignore", b"bar\n".to_vec()),
                ("Dockerfile2.dockerignore", b"foo\n".to_vec()),
            ],
            dockerfile_name: Some(if f == "Dockerfile" {
                "Dockerfile"
            } else {
                "Dockerfile2"
            }),
            ..Adapt::default()
        },
        ("testExportMultiPlatform", _) => Adapt {
            platform: Some("linux/amd64,linux/arm/v7,linux/s390x,linux/ppc64le"),
            ..Adapt::default()
        },
        ("testTarExporterMulti", _) => Adapt {
            platform: Some("linux/amd64,darwin/amd64"),
            ..Adapt::default()
        },
        ("testPlatformArgsImplicit", _) => Adapt {
            fill: vec!["linux"],
            ..Adapt::default()
        },
        ("testPlatformArgsExplicit", _) => Adapt {
            fill: vec![
                "{{busybox}}",
                "echo -n $TARGETPLATFORM > out",
                "echo -n $TARGETOS > out2",
            ],
            platform: Some("darwin/ppc64le"),
            ..Adapt::default()
        },
        ("testSymlinkDestination", _) => Adapt {
            files: vec![("t.tar", tar_with_symlink())],
            ..Adapt::default()
        },
        ("testDockerfileAddArchiveThroughAbsoluteSymlink", _) => Adapt {
            files: vec![("rootfs.tar", rootfs_tar()), ("payload.tar", payload_tar())],
            ..Adapt::default()
        },
        ("testExportedHistory", _) => Adapt {
            fill: vec!["{{busybox}}", "{{busybox}}", "/foo", "ls"],
            ..Adapt::default()
        },
        ("testOutOfOrderStage", _) => Adapt {
            fill: vec!["/Dockerfile"],
            ..Adapt::default()
        },
        ("testUndeclaredArg", "Dockerfile.8") => Adapt {
            fill: vec!["linux", "linux", "{{busybox}}"],
            ..Adapt::default()
        },
        ("testConsistentInstructionCasing", "Dockerfile.9") => Adapt {
            fill: vec!["{{busybox}}", "echo hello"],
            ..Adapt::default()
        },
        ("testChmodNonOctal", _) => Adapt {
            fill: vec![
                "RUN cp -a /input/file /expected/file1 && chmod go+w /expected/file1",
                "COPY --from=base --chmod=go+w /input/file /file1\nCOPY --from=base --chmod=u=rwx,g=r,o=x /input/dir /dir1",
                "RUN ls -l /actual > /listing",
            ],
            ..Adapt::default()
        },
        ("testOnBuildHeredoc", _) => Adapt {
            fill: vec!["{{busybox}}", "", "echo \"hello world\" >> /dest"],
            ..Adapt::default()
        },
        ("testOnBuildWithChildStage", _) => Adapt {
            fill: vec!["{{busybox}}", "mkdir -p /out && touch /out/didrun"],
            ..Adapt::default()
        },
        (
            "testDockerfileAddArchive"
            | "testDockerfileAddArchiveWildcard"
            | "testDockerfileAddChownArchive"
            | "testDockerfileAddArchiveWithImpliedParentDir",
            _,
        ) => Adapt {
            files: vec![
                (
                    "t.tar",
                    small_tar(&[("foo/", b""), ("foo/bar", b"bar-in-tar")]),
                ),
                (
                    "b.tar",
                    small_tar(&[("bar/", b""), ("bar/baz", b"baz-in-tar")]),
                ),
                (
                    "t.tar.gz",
                    gzip(&small_tar(&[("x/y/", b""), ("x/y/z", b"z-in-targz")])),
                ),
            ],
            ..Adapt::default()
        },
        _ => Adapt::default(),
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let opts = kiln_image::compress::CompressOptions::new(kiln_image::media::Compression::Gzip);
    let (out, _) =
        kiln_image::compress::compress(bytes, Vec::new(), &opts).expect("gzip in memory");
    out
}

/// `t.tar` of testSymlinkDestination: `symlink -> tmp/symlink-target`, `tmp/symlink-target/`.
fn tar_with_symlink() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, "tmp/symlink-target/", &[][..])
        .expect("tar");
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    b.append_link(&mut h, "symlink", "tmp/symlink-target")
        .expect("tar");
    b.into_inner().expect("tar")
}

/// `rootfs.tar`: `/etc/alternatives/foo -> /usr/bin/bar`-style absolute links.
fn rootfs_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for dir in ["usr/", "usr/bin/", "etc/"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, dir, &[][..]).expect("tar");
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    b.append_link(&mut h, "bin", "/usr/bin").expect("tar");
    b.into_inner().expect("tar")
}

/// `payload.tar`: a file under `bin/`, which is an absolute symlink in rootfs.tar.
fn payload_tar() -> Vec<u8> {
    small_tar(&[("bin/", b""), ("bin/tool", b"tool")])
}

/// Replaces `%s`, `%[1]s`, `%d` and `%%` as Go's fmt would with `values`.
fn fill(text: &str, values: &[&str]) -> String {
    let mut out = String::new();
    let mut i = 0;
    let mut rest = text;
    let value = |n: usize| -> String {
        values
            .get(n)
            .or(values.last())
            .map_or_else(|| "{{busybox}}".to_string(), |v| v.to_string())
    };
    while let Some(p) = rest.find('%') {
        out.push_str(&rest[..p]);
        let after = &rest[p + 1..];
        if let Some(r) = after.strip_prefix('%') {
            out.push('%');
            rest = r;
        } else if let Some(r) = after.strip_prefix('s') {
            out.push_str(&value(i));
            i += 1;
            rest = r;
        } else if let Some(r) = after.strip_prefix('d') {
            out.push_str("1700000000");
            rest = r;
        } else if let Some(r) = after.strip_prefix("[1]s") {
            out.push_str(&value(0));
            rest = r;
        } else {
            out.push('%');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Whether an image name (before expansion) is one of the Docker Hub
/// images the registry mirrors.
fn hub_name(name: &str) -> bool {
    ["busybox", "busy$", "busy${", "alpine", "debian", "b${sfx}"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// `FROM busybox` → `FROM {{registry}}/library/busybox`, and the same in
/// `--from=` and a mount's `from=`.
fn mirror_images(text: &str) -> String {
    let mut out = Vec::new();
    for line in text.split('\n') {
        let trimmed = line.trim_start();
        let mut words: Vec<String> = line.split(' ').map(str::to_string).collect();
        let is_from = trimmed.len() >= 5 && trimmed[..5].eq_ignore_ascii_case("from ");
        let mut seen_image = false;
        for w in &mut words {
            let core = w.trim_start_matches('\t').to_string();
            let indent = w[..w.len() - core.len()].to_string();
            let core = core.as_str();
            if is_from
                && !seen_image
                && !core.is_empty()
                && !core.eq_ignore_ascii_case("from")
                && !core.starts_with("--")
            {
                seen_image = true;
                if hub_name(core) {
                    *w = format!("{indent}{{{{registry}}}}/library/{core}");
                }
                continue;
            }
            if let Some(name) = core.strip_prefix("--from=")
                && hub_name(name)
            {
                *w = format!("{indent}--from={{{{registry}}}}/library/{name}");
            }
            if core.starts_with("--mount=") {
                let fixed: Vec<String> = core
                    .split(',')
                    .map(|kv| {
                        match kv
                            .strip_prefix("from=")
                            .or_else(|| kv.strip_prefix("--mount=from="))
                        {
                            Some(name) if hub_name(name) => {
                                kv.replace(name, &format!("{{{{registry}}}}/library/{name}"))
                            }
                            _ => kv.to_string(),
                        }
                    })
                    .collect();
                *w = format!("{indent}{}", fixed.join(","));
            }
        }
        out.push(words.join(" "));
    }
    out.join("\n")
}

/// Why a Dockerfile cannot be built here, from what it says.
fn unbuildable(text: &str) -> Option<&'static str> {
    let lower = text.to_lowercase();
    if !lower.lines().any(|l| l.trim_start().starts_with("from")) {
        // BuildKit 0.13 indexes the last stage before it checks there is
        // one: the panic takes dockerd down (fixed in later versions).
        return Some("no stage: crashes Docker 26's BuildKit 0.13 (panic in lastTarget)");
    }
    let checks: [(&str, &'static str); 12] = [
        ("nanoserver", "a Windows Dockerfile"),
        ("c:\\", "a Windows Dockerfile"),
        (
            "# syntax=",
            "a # syntax= frontend image (not pullable offline)",
        ),
        (
            "#syntax=",
            "a # syntax= frontend image (not pullable offline)",
        ),
        ("type=ssh", "needs an SSH agent (--ssh)"),
        ("--device=", "CDI devices (RUN --device)"),
        (
            "--parents",
            "COPY --parents is labs-only in Docker 26's frontend (kiln has it; tested in kiln's own tests)",
        ),
        (
            "--exclude",
            "COPY --exclude is labs-only in Docker 26's frontend (kiln has it; tested in kiln's own tests)",
        ),
        ("apk ", "needs the network (apk)"),
        ("apt-get", "needs the network (apt-get)"),
        ("http://", "needs the network (a URL)"),
        ("https://", "needs the network (a URL)"),
    ];
    checks
        .iter()
        .find(|(needle, _)| lower.contains(needle))
        .map(|(_, why)| *why)
}

/// Every adaptable Dockerfile under `dir`, and the skipped ones with why.
#[allow(clippy::type_complexity)]
pub(crate) fn load(dir: &Path) -> Result<(Vec<Case>, Vec<(String, String)>), String> {
    let mut cases = Vec::new();
    let mut skipped = Vec::new();
    let mut metas = Vec::new();
    for file_dir in fs_err::read_dir(dir).map_err(|e| e.to_string())? {
        let file_dir = file_dir.map_err(|e| e.to_string())?.path();
        if !file_dir.is_dir() {
            continue;
        }
        for func_dir in fs_err::read_dir(&file_dir).map_err(|e| e.to_string())? {
            let func_dir = func_dir.map_err(|e| e.to_string())?.path();
            if func_dir.join("meta.json").is_file() {
                metas.push(func_dir);
            }
        }
    }
    metas.sort();
    for func_dir in metas {
        let meta: Value = serde_json::from_slice(
            &fs_err::read(func_dir.join("meta.json")).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("{}: {e}", func_dir.display()))?;
        let func = meta["go_func"].as_str().unwrap_or_default().to_string();
        let entries: Vec<String> = meta["context_entries"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let phrases: Vec<String> = meta["error_substrings"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for df in meta["dockerfiles"].as_array().cloned().unwrap_or_default() {
            let file = df["file"].as_str().unwrap_or_default().to_string();
            let name = format!("bk/{func}/{file}");
            if df["variant"] == "windows" {
                skipped.push((name, "a Windows Dockerfile".to_string()));
                continue;
            }
            let raw = fs_err::read(func_dir.join(&file)).map_err(|e| e.to_string())?;
            let mut text = String::from_utf8_lossy(&raw).into_owned();
            let adapt = adapt(&func, &file);
            if let Some(why) = adapt.skip.or_else(|| unbuildable(&text)) {
                skipped.push((name, why.to_string()));
                continue;
            }
            if df["templated_go_fmt"] == true {
                text = fill(&text, &adapt.fill);
            }
            for (from, to) in &adapt.replace {
                text = text.replace(from, to);
            }
            text = mirror_images(&text);
            let dockerfile_name = adapt.dockerfile_name.unwrap_or("Dockerfile").to_string();
            let mut files: Vec<(String, Vec<u8>)> = Vec::new();
            for entry in &entries {
                if entry == "Dockerfile" || *entry == dockerfile_name || entry.starts_with("..") {
                    continue;
                }
                if adapt.files.iter().any(|(p, _)| p == entry) {
                    continue;
                }
                let is_dir = entries.iter().any(|e| e.starts_with(&format!("{entry}/")))
                    || adapt
                        .files
                        .iter()
                        .any(|(p, _)| p.starts_with(&format!("{entry}/")));
                if is_dir {
                    files.push((format!("{entry}/"), Vec::new()));
                } else if entry.ends_with(".tar") {
                    files.push((entry.clone(), small_tar(&[("d/", b""), ("d/f", b"in-tar")])));
                } else if entry == "testfile" {
                    // What the Go tests put there and their RUN checks read.
                    files.push((entry.clone(), b"contents0".to_vec()));
                } else {
                    files.push((entry.clone(), format!("{entry}-data").into_bytes()));
                }
            }
            for (p, c) in &adapt.files {
                files.push((p.to_string(), c.clone()));
            }
            let mut case = Case::new(name, text, Files::List(files));
            case.dockerfile_name = dockerfile_name;
            case.setup = adapt.setup.iter().map(|s| s.to_string()).collect();
            case.build_args = adapt
                .build_args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            case.secrets = adapt
                .secrets
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            case.target = adapt.target.map(str::to_string);
            case.platform = adapt.platform.map(str::to_string);
            case.expect = Expect::Agree(phrases.clone());
            case.volatile = adapt.volatile.iter().map(|v| v.to_string()).collect();
            case.known_difference = adapt.known.map(str::to_string);
            cases.push(case);
        }
    }
    Ok((cases, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_format_and_mirrors() {
        assert_eq!(
            fill("FROM %s\nRUN echo 100%%", &["x"]),
            "FROM x\nRUN echo 100%"
        );
        assert_eq!(fill("%[1]s %[1]s", &["a", "b"]), "a a");
        assert_eq!(
            mirror_images("FROM busybox:latest AS b\nCOPY --from=alpine /x /y\nFROM scratch"),
            "FROM {{registry}}/library/busybox:latest AS b\nCOPY --from={{registry}}/library/alpine /x /y\nFROM scratch"
        );
        assert_eq!(
            mirror_images("RUN --mount=type=bind,from=busybox,target=/b true"),
            "RUN --mount=type=bind,from={{registry}}/library/busybox,target=/b true"
        );
    }
}
