//! Crash consistency under chaos (docs/RELIABILITY.md, "kiln killed at any
//! moment"): `kiln build` SIGKILLed at random moments of a build that
//! pulls, runs, commits, exports and pushes, under both isolations, 20
//! times. After each kill the next kiln command (`store verify`) finds the
//! store sound, and no process runs in, and no mount is left under, the
//! store. Then a build without kills gives the digest an uninterrupted
//! build gave in a store that never saw a kill.
//!
//! The kill times are random; the seed is printed, and `KILN_CHAOS_SEED`
//! replays a run.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_testkit::need::{Runc, need};
use kiln_testkit::{Registry, RegistryOptions};
use support::{Kiln, full_busybox_root, run, tar_gz, text};

/// Builds killed (at least); builds that end before their kill do not count.
const KILLS: usize = 20;

/// A small deterministic generator (splitmix64): the kill times.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A busybox root with every applet, and 16 MiB that does not compress
/// (so that pulling, unpacking and pushing the base take a while).
fn base_tarball(dir: &Path) -> PathBuf {
    let root = full_busybox_root(dir);
    kiln_testkit::write_random_file(&root.join("payload"), 16 << 20, 11).unwrap();
    let tarball = dir.join("base.tar.gz");
    tar_gz(&root, &tarball);
    tarball
}

/// Pulled, run (thousands of files: a long commit), copied, exported to an
/// OCI tar and pushed.
fn dockerfile(base: &str) -> String {
    format!(
        "FROM {base}\n\
         RUN mkdir /many && cd /many && for i in $(seq 1 3000); do echo $i > f$i; done \\\n \
          && yes kiln | head -c 20000000 > /big\n\
         COPY input.bin /input.bin\n\
         RUN sha256sum /big /input.bin /payload > /sums\n"
    )
}

struct Build<'a> {
    kiln: &'a Kiln,
    ctx: &'a Path,
    out: &'a Path,
    push_to: &'a str,
}

impl Build<'_> {
    fn command(&self, isolation: &str, no_cache: bool) -> Command {
        let mut cmd = self.kiln.cmd();
        cmd.env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["build", "--isolation", isolation, "--retries", "0"])
            .arg("--output")
            .arg(format!(
                "type=oci,dest={},rewrite-timestamp=true",
                self.out.display()
            ))
            .arg("--output")
            .arg(format!(
                "type=registry,name={},rewrite-timestamp=true",
                self.push_to
            ));
        if no_cache {
            cmd.arg("--no-cache");
        }
        cmd.arg(self.ctx);
        cmd
    }

    /// A whole build; returns the exported manifest's digest and how long
    /// it took.
    fn complete(&self, isolation: &str) -> (String, Duration) {
        let started = Instant::now();
        let out = self.command(isolation, false).output().unwrap();
        assert!(out.status.success(), "the build failed:\n{}", text(&out));
        let index = run(Command::new("tar")
            .arg("-xOf")
            .arg(self.out)
            .arg("index.json"));
        let index: serde_json::Value = serde_json::from_slice(&index.stdout).unwrap();
        let digest = index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        (digest, started.elapsed())
    }
}

/// Processes whose root is under `store` (a step, by runc or chroot).
fn rooted_under(store: &Path) -> Vec<(u32, PathBuf)> {
    let mut found = Vec::new();
    for entry in fs_err::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(root) = fs_err::read_link(format!("/proc/{pid}/root"))
            && root.starts_with(store)
        {
            found.push((pid, root));
        }
    }
    found
}

fn mounts_under(store: &Path) -> Vec<String> {
    let store = store.to_str().unwrap();
    fs_err::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(store))
        .map(str::to_string)
        .collect()
}

#[test]
fn kills_at_random_moments_leave_a_sound_store_and_the_same_image() {
    if need(Runc).is_none() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let seed = std::env::var("KILN_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) * 7919 + 17);
    eprintln!("chaos seed {seed} (KILN_CHAOS_SEED={seed} replays it)");
    let mut rng = Rng(seed);

    let work = tempfile::tempdir().unwrap();
    let base = format!("{}/chaos/base:1", registry.host());
    let seeder = Kiln::new();
    let tarball = base_tarball(work.path());
    run(seeder.cmd().env("SOURCE_DATE_EPOCH", "1700000000").args([
        "import",
        tarball.to_str().unwrap(),
        "--tag",
        &base,
    ]));
    seeder.ok(&["push", &base]);
    let ctx = work.path().join("ctx");
    fs_err::create_dir_all(&ctx).unwrap();
    fs_err::write(ctx.join("Dockerfile"), dockerfile(&base)).unwrap();
    kiln_testkit::write_random_file(&ctx.join("input.bin"), 8 << 20, 5).unwrap();

    // The image, by a kiln that is never killed.
    let calm = Kiln::new();
    let calm_out = work.path().join("calm.tar");
    let reference = Build {
        kiln: &calm,
        ctx: &ctx,
        out: &calm_out,
        push_to: &format!("{}/chaos/calm:1", registry.host()),
    };
    let (expected, took) = reference.complete("runc");

    let kiln = Kiln::new();
    let store = fs_err::canonicalize(kiln.root.path()).unwrap();
    let out = work.path().join("chaos.tar");
    let chaos = Build {
        kiln: &kiln,
        ctx: &ctx,
        out: &out,
        push_to: &format!("{}/chaos/app:1", registry.host()),
    };
    // How long a build of each kind (pulls, runs every step, uses the
    // cache) takes here: the kill comes at a random moment before that.
    let mut window = [took; 3];
    let mut finished_first = 0;
    let mut killed = 0;
    let mut i = 0;
    while killed < KILLS {
        assert!(
            finished_first <= KILLS / 2,
            "{finished_first} builds ended before their kill: the windows are wrong (seed {seed})"
        );
        let isolation = if i % 2 == 0 { "runc" } else { "chroot" };
        // A third of the kills hit a build that pulls again, a third one
        // that runs every step again, the rest whatever the cache leaves.
        let fresh_base = i % 3 == 0;
        if fresh_base {
            let _ = kiln.cmd().args(["rmi", &base]).output();
            kiln.ok(&["prune"]);
        }
        let kind = i % 3;
        let after = Duration::from_millis(rng.below(window[kind].as_millis() as u64));
        let started = Instant::now();
        let mut build = chaos
            .command(isolation, kind == 1)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut ended = None;
        while started.elapsed() < after {
            if build.try_wait().unwrap().is_some() {
                ended = Some(started.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        match ended {
            Some(took) => {
                finished_first += 1;
                window[kind] = took;
                eprintln!("kill {i}: the {isolation} build ended first, after {took:?}");
            }
            None => {
                build.kill().unwrap();
                build.wait().unwrap();
                killed += 1;
                eprintln!("kill {i}: {isolation} build killed after {after:?}");
            }
        }

        // The next command, whatever it is, sweeps; the store is sound.
        let verify = kiln.cmd().args(["store", "verify"]).output().unwrap();
        assert!(
            verify.status.success(),
            "kill {i} ({isolation}, after {after:?}, seed {seed}): store verify failed:\n{}",
            text(&verify)
        );
        let started = Instant::now();
        while !rooted_under(&store).is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "kill {i} ({isolation}, after {after:?}, seed {seed}): processes still run in \
                 the store: {:?}",
                rooted_under(&store)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mounts = mounts_under(&store);
        assert!(
            mounts.is_empty(),
            "kill {i} ({isolation}, after {after:?}, seed {seed}): mounts left: {mounts:#?}"
        );
        i += 1;
    }

    for isolation in ["runc", "chroot"] {
        let (digest, _) = chaos.complete(isolation);
        assert_eq!(
            digest, expected,
            "after the kills, a {isolation} build gives another image (seed {seed})"
        );
    }
    kiln.ok(&["store", "verify"]);
}
