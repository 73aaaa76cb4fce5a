//! hadolint's rules on the commands a RUN runs, and on ARG/ENV names.
//! All but DL3003 are also applied to `ONBUILD` triggers on their own
//! ([`check_triggers`]), as hadolint does.

use std::collections::{BTreeMap, BTreeSet};

use super::command::after_install;
use super::instructions::drop_quotes;
use super::{From, Instr, Kind, Run};
use crate::rules::{Hit, hit};
use crate::script::SimpleCommand;

pub(crate) fn check(stream: &[Instr], out: &mut Vec<Hit>) {
    for instr in stream {
        if let Kind::Run(run) = &instr.kind
            && run.script.commands.iter().any(|c| c.name == "cd")
        {
            out.push(hit(
                "DL3003",
                instr.line,
                "cd in RUN: use WORKDIR to change directory",
            ));
        }
    }
    check_triggers(stream, out);
}

/// The rules hadolint also applies to `ONBUILD` triggers.
pub(crate) fn check_triggers(stream: &[Instr], out: &mut Vec<Hit>) {
    for instr in stream {
        match &instr.kind {
            Kind::Run(run) => {
                for (rule, message) in command_rules(run) {
                    out.push(hit(rule, instr.line, message));
                }
            }
            Kind::Arg(names) => {
                if let Some(name) = names.iter().find(|n| sensitive(n)) {
                    out.push(hit(
                        "DL3064",
                        instr.line,
                        format!("ARG {name} looks like it holds a secret"),
                    ));
                }
            }
            Kind::Env(pairs) => {
                if let Some((name, _)) = pairs.iter().find(|(n, _)| sensitive(n)) {
                    out.push(hit(
                        "DL3064",
                        instr.line,
                        format!("ENV {name} looks like it holds a secret"),
                    ));
                }
            }
            _ => {}
        }
    }
    apt_lists_left(stream, out);
    rpm_versions(stream, out);
    pip_cache(stream, out);
    yarn_cache(stream, out);
    curl_and_wget(stream, out);
}

/// The rules that look at one RUN alone.
fn command_rules(run: &Run) -> Vec<(&'static str, String)> {
    let cmds = &run.script.commands;
    let mut found: Vec<(&'static str, String)> = Vec::new();
    let mut say = |rule: &'static str, message: String| {
        if !found.iter().any(|(r, _)| *r == rule) {
            found.push((rule, message));
        }
    };
    let mounted = |fragment: &str| run.cache_targets.iter().any(|t| t.contains(fragment));
    let index = |pred: &dyn Fn(&SimpleCommand) -> bool| cmds.iter().position(pred);
    let cleaned_after = |install: &dyn Fn(&SimpleCommand) -> bool,
                         clean: &dyn Fn(&SimpleCommand) -> bool| {
        match (index(install), index(clean)) {
            (None, _) => true,
            (Some(i), Some(c)) => i < c,
            (Some(_), None) => false,
        }
    };
    for cmd in cmds {
        if let Some(name) = [
            "free", "kill", "mount", "ps", "service", "shutdown", "ssh", "top", "vim",
        ]
        .iter()
        .find(|n| cmd.name == **n)
        {
            say("DL3001", format!("`{name}` makes no sense in a build step"));
        }
        match cmd.name.as_str() {
            "sudo" => say(
                "DL3004",
                "sudo in RUN: use USER, or gosu at run time".into(),
            ),
            "apt" => say("DL3027", "apt in RUN: use apt-get or apt-cache".into()),
            "ln" if cmd.has_arg("/bin/sh") => say(
                "DL4005",
                "ln to /bin/sh: use SHELL to change the shell".into(),
            ),
            _ => {}
        }
        if cmd.is(&["apt-get"], &["install"]) {
            let without_release = cmd.drop_flag_values(&["t", "target-release"]);
            if let Some(p) = without_release.args_no_flags().into_iter().find(|p| {
                *p != "install" && !(p.contains('=') || p.contains('/') || p.ends_with(".deb"))
            }) {
                say(
                    "DL3008",
                    format!("apt-get install {p} without a version (`{p}=<version>`)"),
                );
            }
            let yes = cmd.has_any_flag(&["y", "yes", "qq", "assume-yes"])
                || cmd.count_flag("q") == 2
                || cmd.count_flag("quiet") == 2
                || cmd.has_arg("-q=2");
            if !yes {
                say("DL3014", "apt-get install without -y".into());
            }
            if !(cmd.has_flag("no-install-recommends")
                || cmd.has_arg("APT::Install-Recommends=false"))
            {
                say(
                    "DL3015",
                    "apt-get install without --no-install-recommends".into(),
                );
            }
        }
        if pip_install(cmd) && !requirement_install(cmd) && !cmd.has_any_flag(&["constraint", "c"])
        {
            let packages = cmd.drop_flag_values(PIP_FLAGS_WITH_VALUES);
            if let Some(p) = after_install(&packages.args_no_flags())
                .into_iter()
                .find(|p| !pip_version_fixed(p))
            {
                say(
                    "DL3013",
                    format!("pip install {p} without a version (`{p}==<version>`)"),
                );
            }
        }
        if cmd.is(&["npm"], &["install"]) {
            let words = cmd.drop_flag_values(&["loglevel", "registry"]);
            let words = words.args_no_flags();
            if words.first() == Some(&"install")
                && let Some(p) = after_install(&words)
                    .into_iter()
                    .find(|p| !npm_version_fixed(p))
            {
                say(
                    "DL3016",
                    format!("npm install {p} without a version (`{p}@<version>`)"),
                );
            }
        }
        if cmd.is(&["apk"], &["add"]) {
            let words = cmd.drop_flag_values(&["t", "virtual", "repository", "X"]);
            if let Some(p) = words.args_no_flags().into_iter().find(|p| {
                *p != "add"
                    && !(["=", "~", ">", "<"].iter().any(|s| p.contains(s)) || p.ends_with(".apk"))
            }) {
                say(
                    "DL3018",
                    format!("apk add {p} without a version (`{p}=<version>`)"),
                );
            }
            if !cmd.has_flag("no-cache") && !mounted("/var/cache/apk") {
                say("DL3019", "apk add without --no-cache".into());
            }
        }
        if let Some(gem) = unpinned_gem(cmd) {
            say(
                "DL3028",
                format!("gem install {gem} without a version (`{gem}:<version>`)"),
            );
        }
        if cmd.is(&["yum"], &["install", "groupinstall", "localinstall"])
            && !cmd.has_any_flag(&["y", "assumeyes"])
        {
            say("DL3030", "yum install without -y".into());
        }
        if cmd.is(
            &["zypper"],
            &[
                "install",
                "in",
                "remove",
                "rm",
                "source-install",
                "si",
                "patch",
            ],
        ) && !cmd.has_any_flag(&["non-interactive", "n", "no-confirm", "y"])
        {
            say("DL3034", "zypper without --non-interactive".into());
        }
        if cmd.is(&["zypper"], &["dist-upgrade", "dup"]) {
            say("DL3035", "zypper dist-upgrade in a build".into());
        }
        if cmd.is(&["zypper"], &["install", "in"])
            && let Some(p) = cmd.args_no_flags().into_iter().find(|p| {
                *p != "install"
                    && *p != "in"
                    && !(["=", ">", "<"].iter().any(|s| p.contains(s)) || p.ends_with(".rpm"))
            })
        {
            say("DL3037", format!("zypper install {p} without a version"));
        }
        if cmd.is(
            &["dnf", "microdnf"],
            &["install", "groupinstall", "localinstall"],
        ) && !cmd.has_any_flag(&["y", "assumeyes"])
        {
            say("DL3038", format!("{} install without -y", cmd.name));
        }
        if cmd.name == "useradd"
            && !cmd.has_any_flag(&["l", "no-log-init"])
            && cmd.has_any_flag(&["u", "uid"])
            && cmd.flag_values("u").iter().any(|u| u.chars().count() > 5)
        {
            say(
                "DL3046",
                "useradd with a high UID and without -l (--no-log-init)".into(),
            );
        }
        if cmd.name == "wget"
            && !cmd.has_flag("progress")
            && !cmd.has_any_flag(&[
                "q",
                "quiet",
                "o",
                "output-file",
                "a",
                "append-output",
                "no-verbose",
            ])
            && !cmd.has_arg("-nv")
        {
            say(
                "DL3047",
                "wget without --progress=dot:giga (or -q, -nv)".into(),
            );
        }
    }
    if let Some(p) = go_packages(cmds).into_iter().find(|p| !go_version_fixed(p)) {
        say(
            "DL3062",
            format!("go module {p} without a version (`{p}@<version>`)"),
        );
    }
    let yum_install = |c: &SimpleCommand| c.is(&["yum"], &["install"]);
    let yum_clean = |c: &SimpleCommand| {
        c.is(&["yum"], &["clean", "all"]) || c.is(&["rm"], &["-rf", "/var/cache/yum/*"])
    };
    if !cleaned_after(&yum_install, &yum_clean) {
        say(
            "DL3032",
            "yum install without `yum clean all` after it".into(),
        );
    }
    let zypper_install = |c: &SimpleCommand| c.is(&["zypper"], &["install", "in"]);
    let zypper_clean = |c: &SimpleCommand| c.is(&["zypper"], &["clean", "cc"]);
    if !mounted("/var/cache/zypp") && !cleaned_after(&zypper_install, &zypper_clean) {
        say(
            "DL3036",
            "zypper install without `zypper clean` after it".into(),
        );
    }
    const DNF_INSTALL: &[&str] = &[
        "install",
        "in",
        "upgrade",
        "up",
        "upgrade-minimal",
        "up-min",
        "reinstall",
        "rei",
    ];
    let dnf_ok = ["dnf", "microdnf"].iter().all(|name| {
        let install = |c: &SimpleCommand| c.is(&[name], DNF_INSTALL);
        let clean = |c: &SimpleCommand| {
            c.is(&[name], &["clean", "all"]) || c.is(&["rm"], &["-rf", "/var/cache/libdnf5*"])
        };
        cleaned_after(&install, &clean)
    });
    if !dnf_ok && !mounted("/var/cache/libdnf5") && !mounted(".cache/libdnf5") {
        say(
            "DL3040",
            "dnf install without `dnf clean all` after it".into(),
        );
    }
    found
}

fn pip_install(cmd: &SimpleCommand) -> bool {
    let std =
        cmd.name.starts_with("pip") && !cmd.name.starts_with("pipenv") && cmd.has_arg("install");
    let python = cmd.name.starts_with("python")
        && cmd
            .args
            .windows(3)
            .any(|w| w[0] == "-m" && w[1] == "pip" && w[2] == "install");
    std || python
}

fn requirement_install(cmd: &SimpleCommand) -> bool {
    cmd.has_arg("--requirement") || cmd.has_arg("-r") || cmd.has_arg(".")
}

/// pip's options whose value is the next word (hadolint's list).
const PIP_FLAGS_WITH_VALUES: &[&str] = &[
    "abi",
    "b",
    "build",
    "e",
    "editable",
    "extra-index-url",
    "f",
    "find-links",
    "i",
    "index-url",
    "implementation",
    "no-binary",
    "only-binary",
    "platform",
    "prefix",
    "progress-bar",
    "proxy",
    "python",
    "python-version",
    "root",
    "root-user-action",
    "src",
    "t",
    "target",
    "trusted-host",
    "upgrade-strategy",
];

const VCS_SCHEMES: &[&str] = &[
    "git+file",
    "git+https",
    "git+ssh",
    "git+http",
    "git+git",
    "git",
    "hg+file",
    "hg+http",
    "hg+https",
    "hg+ssh",
    "hg+static-http",
    "svn",
    "svn+svn",
    "svn+http",
    "svn+https",
    "svn+ssh",
    "bzr+http",
    "bzr+https",
    "bzr+ssh",
    "bzr+sftp",
    "bzr+ftp",
    "bzr+lp",
];

fn pip_version_fixed(p: &str) -> bool {
    let vcs = VCS_SCHEMES.iter().any(|s| p.starts_with(s));
    ["==", ">=", "<=", ">", "<", "!=", "~=", "==="]
        .iter()
        .any(|s| p.contains(s))
        || (vcs && p.contains('@'))
        || p.ends_with(".whl")
        || p.ends_with(".tar.gz")
        || (!vcs && p.contains('/'))
}

fn npm_version_fixed(p: &str) -> bool {
    if ["git://", "git+ssh://", "git+http://", "git+https://"]
        .iter()
        .any(|g| p.starts_with(g))
    {
        return p.contains('#');
    }
    if [".tar", ".tar.gz", ".tgz"].iter().any(|s| p.ends_with(s))
        || ["/", "./", "../", "~/"].iter().any(|s| p.starts_with(s))
    {
        return true;
    }
    // A scope (`@scope/name`) is not a version.
    let unscoped = if p.starts_with('@') {
        p.trim_start_matches(|c: char| c != '/')
    } else {
        p
    };
    unscoped.contains('@')
}

/// The first gem of a `gem install` without `:version` (when no
/// `-v`/`--version` pins them all).
fn unpinned_gem(cmd: &SimpleCommand) -> Option<&str> {
    if !cmd.is(&["gem"], &["install", "i"])
        || cmd.has_arg("-v")
        || cmd.has_arg("--version")
        || cmd.args.iter().any(|a| a.starts_with("--version="))
    {
        return None;
    }
    let mut words = cmd.args.iter().take_while(|a| *a != "--").peekable();
    let mut gems = Vec::new();
    while let Some(w) = words.next() {
        if w.starts_with('-') {
            words.next();
        } else if w != "install" && w != "i" {
            gems.push(w.as_str());
        }
    }
    gems.into_iter().find(|g| !g.contains(':'))
}

/// `go run PKG` (the package only), else `go install|get PKG...`.
fn go_packages(cmds: &[SimpleCommand]) -> Vec<&str> {
    let run: Vec<&str> = cmds
        .iter()
        .filter(|c| c.is(&["go"], &["run"]))
        .flat_map(|c| {
            c.args_no_flags()
                .into_iter()
                .take(2)
                .filter(|a| *a != "run")
        })
        .collect();
    if !run.is_empty() {
        return run;
    }
    cmds.iter()
        .filter(|c| c.is(&["go"], &["install", "get"]))
        .flat_map(|c| {
            c.args_no_flags()
                .into_iter()
                .filter(|a| !matches!(*a, "install" | "get" | "tool"))
        })
        .collect()
}

fn go_version_fixed(p: &str) -> bool {
    let local = p == "." || p.starts_with('/') || p.starts_with('.');
    local || (p.contains('@') && !p.ends_with("@latest") && !p.ends_with("@none"))
}

const SENSITIVE_NAMES: &[&str] = &[
    "ACCESS_TOKEN",
    "APPLICATION_KEY",
    "APP_SECRET",
    "AUTH_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "BITTREX_API_KEY",
    "BITTREX_API_SECRET",
    "CF_PASSWORD",
    "CF_USERNAME",
    "CIRCLE_TOKEN",
    "CI_DEPLOY_PASSWORD",
    "CI_DEPLOY_USER",
    "DOCKERHUB_PASSWORD",
    "DOCKER_EMAIL",
    "DOCKER_PASSWORD",
    "DOCKER_USERNAME",
    "FACEBOOK_ACCESS_TOKEN",
    "FACEBOOK_APP_ID",
    "FACEBOOK_APP_SECRET",
    "FIREBASE_API_TOKEN",
    "FIREBASE_TOKEN",
    "FOSSA_API_KEY",
    "GH_ENTERPRISE_TOKEN",
    "GH_TOKEN",
    "GITHUB_ENTERPRISE_TOKEN",
    "GITHUB_TOKEN",
    "HEROKU_API_KEY",
    "HEROKU_API_USER",
    "NPM_AUTH_TOKEN",
    "NPM_TOKEN",
    "OKTA_AUTHN_GROUPID",
    "OKTA_CLIENT_ORGURL",
    "OKTA_CLIENT_TOKEN",
    "OKTA_OAUTH2_CLIENTID",
    "OKTA_OAUTH2_CLIENTSECRET",
    "OPENAI_API_KEY",
    "OS_PASSWORD",
    "OS_USERNAME",
    "POSTGRES_PASSWORD",
    "SLACK_TOKEN",
    "STRIPE_API_KEY",
    "STRIPE_DEVICE_NAME",
    "TRAVIS_OS_NAME",
    "TRAVIS_SECURE_ENV_VARS",
    "TRAVIS_SUDO",
    "VAULT_CLIENT_KEY",
    "VAULT_TOKEN",
];

/// DL3064's test of a name: a known secret's name, or one with
/// `api_key`, `client_key`, `password`, `private`, `secret`, `token`,
/// `username` in it.
fn sensitive(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SENSITIVE_NAMES.contains(&name.to_ascii_uppercase().as_str())
        || [
            "api_key",
            "client_key",
            "password",
            "private",
            "secret",
            "token",
            "username",
        ]
        .iter()
        .any(|s| lower.contains(s))
}

/// Stages whose leftovers count for DL3009 and DL3060: the last stage, and
/// stages another FROM builds on.
struct StageWatch<'a> {
    current: Option<&'a From>,
    bases: BTreeSet<&'a str>,
    lines: BTreeMap<usize, Option<&'a From>>,
}

impl<'a> StageWatch<'a> {
    fn new() -> Self {
        StageWatch {
            current: None,
            bases: BTreeSet::new(),
            lines: BTreeMap::new(),
        }
    }

    fn from(&mut self, from: &'a From) {
        self.current = Some(from);
        self.bases.insert(from.image.name.as_str());
    }

    fn remember(&mut self, line: usize) {
        self.lines.insert(line, self.current);
    }

    fn report(self, rule: &'static str, message: &str, out: &mut Vec<Hit>) {
        for (line, stage) in &self.lines {
            // hadolint tells two FROMs apart by all they say.
            let last = *stage == self.current;
            let built_on = stage
                .and_then(|s| s.alias.as_deref())
                .is_some_and(|a| self.bases.contains(a));
            if last || built_on {
                out.push(hit(rule, *line, message));
            }
        }
    }
}

/// DL3009: `apt-get update` without `rm -rf /var/lib/apt/lists/*` after
/// it (and no cache mount of the lists), in a stage that ends up in an
/// image.
fn apt_lists_left(stream: &[Instr], out: &mut Vec<Hit>) {
    let mut watch = StageWatch::new();
    for instr in stream {
        match &instr.kind {
            Kind::From(from) => watch.from(from),
            Kind::Run(run) => {
                let cmds = &run.script.commands;
                let update = cmds
                    .iter()
                    .any(|c| c.is(&["apt", "apt-get", "aptitude"], &["update"]));
                let cleanup = cmds
                    .iter()
                    .any(|c| c.is(&["rm"], &["-rf", "/var/lib/apt/lists/*"]));
                let mounted = |f: &str| run.cache_targets.iter().any(|t| t.contains(f));
                let lists_mounted = mounted("/var/lib/apt/lists")
                    || (mounted("/var/lib/apt") && mounted("/var/cache/apt"));
                if update && !cleanup && !lists_mounted {
                    watch.remember(instr.line);
                }
            }
            _ => {}
        }
    }
    watch.report(
        "DL3009",
        "apt-get update without `rm -rf /var/lib/apt/lists/*` in the same RUN",
        out,
    );
}

/// DL3060: `yarn install` without `yarn cache clean` after it.
fn yarn_cache(stream: &[Instr], out: &mut Vec<Hit>) {
    let mut watch = StageWatch::new();
    for instr in stream {
        match &instr.kind {
            Kind::From(from) => watch.from(from),
            Kind::Run(run) => {
                let cmds = &run.script.commands;
                let install = cmds.iter().position(|c| c.is(&["yarn"], &["install"]));
                // hadolint's test: yarn with `cache` or `clean` among its words.
                let clean = cmds
                    .iter()
                    .position(|c| c.is(&["yarn"], &["cache", "clean"]));
                let mounted = run.cache_targets.iter().any(|t| t.contains(".cache/yarn"));
                let forgot = match (install, clean) {
                    (Some(_), None) => !mounted,
                    (Some(i), Some(c)) => c < i,
                    _ => false,
                };
                if forgot {
                    watch.remember(instr.line);
                }
            }
            _ => {}
        }
    }
    watch.report(
        "DL3060",
        "yarn install without `yarn cache clean` after it",
        out,
    );
}

/// DL3033, DL3041: yum and dnf packages without a version (`name-1.2`); a
/// `$VAR` counts as one when an ENV of the stage (or the stage it is
/// built on) or any ARG declares it.
fn rpm_versions(stream: &[Instr], out: &mut Vec<Hit>) {
    // Per stage: its alias and the ENV names it has.
    let mut stages: Vec<(String, BTreeSet<String>)> = vec![(String::new(), BTreeSet::new())];
    let mut args: BTreeSet<String> = BTreeSet::new();
    for instr in stream {
        match &instr.kind {
            Kind::From(from) => {
                let inherited = stages
                    .iter()
                    .find(|(alias, _)| *alias == from.image.name)
                    .map(|(_, envs)| envs.clone())
                    .unwrap_or_default();
                stages.push((from.alias.clone().unwrap_or_default(), inherited));
            }
            Kind::Env(pairs) => {
                if let Some(stage) = stages.last_mut() {
                    stage.1.extend(pairs.iter().map(|(k, _)| k.clone()));
                }
            }
            Kind::Arg(names) => args.extend(names.iter().cloned()),
            Kind::Run(run) => {
                let envs = &stages.last().expect("never empty").1;
                let defined = |p: &str| {
                    envs.iter()
                        .chain(args.iter())
                        .any(|v| p.contains(&format!("${{{v}}}")))
                };
                let fixed = |p: &str| {
                    let parts: Vec<&str> = p.split('-').collect();
                    if parts.len() <= 1 {
                        false
                    } else if p.ends_with(".rpm") {
                        true
                    } else if p.contains('$') {
                        defined(p)
                    } else {
                        version_like(&parts[1..])
                    }
                };
                for (rule, tools, skip) in [
                    ("DL3033", &["yum"][..], &["module"][..]),
                    ("DL3041", &["dnf", "microdnf"][..], &["module", "group"][..]),
                ] {
                    let mut unpinned = None;
                    for cmd in &run.script.commands {
                        if !cmd.is(tools, &["install"]) {
                            continue;
                        }
                        let module = cmd.is(tools, &["module"]);
                        for p in cmd.args_no_flags() {
                            if p == "install" || p == "module" {
                                continue;
                            }
                            let ok = if module {
                                p.contains(':')
                            } else {
                                cmd.is(tools, skip) || fixed(p)
                            };
                            if !ok && unpinned.is_none() {
                                unpinned = Some(p.to_string());
                            }
                        }
                    }
                    if let Some(p) = unpinned {
                        out.push(hit(
                            rule,
                            instr.line,
                            format!(
                                "{} install {p} without a version (`{p}-<version>`)",
                                tools[0]
                            ),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
}

/// Every part made of version characters, one starting with a digit.
fn version_like(parts: &[&str]) -> bool {
    !parts.is_empty()
        && parts.iter().all(|p| {
            p.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '~' | '^' | '_' | ':' | '+')
            })
        })
        && parts
            .iter()
            .any(|p| p.starts_with(|c: char| c.is_ascii_digit()))
}

const TRUTHY: &[&str] = &[
    "1", "true", "True", "TRUE", "on", "On", "ON", "yes", "Yes", "YES",
];

/// DL3042: `pip install` without `--no-cache-dir`, with no
/// `PIP_NO_CACHE_DIR` set true (by ENV in the stage or a stage it is built
/// on, or in the RUN's text) and no cache mount of `.cache/pip`.
fn pip_cache(stream: &[Instr], out: &mut Vec<Hit>) {
    let mut no_cache: BTreeMap<Option<String>, bool> = BTreeMap::new();
    let mut current: Option<String> = None;
    for instr in stream {
        match &instr.kind {
            Kind::From(from) => {
                let key = from
                    .alias
                    .clone()
                    .unwrap_or_else(|| from.image.name.clone());
                let inherited = no_cache
                    .get(&Some(from.image.name.clone()))
                    .copied()
                    .unwrap_or(false);
                no_cache.insert(Some(key.clone()), inherited);
                current = Some(key);
            }
            Kind::Env(pairs)
                if pairs
                    .iter()
                    .any(|(k, v)| k == "PIP_NO_CACHE_DIR" && TRUTHY.contains(&drop_quotes(v))) =>
            {
                no_cache.insert(current.clone(), true);
            }
            Kind::Run(run) => {
                let set_by_env = no_cache.get(&current).copied().unwrap_or(false);
                let set_inline = run.text.find("PIP_NO_CACHE_DIR=").is_some_and(|at| {
                    let value = &run.text[at + "PIP_NO_CACHE_DIR=".len()..];
                    TRUTHY.iter().any(|t| value.starts_with(t))
                });
                let forgot = run
                    .script
                    .commands
                    .iter()
                    .any(|c| pip_install(c) && !c.has_arg("--no-cache-dir") && !pip_wrapper(c));
                let mounted = run.cache_targets.iter().any(|t| t.contains(".cache/pip"));
                if !set_by_env && !set_inline && forgot && !mounted {
                    out.push(hit(
                        "DL3042",
                        instr.line,
                        "pip install without --no-cache-dir",
                    ));
                }
            }
            _ => {}
        }
    }
}

/// pipx and pipenv, which hadolint leaves alone.
fn pip_wrapper(cmd: &SimpleCommand) -> bool {
    ["pipx", "pipenv"].iter().any(|w| {
        cmd.name.contains(w)
            || (cmd.name.starts_with("python")
                && cmd.args.windows(2).any(|p| p[0] == "-m" && p[1] == *w))
    })
}

/// DL4001: a RUN using curl or wget in a stage that has used the other.
fn curl_and_wget(stream: &[Instr], out: &mut Vec<Hit>) {
    let mut used: BTreeSet<&str> = BTreeSet::new();
    for instr in stream {
        match &instr.kind {
            Kind::From(_) => used.clear(),
            Kind::Run(run) => {
                let here: BTreeSet<&str> = run
                    .script
                    .commands
                    .iter()
                    .map(|c| c.name.as_str())
                    .filter(|n| *n == "curl" || *n == "wget")
                    .collect();
                used.extend(here.iter().copied());
                if !here.is_empty() && used.len() == 2 {
                    out.push(hit(
                        "DL4001",
                        instr.line,
                        "both wget and curl in the stage: use one",
                    ));
                }
            }
            _ => {}
        }
    }
}
