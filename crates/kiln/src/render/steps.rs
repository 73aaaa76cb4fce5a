//! What the renderer knows of each step, from the events so far. Every
//! view (plain lines, the terminal frame, the summary) reads this model.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use kiln_build::StepId;

use super::text;

/// How many output lines of a step are kept, for a failed step's report.
pub(super) const TAIL_LINES: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    /// Planned, not started (or never will be: the build stopped first).
    Pending,
    Running,
    Cached,
    Done,
    /// Done, and only changed the image config: nothing ran.
    Config,
    Failed,
}

impl Status {
    pub(super) fn is_finished(self) -> bool {
        matches!(
            self,
            Status::Cached | Status::Done | Status::Config | Status::Failed
        )
    }
}

#[derive(Debug)]
pub(super) struct Step {
    pub(super) id: StepId,
    pub(super) stage: String,
    pub(super) platform: Option<String>,
    /// A `StepPlanned` said what it is.
    pub(super) planned: bool,
    /// `build 2/4` when the engine's text starts with `[build 2/4] `.
    given_prefix: Option<String>,
    /// The instruction, on one line.
    pub(super) text: String,
    pub(super) status: Status,
    /// When it started (or was first heard of, if no start was reported).
    pub(super) since: Instant,
    /// How long it took, once finished (the engine's measure).
    pub(super) duration: Option<Duration>,
    pub(super) layer_size: Option<u64>,
    pub(super) reason: Option<String>,
    /// The last output lines, with their time since the step started.
    pub(super) tail: VecDeque<(Duration, String)>,
    /// What the terminal view shows under a running step: its last output
    /// line, progress or note.
    pub(super) status_line: Option<String>,
}

impl Step {
    fn new(id: StepId, now: Instant) -> Step {
        Step {
            id,
            stage: String::new(),
            platform: None,
            planned: false,
            given_prefix: None,
            text: String::new(),
            status: Status::Pending,
            since: now,
            duration: None,
            layer_size: None,
            reason: None,
            tail: VecDeque::new(),
            status_line: None,
        }
    }

    /// Time since the step started, or its duration once finished.
    pub(super) fn elapsed(&self, now: Instant) -> Duration {
        self.duration
            .unwrap_or_else(|| now.saturating_duration_since(self.since))
    }

    pub(super) fn push_line(&mut self, at: Duration, line: String) {
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.status_line = Some(line.clone());
        self.tail.push_back((at, line));
    }
}

/// The steps of a build by number.
#[derive(Debug, Default)]
pub(super) struct Steps {
    steps: BTreeMap<StepId, Step>,
    /// The platforms the build announced.
    pub(super) platforms: Vec<String>,
}

impl Steps {
    /// The step `id`; made up (with only its number) if it was never
    /// planned, so that an engine bug cannot hide output.
    pub(super) fn get(&mut self, id: StepId, now: Instant) -> &mut Step {
        self.steps.entry(id).or_insert_with(|| Step::new(id, now))
    }

    pub(super) fn plan(
        &mut self,
        id: StepId,
        stage: String,
        platform: Option<String>,
        text: String,
        now: Instant,
    ) {
        let step = self.get(id, now);
        step.stage = stage;
        step.platform = platform;
        step.planned = true;
        let text = text::one_line(&text);
        // The engine may name the step's place itself: keep its words.
        match text
            .strip_prefix('[')
            .and_then(|rest| rest.split_once("] "))
        {
            Some((prefix, rest)) => {
                step.given_prefix = Some(prefix.to_string());
                step.text = rest.to_string();
            }
            None => step.text = text,
        }
    }

    pub(super) fn find(&self, id: StepId) -> Option<&Step> {
        self.steps.get(&id)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Step> {
        self.steps.values()
    }

    pub(super) fn len(&self) -> usize {
        self.steps.len()
    }

    pub(super) fn count(&self, status: Status) -> usize {
        self.iter().filter(|s| s.status == status).count()
    }

    /// Whether steps name their platform: only when there are several.
    fn multi_platform(&self) -> bool {
        let named: BTreeSet<&str> = self.iter().filter_map(|s| s.platform.as_deref()).collect();
        named.len() > 1 || self.platforms.len() > 1
    }

    /// `[linux/arm64 build 2/4]`: the platform (when there are several),
    /// the stage, and the step's place among its stage's steps, as
    /// BuildKit names a vertex. The engine's own `[stage n/m]` is used
    /// when the step's text starts with one.
    pub(super) fn prefix(&self, id: StepId) -> String {
        let Some(step) = self.steps.get(&id).filter(|s| s.planned) else {
            return format!("[step {id}]");
        };
        let group = self
            .iter()
            .filter(|s| s.planned && s.stage == step.stage && s.platform == step.platform);
        let (mut position, mut total) = (0, 0);
        for s in group {
            total += 1;
            if s.id <= id {
                position += 1;
            }
        }
        let mut parts = Vec::new();
        if self.multi_platform()
            && let Some(p) = &step.platform
        {
            parts.push(p.clone());
        }
        if let Some(given) = &step.given_prefix {
            parts.push(given.clone());
        } else {
            if !step.stage.is_empty() {
                parts.push(step.stage.clone());
            }
            parts.push(format!("{position}/{total}"));
        }
        format!("[{}]", parts.join(" "))
    }

    /// `[build 2/4] RUN make`.
    pub(super) fn label(&self, id: StepId) -> String {
        let prefix = self.prefix(id);
        match self.steps.get(&id) {
            Some(s) if !s.text.is_empty() => format!("{prefix} {}", s.text),
            _ => prefix,
        }
    }

    /// The stage column of the summary: the platform too when there are
    /// several.
    pub(super) fn stage_name(&self, step: &Step) -> String {
        match &step.platform {
            Some(p) if self.multi_platform() => format!("{p} {}", step.stage),
            _ => step.stage.clone(),
        }
    }
}
