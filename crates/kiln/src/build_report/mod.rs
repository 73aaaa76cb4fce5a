//! What a build did, kept: `kiln build --report DIR` and `kiln history`.
//!
//! The report is one more reader of the engine's events, beside the
//! progress renderers. A [`Recorder`] takes each [`kiln_build::Event`]
//! (and each registry transfer event) with the time it arrived; when the
//! build returns, [`Recorder::finish`] puts them together with how the
//! build ended into a [`Report`]: a versioned JSON document (the schema is
//! [`SCHEMA`], every field in docs/REPORT.md) and one self-contained HTML
//! page (a timeline with a lane per stage and platform, the critical path,
//! diagnoses, layers). A failed build has a report too: that is when
//! people read one.
//!
//! ```text
//! engine events ──▶ Recorder ──finish(Outcome)──▶ Report ──▶ report.json, report.html
//! registry events ─┘                                    └──▶ <store>/history/<id>/
//! ```
//!
//! - `model.rs`: the document's types (what serde writes and reads back);
//! - `record.rs`: the events kept as they come, then assembled (pure);
//! - `critical.rs`: the critical path through the steps' lanes;
//! - `html.rs`: the page, every string escaped, no network;
//! - `history.rs`: reports written atomically, kept in the store, pruned.

mod critical;
mod history;
mod html;
mod model;
mod record;

#[cfg(test)]
mod tests;

pub(crate) use self::history::{History, write_report};
pub(crate) use self::html::render as render_html;
pub(crate) use self::model::BuildStatus;
pub(crate) use self::record::{BuildInfo, Outcome, Recorder};

/// The `schema` field of every report this kiln writes. A reader checks
/// it; a change that removes or changes the meaning of a field makes a v2.
pub(crate) const SCHEMA: &str = "kiln.report/v1";

/// The names of the two files in a report directory.
pub(crate) const JSON_FILE: &str = "report.json";
pub(crate) const HTML_FILE: &str = "report.html";
