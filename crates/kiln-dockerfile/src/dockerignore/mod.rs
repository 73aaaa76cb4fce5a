//! `.dockerignore` semantics, exactly as Docker and BuildKit apply them
//! (`moby/patternmatcher` and its `ignorefile` package), without I/O.
//!
//! [`read_ignore_file`] turns the file's text into an ordered pattern list;
//! [`PatternMatcher`] decides for each build-context path whether it is
//! excluded. The rules, in short:
//!
//! * patterns are relative to the context root (the reader drops a leading
//!   `/`); they are trimmed and cleaned like paths (`docs/` and `./docs`
//!   mean `docs`);
//! * `*` and `?` do not cross `/`; `**` matches any number of directories,
//!   including none; `[...]` and `[^...]` are classes; `\` escapes;
//! * a pattern that matches a directory excludes everything below it;
//! * patterns apply in order and the last one that matches wins, so
//!   `!pattern` re-includes what an earlier pattern excluded, even below an
//!   excluded directory (a walker must then still descend into it, see
//!   [`PatternMatcher::can_skip_excluded_dir`]);
//! * [`ignore_file_candidates`] names the ignore file that applies:
//!   `<Dockerfile>.dockerignore` beside the Dockerfile, else the context's
//!   `.dockerignore`.
//!
//! Upstream compiles patterns to Go regular expressions in a way that leaks
//! Go's regexp syntax into patterns (`\d` is a digit, `|` alternates in a
//! pattern with a wildcard, a `[` inside a class is a member). This module reproduces that text and reads
//! it with Go's rules, so odd patterns match, and fail, as they do in Docker.
//! Where Go releases differ, current Go is followed (it checks a pattern's
//! glob syntax to its end, and reads `\pl` like `\pL`). Deliberately not
//! reproduced: Windows behaviour (`\` as a separator) and Go's limits on the
//! size of a compiled regexp (the `regex` crate's own limits apply instead).

mod compile;
mod error;
mod goregex;
mod ignorefile;
mod matcher;
mod path;

pub use self::{
    error::PatternError,
    ignorefile::{ignore_file_candidates, read_ignore_file},
    matcher::{MatchInfo, Pattern, PatternMatcher},
    path::clean_path,
};
