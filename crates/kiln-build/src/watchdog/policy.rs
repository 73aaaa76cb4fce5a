//! What a RUN step runs under: its limits and retries, from the build's
//! flags and the step's own `# kiln:` comment. The comments are read here
//! and only here, by [`StepSettings::read`], once per build.

use std::time::Duration;

use kiln_dockerfile::instructions::{Command, Comment, Dockerfile};

/// The limits of one attempt of a RUN step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// The longest an attempt may run, cache-lock waits included; `None`
    /// for no limit.
    pub timeout: Option<Duration>,
    /// How long the step's process tree may go without progress (no
    /// output, CPU or I/O; see [`Monitor`](super::Monitor)); `None` never
    /// stalls.
    pub stall: Option<Duration>,
}

impl Limits {
    /// Neither limit is set: nothing to watch.
    pub fn is_unlimited(&self) -> bool {
        self.timeout.is_none() && self.stall.is_none()
    }
}

/// The delays between attempts: `first`, doubled for each retry after, at
/// most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    /// One second, then 2, 4, ... up to a minute: enough for a flaky
    /// mirror or a registry's rate limit to recover, short next to a build.
    pub const DEFAULT: Backoff = Backoff {
        first: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };

    /// The wait before retry number `retry` (1 for the first).
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.first.saturating_mul(factor).min(self.max)
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::DEFAULT
    }
}

/// Everything the watchdog applies to one RUN step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepPolicy {
    pub limits: Limits,
    /// Attempts after the first, for a step that stalled, timed out or
    /// exited non-zero.
    pub retries: u32,
    pub backoff: Backoff,
}

impl StepPolicy {
    /// How many times the step may run in all.
    pub fn attempts(&self) -> u32 {
        self.retries.saturating_add(1)
    }

    /// This policy with a step's own settings on top.
    pub fn with(mut self, overrides: &Overrides) -> StepPolicy {
        if let Some(timeout) = overrides.timeout {
            self.limits.timeout = timeout;
        }
        if let Some(stall) = overrides.stall {
            self.limits.stall = stall;
        }
        if let Some(retries) = overrides.retries {
            self.retries = retries;
        }
        self
    }
}

/// A step's own settings, from a comment on the line(s) right above its
/// `RUN`, which other builders take for a comment:
///
/// ```dockerfile
/// # kiln: timeout=20m stall=5m retries=3
/// RUN pip install -r requirements.txt
/// ```
///
/// Durations are humantime's (`90s`, `5m`, `1h30m`, `1h 30m`); `0` turns
/// the limit off. A setting given twice takes the later value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `timeout=`: `Some(None)` is `timeout=0`, no limit.
    pub timeout: Option<Option<Duration>>,
    /// `stall=`: `Some(None)` is `stall=0`, never stalls.
    pub stall: Option<Option<Duration>>,
    /// `retries=`.
    pub retries: Option<u32>,
}

/// The prefix that makes a comment kiln's.
const PREFIX: &str = "kiln:";

/// A `# kiln:` comment kiln cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `# kiln:` comment: {message}")]
pub struct OverrideError {
    /// The comment's line in the Dockerfile.
    pub line: usize,
    pub message: String,
}

/// A `# kiln:` comment that applies to nothing, and why: it is not
/// directly above a RUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IgnoredComment {
    /// The comment's line in the Dockerfile.
    pub line: usize,
    pub why: &'static str,
}

impl std::fmt::Display for IgnoredComment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`# kiln:` comment ignored: {}", self.why)
    }
}

/// Every RUN's own settings in a Dockerfile, read once when the build
/// starts: a bad comment fails the build before any step runs, and each
/// step takes its settings from here, not from the text again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StepSettings {
    /// By stage, then by instruction (its index in the stage's commands);
    /// no settings for instructions other than RUN.
    stages: Vec<Vec<Overrides>>,
}

impl StepSettings {
    /// Reads the `# kiln:` comments of every instruction, in file order;
    /// `ignored` hears of each one that applies to nothing (above another
    /// instruction, or not directly above its RUN).
    pub(crate) fn read(
        dockerfile: &Dockerfile,
        mut ignored: impl FnMut(IgnoredComment),
    ) -> Result<StepSettings, OverrideError> {
        let mut stages = Vec::with_capacity(dockerfile.stages.len());
        for stage in &dockerfile.stages {
            let mut commands = Vec::with_capacity(stage.commands.len());
            for command in &stage.commands {
                let origin = command.origin();
                let above = origin.comments_directly_above();
                let run = matches!(command, Command::Run(_));
                commands.push(if run {
                    Overrides::from_comments(above)?
                } else {
                    Overrides::default()
                });
                for comment in &origin.comments {
                    if !comment.text.starts_with(PREFIX) {
                        continue;
                    }
                    let directly_above = above.iter().any(|c| c.line == comment.line);
                    let why = match (run, directly_above) {
                        (true, true) => continue,
                        (true, false) => "it is not directly above its RUN",
                        (false, _) => "it applies to RUN steps only",
                    };
                    ignored(IgnoredComment {
                        line: comment.line,
                        why,
                    });
                }
            }
            stages.push(commands);
        }
        Ok(StepSettings { stages })
    }

    /// The settings of instruction `command` of stage `stage` (none for
    /// one that is not a RUN).
    pub(crate) fn get(&self, stage: usize, command: usize) -> Overrides {
        self.stages
            .get(stage)
            .and_then(|s| s.get(command))
            .copied()
            .unwrap_or_default()
    }
}

impl Overrides {
    /// Reads the `# kiln:` lines among `comments` (a RUN's
    /// [`Origin::comments_directly_above`](kiln_dockerfile::instructions::Origin::comments_directly_above));
    /// other comments are left alone.
    fn from_comments(comments: &[Comment]) -> Result<Overrides, OverrideError> {
        let mut out = Overrides::default();
        for comment in comments {
            let Some(settings) = comment.text.strip_prefix(PREFIX) else {
                continue;
            };
            let fail = |message: String| OverrideError {
                line: comment.line,
                message,
            };
            let mut any = false;
            for setting in settings.split_whitespace() {
                any = true;
                let Some((key, value)) = setting.split_once('=') else {
                    return Err(fail(format!(
                        "{setting:?} is not a setting (write timeout=20m, stall=5m or retries=3)"
                    )));
                };
                match key {
                    "timeout" => out.timeout = Some(limit(key, value).map_err(fail)?),
                    "stall" => out.stall = Some(limit(key, value).map_err(fail)?),
                    "retries" => {
                        let n = value.parse::<u32>().map_err(|_| {
                            fail(format!("retries={value}: not a number of retries"))
                        })?;
                        out.retries = Some(n);
                    }
                    other => {
                        return Err(fail(format!(
                            "unknown setting {other:?} (known: timeout, stall, retries)"
                        )));
                    }
                }
            }
            if !any {
                return Err(fail(
                    "no settings (write e.g. `# kiln: timeout=20m stall=5m retries=3`)".into(),
                ));
            }
        }
        Ok(out)
    }
}

/// A duration setting: humantime's syntax, `0` for none.
fn limit(key: &str, value: &str) -> Result<Option<Duration>, String> {
    let d = humantime::parse_duration(value)
        .map_err(|e| format!("{key}={value}: {e} (write e.g. 90s, 5m or 1h30m; 0 for none)"))?;
    Ok((!d.is_zero()).then_some(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comments(lines: &[(usize, &str)]) -> Vec<Comment> {
        lines
            .iter()
            .map(|&(line, text)| Comment {
                line,
                text: text.to_string(),
            })
            .collect()
    }

    #[test]
    fn settings_are_read_and_later_ones_win() {
        let got = Overrides::from_comments(&comments(&[
            (3, "installs the deps"),
            (4, "kiln: timeout=20m stall=5m retries=3"),
            (5, "kiln: stall=0  retries=1"),
        ]))
        .unwrap();
        assert_eq!(
            got,
            Overrides {
                timeout: Some(Some(Duration::from_secs(1200))),
                stall: Some(None),
                retries: Some(1),
            }
        );
        let policy = StepPolicy {
            limits: Limits {
                timeout: None,
                stall: Some(Duration::from_secs(600)),
            },
            ..StepPolicy::default()
        }
        .with(&got);
        assert_eq!(policy.limits.timeout, Some(Duration::from_secs(1200)));
        assert_eq!(policy.limits.stall, None);
        assert_eq!(policy.attempts(), 2);
        assert_eq!(
            Overrides::from_comments(&comments(&[(1, "kiln:timeout=1h30m")]))
                .unwrap()
                .timeout,
            Some(Some(Duration::from_secs(5400)))
        );
    }

    #[test]
    fn other_comments_change_nothing() {
        let got =
            Overrides::from_comments(&comments(&[(1, "kilns: x"), (2, "see kiln: docs")])).unwrap();
        assert_eq!(got, Overrides::default());
    }

    #[test]
    fn bad_settings_name_their_line() {
        let err = |text: &str| Overrides::from_comments(&comments(&[(7, text)])).unwrap_err();
        let e = err("kiln: stal=5m");
        assert_eq!(e.line, 7);
        assert_eq!(
            e.to_string(),
            "invalid `# kiln:` comment: unknown setting \"stal\" (known: timeout, stall, retries)"
        );
        assert!(err("kiln: timeout=5 minutes").message.contains("timeout=5"));
        assert!(err("kiln: stall=soon").message.starts_with("stall=soon: "));
        assert!(err("kiln: retries=-1").message.contains("retries=-1"));
        assert!(err("kiln: retries").message.contains("not a setting"));
        assert!(err("kiln:").message.starts_with("no settings"));
    }

    fn dockerfile(text: &str) -> Dockerfile {
        let ast = kiln_dockerfile::parse(text.as_bytes()).unwrap();
        kiln_dockerfile::instructions::parse_dockerfile(&ast).unwrap()
    }

    #[test]
    fn each_run_has_the_settings_right_above_it_by_stage_and_index() {
        let text = "FROM a AS one\n\
                    # kiln: retries=2\n\
                    RUN x\n\
                    ENV A=1\n\
                    FROM one\n\
                    # kiln: stall=0\n\
                    \n\
                    # kiln: timeout=1m\n\
                    RUN y\n\
                    # kiln: retries=1\n\
                    COPY a b\n";
        let mut ignored = Vec::new();
        let settings = StepSettings::read(&dockerfile(text), |c| ignored.push(c)).unwrap();
        let retries_2 = Overrides {
            retries: Some(2),
            ..Overrides::default()
        };
        let timeout_1m = Overrides {
            timeout: Some(Some(Duration::from_secs(60))),
            ..Overrides::default()
        };
        assert_eq!(settings.get(0, 0), retries_2);
        assert_eq!(settings.get(0, 1), Overrides::default());
        assert_eq!(settings.get(1, 0), timeout_1m);
        assert_eq!(settings.get(1, 1), Overrides::default());
        assert_eq!(settings.get(7, 0), Overrides::default());
        assert_eq!(
            ignored,
            [
                IgnoredComment {
                    line: 6,
                    why: "it is not directly above its RUN"
                },
                IgnoredComment {
                    line: 10,
                    why: "it applies to RUN steps only"
                },
            ]
        );
        assert_eq!(
            ignored[1].to_string(),
            "`# kiln:` comment ignored: it applies to RUN steps only"
        );
    }

    #[test]
    fn a_bad_comment_above_any_run_fails_the_read_with_its_line() {
        let text = "FROM a\nRUN x\nFROM b\nRUN y\n# kiln: retries=many\nRUN z\n";
        let e = StepSettings::read(&dockerfile(text), |_| {}).unwrap_err();
        assert_eq!(e.line, 5);
        assert!(e.message.starts_with("retries=many"), "{e}");
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let b = Backoff {
            first: Duration::from_millis(500),
            max: Duration::from_secs(3),
        };
        let delays: Vec<u128> = (1..=5).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 3000, 3000]);
        assert_eq!(Backoff::DEFAULT.delay(100), Duration::from_secs(60));
    }
}
