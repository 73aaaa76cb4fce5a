//! What of a `RUN` besides its command line, environment, user and
//! working directory decides its result, for the engine's cache key.

use kiln_dockerfile::instructions::{NetworkMode as DfNetwork, RunCommand};
use kiln_sandbox::NetworkMode;
use serde::Serialize;

use super::command::command_args;
use super::error::RunError;
use super::mounts::{Planned, plan};

/// One part of a `RUN`'s cache key: `text` is a canonical description
/// (JSON with a fixed field order) without secret or cache contents;
/// `content`, when set, names files whose content digest the engine must
/// add (a bind source, a cache seed).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyPart {
    pub text: String,
    pub content: Option<ContentRef>,
}

/// Files a mount reads: `path` (absolute, cleaned; `/` for all of it) in
/// what `from` names (`None`: the build context).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentRef {
    pub from: Option<String>,
    pub path: String,
}

#[derive(Serialize)]
#[serde(tag = "part", rename_all = "snake_case")]
enum Part<'a> {
    Bind {
        target: &'a str,
        from: Option<&'a str>,
        source: &'a str,
        readonly: bool,
    },
    Cache {
        target: &'a str,
        id: &'a str,
        sharing: &'a str,
        readonly: bool,
        from: Option<&'a str>,
        source: &'a str,
        mode: String,
        uid: u32,
        gid: u32,
    },
    Tmpfs {
        target: &'a str,
        size: Option<u64>,
    },
    Secret {
        id: &'a str,
        target: Option<&'a str>,
        env: Option<&'a str>,
        required: bool,
        mode: String,
        uid: u32,
        gid: u32,
    },
    Script {
        path: &'a str,
        data: &'a str,
    },
    Network {
        mode: &'a str,
    },
    Security {
        mode: &'a str,
    },
}

/// The parts of `command`'s cache key that the engine cannot see in its
/// command line (see `command_args`), environment, user and working
/// directory: each mount (sorted by target, as BuildKit orders an exec's
/// mounts; mounts on one target keep their order), a heredoc script's
/// body, the effective network mode (`default` is `default_network`) and
/// the security mode.
///
/// Never part of it: secret bytes (only a secret's id, target, variable
/// name and file mode) and cache contents.
pub fn cache_key_parts(
    command: &RunCommand,
    workdir: &str,
    default_network: NetworkMode,
) -> Result<Vec<KeyPart>, RunError> {
    let mut planned = plan(command, workdir)?;
    planned.sort_by(|a, b| sort_target(a).cmp(sort_target(b)));
    let mut out: Vec<KeyPart> = planned.iter().map(part_of).collect();

    // The shell does not matter here: only whether there is a script.
    if let Some(script) = command_args(command, &[])?.script {
        out.push(KeyPart {
            text: json(&Part::Script {
                path: &script.path(),
                data: &script.data,
            }),
            content: None,
        });
    }
    let network = match (command.network, default_network) {
        (DfNetwork::None, _) | (DfNetwork::Default, NetworkMode::None) => "none",
        (DfNetwork::Host, _) | (DfNetwork::Default, NetworkMode::Host) => "host",
    };
    out.push(KeyPart {
        text: json(&Part::Network { mode: network }),
        content: None,
    });
    out.push(KeyPart {
        text: json(&Part::Security {
            mode: command.security.as_str(),
        }),
        content: None,
    });
    Ok(out)
}

/// What a RUN's mounts read ([`cache_key_parts`]' contents), their values
/// taken as written (a variable stays `$NAME`): for looking ahead at a
/// planned step, before it is expanded (a relative target is as good as
/// any). Nothing for mounts that do not read.
pub(crate) fn mount_contents(command: &RunCommand) -> Vec<ContentRef> {
    let Ok(mounts) = command.mounts_as_written() else {
        return Vec::new();
    };
    let written = RunCommand {
        mounts,
        ..command.clone()
    };
    plan(&written, "/")
        .map(|planned| planned.iter().filter_map(|p| part_of(p).content).collect())
        .unwrap_or_default()
}

/// Secrets without a file sort with the empty target, first.
fn sort_target(p: &Planned) -> &str {
    match p {
        Planned::Bind { target, .. }
        | Planned::Cache { target, .. }
        | Planned::Tmpfs { target, .. } => target,
        Planned::Secret { target, .. } => target.as_deref().unwrap_or(""),
    }
}

fn part_of(p: &Planned) -> KeyPart {
    match p {
        Planned::Bind {
            target,
            from,
            source,
            readonly,
        } => KeyPart {
            text: json(&Part::Bind {
                target,
                from: from.as_deref(),
                source,
                readonly: *readonly,
            }),
            content: Some(ContentRef {
                from: from.clone(),
                path: source.clone(),
            }),
        },
        Planned::Cache {
            target,
            id,
            sharing,
            readonly,
            from,
            source,
            mode,
            uid,
            gid,
        } => KeyPart {
            text: json(&Part::Cache {
                target,
                id,
                sharing: sharing.as_str(),
                readonly: *readonly,
                from: from.as_deref(),
                source,
                mode: format!("{mode:04o}"),
                uid: *uid,
                gid: *gid,
            }),
            content: from.as_ref().map(|f| ContentRef {
                from: Some(f.clone()),
                path: source.clone(),
            }),
        },
        Planned::Tmpfs { target, size } => KeyPart {
            text: json(&Part::Tmpfs {
                target,
                size: *size,
            }),
            content: None,
        },
        Planned::Secret {
            id,
            target,
            env,
            required,
            mode,
            uid,
            gid,
        } => KeyPart {
            text: json(&Part::Secret {
                id,
                target: target.as_deref(),
                env: env.as_deref(),
                required: *required,
                mode: format!("{mode:04o}"),
                uid: *uid,
                gid: *gid,
            }),
            content: None,
        },
    }
}

fn json(part: &Part<'_>) -> String {
    // Serialising strings, numbers and bools cannot fail.
    serde_json::to_string(part).unwrap_or_default()
}
