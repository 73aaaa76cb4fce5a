//! The context's files that steps will read, hashed from the build's
//! start.
//!
//! A step's key needs the content digest of what it takes from the
//! context (a COPY's sources, a RUN's bind mount): the first step that
//! reads a big directory hashes it right before it can run, after the
//! base was pulled and unpacked. Hashed on a thread of its own while that
//! happens, the files' hashes are in the build's [`HashMemo`] when the
//! step asks, and its digest only stats them.
//!
//! The thread runs at the background commits' nice value: on two cores,
//! hashing at the steps' priority slowed the base's pull and unpack
//! beside it by as much as it saved (scenario 11, 2026-12-07 12:33); below
//! them it takes only the time they leave idle.
//!
//! It stops when the build ends, in the middle of a file: the engine
//! halts the build's memo (a cancel stops it earlier, and the steps'
//! digests with it).

use kiln_dockerfile::instructions::Command;
use kiln_dockerfile::plan::Plan;

use crate::context::Selection;
use crate::run::mount_contents;
use crate::{BuildContext, HashMemo};

/// The context selections the plan's COPY steps and RUN bind mounts will
/// digest, in the order the steps come, each once. Only those that need
/// no variable: an unexpanded `$SRC` names nothing yet.
pub(super) fn selections(plan: &Plan) -> Vec<Selection> {
    let literal = |s: &String| !s.contains('$');
    let mut out = Vec::new();
    for &i in &plan.order {
        for command in &plan.stages[i].stage.commands {
            match command {
                Command::Copy(c)
                    if c.from.is_none()
                        && c.sources.paths.iter().all(literal)
                        && c.exclude.iter().all(literal) =>
                {
                    out.push(
                        Selection::new(c.sources.paths.iter().cloned())
                            .excluding(c.exclude.iter().cloned())
                            .parents(c.parents),
                    );
                }
                Command::Run(run) => {
                    for content in mount_contents(run) {
                        if content.from.is_none() && literal(&content.path) {
                            out.push(Selection::new([content.path]));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let mut unique: Vec<Selection> = Vec::with_capacity(out.len());
    for selection in out {
        if !unique.contains(&selection) {
            unique.push(selection);
        }
    }
    unique
}

/// Digests `selections` through `memo` until done or the memo is halted
/// (the build ended); the digests are thrown away, and so are errors (the
/// step that reads the files meets them again and reports them).
pub(super) fn prehash(context: &BuildContext, memo: &HashMemo, selections: &[Selection]) {
    for selection in selections {
        if memo.check().is_err() {
            return;
        }
        let _ = context.digest_selection(selection, memo);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kiln_dockerfile::instructions;
    use kiln_dockerfile::plan::{self, BuildOptions};
    use kiln_image::Platform;

    use super::*;

    #[test]
    fn the_selections_are_the_literal_context_reads_of_the_needed_stages_in_order() {
        let text = "FROM scratch AS tools\n\
                    COPY tools/ /tools/\n\
                    FROM scratch AS unused\n\
                    COPY never/ /never/\n\
                    FROM scratch\n\
                    ARG SRC=app\n\
                    COPY --exclude=*.md docs/ /docs/\n\
                    RUN --mount=type=bind,source=wheels,target=/w \\\n\
                        --mount=type=bind,from=tools,source=/tools,target=/t \\\n\
                        --mount=type=cache,target=/root/.cache true\n\
                    COPY $SRC /app/\n\
                    COPY --from=tools /tools /tools\n\
                    RUN --mount=type=bind,source=wheels,target=/other true\n\
                    COPY --parents a/b/c.txt /p/\n";
        let ast = kiln_dockerfile::parse(text.as_bytes()).unwrap();
        let dockerfile = instructions::parse_dockerfile(&ast).unwrap();
        let options = BuildOptions {
            build_args: BTreeMap::new(),
            target: None,
            target_platform: Platform::host(),
            build_platform: Platform::host(),
        };
        let plan = plan::plan(&dockerfile, ast.escape, &options).unwrap();
        assert_eq!(
            selections(&plan),
            [
                Selection::new(["tools/"]),
                Selection::new(["docs/"]).excluding(["*.md"]),
                Selection::new(["/wheels"]),
                Selection::new(["a/b/c.txt"]).parents(true),
            ]
        );
    }
}
