//! `kiln build --report DIR` and `kiln history`, as a user runs them: the
//! report of a multi-stage build, of its cached rebuild, of a failed and a
//! stalled build; the history listing and showing them; and the page
//! rendered in headless Chromium (Debian's `chromium`): a screenshot at a
//! phone's width that is not blank, no console message, the lanes and the
//! steps in the DOM, the Dockerfile's `<script>` shown as text.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_testkit::need::{Runc, Tool, need};
use serde_json::Value;
use support::{Kiln, text};

const BASE: &str = kiln_testkit::busybox::BUSYBOX_TAG;

/// A store holding [`BASE`]; `None` (the test skips) where builds cannot
/// run steps.
fn kiln_with_base() -> Option<Kiln> {
    need(Runc)?;
    let kiln = Kiln::new();
    support::import_busybox(&kiln, BASE, &[]);
    Some(kiln)
}

fn context(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs_err::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    fs_err::write(dir.path().join("data.txt"), "some data\n").unwrap();
    dir
}

/// Three stages, two built at once, a step whose command holds HTML.
fn three_stages() -> String {
    format!(
        "FROM {BASE} AS build\n\
         RUN echo '<script>alert(\"x\")</script>' > /x.txt && echo built\n\
         COPY data.txt /data.txt\n\
         FROM {BASE} AS tools\n\
         RUN sleep 1 && echo tools > /t.txt\n\
         FROM {BASE}\n\
         COPY --from=build /x.txt /app/x.txt\n\
         COPY --from=tools /t.txt /app/t.txt\n\
         ENV MODE=prod\n\
         CMD [\"cat\", \"/app/x.txt\"]\n"
    )
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs_err::read(path).unwrap()).unwrap()
}

fn statuses(report: &Value) -> Vec<(String, String)> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["instruction"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Runs `kiln build --report DIR ...`; returns the exit code and stderr.
fn build_with_report(kiln: &Kiln, ctx: &Path, report: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["build", "--report", report.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    let out = kiln.cmd().args(&args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_build_and_its_cached_rebuild_have_reports_and_a_history() {
    let Some(kiln) = kiln_with_base() else { return };
    let ctx = context(&three_stages());
    let work = tempfile::tempdir().unwrap();
    let first = work.path().join("first");
    let (code, stderr) = build_with_report(&kiln, ctx.path(), &first, &["-t", "app:1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!("report: {}", first.join("report.html").display())),
        "{stderr}"
    );
    let report = read_json(&first.join("report.json"));
    assert_eq!(report["schema"], "kiln.report/v1");
    assert_eq!(report["build"]["status"], "succeeded");
    assert_eq!(report["build"]["exit_code"], 0);
    assert_eq!(report["build"]["tags"][0], "app:1");
    assert!(
        report["build"]["image"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    let lanes: Vec<&str> = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(lanes.len(), 3, "{lanes:?}");
    let app = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["needs"].as_array().unwrap().len() == 2)
        .expect("the last stage reads the other two");
    assert_eq!(app["needs"], serde_json::json!(["build", "tools"]));
    // Each lane on the imported base names it; nothing of it was pulled.
    for lane in report["stages"].as_array().unwrap() {
        assert_eq!(lane["base"]["image"], BASE, "{lane}");
        assert_eq!(lane["base"]["bytes_pulled"], 0, "{lane}");
        assert!(
            lane["base"]["manifest"]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
    }
    let first_statuses = statuses(&report);
    for (instruction, status) in &first_statuses {
        let want = if instruction.starts_with("ENV") || instruction.starts_with("CMD") {
            "config"
        } else {
            "run"
        };
        assert_eq!(status, want, "{instruction}");
    }
    for step in report["steps"].as_array().unwrap() {
        assert!(step["start_ms"].as_u64().unwrap() <= step["end_ms"].as_u64().unwrap());
        if step["status"] == "run" {
            assert!(step["cache_key"].as_str().unwrap().starts_with("sha256:"));
        }
    }
    let echo = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["instruction"].as_str().unwrap().contains("alert"))
        .unwrap();
    assert_eq!(echo["output"], serde_json::json!(["built"]));
    assert!(echo["layer"]["size"].as_u64().unwrap() > 0);
    // The path ends at the last step of the target stage, and goes back
    // through a stage it read.
    let path = report["critical_path"].as_array().unwrap();
    assert!(path.len() >= 4, "{path:?}");
    assert!(report["totals"]["layer_bytes"].as_u64().unwrap() > 0);

    let again = work.path().join("again");
    let (code, stderr) = build_with_report(&kiln, ctx.path(), &again, &["-t", "app:1"]);
    assert_eq!(code, 0, "{stderr}");
    let cached = read_json(&again.join("report.json"));
    for (instruction, status) in statuses(&cached) {
        let want = if instruction.starts_with("ENV") || instruction.starts_with("CMD") {
            "config"
        } else {
            "cached"
        };
        assert_eq!(status, want, "{instruction}");
    }
    assert_eq!(cached["totals"]["run"], 0);

    // Both are in the history, newest first, and show as written.
    let list = kiln.ok(&["history", "--format", "json"]);
    let rows: Value = serde_json::from_slice(&list.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["id"], cached["id"]);
    assert_eq!(rows[1]["id"], report["id"]);
    assert_eq!(rows[0]["status"], "succeeded");
    let table = support::stdout(&kiln.ok(&["history"]));
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(cached["id"].as_str().unwrap()), "{table}");
    let id = cached["id"].as_str().unwrap();
    let shown = kiln.ok(&["history", "show", id]);
    assert_eq!(
        serde_json::from_slice::<Value>(&shown.stdout).unwrap(),
        cached
    );
    let dir = support::stdout(&kiln.ok(&["history", "show", id, "--path"]));
    assert_eq!(
        fs_err::read(Path::new(dir.trim()).join("report.html")).unwrap(),
        fs_err::read(again.join("report.html")).unwrap()
    );
    // Nothing to open the page with: its path.
    let opened = kiln
        .cmd()
        .args(["history", "show", id, "--open"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(opened.status.success(), "{}", text(&opened));
    assert_eq!(
        support::stdout(&opened).trim(),
        Path::new(dir.trim()).join("report.html").to_str().unwrap()
    );

    let page = fs_err::read_to_string(first.join("report.html")).unwrap();
    assert!(
        !page.contains("<script>alert"),
        "the Dockerfile's HTML is text"
    );
    if let Some(chromium) = need(Tool::Chromium) {
        let dom = render_in_chromium(&chromium, &first.join("report.html"), work.path());
        assert_eq!(dom.matches("class=\"lane\"").count(), 3, "{dom}");
        for step in report["steps"].as_array().unwrap() {
            let id = step["id"].as_u64().unwrap();
            assert!(dom.contains(&format!("id=\"step-{id}\"")), "step {id}");
            assert!(dom.contains(&format!("data-step=\"{id}\"")), "bar {id}");
        }
        assert!(dom.contains("bar s-run critical"), "{dom}");
        assert!(dom.contains("&lt;script&gt;alert"), "{dom}");
        assert!(!dom.contains("<script>alert"));
        let dom = render_in_chromium(&chromium, &again.join("report.html"), work.path());
        assert!(dom.contains("bar s-cached"), "{dom}");
    }
}

/// Issue #16: the harness takes kiln's overhead as the build's duration
/// less the process time on the critical path, so the process time must be
/// the step's command, not kiln's work around it.
#[test]
fn a_run_steps_process_time_is_in_the_report() {
    let Some(kiln) = kiln_with_base() else { return };
    let ctx = context(&format!(
        "FROM {BASE}\nRUN sleep 1 && echo slept > /s.txt\nCOPY data.txt /data.txt\nENV A=1\n"
    ));
    let work = tempfile::tempdir().unwrap();
    let (code, stderr) = build_with_report(&kiln, ctx.path(), work.path(), &[]);
    assert_eq!(code, 0, "{stderr}");
    let report = read_json(&work.path().join("report.json"));
    let step = |prefix: &str| {
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["instruction"].as_str().unwrap().starts_with(prefix))
            .unwrap()
            .clone()
    };
    let run = step("RUN sleep 1");
    let process = run["process_ms"]
        .as_u64()
        .expect("a RUN has a process time");
    assert!(process >= 1000, "{run}");
    assert!(process <= run["duration_ms"].as_u64().unwrap(), "{run}");
    assert!(
        step("COPY")["process_ms"].is_null(),
        "a COPY runs no process"
    );
    assert!(step("ENV")["process_ms"].is_null());
    let totals = &report["totals"];
    assert_eq!(totals["process_ms"].as_u64(), Some(process));
    // One stage: its chain is the sum of its steps' process times.
    assert_eq!(totals["process_critical_ms"].as_u64(), Some(process));
    assert!(process <= report["build"]["duration_ms"].as_u64().unwrap());

    // A cached rebuild runs no process.
    let again = work.path().join("again");
    let (code, stderr) = build_with_report(&kiln, ctx.path(), &again, &[]);
    assert_eq!(code, 0, "{stderr}");
    let cached = read_json(&again.join("report.json"));
    assert_eq!(cached["totals"]["process_critical_ms"], 0);
    assert!(
        cached["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["process_ms"].is_null())
    );
}

#[test]
fn a_failed_build_has_its_report_with_the_exit_code_and_output() {
    let Some(kiln) = kiln_with_base() else { return };
    let ctx = context(&format!(
        "FROM {BASE}\nCOPY data.txt /data.txt\nRUN echo compiling && echo 'broken <b>' >&2 && exit 7\nRUN echo never\n"
    ));
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("report");
    let (code, stderr) = build_with_report(&kiln, ctx.path(), &dir, &[]);
    assert_eq!(code, 1, "{stderr}");
    let report = read_json(&dir.join("report.json"));
    assert_eq!(report["build"]["status"], "failed");
    assert_eq!(report["build"]["exit_code"], 1);
    let error = report["build"]["error"].as_str().unwrap();
    assert!(error.contains("Dockerfile:3"), "{error}");
    assert!(error.contains("exit code: 7"), "{error}");
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(
        statuses(&report)
            .into_iter()
            .map(|(_, s)| s)
            .collect::<Vec<_>>(),
        ["run", "failed", "not-run"]
    );
    assert_eq!(steps[1]["exit_code"], 7);
    // Both streams, each in order (which of the two pipes is read first
    // is the kernel's business).
    let mut output: Vec<&str> = steps[1]["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    output.sort();
    assert_eq!(output, ["broken <b>", "compiling"]);
    assert_eq!(report["critical_path"].as_array().unwrap().len(), 2);
    let rows: Value =
        serde_json::from_slice(&kiln.ok(&["history", "--format", "json"]).stdout).unwrap();
    assert_eq!(rows[0]["status"], "failed");
    if let Some(chromium) = need(Tool::Chromium) {
        let dom = render_in_chromium(&chromium, &dir.join("report.html"), work.path());
        assert!(dom.contains("id=\"error\""), "{dom}");
        assert!(dom.contains("broken &lt;b&gt;"), "{dom}");
        assert!(dom.contains("data-status=\"not-run\""), "{dom}");
    }
}

#[test]
fn a_stalled_build_reports_the_watchdogs_diagnosis() {
    let Some(kiln) = kiln_with_base() else { return };
    let ctx = context(&format!("FROM {BASE}\nRUN echo waiting && sleep 600\n"));
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("report");
    let (code, stderr) = build_with_report(
        &kiln,
        ctx.path(),
        &dir,
        &["--stall-timeout", "2s", "--retries", "0"],
    );
    assert_eq!(code, 3, "{stderr}");
    let report = read_json(&dir.join("report.json"));
    assert_eq!(report["build"]["status"], "stalled");
    assert_eq!(report["build"]["exit_code"], 3);
    let step = &report["steps"][0];
    assert_eq!(step["status"], "failed");
    assert_eq!(step["watchdog"][0]["hang"], "stalled");
    let diagnosis = step["watchdog"][0]["text"].as_str().unwrap();
    assert!(diagnosis.contains("sleep"), "{diagnosis}");
    if let Some(chromium) = need(Tool::Chromium) {
        let dom = render_in_chromium(&chromium, &dir.join("report.html"), work.path());
        assert!(
            dom.contains("<details class=\"diagnosis\" data-hang=\"stalled\">"),
            "{dom}"
        );
    }
}

/// Renders `page` in headless Chromium at a phone's width: the screenshot
/// must not be blank and the console must stay silent (the page has no
/// script, so any message is a fault: a blocked load, an error). Returns
/// the DOM as Chromium serialises it.
fn render_in_chromium(chromium: &Path, page: &Path, work: &Path) -> String {
    let url = format!("file://{}", page.display());
    let profile = tempfile::tempdir_in(work).unwrap();
    let chrome = |extra: &[&str]| {
        let mut cmd = Command::new(chromium);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=375,2000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(&url);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{cmd:?}:\n{}", text(&out));
        out
    };
    let shot: PathBuf = work.join(format!(
        "{}.png",
        page.parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
    ));
    let out = chrome(&[&format!("--screenshot={}", shot.display())]);
    assert_console_silent(&String::from_utf8_lossy(&out.stderr));
    assert_not_blank(&shot);
    let out = chrome(&["--dump-dom"]);
    assert_console_silent(&String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn assert_console_silent(stderr: &str) {
    let console: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
}

/// The PNG has more than one colour, and a fair share of its pixels are
/// not the background's.
fn assert_not_blank(png_path: &Path) {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        fs_err::File::open(png_path).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bytes = &buf[..info.buffer_size()];
    let channels = info.color_type.samples();
    assert_eq!(info.width, 375, "the phone's width");
    let pixels: Vec<&[u8]> = bytes.chunks(channels).collect();
    let background = pixels[0];
    let other = pixels.iter().filter(|p| **p != background).count();
    let colours: std::collections::HashSet<&[u8]> = pixels.iter().copied().collect();
    assert!(colours.len() > 1, "{} is one colour", png_path.display());
    assert!(
        other * 100 / pixels.len() >= 1,
        "{}: only {other} of {} pixels drawn",
        png_path.display(),
        pixels.len()
    );
}

/// A base image of another architecture than the build's: BuildKit's
/// InvalidBaseImagePlatform warning, printed and in the report, and the
/// build goes on (its steps only change the config); `# check=skip=` turns
/// it off.
#[test]
fn a_base_of_another_platform_gives_buildkits_warning() {
    let Some(kiln) = kiln_with_base() else { return };
    let host = if cfg!(target_arch = "aarch64") {
        ("linux/amd64", "linux/arm64")
    } else {
        ("linux/arm64", "linux/amd64")
    };
    support::import_busybox(&kiln, "foreign:1", &["--platform", host.0]);
    let ctx = context("FROM foreign:1\nENV A=1\nCMD [\"sh\"]\n");
    let work = tempfile::tempdir().unwrap();
    let report_dir = work.path().join("report");
    let (code, stderr) = build_with_report(&kiln, ctx.path(), &report_dir, &[]);
    assert_eq!(code, 0, "{stderr}");
    let want = format!(
        "InvalidBaseImagePlatform: Base image foreign:1 was pulled with platform \"{}",
        host.0
    );
    assert!(stderr.contains(&want), "{stderr}");
    assert!(
        stderr.contains(&format!("expected \"{}\" for current build", host.1)),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("InvalidBaseImagePlatform").count(),
        1,
        "{stderr}"
    );
    let report = read_json(&report_dir.join("report.json"));
    let warnings = report["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w["message"].as_str().unwrap().starts_with(&want) && w["line"] == 1),
        "{warnings:?}"
    );
    assert!(
        report["stages"][0]["base"]["platform"]
            .as_str()
            .unwrap()
            .starts_with(host.0)
    );

    let skipped = context("# check=skip=InvalidBaseImagePlatform\nFROM foreign:1\nENV A=2\n");
    let (code, stderr) = build_with_report(&kiln, skipped.path(), &report_dir, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("InvalidBaseImagePlatform"), "{stderr}");

    // `# check=error=true`: built, then failed before the export, as
    // BuildKit's "lint violation found"; the report says why.
    let strict = context("# check=error=true\nFROM foreign:1\nENV A=3\n");
    let layout = work.path().join("strict.tar");
    let (code, stderr) = build_with_report(
        &kiln,
        strict.path(),
        &report_dir,
        &["--output", &format!("type=oci,dest={}", layout.display())],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("lint violation found for rules: InvalidBaseImagePlatform"),
        "{stderr}"
    );
    assert!(stderr.contains("Dockerfile:2"), "{stderr}");
    assert!(!layout.exists(), "a build that failed its checks exported");
    let report = read_json(&report_dir.join("report.json"));
    assert_eq!(report["build"]["status"], "failed", "{report}");
}

/// `KILN_HISTORY_KEEP` bounds the history, `kiln history prune --keep N`
/// trims it at once, and a value that is not a count keeps nothing new and
/// says why.
#[test]
fn the_history_keeps_as_many_builds_as_kiln_history_keep_says() {
    let Some(kiln) = kiln_with_base() else { return };
    let ctx = context(&format!("FROM {BASE}\nENV A=1\n"));
    let ids = || -> Vec<String> {
        let rows: Value =
            serde_json::from_slice(&kiln.ok(&["history", "--format", "json"]).stdout).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    let mut built = Vec::new();
    for _ in 0..3 {
        let out = kiln
            .cmd()
            .args(["build", ctx.path().to_str().unwrap()])
            .env("KILN_HISTORY_KEEP", "2")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        built.push(ids()[0].clone());
    }
    assert_eq!(ids(), [built[2].clone(), built[1].clone()]);

    let pruned = kiln.ok(&["history", "prune", "--keep", "1"]);
    assert!(
        String::from_utf8_lossy(&pruned.stderr).contains("removed 1 report"),
        "{}",
        text(&pruned)
    );
    assert_eq!(ids(), [built[2].clone()]);

    let out = kiln
        .cmd()
        .args(["build", ctx.path().to_str().unwrap()])
        .env("KILN_HISTORY_KEEP", "some")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("KILN_HISTORY_KEEP=some: not a number of builds to keep"),
        "{stderr}"
    );
    assert_eq!(ids(), [built[2].clone()]);
}

/// Two builds on one store taking one `sharing=locked` cache mount: the
/// second waits for the first, and its report says so, in report.json
/// (which lock, who held it, how long) and on the page.
#[test]
fn a_wait_for_a_locked_cache_mount_is_in_the_report() {
    let Some(kiln) = kiln_with_base() else { return };
    let mount = "--mount=type=cache,target=/cache,id=shared-lock,sharing=locked";
    let holder = context(&format!(
        "FROM {BASE}\nRUN {mount} touch /cache/held && sleep 8 && echo held\n"
    ));
    let waiter = context(&format!(
        "FROM {BASE}\nRUN {mount} ls /cache && echo waited\n"
    ));
    let work = tempfile::tempdir().unwrap();
    let (first_dir, second_dir) = (work.path().join("first"), work.path().join("second"));
    let first = {
        let mut cmd = kiln.cmd();
        cmd.args(["build", "--report", first_dir.to_str().unwrap()])
            .arg(holder.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    // The first build holds the mount once its step runs.
    let started = std::time::Instant::now();
    while !holder_running(&kiln) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the first build's step never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (code, stderr) = build_with_report(&kiln, waiter.path(), &second_dir, &[]);
    assert_eq!(code, 0, "{stderr}");
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", text(&first));

    let report = read_json(&second_dir.join("report.json"));
    let step = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["instruction"].as_str().unwrap().starts_with("RUN"))
        .unwrap();
    let waits = step["lock_waits"].as_array().unwrap();
    assert_eq!(waits.len(), 1, "{step}");
    assert!(
        waits[0]["lock"].as_str().unwrap().contains("shared-lock"),
        "{waits:?}"
    );
    assert!(
        !waits[0]["holder"].as_str().unwrap().is_empty(),
        "{waits:?}"
    );
    assert!(waits[0]["waited_ms"].as_u64().unwrap() > 0, "{waits:?}");
    let page = fs_err::read_to_string(second_dir.join("report.html")).unwrap();
    assert!(page.contains("<details class=\"lock-waits\">"), "{page}");
    // The holder's own report has no wait.
    let held = read_json(&first_dir.join("report.json"));
    for s in held["steps"].as_array().unwrap() {
        assert!(s["lock_waits"].as_array().unwrap().is_empty(), "{s}");
    }
}

/// Whether a step holding the `shared-lock` cache mount is running: its
/// instance directory has the file the step makes first.
fn holder_running(kiln: &Kiln) -> bool {
    let mounts = kiln.root.path().join("cache-mounts");
    let Ok(keys) = fs_err::read_dir(&mounts) else {
        return false;
    };
    keys.filter_map(Result::ok).any(|key| {
        fs_err::read_dir(key.path())
            .map(|instances| {
                instances
                    .filter_map(Result::ok)
                    .any(|i| i.path().join("held").exists())
            })
            .unwrap_or(false)
    })
}
