//! Typed instructions: each instruction, flag and error as BuildKit's
//! `instructions` package reads them (its own tests included, as behaviour),
//! and the expansion hook.

use std::collections::BTreeMap;
use std::time::Duration;

use kiln_dockerfile::instructions::{
    Command, CommandLine, Dockerfile, Expander, ExpansionError, Healthcheck, InlineFile,
    InstructionError, KeyValuePair, Mount, MountType, NetworkMode, SecurityMode, ShareMode,
    SourceContent, SourcesAndDest, parse_dockerfile, parse_instruction,
};
use kiln_dockerfile::shell::Lex;
use kiln_dockerfile::{Location, Node, parse};

/// The file read through both passes.
fn dockerfile(src: &str) -> Result<Dockerfile, InstructionError> {
    parse_dockerfile(&parse(src.as_bytes()).expect("syntax"))
}

/// The first instruction of `src` (no `FROM` needed).
fn command(src: &str) -> Command {
    try_command(src).unwrap_or_else(|e| panic!("{src:?}: {e}"))
}

fn try_command(src: &str) -> Result<Command, InstructionError> {
    let ast = parse(src.as_bytes()).expect("syntax");
    parse_instruction(&ast.children[0])
}

/// BuildKit's message for the first instruction of `src`.
fn error(src: &str) -> String {
    match try_command(src) {
        Ok(c) => panic!("{src:?} was accepted: {c:?}"),
        Err(e) => e.message(),
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

macro_rules! expect {
    ($src:expr, $variant:ident) => {
        match command($src) {
            Command::$variant(c) => c,
            other => panic!("{}: not {}: {other:?}", $src, stringify!($variant)),
        }
    };
}

fn node(keyword: &str, args: &[&str]) -> Node {
    let mut ast = parse(format!("{keyword} a=b").as_bytes()).unwrap();
    let mut node = ast.children.remove(0);
    node.args = strings(args);
    node
}

// ---- stages ----------------------------------------------------------------

#[test]
fn stages_and_meta_args() {
    let d = dockerfile(
        "# foo sets foo\nARG foo=bar\n\n# base defines first stage\nFROM busybox AS base\n\
         # this is irrelevant\nARG foo\n# bar defines bar\n# baz is something else\nARG bar baz=123\n\
         FROM --platform=$BUILDPLATFORM scratch\nRUN true\n",
    )
    .unwrap();
    assert_eq!(d.meta_args.len(), 1);
    assert_eq!(d.meta_args[0].args[0].key, "foo");
    assert_eq!(d.meta_args[0].args[0].value.as_deref(), Some("bar"));
    assert_eq!(
        d.meta_args[0].args[0].doc_comment.as_deref(),
        Some("sets foo")
    );

    let base = &d.stages[0];
    assert_eq!(base.name.as_deref(), Some("base"));
    assert_eq!(base.base_name, "busybox");
    assert_eq!(base.doc_comment.as_deref(), Some("defines first stage"));
    assert_eq!(base.orig_cmd, "FROM");
    assert_eq!(base.code, "FROM busybox AS base");
    assert_eq!(
        base.location,
        Location {
            start_line: 5,
            end_line: 5
        }
    );
    let Command::Arg(foo) = &base.commands[0] else {
        panic!()
    };
    assert_eq!(
        (foo.args[0].key.as_str(), foo.args[0].doc_comment.as_deref()),
        ("foo", None)
    );
    let Command::Arg(bar) = &base.commands[1] else {
        panic!()
    };
    assert_eq!(bar.args[0].doc_comment.as_deref(), Some("defines bar"));
    assert_eq!(bar.args[1].key, "baz");
    assert_eq!(bar.args[1].value.as_deref(), Some("123"));
    assert_eq!(
        bar.args[1].doc_comment.as_deref(),
        Some("is something else")
    );

    let second = &d.stages[1];
    assert_eq!(second.name, None);
    assert_eq!(second.platform.as_deref(), Some("$BUILDPLATFORM"));
    assert_eq!(second.commands.len(), 1);
}

#[test]
fn stage_names_are_lower_cased_and_checked() {
    let d = dockerfile("from Alpine:3 As Build.Stage-1_x\n").unwrap();
    assert_eq!(d.stages[0].name.as_deref(), Some("build.stage-1_x"));
    assert_eq!(d.stages[0].base_name, "Alpine:3");
    assert_eq!(d.stages[0].orig_cmd, "from");
    // Go's EqualFold: the long s folds to s.
    assert_eq!(
        dockerfile("FROM a a\u{17f} b\n").unwrap().stages[0]
            .name
            .as_deref(),
        Some("b")
    );
    assert_eq!(
        error("FROM a AS 1st"),
        "invalid name for build stage: \"1st\", name can't start with a number or contain symbols"
    );
    assert_eq!(
        error("FROM a AS b$c"),
        "invalid name for build stage: \"b$c\", name can't start with a number or contain symbols"
    );
    for src in [
        "FROM",
        "FROM a b",
        "FROM a AS",
        "FROM a is b",
        "FROM a AS b c",
    ] {
        assert_eq!(
            error(src),
            "FROM requires either one or three arguments",
            "{src}"
        );
    }
    // The argument count is checked before the flags.
    assert_eq!(
        error("FROM --bogus a b"),
        "FROM requires either one or three arguments"
    );
    assert_eq!(error("FROM --bogus a"), "unknown flag: --bogus");
    assert_eq!(
        error("FROM --platfrom=x a"),
        "unknown flag: --platfrom (did you mean platform?)"
    );
    assert_eq!(
        dockerfile("FROM --platform= a\n").unwrap().stages[0].platform,
        None
    );
}

#[test]
fn only_arg_before_the_first_from() {
    let e = dockerfile("ARG a\nRUN true\nFROM scratch\n").unwrap_err();
    assert_eq!(e.message(), "no build stage in current context");
    assert_eq!(
        e.location(),
        Location {
            start_line: 2,
            end_line: 2
        }
    );
    assert!(
        matches!(e, InstructionError::NoBuildStage { ref instruction, .. } if instruction == "RUN")
    );
    let e = dockerfile("ARG foo=bar").unwrap_err();
    assert_eq!(e.to_string(), "dockerfile contains no stages to build");
    assert!(matches!(e, InstructionError::NoStages { .. }));
    // FROM is not a command.
    assert_eq!(
        error("FROM scratch"),
        "*instructions.Stage is not a command type"
    );
}

// ---- unknown instructions and flags ----------------------------------------

#[test]
fn unknown_instructions_suggest_the_nearest() {
    let e = dockerfile("FROM scratch\n\nRUNN true\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "dockerfile parse error on line 3: unknown instruction: RUNN (did you mean RUN?)"
    );
    assert_eq!(
        e.location(),
        Location {
            start_line: 3,
            end_line: 3
        }
    );
    assert!(matches!(
        e,
        InstructionError::UnknownInstruction { ref instruction, ref suggestion, .. }
            if instruction == "RUNN" && suggestion.as_deref() == Some("RUN")
    ));
    assert_eq!(
        error("runn x"),
        "unknown instruction: runn (did you mean run?)"
    );
    assert_eq!(
        error("FNTRYPOINT [\"a\"]"),
        "unknown instruction: FNTRYPOINT (did you mean ENTRYPOINT?)"
    );
    // BuildKit's own test only wants the start: FROM is two edits away.
    assert_eq!(
        error("FOO bar"),
        "unknown instruction: FOO (did you mean FROM?)"
    );
    assert_eq!(
        error("foo bar"),
        "unknown instruction: foo (did you mean from?)"
    );
    assert_eq!(error("XYZZY bar"), "unknown instruction: XYZZY");
    assert_eq!(
        error("Cpy a b"),
        "unknown instruction: Cpy (did you mean copy?)"
    );
}

#[test]
fn instructions_are_case_insensitive() {
    assert!(matches!(command("rUn true"), Command::Run(_)));
    let c = expect!("workdir /x", Workdir);
    assert_eq!(c.origin.keyword, "workdir");
    assert_eq!(command("eNv a=b").name(), "ENV");
}

#[test]
fn flags_each_instruction_takes() {
    let copy = expect!(
        "COPY --from=build --chown=1:2 --chmod=755 --link --exclude=*.md --exclude=tmp \
         --parents a b /dst/",
        Copy
    );
    assert_eq!(copy.from.as_deref(), Some("build"));
    assert_eq!(copy.chown.as_deref(), Some("1:2"));
    assert_eq!(copy.chmod.as_deref(), Some("755"));
    assert!(copy.link && copy.parents);
    assert_eq!(copy.exclude, ["*.md", "tmp"]);
    assert_eq!(copy.sources.paths, ["a", "b"]);
    assert_eq!(copy.sources.dest, "/dst/");

    let add = expect!(
        "ADD --chown=me --chmod=u+x --link=false --keep-git-dir --checksum=sha256:abc \
         --unpack=true --exclude=x https://e.com/a.tgz /",
        Add
    );
    assert_eq!(add.chown.as_deref(), Some("me"));
    assert_eq!(add.chmod.as_deref(), Some("u+x"));
    assert!(!add.link);
    assert_eq!(add.keep_git_dir, Some(true));
    assert_eq!(add.checksum.as_deref(), Some("sha256:abc"));
    assert_eq!(add.unpack, Some(true));
    assert_eq!(add.exclude, ["x"]);
    let plain = expect!("ADD a b", Add);
    assert_eq!(
        (plain.keep_git_dir, plain.unpack, plain.chown),
        (None, None, None)
    );

    assert_eq!(error("ADD --from=x a b"), "unknown flag: --from");
    assert_eq!(error("COPY --checksum=x a b"), "unknown flag: --checksum");
    assert_eq!(
        error("COPY --form=x a b"),
        "unknown flag: --form (did you mean from?)"
    );
    assert_eq!(
        error("COPY --lnk a b"),
        "unknown flag: --lnk (did you mean link?)"
    );
    assert_eq!(
        error("MAINTAINER --boo joe@example.com"),
        "unknown flag: --boo"
    );
    assert_eq!(error("ENV --x a=b"), "unknown flag: --x");
    assert_eq!(error("CMD --doit=true a"), "unknown flag: --doit");
    assert_eq!(
        error("RUN --mont=target=/x true"),
        "unknown flag: --mont (did you mean mount?)"
    );
}

#[test]
fn flag_forms() {
    assert!(expect!("COPY --link=TRUE a b", Copy).link);
    assert!(!expect!("COPY --link=False a b", Copy).link);
    assert_eq!(error("COPY --link= a b"), "missing a value on flag: --link");
    assert_eq!(
        error("COPY --link=yes a b"),
        "expecting boolean value for flag --link, not: yes"
    );
    assert_eq!(error("COPY --from a b"), "missing a value on flag: --from");
    assert_eq!(
        error("COPY --exclude a b"),
        "missing a value on flag: --exclude"
    );
    assert_eq!(
        error("COPY --from=a --from=b a b"),
        "duplicate flag specified: --from"
    );
    assert_eq!(
        error("COPY --link --link a b"),
        "duplicate flag specified: --link"
    );
    // An empty string value is allowed, and means "not given".
    assert_eq!(expect!("COPY --chown= a b", Copy).chown, None);
    // Flags are case-sensitive.
    assert_eq!(error("COPY --LINK a b"), "unknown flag: --LINK");
    assert_eq!(
        error("COPY --Link a b"),
        "unknown flag: --Link (did you mean link?)"
    );
    // The parser drops a bare `--`; what follows is arguments.
    assert_eq!(expect!("COPY --link -- --x b", Copy).sources.paths, ["--x"]);
    let e = try_command("COPY --from=a --from=b a b").unwrap_err();
    assert!(matches!(e, InstructionError::InvalidFlag { ref flag, .. } if flag == "--from"));
}

#[test]
fn instructions_that_read_no_flags_ignore_them() {
    // BuildKit never parses the flags of STOPSIGNAL, ARG and HEALTHCHECK NONE.
    assert_eq!(
        expect!("STOPSIGNAL --x SIGTERM", StopSignal).signal,
        "SIGTERM"
    );
    assert_eq!(expect!("ARG --x a", Arg).args[0].key, "a");
    assert_eq!(
        expect!("HEALTHCHECK --x=1 NONE", Healthcheck).health.test,
        ["NONE"]
    );
}

// ---- argument checks (BuildKit's parse_test.go) ----------------------------

#[test]
fn argument_counts() {
    for cmd in ["MAINTAINER", "WORKDIR", "USER", "STOPSIGNAL"] {
        assert_eq!(error(cmd), format!("{cmd} requires exactly one argument"));
    }
    for cmd in [
        "ENV",
        "LABEL",
        "ONBUILD",
        "HEALTHCHECK",
        "EXPOSE",
        "VOLUME",
        "ARG",
        "SHELL",
    ] {
        assert_eq!(error(cmd), format!("{cmd} requires at least one argument"));
    }
    for cmd in ["ADD", "COPY"] {
        assert_eq!(
            error(&format!("{cmd} arg1")),
            format!(
                "{cmd} requires at least two arguments, but only one was provided. \
                 Destination could not be determined"
            )
        );
    }
    assert!(
        error("COPY\t\n\t\tquux \\\n      bar").starts_with("COPY requires at least two arguments")
    );
    // WORKDIR and USER take the rest of the line as one argument.
    assert_eq!(expect!("WORKDIR a b", Workdir).path, "a b");
    assert_eq!(
        parse_instruction(&node("WORKDIR", &["a", "b"]))
            .unwrap_err()
            .message(),
        "WORKDIR requires exactly one argument"
    );
    // The count comes before the flags for these.
    assert_eq!(error("USER --x"), "USER requires exactly one argument");
}

#[test]
fn env_and_label_pairs() {
    let env = expect!("ENV a=1 b=\"two words\" c=$x", Env);
    assert_eq!(
        env.pairs,
        [
            KeyValuePair {
                key: "a".into(),
                value: "1".into(),
                no_delim: false
            },
            KeyValuePair {
                key: "b".into(),
                value: "\"two words\"".into(),
                no_delim: false
            },
            KeyValuePair {
                key: "c".into(),
                value: "$x".into(),
                no_delim: false
            },
        ]
    );
    let legacy = expect!("ENV PATH /usr/local/bin:$PATH", Env);
    assert_eq!(legacy.pairs[0].value, "/usr/local/bin:$PATH");
    assert!(legacy.pairs[0].no_delim);
    let label = expect!("LABEL \"com.example\"=\"x y\"", Label);
    assert_eq!(label.labels[0].key, "\"com.example\"");

    for cmd in ["ENV", "LABEL"] {
        let too_many = node(cmd, &["arg1", "arg2", "arg3", ""]);
        assert_eq!(
            parse_instruction(&too_many).unwrap_err().message(),
            format!("Bad input to {cmd}, too many arguments")
        );
        let blank = node(cmd, &["", "arg2", "="]);
        assert_eq!(
            parse_instruction(&blank).unwrap_err().message(),
            format!("{cmd} names can not be blank")
        );
    }
}

#[test]
fn arg_names_and_defaults() {
    let arg = expect!("ARG a b=c d=\"e f\" g= h=i=j", Arg);
    let got: Vec<(&str, Option<&str>)> = arg
        .args
        .iter()
        .map(|a| (a.key.as_str(), a.value.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("a", None),
            ("b", Some("c")),
            ("d", Some("\"e f\"")),
            ("g", Some("")),
            ("h", Some("i=j"))
        ]
    );
    assert_eq!(error("ARG =x"), "ARG names can not be blank");
}

#[test]
fn maintainer_user_workdir_stopsignal() {
    assert_eq!(
        expect!("MAINTAINER Jane <j@e.org>", Maintainer).maintainer,
        "Jane <j@e.org>"
    );
    assert_eq!(expect!("USER app:app", User).user, "app:app");
    assert_eq!(expect!("WORKDIR \"/a b\"", Workdir).path, "\"/a b\"");
    assert_eq!(expect!("STOPSIGNAL SIGKILL", StopSignal).signal, "SIGKILL");
}

#[test]
fn expose_and_volume() {
    assert_eq!(
        expect!("EXPOSE 8080/udp 80 443 $P", Expose).ports,
        ["$P", "443", "80", "8080/udp"]
    );
    assert_eq!(expect!("VOLUME /a /b", Volume).volumes, ["/a", "/b"]);
    assert_eq!(
        expect!("VOLUME [\"/c\", \" /d \"]", Volume).volumes,
        ["/c", "/d"]
    );
    assert_eq!(
        error("VOLUME [\"/c\", \" \"]"),
        "VOLUME specified can not be an empty string"
    );
}

// ---- RUN, CMD, ENTRYPOINT, SHELL --------------------------------------------

#[test]
fn command_forms() {
    let run = expect!("RUN echo $HOME && ls", Run);
    assert_eq!(
        run.command,
        CommandLine {
            args: strings(&["echo $HOME && ls"]),
            files: vec![],
            prepend_shell: true
        }
    );
    let run = expect!("RUN [\"ls\", \"/\"]", Run);
    assert_eq!(run.command.args, ["ls", "/"]);
    assert!(!run.command.prepend_shell);
    assert_eq!(expect!("RUN [\"<<EOF\"]", Run).command.args, ["<<EOF"]);
    assert_eq!(expect!("CMD [\"a\", \"b\"]", Cmd).command.args, ["a", "b"]);
    assert_eq!(expect!("CMD []", Cmd).command.args, Vec::<String>::new());
    assert_eq!(
        expect!("ENTRYPOINT []", Entrypoint).command.args,
        Vec::<String>::new()
    );
    // Not JSON: the whole text as one word.
    let mut shell_form = node("ENTRYPOINT", &["[]random", "string"]);
    shell_form.json = false;
    let Command::Entrypoint(e) = parse_instruction(&shell_form).unwrap() else {
        panic!()
    };
    assert_eq!(e.command.args, ["[]random string"]);
    assert_eq!(
        expect!("SHELL [\"pwsh\", \"-c\"]", Shell).shell,
        ["pwsh", "-c"]
    );
    assert_eq!(
        error("SHELL pwsh -c"),
        "SHELL requires the arguments to be in JSON form"
    );
    assert_eq!(error("SHELL []"), "SHELL requires at least one argument");
}

#[test]
fn run_heredocs() {
    let run = expect!("RUN <<EOF\nls /\nwhoami\nEOF\n", Run);
    assert_eq!(run.command.args, ["<<EOF"]);
    assert_eq!(
        run.command.files,
        [InlineFile {
            name: "EOF".into(),
            data: "ls /\nwhoami\n".into(),
            chomp: false
        }]
    );
    assert_eq!(
        run.origin.location,
        Location {
            start_line: 1,
            end_line: 4
        }
    );
    let run = expect!("RUN <<'EOF' | python\nprint(\"hello\")\nEOF\n", Run);
    assert_eq!(run.command.args, ["<<'EOF' | python"]);
    assert_eq!(run.command.files[0].data, "print(\"hello\")\n");
    let run = expect!("RUN <<-EOF\n\techo test\nEOF\n", Run);
    assert_eq!(run.command.args, ["<<-EOF"]);
    assert_eq!(
        run.command.files,
        [InlineFile {
            name: "EOF".into(),
            data: "\techo test\n".into(),
            chomp: true
        }]
    );
}

#[test]
fn run_flags() {
    let run = expect!(
        "RUN --mount=type=cache,target=/root/.cache --network=none --security=insecure \
         --device=vendor.com/gpu=0,required --device=name=v.com/x true",
        Run
    );
    assert_eq!(run.flags_used, ["device", "mount", "network", "security"]);
    assert_eq!(run.network, NetworkMode::None);
    assert_eq!(run.security, SecurityMode::Insecure);
    assert_eq!(run.devices.len(), 2);
    assert_eq!(
        (run.devices[0].name.as_str(), run.devices[0].required),
        ("vendor.com/gpu=0", true)
    );
    assert_eq!(
        (run.devices[1].name.as_str(), run.devices[1].required),
        ("v.com/x", false)
    );
    assert_eq!(run.mount_specs, ["type=cache,target=/root/.cache"]);

    let run = expect!("RUN --mount=type=tmpfs,target=/foo/ echo hello", Run);
    assert_eq!(run.flags_used, ["mount"]);
    let plain = expect!("RUN true", Run);
    assert_eq!(
        (plain.network, plain.security),
        (NetworkMode::Default, SecurityMode::Sandbox)
    );
    assert!(plain.flags_used.is_empty());

    assert_eq!(
        error("RUN --network=bridge true"),
        "invalid network mode \"bridge\""
    );
    assert_eq!(
        error("RUN --security=privileged true"),
        "security \"privileged\" is not valid"
    );
    assert_eq!(
        error("RUN --device=a,b true"),
        "invalid field 'b' must be a key=value pair"
    );
    assert_eq!(
        error("RUN --network=host --network=none true"),
        "duplicate flag specified: --network"
    );
    let e = try_command("RUN --network=bridge true").unwrap_err();
    assert!(matches!(e, InstructionError::InvalidRunOption { .. }));
}

#[test]
fn run_mounts_before_and_after_expansion() {
    // Parsing reads only `from`; the rest waits for expansion.
    let run = expect!(
        "RUN --mount=type=cache,target=/c,sharing=locked,from=cachebase true",
        Run
    );
    assert_eq!(
        run.mounts,
        [Mount {
            from: Some("cachebase".into()),
            read_only: true,
            ..Mount::default()
        }]
    );
    let full = run.mounts_as_written().unwrap();
    assert_eq!(full[0].kind, MountType::Cache);
    assert_eq!(full[0].sharing, Some(ShareMode::Locked));
    assert_eq!(full[0].target.as_deref(), Some("/c"));
    assert!(!full[0].read_only);

    // So a bad key only shows once the mount is read in full ...
    let run = expect!("RUN --mount=typ=tmpfs /bin/true", Run);
    assert_eq!(
        run.mounts_as_written().unwrap_err().message(),
        "unexpected key 'typ' in 'typ=tmpfs' (did you mean type?)"
    );
    // ... but `from` with a variable, and broken CSV, are refused at once.
    assert_eq!(
        error("RUN --mount=from=$ttt,type=cache,target=/tmp ls"),
        "'from' doesn't support variable expansion, define alias stage instead"
    );
    assert_eq!(
        error("RUN --mount=target=a\\\"b true"),
        "failed to parse csv mounts: parse error on line 1, column 9: bare \" in non-quoted-field"
    );
}

// ---- COPY and ADD sources ---------------------------------------------------

#[test]
fn copy_sources_with_heredocs() {
    let sd = |src: &str| expect!(src, Copy).sources;
    assert_eq!(
        sd("COPY /foo /bar"),
        SourcesAndDest {
            dest: "/bar".into(),
            paths: strings(&["/foo"]),
            contents: vec![]
        }
    );
    let content = |path: &str, data: &str, expand: bool| SourceContent {
        path: path.into(),
        data: data.into(),
        expand,
    };
    assert_eq!(
        sd("COPY <<EOF /bar\nEOF\n").contents,
        [content("EOF", "", true)]
    );
    assert_eq!(
        sd("COPY <<EOF /bar\nTESTING\nEOF\n").contents,
        [content("EOF", "TESTING\n", true)]
    );
    assert_eq!(
        sd("COPY <<-EOF /bar\n\tTESTING\nEOF\n").contents,
        [content("EOF", "TESTING\n", true)]
    );
    assert_eq!(
        sd("COPY <<'EOF' /bar\nTESTING\nEOF\n").contents,
        [content("EOF", "TESTING\n", false)]
    );
    assert_eq!(
        sd(
            "COPY <<EOF1 <<EOF2 /bar\nthis is the first file\nEOF1\nthis is the second file\nEOF2\n"
        )
        .contents,
        [
            content("EOF1", "this is the first file\n", true),
            content("EOF2", "this is the second file\n", true)
        ]
    );
    let mixed = sd("COPY <<EOF foo.txt /bar\nthis is inline\nEOF\n");
    assert_eq!(mixed.paths, ["foo.txt"]);
    assert_eq!(mixed.contents, [content("EOF", "this is inline\n", true)]);
    assert_eq!(
        sd("COPY <<EOF /quotes\n\"quotes\"\nEOF\n").contents,
        [content("EOF", "\"quotes\"\n", true)]
    );
    assert_eq!(
        error("COPY /foo <<EOF\nEOF\n"),
        "COPY cannot accept a heredoc as a destination"
    );
    assert_eq!(
        error("ADD /foo <<EOF\nEOF\n"),
        "ADD cannot accept a heredoc as a destination"
    );
    // JSON form: paths with spaces.
    let json = sd("COPY [\"a b\", \"/c d/\"]");
    assert_eq!(
        (json.paths, json.dest),
        (strings(&["a b"]), "/c d/".to_string())
    );
}

// ---- ONBUILD ----------------------------------------------------------------

#[test]
fn onbuild_keeps_the_trigger_text() {
    let c = expect!("ONBUILD RUN echo hi", Onbuild);
    assert_eq!(
        (c.trigger.as_str(), c.expression.as_str()),
        ("RUN", "RUN echo hi")
    );
    let c = expect!("  onbuild   copy --from=x a b", Onbuild);
    assert_eq!(c.expression, "copy --from=x a b");
    assert_eq!(c.trigger, "COPY");
    let c = expect!("ONBUILD RUN <<EOF\necho $X\nEOF\n", Onbuild);
    assert_eq!(c.expression, "RUN <<EOF\necho $X\nEOF");
    // The trigger itself is parsed when a child stage runs it.
    let trigger = parse(c.expression.as_bytes()).unwrap();
    let Command::Run(run) = parse_instruction(&trigger.children[0]).unwrap() else {
        panic!()
    };
    assert_eq!(run.command.files[0].data, "echo $X\n");

    assert_eq!(
        error("ONBUILD ONBUILD RUN touch foobar"),
        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    );
    assert_eq!(
        error("ONBUILD FROM scratch"),
        "FROM isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        error("ONBUILD maintainer me"),
        "MAINTAINER isn't allowed as an ONBUILD trigger"
    );
    // Not checked here: the trigger's own arguments.
    assert_eq!(expect!("ONBUILD RUNN x", Onbuild).trigger, "RUNN");
}

// ---- HEALTHCHECK ------------------------------------------------------------

#[test]
fn healthchecks() {
    let h = expect!(
        "HEALTHCHECK --interval=5m --timeout=3s --start-period=1.5s --start-interval=100ms \
         --retries=4 CMD curl -f http://localhost/ || exit 1",
        Healthcheck
    )
    .health;
    assert_eq!(
        h,
        Healthcheck {
            test: strings(&["CMD-SHELL", "curl -f http://localhost/ || exit 1"]),
            interval: Duration::from_secs(300),
            timeout: Duration::from_secs(3),
            start_period: Duration::from_millis(1500),
            start_interval: Duration::from_millis(100),
            retries: 4,
        }
    );
    let h = expect!("HEALTHCHECK CMD [\"/bin/check\", \"-q\"]", Healthcheck).health;
    assert_eq!(h.test, ["CMD", "/bin/check", "-q"]);
    assert_eq!((h.interval, h.retries), (Duration::ZERO, 0));
    assert_eq!(
        expect!("healthcheck none", Healthcheck).health.test,
        ["NONE"]
    );
    assert_eq!(
        expect!("HEALTHCHECK --interval=0s CMD x", Healthcheck)
            .health
            .interval,
        Duration::ZERO
    );

    // BuildKit's TestHealthCheckCmd: shell words are joined.
    let Command::Healthcheck(h) =
        parse_instruction(&node("HEALTHCHECK", &["CMD", "hello", "world"])).unwrap()
    else {
        panic!()
    };
    assert_eq!(h.health.test, ["CMD-SHELL", "hello world"]);

    let cases = [
        ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
        (
            "HEALTHCHECK CONNECT x",
            "Unknown type \"CONNECT\" in HEALTHCHECK (try CMD)",
        ),
        ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
        (
            "HEALTHCHECK --interval=50ns CMD x",
            "Interval \"interval\" cannot be less than 1ms",
        ),
        (
            "HEALTHCHECK --timeout=-1s CMD x",
            "Interval \"timeout\" cannot be less than 1ms",
        ),
        (
            "HEALTHCHECK --start-period=5 CMD x",
            "time: missing unit in duration \"5\"",
        ),
        (
            "HEALTHCHECK --start-interval=1y CMD x",
            "time: unknown unit \"y\" in duration \"1y\"",
        ),
        (
            "HEALTHCHECK --interval=soon CMD x",
            "time: invalid duration \"soon\"",
        ),
        (
            "HEALTHCHECK --retries=-1 CMD x",
            "--retries cannot be negative (-1)",
        ),
        (
            "HEALTHCHECK --retries=x CMD x",
            "strconv.ParseInt: parsing \"x\": invalid syntax",
        ),
        (
            "HEALTHCHECK --retres=1 CMD x",
            "unknown flag: --retres (did you mean retries?)",
        ),
        ("HEALTHCHECK --retry=1 CMD x", "unknown flag: --retry"),
        // Flags are checked before the type.
        ("HEALTHCHECK --bogus CONNECT x", "unknown flag: --bogus"),
    ];
    for (src, message) in cases {
        assert_eq!(error(src), message, "{src}");
    }
}

// ---- expansion ----------------------------------------------------------------

/// Expands with the crate's shell lexer, as the lowering will.
struct ShellEnv {
    vars: BTreeMap<String, String>,
    words_calls: usize,
}

impl ShellEnv {
    fn new(vars: &[(&str, &str)]) -> ShellEnv {
        ShellEnv {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            words_calls: 0,
        }
    }
}

impl Expander for ShellEnv {
    type Error = kiln_dockerfile::shell::ExpandError;

    fn word(&mut self, word: &str) -> Result<String, Self::Error> {
        Lex::new('\\').process_word(word, &self.vars)
    }

    fn words(&mut self, word: &str) -> Result<Vec<String>, Self::Error> {
        self.words_calls += 1;
        Lex::new('\\').process_words(word, &self.vars)
    }

    fn raw(&mut self, text: &str) -> Result<String, Self::Error> {
        let mut lex = Lex::new('\\');
        lex.skip_process_quotes = true;
        lex.process_word(text, &self.vars)
    }
}

fn expanded(src: &str, vars: &[(&str, &str)]) -> Command {
    let mut c = command(src);
    c.expand(&mut ShellEnv::new(vars))
        .unwrap_or_else(|e| panic!("{src}: {e}"));
    c
}

#[test]
fn env_label_workdir_user_volume_stopsignal_expand() {
    let vars = [("A", "x"), ("B", "y z")];
    let Command::Env(env) = expanded("ENV K_$A=\"$B\" L=${A:-no}", &vars) else {
        panic!()
    };
    assert_eq!(
        (env.pairs[0].key.as_str(), env.pairs[0].value.as_str()),
        ("K_x", "y z")
    );
    assert_eq!(env.pairs[1].value, "x");
    let Command::Label(l) = expanded("LABEL \"k\"='$A'", &vars) else {
        panic!()
    };
    assert_eq!(
        (l.labels[0].key.as_str(), l.labels[0].value.as_str()),
        ("k", "$A")
    );
    let Command::Workdir(w) = expanded("WORKDIR /srv/$A", &vars) else {
        panic!()
    };
    assert_eq!(w.path, "/srv/x");
    let Command::User(u) = expanded("USER ${A}:$A", &vars) else {
        panic!()
    };
    assert_eq!(u.user, "x:x");
    let Command::Volume(v) = expanded("VOLUME [\"/$A\", \"/b c\"]", &vars) else {
        panic!()
    };
    assert_eq!(v.volumes, ["/x", "/b c"]);
    let Command::StopSignal(s) = expanded("STOPSIGNAL SIG$A", &vars) else {
        panic!()
    };
    assert_eq!(s.signal, "SIGx");
}

#[test]
fn expose_splits_words() {
    let mut c = command("EXPOSE $PORTS 22");
    let mut env = ShellEnv::new(&[("PORTS", "80/tcp 443")]);
    c.expand(&mut env).unwrap();
    let Command::Expose(e) = c else { panic!() };
    // Sorted as written ("$PORTS" < "22"), not re-sorted after.
    assert_eq!(e.ports, ["80/tcp", "443", "22"]);
    assert_eq!(env.words_calls, 2);
}

#[test]
fn copy_and_add_expand_what_buildkit_expands() {
    let vars = [
        ("U", "app"),
        ("M", "0755"),
        ("D", "/dst"),
        ("S", "src"),
        ("F", "stage"),
    ];
    let Command::Copy(c) = expanded(
        "COPY --from=$F --chown=$U:$U --chmod=$M --exclude=$S $S/a.txt <<EOF <<'RAW' $D/\n\
         hello \"$U\" \\$U\nEOF\nkeep $U\nRAW\n",
        &vars,
    ) else {
        panic!()
    };
    assert_eq!(c.from.as_deref(), Some("$F"), "--from is never expanded");
    assert_eq!(c.exclude, ["$S"], "--exclude is never expanded");
    assert_eq!(c.chown.as_deref(), Some("app:app"));
    assert_eq!(c.chmod.as_deref(), Some("0755"));
    assert_eq!(c.sources.paths, ["src/a.txt"]);
    assert_eq!(c.sources.dest, "/dst/");
    // Raw: quotes stay, escapes and variables are processed.
    assert_eq!(c.sources.contents[0].data, "hello \"app\" $U\n");
    assert_eq!(c.sources.contents[1].data, "keep $U\n");

    let Command::Add(a) = expanded(
        "ADD --checksum=$SUM --chown=$EMPTY https://x/$F.tgz /",
        &[("SUM", "sha256:1"), ("F", "f")],
    ) else {
        panic!()
    };
    assert_eq!(a.checksum.as_deref(), Some("sha256:1"));
    assert_eq!(
        a.chown, None,
        "an option that expands to nothing is not given"
    );
    assert_eq!(a.sources.paths, ["https://x/f.tgz"]);
}

#[test]
fn commands_buildkit_does_not_expand() {
    let vars = [("X", "expanded")];
    for src in [
        "RUN echo $X",
        "CMD echo $X",
        "ENTRYPOINT [\"$X\"]",
        "SHELL [\"$X\"]",
        "ARG A=$X",
        "MAINTAINER $X",
        "ONBUILD RUN $X",
        "HEALTHCHECK CMD $X",
        "RUN --network=none --device=$X true",
    ] {
        assert_eq!(expanded(src, &vars), command(src), "{src}");
    }
}

#[test]
fn run_mounts_read_after_expansion() {
    let vars = [
        ("T", "cache"),
        ("DIR", "/root/.npm"),
        ("MODE", "0700"),
        ("BAD", "tmp"),
    ];
    let Command::Run(run) = expanded(
        "RUN --mount=type=$T,target=$DIR,id=npm,mode=$MODE,sharing=private \
         --mount=type=secret,id=tok,env=TOKEN npm ci",
        &vars,
    ) else {
        panic!()
    };
    assert_eq!(
        run.mounts[0],
        Mount {
            kind: MountType::Cache,
            target: Some("/root/.npm".into()),
            id: Some("npm".into()),
            mode: Some(0o700),
            sharing: Some(ShareMode::Private),
            ..Mount::default()
        }
    );
    assert_eq!(run.mounts[1].kind, MountType::Secret);
    assert_eq!(run.mounts[1].env.as_deref(), Some("TOKEN"));
    assert!(run.mounts[1].read_only);
    assert_eq!(run.command.args, ["npm ci"]);

    let mut c = command("RUN --mount=type=$BAD true");
    let err = c.expand(&mut ShellEnv::new(&vars)).unwrap_err();
    let ExpansionError::Instruction(e) = err else {
        panic!("{err}")
    };
    assert_eq!(
        e.message(),
        "unsupported mount type \"tmp\" (did you mean tmpfs?)"
    );

    // The expander's own errors come back as they are.
    let mut c = command("RUN --mount=target=${NOPE:?must_be_set} true");
    let err = c.expand(&mut ShellEnv::new(&[])).unwrap_err();
    assert!(matches!(err, ExpansionError::Expand(_)), "{err}");
    assert!(err.to_string().contains("must_be_set"), "{err}");
}

#[test]
fn stages_expand_base_and_platform() {
    let mut d = dockerfile("ARG V=3\nFROM --platform=$P alpine:$V AS a\n").unwrap();
    let stage = &mut d.stages[0];
    stage
        .expand(&mut ShellEnv::new(&[("V", "3.20"), ("P", "linux/arm64")]))
        .unwrap();
    assert_eq!(stage.base_name, "alpine:3.20");
    assert_eq!(stage.platform.as_deref(), Some("linux/arm64"));
    assert_eq!(stage.name.as_deref(), Some("a"));
}

#[test]
fn errors_name_their_lines() {
    let e = dockerfile("FROM scratch\nCOPY --chmod=1 \\\n  a\n").unwrap_err();
    assert_eq!(
        e.location(),
        Location {
            start_line: 2,
            end_line: 3
        }
    );
    assert_eq!(
        e.to_string(),
        "dockerfile parse error on line 2: COPY requires at least two arguments, but only one \
         was provided. Destination could not be determined"
    );
}

// ---- comments above instructions --------------------------------------------

#[test]
fn origin_keeps_the_comments_above_with_their_lines() {
    let d = dockerfile(
        "FROM scratch\n# about copy\nCOPY a b\n# kiln: retries=2\n\n# kiln: timeout=1m\n# second line\nRUN true\nRUN false\n",
    )
    .unwrap();
    let commands = &d.stages[0].commands;
    let texts = |c: &Command| -> Vec<(usize, String)> {
        c.origin()
            .comments
            .iter()
            .map(|c| (c.line, c.text.clone()))
            .collect()
    };
    assert_eq!(texts(&commands[0]), [(2, "about copy".to_string())]);
    // BuildKit keeps comments across the blank line; the block directly
    // above the instruction does not.
    assert_eq!(
        texts(&commands[1]),
        [
            (4, "kiln: retries=2".to_string()),
            (6, "kiln: timeout=1m".to_string()),
            (7, "second line".to_string())
        ]
    );
    let above: Vec<usize> = commands[1]
        .origin()
        .comments_directly_above()
        .iter()
        .map(|c| c.line)
        .collect();
    assert_eq!(above, [6, 7]);
    assert!(commands[2].origin().comments.is_empty());
    assert!(commands[2].origin().comments_directly_above().is_empty());
}
