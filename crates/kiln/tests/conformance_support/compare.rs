//! What counts as the same image.
//!
//! Files, path by path: type, permission bits (setuid, setgid, sticky
//! included), uid, gid, size and sha256 of regular files, symlink target,
//! device numbers, extended attributes, and which paths are hard links of
//! each other.
//!
//! mtimes: a time is only meaningful where it was kept from an input. Every
//! input is from before 2023 (base image files `BASE_MTIME`, context files
//! `CONTEXT_MTIME`, archive members whatever their tar says), and anything
//! a step made or touched gets the wall-clock time of that step, which
//! differs between two builds by nature (and BuildKit reuses file-op
//! results from its cache across runs, `--no-cache` or not, so its "new"
//! times may be from an earlier run). So: where BuildKit's mtime is an
//! input's, kiln's must be the same time exactly (it was kept from the same
//! input); where BuildKit's is a build's, kiln's must be one too (it was
//! not wrongly kept, nor zeroed). One allowance: a directory BuildKit
//! gives a build's time where kiln kept the input's. Docker 26's BuildKit
//! does that at random for directories of the build context under load
//! (its context receiver sets a directory's times before all of the files
//! written into it land), while a quiet run keeps them, as kiln does.
//!
//! Config: the runtime fields a container sees (Env, Cmd, Entrypoint,
//! WorkingDir, User, ExposedPorts, Volumes, Labels, StopSignal,
//! Healthcheck, Shell, OnBuild), the author (MAINTAINER), and os,
//! architecture and variant. A field left out and a field set to `null`
//! are the same; an empty string, list or map is not the same as absent.

use std::collections::BTreeSet;

use serde_json::Value;

use super::image::{Image, Kind, Node};

/// Every input's mtime is before this (2023-01-01); a build's is after.
pub(crate) const INPUTS_BEFORE: u64 = 1_672_531_200;

/// The config fields compared, under `config`.
pub(crate) const CONFIG_FIELDS: [&str; 12] = [
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Volumes",
    "Labels",
    "StopSignal",
    "Healthcheck",
    "Shell",
    "OnBuild",
];

/// Differences between BuildKit's images and kiln's, one line each.
pub(crate) fn images(buildkit: &[Image], kiln: &[Image]) -> Vec<String> {
    let mut diffs = Vec::new();
    let bk: Vec<&str> = buildkit.iter().map(|i| i.platform.as_str()).collect();
    let kl: Vec<&str> = kiln.iter().map(|i| i.platform.as_str()).collect();
    if bk != kl {
        diffs.push(format!("platforms: buildkit {bk:?}, kiln {kl:?}"));
        return diffs;
    }
    let multi = buildkit.len() > 1;
    for (b, k) in buildkit.iter().zip(kiln) {
        let prefix = if multi {
            format!("[{}] ", b.platform)
        } else {
            String::new()
        };
        for d in config(&b.config, &k.config) {
            diffs.push(format!("{prefix}{d}"));
        }
        for d in trees(b, k) {
            diffs.push(format!("{prefix}{d}"));
        }
    }
    diffs
}

fn present(v: &Value) -> Option<&Value> {
    (!v.is_null()).then_some(v)
}

fn config(b: &Value, k: &Value) -> Vec<String> {
    let mut diffs = Vec::new();
    for field in ["os", "architecture", "variant", "author"] {
        if present(&b[field]) != present(&k[field]) {
            diffs.push(format!(
                "config {field}: buildkit {}, kiln {}",
                show(&b[field]),
                show(&k[field])
            ));
        }
    }
    for field in CONFIG_FIELDS {
        let (bv, kv) = (&b["config"][field], &k["config"][field]);
        if present(bv) != present(kv) {
            diffs.push(format!(
                "config.{field}: buildkit {}, kiln {}",
                show(bv),
                show(kv)
            ));
        }
    }
    diffs
}

fn show(v: &Value) -> String {
    if v.is_null() {
        "(unset)".to_string()
    } else {
        v.to_string()
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::File => "file",
        Kind::Dir => "dir",
        Kind::Symlink => "symlink",
        Kind::Char => "char device",
        Kind::Block => "block device",
        Kind::Fifo => "fifo",
    }
}

fn describe(n: &Node) -> String {
    let mut s = format!("{} {:04o} {}:{}", kind_name(n.kind), n.mode, n.uid, n.gid);
    match n.kind {
        Kind::File => s.push_str(&format!(" {} bytes", n.size)),
        Kind::Symlink => s.push_str(&format!(" -> {}", n.link.as_deref().unwrap_or_default())),
        Kind::Char | Kind::Block => {
            let (ma, mi) = n.device.unwrap_or_default();
            s.push_str(&format!(" {ma},{mi}"));
        }
        _ => {}
    }
    s
}

fn trees(b: &Image, k: &Image) -> Vec<String> {
    let mut diffs = Vec::new();
    let paths: BTreeSet<&String> = b.tree.keys().chain(k.tree.keys()).collect();
    for path in paths {
        match (b.tree.get(path), k.tree.get(path)) {
            (Some(bn), None) => diffs.push(format!("{path}: only in buildkit ({})", describe(bn))),
            (None, Some(kn)) => diffs.push(format!("{path}: only in kiln ({})", describe(kn))),
            (Some(bn), Some(kn)) => node(path, bn, kn, &mut diffs),
            (None, None) => unreachable!(),
        }
    }
    let (bg, kg) = (b.hardlink_groups(), k.hardlink_groups());
    if bg != kg {
        diffs.push(format!("hard links: buildkit {bg:?}, kiln {kg:?}"));
    }
    diffs
}

fn node(path: &str, b: &Node, k: &Node, diffs: &mut Vec<String>) {
    if b.kind != k.kind {
        diffs.push(format!(
            "{path}: buildkit {}, kiln {}",
            describe(b),
            describe(k)
        ));
        return;
    }
    let mut field = |name: &str, bv: String, kv: String| {
        if bv != kv {
            diffs.push(format!("{path}: {name}: buildkit {bv}, kiln {kv}"));
        }
    };
    field("mode", format!("{:04o}", b.mode), format!("{:04o}", k.mode));
    field(
        "owner",
        format!("{}:{}", b.uid, b.gid),
        format!("{}:{}", k.uid, k.gid),
    );
    if b.kind == Kind::File {
        field("size", b.size.to_string(), k.size.to_string());
        field(
            "content",
            b.digest.clone().unwrap_or_default(),
            k.digest.clone().unwrap_or_default(),
        );
    }
    field(
        "link target",
        format!("{:?}", b.link),
        format!("{:?}", k.link),
    );
    field(
        "device",
        format!("{:?}", b.device),
        format!("{:?}", k.device),
    );
    field(
        "xattrs",
        format!("{:?}", b.xattrs),
        format!("{:?}", k.xattrs),
    );
    field(
        "implied (no entry of its own)",
        b.implied.to_string(),
        k.implied.to_string(),
    );
    if !b.implied && !k.implied {
        let class = |t: u64| {
            if t < INPUTS_BEFORE {
                format!("kept {t}")
            } else {
                "made during the build".to_string()
            }
        };
        let (bc, kc) = (class(b.mtime), class(k.mtime));
        let racy = b.kind == Kind::Dir && b.mtime >= INPUTS_BEFORE && k.mtime < INPUTS_BEFORE;
        if !racy {
            field("mtime", bc, kc);
        }
    }
}
