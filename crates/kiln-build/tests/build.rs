//! The engine end to end: Dockerfiles in, images in the store out, checked
//! through the store and the image config, and rebuilt from the cache.

use kiln_build::Encoding;
use kiln_build::Event;
use kiln_build::{BuildError, BuildResult};
use kiln_image::document::Manifest;
use kiln_image::media::{self, Compression, Format};

mod build_support;

use build_support::{Harness, busybox_image, cached_steps, flatten, logs, started_steps};

#[test]
fn copy_workdir_and_metadata_from_scratch_then_cached() {
    let Some(h) = Harness::new() else {
        return;
    };
    let ctx = tempfile::tempdir().unwrap();
    fs_err::write(ctx.path().join("a.txt"), "alpha\n").unwrap();
    fs_err::create_dir_all(ctx.path().join("src")).unwrap();
    fs_err::write(ctx.path().join("src/main.c"), "int main(){}\n").unwrap();
    fs_err::write(ctx.path().join("ignored.log"), "noise\n").unwrap();
    fs_err::write(ctx.path().join(".dockerignore"), "*.log\n").unwrap();
    let dockerfile = "FROM scratch\nENV APP=/app\nWORKDIR $APP\nCOPY a.txt .\nCOPY src/ src/\nCOPY *.log /logs/\nLABEL a=b\nEXPOSE 8080\nCMD [\"/app/run\"]\n";
    let (result, events) = h.build(ctx.path(), dockerfile, |_| {});
    let result = result.unwrap_or_else(|e| panic!("{e}\n{events:#?}"));
    let config = h.config(&result);
    let c = config.config.as_ref().unwrap();
    assert_eq!(c.working_dir.as_deref(), Some("/app"));
    assert_eq!(c.cmd.as_deref(), Some(&["/app/run".to_string()][..]));
    assert_eq!(
        c.env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.starts_with("APP="))
            .map(String::as_str),
        Some("APP=/app")
    );
    assert!(c.exposed_ports.as_ref().unwrap().contains_key("8080/tcp"));
    assert_eq!(
        c.labels.as_ref().unwrap().get("a").map(String::as_str),
        Some("b")
    );
    // WORKDIR, COPY a.txt, COPY src/: three layers; the ignored *.log copies nothing.
    assert_eq!(h.layer_count(&result), 3, "{events:#?}");
    assert_eq!(config.history.iter().filter(|h| !h.empty_layer).count(), 3);
    assert_eq!(started_steps(&events), 4);

    // Nothing changed: every filesystem step comes from the cache.
    let (again, events) = h.build(ctx.path(), dockerfile, |_| {});
    let again = again.unwrap();
    assert_eq!(started_steps(&events), 0, "{events:#?}");
    assert_eq!(cached_steps(&events), 4);
    assert_eq!(h.layer_count(&again), 3);
    assert_eq!(h.config(&again).rootfs.diff_ids, config.rootfs.diff_ids);

    // One file changed: its step and the ones after it run again.
    fs_err::write(ctx.path().join("src/main.c"), "int main(){return 1;}\n").unwrap();
    let (third, events) = h.build(ctx.path(), dockerfile, |_| {});
    third.unwrap();
    assert_eq!(
        started_steps(&events),
        2,
        "COPY src/ and COPY *.log rerun:\n{events:#?}"
    );
    assert_eq!(cached_steps(&events), 2);
}

#[test]
fn multi_stage_copy_from_and_target() {
    let Some(h) = Harness::new() else {
        return;
    };
    let ctx = tempfile::tempdir().unwrap();
    fs_err::write(ctx.path().join("x"), "x\n").unwrap();
    let dockerfile = "FROM scratch AS one\nCOPY x /one/x\n\nFROM scratch AS two\nCOPY x /two/x\n\nFROM scratch\nCOPY --from=one /one /from-one\nCOPY --from=1 /two/x /from-two\n";
    let (result, events) = h.build(ctx.path(), dockerfile, |_| {});
    let result = result.unwrap_or_else(|e| panic!("{e}\n{events:#?}"));
    assert_eq!(h.layer_count(&result), 2);
    let (only_one, _) = h.build(ctx.path(), dockerfile, |r| r.target = Some("one".into()));
    assert_eq!(h.layer_count(&only_one.unwrap()), 1);
}

#[test]
fn a_step_reading_another_stage_is_not_timed_while_it_waits_for_it() {
    let Some(h) = Harness::new() else {
        return;
    };
    let base = busybox_image(&h.store);
    let ctx = tempfile::tempdir().unwrap();
    let dockerfile = format!(
        "FROM {base} AS slow\nRUN sleep 4 && echo made > /made\n\n\
         FROM {base}\nRUN --mount=from=slow,target=/slow cat /slow/made > /seen\n\
         COPY --from=slow /made /copied\n"
    );
    let (result, events) = h.build(ctx.path(), &dockerfile, |_| {});
    result.unwrap_or_else(|e| panic!("{e}\n{events:#?}"));
    let step = |text: &str| {
        events
            .iter()
            .find_map(|e| match e {
                Event::StepPlanned { step, text: t, .. } if t.contains(text) => Some(*step),
                _ => None,
            })
            .unwrap()
    };
    let duration = |wanted: u32| {
        events
            .iter()
            .find_map(|e| match e {
                Event::StepDone {
                    step, duration_ms, ..
                } if *step == wanted => Some(*duration_ms),
                _ => None,
            })
            .unwrap()
    };
    assert!(duration(step("sleep 4")) >= 4000);
    // Both readers started with the build and waited about 4 s for the
    // slow stage; their times are their own work only (a margin for a
    // loaded machine: a cat and a one-file copy, not a speed check).
    for reader in [step("cat /slow"), step("COPY --from")] {
        assert!(duration(reader) < 4000, "step {reader}: {events:#?}");
    }
}

#[test]
fn errors_name_the_line() {
    let Some(h) = Harness::new() else {
        return;
    };
    let ctx = tempfile::tempdir().unwrap();
    let (result, _) = h.build(ctx.path(), "FROM scratch\n\nCOPY missing.txt /\n", |_| {});
    let err = result.unwrap_err();
    assert_eq!(err.location().map(|l| l.start_line), Some(3), "{err}");
    assert!(err.message().contains("missing.txt"), "{err}");
}

#[test]
fn a_failed_pull_keeps_the_registrys_error() {
    let Some(registry) = kiln_testkit::Registry::start(Default::default()) else {
        return;
    };
    let Some(h) = Harness::new() else {
        return;
    };
    let ctx = tempfile::tempdir().unwrap();
    let dockerfile = format!("FROM scratch\n\nFROM {}/no/such:1\n", registry.host());
    let (result, _) = h.build(ctx.path(), &dockerfile, |_| {});
    let err = result.unwrap_err();
    assert!(matches!(err, BuildError::Pull { .. }), "{err:?}");
    assert_eq!(err.location().map(|l| l.start_line), Some(3), "{err}");
    let message = err.message();
    assert!(
        message.starts_with(&format!("{}/no/such:1: ", registry.host())),
        "{message}"
    );
    assert_eq!(message.matches("manifest unknown").count(), 1, "{message}");
    // The cause is the registry client's own error, not its text.
    let source = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<kiln_registry::TransferError>());
    assert!(
        matches!(source, Some(kiln_registry::TransferError::Registry(e)) if e.is_not_found()),
        "{source:?}"
    );
}

#[test]
fn run_steps_users_heredocs_cache_mounts_and_caching() {
    let Some(h) = Harness::new() else {
        return;
    };
    let base = busybox_image(&h.store);
    let ctx = tempfile::tempdir().unwrap();
    fs_err::write(ctx.path().join("in.txt"), "input\n").unwrap();
    let dockerfile = format!(
        "FROM {base}\nARG GREETING=hi\nCOPY in.txt /work/\nWORKDIR /work\nRUN echo \"$GREETING from $(pwd)\" > out.txt && cat in.txt >> out.txt\n\
         RUN --mount=type=cache,target=/cache echo run >> /cache/count && wc -l < /cache/count > /work/seen\n\
         RUN <<EOF\nset -e\necho heredoc > /work/heredoc\nrm /work/in.txt\nEOF\nUSER app\nRUN id -u > /tmp/uid\nRUN echo to stdout && echo to stderr >&2\n"
    );
    let (result, events) = h.build(ctx.path(), &dockerfile, |_| {});
    let result = result.unwrap_or_else(|e| panic!("{e}\n{events:#?}"));
    let fs = flatten(&h.store, &result);
    let read = |p: &str| fs_err::read_to_string(fs.path().join(p)).unwrap();
    assert_eq!(read("work/out.txt"), "hi from /work\ninput\n");
    assert_eq!(read("work/seen").trim(), "1");
    assert_eq!(read("work/heredoc"), "heredoc\n");
    assert!(
        !fs.path().join("work/in.txt").exists(),
        "deleted by a later step (a whiteout)"
    );
    assert!(
        !fs.path().join("cache").join("count").exists(),
        "cache mounts never land in a layer"
    );
    assert_eq!(read("tmp/uid").trim(), "1000");
    let log = logs(&events);
    assert!(
        log.contains("to stdout") && log.contains("to stderr"),
        "{log}"
    );

    // Rebuild with a different build arg: the first RUN and everything after it reruns;
    // the cache mount has kept its contents.
    let (again, events) = h.build(ctx.path(), &dockerfile, |r| {
        r.build_args.insert("GREETING".into(), "hello".into());
    });
    let again = again.unwrap_or_else(|e| panic!("{e}\n{events:#?}"));
    let fs = flatten(&h.store, &again);
    assert_eq!(
        fs_err::read_to_string(fs.path().join("work/out.txt")).unwrap(),
        "hello from /work\ninput\n"
    );
    assert_eq!(
        fs_err::read_to_string(fs.path().join("work/seen"))
            .unwrap()
            .trim(),
        "2"
    );
    assert_eq!(
        cached_steps(&events),
        2,
        "COPY and WORKDIR come from the cache"
    );
}

#[test]
fn a_failing_run_names_its_line_and_leaves_nothing_mounted() {
    let Some(h) = Harness::new() else {
        return;
    };
    let base = busybox_image(&h.store);
    let ctx = tempfile::tempdir().unwrap();
    let (result, events) = h.build(
        ctx.path(),
        &format!("FROM {base}\nRUN echo fine\nRUN echo about to fail; exit 3\n"),
        |_| {},
    );
    let err = result.unwrap_err();
    assert_eq!(err.location().map(|l| l.start_line), Some(3), "{err}");
    assert!(
        err.message()
            .contains("did not complete successfully: exit code: 3"),
        "{err}"
    );
    assert!(events.iter().any(|e| matches!(e, Event::StepFailed { .. })));
    let mounts = fs_err::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(h.root.path().to_str().unwrap()),
        "no mount of this build remains:\n{mounts}"
    );
}

#[test]
fn the_same_inputs_give_the_same_image_with_source_date_epoch() {
    // Two builds at different times without the cache, one context: with
    // the SOURCE_DATE_EPOCH build arg the config and history say that
    // time (BuildKit), and with rewrite-timestamp every layer and the
    // image itself are identical, RUN layers (files made at run time)
    // included.
    let Some(h) = Harness::new() else {
        return;
    };
    let base = busybox_image(&h.store);
    let ctx = tempfile::tempdir().unwrap();
    fs_err::write(ctx.path().join("a.txt"), "alpha\n").unwrap();
    let dockerfile = "FROM scratch AS files\nCOPY a.txt /a.txt\n\
                      FROM IMAGE\nCOPY --from=files /a.txt /app/\n\
                      RUN mkdir -p /out && echo made > /out/made.txt && touch /out/stamp\n\
                      CMD [\"/bin/sh\"]\n";
    let mut digests = Vec::new();
    for round in 0..2 {
        if round == 1 {
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        let dockerfile = dockerfile.replace("IMAGE", &base);
        let (result, events) = h.build(ctx.path(), &dockerfile, |r| {
            r.build_args
                .insert("SOURCE_DATE_EPOCH".into(), "1700000000".into());
            r.no_cache = true;
        });
        assert_eq!(cached_steps(&events), 0);
        let result = result.unwrap_or_else(|e| panic!("{e}\n{}", logs(&events)));
        let config = h.config(&result);
        assert_eq!(config.created.as_deref(), Some("2023-11-14T22:13:20Z"));
        assert!(
            config
                .history
                .iter()
                .all(|h| h.created.as_deref() == Some("2023-11-14T22:13:20Z")),
            "{:?}",
            config.history
        );
        let mut encoding = Encoding {
            epoch: Some(1_700_000_000),
            rewrite_timestamps: true,
            ..Encoding::default()
        };
        let (target, images) =
            kiln_build::encode_image(&h.store, &result.target, &result.images, &encoding).unwrap();
        // Encoding again converts nothing: the variants were recorded.
        let again =
            kiln_build::encode_image(&h.store, &result.target, &result.images, &encoding).unwrap();
        assert_eq!(again.0, target);
        encoding.rewrite_timestamps = false;
        let plain =
            kiln_build::encode_image(&h.store, &result.target, &result.images, &encoding).unwrap();
        assert_eq!(plain.0, result.target, "the build's own encoding");
        digests.push((target.digest, images[0].config.rootfs.diff_ids.clone()));
    }
    assert_eq!(digests[0].1, digests[1].1, "layers differ");
    assert_eq!(digests[0].0, digests[1].0, "the images differ");
}

#[test]
fn a_cached_layer_comes_out_in_the_encoding_asked_for() {
    // Regression: a layer cached by a gzip build came out gzip from a zstd
    // build (and so for the level and the media types): the encoding was
    // decided at commit, and the cache hit reused what was committed.
    let Some(h) = Harness::new() else {
        return;
    };
    let base = busybox_image(&h.store);
    let ctx = tempfile::tempdir().unwrap();
    fs_err::write(ctx.path().join("a.txt"), "alpha\n").unwrap();
    let dockerfile = format!("FROM {base}\nRUN echo built > /built.txt\nCOPY a.txt /a.txt\n");
    let layers = |result: &BuildResult| -> Vec<(String, kiln_image::Digest)> {
        h.store
            .read_document::<Manifest>(&result.images[0].manifest)
            .unwrap()
            .value()
            .layers
            .iter()
            .map(|l| (l.media_type.clone(), l.digest.clone()))
            .collect()
    };
    let (gzip, events) = h.build(ctx.path(), &dockerfile, |_| {});
    let gzip = gzip.unwrap_or_else(|e| panic!("{e}\n{}", logs(&events)));
    let gzip_layers = layers(&gzip);
    assert_eq!(gzip_layers.len(), 3);

    let (zstd, events) = h.build(ctx.path(), &dockerfile, |r| {
        r.compression = Compression::Zstd;
    });
    let zstd = zstd.unwrap_or_else(|e| panic!("{e}\n{}", logs(&events)));
    assert_eq!(cached_steps(&events), 2, "{}", logs(&events));
    let zstd_layers = layers(&zstd);
    // The base image's layer as it was; the two the build made, zstd.
    assert_eq!(zstd_layers[0], gzip_layers[0]);
    for (media_type, digest) in &zstd_layers[1..] {
        assert_eq!(media_type, media::OCI_LAYER_ZSTD);
        let head = &h.store.read_blob(digest).unwrap()[..4];
        assert_eq!(head, [0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");
    }
    assert_eq!(
        h.config(&zstd).rootfs.diff_ids,
        h.config(&gzip).rootfs.diff_ids,
        "the same layers, encoded differently"
    );
    // Asked again: the conversions are reused, the layers are the same.
    let (again, _) = h.build(ctx.path(), &dockerfile, |r| {
        r.compression = Compression::Zstd;
    });
    assert_eq!(layers(&again.unwrap()), zstd_layers);

    // The level is the encoding's too: gzip at 9 is recompressed.
    let (nine, _) = h.build(ctx.path(), &dockerfile, |r| {
        r.compression_level = Some(9);
    });
    let nine_layers = layers(&nine.unwrap());
    assert_eq!(nine_layers[0], gzip_layers[0]);
    assert_eq!(nine_layers[1].0, media::OCI_LAYER_GZIP);
    assert_ne!(nine_layers[1].1, gzip_layers[1].1);

    // And the media types: Docker's, for the base layer too (same bytes).
    let (docker, _) = h.build(ctx.path(), &dockerfile, |r| r.format = Format::Docker);
    let docker = docker.unwrap();
    assert_eq!(docker.target.media_type, media::DOCKER_MANIFEST);
    let docker_layers = layers(&docker);
    assert_eq!(docker_layers[0].1, gzip_layers[0].1);
    assert!(
        docker_layers
            .iter()
            .all(|(t, _)| t == media::DOCKER_LAYER_GZIP),
        "{docker_layers:?}"
    );

    // An output may force the base layer too.
    let forced = Encoding {
        compression: Compression::Zstd,
        force: true,
        ..Encoding::default()
    };
    let (_, images) =
        kiln_build::encode_image(&h.store, &gzip.target, &gzip.images, &forced).unwrap();
    let forced_layers = h
        .store
        .read_document::<Manifest>(&images[0].manifest)
        .unwrap()
        .value()
        .layers
        .clone();
    assert!(
        forced_layers
            .iter()
            .all(|l| l.media_type == media::OCI_LAYER_ZSTD)
    );
    assert_eq!(
        forced_layers[1].digest, zstd_layers[1].1,
        "one conversion each"
    );
}
