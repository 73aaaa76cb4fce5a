//! The critical path: the chain of steps that decided when the build
//! ended. Shorten a step on it and the build ends sooner; shorten any
//! other and it does not.
//!
//! A step waits for the step before it in its stage, and a stage's first
//! step for every stage it reads (the engine starts a stage once those are
//! done). From the last step of the lane that ended last, the path goes
//! back each time to the predecessor that ended last, the one that was
//! waited for. (A step's end includes its layer, which is written while
//! the next step runs: within a lane the order, not the ends, says who
//! came last.)

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
    let Some(last) = timed.values().copied().max_by_key(ends) else {
        return Vec::new();
    };
    // The path ends at the last step of the lane that ended last. A step
    // that ended after a later step of its lane started (its layer was
    // written in the background) is that step's predecessor, not its end.
    let mut current = lane_of
        .get(&last.id)
        .and_then(|lane| last_of(lane))
        .unwrap_or(last);
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

/// The longest chain of process times through the stage graph, in ms: a
/// lane's steps run one after the other, and a stage starts once the
/// stages it reads are done, so a lane's chain is its own steps' process
/// times plus the longest chain among the lanes it needs; the build's is
/// the longest of all lanes (platforms and independent stages run side by
/// side). For one stage it is the sum of its steps' process times. No
/// schedule of the same processes ends sooner, so the build's duration
/// less this is time kiln spent on its own work or waiting for it.
pub(super) fn process_path_ms(stages: &[Stage], steps: &[Step]) -> u64 {
    let process: HashMap<u32, u64> = steps
        .iter()
        .map(|s| (s.id, s.process_ms.unwrap_or(0)))
        .collect();
    let mut memo: HashMap<usize, u64> = HashMap::new();
    (0..stages.len())
        .map(|i| chain(i, stages, &process, &mut memo, &mut Vec::new()))
        .max()
        .unwrap_or(0)
}

fn chain(
    i: usize,
    stages: &[Stage],
    process: &HashMap<u32, u64>,
    memo: &mut HashMap<usize, u64>,
    visiting: &mut Vec<usize>,
) -> u64 {
    if let Some(ms) = memo.get(&i) {
        return *ms;
    }
    if visiting.contains(&i) {
        return 0; // a malformed graph must not loop
    }
    visiting.push(i);
    let lane = &stages[i];
    let own: u64 = lane.steps.iter().filter_map(|id| process.get(id)).sum();
    let needs = lane
        .needs
        .iter()
        .filter_map(|name| {
            stages
                .iter()
                .position(|s| &s.name == name && s.platform == lane.platform)
        })
        .map(|n| chain(n, stages, process, memo, visiting))
        .max()
        .unwrap_or(0);
    visiting.pop();
    memo.insert(i, own + needs);
    own + needs
}
