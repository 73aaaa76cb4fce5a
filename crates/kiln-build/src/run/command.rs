//! The command line of a `RUN`, as BuildKit's `dispatchRun` builds it.

use kiln_dockerfile::chomp_heredoc_content;
use kiln_dockerfile::instructions::RunCommand;

use super::error::RunError;

/// Where a heredoc script that starts with `#!` is mounted (BuildKit's
/// `/dev/pipes/`): under the run's own /dev tmpfs, so never in the root.
pub(crate) const SCRIPT_DIR: &str = "/dev/pipes";

/// What a `RUN` executes: the process's `argv` and, for a lone heredoc
/// with a shebang, the script file it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) struct CommandArgs {
    /// `argv`, the shell included for the shell form. This is what
    /// BuildKit's messages and image history show.
    pub args: Vec<String>,
    /// A heredoc script, mounted read-only at [`InlineScript::path`].
    pub script: Option<InlineScript>,
}

/// A `RUN <<EOF` body that starts with `#!`: a 0755 file the shell runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InlineScript {
    /// The heredoc's name, which is the file's name.
    pub name: String,
    /// The body, tabs removed for `<<-`.
    pub data: String,
}

impl InlineScript {
    /// Where the step sees the script.
    pub(crate) fn path(&self) -> String {
        format!("{SCRIPT_DIR}/{}", self.name)
    }
}

/// The command line of `command` under `shell` (the stage's `SHELL`):
///
/// - exec form: the JSON array as it is;
/// - shell form: `shell` + the text;
/// - exactly one heredoc as the whole command (`RUN <<EOF`): its body is
///   the text for the shell, or, when it starts with `#!`, a script file
///   under `/dev/pipes/` whose path is the text for the shell;
/// - any other heredoc use (`RUN python3 <<EOF`, several heredocs): the
///   line, then each body followed by its terminator, as one text for
///   the shell, which reads the heredocs itself.
///
/// `<<-` bodies lose their leading tabs in the first case; in the second
/// the shell does that.
pub(crate) fn command_args(
    command: &RunCommand,
    shell: &[String],
) -> Result<CommandArgs, RunError> {
    let line = &command.command;
    let mut args = line.args.clone();
    let mut script = None;
    if !line.files.is_empty() {
        if args.len() != 1 || !line.prepend_shell {
            return Err(RunError::InvalidCommand { args });
        }
        // BuildKit's `MustParseHeredoc`: a malformed marker is no marker.
        let lone = kiln_dockerfile::parse_heredoc(&args[0]).ok().flatten();
        if lone.is_some() {
            let file = &line.files[0];
            let data = if file.chomp {
                chomp_heredoc_content(&file.data)
            } else {
                file.data.clone()
            };
            if data.starts_with("#!") {
                let inline = InlineScript {
                    name: file.name.clone(),
                    data,
                };
                if !is_file_name(&inline.name) {
                    return Err(RunError::InvalidMountTarget {
                        target: inline.path(),
                    });
                }
                args = vec![inline.path()];
                script = Some(inline);
            } else {
                args = vec![data];
            }
        } else {
            let mut text = args[0].clone();
            for file in &line.files {
                text.push('\n');
                text.push_str(&file.data);
                text.push_str(&file.name);
            }
            args = vec![text];
        }
    }
    if line.prepend_shell {
        // BuildKit's `withShell`: the words joined by one space.
        let mut with_shell = shell.to_vec();
        with_shell.push(args.join(" "));
        args = with_shell;
    }
    Ok(CommandArgs { args, script })
}

fn is_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_dockerfile::instructions::{Command, parse_dockerfile};

    fn run_of(dockerfile: &str) -> RunCommand {
        let ast = kiln_dockerfile::parse(dockerfile.as_bytes()).unwrap();
        let file = parse_dockerfile(&ast).unwrap();
        match file.stages[0].commands.last().unwrap() {
            Command::Run(run) => run.clone(),
            other => panic!("not a RUN: {other:?}"),
        }
    }

    fn args_of(dockerfile: &str) -> CommandArgs {
        let sh = ["/bin/sh".to_string(), "-c".to_string()];
        command_args(&run_of(dockerfile), &sh).unwrap()
    }

    #[test]
    fn exec_and_shell_forms() {
        assert_eq!(
            args_of("FROM x\nRUN [\"echo\", \"a b\"]\n").args,
            ["echo", "a b"]
        );
        assert_eq!(
            args_of("FROM x\nRUN echo   hi  there\n").args,
            ["/bin/sh", "-c", "echo   hi  there"]
        );
        let shell = [
            "bash".to_string(),
            "-euo".into(),
            "pipefail".into(),
            "-c".into(),
        ];
        let run = run_of("FROM x\nRUN echo hi\n");
        assert_eq!(
            command_args(&run, &shell).unwrap().args,
            ["bash", "-euo", "pipefail", "-c", "echo hi"]
        );
    }

    #[test]
    fn a_lone_heredoc_is_the_shell_text() {
        let got = args_of("FROM x\nRUN <<EOF\necho a\necho b\nEOF\n");
        assert_eq!(got.args, ["/bin/sh", "-c", "echo a\necho b\n"]);
        assert_eq!(got.script, None);
    }

    #[test]
    fn a_chomped_heredoc_loses_its_tabs() {
        let got = args_of("FROM x\nRUN <<-EOF\n\techo a\n\t\techo b\n\tEOF\n");
        assert_eq!(got.args, ["/bin/sh", "-c", "echo a\necho b\n"]);
    }

    #[test]
    fn a_shebang_heredoc_is_a_script_file() {
        let got = args_of("FROM x\nRUN <<SCRIPT\n#!/bin/sh\necho hi\nSCRIPT\n");
        assert_eq!(got.args, ["/bin/sh", "-c", "/dev/pipes/SCRIPT"]);
        assert_eq!(
            got.script,
            Some(InlineScript {
                name: "SCRIPT".into(),
                data: "#!/bin/sh\necho hi\n".into()
            })
        );
    }

    #[test]
    fn other_heredocs_go_to_the_shell_whole() {
        let got = args_of("FROM x\nRUN python3 <<EOF\nprint(1)\nEOF\n");
        assert_eq!(got.args, ["/bin/sh", "-c", "python3 <<EOF\nprint(1)\nEOF"]);
        let got = args_of("FROM x\nRUN cat <<A <<-B\na\nA\n\tb\n\tB\n");
        assert_eq!(got.args, ["/bin/sh", "-c", "cat <<A <<-B\na\nA\n\tb\nB"]);
    }
}
