//! Stage graph and ARG/ENV scoping, case by case, as BuildKit resolves them
//! (several cases are BuildKit's own integration tests, named after them).

use std::collections::BTreeMap;

use kiln_dockerfile::instructions::Command;
use kiln_dockerfile::plan::{Base, BuildOptions, Plan, Platform, Source, StageScope, plan_source};

fn opts(args: &[(&str, &str)]) -> BuildOptions {
    BuildOptions {
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        target: None,
        target_platform: Platform::parse("linux/arm64").unwrap(),
        build_platform: Platform::parse("linux/amd64").unwrap(),
    }
}

fn plan(src: &str, options: &BuildOptions) -> Plan {
    plan_source(src.as_bytes(), options).unwrap_or_else(|e| panic!("{e}"))
}

fn plan_err(src: &str, options: &BuildOptions) -> String {
    plan_source(src.as_bytes(), options)
        .unwrap_err()
        .to_string()
}

/// Runs every instruction of `stage` through a scope (image bases get
/// `base_env`); returns the scope and the expanded commands.
fn run_stage<'p>(
    plan: &'p Plan,
    stage: usize,
    base_env: &[(&str, &str)],
) -> (StageScope<'p>, Vec<Command>) {
    let base_env: Vec<(String, String)> = base_env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut scope = match plan.stages[stage].base {
        Base::Stage(parent) => {
            let (parent_scope, _) = run_stage(plan, parent, &[]);
            StageScope::from_parent(&parent_scope, stage)
        }
        _ => plan.scope(stage, &base_env),
    };
    let mut out = Vec::new();
    for c in &plan.stages[stage].stage.commands {
        out.push(scope.dispatch(c).unwrap_or_else(|e| panic!("{e}")));
    }
    (scope, out)
}

fn env_of(scope: &StageScope<'_>, key: &str) -> Option<String> {
    scope.env().get(key).map(str::to_string)
}

#[test]
fn global_args_expand_in_from_and_build_args_win() {
    let src = "ARG tag=3.18\nFROM alpine:${tag}\n";
    assert_eq!(
        plan(src, &opts(&[])).stages[0].base,
        Base::Image("alpine:3.18".into())
    );
    assert_eq!(
        plan(src, &opts(&[("tag", "edge")])).stages[0].base,
        Base::Image("alpine:edge".into())
    );
}

/// testDefaultEnvWithArgs: `${image#idle}` in FROM, ENV with defaults and trims.
#[test]
fn default_env_with_args() {
    let src = "ARG image=idlebox\nFROM busy${image#idle} AS build\nARG my_arg\n\
               ENV my_arg \"my_arg=${my_arg:-def_val}\"\nENV my_trimmed_arg \"${my_arg%%e*}\"\n";
    let p = plan(src, &opts(&[]));
    assert_eq!(p.stages[0].base, Base::Image("busybox".into()));
    let (scope, _) = run_stage(&p, 0, &[]);
    assert_eq!(env_of(&scope, "my_arg").as_deref(), Some("my_arg=def_val"));
    assert_eq!(
        env_of(&scope, "my_trimmed_arg").as_deref(),
        Some("my_arg=d")
    );

    let p = plan(src, &opts(&[("my_arg", "value")]));
    let (scope, _) = run_stage(&p, 0, &[]);
    assert_eq!(env_of(&scope, "my_arg").as_deref(), Some("my_arg=value"));
    assert_eq!(
        env_of(&scope, "my_trimmed_arg").as_deref(),
        Some("my_arg=valu")
    );
    assert_eq!(scope.config_env().get("my_arg"), Some("my_arg=value"));
}

/// testMultiArgs: several args per line, quoted values, inheritance of
/// global values by a bare `ARG name`.
#[test]
fn multi_args() {
    let src = "ARG a1=\"foo bar\" a2=box\nARG a3=\"$a2-foo\"\nFROM busy$a2 AS build\nARG a3 a4=\"123 456\" a1\n";
    let p = plan(src, &opts(&[]));
    assert_eq!(p.stages[0].base, Base::Image("busybox".into()));
    let (scope, _) = run_stage(&p, 0, &[]);
    let run = scope.run_env();
    assert_eq!(run.get("a1"), Some("foo bar"));
    assert_eq!(run.get("a3"), Some("box-foo"));
    assert_eq!(run.get("a4"), Some("123 456"));
    assert_eq!(
        run.get("a2"),
        None,
        "a global ARG is invisible until redeclared"
    );
}

/// testQuotedMetaArgs.
#[test]
fn quoted_meta_args() {
    let src =
        "ARG a1=\"box\"\nARG a2=\"$a1-foo\"\nFROM busy$a1 AS build\nARG a2\nARG a3=\"bar-$a2\"\n";
    let p = plan(src, &opts(&[]));
    let (scope, _) = run_stage(&p, 0, &[]);
    assert_eq!(env_of(&scope, "a3").as_deref(), Some("bar-box-foo"));
}

/// testBuiltinArgs: proxies reach RUN without ARG; declared args get build
/// arg, nothing, or their default.
#[test]
fn builtin_and_proxy_args() {
    let src = "FROM busybox AS build\nARG FOO\nARG BAR\nARG BAZ=bazcontent\nRUN echo\n";
    let p = plan(
        src,
        &opts(&[
            ("FOO", "foocontents"),
            ("http_proxy", "hpvalue"),
            ("NO_PROXY", "npvalue"),
        ]),
    );
    let (scope, _) = run_stage(&p, 0, &[]);
    let run = scope.run_env();
    assert_eq!(run.get("FOO"), Some("foocontents"));
    assert_eq!(run.get("BAR"), None);
    assert_eq!(run.get("BAZ"), Some("bazcontent"));
    assert_eq!(run.get("http_proxy"), Some("hpvalue"));
    assert_eq!(run.get("NO_PROXY"), Some("npvalue"));
    assert_eq!(
        scope.env().get("http_proxy"),
        None,
        "proxies stay out of the build environment"
    );
    assert_eq!(
        scope.config_env().get("FOO"),
        None,
        "ARG values never reach the image config"
    );
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn env_shadows_arg_and_later_wins() {
    let src = "FROM busybox\nARG X=fromarg\nENV X=fromenv\nRUN true\nENV Y=env\nARG Y=arg\n";
    let p = plan(src, &opts(&[]));
    let (scope, _) = run_stage(&p, 0, &[]);
    assert_eq!(env_of(&scope, "X").as_deref(), Some("fromenv"));
    // As in BuildKit, an ARG after an ENV of the same name replaces the value
    // the rest of the stage sees, but not the image config's.
    assert_eq!(env_of(&scope, "Y").as_deref(), Some("arg"));
    assert_eq!(scope.config_env().get("Y"), Some("env"));
}

#[test]
fn build_arg_beats_default_and_default_sees_earlier_values() {
    let src = "FROM busybox\nENV BASE=/opt\nARG DIR=$BASE/app\nARG OTHER=x\nWORKDIR $DIR\n";
    let p = plan(src, &opts(&[("OTHER", "cli")]));
    let (scope, cmds) = run_stage(&p, 0, &[]);
    assert_eq!(env_of(&scope, "DIR").as_deref(), Some("/opt/app"));
    assert_eq!(env_of(&scope, "OTHER").as_deref(), Some("cli"));
    let Command::Workdir(w) = &cmds[3] else {
        panic!()
    };
    assert_eq!(w.path, "/opt/app");
}

#[test]
fn base_image_env_is_expanded_into_env() {
    let src = "FROM debian\nENV PATH /usr/local/bin:$PATH\n";
    let p = plan(src, &opts(&[]));
    let (scope, _) = run_stage(&p, 0, &[("PATH", "/usr/bin:/bin"), ("LANG", "C")]);
    assert_eq!(
        scope.config_env().to_key_values(),
        vec!["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C"]
    );
}

#[test]
fn scratch_gets_default_path() {
    let p = plan("FROM scratch\nENV A=$PATH\n", &opts(&[]));
    let (scope, _) = run_stage(&p, 0, &[]);
    assert_eq!(
        env_of(&scope, "A").as_deref(),
        Some(kiln_dockerfile::plan::DEFAULT_PATH)
    );
}

#[test]
fn platform_args_in_from_and_in_stages() {
    let src = "FROM --platform=$BUILDPLATFORM golang AS build\nARG TARGETARCH\nARG TARGETPLATFORM\n\
               ENV OUT=bin-$TARGETARCH\nFROM alpine-$TARGETARCH\n";
    let p = plan(src, &opts(&[]));
    assert_eq!(
        p.stages[0].platform,
        Some(Platform::parse("linux/amd64").unwrap())
    );
    assert_eq!(p.stages[1].base, Base::Image("alpine-arm64".into()));
    let (scope, _) = run_stage(&p, 0, &[]);
    assert_eq!(env_of(&scope, "OUT").as_deref(), Some("bin-arm64"));
    assert_eq!(
        env_of(&scope, "TARGETPLATFORM").as_deref(),
        Some("linux/arm64")
    );
    assert_eq!(p.global_args.get("BUILDOS"), Some("linux"));
}

#[test]
fn platform_args_need_declaring_inside_a_stage() {
    let p = plan("FROM busybox\nENV A=x$TARGETARCH\n", &opts(&[]));
    let (scope, _) = run_stage(&p, 0, &[]);
    assert_eq!(env_of(&scope, "A").as_deref(), Some("x"));
    assert!(scope.warnings().iter().any(|w| {
        w.message
            .contains("Usage of undefined variable '$TARGETARCH'")
    }));
}

#[test]
fn unused_build_args_are_reported() {
    let src = "ARG USED_GLOBAL\nFROM busybox AS a\nARG IN_UNBUILT\nFROM busybox\nARG IN_TARGET\n";
    let p = plan(
        src,
        &opts(&[
            ("USED_GLOBAL", "1"),
            ("IN_TARGET", "1"),
            ("IN_UNBUILT", "1"),
            ("NOBODY", "1"),
            ("HTTPS_PROXY", "p"),
            ("SOURCE_DATE_EPOCH", "1700000000"),
        ]),
    );
    let messages: Vec<&str> = p.warnings.iter().map(|w| w.message.as_str()).collect();
    assert_eq!(
        messages,
        vec!["One or more build-args [IN_UNBUILT NOBODY] were not consumed"]
    );
}

#[test]
fn target_selects_stages_and_orders_dependencies_first() {
    let src = "FROM alpine AS base\nFROM base AS deps\nFROM alpine AS tools\nFROM scratch AS unrelated\n\
               FROM base AS app\nCOPY --from=deps /a /a\nCOPY --from=tools /b /b\nCOPY --from=nginx:latest /c /c\n";
    let p = plan(src, &opts(&[]));
    assert_eq!(p.target, 4);
    assert_eq!(p.order, vec![0, 1, 2, 4]);
    assert_eq!(p.stages[1].base, Base::Stage(0));
    assert_eq!(p.stages[3].base, Base::Scratch);
    assert_eq!(
        p.stages[4].sources,
        vec![
            (0, Source::Stage(1)),
            (1, Source::Stage(2)),
            (2, Source::Image("nginx:latest".into()))
        ]
    );

    let mut o = opts(&[]);
    o.target = Some("DEPS".into());
    let p = plan(src, &o);
    assert_eq!((p.target, p.order.clone()), (1, vec![0, 1]));

    // Any stage's order, the target's args kept (what `kiln stage-key` keys).
    let p = plan(src, &opts(&[]));
    assert_eq!(p.order_for(1).unwrap(), vec![0, 1]);
    assert_eq!(p.order_for(3).unwrap(), vec![3]);
    assert_eq!(p.order_for(4).unwrap(), p.order);
}

/// testTargetMistype.
#[test]
fn unknown_target_suggests_a_stage() {
    let src =
        "FROM scratch AS build\nCOPY Dockerfile /out\n\nFROM scratch\nCOPY --from=build /out /\n";
    let mut o = opts(&[]);
    o.target = Some("bulid".into());
    assert_eq!(
        plan_err(src, &o),
        "target stage \"bulid\" could not be found (did you mean build?)"
    );
}

/// testDockerfileCopyFromArgs.
#[test]
fn copy_from_refuses_variables() {
    assert_eq!(
        plan_err("FROM scratch\nCOPY --from=$FOO . .\n", &opts(&[])),
        "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround"
    );
}

/// testOutOfOrderStage.
#[test]
fn copy_from_a_later_stage_is_an_error() {
    let src = "FROM busybox AS target\nCOPY --from=build /x /out\n\nFROM alpine AS build\nCOPY /Dockerfile /d2\n\nFROM target\n";
    let err = plan_err(src, &opts(&[]));
    assert!(
        err.contains("cannot copy from stage")
            && err.contains("needs to be defined before current stage"),
        "{err}"
    );
}

#[test]
fn copy_from_by_index_and_bad_index() {
    let p = plan(
        "FROM alpine\nFROM scratch\nCOPY --from=0 /a /a\n",
        &opts(&[]),
    );
    assert_eq!(p.stages[1].sources, vec![(0, Source::Stage(0))]);
    assert_eq!(
        plan_err("FROM alpine\nCOPY --from=7 /a /a\n", &opts(&[])),
        "invalid stage index 7"
    );
    assert!(
        plan_err("FROM alpine AS a\nCOPY --from=a /a /a\n", &opts(&[]))
            .contains("circular dependency")
    );
}

#[test]
fn from_names_only_earlier_stages() {
    // `later` is not defined yet at the first FROM: it is an image name.
    let p = plan("FROM later\nFROM alpine AS later\n", &opts(&[]));
    assert_eq!(p.stages[0].base, Base::Image("later".into()));
}

#[test]
fn blank_base_name_is_an_error() {
    assert_eq!(
        plan_err("ARG X\nFROM $X\n", &opts(&[])),
        "base name ($X) should not be blank"
    );
}

/// testArgDefaultExpansion and testGlobalArgErrors.
#[test]
fn required_variable_errors_carry_the_message() {
    let err = plan_source(
        b"ARG FOO=${FOO:?\"custom error\"}\nFROM busybox\n",
        &opts(&[]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("FOO: custom error"), "{err}");
    assert_eq!(err.location().map(|l| l.start_line), Some(1));
    assert!(
        plan_source(
            b"ARG FOO=${FOO:?\"custom error\"}\nFROM busybox\n",
            &opts(&[("FOO", "x")])
        )
        .is_ok()
    );

    let p = plan(
        "FROM busybox\nARG FOO\nARG BAR=${FOO:?\"foo missing\"}\n",
        &opts(&[]),
    );
    let mut scope = p.scope(0, &[]);
    let cmds = &p.stages[0].stage.commands;
    scope.dispatch(&cmds[0]).unwrap();
    let err = scope.dispatch(&cmds[1]).unwrap_err();
    assert!(err.to_string().contains("FOO: foo missing"), "{err}");
    assert_eq!(err.location().map(|l| l.start_line), Some(3));
}

#[test]
fn child_stage_inherits_env_and_arg_values() {
    let src = "FROM busybox AS base\nENV A=1\nARG B=2\nFROM base\nRUN true\n";
    let p = plan(src, &opts(&[]));
    let (scope, _) = run_stage(&p, 1, &[]);
    assert_eq!(env_of(&scope, "A").as_deref(), Some("1"));
    assert_eq!(env_of(&scope, "B").as_deref(), Some("2"));
    assert_eq!(scope.config_env().get("B"), None);
}

#[test]
fn heredoc_bodies_expand_raw_keeping_quotes() {
    let src = "FROM busybox\nENV NAME=world\nCOPY <<EOF /greeting\necho \"hello $NAME\" '$NAME'\nEOF\n\
               COPY <<'EOF' /literal\n$NAME\nEOF\n";
    let (_, cmds) = run_stage(&plan(src, &opts(&[])), 0, &[]);
    let Command::Copy(c) = &cmds[1] else { panic!() };
    assert_eq!(c.sources.contents[0].data, "echo \"hello world\" 'world'\n");
    let Command::Copy(c) = &cmds[2] else { panic!() };
    assert_eq!(c.sources.contents[0].data, "$NAME\n");
}

#[test]
fn run_and_cmd_are_left_to_the_shell() {
    // EXPOSE words are split at parse time, then each expands to words.
    let src = "FROM busybox\nENV X=1\nRUN echo $X\nCMD echo $X\nLABEL v=$X\nENV PORTS=\"80 443\"\nEXPOSE $PORTS\n";
    let (_, cmds) = run_stage(&plan(src, &opts(&[])), 0, &[]);
    let Command::Run(r) = &cmds[1] else { panic!() };
    assert_eq!(r.command.args, vec!["echo $X"]);
    let Command::Label(l) = &cmds[3] else {
        panic!()
    };
    assert_eq!(l.labels[0].value, "1");
    let Command::Expose(e) = &cmds[5] else {
        panic!()
    };
    assert_eq!(e.ports, vec!["80", "443"]);
}

#[test]
fn escape_directive_applies_to_expansion() {
    let src = "# escape=`\nFROM busybox\nENV A=x`$y B=c:\\dir\n";
    let p = plan(src, &opts(&[]));
    let (scope, _) = run_stage(&p, 0, &[]);
    assert_eq!(env_of(&scope, "A").as_deref(), Some("x$y"));
    assert_eq!(env_of(&scope, "B").as_deref(), Some("c:\\dir"));
}
