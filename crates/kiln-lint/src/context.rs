//! What `kiln lint` is told about the build context: the ignore file the
//! build would use and the heavy paths the context holds, with their
//! sizes. The caller reads the disk (kiln's CLI walks the context as the
//! build's transfer would, ignore file applied); the rules that read this
//! (KL110, BuildKit's CopyIgnoredFile) stay pure.

use kiln_dockerfile::dockerignore::PatternMatcher;

/// The build context of a Dockerfile, as far as the rules need it.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The ignore file the build uses (`<Dockerfile>.dockerignore`, else
    /// `.dockerignore`), if there is one.
    pub ignore: Option<IgnoreFile>,
    /// The heavy paths the build may be sent (what the ignore file leaves),
    /// outermost only (nothing below a heavy directory), in walk order;
    /// KL110 reports those of [`HEAVY_MIN_BYTES`] or more.
    pub heavy: Vec<HeavyPath>,
    /// Regular files the ignore file leaves in the context, and their bytes.
    pub files: u64,
    pub bytes: u64,
}

/// An ignore file: its name as messages show it, and its patterns.
#[derive(Debug, Clone)]
pub struct IgnoreFile {
    pub name: String,
    pub patterns: PatternMatcher,
}

/// A heavy path of the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeavyPath {
    /// Relative to the context root, `/`-separated (`models/llama.safetensors`).
    pub path: String,
    pub kind: HeavyKind,
    /// The bytes of the file, or of every file below the directory.
    pub bytes: u64,
}

/// What makes a path heavy: things a build rarely needs that grow large.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeavyKind {
    /// A `.git` directory: the repository's whole history.
    Git,
    /// A `node_modules` directory: installed packages, made again by the
    /// build's own install.
    NodeModules,
    /// A `__pycache__` directory: Python bytecode of the host's Python.
    PyCache,
    /// Model weights (`*.safetensors`, `*.bin`, `*.pt`, `*.pth`, `*.onnx`,
    /// `*.ckpt`, `*.gguf`, `*.h5`).
    Weights,
}

/// A path smaller than this is not worth a finding (a 40 KiB
/// `__pycache__` costs nothing to send).
pub const HEAVY_MIN_BYTES: u64 = 1024 * 1024;

const WEIGHTS: &[&str] = &[
    "safetensors",
    "bin",
    "pt",
    "pth",
    "onnx",
    "ckpt",
    "gguf",
    "h5",
];

impl HeavyKind {
    /// Whether a context entry of this name is heavy by its kind (size
    /// aside): a directory named `.git`, `node_modules`, `__pycache__`, or
    /// a file with a weights extension.
    pub fn of(name: &str, is_dir: bool) -> Option<HeavyKind> {
        if is_dir {
            return match name {
                ".git" => Some(HeavyKind::Git),
                "node_modules" => Some(HeavyKind::NodeModules),
                "__pycache__" => Some(HeavyKind::PyCache),
                _ => None,
            };
        }
        let (stem, ext) = name.rsplit_once('.')?;
        (!stem.is_empty() && WEIGHTS.iter().any(|w| ext.eq_ignore_ascii_case(w)))
            .then_some(HeavyKind::Weights)
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            HeavyKind::Git => "the git history",
            HeavyKind::NodeModules => "installed node packages",
            HeavyKind::PyCache => "Python bytecode",
            HeavyKind::Weights => "model weights",
        }
    }
}

/// `1.5 MiB`: bytes as people read them.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
