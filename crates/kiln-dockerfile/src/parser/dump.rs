//! Two renderings of the syntax tree that other tools define:
//! BuildKit's `Node.Dump()` s-expressions (its parser test format) and the
//! per-instruction records of BuildKit's Go parser as its Python binding
//! (PyPI `dockerfile`) returns them, which `kiln parse --format json` prints.

use serde::Serialize;

use super::line_parsers::{Rule, rule_for};
use super::{Ast, Node};
use crate::goconv::quote as go_quote;

impl Ast {
    /// BuildKit's AST dump: one `(keyword ["flags"] "arg"...)` line per
    /// instruction, each line ending in a newline.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for child in &self.children {
            out.push('(');
            out.push_str(&child.dump());
            out.push_str(")\n");
        }
        out
    }

    /// The instructions as BuildKit's parser records (see [`CommandView`]).
    pub fn command_views(&self) -> Vec<CommandView> {
        self.children.iter().map(Node::command_view).collect()
    }
}

impl Node {
    /// This node as one line of BuildKit's AST dump (without parentheses).
    pub fn dump(&self) -> String {
        let mut out = self.keyword.to_lowercase();
        if !self.flags.is_empty() {
            let flags: Vec<String> = self.flags.iter().map(|f| go_quote(f)).collect();
            out.push_str(&format!(" [{}]", flags.join(" ")));
        }
        if let Some(sub) = &self.sub {
            out.push_str(&format!(" ({})", sub.dump()));
        }
        for arg in &self.args {
            out.push(' ');
            out.push_str(&go_quote(arg));
        }
        out.trim_matches(char::is_whitespace).to_string()
    }

    /// This instruction as the record BuildKit's Go parser gives its Python
    /// binding: for ONBUILD, `sub_cmd`, `json` and `value` describe the
    /// wrapped instruction while `flags` stay ONBUILD's own; ENV/LABEL
    /// values are key/value pairs without separators; heredoc bodies are
    /// appended to `original`.
    pub fn command_view(&self) -> CommandView {
        let inner = self.sub.as_deref().unwrap_or(self);
        let value = if inner.sub.is_some() {
            // ONBUILD ONBUILD x: the binding lists the nested node's own
            // value, which for a wrapper is one empty string.
            vec![String::new()]
        } else if matches!(rule_for(&inner.keyword), Rule::NameVal(_)) {
            inner
                .args
                .chunks(3)
                .flat_map(|kv| kv.iter().take(2).cloned())
                .collect()
        } else {
            inner.args.clone()
        };
        // The binding reads heredocs off the wrapped node, where BuildKit
        // never puts them, so ONBUILD shows none.
        let heredocs = if self.sub.is_some() {
            &[][..]
        } else {
            &self.heredocs[..]
        };
        let mut original = self.original.clone();
        if !heredocs.is_empty() {
            original.push('\n');
            for doc in heredocs {
                original.push_str(&doc.content);
                original.push_str(&doc.name);
                original.push('\n');
            }
        }
        CommandView {
            cmd: self.command(),
            sub_cmd: self.sub.as_ref().map(|s| s.command()),
            json: inner.json,
            original,
            start_line: self.start_line,
            end_line: self.end_line,
            flags: self.flags.clone(),
            value,
            heredocs: heredocs
                .iter()
                .map(|d| HeredocView {
                    name: d.name.clone(),
                    file_descriptor: d.file_descriptor,
                    content: d.content.clone(),
                })
                .collect(),
        }
    }
}

/// One instruction in the shape of BuildKit's parser node as exposed by its
/// Python binding (`dockerfile.Command`), keyword upper-cased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandView {
    pub cmd: String,
    pub sub_cmd: Option<String>,
    pub json: bool,
    pub original: String,
    pub start_line: usize,
    pub end_line: usize,
    pub flags: Vec<String>,
    pub value: Vec<String>,
    pub heredocs: Vec<HeredocView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeredocView {
    pub name: String,
    pub file_descriptor: u64,
    pub content: String,
}
