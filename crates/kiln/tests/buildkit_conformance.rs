//! BuildKit is the reference: every case under `tests/buildkit-cases/`, and
//! the Dockerfiles of BuildKit's own integration tests
//! (`../shared/conformance/buildkit-integration`) that can be built
//! offline, are built by `docker buildx build` and by `kiln build`; the
//! flattened filesystems and the image configs must agree, and where one
//! fails the other must fail too. See `conformance_support` for the design.

mod conformance_support;

use std::path::PathBuf;
use std::process::Command;

use conformance_support::{Verdict, base, case, integration, run_all};
use kiln_testkit::need::{Conformance, Docker, Runc, need};
use kiln_testkit::{Registry, RegistryOptions};

#[test]
fn kiln_builds_what_buildkit_builds() {
    if need(Runc).is_none() || need(Docker).is_none() {
        return;
    }
    let Some(integration_dir) = need(Conformance("buildkit-integration")) else {
        return;
    };
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let started = std::time::Instant::now();
    let work = tempfile::Builder::new()
        .prefix("kiln-conformance-")
        .tempdir()
        .unwrap();
    let bases = base::publish(&registry.host(), work.path());

    let own = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/buildkit-cases");
    let mut cases = case::load_own(&own).unwrap();
    let (adapted, skipped) = integration::load(&integration_dir).unwrap();
    eprintln!(
        "BuildKit integration Dockerfiles: {} adapted, {} skipped",
        adapted.len(),
        skipped.len()
    );
    if std::env::var("KILN_CONFORMANCE_SHOW_SKIPS").as_deref() == Ok("1") {
        for (name, why) in &skipped {
            eprintln!("  skipped {name}: {why}");
        }
    }
    cases.extend(adapted);
    if let Ok(filter) = std::env::var("KILN_CONFORMANCE_FILTER") {
        let words: Vec<&str> = filter.split(',').filter(|w| !w.is_empty()).collect();
        cases.retain(|c| words.iter().any(|w| c.name.contains(w)));
    }
    let jobs = std::env::var("KILN_CONFORMANCE_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(4);
    eprintln!("running {} cases on {jobs} threads", cases.len());
    // KILN_CONFORMANCE_KEEP=1 keeps the differing cases' files for a look.
    let work = if std::env::var("KILN_CONFORMANCE_KEEP").as_deref() == Ok("1") {
        work.keep()
    } else {
        work.path().to_path_buf()
    };
    let reports = run_all(&cases, &bases, &work, jobs);
    // A BuildKit crash takes dockerd down, and every later case with it.
    assert!(
        Command::new("docker")
            .arg("info")
            .output()
            .is_ok_and(|o| o.status.success()),
        "dockerd died during the suite: a case crashed BuildKit (see the dockerd log)"
    );

    let count = |f: &dyn Fn(&Verdict) -> bool| reports.iter().filter(|r| f(&r.verdict)).count();
    let same = count(&|v| *v == Verdict::Same);
    let known = count(&|v| matches!(v, Verdict::Known(_)));
    let failed: Vec<_> = reports.iter().filter(|r| !r.passed()).collect();
    let mut summary = format!(
        "\nBuildKit conformance: {} cases in {:.0}s: {same} same, {known} known differences, {} failing\n",
        reports.len(),
        started.elapsed().as_secs_f64(),
        failed.len()
    );
    for r in &failed {
        summary.push_str(&r.render());
    }
    let report_file = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("buildkit-conformance.txt");
    let full: String = reports.iter().map(|r| r.render()).collect::<String>() + &summary;
    let _ = fs_err::write(&report_file, full);
    eprintln!("{summary}(full report: {})", report_file.display());
    assert!(
        failed.is_empty(),
        "{} cases differ from BuildKit (see above)",
        failed.len()
    );
}
