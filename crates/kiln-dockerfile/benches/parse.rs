//! Parsing speed on a large Dockerfile (the goal: 10,000 lines in well under
//! 20 ms). Run with `cargo bench -p kiln-dockerfile`.

use std::fmt::Write as _;

fn main() {
    divan::main();
}

/// A 10,000-line Dockerfile shaped like real ones: multi-stage, long RUN
/// lines with continuations and comments, ENV pairs, COPY with flags, heredocs.
fn big_dockerfile(lines: usize) -> String {
    let mut out = String::from("# syntax=docker/dockerfile:1\nARG BASE=debian:bookworm\n");
    let mut stage = 0;
    while out.lines().count() < lines {
        let _ = writeln!(out, "FROM ${{BASE}} AS stage{stage}");
        let _ = writeln!(
            out,
            "ENV PATH=/opt/s{stage}/bin:$PATH LANG=C.UTF-8 \\\n    PIP_NO_CACHE_DIR=1"
        );
        let _ = writeln!(out, "WORKDIR /src/{stage}");
        let _ = writeln!(
            out,
            "RUN --mount=type=cache,target=/var/cache/apt \\\n    apt-get update \\\n    # the build tools\n    && apt-get install -y --no-install-recommends build-essential curl git \\\n    && rm -rf /var/lib/apt/lists/*"
        );
        let _ = writeln!(
            out,
            "COPY --chown=1000:1000 --chmod=0644 requirements-{stage}.txt setup.py ./"
        );
        let _ = writeln!(
            out,
            "RUN <<EOF\nset -e\npip install -r requirements-{stage}.txt\necho done\nEOF"
        );
        let _ = writeln!(
            out,
            "LABEL org.example.stage=\"{stage}\" version=\"1.{stage}\""
        );
        let _ = writeln!(out, "CMD [\"python3\", \"-m\", \"app{stage}\"]\n");
        stage += 1;
    }
    out
}

#[divan::bench]
fn parse_10k_lines(bencher: divan::Bencher) {
    let text = big_dockerfile(10_000);
    bencher.bench(|| kiln_dockerfile::parse(divan::black_box(text.as_bytes())).unwrap());
}

#[divan::bench]
fn parse_and_type_10k_lines(bencher: divan::Bencher) {
    let text = big_dockerfile(10_000);
    bencher.bench(|| {
        let ast = kiln_dockerfile::parse(divan::black_box(text.as_bytes())).unwrap();
        kiln_dockerfile::instructions::parse_dockerfile(&ast).unwrap()
    });
}
