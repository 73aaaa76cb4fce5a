//! How instructions change the image config, as BuildKit's dispatchers do
//! (`dockerfile2llb/convert.go`): the runtime settings of ENV, CMD,
//! ENTRYPOINT, USER, WORKDIR, LABEL, EXPOSE, VOLUME, SHELL, HEALTHCHECK,
//! STOPSIGNAL, ONBUILD, MAINTAINER, and a history entry per instruction.

use std::collections::BTreeMap;

use kiln_dockerfile::instructions::{Command, CommandLine, Healthcheck};
use kiln_image::document::{
    ContainerConfig, Empty, Healthcheck as ConfigHealthcheck, History, ImageConfig,
};

/// BuildKit's `historyComment`: every history entry it writes carries it.
pub(crate) const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// The default shell of a Linux image (`withShell` when `SHELL` is unset).
pub(crate) const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// An image config being built, plus what BuildKit tracks beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigState {
    pub config: ImageConfig,
    /// Whether this stage set CMD itself (ENTRYPOINT resets an inherited one).
    cmd_set: bool,
}

impl ConfigState {
    /// Starts from the base image's config (or an empty one for scratch):
    /// history and layers are kept, as BuildKit inherits them.
    pub(crate) fn from_base(base: ImageConfig) -> ConfigState {
        let mut config = base;
        // The base's inline cache describes the base's steps, not ours.
        config.inline_cache = None;
        if config.config.is_none() {
            config.config = Some(ContainerConfig::default());
        }
        ConfigState {
            config,
            cmd_set: false,
        }
    }

    /// Starts a stage built on the stage this config belongs to: its CMD
    /// becomes an inherited one.
    pub(crate) fn new_stage(&mut self) {
        self.cmd_set = false;
    }

    /// The runtime part of the config.
    pub(crate) fn container(&mut self) -> &mut ContainerConfig {
        self.config
            .config
            .get_or_insert_with(ContainerConfig::default)
    }

    /// The shell for shell-form commands: `SHELL`, else `/bin/sh -c`.
    pub(crate) fn shell(&self) -> Vec<String> {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.shell.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_SHELL.iter().map(|s| s.to_string()).collect())
    }

    /// The working directory (`/` when unset).
    pub(crate) fn workdir(&self) -> String {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    }

    /// The user (`root` when unset).
    pub(crate) fn user(&self) -> String {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.user.clone())
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "root".into())
    }

    /// The user a RUN step gets: the config's as written, empty when unset
    /// (uid 0 without a passwd lookup, as BuildKit does, so a base without
    /// /etc/passwd runs; an explicit `USER root` is looked up).
    pub(crate) fn run_user(&self) -> String {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.user.clone())
            .unwrap_or_default()
    }

    /// A shell-form command line with the shell in front; exec form as is.
    pub(crate) fn with_shell(&self, line: &CommandLine) -> Vec<String> {
        if line.prepend_shell {
            let mut args = self.shell();
            args.extend(line.args.iter().cloned());
            args
        } else {
            line.args.clone()
        }
    }

    /// Adds a history entry (`# buildkit` marks steps that made a layer, as
    /// BuildKit writes them).
    pub(crate) fn history(&mut self, created_by: &str, created: &str, empty_layer: bool) {
        let created_by = if empty_layer {
            created_by.to_string()
        } else {
            format!("{created_by} # buildkit")
        };
        self.config.history.push(History {
            created: Some(created.to_string()),
            created_by: Some(created_by),
            comment: Some(HISTORY_COMMENT.to_string()),
            empty_layer,
            ..History::default()
        });
    }

    /// Applies an expanded metadata instruction. `env` is the stage's config
    /// environment after the instruction (the scope keeps it). Returns the
    /// history text, or `None` for instructions that are steps (RUN, COPY,
    /// ADD) or change nothing here (ARG keeps its own text).
    pub(crate) fn apply(&mut self, command: &Command, config_env: &[String]) -> Option<String> {
        let text = match command {
            Command::Env(c) => {
                self.container().env = Some(config_env.to_vec());
                let pairs: Vec<String> = c
                    .pairs
                    .iter()
                    .map(|p| format!("{}={}", p.key, p.value))
                    .collect();
                format!("ENV {}", pairs.join(" "))
            }
            Command::Label(c) => {
                let labels = self.container().labels.get_or_insert_with(BTreeMap::new);
                for pair in &c.labels {
                    labels.insert(pair.key.clone(), pair.value.clone());
                }
                let pairs: Vec<String> = c
                    .labels
                    .iter()
                    .map(|p| format!("{}={}", p.key, p.value))
                    .collect();
                format!("LABEL {}", pairs.join(" "))
            }
            Command::Cmd(c) => {
                let args = self.with_shell(&c.command);
                self.container().cmd = Some(args.clone());
                self.cmd_set = true;
                format!("CMD {}", go_string_slice(&args))
            }
            Command::Entrypoint(c) => {
                let args = self.with_shell(&c.command);
                let cmd_set = self.cmd_set;
                let container = self.container();
                container.entrypoint = Some(args.clone());
                // Docker: an ENTRYPOINT resets a CMD inherited from the base.
                if !cmd_set {
                    container.cmd = None;
                }
                format!("ENTRYPOINT {}", go_string_slice(&args))
            }
            Command::User(c) => {
                self.container().user = Some(c.user.clone());
                format!("USER {}", c.user)
            }
            Command::Workdir(c) => {
                let dir = resolve_workdir(&self.workdir(), &c.path);
                self.container().working_dir = Some(dir.clone());
                format!("WORKDIR {dir}")
            }
            Command::Expose(c) => {
                let ports = self
                    .container()
                    .exposed_ports
                    .get_or_insert_with(BTreeMap::new);
                for spec in &c.ports {
                    for port in expand_port_spec(spec) {
                        ports.insert(port, Empty {});
                    }
                }
                format!(
                    "EXPOSE {}",
                    go_string_slice(&c.ports)
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                )
            }
            Command::Volume(c) => {
                let volumes = self.container().volumes.get_or_insert_with(BTreeMap::new);
                for v in &c.volumes {
                    volumes.insert(v.clone(), Empty {});
                }
                format!("VOLUME {}", go_string_slice(&c.volumes))
            }
            Command::Shell(c) => {
                self.container().shell = Some(c.shell.clone());
                format!("SHELL {}", go_string_slice(&c.shell))
            }
            Command::Healthcheck(c) => {
                self.container().healthcheck = Some(healthcheck(&c.health));
                format!("HEALTHCHECK {}", go_string_slice(&c.health.test))
            }
            Command::StopSignal(c) => {
                self.container().stop_signal = Some(c.signal.clone());
                format!("STOPSIGNAL {}", c.signal)
            }
            Command::Onbuild(c) => {
                self.container()
                    .on_build
                    .get_or_insert_with(Vec::new)
                    .push(c.expression.clone());
                format!("ONBUILD {}", c.expression)
            }
            Command::Maintainer(c) => {
                self.config.author = Some(c.maintainer.clone());
                format!("MAINTAINER {}", c.maintainer)
            }
            _ => return None,
        };
        Some(text)
    }
}

/// A WORKDIR relative to the current one, as BuildKit's
/// `system.NormalizeWorkdir`: a relative one is joined and cleaned
/// (`filepath.Join`), an absolute one is kept as written (`/a/../b` stays
/// so in the config; the directory made is the clean path).
pub(crate) fn resolve_workdir(current: &str, dir: &str) -> String {
    if dir.starts_with('/') {
        dir.to_string()
    } else {
        clean(&format!("{current}/{dir}"))
    }
}

/// Go's `path.Clean` for absolute paths.
pub(crate) fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `EXPOSE` values as Docker stores them: `80` → `80/tcp`, protocols lower
/// case, ranges (`8000-8002/udp`) one entry per port (nat.ParsePortSpecs).
pub(crate) fn expand_port_spec(spec: &str) -> Vec<String> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    // `ip:host:container` forms keep the container port.
    let ports = ports.rsplit(':').next().unwrap_or(ports);
    match ports.split_once('-') {
        Some((a, b)) => match (a.parse::<u16>(), b.parse::<u16>()) {
            (Ok(a), Ok(b)) if a <= b => (a..=b).map(|p| format!("{p}/{proto}")).collect(),
            _ => vec![format!("{ports}/{proto}")],
        },
        None => vec![format!("{ports}/{proto}")],
    }
}

fn healthcheck(h: &Healthcheck) -> ConfigHealthcheck {
    let nanos = |d: std::time::Duration| {
        (!d.is_zero()).then(|| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    };
    ConfigHealthcheck {
        test: Some(h.test.clone()),
        interval: nanos(h.interval),
        timeout: nanos(h.timeout),
        start_period: nanos(h.start_period),
        start_interval: nanos(h.start_interval),
        retries: (h.retries != 0).then_some(i64::from(h.retries)),
    }
}

/// Go's `fmt.Sprintf("%v", []string{...})`: `[a b c]`.
pub(crate) fn go_string_slice(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workdirs_join_and_clean() {
        assert_eq!(resolve_workdir("/", "app"), "/app");
        assert_eq!(resolve_workdir("/app", "src/../lib"), "/app/lib");
        assert_eq!(resolve_workdir("/app", "/abs/"), "/abs/");
        assert_eq!(resolve_workdir("/app", "/a/../b"), "/a/../b");
        assert_eq!(resolve_workdir("/a", ".."), "/");
    }

    #[test]
    fn ports_like_docker() {
        assert_eq!(expand_port_spec("80"), vec!["80/tcp"]);
        assert_eq!(expand_port_spec("53/UDP"), vec!["53/udp"]);
        assert_eq!(
            expand_port_spec("8000-8002"),
            vec!["8000/tcp", "8001/tcp", "8002/tcp"]
        );
    }
}
