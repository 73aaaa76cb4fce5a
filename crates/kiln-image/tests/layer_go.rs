//! Against Go's archive/tar, which wrote (and reads) nearly every layer in
//! the wild (Docker, BuildKit, containerd): Go reads what `layer::write`
//! writes, and `layer::extract` reads what Go writes. Needs Go and root.

mod layer_support;

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::{Command, Stdio};

use kiln_image::layer::{self, ExtractOptions, Whiteouts, WriteOptions};
use kiln_testkit::need::{Root, Tool, need};
use layer_support::*;

const READER: &str = r#"package main

import (
	"archive/tar"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

func main() {
	tr := tar.NewReader(os.Stdin)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			panic(err)
		}
		n, err := io.Copy(io.Discard, tr)
		if err != nil || n != h.Size {
			panic(fmt.Sprint(h.Name, err, n))
		}
		var xs []string
		for k, v := range h.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr.") {
				xs = append(xs, k[13:]+"="+hex.EncodeToString([]byte(v)))
			}
		}
		sort.Strings(xs)
		fmt.Printf("%s|%c|%d|%o|%d:%d|%d|%s|%d,%d|%s\n", h.Name, h.Typeflag, h.Size, h.Mode,
			h.Uid, h.Gid, h.ModTime.Unix(), h.Linkname, h.Devmajor, h.Devminor, strings.Join(xs, ","))
	}
}
"#;

const WRITER: &str = r#"package main

import (
	"archive/tar"
	"os"
	"strings"
	"time"
)

func main() {
	tw := tar.NewWriter(os.Stdout)
	t := time.Unix(1700000000, 123456789)
	add := func(h *tar.Header, body string) {
		h.ModTime = t
		h.Size = int64(len(body))
		if err := tw.WriteHeader(h); err != nil {
			panic(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			panic(err)
		}
	}
	long := strings.Repeat("long-dir/", 20)
	add(&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0755}, "")
	add(&tar.Header{Name: "etc/hosts", Typeflag: tar.TypeReg, Mode: 0644, Uid: 3000000, Gid: 5,
		PAXRecords: map[string]string{"SCHILY.xattr.user.note": "a\nb"}}, "127.0.0.1 localhost\n")
	add(&tar.Header{Name: "etc/hosts-link", Typeflag: tar.TypeLink, Linkname: "etc/hosts"}, "")
	add(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0755}, "")
	add(&tar.Header{Name: "bin/su", Typeflag: tar.TypeReg, Mode: 04755}, "su")
	add(&tar.Header{Name: "bin/sh", Typeflag: tar.TypeSymlink, Linkname: "/bin/" + long + "busybox"}, "")
	add(&tar.Header{Name: long + "deep.txt", Typeflag: tar.TypeReg, Mode: 0600, Format: tar.FormatPAX}, "deep")
	add(&tar.Header{Name: "caf\u00e9", Typeflag: tar.TypeReg, Mode: 0644}, "unicode")
	add(&tar.Header{Name: "dev/", Typeflag: tar.TypeDir, Mode: 0755}, "")
	add(&tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Mode: 0666, Devmajor: 1, Devminor: 3}, "")
	add(&tar.Header{Name: "dev/fifo", Typeflag: tar.TypeFifo, Mode: 0600}, "")
	add(&tar.Header{Name: "gone/", Typeflag: tar.TypeDir, Mode: 0755}, "")
	add(&tar.Header{Name: "gone/.wh..wh..opq", Typeflag: tar.TypeReg}, "")
	add(&tar.Header{Name: ".wh.removed", Typeflag: tar.TypeReg}, "")
	add(&tar.Header{Name: "gnu-long-" + strings.Repeat("n", 120), Typeflag: tar.TypeReg, Mode: 0644, Format: tar.FormatGNU}, "gnu")
	if err := tw.Close(); err != nil {
		panic(err)
	}
}
"#;

/// `go run program`, fed `input`; its output.
fn go_run(go: &Path, program: &str, input: &[u8]) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let main = tmp.path().join("main.go");
    fs_err::write(&main, program).unwrap();
    let mut child = Command::new(go)
        .arg("run")
        .arg(&main)
        .env("GOCACHE", tmp.path().join("cache"))
        .env("GO111MODULE", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "go: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn go_reads_our_layers() {
    if need(Root).is_none() {
        return;
    }
    let Some(go) = need(Tool::Go) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    rich_tree(&src);
    let mut tar = Vec::new();
    layer::write(&src, &mut tar, &WriteOptions::default()).unwrap();
    let out = go_run(&go, READER, &tar);
    let out = String::from_utf8_lossy(&out).into_owned();
    let lines: Vec<&str> = out.lines().collect();
    let names: Vec<&str> = lines.iter().map(|l| l.split('|').next().unwrap()).collect();
    assert_eq!(names, tar_names(&tar), "Go sees other entries");
    let line = |name: &str| {
        *lines
            .iter()
            .find(|l| l.starts_with(&format!("{name}|")))
            .unwrap()
    };
    assert!(
        line("home/big-ids").contains("|3000000:4000000|"),
        "{}",
        line("home/big-ids")
    );
    assert!(line("usr/bin/suid").contains("|4755|"));
    assert!(
        line("etc/empty").contains("|-86400|"),
        "{}",
        line("etc/empty")
    );
    assert!(line("var/big.bin").contains("|9000000000|"));
    assert!(line("dev/big").contains("|4095,1048575|"));
    // A capability set holding a newline byte survives Go's PAX parser.
    let cap = [
        1, 0, 0, 2, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let want = format!("security.capability={}", hex_of(&cap));
    assert!(
        line("usr/bin/ping").ends_with(&want),
        "{}",
        line("usr/bin/ping")
    );
    assert!(line("etc/hostname").contains(&format!("user.comment={}", hex_of(b"line1\nline2"))));
    assert!(lines.iter().any(|l| l.len() > 300), "long names survive");
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn we_read_go_layers() {
    if need(Root).is_none() {
        return;
    }
    let Some(go) = need(Tool::Go) else {
        return;
    };
    let tar = go_run(&go, WRITER, b"");
    let tmp = tempfile::tempdir().unwrap();
    let long = "long-dir/".repeat(20);

    let flat = tmp.path().join("flat");
    fs_err::create_dir(&flat).unwrap();
    write_file(&flat.join("removed"), b"from a lower layer");
    write_file(&flat.join("gone/old"), b"from a lower layer");
    let stats = layer::extract(&tar[..], &flat, &ExtractOptions::new(Whiteouts::Apply)).unwrap();
    assert_eq!(stats.removed, 2);
    assert!(!flat.join("removed").exists() && !flat.join("gone/old").exists());
    let hosts = fs_err::metadata(flat.join("etc/hosts")).unwrap();
    assert_eq!((hosts.uid(), hosts.gid(), hosts.nlink()), (3_000_000, 5, 2));
    assert_eq!(hosts.mtime(), 1_700_000_000);
    assert_eq!(
        xattr(&flat.join("etc/hosts"), "user.note").as_deref(),
        Some(&b"a\nb"[..])
    );
    assert_eq!(
        fs_err::metadata(flat.join("bin/su")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        fs_err::read_link(flat.join("bin/sh"))
            .unwrap()
            .to_str()
            .unwrap(),
        format!("/bin/{long}busybox")
    );
    assert_eq!(
        fs_err::read(flat.join(format!("{long}deep.txt"))).unwrap(),
        b"deep"
    );
    assert_eq!(fs_err::read(flat.join("caf\u{e9}")).unwrap(), b"unicode");
    assert_eq!(
        fs_err::read(flat.join(format!("gnu-long-{}", "n".repeat(120)))).unwrap(),
        b"gnu"
    );
    let null = fs_err::symlink_metadata(flat.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(
        (
            rustix::fs::major(null.rdev()),
            rustix::fs::minor(null.rdev())
        ),
        (1, 3)
    );
    assert!(
        fs_err::symlink_metadata(flat.join("dev/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );

    let lower = tmp.path().join("lower");
    fs_err::create_dir(&lower).unwrap();
    layer::extract(&tar[..], &lower, &ExtractOptions::new(Whiteouts::Overlay)).unwrap();
    let wh = fs_err::symlink_metadata(lower.join("removed")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(
        xattr(&lower.join("gone"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
}
