//! `kiln parse`: show how kiln (and BuildKit) read a Dockerfile.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use kiln_dockerfile::{Ast, CommandView, Error as DockerfileError, instructions};
use serde::Serialize;

use crate::report::SourceError;

/// Parse a Dockerfile and print its instructions.
///
/// `--format json` prints BuildKit's parser view: one object with the parser
/// directives and, per instruction, the fields of BuildKit's parser node
/// (`cmd`, `sub_cmd`, `json`, `original`, `start_line`, `end_line`, `flags`,
/// `value`, `heredocs`). It fails only where BuildKit's parser fails.
/// The text format is for people and also checks each instruction (unknown
/// instructions and flags, bad flag values), failing where a build would.
#[derive(Args)]
pub(crate) struct ParseArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// The Dockerfile (`-` reads standard input).
    #[arg(default_value = "Dockerfile")]
    file: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Serialize)]
struct JsonOutput {
    directives: BTreeMap<String, String>,
    instructions: Vec<CommandView>,
}

pub(crate) fn run(args: ParseArgs) -> anyhow::Result<ExitCode> {
    let bytes = read_input(&args.file)?;
    let shown_path = if args.file == Path::new("-") {
        Path::new("<stdin>")
    } else {
        args.file.as_path()
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let ast = kiln_dockerfile::parse(&bytes).map_err(|e| source_error(shown_path, &text, e))?;
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            let output = JsonOutput {
                directives: ast
                    .directives
                    .iter()
                    .map(|d| (d.name.clone(), d.value.clone()))
                    .collect(),
                instructions: ast.command_views(),
            };
            serde_json::to_writer_pretty(&mut out, &output)?;
            writeln!(out)?;
        }
        Format::Text => {
            write!(out, "{}", render_text(&ast))?;
            out.flush()?;
            for w in &ast.warnings {
                eprintln!(
                    "warning: {}:{}: {}",
                    args.file.display(),
                    w.start_line,
                    w.message
                );
            }
            instructions::parse_dockerfile(&ast)
                .map_err(|e| SourceError::new(shown_path, &text, e.location(), e.message()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading the Dockerfile from standard input")?;
        return Ok(buf);
    }
    Ok(fs_err::read(path)?)
}

fn source_error(path: &Path, text: &str, err: DockerfileError) -> anyhow::Error {
    match err {
        DockerfileError::Parse { message, location } => {
            SourceError::new(path, text, location, message).into()
        }
        other => anyhow::Error::new(other).context(format!("reading {}", path.display())),
    }
}

/// One block per instruction: its lines, keyword, flags and arguments, then
/// any heredoc bodies, indented.
fn render_text(ast: &Ast) -> String {
    let mut out = String::new();
    for d in &ast.directives {
        out.push_str(&format!("{:>7}  # {}={}\n", d.line, d.name, d.value));
    }
    for node in &ast.children {
        let lines = if node.start_line == node.end_line {
            node.start_line.to_string()
        } else {
            format!("{}-{}", node.start_line, node.end_line)
        };
        out.push_str(&format!("{lines:>7}  {}", render_node(node)));
        out.push('\n');
        for doc in &node.heredocs {
            let fd = if doc.file_descriptor == 0 {
                String::new()
            } else {
                doc.file_descriptor.to_string()
            };
            let how = match (doc.expand, doc.chomp) {
                (true, false) => "",
                (true, true) => " (tabs stripped)",
                (false, false) => " (not expanded)",
                (false, true) => " (not expanded, tabs stripped)",
            };
            out.push_str(&format!("         {fd}<<{}{how}\n", doc.name));
            for line in doc.content.lines() {
                out.push_str(&format!("         | {line}\n"));
            }
        }
    }
    out
}

fn render_node(node: &kiln_dockerfile::Node) -> String {
    let mut s = node.command();
    for f in &node.flags {
        s.push(' ');
        s.push_str(f);
    }
    if let Some(sub) = &node.sub {
        s.push(' ');
        s.push_str(&render_node(sub));
    }
    if node.json {
        // HEALTHCHECK's first argument is its type (CMD), outside the array.
        let (typ, array) = match node.command().as_str() {
            "HEALTHCHECK" => node
                .args
                .split_first()
                .map_or((None, &node.args[..]), |(t, r)| (Some(t), r)),
            _ => (None, &node.args[..]),
        };
        if let Some(typ) = typ {
            s.push(' ');
            s.push_str(typ);
        }
        s.push(' ');
        s.push_str(&serde_json::to_string(array).unwrap_or_default());
    } else if matches!(node.command().as_str(), "ENV" | "LABEL") {
        for kv in node.args.chunks(3) {
            if let [k, v, sep] = kv {
                let sep = if sep.is_empty() { " " } else { sep.as_str() };
                s.push_str(&format!(" {k}{sep}{v}"));
            }
        }
    } else {
        // Unknown keywords keep one empty argument (BuildKit's parseIgnore).
        for a in node.args.iter().filter(|a| !a.is_empty()) {
            s.push(' ');
            s.push_str(a);
        }
    }
    s
}
