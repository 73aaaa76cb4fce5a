//! The BuildKit conformance harness: every case is built by BuildKit and by
//! kiln, and the results must agree (see `compare` for what "agree" means).
//!
//! ```text
//! once:      Registry::start ─▶ base images (base.rs) pushed to it
//! per case:  context (case.rs) ─┬▶ docker buildx build ─▶ buildkit.tar ─┐
//!                               └▶ kiln build          ─▶ kiln.tar ─────┴▶ flatten (image.rs) ─▶ compare
//! ```
//!
//! Cases run on a few threads at once (`KILN_CONFORMANCE_JOBS`, default 4);
//! both builds of a case run at the same time. `KILN_CONFORMANCE_FILTER`
//! (comma-separated substrings of case names) picks cases;
//! `KILN_CONFORMANCE_KEEP=1` keeps the work directories of differing cases.

pub(crate) mod base;
pub(crate) mod builders;
pub(crate) mod case;
pub(crate) mod compare;
pub(crate) mod image;
pub(crate) mod integration;

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use self::base::BaseImages;
use self::builders::Outcome;
use self::case::{Case, Expect};

/// How a case came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Both builders agree.
    Same,
    /// They differ: a failure of the suite.
    Differs,
    /// They differ, in a way the case documents as not fixed yet.
    Known(String),
    /// Marked as a known difference, yet they agree: remove the mark.
    Fixed,
    /// The case itself is wrong (BuildKit does not do what it says).
    Broken,
    /// Both failed alike, where the case did not say they would (adapted
    /// BuildKit tests, whose contexts are made up): agreement, listed so
    /// weak adaptations can be spotted.
    BothFailed,
}

#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) name: String,
    pub(crate) verdict: Verdict,
    pub(crate) lines: Vec<String>,
    pub(crate) time: Duration,
    /// How long BuildKit and kiln took.
    pub(crate) builds: Option<(Duration, Duration)>,
}

impl Report {
    pub(crate) fn passed(&self) -> bool {
        matches!(
            self.verdict,
            Verdict::Same | Verdict::Known(_) | Verdict::BothFailed
        )
    }

    pub(crate) fn render(&self) -> String {
        let tag = match &self.verdict {
            Verdict::Same => "same".to_string(),
            Verdict::Differs => "DIFFERS".to_string(),
            Verdict::Known(why) => format!("known difference ({why})"),
            Verdict::Fixed => "FIXED: agrees now, remove known_difference".to_string(),
            Verdict::Broken => "BROKEN CASE".to_string(),
            Verdict::BothFailed => "both failed".to_string(),
        };
        let times = match self.builds {
            Some((b, k)) => format!(
                "buildkit {:.1}s, kiln {:.1}s",
                b.as_secs_f64(),
                k.as_secs_f64()
            ),
            None => format!("{:.1}s", self.time.as_secs_f64()),
        };
        let mut s = format!("{} [{times}]: {tag}\n", self.name);
        const MAX: usize = 40;
        let shown = if self.verdict == Verdict::Same {
            0
        } else {
            MAX
        };
        for line in self.lines.iter().take(shown) {
            s.push_str("    ");
            s.push_str(line);
            s.push('\n');
        }
        if shown > 0 && self.lines.len() > MAX {
            s.push_str(&format!("    ... and {} more\n", self.lines.len() - MAX));
        }
        s
    }
}

/// The error lines of a failed build's log (or its end).
fn error_text(log: &str) -> Vec<String> {
    let lines: Vec<&str> = log.lines().collect();
    let errors: Vec<String> = lines
        .iter()
        .filter(|l| l.contains("ERROR") || l.starts_with("error") || l.contains("failed to solve"))
        .map(|l| l.trim().to_string())
        .collect();
    if errors.is_empty() {
        lines
            .iter()
            .rev()
            .take(8)
            .rev()
            .map(|l| l.trim().to_string())
            .collect()
    } else {
        errors.into_iter().take(8).collect()
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Builds one case both ways and compares.
pub(crate) fn run_case(case: &Case, bases: &BaseImages, work: &Path) -> Report {
    let started = Instant::now();
    let dir = work.join(sanitize(&case.name));
    let mut lines = Vec::new();
    let mut builds = None;
    let verdict = match run_case_inner(case, bases, &dir, &mut lines, &mut builds) {
        Ok(v) => v,
        Err(e) => {
            lines.push(format!("harness error: {e}"));
            Verdict::Broken
        }
    };
    let verdict = match (verdict, &case.known_difference) {
        (Verdict::Differs, Some(why)) => Verdict::Known(why.clone()),
        (Verdict::Same, Some(_)) => Verdict::Fixed,
        (v, _) => v,
    };
    let keep = std::env::var("KILN_CONFORMANCE_KEEP").as_deref() == Ok("1");
    if verdict == Verdict::Same || !keep {
        let _ = fs_err::remove_dir_all(&dir);
    } else {
        lines.push(format!("work directory kept: {}", dir.display()));
    }
    Report {
        name: case.name.clone(),
        verdict,
        lines,
        time: started.elapsed(),
        builds,
    }
}

fn run_case_inner(
    case: &Case,
    bases: &BaseImages,
    dir: &Path,
    lines: &mut Vec<String>,
    builds: &mut Option<(Duration, Duration)>,
) -> Result<Verdict, String> {
    let _ = fs_err::remove_dir_all(dir);
    case.prepare(&builders::context_dir(dir), bases)?;
    let (bk, kl) = std::thread::scope(|s| {
        let bk = s.spawn(|| builders::buildkit(case, dir));
        let kl = s.spawn(|| builders::kiln(case, dir));
        (
            bk.join()
                .unwrap_or_else(|_| Err("buildkit thread panicked".into())),
            kl.join()
                .unwrap_or_else(|_| Err("kiln thread panicked".into())),
        )
    });
    let (bk, kl): (Outcome, Outcome) = (bk?, kl?);
    *builds = Some((bk.duration, kl.duration));
    match (bk.ok, kl.ok) {
        (true, true) => {
            if let Expect::Failure(_) = &case.expect {
                lines.push("the case expects a failure, but both builds succeeded".into());
                return Ok(Verdict::Broken);
            }
            let b =
                image::read_oci_tar(&bk.output).map_err(|e| format!("buildkit's output: {e}"))?;
            let k = image::read_oci_tar(&kl.output).map_err(|e| format!("kiln's output: {e}"))?;
            let mut diffs = compare::images(&b, &k);
            diffs.retain(|d| {
                !case.volatile.iter().any(|v| {
                    d.starts_with(&format!("{v}: content:"))
                        || d.starts_with(&format!("{v}: size:"))
                })
            });
            if diffs.is_empty() {
                Ok(Verdict::Same)
            } else {
                lines.extend(diffs);
                Ok(Verdict::Differs)
            }
        }
        (true, false) => {
            lines.push("buildkit succeeded, kiln failed:".into());
            lines.extend(
                error_text(&kl.log)
                    .into_iter()
                    .map(|l| format!("  kiln: {l}")),
            );
            Ok(Verdict::Differs)
        }
        (false, true) => {
            lines.push("buildkit failed, kiln succeeded:".into());
            lines.extend(
                error_text(&bk.log)
                    .into_iter()
                    .map(|l| format!("  buildkit: {l}")),
            );
            Ok(if case.expect == Expect::Success {
                Verdict::Broken
            } else {
                Verdict::Differs
            })
        }
        (false, false) => match &case.expect {
            Expect::Success => {
                lines.push("both failed, the case expects success:".into());
                lines.extend(
                    error_text(&bk.log)
                        .into_iter()
                        .map(|l| format!("  buildkit: {l}")),
                );
                lines.extend(
                    error_text(&kl.log)
                        .into_iter()
                        .map(|l| format!("  kiln: {l}")),
                );
                Ok(Verdict::Broken)
            }
            Expect::Failure(None) => Ok(Verdict::Same),
            Expect::Agree(phrases) => {
                let missing: Vec<&String> = phrases
                    .iter()
                    .filter(|p| bk.log.contains(p.as_str()) && !kl.log.contains(p.as_str()))
                    .collect();
                if missing.is_empty() {
                    lines.extend(
                        error_text(&bk.log)
                            .into_iter()
                            .map(|l| format!("  buildkit: {l}")),
                    );
                    lines.extend(
                        error_text(&kl.log)
                            .into_iter()
                            .map(|l| format!("  kiln: {l}")),
                    );
                    Ok(if phrases.iter().any(|p| bk.log.contains(p.as_str())) {
                        Verdict::Same
                    } else {
                        Verdict::BothFailed
                    })
                } else {
                    lines.push(format!("kiln's error does not say {missing:?}:"));
                    lines.extend(
                        error_text(&bk.log)
                            .into_iter()
                            .map(|l| format!("  buildkit: {l}")),
                    );
                    lines.extend(
                        error_text(&kl.log)
                            .into_iter()
                            .map(|l| format!("  kiln: {l}")),
                    );
                    Ok(Verdict::Differs)
                }
            }
            Expect::Failure(Some(phrase)) => {
                if !bk.log.contains(phrase.as_str()) {
                    lines.push(format!("buildkit's error does not say {phrase:?}:"));
                    lines.extend(
                        error_text(&bk.log)
                            .into_iter()
                            .map(|l| format!("  buildkit: {l}")),
                    );
                    return Ok(Verdict::Broken);
                }
                if kl.log.contains(phrase.as_str()) {
                    Ok(Verdict::Same)
                } else {
                    lines.push(format!("kiln's error does not say {phrase:?}:"));
                    lines.extend(
                        error_text(&kl.log)
                            .into_iter()
                            .map(|l| format!("  kiln: {l}")),
                    );
                    Ok(Verdict::Differs)
                }
            }
        },
    }
}

/// Runs `cases` on `jobs` threads, printing each report as it comes.
pub(crate) fn run_all(cases: &[Case], bases: &BaseImages, work: &Path, jobs: usize) -> Vec<Report> {
    let next = AtomicUsize::new(0);
    let reports = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(case) = cases.get(i) else { break };
                    let report = run_case(case, bases, work);
                    eprint!("{}", report.render());
                    reports
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(report);
                }
            });
        }
    });
    let mut reports = reports.into_inner().unwrap_or_else(|e| e.into_inner());
    reports.sort_by(|a, b| a.name.cmp(&b.name));
    reports
}
