//! The views on scripted builds: exact plain and JSON output, and the
//! terminal view replayed through a small terminal emulator.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_build::{Event, Stream};

use super::*;

/// A writer whose bytes the test reads back.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8(lock(&self.0).clone()).unwrap()
    }
}

fn planned(step: u32, stage: &str, line: usize, text: &str) -> Event {
    Event::StepPlanned {
        step,
        stage: stage.into(),
        platform: Some("linux/amd64".into()),
        line,
        text: text.into(),
    }
}

fn log(step: u32, line: &str) -> Event {
    Event::StepLog {
        step,
        stream: Stream::Stdout,
        line: line.into(),
    }
}

fn done(step: u32, ms: u64, layer: Option<u64>) -> Event {
    Event::StepDone {
        step,
        duration_ms: ms,
        settled_after_ms: 0,
        cached: false,
        layer_size: layer,
        layer_digest: None,
        config_only: false,
    }
}

/// Two stages, `build` and `app`, whose RUN steps run at once and
/// interleave their output; `build`'s fails.
fn two_stage_build() -> Vec<(u64, Event)> {
    vec![
        (
            0,
            Event::BuildStarted {
                target: "app".into(),
                platforms: vec!["linux/amd64".into()],
                stages: vec!["build".into(), "app".into()],
            },
        ),
        // The engine names each step's place itself.
        (
            0,
            planned(1, "build", 1, "[build 1/3] FROM alpine:3.20 AS build"),
        ),
        (0, planned(2, "build", 2, "[build 2/3] COPY . /src")),
        (0, planned(3, "build", 3, "[build 3/3] RUN make")),
        (0, planned(4, "app", 5, "[app 1/3] FROM alpine:3.20 AS app")),
        (0, planned(5, "app", 6, "[app 2/3] RUN apk add\n    curl")),
        (
            0,
            planned(6, "app", 7, "[app 3/3] COPY --from=build /out /app"),
        ),
        (
            0,
            Event::StepCached {
                step: 1,
                from: None,
            },
        ),
        (
            0,
            Event::StepDone {
                step: 1,
                duration_ms: 0,
                settled_after_ms: 0,
                cached: true,
                layer_size: Some(3_500_000),
                layer_digest: None,
                config_only: false,
            },
        ),
        (
            0,
            Event::StepCached {
                step: 4,
                from: None,
            },
        ),
        (10, Event::StepStarted { step: 2 }),
        (110, done(2, 100, Some(1234))),
        (200, Event::StepStarted { step: 3 }),
        (200, Event::StepStarted { step: 5 }),
        (732, log(3, "compiling...")),
        (
            800,
            log(
                5,
                "fetch https://dl-cdn.alpinelinux.org/x86_64/APKINDEX.tar.gz",
            ),
        ),
        (900, log(3, "\x1b[32mlinking\x1b[0m")),
        (
            950,
            Event::Warning {
                message: "FromAsCasing: 'as' and 'FROM' keywords' casing do not match".into(),
                line: Some(5),
            },
        ),
        (2000, done(5, 1800, Some(2_500_000))),
        (
            2500,
            Event::StepFailed {
                step: 3,
                duration_ms: 2300,
                reason: "process \"/bin/sh -c make\" did not complete successfully: exit code: 2"
                    .into(),
                exit_code: Some(2),
            },
        ),
        (
            2600,
            Event::BuildDone {
                image: None,
                duration_ms: 2600,
            },
        ),
    ]
}

fn play(view: &Renderer, t0: Instant, events: Vec<(u64, Event)>) {
    for (ms, event) in events {
        view.handle_at(event, t0 + Duration::from_millis(ms));
    }
}

#[test]
fn plain_numbers_steps_as_buildkit_does() {
    let out = Buffer::default();
    let view = Renderer::with_output(ProgressMode::Plain, Output::writer(out.clone()));
    play(&view, Instant::now(), two_stage_build());
    let expected = "\
#1 [build 1/3] FROM alpine:3.20 AS build
#1 CACHED

#4 [app 1/3] FROM alpine:3.20 AS app
#4 CACHED

#2 [build 2/3] COPY . /src
#2 DONE 0.1s

#3 [build 3/3] RUN make
#3 ...

#5 [app 2/3] RUN apk add curl
#5 ...

#3 [build 3/3] RUN make
#3 0.532 compiling...
#3 ...

#5 [app 2/3] RUN apk add curl
#5 0.600 fetch https://dl-cdn.alpinelinux.org/x86_64/APKINDEX.tar.gz
#5 ...

#3 [build 3/3] RUN make
#3 0.700 linking
#3 ...

WARNING: FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 5)

#5 [app 2/3] RUN apk add curl
#5 DONE 1.8s

#3 [build 3/3] RUN make
#3 ERROR: process \"/bin/sh -c make\" did not complete successfully: exit code: 2

------
 > [build 3/3] RUN make:
0.532 compiling...
0.700 linking
------
ERROR: process \"/bin/sh -c make\" did not complete successfully: exit code: 2

STEP  STAGE  INSTRUCTION                  TIME  STATUS     LAYER
#1    build  FROM alpine:3.20 AS build       -  CACHED   3.3 MiB
#2    build  COPY . /src                  0.1s  run      1.2 KiB
#3    build  RUN make                     2.3s  FAILED         -
#4    app    FROM alpine:3.20 AS app         -  CACHED         -
#5    app    RUN apk add curl             1.8s  run      2.4 MiB
#6    app    COPY --from=build /out /app     -  not run        -
6 steps: 2 run, 2 cached, 1 failed, 1 not run in 2.6s
";
    assert_eq!(out.text(), expected, "got:\n{}", out.text());
    // The summary is printed once, even when the CLI finishes the view too.
    view.finish();
    assert_eq!(out.text(), expected);
}

#[test]
fn plain_reports_transfers_now_and_then() {
    let out = Buffer::default();
    let view = Renderer::with_output(ProgressMode::Plain, Output::writer(out.clone()));
    let t0 = Instant::now();
    let progress = |done| Event::StepProgress {
        step: 1,
        label: "sha256:0123456789ab".into(),
        done,
        total: Some(40 << 20),
    };
    play(
        &view,
        t0,
        vec![
            (0, planned(1, "stage-0", 1, "FROM python:3.12")),
            (0, Event::StepStarted { step: 1 }),
            (100, progress(1 << 20)),
            (2000, progress(10 << 20)),
            (5200, progress(20 << 20)),
            (6000, progress(40 << 20)),
            (
                6100,
                Event::StepNote {
                    step: 1,
                    text: "retry 1 in 0.5s: connection reset".into(),
                },
            ),
            (6200, done(1, 6200, None)),
        ],
    );
    assert_eq!(
        out.text(),
        "\
#1 [stage-0 1/1] FROM python:3.12
#1 sha256:0123456789ab 1.0 MiB / 40.0 MiB 0.1s
#1 sha256:0123456789ab 20.0 MiB / 40.0 MiB 5.2s
#1 sha256:0123456789ab 40.0 MiB / 40.0 MiB 6.0s done
#1 retry 1 in 0.5s: connection reset
#1 DONE 6.2s
"
    );
}

#[test]
fn plain_says_where_a_slow_commit_spent_its_time() {
    let out = Buffer::default();
    let view = Renderer::with_output(ProgressMode::Plain, Output::writer(out.clone()));
    let committed = |step, archive_ms| Event::StepCommitted {
        step,
        size: 2 << 30,
        compressed: 1 << 30,
        diff_ms: 20,
        archive_ms,
        store_ms: 400,
        snapshot_ms: 80,
    };
    play(
        &view,
        Instant::now(),
        vec![
            (0, planned(1, "stage-0", 2, "RUN gen 2048")),
            (0, planned(2, "stage-0", 3, "RUN touch x")),
            (0, Event::StepStarted { step: 1 }),
            (9000, committed(1, 8600)),
            (9100, done(1, 9100, Some(1 << 30))),
            (9100, Event::StepStarted { step: 2 }),
            (9200, committed(2, 100)),
            (9300, done(2, 200, Some(100))),
        ],
    );
    assert_eq!(
        out.text(),
        "\
#1 [stage-0 1/2] RUN gen 2048
#1 layer: 2.0 GiB of tar as 1.0 GiB in 9.1s (diff 0.0s, archive 8.6s, store 0.4s, snapshot 0.1s)
#1 DONE 9.1s

#2 [stage-0 2/2] RUN touch x
#2 DONE 0.2s
"
    );
}

#[test]
fn config_only_steps_are_neither_run_nor_cached() {
    let out = Buffer::default();
    let view = Renderer::with_output(ProgressMode::Plain, Output::writer(out.clone()));
    let config = |step| Event::StepDone {
        step,
        duration_ms: 0,
        settled_after_ms: 0,
        cached: false,
        layer_size: None,
        layer_digest: None,
        config_only: true,
    };
    play(
        &view,
        Instant::now(),
        vec![
            (0, planned(1, "stage-0", 2, "COPY app /app")),
            (0, planned(2, "stage-0", 3, "ENV MODE=prod")),
            (0, planned(3, "stage-0", 4, "CMD [\"/app\"]")),
            (
                0,
                Event::StepCached {
                    step: 1,
                    from: None,
                },
            ),
            (
                0,
                Event::StepDone {
                    step: 1,
                    duration_ms: 0,
                    settled_after_ms: 0,
                    cached: true,
                    layer_size: Some(1024),
                    layer_digest: None,
                    config_only: false,
                },
            ),
            (0, config(2)),
            (0, config(3)),
        ],
    );
    view.finish();
    let text = out.text();
    let row = |id: &str| -> Vec<String> {
        // The summary's row: the last line about the step.
        text.lines()
            .rfind(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("no row {id}: {text}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(row("#2 ")[4..], ["-", "config", "-"], "{text}");
    assert_eq!(row("#3 ")[4..], ["-", "config", "-"], "{text}");
    assert!(
        text.contains("3 steps: 0 run, 1 cached, 2 config only in"),
        "{text}"
    );
}

#[test]
fn json_is_one_event_per_line() {
    let out = Buffer::default();
    let view = Renderer::with_output(ProgressMode::Json, Output::writer(out.clone()));
    let events = two_stage_build();
    let count = events.len();
    play(&view, Instant::now(), events);
    view.finish();
    let text = out.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), count, "{text}");
    assert_eq!(
        lines[1],
        r#"{"event":"step_planned","step":1,"stage":"build","platform":"linux/amd64","line":1,"text":"[build 1/3] FROM alpine:3.20 AS build"}"#
    );
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["event"].is_string(), "{line}");
    }
    // Output is passed on as the engine sent it, escapes included.
    assert!(
        text.contains(r#""line":"\u001b[32mlinking\u001b[0m""#),
        "{text}"
    );
    let last: serde_json::Value = serde_json::from_str(lines[count - 1]).unwrap();
    assert_eq!(last["event"], "build_done");
    assert_eq!(last["duration_ms"], 2600);
}

#[test]
fn quiet_shows_only_the_failure() {
    let out = Buffer::default();
    let view = Renderer::with_output(ProgressMode::Quiet, Output::writer(out.clone()));
    play(&view, Instant::now(), two_stage_build());
    view.finish();
    assert_eq!(
        out.text(),
        "\
------
 > [build 3/3] RUN make:
0.532 compiling...
0.700 linking
------
ERROR: process \"/bin/sh -c make\" did not complete successfully: exit code: 2
"
    );
}

#[test]
fn several_platforms_name_theirs() {
    let out = Buffer::default();
    let view = Renderer::with_output(ProgressMode::Plain, Output::writer(out.clone()));
    let on = |step, platform: &str| Event::StepPlanned {
        step,
        stage: "build".into(),
        platform: Some(platform.into()),
        line: 2,
        text: "RUN make".into(),
    };
    play(
        &view,
        Instant::now(),
        vec![
            (0, on(1, "linux/amd64")),
            (0, on(2, "linux/arm64")),
            (0, Event::StepStarted { step: 2 }),
            (0, Event::StepStarted { step: 7 }),
        ],
    );
    assert_eq!(
        out.text(),
        "#2 [linux/arm64 build 1/1] RUN make\n#2 ...\n\n#7 [step 7]\n"
    );
}

#[test]
fn the_engines_step_names_get_the_platform_when_there_are_several() {
    let out = Buffer::default();
    let view = Renderer::with_output(ProgressMode::Plain, Output::writer(out.clone()));
    let on = |step, platform: &str| Event::StepPlanned {
        step,
        stage: "build".into(),
        platform: Some(platform.into()),
        line: 2,
        text: "[build 2/2] RUN make".into(),
    };
    let t0 = Instant::now();
    play(
        &view,
        t0,
        vec![
            (0, on(1, "linux/amd64")),
            (0, on(2, "linux/arm64")),
            (
                0,
                Event::StepCached {
                    step: 2,
                    from: None,
                },
            ),
        ],
    );
    assert_eq!(
        out.text(),
        "#2 [linux/arm64 build 2/2] RUN make\n#2 CACHED\n"
    );
}

/// A step the watchdog finds stalled: diagnosed, retried, then done.
fn stalled_then_retried() -> Vec<(u64, Event)> {
    vec![
        (0, planned(1, "build", 3, "[build 2/2] RUN ./flaky")),
        (0, Event::StepStarted { step: 1 }),
        (100, log(1, "try")),
        (
            5000,
            Event::StepDiagnosis {
                step: 1,
                hang: kiln_build::Hang::Stalled,
                text: "step 1 (Dockerfile:3) stalled: no output for 5s\n  /bin/sh -c ./flaky\n  process tree:\n    1 sh S pipe_read\n"
                    .into(),
            },
        ),
        (
            5100,
            Event::StepRetry {
                step: 1,
                attempt: 2,
                max: 3,
                reason: "stalled: no output for 5s".into(),
                delay_ms: 1000,
            },
        ),
        (6500, log(1, "ok")),
        (7000, done(1, 7000, None)),
    ]
}

#[test]
fn plain_shows_the_diagnosis_and_the_retry() {
    let out = Buffer::default();
    let view = Renderer::with_output(ProgressMode::Plain, Output::writer(out.clone()));
    play(&view, Instant::now(), stalled_then_retried());
    assert_eq!(
        out.text(),
        "\
#1 [build 2/2] RUN ./flaky
#1 0.100 try
#1 step 1 (Dockerfile:3) stalled: no output for 5s
#1   /bin/sh -c ./flaky
#1   process tree:
#1     1 sh S pipe_read
#1 RETRY 2/3 in 1.0s: stalled: no output for 5s
#1 6.500 ok
#1 DONE 7.0s
"
    );
}

#[test]
fn quiet_shows_the_diagnosis_of_a_hang() {
    let out = Buffer::default();
    let view = Renderer::with_output(ProgressMode::Quiet, Output::writer(out.clone()));
    play(&view, Instant::now(), stalled_then_retried());
    view.finish();
    assert!(
        out.text()
            .starts_with("step 1 (Dockerfile:3) stalled: no output for 5s\n  /bin/sh -c ./flaky\n"),
        "{}",
        out.text()
    );
    assert_eq!(out.text().lines().count(), 4);
}

#[test]
fn tty_shows_the_diagnosis_and_the_retry_above_the_live_part() {
    let (term, output) = FakeTerm::new(70, 20);
    let view = Renderer::with_output(ProgressMode::Tty, output);
    let t0 = Instant::now();
    let mut events = stalled_then_retried();
    let last = events.pop().unwrap();
    play(&view, t0, events);
    view.redraw_at(t0 + Duration::from_millis(6600));
    assert_eq!(
        term.screen(),
        [
            "! step 1 (Dockerfile:3) stalled: no output for 5s",
            "  /bin/sh -c ./flaky",
            "  process tree:",
            "    1 sh S pipe_read",
            "↻ [build 2/2] RUN ./flaky: attempt 2/3 in 1.0s: stalled: no output for 5s",
            "[+] Building 6.6s (0/1)",
            "⠦ [build 2/2] RUN ./flaky                                        6.6s",
            "    ok",
        ]
    );
    play(&view, t0, vec![last]);
    let screen = term.screen();
    assert_eq!(
        screen[5],
        "✔ [build 2/2] RUN ./flaky                                        7.0s"
    );
}

#[test]
fn many_threads_never_mix_lines() {
    let out = Buffer::default();
    let view = Renderer::with_output(ProgressMode::Plain, Output::writer(out.clone()));
    let sink = view.sink();
    for step in 1..=4 {
        sink(planned(step, "s", 1, "RUN x"));
    }
    let threads: Vec<_> = (1..=4)
        .map(|step| {
            let sink = Arc::clone(&sink);
            std::thread::spawn(move || {
                sink(Event::StepStarted { step });
                for i in 0..200 {
                    sink(log(step, &format!("step {step} line {i}")));
                }
                sink(done(step, 5, None));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    view.finish();
    let text = out.text();
    let mut seen = [0; 5];
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix('#')
            && let Some((n, body)) = rest.split_once(' ')
            && let Some((_, log)) = body.split_once(' ')
            && let Some(rest) = log.strip_prefix("step ")
        {
            let (step, i) = rest.split_once(" line ").unwrap();
            assert_eq!(n, step, "{line}");
            let step: usize = step.parse().unwrap();
            assert_eq!(i.parse::<usize>().unwrap(), seen[step], "{line}");
            seen[step] += 1;
        }
    }
    assert_eq!(seen[1..], [200; 4]);
    assert!(text.contains("4 steps: 4 run, 0 cached in"), "{text}");
}

// The terminal view.

/// A terminal that shows what the bytes written to it draw: lines, `\r`,
/// `\n`, cursor up (`ESC [ n A`) and erase below (`ESC [ J`). Scrolled-out
/// lines stay, as in a terminal's scrollback.
#[derive(Default)]
struct Vt {
    lines: Vec<Vec<char>>,
    row: usize,
    col: usize,
}

impl Vt {
    fn feed(&mut self, bytes: &str) {
        let mut chars = bytes.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\n' => {
                    self.row += 1;
                    self.col = 0;
                }
                '\r' => self.col = 0,
                '\x1b' => {
                    assert_eq!(chars.next(), Some('['), "only CSI sequences");
                    let mut n = String::new();
                    while let Some(d) = chars.next_if(|c| c.is_ascii_digit()) {
                        n.push(d);
                    }
                    match chars.next() {
                        Some('A') => {
                            let n: usize = n.parse().unwrap_or(1);
                            assert!(n <= self.row, "cursor up past the top");
                            self.row -= n;
                        }
                        Some('J') => {
                            self.lines.truncate(self.row + 1);
                            if let Some(line) = self.lines.get_mut(self.row) {
                                line.truncate(self.col);
                            }
                        }
                        other => panic!("unexpected escape {other:?}"),
                    }
                }
                c => {
                    while self.lines.len() <= self.row {
                        self.lines.push(Vec::new());
                    }
                    let line = &mut self.lines[self.row];
                    while line.len() < self.col {
                        line.push(' ');
                    }
                    if self.col < line.len() {
                        line[self.col] = c;
                    } else {
                        line.push(c);
                    }
                    self.col += 1;
                }
            }
        }
    }

    fn screen(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.lines.iter().map(|l| l.iter().collect()).collect();
        while lines.last().is_some_and(String::is_empty) {
            lines.pop();
        }
        lines
    }
}

/// A terminal of a size the test can change, and what it shows.
struct FakeTerm {
    out: Buffer,
    size: Arc<Mutex<TermSize>>,
}

impl FakeTerm {
    fn new(columns: usize, rows: usize) -> (FakeTerm, Output) {
        let out = Buffer::default();
        let size = Arc::new(Mutex::new(TermSize { columns, rows }));
        let shared = Arc::clone(&size);
        let output = Output::terminal(out.clone(), move || Some(*lock(&shared)));
        (FakeTerm { out, size }, output)
    }

    fn screen(&self) -> Vec<String> {
        let mut vt = Vt::default();
        vt.feed(&self.out.text());
        vt.screen()
    }

    fn resize(&self, columns: usize, rows: usize) {
        *lock(&self.size) = TermSize { columns, rows };
    }
}

fn assert_fits(screen: &[String], columns: usize) {
    for line in screen {
        assert!(
            text::width(line) < columns,
            "{line:?} is wider than {columns} columns"
        );
    }
}

#[test]
fn tty_shows_running_steps_and_collapses_finished_ones() {
    let (term, output) = FakeTerm::new(60, 20);
    let view = Renderer::with_output(ProgressMode::Auto, output);
    let t0 = Instant::now();
    let mut events = two_stage_build();
    // Up to the warning: steps 3 and 5 still run.
    events.truncate(18);
    play(&view, t0, events);
    view.redraw_at(t0 + Duration::from_millis(1000));
    let screen = term.screen();
    assert_eq!(
        screen,
        [
            "✔ [build 1/3] FROM alpine:3.20 AS build              CACHED",
            "✔ [app 1/3] FROM alpine:3.20 AS app                  CACHED",
            "✔ [build 2/3] COPY . /src                              0.1s",
            "WARNING: FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 5)",
            "[+] Building 1.0s (3/6)",
            "⠋ [build 3/3] RUN make                                 0.8s",
            "    linking",
            "⠋ [app 2/3] RUN apk add curl                           0.8s",
            "    fetch https://dl-cdn.alpinelinux.org/x86_64/APKINDEX.t…",
        ],
        "{screen:#?}"
    );

    // Time passes: the same lines, redrawn in place.
    view.redraw_at(t0 + Duration::from_millis(1420));
    let screen = term.screen();
    assert_eq!(screen.len(), 9, "{screen:#?}");
    assert_eq!(screen[4], "[+] Building 1.4s (3/6)");
    assert_eq!(
        screen[5],
        "⠼ [build 3/3] RUN make                                 1.2s"
    );

    // A narrower window: the live part follows.
    term.resize(40, 20);
    view.redraw_at(t0 + Duration::from_millis(1500));
    let screen = term.screen();
    assert_fits(&screen[4..], 40);
    assert_eq!(screen[7], "⠴ [app 2/3] RUN apk add curl       1.3s");
}

#[test]
fn tty_failure_shows_the_last_lines_and_the_end_leaves_the_summary() {
    let (term, output) = FakeTerm::new(70, 30);
    let view = Renderer::with_output(ProgressMode::Tty, output);
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    view.handle_at(planned(1, "build", 3, "RUN ./configure && make"), at(0));
    view.handle_at(Event::StepStarted { step: 1 }, at(0));
    for i in 1..=30 {
        view.handle_at(log(1, &format!("line {i}")), at(i * 10));
        view.redraw_at(at(i * 10));
    }
    view.handle_at(
        Event::StepFailed {
            step: 1,
            duration_ms: 400,
            reason: "exit code: 2".into(),
            exit_code: Some(2),
        },
        at(400),
    );
    let screen = term.screen();
    assert_eq!(
        screen[0],
        "✘ [build 1/1] RUN ./configure && make                      ERROR 0.4s"
    );
    assert_eq!(screen[1], "------");
    assert_eq!(screen[2], " > [build 1/1] RUN ./configure && make:");
    assert_eq!(screen[3], "0.110 line 11");
    assert_eq!(screen[22], "0.300 line 30");
    assert_eq!(screen[23], "------");
    assert_eq!(screen[24], "ERROR: exit code: 2");
    assert_eq!(screen[25], "[+] Building 0.4s (1/1)");
    assert_eq!(screen.len(), 26, "{screen:#?}");

    view.handle_at(
        Event::BuildDone {
            image: None,
            duration_ms: 440,
        },
        at(450),
    );
    let screen = term.screen();
    // The live part is gone; the summary follows the failure.
    assert_eq!(screen[24], "ERROR: exit code: 2");
    assert_eq!(
        &screen[25..],
        [
            "",
            "STEP  STAGE  INSTRUCTION              TIME  STATUS  LAYER",
            "#1    build  RUN ./configure && make  0.4s  FAILED      -",
            "1 step: 0 run, 0 cached, 1 failed in 0.4s",
        ]
    );
}

#[test]
fn tty_live_part_never_outgrows_the_terminal() {
    let (term, output) = FakeTerm::new(50, 10);
    let view = Renderer::with_output(ProgressMode::Tty, output);
    let t0 = Instant::now();
    for step in 1..=30 {
        view.handle_at(planned(step, "s", 1, &"RUN x ".repeat(20)), t0);
        view.handle_at(Event::StepStarted { step }, t0);
        view.handle_at(log(step, &"long output ".repeat(20)), t0);
    }
    view.redraw_at(t0 + Duration::from_secs(3));
    let screen = term.screen();
    assert!(screen.len() <= 9, "{screen:#?}");
    assert_fits(&screen, 50);
    assert_eq!(screen[0], "[+] Building 3.0s (0/30)");
    assert!(
        screen[1].starts_with("⠋ [s 1/30] RUN x RUN x"),
        "{screen:#?}"
    );
    assert_eq!(screen.last().unwrap(), "  … and 23 more running");

    // Steps end; the next frame is shorter, and nothing is left below it.
    for step in 1..=29 {
        view.handle_at(done(step, 3000, None), t0 + Duration::from_secs(3));
    }
    view.redraw_at(t0 + Duration::from_secs(4));
    let screen = term.screen();
    assert_eq!(screen.len(), 29 + 3, "{screen:#?}");
    assert_eq!(screen[29], "[+] Building 4.0s (29/30)");
    assert!(screen[30].starts_with("⠋ [s 30/30]"));
    assert_eq!(
        screen[31],
        "    long output long output long output long out…"
    );
    view.finish_at(t0 + Duration::from_secs(5));
    let screen = term.screen();
    assert!(!screen.iter().any(|l| l.starts_with("[+]")), "{screen:#?}");
    assert_eq!(
        screen.last().unwrap(),
        "30 steps: 29 run, 0 cached, 1 not run in 5.0s"
    );
}

#[test]
fn tty_prints_foreign_lines_above_the_live_part() {
    let (term, output) = FakeTerm::new(60, 20);
    let view = Renderer::with_output(ProgressMode::Tty, output);
    view.handle(planned(1, "s", 1, "RUN sleep 1"));
    view.handle(Event::StepStarted { step: 1 });
    view.redraw();
    view.println("waiting for the store lock held by pid 42");
    let screen = term.screen();
    assert_eq!(screen[0], "waiting for the store lock held by pid 42");
    assert!(screen[1].starts_with("[+] Building"), "{screen:#?}");
    assert!(
        screen[2].starts_with("⠋ [s 1/1] RUN sleep 1"),
        "{screen:#?}"
    );
}

#[test]
fn colors_only_when_asked() {
    let (term, output) = FakeTerm::new(60, 20);
    let view = Renderer::with_output(ProgressMode::Tty, output.color(true));
    let t0 = Instant::now();
    play(
        &view,
        t0,
        vec![
            (0, planned(1, "s", 1, "RUN true")),
            (0, Event::StepStarted { step: 1 }),
            (10, done(1, 10, None)),
        ],
    );
    let raw = term.out.text();
    assert!(raw.contains("\x1b[32m✔\x1b[0m [s 1/1] RUN true"), "{raw:?}");
}

#[test]
fn program_output_is_made_printable() {
    assert_eq!(text::printable("50%\r75%\r100%"), "100%");
    assert_eq!(text::printable("done\r"), "done");
    assert_eq!(text::printable("\x1b[1;31merror\x1b[0m: x"), "error: x");
    assert_eq!(text::printable("\x1b]0;title\x07ok"), "ok");
    assert_eq!(text::printable("a\tb"), "a       b");
    assert_eq!(text::printable("bell\x07"), "bell");
    assert_eq!(text::truncate("abcdef", 4), "abc…");
    assert_eq!(text::truncate("abc", 3), "abc");
    assert_eq!(text::truncate("日本語テキスト", 7), "日本語…");
    assert_eq!(text::width("日本"), 4);
    assert_eq!(
        text::one_line("RUN <<EOF\n  echo hi\nEOF"),
        "RUN <<EOF echo hi EOF"
    );
    assert_eq!(text::duration(Duration::from_secs(245)), "4m05s");
    assert_eq!(text::duration(Duration::from_millis(12_340)), "12.3s");
}
