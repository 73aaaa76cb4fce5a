//! Text → syntax tree, with the node model of BuildKit's `parser` package.
//!
//! The parser reproduces BuildKit's line handling exactly, quirks included,
//! because a Dockerfile must mean the same thing to kiln as to `docker build`:
//! lines are read with their endings, a UTF-8 BOM is dropped from the first,
//! comment lines vanish (also inside continuations), the escape character
//! at the end of a line continues it unless it is itself escaped, an empty
//! line inside a continuation is skipped with a warning, and RUN/COPY/ADD
//! lines read heredoc bodies after them. Argument splitting per keyword is
//! in `line_parsers`; the keyword/flags split in `split_command`.

mod directives;
mod dump;
mod heredoc;
mod json;
mod line_parsers;
mod split_command;
mod text;

use self::directives::DirectiveParser;
use self::line_parsers::{Rule, rule_for, split_args};
use self::split_command::split_command;
use self::text::{is_comment, trim_leading_space, trim_newline, trim_space};
use crate::{Error, Location};

pub use self::dump::{CommandView, HeredocView};
pub use self::heredoc::{chomp_heredoc_content, parse_heredoc};

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ast {
    /// Parser directives found at the top (`syntax`, `escape`, `check`), in order.
    pub directives: Vec<Directive>,
    /// The escape character in effect (`\` or `` ` ``).
    pub escape: char,
    /// The instructions, in source order.
    pub children: Vec<Node>,
    /// Non-fatal findings (e.g. empty continuation lines).
    pub warnings: Vec<Warning>,
}

/// A parser directive such as `# syntax=docker/dockerfile:1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Lower-cased name: `syntax`, `escape` or `check`.
    pub name: String,
    pub value: String,
    /// 1-based line.
    pub line: usize,
}

/// A non-fatal finding of the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub message: String,
    pub start_line: usize,
    pub end_line: usize,
}

/// One instruction of the syntax tree, as BuildKit's parser splits it.
///
/// BuildKit keeps arguments as a linked list of nodes; here they are a vector.
/// `ONBUILD` holds its sub-instruction in [`Node::sub`] instead of [`Node::args`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The keyword as written (`RUN`, `run`, or an unknown word such as `RUNN`).
    pub keyword: String,
    /// Leading `--name` / `--name=value` words, unquoted; a bare `--` ends them.
    pub flags: Vec<String>,
    /// Arguments, split per instruction as BuildKit does. For `ENV` and `LABEL`
    /// they come in triples `key, value, separator` where the separator is `"="`
    /// for `k=v` and `""` for the legacy `ENV k v` form; values keep their quotes.
    pub args: Vec<String>,
    /// For `ONBUILD`: the instruction it wraps.
    pub sub: Option<Box<Node>>,
    /// The arguments were a JSON array (exec form).
    pub json: bool,
    /// The instruction text with continuation lines joined, as BuildKit's `Original`.
    pub original: String,
    /// 1-based first and last line, heredoc bodies included.
    pub start_line: usize,
    pub end_line: usize,
    /// Heredoc bodies, in the order their markers appear.
    pub heredocs: Vec<Heredoc>,
    /// The comment lines directly above the instruction (without `#`).
    pub prev_comment: Vec<String>,
    /// The 1-based line of each entry of [`Node::prev_comment`]: BuildKit
    /// keeps comments across blank lines, and a caller that wants only the
    /// block right above the instruction needs to know where each was.
    pub prev_comment_lines: Vec<usize>,
}

/// A here-document attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The terminator word, unquoted.
    pub name: String,
    /// `3<<EOF` gives 3; plain `<<EOF` gives 0.
    pub file_descriptor: u64,
    /// False when any part of the marker was quoted: the body is not expanded.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the body when it is used.
    pub chomp: bool,
    /// The body, each line with its newline, not yet chomped.
    pub content: String,
}

impl Node {
    /// The keyword, upper-cased (`RUN`).
    pub fn command(&self) -> String {
        self.keyword.to_uppercase()
    }

    /// The keyword, lower-cased, for matching (`run`).
    pub fn command_lower(&self) -> String {
        self.keyword.to_lowercase()
    }

    pub fn location(&self) -> Location {
        Location {
            start_line: self.start_line,
            end_line: self.end_line,
        }
    }

    /// RUN, COPY and ADD in shell form may carry heredocs (also under ONBUILD).
    fn can_contain_heredoc(&self) -> bool {
        let node = match (&self.sub, self.command_lower().as_str()) {
            (Some(sub), "onbuild") => sub.as_ref(),
            _ => self,
        };
        matches!(node.command_lower().as_str(), "run" | "copy" | "add") && !node.json
    }
}

/// Longest line BuildKit's scanner accepts (its 64 KiB buffer, newline included).
const MAX_LINE: usize = 64 * 1024 - 1;

/// Parses a Dockerfile's bytes. Invalid UTF-8 is read as U+FFFD.
pub fn parse(src: &[u8]) -> Result<Ast, Error> {
    let mut lines = Lines::new(src);
    let result = Parser::default().run(&mut lines);
    // A line over the limit stops the scan; whatever was parsed before it,
    // the file is rejected, as BuildKit's scanner error is.
    if let Some(line) = lines.too_long {
        return Err(Error::Parse {
            message: format!("dockerfile line greater than max allowed size of {MAX_LINE}"),
            location: Location {
                start_line: line,
                end_line: line,
            },
        });
    }
    result
}

/// The source split into lines that keep their `\n` (BuildKit's scanLines).
struct Lines<'a> {
    rest: &'a [u8],
    /// The 1-based number of a line that was too long; reading stops there.
    too_long: Option<usize>,
    read: usize,
}

impl<'a> Lines<'a> {
    fn new(src: &'a [u8]) -> Self {
        Lines {
            rest: src,
            too_long: None,
            read: 0,
        }
    }

    fn next_line(&mut self) -> Option<String> {
        if self.rest.is_empty() || self.too_long.is_some() {
            return None;
        }
        let end = self
            .rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(self.rest.len(), |i| i + 1);
        let content = if self.rest[..end].ends_with(b"\n") {
            end - 1
        } else {
            end
        };
        if content > MAX_LINE {
            self.too_long = Some(self.read + 1);
            return None;
        }
        let line = String::from_utf8_lossy(&self.rest[..end]).into_owned();
        self.rest = &self.rest[end..];
        self.read += 1;
        Some(line)
    }
}

struct Parser {
    directives: DirectiveParser,
    escape: char,
}

impl Default for Parser {
    fn default() -> Self {
        Parser {
            directives: DirectiveParser::default(),
            escape: '\\',
        }
    }
}

fn parse_error(message: impl Into<String>, start_line: usize, end_line: usize) -> Error {
    Error::Parse {
        message: message.into(),
        location: Location {
            start_line,
            end_line,
        },
    }
}

impl Parser {
    fn run(mut self, lines: &mut Lines<'_>) -> Result<Ast, Error> {
        let mut children = Vec::new();
        let mut warnings = Vec::new();
        let mut comments: Vec<String> = Vec::new();
        let mut comment_lines: Vec<usize> = Vec::new();
        let mut current = 0usize;

        while let Some(raw) = lines.next_line() {
            let raw = if current == 0 {
                raw.strip_prefix('\u{feff}')
                    .map(str::to_string)
                    .unwrap_or(raw)
            } else {
                raw
            };
            if is_comment(&raw) {
                // BuildKit drops the line's first byte, not the `#` itself.
                let comment = trim_space(raw.get(1..).unwrap_or("")).to_string();
                if comment.is_empty() {
                    comments.clear();
                    comment_lines.clear();
                } else {
                    comments.push(comment);
                    comment_lines.push(current + 1);
                }
            }
            let (processed, was_directive) = self
                .process_line(&raw, true, current + 1)
                .map_err(|m| parse_error(m, current + 1, current + 1))?;
            if was_directive {
                comments.pop();
                comment_lines.pop();
            }
            current += 1;
            let start_line = current;
            let (first, mut at_end) = self.trim_continuation(&processed);
            if at_end && first.is_empty() {
                continue;
            }
            let mut line = first;
            let mut has_empty_continuation = false;
            while !at_end {
                let Some(raw) = lines.next_line() else { break };
                let (processed, _) = self
                    .process_line(&raw, false, current + 1)
                    .map_err(|m| parse_error(m, current + 1, current + 1))?;
                current += 1;
                if is_comment(&raw) {
                    continue;
                }
                if trim_leading_space(trim_newline(&processed)).is_empty() {
                    has_empty_continuation = true;
                    continue;
                }
                let (piece, end) = self.trim_continuation(&processed);
                line.push_str(&piece);
                at_end = end;
            }
            if has_empty_continuation {
                warnings.push(Warning {
                    message: format!("Empty continuation line found in: {line}"),
                    start_line,
                    end_line: current,
                });
            }

            let mut node = new_node_from_line(&line, self.escape)
                .map_err(|m| parse_error(m, start_line, current))?;
            node.prev_comment = std::mem::take(&mut comments);
            node.prev_comment_lines = std::mem::take(&mut comment_lines);

            if node.can_contain_heredoc() && line.contains("<<") {
                let docs = heredoc::heredocs_from_line(&line)
                    .map_err(|m| parse_error(m, start_line, current))?;
                for mut doc in docs {
                    let mut terminated = false;
                    while let Some(body_line) = lines.next_line() {
                        current += 1;
                        let mut candidate = trim_newline(&body_line);
                        if doc.chomp {
                            candidate = candidate.trim_start_matches('\t');
                        }
                        if candidate == doc.name {
                            terminated = true;
                            break;
                        }
                        doc.content.push_str(&body_line);
                    }
                    if !terminated {
                        return Err(parse_error("unterminated heredoc", start_line, current));
                    }
                    node.heredocs.push(doc);
                }
            }
            node.start_line = start_line;
            node.end_line = current;
            if let Some(sub) = node.sub.as_mut() {
                sub.start_line = start_line;
                sub.end_line = current;
            }
            children.push(node);
        }

        if children.is_empty() && lines.too_long.is_none() {
            return Err(parse_error("file with no instructions", current, current));
        }
        Ok(Ast {
            directives: self.directives.found,
            escape: self.escape,
            children,
            warnings,
        })
    }

    /// Newline trimmed, leading space dropped on an instruction's first line,
    /// comment lines emptied; also feeds the directive parser. Returns the
    /// line and whether it was a directive.
    fn process_line(
        &mut self,
        raw: &str,
        strip_left: bool,
        line_no: usize,
    ) -> Result<(String, bool), String> {
        let mut token = trim_newline(raw);
        if strip_left {
            token = trim_leading_space(token);
        }
        let mut was_directive = false;
        if let Some(directive) = self.directives.parse_line(token, line_no)? {
            was_directive = true;
            if directive.name == "escape" {
                self.escape = match directive.value.as_str() {
                    "`" => '`',
                    "\\" => '\\',
                    v => return Err(format!("invalid escape token '{v}' does not match ` or \\")),
                };
            }
        }
        Ok((
            if is_comment(token) {
                String::new()
            } else {
                token.to_string()
            },
            was_directive,
        ))
    }

    /// Removes a line-continuation escape (optionally followed by blanks) at
    /// the end of `line`. An escape preceded by another escape is literal:
    /// BuildKit's `([^E])E[ \t]*$|^E[ \t]*$`. Returns (line, at end of instruction).
    fn trim_continuation(&self, line: &str) -> (String, bool) {
        let body = line.trim_end_matches([' ', '\t']);
        if let Some(before) = body.strip_suffix(self.escape)
            && (before.is_empty() || !before.ends_with(self.escape))
        {
            return (before.to_string(), false);
        }
        (line.to_string(), true)
    }
}

/// One logical line → node: keyword, flags, then the keyword's own splitting.
fn new_node_from_line(line: &str, escape: char) -> Result<Node, String> {
    let (keyword, flags, rest) = split_command(line);
    let rule = rule_for(&keyword);
    let mut node = Node {
        keyword,
        flags,
        args: Vec::new(),
        sub: None,
        json: false,
        original: line.to_string(),
        start_line: 0,
        end_line: 0,
        heredocs: Vec::new(),
        prev_comment: Vec::new(),
        prev_comment_lines: Vec::new(),
    };
    if rule == Rule::SubCommand {
        if !rest.is_empty() {
            node.sub = Some(Box::new(new_node_from_line(&rest, escape)?));
        }
    } else {
        let parsed = split_args(rule, &rest, escape)?;
        node.args = parsed.args;
        node.json = parsed.json;
    }
    Ok(node)
}
