//! What kiln ships: the static kiln (no program interpreter, no shared
//! library; it runs in a root that has no libc at all, registries and name
//! resolution included) and kiln's own image (scripts/image: `docker load`,
//! `docker run` with docker's default security, Kaniko's layout and
//! environment, nothing else in it).

mod support;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Output};

use kiln_testkit::need::{Root, StaticKiln, Tool, need};
use kiln_testkit::{Registry, RegistryOptions};
use support::{Kiln, rootfs_tarball, run, stdout, text};

/// Debian's CA bundle (ca-certificates), what scripts/image puts in the image.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[test]
fn the_static_kiln_has_no_interpreter_and_needs_no_library() {
    let (Some(kiln), Some(_)) = (need(StaticKiln), need(Tool::Readelf)) else {
        return;
    };
    let headers = stdout(&run(Command::new("readelf").arg("-lW").arg(&kiln)));
    assert!(
        headers.contains("Program Headers:") && !headers.contains("INTERP"),
        "{} asks for a program interpreter:\n{headers}",
        kiln.display()
    );
    let dynamic = stdout(&run(Command::new("readelf").arg("-dW").arg(&kiln)));
    assert!(
        !dynamic.contains("(NEEDED)"),
        "{} needs shared libraries:\n{dynamic}",
        kiln.display()
    );
}

/// A root with the static kiln laid out as in kiln's image, the CA bundle,
/// /etc/hosts, /etc/resolv.conf and /tmp, and nothing else: no libc, no
/// loader, no shell, not even /proc (kiln warns that it cannot look for
/// mounts a killed kiln left, and goes on).
fn libc_less_root(dir: &Path, kiln: &Path, registry_name: &str) {
    let kaniko = dir.join("kaniko");
    fs_err::create_dir_all(kaniko.join("ssl/certs")).unwrap();
    fs_err::create_dir_all(kaniko.join(".docker")).unwrap();
    fs_err::copy(kiln, kaniko.join("executor")).unwrap();
    symlink("executor", kaniko.join("kiln")).unwrap();
    if Path::new(CA_BUNDLE).is_file() {
        fs_err::copy(CA_BUNDLE, kaniko.join("ssl/certs/ca-certificates.crt")).unwrap();
    }
    fs_err::create_dir_all(dir.join("etc")).unwrap();
    fs_err::write(
        dir.join("etc/hosts"),
        format!("127.0.0.1 localhost\n127.0.0.1 {registry_name}\n"),
    )
    .unwrap();
    fs_err::write(
        dir.join("etc/resolv.conf"),
        format!("nameserver {SILENT_NAMESERVER}\n"),
    )
    .unwrap();
    fs_err::create_dir_all(dir.join("tmp")).unwrap();
    fs_err::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
}

/// coreutils' `chroot`, looked up on the host's PATH (the command's own
/// environment is cleared) and in /usr/sbin, where Debian has it.
fn chroot() -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([std::path::PathBuf::from("/usr/sbin")])
        .map(|d| d.join("chroot"))
        .find(|p| p.is_file())
        .expect("chroot (coreutils) is missing")
}

/// Where the root's /etc/resolv.conf points: [`silent_nameserver`].
const SILENT_NAMESERVER: &str = "127.0.0.99";

/// A nameserver that answers nothing: a UDP socket on port 53 whose
/// queued datagrams are the queries kiln sent it.
fn silent_nameserver() -> std::net::UdpSocket {
    let socket = std::net::UdpSocket::bind((SILENT_NAMESERVER, 53))
        .unwrap_or_else(|e| panic!("binding {SILENT_NAMESERVER}:53: {e}"));
    socket.set_nonblocking(true).unwrap();
    socket
}

/// How many queries `socket` got (and drops them).
fn queries(socket: &std::net::UdpSocket) -> usize {
    let mut buf = [0u8; 1500];
    std::iter::from_fn(|| socket.recv_from(&mut buf).ok()).count()
}

/// `chroot ROOT PROGRAM ARGS` with the image's environment and nothing of
/// the host's.
fn in_root(root: &Path, program: &str, args: &[&str]) -> Output {
    Command::new(chroot())
        .arg(root)
        .arg(program)
        .args(args)
        .env_clear()
        .env("PATH", "/kaniko")
        .env("HOME", "/root")
        .env("SSL_CERT_DIR", "/kaniko/ssl/certs")
        .env("DOCKER_CONFIG", "/kaniko/.docker/")
        .env("KILN_ROOT", "/store")
        .env("KILN_PROGRESS", "plain")
        .output()
        .unwrap()
}

fn ok_in_root(root: &Path, program: &str, args: &[&str]) -> String {
    let out = in_root(root, program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} in a root without libc:\n{}",
        text(&out)
    );
    stdout(&out)
}

/// The digest `kiln imagetools inspect` prints for a registry's image.
fn inspected_digest(summary: &str) -> String {
    summary
        .lines()
        .find_map(|l| l.strip_prefix("Digest:"))
        .unwrap_or_else(|| panic!("no digest in:\n{summary}"))
        .trim()
        .to_string()
}

#[test]
fn the_static_kiln_runs_in_a_root_without_libc() {
    let (Some(()), Some(kiln)) = (need(Root), need(StaticKiln)) else {
        return;
    };
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    // A name only the root's /etc/hosts knows: resolved by kiln itself.
    let registry_name = "registry.kiln.test";
    libc_less_root(&root, &kiln, registry_name);

    let version = ok_in_root(&root, "/kaniko/kiln", &["--version"]);
    assert!(version.starts_with("kiln "), "{version}");
    // Kaniko's name takes Kaniko's command line.
    let help = ok_in_root(&root, "/kaniko/executor", &["--help"]);
    assert!(help.contains("--destination"), "{help}");

    // A store, a push to a name from /etc/hosts (not loopback by name: an
    // insecure registry, HTTPS tried first, so TLS is set up too), and a
    // pull and an inspect through `localhost`. Names /etc/hosts lists
    // never reach DNS, not even for the family it does not list (asking
    // an unreachable nameserver for AAAA took 30 seconds a connection).
    let nameserver = silent_nameserver();
    fs_err::copy(
        rootfs_tarball(dir.path(), 0),
        root.join("tmp/rootfs.tar.gz"),
    )
    .unwrap();
    let by_name = format!("{registry_name}:{}", registry.port());
    let by_localhost = format!("localhost:{}", registry.port());
    let pushed = format!("{by_name}/static/busybox:1");
    ok_in_root(
        &root,
        "/kaniko/kiln",
        &["import", "/tmp/rootfs.tar.gz", "--tag", &pushed],
    );
    ok_in_root(
        &root,
        "/kaniko/kiln",
        &["--insecure-registry", &by_name, "push", &pushed],
    );
    let pulled = format!("{by_localhost}/static/busybox:1");
    ok_in_root(&root, "/kaniko/kiln", &["pull", &pulled]);
    let summary = ok_in_root(&root, "/kaniko/kiln", &["imagetools", "inspect", &pulled]);
    let images = ok_in_root(&root, "/kaniko/kiln", &["images", "--format", "json"]);
    let images: serde_json::Value = serde_json::from_str(&images).unwrap();
    let digests: Vec<&str> = images
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        queries(&nameserver),
        0,
        "names /etc/hosts lists were asked of DNS"
    );
    let inspected = inspected_digest(&summary);
    assert_eq!(
        digests,
        [inspected.as_str(), inspected.as_str()],
        "the pushed and the pulled image: {images:#}"
    );
}

/// `docker ARGS`, panicking with its output unless it succeeds.
fn docker(args: &[&str]) -> String {
    stdout(&run(Command::new("docker").args(args)))
}

#[test]
fn kilns_image_loads_in_docker_and_runs_with_default_security() {
    let Some(image) = support::kiln_image() else {
        return;
    };

    // The entrypoint is Kaniko's executor, started as docker starts any
    // image: no privileges, default capabilities and seccomp.
    let help = docker(&["run", "--rm", &image.name, "--help"]);
    assert!(help.contains("--destination"), "{help}");
    let version = docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "kiln",
        &image.name,
        "--version",
    ]);
    assert!(version.starts_with("kiln "), "{version}");

    // Kaniko's environment, so that its jobs run unchanged.
    let config: serde_json::Value =
        serde_json::from_str(&docker(&["image", "inspect", &image.name])).unwrap();
    let config = &config[0]["Config"];
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/kaniko/executor"])
    );
    assert_eq!(config["WorkingDir"], "/workspace");
    let env: Vec<&str> = config["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    for var in [
        "PATH=/usr/local/bin:/kaniko",
        "SSL_CERT_DIR=/kaniko/ssl/certs",
        "DOCKER_CONFIG=/kaniko/.docker/",
        "HOME=/root",
        "USER=root",
    ] {
        assert!(env.contains(&var), "{var} not in {env:?}");
    }

    // Nothing in it but the executor, its other name, the credentials
    // directory, the CA bundle and the workspace.
    assert_eq!(
        layer_entries(&image.dir.join("oci")),
        [
            "kaniko/",
            "kaniko/.docker/",
            "kaniko/executor",
            "kaniko/kiln -> executor",
            "kaniko/ssl/",
            "kaniko/ssl/certs/",
            "kaniko/ssl/certs/ca-certificates.crt",
            "workspace/",
        ]
    );

    // The debug variant, as GitLab's docker executor runs a job's script:
    // the entrypoint cleared, a shell from PATH. Its layers are the
    // executor's and one more, so a runner that has one pulls one layer.
    let out = docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "",
        &image.debug_name,
        "sh",
        "-c",
        "executor --help && kiln --version",
    ]);
    assert!(
        out.contains("--destination") && out.contains("kiln "),
        "{out}"
    );
    let (plain, debug) = (
        layer_digests(&image.dir.join("oci")),
        layer_digests(&image.dir.join("oci-debug")),
    );
    assert_eq!(
        (debug.len(), &debug[..plain.len()]),
        (plain.len() + 1, &plain[..])
    );

    // What scripts/image pushes (the store's image, its metadata.json) is
    // what the archives hold: the same clamped file times.
    let read = |file: &str| -> serde_json::Value {
        serde_json::from_slice(&fs_err::read(image.dir.join(file)).unwrap()).unwrap()
    };
    assert_eq!(
        read("metadata.json")["containerimage.digest"],
        read("oci/index.json")["manifests"][0]["digest"]
    );

    // A registry reached from inside the container (host network: the
    // test registry listens on loopback), TLS roots loaded from the image.
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let seeder = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    let name = format!("{}/from/host:1", registry.host());
    seeder.ok(&[
        "import",
        rootfs_tarball(work.path(), 0).to_str().unwrap(),
        "--tag",
        &name,
    ]);
    seeder.ok(&["push", &name]);
    let on_host = inspected_digest(&stdout(&seeder.ok(&["imagetools", "inspect", &name])));
    let localhost = format!("localhost:{}/from/host:1", registry.port());
    let summary = docker(&[
        "run",
        "--rm",
        "--network",
        "host",
        "--entrypoint",
        "kiln",
        &image.name,
        "imagetools",
        "inspect",
        &localhost,
    ]);
    assert_eq!(inspected_digest(&summary), on_host, "{summary}");
}

/// A blob of an OCI layout.
fn blob(layout: &Path, digest: &str) -> std::path::PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// The layer digests of the OCI layout's one image.
fn layer_digests(layout: &Path) -> Vec<String> {
    let read = |path: &Path| -> serde_json::Value {
        serde_json::from_slice(&fs_err::read(path).unwrap()).unwrap()
    };
    let index = read(&layout.join("index.json"));
    let manifest = read(&blob(
        layout,
        index["manifests"][0]["digest"].as_str().unwrap(),
    ));
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// Every entry of every layer of the OCI layout's one image, in order, as
/// `tar -tv` names them (`PATH -> TARGET` for a symlink).
fn layer_entries(layout: &Path) -> Vec<String> {
    let mut entries = Vec::new();
    for layer in layer_digests(layout) {
        let listing = stdout(&run(Command::new("tar")
            .arg("-tvzf")
            .arg(blob(layout, &layer))));
        // `-rwxr-xr-x 0/0   19164176 1970-01-01 00:00 kaniko/executor`
        entries.extend(
            listing
                .lines()
                .map(|l| l.split_whitespace().skip(5).collect::<Vec<_>>().join(" ")),
        );
    }
    entries
}
