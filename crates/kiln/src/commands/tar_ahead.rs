//! An OCI tar output begun while the build runs (`--output type=oci,dest=FILE`
//! of a one-platform build in the build's own encoding): the engine tells
//! the target stage's layers as its steps add them, and a thread of its
//! own writes the finished bottom ones into the output's temporary file
//! (kiln-build's `OciTarAhead`), so that the end of the build waits only
//! for what its last layers add. The file's bytes are those of an export
//! after the build.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use kiln_build::{Dest, Encoding, ExportError, OciTarAhead, Output, OutputKind};
use kiln_image::Store;
use kiln_image::document::Descriptor;

type Sender = Arc<Mutex<Option<mpsc::Sender<Vec<Descriptor>>>>>;

pub(crate) struct TarAhead {
    tell: Sender,
    writer: JoinHandle<Written>,
}

/// The output begun, and how many blobs went into it ahead (or why it
/// stopped taking them).
pub(crate) type Written = (OciTarAhead, Result<usize, ExportError>);

impl TarAhead {
    /// Begins the output of `outputs` if it can be written ahead: one
    /// `type=oci` output to a file, in the build's encoding, of a build of
    /// one platform (`platforms`: how many the request names).
    pub(crate) fn begin(
        store: &Store,
        outputs: &[Output],
        build: &Encoding,
        platforms: usize,
    ) -> Result<Option<TarAhead>, ExportError> {
        let [output] = outputs else {
            return Ok(None);
        };
        let OutputKind::Oci {
            dest: Dest::Tar(path),
        } = &output.kind
        else {
            return Ok(None);
        };
        // No platform given is this machine's: one.
        if platforms > 1 || output.encoding(build) != *build {
            return Ok(None);
        }
        TarAhead::start(store.clone(), path).map(Some)
    }

    fn start(store: Store, path: &Path) -> Result<TarAhead, ExportError> {
        let mut out = OciTarAhead::create(path)?;
        let (tx, rx) = mpsc::channel::<Vec<Descriptor>>();
        let writer = std::thread::Builder::new()
            .name("kiln-tar-ahead".to_string())
            .spawn(move || {
                let mut written = Ok(0);
                while let Ok(mut layers) = rx.recv() {
                    // Only the latest list matters: it holds the others.
                    while let Ok(newer) = rx.try_recv() {
                        layers = newer;
                    }
                    if written.is_ok() {
                        written = out.layers(&store, &layers);
                    }
                }
                (out, written)
            })
            .map_err(|source| ExportError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(TarAhead {
            tell: Arc::new(Mutex::new(Some(tx))),
            writer,
        })
    }

    /// What the engine calls with the target stage's layers so far.
    pub(crate) fn hook(&self) -> kiln_build::LayersAhead {
        let tell = Arc::clone(&self.tell);
        Arc::new(move |_platform, layers| {
            if let Some(tx) = &*tell.lock().unwrap_or_else(|e| e.into_inner()) {
                let _ = tx.send(layers.to_vec());
            }
        })
    }

    /// Takes no more layers and waits for those being written.
    pub(crate) fn stop(self) -> Written {
        self.tell.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.writer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}
