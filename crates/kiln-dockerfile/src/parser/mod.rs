//! Text → syntax tree, with the node model of BuildKit's `parser` package.

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
}

/// A here-document attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The terminator word, unquoted.
    pub name: String,
    /// `3<<EOF` gives 3; plain `<<EOF` gives 0.
    pub file_descriptor: u32,
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
        self.keyword.to_ascii_uppercase()
    }
}

/// Parses a Dockerfile's bytes.
pub fn parse(_src: &[u8]) -> Result<Ast, crate::Error> {
    todo!("parser lands in the next commit")
}
