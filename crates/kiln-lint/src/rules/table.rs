//! Every rule `kiln lint` knows: kiln's own, hadolint's that need no
//! ShellCheck (hadolint 2.15.1's ids and default severities), and
//! BuildKit's build checks (their names; all warnings, as in BuildKit).

use crate::finding::Severity::{Error, Info, Style, Warning};
use crate::finding::{Origin, Rule, Severity};

/// Every rule, kiln's first, then hadolint's, then BuildKit's, each group
/// in id order.
pub const RULES: &[Rule] = &[
    kiln(
        "KL101",
        Error,
        "apt install that can prompt",
        "without -y and DEBIAN_FRONTEND=noninteractive apt and debconf ask questions, and a build has no one to answer them",
    ),
    kiln(
        "KL102",
        Error,
        "Python package install without a network timeout",
        "a stalled index or mirror connection keeps the step waiting; a timeout turns it into a retry or a clear failure",
    ),
    kiln(
        "KL103",
        Error,
        "curl or wget without a timeout",
        "a download that stops sending keeps the step waiting for as long as the connection stays open",
    ),
    kiln(
        "KL104",
        Warning,
        "package install without a cache mount",
        "every cache miss downloads every package again; RUN --mount=type=cache keeps the downloads across builds without putting them in a layer",
    ),
    kiln(
        "KL105",
        Warning,
        "cache purged in a step that mounts it",
        "a cache mount never enters the image, so purging it only throws away what the next build would reuse",
    ),
    kiln(
        "KL106",
        Warning,
        "whole context copied before the dependency install",
        "any change to any file invalidates the install step; copy the manifests (requirements.txt, package.json, Cargo.lock, go.sum) first, install, then copy the rest",
    ),
    kiln(
        "KL107",
        Info,
        "several heavy frameworks installed in one RUN",
        "one layer of several gigabytes is rebuilt and re-pushed whole when any of them changes; separate steps cache and pull independently",
    ),
    kiln(
        "KL108",
        Warning,
        "apt-get update apart from apt-get install",
        "the update layer is cached while the install step runs again later with stale package lists, which fails or installs old versions",
    ),
    kiln(
        "KL109",
        Warning,
        "ADD of a URL without --checksum",
        "the content behind a URL can change or be tampered with; --checksum=sha256:... makes the build fail instead",
    ),
    kiln(
        "KL110",
        Warning,
        "build context without .dockerignore, or heavy paths sent",
        "every file a COPY or ADD reaches is read, hashed and copied, and ends up in the image: a .git, node_modules or weights file nobody asked for costs minutes and gigabytes on every build",
    ),
    kiln(
        "KL111",
        Warning,
        "unpinned base of a stage others build on",
        "a :latest or untagged base changes under the build, and every stage built on it changes too; pin a tag, better a digest",
    ),
    kiln(
        "KL112",
        Error,
        "background process left running by a RUN",
        "a RUN ends when its process tree does: a daemon left running keeps the step waiting, or is killed with the snapshot half-written",
    ),
    hadolint_off(
        "DL1001",
        "inline `# hadolint ignore=` pragma",
        "ignores spread through a Dockerfile are hard to review; keep them in .hadolint.yaml",
    ),
    hadolint(
        "DL3000",
        Error,
        "relative WORKDIR",
        "a relative WORKDIR depends on the directory the base image left, which can change under the build",
    ),
    hadolint(
        "DL3001",
        Info,
        "command that makes no sense in a container (ssh, vim, shutdown, service, ps, free, top, kill, mount)",
        "interactive tools and system management have no effect, or the wrong one, in a build step",
    ),
    hadolint(
        "DL3002",
        Warning,
        "last USER of a stage is root",
        "an image that runs as root gives a container escape the host's root",
    ),
    hadolint(
        "DL3003",
        Warning,
        "cd in RUN instead of WORKDIR",
        "WORKDIR states the directory for every later step; a cd is forgotten at the end of the RUN",
    ),
    hadolint(
        "DL3004",
        Error,
        "sudo in RUN",
        "build steps run as the stage's USER already; sudo adds a tty and password prompts and unpredictable environments",
    ),
    hadolint(
        "DL3006",
        Warning,
        "base image without a tag",
        "an untagged base is whatever latest means on the day of the build",
    ),
    hadolint(
        "DL3007",
        Warning,
        "base image tagged latest",
        "latest moves; pin a release tag",
    ),
    hadolint(
        "DL3008",
        Warning,
        "apt-get install without pinned versions",
        "unpinned packages change from build to build",
    ),
    hadolint(
        "DL3009",
        Info,
        "apt lists not deleted after apt-get update",
        "/var/lib/apt/lists stays in the layer and grows the image",
    ),
    hadolint(
        "DL3010",
        Info,
        "archive copied and then extracted in a RUN",
        "ADD extracts a local archive itself, without a layer holding the archive",
    ),
    hadolint(
        "DL3011",
        Error,
        "EXPOSE of a port outside 0-65535",
        "such a port does not exist",
    ),
    hadolint(
        "DL3012",
        Error,
        "more than one HEALTHCHECK in a stage",
        "only the last one takes effect",
    ),
    hadolint(
        "DL3013",
        Warning,
        "pip install without pinned versions",
        "unpinned packages change from build to build",
    ),
    hadolint(
        "DL3014",
        Warning,
        "apt-get install without -y",
        "apt-get waits for an answer that a build cannot give",
    ),
    hadolint(
        "DL3015",
        Info,
        "apt-get install without --no-install-recommends",
        "recommended packages grow the image without being needed",
    ),
    hadolint(
        "DL3016",
        Warning,
        "npm install without pinned versions",
        "unpinned packages change from build to build",
    ),
    hadolint(
        "DL3018",
        Warning,
        "apk add without pinned versions",
        "unpinned packages change from build to build",
    ),
    hadolint(
        "DL3019",
        Info,
        "apk add without --no-cache",
        "the package index stays in the layer",
    ),
    hadolint(
        "DL3020",
        Error,
        "ADD of local files or folders",
        "COPY says what happens; ADD also fetches URLs and extracts archives",
    ),
    hadolint(
        "DL3021",
        Error,
        "COPY of several sources to a destination without a trailing /",
        "a destination for several sources must be a directory",
    ),
    hadolint(
        "DL3022",
        Warning,
        "COPY --from that names no earlier stage",
        "a typo in a stage name pulls an image of that name instead",
    ),
    hadolint(
        "DL3023",
        Error,
        "COPY --from of the stage itself",
        "a stage cannot copy from itself",
    ),
    hadolint(
        "DL3024",
        Error,
        "two stages with the same name",
        "the later stage shadows the earlier one",
    ),
    hadolint(
        "DL3025",
        Warning,
        "CMD, ENTRYPOINT or HEALTHCHECK in shell form",
        "in shell form the command is a child of /bin/sh and does not get the container's signals",
    ),
    hadolint(
        "DL3026",
        Error,
        "base image from a registry that is not trusted",
        "the configuration lists the registries images may come from",
    ),
    hadolint(
        "DL3027",
        Warning,
        "apt in RUN",
        "apt's command line is for people and may change; use apt-get or apt-cache",
    ),
    hadolint(
        "DL3028",
        Warning,
        "gem install without pinned versions",
        "unpinned gems change from build to build",
    ),
    hadolint(
        "DL3029",
        Warning,
        "FROM --platform with a constant",
        "a constant platform ties the Dockerfile to one architecture",
    ),
    hadolint(
        "DL3030",
        Warning,
        "yum install without -y",
        "yum waits for an answer that a build cannot give",
    ),
    hadolint(
        "DL3032",
        Warning,
        "yum install without yum clean all",
        "yum's cache stays in the layer",
    ),
    hadolint(
        "DL3033",
        Warning,
        "yum install without pinned versions",
        "unpinned packages change from build to build",
    ),
    hadolint(
        "DL3034",
        Warning,
        "zypper install without a non-interactive switch",
        "zypper waits for an answer that a build cannot give",
    ),
    hadolint(
        "DL3035",
        Warning,
        "zypper dist-upgrade",
        "a distribution upgrade in a build makes the image differ from its base in unknown ways",
    ),
    hadolint(
        "DL3036",
        Warning,
        "zypper install without zypper clean",
        "zypper's cache stays in the layer",
    ),
    hadolint(
        "DL3037",
        Warning,
        "zypper install without pinned versions",
        "unpinned packages change from build to build",
    ),
    hadolint(
        "DL3038",
        Warning,
        "dnf install without -y",
        "dnf waits for an answer that a build cannot give",
    ),
    hadolint(
        "DL3040",
        Warning,
        "dnf install without dnf clean all",
        "dnf's cache stays in the layer",
    ),
    hadolint(
        "DL3041",
        Warning,
        "dnf install without pinned versions",
        "unpinned packages change from build to build",
    ),
    hadolint(
        "DL3042",
        Warning,
        "pip install without --no-cache-dir",
        "pip's cache stays in the layer",
    ),
    hadolint(
        "DL3044",
        Error,
        "ENV that refers to a variable it defines",
        "the reference still sees the old value, not the one set in the same ENV",
    ),
    hadolint(
        "DL3045",
        Warning,
        "COPY to a relative destination with no WORKDIR",
        "the destination depends on the directory the base image left",
    ),
    hadolint(
        "DL3046",
        Warning,
        "useradd with a high UID and without -l",
        "the lastlog and faillog files grow sparse to the UID's size and bloat the layer",
    ),
    hadolint(
        "DL3047",
        Info,
        "wget without --progress (or -q, -nv)",
        "wget's progress bar fills the build log",
    ),
    hadolint(
        "DL3048",
        Style,
        "invalid label key",
        "label keys should be lower-case reverse-DNS names without reserved namespaces",
    ),
    hadolint_off(
        "DL3057",
        "stage without HEALTHCHECK",
        "without a health check an orchestrator cannot tell a hung service from a working one",
    ),
    hadolint(
        "DL3059",
        Info,
        "consecutive RUN instructions that could be one",
        "each RUN is a layer; short consecutive ones can be joined",
    ),
    hadolint(
        "DL3060",
        Info,
        "yarn install without yarn cache clean",
        "yarn's cache stays in the layer",
    ),
    hadolint(
        "DL3062",
        Warning,
        "go install, get or run without a pinned version",
        "unpinned modules change from build to build",
    ),
    hadolint(
        "DL3063",
        Warning,
        "stage named scratch or context",
        "those names mean something else to FROM and COPY --from",
    ),
    hadolint(
        "DL3064",
        Warning,
        "sensitive name in ARG or ENV",
        "ARG and ENV values stay in the image's history and config; pass secrets with RUN --mount=type=secret",
    ),
    hadolint(
        "DL3065",
        Warning,
        "FROM --platform=$TARGETPLATFORM",
        "it is the default, and says nothing",
    ),
    hadolint(
        "DL3066",
        Info,
        "USER by name",
        "a name is resolved in the image's /etc/passwd, which the host and Kubernetes' runAsNonRoot cannot check",
    ),
    hadolint(
        "DL3067",
        Warning,
        "COPY --from of a stage's whole filesystem",
        "copying / from another stage copies everything, special files too",
    ),
    hadolint(
        "DL4000",
        Error,
        "MAINTAINER",
        "MAINTAINER is deprecated; use LABEL org.opencontainers.image.authors",
    ),
    hadolint(
        "DL4001",
        Warning,
        "both wget and curl in one stage",
        "two download tools where one does",
    ),
    hadolint(
        "DL4003",
        Warning,
        "more than one CMD in a stage",
        "only the last CMD takes effect",
    ),
    hadolint(
        "DL4004",
        Error,
        "more than one ENTRYPOINT in a stage",
        "only the last ENTRYPOINT takes effect",
    ),
    hadolint(
        "DL4005",
        Warning,
        "ln to /bin/sh instead of SHELL",
        "SHELL changes the shell of the following RUNs in the open",
    ),
    hadolint(
        "DL4006",
        Warning,
        "RUN with a pipe and no pipefail",
        "without set -o pipefail a failing command before a pipe does not fail the step",
    ),
    buildkit(
        "ConsistentInstructionCasing",
        "instructions in mixed case",
        "All commands within the Dockerfile should use the same casing (either upper or lower)",
    ),
    buildkit(
        "CopyIgnoredFile",
        "COPY or ADD of a path .dockerignore excludes",
        "Attempting to Copy file that is excluded by .dockerignore",
    ),
    buildkit(
        "DuplicateStageName",
        "two stages with the same name",
        "Stage names should be unique",
    ),
    buildkit(
        "ExposeInvalidFormat",
        "EXPOSE with an IP address or a host port",
        "IP address and host-port mapping should not be used in EXPOSE instruction; this will become an error in a future release",
    ),
    buildkit(
        "ExposeProtoCasing",
        "EXPOSE protocol not in lower case",
        "Protocol in EXPOSE instruction should be lowercase",
    ),
    buildkit(
        "FromAsCasing",
        "AS not in the case of FROM",
        "The 'as' keyword should match the case of the 'from' keyword",
    ),
    buildkit(
        "FromPlatformFlagConstDisallowed",
        "FROM --platform with a constant",
        "FROM --platform flag should not use a constant value",
    ),
    buildkit(
        "InvalidBaseImagePlatform",
        "base image of another platform than the build's",
        "Base image platform does not match expected target platform",
    ),
    buildkit(
        "InvalidDefaultArgInFrom",
        "global ARG default that leaves FROM empty or invalid",
        "Default value for global ARG results in an empty or invalid base image name",
    ),
    buildkit_experimental(
        "InvalidDefinitionDescription",
        "comment above ARG or FROM that does not start with its name",
        "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`",
    ),
    buildkit(
        "JSONArgsRecommended",
        "CMD or ENTRYPOINT in shell form",
        "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals",
    ),
    buildkit(
        "LegacyKeyValueFormat",
        "ENV or LABEL key value without =",
        "Legacy key/value format with whitespace separator should not be used",
    ),
    buildkit(
        "MaintainerDeprecated",
        "MAINTAINER",
        "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
    ),
    buildkit(
        "MultipleInstructionsDisallowed",
        "more than one CMD, ENTRYPOINT or HEALTHCHECK in a stage",
        "Multiple instructions of the same type should not be used in the same stage",
    ),
    buildkit(
        "NoEmptyContinuation",
        "empty line in a continuation",
        "Empty continuation lines will become errors in a future release",
    ),
    buildkit(
        "RedundantTargetPlatform",
        "FROM --platform=$TARGETPLATFORM",
        "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
    ),
    buildkit(
        "ReservedStageName",
        "stage named scratch or context",
        "Reserved words should not be used as stage names",
    ),
    buildkit(
        "SecretsUsedInArgOrEnv",
        "secret-like name in ARG or ENV",
        "Sensitive data should not be used in the ARG or ENV commands",
    ),
    buildkit(
        "StageNameCasing",
        "stage name not in lower case",
        "Stage names should be lowercase",
    ),
    buildkit(
        "UndefinedArgInFrom",
        "FROM uses an ARG not declared before it",
        "FROM command must use declared ARGs",
    ),
    buildkit(
        "UndefinedVar",
        "variable used before it is defined",
        "Variables should be defined before their use",
    ),
    buildkit(
        "WorkdirRelativePath",
        "relative WORKDIR with no absolute one before it",
        "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes",
    ),
];

const fn kiln(
    id: &'static str,
    severity: Severity,
    title: &'static str,
    why: &'static str,
) -> Rule {
    Rule {
        id,
        severity,
        title,
        why,
        origin: Origin::Kiln,
        on_by_default: true,
    }
}

const fn hadolint(
    id: &'static str,
    severity: Severity,
    title: &'static str,
    why: &'static str,
) -> Rule {
    Rule {
        id,
        severity,
        title,
        why,
        origin: Origin::Hadolint,
        on_by_default: true,
    }
}

/// hadolint's rules at level `ignore`: on only through `override`, then
/// at the level it gives.
const fn hadolint_off(id: &'static str, title: &'static str, why: &'static str) -> Rule {
    Rule {
        id,
        severity: Info,
        title,
        why,
        origin: Origin::Hadolint,
        on_by_default: false,
    }
}

const fn buildkit(id: &'static str, title: &'static str, why: &'static str) -> Rule {
    Rule {
        id,
        severity: Warning,
        title,
        why,
        origin: Origin::Buildkit,
        on_by_default: true,
    }
}

/// BuildKit's experimental checks: on only through
/// `# check=experimental=NAME` (or `all`).
const fn buildkit_experimental(id: &'static str, title: &'static str, why: &'static str) -> Rule {
    Rule {
        id,
        severity: Warning,
        title,
        why,
        origin: Origin::Buildkit,
        on_by_default: false,
    }
}
