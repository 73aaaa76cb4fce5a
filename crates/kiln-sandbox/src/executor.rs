//! The one side-effecting interface of the sandbox.

use crate::control::RunControl;
use crate::error::SandboxError;
use crate::output::OutputSink;
use crate::spec::RunSpec;

/// Runs a [`RunSpec`] to its end. [`RuncExecutor`](crate::RuncExecutor) is
/// the real one; another OCI runtime, or a recording fake for the engine's
/// tests, plugs in here.
///
/// Contract for implementations:
/// - block until the run is over, then return; output goes to `output` as
///   it arrives, stdin is empty;
/// - call [`RunControl::set_running`] once the first process exists (or,
///   for processes the host's /proc does not show, keep
///   [`RunControl::report_tree`] current) and [`RunControl::set_finished`]
///   before returning, whatever happens;
/// - watch [`RunControl::is_cancelled`] and kill the whole process tree when
///   it turns true;
/// - when returning (`Ok`, `Err` or unwinding), leave no process of the
///   run, no runtime state, no bundle, no mount and no file in the root.
pub trait Executor: Send + Sync {
    fn run(
        &self,
        spec: &RunSpec,
        output: &dyn OutputSink,
        control: &RunControl,
    ) -> Result<ExitInfo, SandboxError>;

    /// Ends what runs of a crashed process of the same kind left behind
    /// (processes, runtime state, bundles), leaving live processes' runs
    /// alone; returns how many runs it ended. An engine calls it once at
    /// start, before it cleans up mounts those processes may still use.
    fn sweep(&self) -> Result<usize, SandboxError> {
        Ok(0)
    }

    /// Whether runs execute the image's own programs on this machine's
    /// CPU, so that another architecture's need a QEMU binfmt handler
    /// (the engine checks for one before such a step starts). A fake that
    /// runs nothing for real says no.
    fn runs_real_programs(&self) -> bool {
        false
    }

    /// Whether a [`MountKind::Bind`](crate::MountKind::Bind) is a bind
    /// mount (runc's), made when the run starts from the source's host
    /// path as it is then. The engine then hands over a mount point of its
    /// own that no step can rename or swap for a symlink, and gives a
    /// writable bind a throwaway overlay. `false` for an executor that
    /// moves or copies sources in (chroot's): it gets the directories
    /// themselves, and a writable bind as `readonly`, copied, so nothing a
    /// step writes there is kept.
    fn binds_are_mounts(&self) -> bool {
        true
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExitInfo {
    /// The exit code, or 128 + N if the first process was killed by signal N
    /// (the runtime's convention: `runc run` exits so, as `docker run`
    /// does; `exit 137` and SIGKILL cannot be told apart).
    pub code: i32,
    /// The run was ended by [`RunControl::cancel`].
    pub cancelled: bool,
}

impl ExitInfo {
    pub fn success(&self) -> bool {
        self.code == 0 && !self.cancelled
    }

    /// The signal that killed the first process, read from the code as the
    /// shell and Docker do (`code > 128`).
    pub fn signal(&self) -> Option<i32> {
        (129..=128 + 64)
            .contains(&self.code)
            .then(|| self.code - 128)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_above_128_read_as_signals() {
        let exit = |code| ExitInfo {
            code,
            cancelled: false,
        };
        assert_eq!(exit(137).signal(), Some(9));
        assert_eq!(exit(1).signal(), None);
        assert_eq!(exit(255).signal(), None);
        assert!(exit(0).success());
        assert!(
            !ExitInfo {
                code: 0,
                cancelled: true
            }
            .success()
        );
    }
}
