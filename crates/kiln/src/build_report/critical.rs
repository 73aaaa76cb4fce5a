//! The critical path: the chain of steps that decided when the build
//! ended. Shorten a step on it and the build ends sooner; shorten any
//! other and it does not.
//!
//! A step waits for the step before it in its stage, and a stage's first
//! step for every stage it reads (the engine starts a stage once those are
//! done). From the step that ended last, the path goes back each time to
//! the predecessor that ended last, the one that was waited for.

use std::collections::HashMap;

use super::model::{Stage, Step};

/// The critical path's steps, first to last; empty if no step ran.
pub(super) fn path(stages: &[Stage], steps: &[Step]) -> Vec<u32> {
    let timed: HashMap<u32, &Step> = steps
        .iter()
        .filter(|s| s.start_ms.is_some() && s.end_ms.is_some())
        .map(|s| (s.id, s))
        .collect();
    let lane_of: HashMap<u32, &Stage> = stages
        .iter()
        .flat_map(|lane| lane.steps.iter().map(move |id| (*id, lane)))
        .collect();
    let last_of = |lane: &Stage| -> Option<&Step> {
        lane.steps
            .iter()
            .rev()
            .find_map(|id| timed.get(id).copied())
    };
    let predecessors = |step: &Step| -> Vec<&Step> {
        let Some(lane) = lane_of.get(&step.id) else {
            return Vec::new();
        };
        let before = lane.steps.iter().take_while(|id| **id != step.id);
        if let Some(previous) = before
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .find_map(|id| timed.get(id).copied())
        {
            return vec![previous];
        }
        lane.needs
            .iter()
            .filter_map(|name| {
                stages
                    .iter()
                    .find(|s| &s.name == name && s.platform == lane.platform)
            })
            .filter_map(last_of)
            .collect()
    };
    let ends = |s: &&Step| (s.end_ms, s.id);
    let Some(mut current) = timed.values().copied().max_by_key(ends) else {
        return Vec::new();
    };
    let mut path = vec![current.id];
    while let Some(previous) = predecessors(current).into_iter().max_by_key(ends) {
        if path.contains(&previous.id) {
            break; // a malformed graph must not loop
        }
        path.push(previous.id);
        current = previous;
    }
    path.reverse();
    path
}
