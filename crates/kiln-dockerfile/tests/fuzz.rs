//! Fuzz-style: whatever the bytes, the frontend answers with a value or an
//! error and never panics, through every pass (parse, typed instructions,
//! plan, expansion of each stage).

mod common;

use kiln_dockerfile::plan::{Base, BuildOptions, StageScope};
use proptest::prelude::*;

/// Every pass on `src`; only panics matter, errors are fine.
fn whole_frontend(src: &[u8]) {
    let Ok(ast) = kiln_dockerfile::parse(src) else {
        return;
    };
    let _ = ast.dump();
    let _ = ast.command_views();
    let Ok(dockerfile) = kiln_dockerfile::instructions::parse_dockerfile(&ast) else {
        return;
    };
    let options = BuildOptions {
        build_args: [
            ("A".to_string(), "1".to_string()),
            ("HTTP_PROXY".to_string(), "p".to_string()),
        ]
        .into(),
        ..BuildOptions::default()
    };
    let Ok(plan) = kiln_dockerfile::plan::plan(&dockerfile, ast.escape, &options) else {
        return;
    };
    let mut finished: Vec<Option<StageScope<'_>>> = vec![None; plan.stages.len()];
    for &i in &plan.order {
        let mut scope = match plan.stages[i].base {
            Base::Stage(parent) => match &finished[parent] {
                Some(p) => StageScope::from_parent(p, i),
                None => return,
            },
            _ => plan.scope(i, &[("PATH".into(), "/bin".into())]),
        };
        for command in &plan.stages[i].stage.commands {
            if scope.dispatch(command).is_err() {
                return;
            }
        }
        let _ = scope.run_env();
        finished[i] = Some(scope);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn arbitrary_bytes_never_panic(src in proptest::collection::vec(any::<u8>(), 0..600)) {
        whole_frontend(&src);
    }

    #[test]
    fn dockerfile_shaped_text_never_panics(seed in any::<u64>()) {
        let mut rng = common::Rng::new(seed);
        whole_frontend(common::gen_dockerfile(&mut rng).as_bytes());
    }

    #[test]
    fn mutated_valid_dockerfiles_never_panic(seed in any::<u64>(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut rng = common::Rng::new(seed);
        let mut src = format!("ARG V=1\nFROM alpine:$V AS a\n{}FROM a\nCOPY --from=a /x /y\n", common::gen_dockerfile(&mut rng)).into_bytes();
        for (at, byte) in flips {
            let at = at % src.len();
            src[at] = byte;
        }
        whole_frontend(&src);
    }
}

#[test]
fn pathological_inputs_never_panic() {
    let deep_json = format!("FROM x\nCMD {}{}\n", "[".repeat(20_000), "]".repeat(20_000));
    let deep_expansion = format!(
        "FROM x\nENV A={}x{}\n",
        "${A:-".repeat(500),
        "}".repeat(500)
    );
    let many_heredocs = format!(
        "FROM x\nRUN {}\n",
        (0..2000)
            .map(|i| format!("<<E{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let long_line = format!("FROM x\nRUN {}\n", "a".repeat(70_000));
    for src in [
        deep_json,
        deep_expansion,
        many_heredocs,
        long_line,
        "\u{feff}".into(),
        "\\".into(),
        "#".into(),
    ] {
        whole_frontend(src.as_bytes());
    }
}
