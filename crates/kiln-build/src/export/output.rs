//! `--output`, as `docker buildx build` spells it: where the image goes
//! and how it is encoded on the way.

use std::path::PathBuf;

use kiln_image::Reference;
use kiln_image::media::{Compression, Format};

use super::{Encoding, ExportError};

/// Where an output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputKind {
    /// `type=oci`: an OCI image layout, a directory or a tar.
    Oci { dest: Dest },
    /// `type=docker`: a docker archive (`docker load`).
    Docker { dest: Dest },
    /// `type=local`: the image's files.
    Local { dir: PathBuf },
    /// `type=registry`: pushed to each name.
    Registry,
    /// `type=image`: in the store (with `push=true`, pushed too).
    Image { push: bool },
}

/// A file output's destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    Dir(PathBuf),
    Tar(PathBuf),
    Stdout,
}

/// One `--output`: where, and the encoding attributes it gives (`None`
/// where it says nothing, so the build's own apply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub kind: OutputKind,
    /// `name=a,b` (quoted as a CSV field: `"name=a,b"`): the names an image
    /// or registry output gets when the build has no `-t` (buildx puts the
    /// tags in place of these when there are some). Checked to be
    /// references, kept as written.
    pub names: Vec<String>,
    /// `push-by-digest=true`: pushed without a tag, to each name's
    /// repository by digest.
    pub push_by_digest: bool,
    pub compression: Option<Compression>,
    pub level: Option<i32>,
    pub force_compression: bool,
    /// `oci-mediatypes=true|false`.
    pub oci_media_types: Option<bool>,
    pub rewrite_timestamp: bool,
}

impl Output {
    /// An output of this kind with no attributes.
    pub fn new(kind: OutputKind) -> Output {
        Output {
            kind,
            names: Vec::new(),
            push_by_digest: false,
            compression: None,
            level: None,
            force_compression: false,
            oci_media_types: None,
            rewrite_timestamp: false,
        }
    }

    /// Parses `type=oci,dest=out.tar,compression=zstd` (a bare path means
    /// `type=local,dest=PATH`, `-` a docker archive on stdout, as buildx
    /// takes them). The spec is one CSV record, as buildx reads it, so a
    /// field with commas is quoted whole: `type=image,"name=a:1,b:1"`.
    pub fn parse(spec: &str) -> Result<Output, ExportError> {
        let bad = |reason: String| ExportError::Spec {
            spec: spec.to_owned(),
            reason,
        };
        if !spec.contains('=') {
            return Ok(Output::new(if spec == "-" {
                OutputKind::Docker { dest: Dest::Stdout }
            } else {
                OutputKind::Local { dir: spec.into() }
            }));
        }
        let mut out = Output::new(OutputKind::Registry);
        let mut kind = None;
        let mut dest = None;
        let mut tar = None;
        let mut push = false;
        let flag = |k: &str, v: &str| match v {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(bad(format!("{k} {other:?} is not true or false"))),
        };
        for field in csv_fields(spec).map_err(|reason| bad(reason.into()))? {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| bad(format!("{field:?} is not key=value")))?;
            let (k, v) = (k.trim(), v.trim());
            match k {
                "type" => kind = Some(v.to_string()),
                "dest" => dest = Some(v.to_string()),
                "tar" => tar = Some(flag(k, v)?),
                "push" => push = flag(k, v)?,
                "push-by-digest" => out.push_by_digest = flag(k, v)?,
                "name" => {
                    for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                        Reference::parse(name).map_err(|e| bad(e.to_string()))?;
                        out.names.push(name.to_string());
                    }
                }
                "compression" => {
                    out.compression = Some(match v {
                        "gzip" => Compression::Gzip,
                        "zstd" => Compression::Zstd,
                        "uncompressed" => Compression::None,
                        "estargz" => {
                            return Err(bad(
                                "estargz is not supported (gzip, zstd, uncompressed)".into()
                            ));
                        }
                        other => {
                            return Err(bad(format!(
                                "unknown compression {other:?} (gzip, zstd, uncompressed)"
                            )));
                        }
                    })
                }
                "compression-level" => {
                    out.level = Some(
                        v.parse()
                            .map_err(|_| bad(format!("compression-level {v:?} is not a number")))?,
                    )
                }
                "force-compression" => out.force_compression = flag(k, v)?,
                "oci-mediatypes" => out.oci_media_types = Some(flag(k, v)?),
                "rewrite-timestamp" => out.rewrite_timestamp = flag(k, v)?,
                // Accepted for compatibility with buildx.
                "annotation" => {}
                k if k.starts_with("annotation.") || k.starts_with("annotation[") => {}
                other => return Err(bad(format!("unknown key {other:?}"))),
            }
        }
        let dest_of = |dest: Option<String>, want_tar: bool| -> Result<Dest, ExportError> {
            let d = dest.ok_or_else(|| bad("dest= is required".into()))?;
            Ok(if d == "-" {
                Dest::Stdout
            } else if tar.unwrap_or(want_tar || d.ends_with(".tar")) {
                Dest::Tar(d.into())
            } else {
                Dest::Dir(d.into())
            })
        };
        out.kind = match kind.as_deref() {
            Some("oci") => OutputKind::Oci {
                dest: dest_of(dest, false)?,
            },
            Some("docker") => match dest_of(dest, true)? {
                Dest::Dir(d) => {
                    return Err(bad(format!(
                        "a docker archive is a tar file, not a directory ({})",
                        d.display()
                    )));
                }
                dest => OutputKind::Docker { dest },
            },
            Some("local") => OutputKind::Local {
                dir: dest.ok_or_else(|| bad("dest= is required".into()))?.into(),
            },
            Some("registry") => OutputKind::Registry,
            Some("image") => OutputKind::Image { push },
            Some(other) => {
                return Err(bad(format!(
                    "unknown type {other:?} (oci, docker, local, registry, image)"
                )));
            }
            None => return Err(bad("type= is required".into())),
        };
        Ok(out)
    }

    /// The encoding this output asks for: its own attributes over the
    /// build's (`--compression`, `--docker-media-types`,
    /// `SOURCE_DATE_EPOCH`). A compression without a level takes its
    /// codec's default, not the build's level for another codec.
    pub fn encoding(&self, build: &Encoding) -> Encoding {
        let mut e = *build;
        if let Some(c) = self.compression {
            if c != e.compression {
                e.level = None;
            }
            e.compression = c;
        }
        if self.level.is_some() {
            e.level = self.level;
        }
        e.force |= self.force_compression;
        if let Some(oci) = self.oci_media_types {
            e.format = if oci { Format::Oci } else { Format::Docker };
        }
        e.rewrite_timestamps |= self.rewrite_timestamp;
        e
    }

    /// Whether the output is pushed to a registry.
    pub fn pushes(&self) -> bool {
        matches!(
            self.kind,
            OutputKind::Registry | OutputKind::Image { push: true }
        )
    }
}

/// The fields of one CSV record as Go's `encoding/csv` reads it (what
/// buildx parses `--output` with): a field that starts with `"` runs to
/// the closing `"` (`""` is a quote inside it), commas included; a quote
/// anywhere else is an error.
fn csv_fields(record: &str) -> Result<Vec<String>, &'static str> {
    let mut fields = Vec::new();
    let mut chars = record.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("a quoted field has no closing quote"),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => return Err("a quoted field goes on after its closing quote"),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => {
                        return Err("a quote inside a field (quote the whole field: \"name=a,b\")");
                    }
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(spec: &str) -> OutputKind {
        Output::parse(spec).unwrap().kind
    }

    #[test]
    fn outputs_parse_like_buildx() {
        assert_eq!(
            kind("type=oci,dest=out"),
            OutputKind::Oci {
                dest: Dest::Dir("out".into())
            }
        );
        assert_eq!(
            kind("type=oci,dest=out.tar"),
            OutputKind::Oci {
                dest: Dest::Tar("out.tar".into())
            }
        );
        assert_eq!(
            kind("type=oci,dest=o,tar=true"),
            OutputKind::Oci {
                dest: Dest::Tar("o".into())
            }
        );
        assert_eq!(
            kind("type=docker,dest=i"),
            OutputKind::Docker {
                dest: Dest::Tar("i".into())
            }
        );
        assert_eq!(
            kind("type=local,dest=d"),
            OutputKind::Local { dir: "d".into() }
        );
        assert_eq!(kind("out"), OutputKind::Local { dir: "out".into() });
        assert_eq!(kind("-"), OutputKind::Docker { dest: Dest::Stdout });
        assert_eq!(
            kind("type=image,push=true"),
            OutputKind::Image { push: true }
        );
        assert_eq!(
            kind("type=registry,name=r/x,annotation.org.opencontainers.image.title=x"),
            OutputKind::Registry
        );
        for bad in [
            "type=nope,dest=x",
            "type=oci",
            "type=oci,dest=x,bogus=1",
            "type=docker,dest=d,tar=false",
            "type=oci,dest=o,compression=brotli",
            "type=oci,dest=o,compression=estargz",
            "type=oci,dest=o,compression-level=high",
            "type=oci,dest=o,rewrite-timestamp=yes",
        ] {
            let err = Output::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with(&format!("--output {bad}: ")), "{err}");
        }
    }

    #[test]
    fn names_and_push_by_digest_parse_like_buildx() {
        let o = Output::parse("type=registry,name=localhost:5000/app,push-by-digest=true").unwrap();
        assert_eq!(o.kind, OutputKind::Registry);
        assert_eq!(o.names, ["localhost:5000/app"]);
        assert!(o.push_by_digest && o.pushes());
        let o = Output::parse(
            r#"type=image,"name=r.example/a:1,r.example/b",push=true,push-by-digest=false"#,
        )
        .unwrap();
        assert_eq!(o.kind, OutputKind::Image { push: true });
        assert_eq!(o.names, ["r.example/a:1", "r.example/b"]);
        assert!(!o.push_by_digest);
        // A quote inside a quoted field is doubled, as in CSV.
        assert_eq!(
            csv_fields(r#"a=1,"b=x""y",c"#).unwrap(),
            ["a=1", "b=x\"y", "c"]
        );
        assert_eq!(csv_fields("").unwrap(), [""]);
        assert!(!Output::parse("type=registry").unwrap().push_by_digest);
        for bad in [
            // buildx reads one CSV record: the quotes go around the field.
            r#"type=registry,name="a,b""#,
            r#"type=registry,"name=a,b"#,
            r#"type=registry,"name=a"x"#,
            "type=registry,name=r/UPPER",
            "type=registry,push-by-digest=yes",
        ] {
            let err = Output::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with(&format!("--output {bad}: ")), "{err}");
        }
    }

    #[test]
    fn an_outputs_attributes_override_the_builds() {
        let build = Encoding {
            compression: Compression::Gzip,
            level: Some(9),
            epoch: Some(1_700_000_000),
            ..Encoding::default()
        };
        let o = Output::parse("type=oci,dest=o.tar,compression=zstd,force-compression=true,oci-mediatypes=false,rewrite-timestamp=true").unwrap();
        let e = o.encoding(&build);
        assert_eq!(e.compression, Compression::Zstd);
        assert_eq!(e.level, None, "gzip's level is not zstd's");
        assert!(e.force && e.rewrite_timestamps);
        assert_eq!(e.format, Format::Docker);
        assert_eq!(e.epoch, Some(1_700_000_000));
        let plain = Output::parse("type=registry").unwrap().encoding(&build);
        assert_eq!(plain, build);
        let level = Output::parse("type=registry,compression-level=1").unwrap();
        assert_eq!(level.encoding(&build).level, Some(1));
    }
}
