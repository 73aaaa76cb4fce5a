//! The two builders, run the same way: BuildKit through `docker buildx
//! build` (dockerd's BuildKit 0.13, its built-in Dockerfile frontend) and
//! `kiln build`, each writing an OCI layout tarball.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::case::Case;

/// A build's outcome.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) ok: bool,
    /// stderr (both print their progress and errors there).
    pub(crate) log: String,
    pub(crate) output: PathBuf,
    pub(crate) duration: Duration,
}

/// How long one build may take before it counts as hung.
const BUILD_TIMEOUT: Duration = Duration::from_secs(180);

/// The build arguments both builders take alike.
fn common_args(case: &Case, secrets: &Path) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    for (k, v) in &case.build_args {
        args.push("--build-arg".into());
        args.push(format!("{k}={v}"));
    }
    if let Some(t) = &case.target {
        args.push("--target".into());
        args.push(t.clone());
    }
    if let Some(p) = &case.platform {
        args.push("--platform".into());
        args.push(p.clone());
    }
    for (id, content) in &case.secrets {
        fs_err::create_dir_all(secrets).map_err(|e| e.to_string())?;
        let file = secrets.join(id);
        fs_err::write(&file, content).map_err(|e| e.to_string())?;
        args.push("--secret".into());
        args.push(format!("id={id},src={}", file.display()));
    }
    Ok(args)
}

/// Where a case's build context is made: `dir/context-<run>-<case>`, with
/// the run's temp dir name and the case's dir name.
///
/// A name of its own, in this run and across runs: Docker 26's BuildKit
/// keeps the files it was sent for a context dir and, for the next one of
/// the same name, sends only files whose name, size or mtime differ. Every
/// context file has the same mtime (`CONTEXT_MTIME`), so with one name
/// for all, `COPY Dockerfile /foo` of one case got the same-sized
/// Dockerfile of the case before it (testConsistentInstructionCasing 2
/// and 4, both 125 bytes), and with the case's name alone a case got its
/// own Dockerfile of the run before, another registry port in the same
/// number of digits. Reproduced by hand with two dirs of one name.
pub(crate) fn context_dir(dir: &Path) -> PathBuf {
    let name = |p: Option<&Path>| {
        p.and_then(Path::file_name)
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    };
    dir.join(format!(
        "context-{}-{}",
        name(dir.parent()),
        name(Some(dir))
    ))
}

/// `docker buildx build` of the case's context into `dir/buildkit.tar`.
pub(crate) fn buildkit(case: &Case, dir: &Path) -> Result<Outcome, String> {
    let context = context_dir(dir);
    let output = dir.join("buildkit.tar");
    let mut cmd = Command::new("docker");
    cmd.args([
        "buildx",
        "build",
        "--no-cache",
        "--provenance=false",
        "--progress=plain",
    ])
    .arg("--output")
    .arg(format!("type=oci,dest={}", output.display()))
    .args(common_args(case, &dir.join("secrets-buildkit"))?)
    .arg("-f")
    .arg(context.join(&case.dockerfile_name))
    .arg(&context)
    .env("BUILDX_NO_DEFAULT_ATTESTATIONS", "1");
    run(cmd, output)
}

/// `kiln build` with a store of its own into `dir/kiln.tar`.
pub(crate) fn kiln(case: &Case, dir: &Path) -> Result<Outcome, String> {
    let context = context_dir(dir);
    let output = dir.join("kiln.tar");
    // KILN_CONFORMANCE_KILN: another kiln binary to hold against BuildKit.
    let binary = std::env::var_os("KILN_CONFORMANCE_KILN")
        .map_or_else(|| assert_cmd::cargo::cargo_bin("kiln"), PathBuf::from);
    let mut cmd = Command::new(binary);
    cmd.args(["build", "--progress", "plain"])
        .arg("--output")
        .arg(format!("type=oci,dest={}", output.display()))
        .args(common_args(case, &dir.join("secrets-kiln"))?)
        .arg("-f")
        .arg(context.join(&case.dockerfile_name))
        .arg(&context)
        .env("KILN_ROOT", dir.join("kiln-root"))
        .env_remove("SOURCE_DATE_EPOCH");
    run(cmd, output)
}

/// Runs a build, killing it after `BUILD_TIMEOUT`.
fn run(mut cmd: Command, output: PathBuf) -> Result<Outcome, String> {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if started.elapsed() > BUILD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    let mut log = String::from_utf8_lossy(&err).into_owned();
    if !out.is_empty() {
        log.push_str("\n[stdout]\n");
        log.push_str(&String::from_utf8_lossy(&out));
    }
    if status.is_none() {
        log.push_str(&format!("\n[killed after {BUILD_TIMEOUT:?}]"));
    }
    Ok(Outcome {
        ok: status.is_some_and(|s| s.success()),
        log,
        output,
        duration: started.elapsed(),
    })
}
