//! COPY and ADD in the engine: where sources come from (the context,
//! another stage, an image, a URL, a heredoc), how they are keyed for the
//! cache, and the hand-off to `ops::copy`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_dockerfile::Location;
use kiln_dockerfile::instructions::Command;
use kiln_dockerfile::plan::StageScope;
use kiln_image::Digest;

use super::BuildError;
use super::cache_key::KeyBuilder;
use super::stage::{StageOutcome, StageRunner};
use crate::context::{CopyFilter, Selection};
use crate::ops::{self, Chmod, CopyOptions, EntryFilter, FilterDecision, SourceItem};
use crate::snapshot::{ActiveSnapshot, Layer, ReadOnlyMount};

/// Where a COPY/ADD (or a mount's `from=`) reads.
#[derive(Debug, Clone)]
pub(crate) enum From {
    Context,
    Stage(usize),
    Image(String),
}

/// Entries a walk of the context kept: what a copy may take below a source.
struct KeptEntries(HashSet<PathBuf>);

impl EntryFilter for KeptEntries {
    fn decide(&self, rel: &Path, _is_dir: bool) -> FilterDecision {
        if self.0.contains(rel) {
            FilterDecision::Include
        } else {
            FilterDecision::Exclude
        }
    }
}

fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// `COPY --parents a/./b/c`: the pivot is `a`; without `/./`, the root.
fn parents_pivot(source: &str) -> String {
    source
        .split_once("/./")
        .map(|(pivot, _)| pivot.trim_start_matches('/').to_string())
        .unwrap_or_default()
}

impl StageRunner<'_> {
    /// `--from` (or a mount's `from=`) as the plan resolved it: a stage by
    /// name or index, else an image.
    pub(crate) fn resolve_from(&self, from: Option<&str>) -> From {
        let Some(from) = from else {
            return From::Context;
        };
        if let Ok(i) = from.parse::<usize>()
            && i < self.plan.stages.len()
        {
            return From::Stage(i);
        }
        let lower = from.to_lowercase();
        match self
            .plan
            .stages
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            Some(i) => From::Stage(i),
            None => From::Image(from.to_string()),
        }
    }

    /// A key for what `from` brings in, given the paths read from it.
    fn source_key(
        &self,
        from: &From,
        paths: &[String],
        excludes: &[String],
        parents: bool,
        location: Location,
    ) -> Result<String, BuildError> {
        Ok(match from {
            From::Context => {
                let selection = Selection::new(paths.iter().cloned())
                    .excluding(excludes.iter().cloned())
                    .parents(parents);
                let digest = self
                    .shared
                    .context
                    .digest_selection(&selection, self.shared.memo)
                    .map_err(BuildError::context(location))?;
                format!("context:{digest}")
            }
            From::Stage(i) => format!("stage:{}", self.board.get(*i)?.key),
            From::Image(name) => format!("image:{}", self.image_digest(name, location)?),
        })
    }

    fn image_digest(&self, name: &str, location: Location) -> Result<Digest, BuildError> {
        Ok(self.image_layers(name, location)?.0)
    }

    /// The root of a stage or image, mounted read-only.
    pub(crate) fn mount_source(
        &self,
        from: &From,
        location: Location,
    ) -> Result<Box<dyn ReadOnlyMount>, BuildError> {
        let layers: Vec<Layer> = match from {
            From::Context => unreachable!("the context is a directory"),
            From::Stage(i) => {
                let outcome = self.board.get(*i)?;
                outcome
                    .layers
                    .iter()
                    .map(|l| Layer {
                        diff_id: l.diff_id.clone(),
                        blob: l.descriptor.clone(),
                    })
                    .collect()
            }
            From::Image(name) => self.image_layers(name, location)?.1,
        };
        let chain = self.engine.snapshotter.prepare(&layers)?;
        Ok(self.engine.snapshotter.mount_readonly(&chain)?)
    }

    /// An image named in `--from`: its manifest digest and layers (pulled
    /// into the store if it is not there).
    fn image_layers(
        &self,
        name: &str,
        location: Location,
    ) -> Result<(Digest, Vec<Layer>), BuildError> {
        let base = self.base_image_public(name, location)?;
        let layers = base
            .1
            .iter()
            .map(|l| Layer {
                diff_id: l.diff_id.clone(),
                blob: l.descriptor.clone(),
            })
            .collect();
        Ok((base.0, layers))
    }

    /// The cache key of a filesystem step and its history text.
    pub(crate) fn step_key(
        &self,
        command: &Command,
        state: &StageOutcome,
        scope: &StageScope<'_>,
    ) -> Result<(Digest, String), BuildError> {
        let location = command.location();
        let platform = self.platform.to_string();
        match command {
            Command::Workdir(_) => {
                let dir = state.config.workdir();
                let key = KeyBuilder::new("workdir", Some(&state.key))
                    .str("platform", &platform)
                    .str("dir", &dir)
                    .str("user", &state.config.user())
                    .finish();
                Ok((key, format!("WORKDIR {dir}")))
            }
            Command::Copy(c) => {
                let from = self.resolve_from(c.from.as_deref());
                let source =
                    self.source_key(&from, &c.sources.paths, &c.exclude, c.parents, location)?;
                let mut k = KeyBuilder::new("copy", (!c.link).then_some(&state.key));
                k.str("platform", &platform)
                    .list("paths", &c.sources.paths)
                    .list("inline", &inline_parts(&c.sources.contents))
                    .str("dest", &c.sources.dest)
                    .str("workdir", &state.config.workdir())
                    .opt("chown", c.chown.as_deref())
                    .opt("chmod", c.chmod.as_deref())
                    .bool("parents", c.parents)
                    .list("exclude", &c.exclude)
                    .bool("link", c.link)
                    .str("source", &source);
                Ok((
                    k.finish(),
                    format!("COPY {} {}", c.sources.paths.join(" "), c.sources.dest),
                ))
            }
            Command::Add(a) => {
                let (urls, local): (Vec<String>, Vec<String>) =
                    a.sources.paths.iter().cloned().partition(|p| is_url(p));
                if a.checksum.is_some() && !local.is_empty() {
                    return Err(BuildError::ChecksumNotHttp { location });
                }
                let local_key = if local.is_empty() {
                    String::new()
                } else {
                    self.source_key(&From::Context, &local, &a.exclude, false, location)?
                };
                let mut url_keys = Vec::new();
                for url in &urls {
                    url_keys.push(match &a.checksum {
                        Some(sum) => format!("{url}@{sum}"),
                        None => format!("{url}@{}", self.download(url, None, location)?.digest()),
                    });
                }
                let mut k = KeyBuilder::new("add", (!a.link).then_some(&state.key));
                k.str("platform", &platform)
                    .list("paths", &a.sources.paths)
                    .list("inline", &inline_parts(&a.sources.contents))
                    .str("dest", &a.sources.dest)
                    .str("workdir", &state.config.workdir())
                    .opt("chown", a.chown.as_deref())
                    .opt("chmod", a.chmod.as_deref())
                    .opt("unpack", a.unpack.map(|u| if u { "true" } else { "false" }))
                    .list("exclude", &a.exclude)
                    .bool("link", a.link)
                    .str("local", &local_key)
                    .list("urls", &url_keys);
                Ok((
                    k.finish(),
                    format!("ADD {} {}", a.sources.paths.join(" "), a.sources.dest),
                ))
            }
            Command::Run(run) => self.run_key(run, state, scope),
            _ => unreachable!("only filesystem steps are keyed"),
        }
    }

    /// Downloads an ADD URL once per build (the key needs its content, the
    /// copy its file).
    fn download(
        &self,
        url: &str,
        checksum: Option<&str>,
        location: Location,
    ) -> Result<Arc<ops::Download>, BuildError> {
        let mut downloads = self.downloads.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = downloads.get(url) {
            return Ok(Arc::clone(d));
        }
        let scratch = kiln_fs::OwnedDir::create(self.engine.store.root(), super::DOWNLOAD_PREFIX)
            .map_err(|source| BuildError::DownloadDir { location, source })?;
        let fetcher = ops::Fetcher::new().map_err(BuildError::copy(location))?;
        let download = self
            .engine
            .runtime
            .block_on(fetcher.fetch(url, checksum, scratch.path()))
            .map_err(BuildError::copy(location))?;
        let download = Arc::new(download);
        downloads.insert(url.to_string(), Arc::clone(&download));
        self.scratch_dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(scratch);
        Ok(download)
    }

    /// COPY/ADD into the step's root.
    pub(crate) fn copy(
        &self,
        command: &Command,
        active: &dyn ActiveSnapshot,
        state: &mut StageOutcome,
    ) -> Result<(), BuildError> {
        let location = command.location();
        let fail = BuildError::copy(location);
        let (sources, from_text, chown, chmod, mut options, excludes, parents) = match command {
            Command::Copy(c) => (
                &c.sources,
                c.from.clone(),
                c.chown.clone(),
                c.chmod.clone(),
                CopyOptions::copy().link(c.link),
                c.exclude.clone(),
                c.parents,
            ),
            Command::Add(a) => {
                let mut o = CopyOptions::add().link(a.link);
                if let Some(u) = a.unpack {
                    o = o.unpack(u);
                }
                (
                    &a.sources,
                    None,
                    a.chown.clone(),
                    a.chmod.clone(),
                    o,
                    a.exclude.clone(),
                    false,
                )
            }
            _ => unreachable!(),
        };
        options = options.stopping_on(Arc::clone(&self.engine.cancel));
        if let Some(chmod) = &chmod {
            options = options.chmod(Chmod::parse(chmod).map_err(fail)?);
        }
        // --chown names resolve in the image being built; a --link copy is
        // made on nothing, so names come from the stage's root instead.
        if let Some(chown) = &chown {
            let owner = if chown
                .split(':')
                .all(|p| p.is_empty() || p.bytes().all(|b| b.is_ascii_digit()))
                || !options.link
            {
                ops::resolve_chown(active.root(), chown).map_err(fail)?
            } else {
                let layers: Vec<Layer> = state
                    .layers
                    .iter()
                    .map(|l| Layer {
                        diff_id: l.diff_id.clone(),
                        blob: l.descriptor.clone(),
                    })
                    .collect();
                let chain = self.engine.snapshotter.prepare(&layers)?;
                let view = self.engine.snapshotter.mount_readonly(&chain)?;
                let owner = ops::resolve_chown(view.root(), chown).map_err(fail);
                view.release()?;
                owner?
            };
            options = options.chown(owner);
        }

        let from = self.resolve_from(from_text.as_deref());
        let mut mount = None;
        let mut items = Vec::new();
        match &from {
            From::Context => {
                let context = self.shared.context;
                let (urls, local): (Vec<String>, Vec<String>) =
                    sources.paths.iter().cloned().partition(|p| is_url(p));
                if !local.is_empty() {
                    let selection = Selection::new(local.iter().cloned())
                        .excluding(excludes.iter().cloned())
                        .parents(parents);
                    let selected = context
                        .select(&selection)
                        .map_err(BuildError::context(location))?;
                    let needs_filter =
                        !excludes.is_empty() || !context.ignore_patterns().patterns().is_empty();
                    for sel in &selected {
                        for entry in sel.entries() {
                            let rel = entry.path().to_string_lossy().into_owned();
                            let mut item = SourceItem::new(context.root(), &rel).reset_owners();
                            if needs_filter {
                                item = item.with_filter(Arc::new(self.kept(
                                    entry,
                                    sel.filter(),
                                    location,
                                )?));
                            }
                            if parents {
                                item = item.with_parents(&parents_pivot(sel.source()));
                            }
                            items.push(item);
                        }
                    }
                }
                if let Command::Add(a) = command {
                    for url in &urls {
                        let download = self.download(url, a.checksum.as_deref(), location)?;
                        items.push(SourceItem::downloaded(&download));
                    }
                }
            }
            From::Stage(_) | From::Image(_) => {
                let view = self.mount_source(&from, location)?;
                for path in &sources.paths {
                    items.extend(ops::expand_source(view.root(), path, parents).map_err(fail)?);
                }
                mount = Some(view);
            }
        }
        for content in &sources.contents {
            items.push(SourceItem::inline(&content.path, content.data.clone()));
        }
        let workdir = state.config.workdir();
        let result = ops::copy_sources(&items, active.root(), &sources.dest, &workdir, &options)
            .map_err(fail);
        if let Some(view) = mount {
            view.release()?;
        }
        result.map(|_| ())
    }

    /// What a walk of the context keeps below `entry` (ignore and exclude
    /// rules applied with the parents' results, as BuildKit's transfer does).
    fn kept(
        &self,
        entry: &crate::context::ContextEntry,
        filter: &CopyFilter,
        location: Location,
    ) -> Result<KeptEntries, BuildError> {
        let mut kept = HashSet::new();
        for walked in self.shared.context.walk(entry, filter) {
            let walked = walked.map_err(BuildError::context(location))?;
            kept.insert(walked.rel_path().to_path_buf());
        }
        Ok(KeptEntries(kept))
    }
}

/// Heredoc sources for a key: name and content.
fn inline_parts(contents: &[kiln_dockerfile::instructions::SourceContent]) -> Vec<String> {
    contents
        .iter()
        .flat_map(|c| [c.path.clone(), c.data.clone()])
        .collect()
}
