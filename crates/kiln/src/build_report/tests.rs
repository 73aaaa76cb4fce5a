//! The report from scripted events: statuses, times, the critical path,
//! totals, the page's escaping, the history's keeping and pruning.

use std::time::{Duration, SystemTime};

use kiln_build::{Event, Hang as EventHang, Stream};

use super::history::History;
use super::model::{BuildStatus, Hang, Report, StepStatus};
use super::record::{BuildInfo, Outcome, Recorded, Transfer, assemble};

fn planned(step: u32, stage: &str, line: usize, text: &str) -> Event {
    Event::StepPlanned {
        step,
        stage: stage.into(),
        platform: None,
        line,
        text: text.into(),
    }
}

fn stage(name: &str, needs: &[&str]) -> Event {
    Event::StagePlanned {
        stage: name.into(),
        platform: None,
        needs: needs.iter().map(|n| n.to_string()).collect(),
    }
}

fn done(step: u32, ms: u64, layer: Option<(u64, &str)>) -> Event {
    Event::StepDone {
        step,
        duration_ms: ms,
        settled_after_ms: 0,
        cached: false,
        layer_size: layer.map(|(s, _)| s),
        layer_digest: layer.map(|(_, d)| d.to_string()),
        config_only: false,
    }
}

fn cached(step: u32, ms: u64, size: u64, digest: &str) -> Event {
    Event::StepDone {
        step,
        duration_ms: ms,
        settled_after_ms: 0,
        cached: true,
        layer_size: Some(size),
        layer_digest: Some(digest.into()),
        config_only: false,
    }
}

fn recorded(events: Vec<(u64, Event)>) -> Recorded {
    let mut r = Recorded {
        info: BuildInfo {
            dockerfile: "ctx/Dockerfile".into(),
            context: "ctx".into(),
            tags: vec!["app:1".into()],
        },
        started_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000)),
        ..Recorded::default()
    };
    for (at, e) in events {
        r.record(at, &e);
    }
    r
}

fn succeeded() -> Outcome {
    Outcome {
        status: BuildStatus::Succeeded,
        exit_code: 0,
        error: None,
    }
}

fn failed(error: &str) -> Outcome {
    Outcome {
        status: BuildStatus::Failed,
        exit_code: 1,
        error: Some(error.into()),
    }
}

/// Three stages: `build` (a cached COPY, a RUN, an ENV), `tools` (a RUN
/// beside it), and `app` on both (a COPY from a remote cache, then a RUN
/// that stalls, is retried, waits for a lock and fails).
fn three_stages() -> Recorded {
    let mut r = recorded(vec![
        (
            0,
            Event::BuildStarted {
                target: "app".into(),
                platforms: vec!["linux/amd64".into()],
                stages: vec!["build".into(), "tools".into(), "app".into()],
            },
        ),
        (0, stage("build", &[])),
        (0, planned(1, "build", 2, "[build 1/3] COPY . /src")),
        (0, planned(2, "build", 3, "[build 2/3] RUN make")),
        (0, planned(3, "build", 4, "[build 3/3] ENV X=1")),
        (0, stage("tools", &[])),
        (0, planned(6, "tools", 7, "[tools 1/1] RUN sleep 1")),
        (0, stage("app", &["build", "tools"])),
        (
            0,
            planned(4, "app", 9, "[app 1/2] COPY --from=build /out /app"),
        ),
        (
            0,
            planned(
                5,
                "app",
                10,
                "[app 2/2] RUN echo '<script>alert(1)</script>' && ./serve",
            ),
        ),
        (
            10,
            Event::StepKeyed {
                step: 1,
                key: "sha256:k1".into(),
            },
        ),
        (
            10,
            Event::StepCached {
                step: 1,
                from: None,
            },
        ),
        (10, cached(1, 5, 1000, "sha256:aaa")),
        (20, Event::StepStarted { step: 2 }),
        (100, Event::StepStarted { step: 6 }),
        (
            500,
            Event::StepLog {
                step: 2,
                stream: Stream::Stdout,
                line: "\x1b[32mcompiling\x1b[0m".into(),
            },
        ),
        (1500, done(6, 1400, None)),
        (
            2020,
            Event::StepCommitted {
                step: 2,
                size: 20_000,
                compressed: 5000,
                diff_ms: 1,
                archive_ms: 2,
                store_ms: 3,
                snapshot_ms: 4,
            },
        ),
        (2020, done(2, 2000, Some((5000, "sha256:bbb")))),
        (
            2025,
            Event::StepDone {
                step: 3,
                duration_ms: 1,
                settled_after_ms: 0,
                cached: false,
                layer_size: None,
                layer_digest: None,
                config_only: true,
            },
        ),
        (
            2100,
            Event::StepCached {
                step: 4,
                from: Some("localhost:5000/cache".into()),
            },
        ),
        (2100, cached(4, 70, 300, "sha256:ccc")),
        (2110, Event::StepStarted { step: 5 }),
        (
            2200,
            Event::StepLockWait {
                step: 5,
                lock: "cache mount /root/.cache (id \"pip\", sharing=locked)".into(),
                holder: "build B (pid 12), step #4".into(),
                waited_ms: 80,
            },
        ),
        (
            5000,
            Event::StepDiagnosis {
                step: 5,
                hang: EventHang::Stalled,
                text: "step 5 (Dockerfile:10) stalled: no output for 2s\n  <process tree>".into(),
            },
        ),
        (
            5001,
            Event::StepRetry {
                step: 5,
                attempt: 2,
                max: 2,
                reason: "stalled".into(),
                delay_ms: 10,
            },
        ),
        (
            6000,
            Event::StepFailed {
                step: 5,
                duration_ms: 3890,
                reason:
                    "process \"/bin/sh -c ./serve\" did not complete successfully: exit code: 7"
                        .into(),
                exit_code: Some(7),
            },
        ),
        (
            6000,
            Event::Warning {
                message: "FromAsCasing".into(),
                line: Some(1),
            },
        ),
    ]);
    r.transfers.insert(
        "pull blob localhost:5000/cache@sha256:ccc".into(),
        Transfer {
            push: false,
            digest: Some("sha256:ccc".into()),
            bytes: 300,
            at_ms: 2050,
        },
    );
    r.retries = 1;
    r
}

fn report() -> Report {
    assemble(
        &three_stages(),
        &failed("Dockerfile:10: exit code: 7"),
        "20250615T163320Z-0001",
        6010,
    )
}

#[test]
fn each_step_has_its_status_times_key_and_layer() {
    let r = report();
    assert_eq!(r.schema, "kiln.report/v1");
    assert_eq!(r.build.status, BuildStatus::Failed);
    assert_eq!(r.build.started_at, "2025-06-15T15:06:40Z");
    assert_eq!(r.build.target.as_deref(), Some("app"));
    let status: Vec<(u32, StepStatus)> = r.steps.iter().map(|s| (s.id, s.status)).collect();
    assert_eq!(
        status,
        [
            (1, StepStatus::Cached),
            (2, StepStatus::Run),
            (3, StepStatus::Config),
            (4, StepStatus::RemoteCached),
            (5, StepStatus::Failed),
            (6, StepStatus::Run),
        ]
    );
    let step = |id: u32| r.steps.iter().find(|s| s.id == id).unwrap();
    // The start is the end less the engine's own measure.
    assert_eq!((step(2).start_ms, step(2).end_ms), (Some(20), Some(2020)));
    assert_eq!(step(2).label, "build 2/3");
    assert_eq!(step(2).instruction, "RUN make");
    assert_eq!(step(2).platform.as_deref(), Some("linux/amd64"));
    let layer = step(2).layer.as_ref().unwrap();
    assert_eq!(
        (layer.size, layer.uncompressed_size, layer.digest.as_deref()),
        (5000, Some(20_000), Some("sha256:bbb"))
    );
    assert_eq!(step(2).output, ["compiling"], "escape sequences go");
    assert_eq!(step(1).cache_key.as_deref(), Some("sha256:k1"));
    assert_eq!(step(4).cache_from.as_deref(), Some("localhost:5000/cache"));
    assert_eq!(step(4).bytes_pulled, 300, "its layer's pull is its own");
    let failed = step(5);
    assert_eq!(failed.exit_code, Some(7));
    assert_eq!(failed.watchdog[0].hang, Hang::Stalled);
    assert_eq!(failed.retries[0].attempt, 2);
    assert_eq!(failed.lock_waits[0].waited_ms, 80);
    assert_eq!(failed.output, ["--- attempt 2/2, after: stalled"]);
    assert_eq!(r.warnings[0].line, Some(1));
}

#[test]
fn the_critical_path_goes_back_through_the_stage_waited_for() {
    let r = report();
    // app's first step waited for build (ended at 2025) and tools (1500):
    // build decided.
    assert_eq!(r.critical_path, [1, 2, 3, 4, 5]);
    let on: Vec<u32> = r
        .steps
        .iter()
        .filter(|s| s.critical)
        .map(|s| s.id)
        .collect();
    assert_eq!(on, [1, 2, 3, 4, 5]);
    assert_eq!(r.totals.critical_path_ms, 5 + 2000 + 1 + 70 + 3890);
}

/// The process chain of three_stages: build (step 2) and tools (step 6)
/// side by side, then app (step 5, two attempts).
#[test]
fn the_process_path_is_the_longest_chain_of_process_times_through_the_stages() {
    let mut recorded = three_stages();
    for (at, step, ms) in [
        (1990, 2, 1900),
        (1400, 6, 1300),
        (4000, 5, 1000),
        (5900, 5, 800),
    ] {
        recorded.record(
            at,
            &Event::StepProcess {
                step,
                duration_ms: ms,
                exit_code: 0,
            },
        );
    }
    let r = assemble(&recorded, &failed("x"), "20250615T163320Z-0001", 6010);
    let step = |id: u32| r.steps.iter().find(|s| s.id == id).unwrap();
    assert_eq!(step(5).process_ms, Some(1800), "every attempt counts");
    assert_eq!(step(1).process_ms, None, "a cache hit runs nothing");
    assert_eq!(r.totals.process_ms, 1900 + 1300 + 1800);
    // max(build 1900, tools 1300) + app 1800.
    assert_eq!(r.totals.process_critical_ms, 1900 + 1800);
}

#[test]
fn totals_count_steps_layers_and_transfers() {
    let r = report();
    let t = &r.totals;
    assert_eq!(
        (
            t.steps,
            t.run,
            t.cached,
            t.remote_cached,
            t.config,
            t.failed,
            t.not_run
        ),
        (6, 2, 1, 1, 1, 1, 0)
    );
    assert_eq!(
        (t.layers, t.layer_bytes, t.new_layer_bytes),
        (3, 6300, 5000)
    );
    assert_eq!(
        (
            r.transfers.bytes_pulled,
            r.transfers.blobs_pulled,
            r.transfers.retries
        ),
        (300, 1, 1)
    );
    let lanes: Vec<(&str, Option<u64>, Option<u64>)> = r
        .stages
        .iter()
        .map(|s| (s.name.as_str(), s.start_ms, s.end_ms))
        .collect();
    assert_eq!(
        lanes,
        [
            ("build", Some(5), Some(2025)),
            ("tools", Some(100), Some(1500)),
            ("app", Some(2030), Some(6000))
        ]
    );
}

#[test]
fn the_report_reads_back_as_it_was_written() {
    let r = report();
    let json = serde_json::to_string(&r).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["steps"][3]["status"], "remote-cached");
    assert_eq!(value["steps"][4]["watchdog"][0]["hang"], "stalled");
}

#[test]
fn a_step_running_when_the_build_stopped_failed_and_the_rest_did_not_run() {
    let r = assemble(
        &recorded(vec![
            (0, stage("s", &[])),
            (0, planned(1, "s", 2, "[s 1/2] RUN sleep 100")),
            (0, planned(2, "s", 3, "[s 2/2] RUN true")),
            (50, Event::StepStarted { step: 1 }),
        ]),
        &Outcome {
            status: BuildStatus::Cancelled,
            exit_code: 130,
            error: Some("build cancelled".into()),
        },
        "x",
        900,
    );
    assert_eq!(r.steps[0].status, StepStatus::Failed);
    assert_eq!(
        (r.steps[0].start_ms, r.steps[0].end_ms),
        (Some(50), Some(900))
    );
    assert_eq!(r.steps[1].status, StepStatus::NotRun);
    assert_eq!(r.steps[1].start_ms, None);
    assert_eq!(r.critical_path, [1]);
}

#[test]
fn a_step_recorded_after_its_layer_was_written_in_the_background_ends_with_it() {
    // Step 1 runs 0-1000 ms, its layer is written by 1300; step 2 runs on
    // its files from 1000 and is sealed at 4000, when step 1 is recorded.
    let settled = Event::StepDone {
        step: 1,
        duration_ms: 1300,
        settled_after_ms: 2700,
        cached: false,
        layer_size: Some(10),
        layer_digest: Some("sha256:aaa".into()),
        config_only: false,
    };
    let r = assemble(
        &recorded(vec![
            (0, stage("s", &[])),
            (0, planned(1, "s", 2, "[s 1/2] RUN make")),
            (0, planned(2, "s", 3, "[s 2/2] RUN sleep 3")),
            (0, Event::StepStarted { step: 1 }),
            (1000, Event::StepStarted { step: 2 }),
            (4000, settled),
            (4050, done(2, 3050, None)),
        ]),
        &succeeded(),
        "x",
        4100,
    );
    let times = |i: usize| (r.steps[i].start_ms, r.steps[i].end_ms);
    assert_eq!(times(0), (Some(0), Some(1300)));
    assert_eq!(times(1), (Some(1000), Some(4050)));
    // 0-4050: the 300 ms both ran count once.
    assert_eq!(r.totals.critical_path_ms, 4050);
}

#[test]
fn a_build_that_failed_before_planning_has_a_report_too() {
    let r = assemble(
        &recorded(Vec::new()),
        &failed("Dockerfile:1: unknown instruction"),
        "x",
        3,
    );
    assert!(r.steps.is_empty() && r.stages.is_empty() && r.critical_path.is_empty());
    let page = super::html::render(&r);
    assert!(page.contains("unknown instruction"), "{page}");
    assert!(page.contains("No stage was planned"));
}

#[test]
fn the_page_escapes_what_the_dockerfile_says() {
    let page = super::html::render(&report());
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    // The embedded JSON cannot close its element either.
    let data = page
        .split("<script type=\"application/json\" id=\"kiln-report\">")
        .nth(1)
        .unwrap();
    let (json, _) = data.split_once("</script>").unwrap();
    assert!(json.contains("\\u003cscript\\u003ealert(1)"));
    let back: Report = serde_json::from_str(json).unwrap();
    assert_eq!(back, report());
    assert_eq!(page.matches("<script").count(), 1, "no script but the data");
    for outside in ["http://", "https://", "src=", "@import", "url("] {
        assert!(!page.contains(outside), "{outside} in the page");
    }
}

#[test]
fn the_page_has_a_lane_per_stage_and_a_bar_per_step_that_ran() {
    let page = super::html::render(&report());
    assert_eq!(page.matches("class=\"lane\"").count(), 3);
    for stage in ["build", "tools", "app"] {
        assert!(page.contains(&format!("data-stage=\"{stage}\"")), "{stage}");
    }
    for id in 1..=6 {
        assert!(page.contains(&format!("data-step=\"{id}\"")), "step {id}");
        assert!(page.contains(&format!("id=\"step-{id}\"")), "step {id}");
    }
    assert!(page.contains("class=\"bar s-remote-cached critical\""));
    assert!(
        page.contains("class=\"bar s-run\" href=\"#step-6\""),
        "off the path"
    );
    assert!(page.contains("<details class=\"diagnosis\" data-hang=\"stalled\">"));
    assert!(page.contains("&lt;process tree&gt;"));
    // The lock wait of step 5: what, whose, how long.
    assert!(page.contains("<details class=\"lock-waits\">"));
    assert!(page.contains("build B (pid 12), step #4"), "lock holder");
}

/// A stage on an image whose layers a step of a stage built on it fetched:
/// the bytes count for the base and for that step, not for a step that
/// ran before the pull nor for one of another stage.
#[test]
fn base_layer_pulls_count_for_the_base_and_the_step_that_ran() {
    let mut r = recorded(vec![
        (
            0,
            Event::BuildStarted {
                target: "app".into(),
                platforms: vec!["linux/amd64".into()],
                stages: vec!["base".into(), "app".into(), "other".into()],
            },
        ),
        (0, stage("base", &[])),
        (
            5,
            Event::StageBase {
                stage: "base".into(),
                platform: None,
                line: 1,
                image: "python:3.12".into(),
                manifest: "sha256:m".into(),
                expected_platform: "linux/amd64".into(),
                image_platform: "linux/amd64".into(),
                layers: vec!["sha256:l1".into(), "sha256:l2".into()],
            },
        ),
        (0, planned(1, "base", 2, "[base 1/1] ENV A=1")),
        (0, stage("app", &["base"])),
        (0, planned(2, "app", 4, "[app 1/1] RUN make")),
        (0, stage("other", &[])),
        (0, planned(3, "other", 6, "[other 1/1] RUN true")),
        (10, done(1, 0, None)),
        (100, Event::StepStarted { step: 2 }),
        (100, Event::StepStarted { step: 3 }),
        (900, done(2, 800, Some((10, "sha256:new")))),
        (900, done(3, 800, Some((10, "sha256:other")))),
    ]);
    for (digest, bytes, at_ms) in [("sha256:l1", 1000, 150), ("sha256:l2", 24, 950)] {
        r.transfers.insert(
            format!("pull blob docker.io/library/python@{digest}"),
            Transfer {
                push: false,
                digest: Some(digest.into()),
                bytes,
                at_ms,
            },
        );
    }
    let report = assemble(&r, &succeeded(), "20250615T163320Z-0002", 1000);
    let base = report.stages[0].base.as_ref().unwrap();
    assert_eq!(
        (base.image.as_str(), base.layers, base.bytes_pulled),
        ("python:3.12", 2, 1024)
    );
    let pulled = |id: u32| {
        let s = report.steps.iter().find(|s| s.id == id).unwrap();
        (s.base_bytes_pulled, s.bytes_pulled)
    };
    // The pull at 950 ms happened after every step: the export's.
    assert_eq!(pulled(2), (1000, 0));
    assert_eq!(pulled(3), (0, 0));
    assert_eq!(pulled(1), (0, 0));
    let page = super::html::render(&report);
    assert!(page.contains("pulled 1000 B of base layers"), "{page}");
    assert!(page.contains("from python:3.12"));
}

#[test]
fn the_history_keeps_as_many_builds_as_kiln_history_keep_says() {
    use std::ffi::OsStr;
    assert_eq!(History::keep_from(None).unwrap(), History::KEEP);
    assert_eq!(History::keep_from(Some(OsStr::new("3"))).unwrap(), 3);
    assert_eq!(History::keep_from(Some(OsStr::new("0"))).unwrap(), 0);
    let bad = History::keep_from(Some(OsStr::new("ten"))).unwrap_err();
    assert!(bad.to_string().contains("KILN_HISTORY_KEEP=ten"), "{bad:#}");
    let root = tempfile::tempdir().unwrap();
    let history = History::new(root.path()).keeping(2);
    for id in [
        "20250101T000000Z-aaaa",
        "20250102T000000Z-bbbb",
        "20250103T000000Z-cccc",
    ] {
        history.save(&report_with_id(id), "").unwrap();
    }
    let ids: Vec<String> = history.list().unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(ids, ["20250103T000000Z-cccc", "20250102T000000Z-bbbb"]);
    assert_eq!(History::new(root.path()).prune(0).unwrap(), 2);
    assert!(history.list().unwrap().is_empty());
}

fn report_with_id(id: &str) -> Report {
    let mut r = report();
    r.id = id.to_string();
    r
}

#[test]
fn the_history_keeps_the_last_builds_newest_first() {
    let root = tempfile::tempdir().unwrap();
    let history = History::new(root.path());
    assert!(history.list().unwrap().is_empty());
    for id in [
        "20250101T000000Z-aaaa",
        "20250102T000000Z-bbbb",
        "20250103T000000Z-cccc",
    ] {
        let dir = history.save(&report_with_id(id), "<html></html>").unwrap();
        assert!(dir.join("report.json").is_file() && dir.join("report.html").is_file());
    }
    let ids: Vec<String> = history.list().unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(
        ids,
        [
            "20250103T000000Z-cccc",
            "20250102T000000Z-bbbb",
            "20250101T000000Z-aaaa"
        ]
    );
    let entry = &history.list().unwrap()[0];
    assert_eq!(
        (
            entry.status.as_str(),
            entry.target.as_str(),
            entry.steps,
            entry.cached
        ),
        ("failed", "app", 6, 2)
    );
    // No temp directory is left behind.
    let names: Vec<String> = fs_err::read_dir(root.path().join("history"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");

    history.prune(2).unwrap();
    let ids: Vec<String> = history.list().unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(ids, ["20250103T000000Z-cccc", "20250102T000000Z-bbbb"]);
}

#[test]
fn a_build_is_found_by_its_id_or_the_start_of_it() {
    let root = tempfile::tempdir().unwrap();
    let history = History::new(root.path());
    for id in [
        "20250101T000000Z-aaaa",
        "20250101T000000Z-abbb",
        "20250102T000000Z-cccc",
    ] {
        history.save(&report_with_id(id), "").unwrap();
    }
    let found = |id: &str| history.find(id).map(|p| p.file_name().unwrap().to_owned());
    assert_eq!(found("20250102").unwrap(), "20250102T000000Z-cccc");
    assert_eq!(
        found("20250101T000000Z-aaaa").unwrap(),
        "20250101T000000Z-aaaa"
    );
    let ambiguous = history.find("20250101").unwrap_err().to_string();
    assert!(ambiguous.contains("names 2 builds"), "{ambiguous}");
    let missing = history.find("2024").unwrap_err().to_string();
    assert!(missing.contains("kiln history"), "{missing}");
    assert!(history.find("").is_err());
}

#[test]
fn ids_sort_as_the_builds_started() {
    let at = |ms| super::record::new_id(SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
    let (a, b, c) = (
        at(1_750_000_000_000),
        at(1_750_000_000_009),
        at(1_750_000_001_000),
    );
    assert!(a.starts_with("20250615T150640.000Z-"), "{a}");
    assert_eq!(a.len(), "20250615T150640.000Z-0000".len());
    // Builds of one second, as CI and tests start them, keep their order.
    assert!(a < b && b < c, "{a} {b} {c}");
}

/// Every key the JSON has is described in docs/REPORT.md.
#[test]
fn docs_report_md_describes_every_field() {
    let doc = include_str!("../../../../docs/REPORT.md");
    let value = serde_json::to_value(report()).unwrap();
    let mut keys = std::collections::BTreeSet::new();
    collect_keys(&value, &mut keys);
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !doc.contains(&format!("`{k}`")))
        .collect();
    assert!(missing.is_empty(), "docs/REPORT.md lacks {missing:?}");
    for status in [
        "run",
        "cached",
        "remote-cached",
        "config",
        "failed",
        "not-run",
    ] {
        assert!(doc.contains(&format!("`{status}`")), "{status}");
    }
}

fn collect_keys(value: &serde_json::Value, keys: &mut std::collections::BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                keys.insert(k.clone());
                collect_keys(v, keys);
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                collect_keys(v, keys);
            }
        }
        _ => {}
    }
}

/// A step's layer written in the background ends it after the next step
/// of its lane: the path still ends at the lane's last step, and runs
/// through both.
#[test]
fn a_step_whose_layer_ended_after_the_next_step_is_its_predecessor() {
    let r = assemble(
        &recorded(vec![
            (0, stage("s", &[])),
            (0, planned(1, "s", 2, "[s 1/3] RUN make")),
            (0, planned(2, "s", 3, "[s 2/3] RUN false")),
            (0, planned(3, "s", 4, "[s 3/3] RUN true")),
            (0, Event::StepStarted { step: 1 }),
            (100, Event::StepStarted { step: 2 }),
            (
                150,
                Event::StepFailed {
                    step: 2,
                    duration_ms: 50,
                    reason: "exit code: 1".into(),
                    exit_code: Some(1),
                },
            ),
            (400, done(1, 400, Some((10, "sha256:aa")))),
        ]),
        &failed("exit code: 1"),
        "x",
        400,
    );
    assert_eq!(r.steps[0].end_ms, Some(400));
    assert_eq!(r.critical_path, [1, 2]);
}

#[test]
fn each_platform_has_its_own_lanes_and_chain() {
    let on = |p: &str| Some(p.to_string());
    let stage_on = |name: &str, p: &str, needs: &[&str]| Event::StagePlanned {
        stage: name.into(),
        platform: on(p),
        needs: needs.iter().map(|n| n.to_string()).collect(),
    };
    let step_on = |step: u32, stage: &str, p: &str| Event::StepPlanned {
        step,
        stage: stage.into(),
        platform: on(p),
        line: 2,
        text: format!("[{stage} 1/1] RUN make"),
    };
    let r = assemble(
        &recorded(vec![
            (
                0,
                Event::BuildStarted {
                    target: "app".into(),
                    platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
                    stages: vec!["base".into(), "app".into()],
                },
            ),
            (0, stage_on("base", "linux/amd64", &[])),
            (0, step_on(1, "base", "linux/amd64")),
            (0, stage_on("app", "linux/amd64", &["base"])),
            (0, step_on(2, "app", "linux/amd64")),
            (0, stage_on("base", "linux/arm64", &[])),
            (0, step_on(3, "base", "linux/arm64")),
            (0, stage_on("app", "linux/arm64", &["base"])),
            (0, step_on(4, "app", "linux/arm64")),
            (100, done(1, 100, None)),
            (300, done(3, 300, None)),
            (400, done(2, 300, None)),
            (900, done(4, 600, None)),
        ]),
        &succeeded(),
        "x",
        900,
    );
    let lanes: Vec<(&str, &str, &[u32])> = r
        .stages
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.platform.as_deref().unwrap(),
                &s.steps[..],
            )
        })
        .collect();
    assert_eq!(
        lanes,
        [
            ("base", "linux/amd64", &[1][..]),
            ("app", "linux/amd64", &[2][..]),
            ("base", "linux/arm64", &[3][..]),
            ("app", "linux/arm64", &[4][..]),
        ]
    );
    // arm64 ended last: its chain is the path, never amd64's base.
    assert_eq!(r.critical_path, [3, 4]);
    let page = super::html::render(&r);
    assert_eq!(page.matches("class=\"lane\"").count(), 4);
    assert!(page.contains("data-platform=\"linux/arm64\""));
    assert!(page.contains("<h3>app linux/arm64</h3>"));
}
