//! The report as one HTML page, self-contained: inline CSS, no script, no
//! URL that leaves the file (its Content-Security-Policy forbids loading
//! anything), readable at a phone's width.
//!
//! Every string that comes from the Dockerfile, the build's output or the
//! file system goes through [`esc`]; the report's JSON is embedded as an
//! inert data block with `<`, `>` and `&` written as `\u003c`..., so no
//! text can close it.
//!
//! The DOM is part of the interface (the tests and people's scripts read
//! it): each lane is `.lane` with `data-stage` and `data-platform`, each
//! bar `.bar` with `data-step` and `data-status`, each step `.step` with
//! `id="step-N"`; `.critical` marks the critical path.

use std::fmt::Write as _;

use super::model::{Hang, Report, Stage, Step, StepStatus};
use crate::progress::human_bytes;

/// The page of `report`.
pub(crate) fn render(report: &Report) -> String {
    let mut page = Page::default();
    page.head(report);
    page.header(report);
    page.error(report);
    page.totals(report);
    page.timeline(report);
    page.steps(report);
    page.layers(report);
    page.warnings_and_notes(report);
    page.data(report);
    page.out.push_str("</main>\n</body>\n</html>\n");
    page.out
}

/// `s` as HTML text or attribute value.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `12.3s`, `4m05s`, `250ms`.
fn duration(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    crate::render::text::duration(std::time::Duration::from_millis(ms))
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 * 100.0 / whole as f64).clamp(0.0, 100.0)
    }
}

fn short_digest(d: &str) -> String {
    match d.strip_prefix("sha256:") {
        Some(hex) if hex.len() > 12 => format!("sha256:{}", &hex[..12]),
        _ => d.to_string(),
    }
}

fn status_label(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Run => "run",
        StepStatus::Cached => "cached",
        StepStatus::RemoteCached => "remote cache",
        StepStatus::Config => "config",
        StepStatus::Failed => "failed",
        StepStatus::NotRun => "not run",
    }
}

/// The stage, and its platform when the build has several.
fn lane_name(stage: &Stage, platforms: &[String]) -> String {
    match &stage.platform {
        Some(p) if platforms.len() > 1 => format!("{} {p}", stage.name),
        _ => stage.name.clone(),
    }
}

const STYLE: &str = r#"
:root{--fg:#1d232b;--muted:#5b6672;--bg:#fff;--panel:#f5f7f9;--line:#d9dee4;
--run:#2f6fdf;--cached:#2e9e5b;--remote:#18a3a3;--config:#9aa5b1;--failed:#d93f3f;--notrun:#e6e9ed;--crit:#f08c00}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1100px;margin:0 auto;padding:16px}
h1{font-size:1.4em;margin:.2em 0 .4em}
h2{font-size:1.15em;margin:1.4em 0 .5em;border-bottom:1px solid var(--line);padding-bottom:.2em}
code,pre{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre{background:var(--panel);border:1px solid var(--line);border-radius:6px;padding:8px;overflow-x:auto;white-space:pre-wrap;word-break:break-word;margin:.4em 0}
.badge{display:inline-block;border-radius:999px;padding:.05em .6em;font-size:.8em;font-weight:600;color:#fff;vertical-align:middle;background:var(--muted)}
.b-succeeded{background:var(--cached)}.b-failed,.b-stalled,.b-timed_out{background:var(--failed)}.b-cancelled{background:var(--config)}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:.15em 1em;margin:0}
.facts dt{color:var(--muted)}.facts dd{margin:0;overflow-wrap:anywhere}
.error{border-left:4px solid var(--failed);padding-left:10px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:8px}
.card{background:var(--panel);border:1px solid var(--line);border-radius:6px;padding:8px}
.card b{display:block;font-size:1.25em}.card span{color:var(--muted);font-size:.85em}
.legend{display:flex;flex-wrap:wrap;gap:.3em 1em;font-size:.85em;color:var(--muted);margin-bottom:6px}
.legend i{display:inline-block;width:.9em;height:.9em;border-radius:2px;vertical-align:-.1em;margin-right:.3em}
.axis,.lane{display:grid;grid-template-columns:11rem 1fr;gap:8px;align-items:center}
.axis .ticks{position:relative;height:1.2em;font-size:.75em;color:var(--muted)}
.axis .ticks span{position:absolute;transform:translateX(-50%);white-space:nowrap}
.axis .ticks span:first-child{transform:none}.axis .ticks span:last-child{transform:translateX(-100%)}
.lane{border-top:1px solid var(--line);padding:4px 0}
.lane-name{font-weight:600;overflow-wrap:anywhere}.lane-name small{font-weight:400;color:var(--muted)}
.track{position:relative;height:26px;background:repeating-linear-gradient(90deg,transparent 0 calc(25% - 1px),var(--line) calc(25% - 1px) 25%);border-radius:3px}
.bar{position:absolute;top:3px;height:20px;min-width:3px;border-radius:3px;overflow:hidden;white-space:nowrap;color:#fff;font-size:11px;line-height:20px;padding:0 3px;text-decoration:none}
.bar.s-run{background:var(--run)}.bar.s-cached{background:var(--cached)}.bar.s-remote-cached{background:var(--remote)}
.bar.s-config{background:var(--config)}.bar.s-failed{background:var(--failed)}
.bar.critical{box-shadow:0 0 0 2px var(--crit);z-index:1}
.step{border:1px solid var(--line);border-left:6px solid var(--config);border-radius:6px;padding:8px 10px;margin:8px 0;background:var(--bg)}
.step.s-run{border-left-color:var(--run)}.step.s-cached{border-left-color:var(--cached)}.step.s-remote-cached{border-left-color:var(--remote)}
.step.s-failed{border-left-color:var(--failed)}.step.s-not-run{border-left-color:var(--notrun);opacity:.75}
.step header{display:flex;flex-wrap:wrap;gap:.2em .7em;align-items:baseline}
.step .label{color:var(--muted)}.step .time{margin-left:auto;font-variant-numeric:tabular-nums}
.step code.instr{display:block;overflow-wrap:anywhere;white-space:pre-wrap;margin:.3em 0}
.step .meta{font-size:.85em;color:var(--muted);overflow-wrap:anywhere}
.chip{font-size:.75em;border-radius:999px;padding:0 .5em;border:1px solid var(--line)}
.chip.critical{border-color:var(--crit);color:#9a5a00}
.s-run .chip.st{background:var(--run);color:#fff}.s-cached .chip.st{background:var(--cached);color:#fff}
.s-remote-cached .chip.st{background:var(--remote);color:#fff}.s-failed .chip.st{background:var(--failed);color:#fff}
details{margin:.3em 0}summary{cursor:pointer;font-weight:600}
details.diagnosis>summary{color:var(--failed)}
table{border-collapse:collapse;width:100%;font-size:.9em}
td,th{text-align:left;padding:3px 6px;border-bottom:1px solid var(--line);vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.sizebar{height:8px;background:var(--run);border-radius:2px;min-width:1px}
@media (max-width:600px){
 main{padding:10px}
 .axis,.lane{grid-template-columns:1fr;gap:2px}
 .axis .name{display:none}
 .layers .hide-narrow{display:none}
}
"#;

#[derive(Default)]
struct Page {
    out: String,
}

impl Page {
    fn push(&mut self, s: &str) {
        self.out.push_str(s);
    }

    fn head(&mut self, r: &Report) {
        let title = format!(
            "kiln build {}: {}",
            r.build.target.as_deref().unwrap_or(""),
            r.build.status.as_str()
        );
        let _ = write!(
            self.out,
            "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
             style-src 'unsafe-inline'; img-src data:\">\n\
             <meta name=\"generator\" content=\"kiln {}\">\n<title>{}</title>\n<style>{STYLE}</style>\n\
             </head>\n<body>\n<main>\n",
            esc(&r.kiln_version),
            esc(&title)
        );
    }

    fn header(&mut self, r: &Report) {
        let b = &r.build;
        let _ = write!(
            self.out,
            "<header id=\"build\" data-status=\"{s}\">\n<h1>kiln build <span class=\"badge b-{s}\">{s}</span></h1>\n<dl class=\"facts\">\n",
            s = b.status.as_str()
        );
        let mut fact = |name: &str, value: String| {
            let _ = writeln!(self.out, "<dt>{name}</dt><dd>{value}</dd>");
        };
        if let Some(t) = &b.target {
            fact("target", esc(t));
        }
        if !r.platforms.is_empty() {
            fact("platforms", esc(&r.platforms.join(", ")));
        }
        fact("Dockerfile", format!("<code>{}</code>", esc(&b.dockerfile)));
        fact("context", format!("<code>{}</code>", esc(&b.context)));
        fact("started", esc(&b.started_at));
        fact("duration", duration(b.duration_ms));
        if let Some(image) = &b.image {
            fact("image", format!("<code>{}</code>", esc(image)));
        }
        if !b.tags.is_empty() {
            fact("tags", esc(&b.tags.join(", ")));
        }
        fact("exit status", b.exit_code.to_string());
        fact("report", format!("<code>{}</code>", esc(&r.id)));
        self.push("</dl>\n</header>\n");
    }

    fn error(&mut self, r: &Report) {
        if let Some(error) = &r.build.error {
            let _ = write!(
                self.out,
                "<section class=\"error\" id=\"error\">\n<h2>Error</h2>\n<pre>{}</pre>\n</section>\n",
                esc(error)
            );
        }
    }

    fn totals(&mut self, r: &Report) {
        let t = &r.totals;
        self.push("<section id=\"totals\">\n<h2>Totals</h2>\n<div class=\"cards\">\n");
        let mut card = |value: String, what: &str| {
            let _ = writeln!(
                self.out,
                "<div class=\"card\"><b>{value}</b><span>{what}</span></div>"
            );
        };
        card(duration(r.build.duration_ms), "build time");
        card(
            format!("{}", t.steps),
            &format!(
                "steps: {} run, {} cached, {} from a remote cache, {} config, {} failed, {} not run",
                t.run, t.cached, t.remote_cached, t.config, t.failed, t.not_run
            ),
        );
        card(
            duration(t.critical_path_ms),
            &format!("critical path ({} steps)", r.critical_path.len()),
        );
        card(
            human_bytes(t.layer_bytes),
            &format!(
                "{} layers; {} made by this build",
                t.layers,
                human_bytes(t.new_layer_bytes)
            ),
        );
        card(
            human_bytes(r.transfers.bytes_pulled),
            &format!("pulled ({} blobs)", r.transfers.blobs_pulled),
        );
        card(
            human_bytes(r.transfers.bytes_pushed),
            &format!(
                "pushed ({} blobs, {} mounted, {} already there)",
                r.transfers.blobs_pushed, r.transfers.blobs_mounted, r.transfers.blobs_present
            ),
        );
        self.push("</div>\n</section>\n");
    }

    fn timeline(&mut self, r: &Report) {
        let total = r
            .steps
            .iter()
            .filter_map(|s| s.end_ms)
            .max()
            .unwrap_or(0)
            .max(r.build.duration_ms)
            .max(1);
        self.push("<section id=\"timeline\">\n<h2>Timeline</h2>\n<div class=\"legend\">");
        for (class, name) in [
            ("run", "run"),
            ("cached", "cached"),
            ("remote", "remote cache"),
            ("config", "config only"),
            ("failed", "failed"),
        ] {
            let _ = write!(
                self.out,
                "<span><i style=\"background:var(--{class})\"></i>{name}</span>"
            );
        }
        self.push("<span><i style=\"box-shadow:0 0 0 2px var(--crit) inset\"></i>critical path</span></div>\n");
        self.push("<div class=\"axis\"><div class=\"name\"></div><div class=\"ticks\">");
        for quarter in 0..=4u64 {
            let _ = write!(
                self.out,
                "<span style=\"left:{}%\">{}</span>",
                quarter * 25,
                duration(total * quarter / 4)
            );
        }
        self.push("</div></div>\n<div class=\"lanes\">\n");
        for (n, stage) in r.stages.iter().enumerate() {
            let _ = write!(
                self.out,
                "<div class=\"lane\" id=\"lane-{n}\" data-stage=\"{}\" data-platform=\"{}\">\
                 <div class=\"lane-name\">{}{}</div><div class=\"track\">",
                esc(&stage.name),
                esc(stage.platform.as_deref().unwrap_or("")),
                esc(&stage.name),
                stage
                    .platform
                    .as_ref()
                    .filter(|_| r.platforms.len() > 1)
                    .map(|p| format!(" <small>{}</small>", esc(p)))
                    .unwrap_or_default()
                    + &stage
                        .base
                        .as_ref()
                        .map(|b| {
                            let pulled = if b.bytes_pulled > 0 {
                                format!(", pulled {}", human_bytes(b.bytes_pulled))
                            } else {
                                String::new()
                            };
                            format!(
                                " <small class=\"base\" title=\"{}\">from {}{pulled}</small>",
                                esc(&b.manifest),
                                esc(&b.image)
                            )
                        })
                        .unwrap_or_default()
            );
            for id in &stage.steps {
                let Some(step) = r.steps.iter().find(|s| s.id == *id) else {
                    continue;
                };
                let (Some(start), Some(end)) = (step.start_ms, step.end_ms) else {
                    continue;
                };
                let left = percent(start, total);
                let width = percent(end.saturating_sub(start), total).min(100.0 - left);
                let _ = write!(
                    self.out,
                    "<a class=\"bar s-{status}{crit}\" href=\"#step-{id}\" data-step=\"{id}\" \
                     data-status=\"{status}\" style=\"left:{left:.3}%;width:{width:.3}%\" \
                     title=\"#{id} {title} ({d}, {label})\">{text}</a>",
                    status = step.status.as_str(),
                    crit = if step.critical { " critical" } else { "" },
                    title = esc(&step.instruction),
                    d = duration(end.saturating_sub(start)),
                    label = status_label(step.status),
                    text = esc(&short_instruction(&step.instruction)),
                );
            }
            self.push("</div></div>\n");
        }
        if r.stages.is_empty() {
            self.push("<p>No stage was planned: the build stopped before.</p>\n");
        }
        self.push("</div>\n</section>\n");
    }

    fn steps(&mut self, r: &Report) {
        self.push("<section id=\"steps\">\n<h2>Steps</h2>\n");
        for stage in &r.stages {
            let _ = writeln!(
                self.out,
                "<h3>{}</h3>",
                esc(&lane_name(stage, &r.platforms))
            );
            for id in &stage.steps {
                if let Some(step) = r.steps.iter().find(|s| s.id == *id) {
                    self.step(step);
                }
            }
        }
        self.push("</section>\n");
    }

    fn step(&mut self, s: &Step) {
        let _ = write!(
            self.out,
            "<article class=\"step s-{status}{crit}\" id=\"step-{id}\" data-step=\"{id}\" data-status=\"{status}\">\n\
             <header><b>#{id}</b><span class=\"label\">[{label}] line {line}</span>\
             <span class=\"chip st\">{st}</span>{chip}<span class=\"time\">{time}</span></header>\n\
             <code class=\"instr\">{instr}</code>\n",
            status = s.status.as_str(),
            crit = if s.critical { " critical" } else { "" },
            id = s.id,
            label = esc(&s.label),
            line = s.line,
            st = status_label(s.status),
            chip = if s.critical {
                "<span class=\"chip critical\">critical path</span>"
            } else {
                ""
            },
            time = s.duration_ms.map(duration).unwrap_or_default(),
            instr = esc(&s.instruction),
        );
        let mut meta = Vec::new();
        if let Some(layer) = &s.layer {
            let mut text = format!("layer {}", human_bytes(layer.size));
            if let Some(u) = layer.uncompressed_size {
                let _ = write!(text, " ({} as tar)", human_bytes(u));
            }
            if let Some(d) = &layer.digest {
                let _ = write!(text, " <code>{}</code>", esc(&short_digest(d)));
            }
            meta.push(text);
        }
        if let Some(key) = &s.cache_key {
            meta.push(format!(
                "cache key <code title=\"{}\">{}</code>",
                esc(key),
                esc(&short_digest(key))
            ));
        }
        if let Some(from) = &s.cache_from {
            meta.push(format!("from <code>{}</code>", esc(from)));
        }
        if s.bytes_pulled > 0 {
            meta.push(format!("pulled {}", human_bytes(s.bytes_pulled)));
        }
        if s.bytes_pushed > 0 {
            meta.push(format!("pushed {}", human_bytes(s.bytes_pushed)));
        }
        if s.base_bytes_pulled > 0 {
            meta.push(format!(
                "pulled {} of base layers",
                human_bytes(s.base_bytes_pulled)
            ));
        }
        if let Some(code) = s.exit_code {
            meta.push(format!("exit code {code}"));
        }
        if !meta.is_empty() {
            let _ = writeln!(self.out, "<div class=\"meta\">{}</div>", meta.join(" · "));
        }
        if let Some(error) = &s.error {
            let _ = writeln!(self.out, "<pre class=\"step-error\">{}</pre>", esc(error));
        }
        for d in &s.watchdog {
            let (hang, what) = match d.hang {
                Hang::Stalled => ("stalled", "stalled"),
                Hang::TimedOut => ("timed_out", "timed out"),
            };
            let _ = writeln!(
                self.out,
                "<details class=\"diagnosis\" data-hang=\"{hang}\"><summary>{what} at {}: the watchdog's diagnosis</summary><pre>{}</pre></details>",
                duration(d.at_ms),
                esc(&d.text)
            );
        }
        if !s.retries.is_empty() {
            let _ = write!(
                self.out,
                "<details class=\"retries\"><summary>{} retr{}</summary><ul>",
                s.retries.len(),
                if s.retries.len() == 1 { "y" } else { "ies" }
            );
            for retry in &s.retries {
                let _ = write!(
                    self.out,
                    "<li>attempt {}/{} after {} (at {}): {}</li>",
                    retry.attempt,
                    retry.max,
                    duration(retry.delay_ms),
                    duration(retry.at_ms),
                    esc(&retry.reason)
                );
            }
            self.push("</ul></details>\n");
        }
        if !s.lock_waits.is_empty() {
            let waited: u64 = s.lock_waits.iter().map(|w| w.waited_ms).sum();
            let _ = write!(
                self.out,
                "<details class=\"lock-waits\"><summary>waited {} for locks</summary><ul>",
                duration(waited)
            );
            for w in &s.lock_waits {
                let holder = if w.holder.is_empty() {
                    String::new()
                } else {
                    format!(", held by {}", esc(&w.holder))
                };
                let _ = write!(
                    self.out,
                    "<li>{} for {}{holder}</li>",
                    esc(&w.lock),
                    duration(w.waited_ms)
                );
            }
            self.push("</ul></details>\n");
        }
        if !s.notes.is_empty() {
            self.push("<details class=\"notes\"><summary>notes</summary><ul>");
            for note in &s.notes {
                let _ = write!(
                    self.out,
                    "<li>{}: {}</li>",
                    duration(note.at_ms),
                    esc(&note.text)
                );
            }
            self.push("</ul></details>\n");
        }
        if !s.output.is_empty() {
            let _ = writeln!(
                self.out,
                "<details class=\"output\"{}><summary>{}</summary><pre>{}</pre></details>",
                if s.status == StepStatus::Failed {
                    " open"
                } else {
                    ""
                },
                match s.output.len() {
                    1 => "its output".to_string(),
                    n => format!("its last {n} lines of output"),
                },
                esc(&s.output.join("\n"))
            );
        }
        self.push("</article>\n");
    }

    fn layers(&mut self, r: &Report) {
        let mut with_layers: Vec<&Step> = r.steps.iter().filter(|s| s.layer.is_some()).collect();
        if with_layers.is_empty() {
            return;
        }
        with_layers.sort_by_key(|s| std::cmp::Reverse(s.layer.as_ref().map_or(0, |l| l.size)));
        let largest = with_layers[0].layer.as_ref().map_or(1, |l| l.size.max(1));
        self.push(
            "<section id=\"layers\">\n<h2>Layers</h2>\n<table class=\"layers\"><thead><tr>\
             <th>step</th><th>instruction</th><th class=\"num\">size</th>\
             <th class=\"hide-narrow\"></th></tr></thead><tbody>\n",
        );
        for s in &with_layers {
            let size = s.layer.as_ref().map_or(0, |l| l.size);
            let _ = writeln!(
                self.out,
                "<tr><td><a href=\"#step-{id}\">#{id}</a></td><td><code>{}</code> <span class=\"chip\">{}</span></td>\
                 <td class=\"num\">{}</td><td class=\"hide-narrow\" style=\"width:30%\">\
                 <div class=\"sizebar\" style=\"width:{:.2}%\"></div></td></tr>",
                esc(&short_instruction(&s.instruction)),
                status_label(s.status),
                human_bytes(size),
                percent(size, largest),
                id = s.id,
            );
        }
        let _ = writeln!(
            self.out,
            "</tbody><tfoot><tr><th colspan=\"2\">{} layers ({} made by this build)</th>\
             <th class=\"num\">{}</th><th class=\"hide-narrow\"></th></tr></tfoot></table>\n</section>",
            r.totals.layers,
            human_bytes(r.totals.new_layer_bytes),
            human_bytes(r.totals.layer_bytes)
        );
    }

    fn warnings_and_notes(&mut self, r: &Report) {
        if !r.warnings.is_empty() {
            self.push("<section id=\"warnings\">\n<h2>Warnings</h2>\n<ul>\n");
            for w in &r.warnings {
                let line = w.line.map(|l| format!("line {l}: ")).unwrap_or_default();
                let _ = writeln!(self.out, "<li>{line}{}</li>", esc(&w.message));
            }
            self.push("</ul>\n</section>\n");
        }
        if !r.notes.is_empty() {
            self.push("<section id=\"notes\">\n<h2>Notes</h2>\n<ul>\n");
            for n in &r.notes {
                let _ = writeln!(self.out, "<li>{}: {}</li>", duration(n.at_ms), esc(&n.text));
            }
            self.push("</ul>\n</section>\n");
        }
    }

    /// The report's JSON, for tools that read the page.
    fn data(&mut self, r: &Report) {
        let json = serde_json::to_string(r).unwrap_or_default();
        let mut safe = String::with_capacity(json.len());
        for c in json.chars() {
            match c {
                '<' => safe.push_str("\\u003c"),
                '>' => safe.push_str("\\u003e"),
                '&' => safe.push_str("\\u0026"),
                c => safe.push(c),
            }
        }
        let _ = writeln!(
            self.out,
            "<script type=\"application/json\" id=\"kiln-report\">{safe}</script>"
        );
    }
}

/// The instruction cut for a bar or a table cell.
fn short_instruction(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}
