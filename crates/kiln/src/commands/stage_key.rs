//! `kiln stage-key NAME [build flags]`: the key of a stage, computed
//! without building, for CI conditions around `--stage-image`.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use kiln_build::{Engine, Event, StageImage};

use super::build::{BuildArgs, Parsed, build_error, parse};
use crate::context::Context;
use crate::progress::ProgressMode;

/// Print the key of a stage: the tag `kiln build --stage-image NAME=REPO` gives its image.
#[derive(Args)]
#[command(after_help = "\
Takes the flags of `kiln build`; those that change the key are -f, --build-arg, --platform,
--target (for TARGETSTAGE), --network, --pull and the context, and the others are accepted so
that a CI job can pass the same flags to both. Nothing is built: the key is computed from the
Dockerfile, the files the stage and the stages it reads copy, and the base image's manifest
(fetched without its layers when the store lacks it).

Prints the key's 64 hex digits, the tag of the stage's image; with several platforms, one
line `PLATFORM KEY` each:
  if ! skopeo inspect docker://reg.example/app/base:$(kiln stage-key base .) >/dev/null; then ...")]
pub(crate) struct StageKeyArgs {
    /// The stage, by its `AS` name.
    #[arg(value_name = "NAME")]
    stage: String,
    #[command(flatten)]
    build: BuildArgs,
}

pub(crate) fn run(ctx: &Context, args: StageKeyArgs) -> anyhow::Result<ExitCode> {
    let Parsed {
        request,
        dockerfile,
        dockerfile_text,
        ..
    } = parse(&args.build)?;
    let store = ctx.store_for_engine()?;
    let runtime = ctx.runtime()?;
    let quiet = matches!(ctx.args.progress, ProgressMode::Quiet);
    // Nothing runs: only warnings are worth a line, on stderr.
    let sink = Arc::new(move |event: Event| {
        if let Event::Warning { message, line } = event
            && !quiet
        {
            match line {
                Some(n) => eprintln!("WARNING: {message} (line {n})"),
                None => eprintln!("WARNING: {message}"),
            }
        }
    });
    let engine = Engine::new(
        store.clone(),
        ctx.client(),
        runtime.handle().clone(),
        Arc::new(ctx.executor()),
        sink,
    )
    .map_err(|e| build_error(&dockerfile, &dockerfile_text, e))?;
    let keys = engine
        .stage_keys(&request, &args.stage)
        .map_err(|e| build_error(&dockerfile, &dockerfile_text, e))?;
    match keys.as_slice() {
        [(_, key)] => println!("{}", StageImage::tag(key)),
        many => {
            for (platform, key) in many {
                println!("{platform} {}", StageImage::tag(key));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
