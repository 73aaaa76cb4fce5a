//! `ADD https://...`: the download, as BuildKit's HTTP source makes it.
//!
//! From `source/http/source.go` (`save`, `getFileName`) and the Dockerfile
//! frontend (`convert_copy.go`):
//!
//! - the file is named after the last segment of the URL's (decoded) path,
//!   or `__unnamed__` when there is none. The frontend always passes that
//!   name to the source, so a `Content-Disposition` header, which the HTTP
//!   source reads only when no name is given, never names a Dockerfile
//!   download;
//! - its mode is 0600 and its owner root (`--chmod`/`--chown` apply when it
//!   is copied);
//! - its modification time is the response's `Last-Modified`, or the Unix
//!   epoch without one;
//! - a status outside 200..400 is "invalid response status N";
//! - with `--checksum=sha256:...` the bytes must have that digest ("digest
//!   mismatch for URL: GOT (expected: WANT)"). BuildKit hashes with sha256
//!   only; kiln also checks sha384 and sha512 pins with their algorithm;
//! - the download is never unpacked unless `--unpack=true` says so.
//!
//! The file goes into a fresh directory under a scratch directory the
//! caller chooses; [`Download`] removes it when dropped.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use sha2::Digest as _;
use tokio::io::AsyncWriteExt;

use super::error::CopyError;

/// The name BuildKit's frontend gives a download whose URL path has no
/// last segment.
const UNNAMED: &str = "__unnamed__";

/// A stalled download fails after this long without a byte (the design's
/// "a build never hangs silently").
const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// Downloads `ADD` URLs. One per build: it keeps the connection pool.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
}

/// A downloaded file, ready to be copied with [`super::SourceItem::downloaded`].
#[derive(Debug)]
pub struct Download {
    dir: tempfile::TempDir,
    name: String,
    digest: String,
    last_modified: Option<SystemTime>,
}

impl Download {
    /// The directory holding the file (removed with the `Download`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file's name, as the destination will get it.
    pub fn file_name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join(&self.name)
    }

    /// `sha256:<hex>` of the content (or the `--checksum` algorithm's
    /// digest when one was given): what a cache key of the step uses.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The server's `Last-Modified`, which is the file's mtime (the epoch
    /// without one).
    pub fn last_modified(&self) -> Option<SystemTime> {
        self.last_modified
    }
}

/// A `--checksum` value: `algorithm:hex`, as go-digest's `Parse` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Checksum {
    algorithm: &'static str,
    hex: String,
}

impl Checksum {
    fn parse(value: &str) -> Result<Checksum, CopyError> {
        let invalid = |reason| CopyError::InvalidChecksum {
            value: value.to_owned(),
            reason,
        };
        let (algorithm, hex) = value
            .split_once(':')
            .filter(|(a, h)| !a.is_empty() && !h.is_empty())
            .ok_or_else(|| invalid("invalid checksum digest format"))?;
        let (algorithm, len) = match algorithm {
            "sha256" => ("sha256", 64),
            "sha384" => ("sha384", 96),
            "sha512" => ("sha512", 128),
            _ => return Err(invalid("unsupported digest algorithm")),
        };
        if hex.len() != len {
            return Err(invalid("invalid checksum digest length"));
        }
        if !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(invalid("invalid checksum digest format"));
        }
        Ok(Checksum {
            algorithm,
            hex: hex.to_owned(),
        })
    }
}

enum Hasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn new(algorithm: &str) -> Hasher {
        match algorithm {
            "sha384" => Hasher::Sha384(sha2::Sha384::new()),
            "sha512" => Hasher::Sha512(sha2::Sha512::new()),
            _ => Hasher::Sha256(sha2::Sha256::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Sha384(h) => format!("sha384:{}", hex::encode(h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

impl Fetcher {
    pub fn new() -> Result<Fetcher, CopyError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(READ_TIMEOUT)
            .dns_resolver(std::sync::Arc::new(kiln_registry::NameResolver::new()))
            .build()
            .map_err(|e| CopyError::Download {
                url: String::new(),
                source: Box::new(e),
            })?;
        Ok(Fetcher { client })
    }

    /// Downloads `url` into a new directory under `scratch`, checking
    /// `checksum` (`sha256:<hex>`) when given. See the module doc for the
    /// name, mode and time the file gets.
    pub async fn fetch(
        &self,
        url: &str,
        checksum: Option<&str>,
        scratch: &Path,
    ) -> Result<Download, CopyError> {
        let shown = redact(url);
        let checksum = checksum.map(Checksum::parse).transpose()?;
        let parsed = url::Url::parse(url).map_err(|e| CopyError::InvalidUrl {
            url: shown.clone(),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(CopyError::InvalidUrl {
                url: shown,
                reason: "only http and https URLs can be downloaded".into(),
            });
        }
        let name = file_name(&parsed);
        let download_err = |e: Box<dyn std::error::Error + Send + Sync>| CopyError::Download {
            url: shown.clone(),
            source: e,
        };

        let response = self
            .client
            .get(parsed)
            .send()
            .await
            .map_err(|e| download_err(Box::new(e)))?;
        let status = response.status().as_u16();
        if !(200..400).contains(&status) {
            return Err(CopyError::HttpStatus { url: shown, status });
        }
        let last_modified = response
            .headers()
            .get(reqwest::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());

        let dir = tempfile::Builder::new()
            .prefix("kiln-add-")
            .tempdir_in(scratch)
            .map_err(|e| io_err("creating a directory in", scratch, e))?;
        let path = dir.path().join(&name);
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .await
            .map_err(|e| io_err("creating", &path, e))?;
        let mut hasher = Hasher::new(checksum.as_ref().map_or("sha256", |c| c.algorithm));
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| download_err(Box::new(e)))?;
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| io_err("writing", &path, e))?;
        }
        file.flush()
            .await
            .map_err(|e| io_err("writing", &path, e))?;
        let file = file.into_std().await;
        let mtime = last_modified.unwrap_or(SystemTime::UNIX_EPOCH);
        file.set_times(
            std::fs::FileTimes::new()
                .set_accessed(mtime)
                .set_modified(mtime),
        )
        .map_err(|e| io_err("setting the times of", &path, e))?;

        let digest = hasher.finish();
        if let Some(want) = checksum {
            let expected = format!("{}:{}", want.algorithm, want.hex);
            if digest != expected {
                return Err(CopyError::ChecksumMismatch {
                    url: shown,
                    expected,
                    actual: digest,
                });
            }
        }
        Ok(Download {
            dir,
            name,
            digest,
            last_modified,
        })
    }
}

/// The frontend's name for a download: `path.Base` of the URL's decoded
/// path, or `__unnamed__`.
fn file_name(url: &url::Url) -> String {
    let decoded = percent_decode(url.path());
    let base = decoded
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    match base {
        "" | "." | ".." => UNNAMED.to_owned(),
        b => b.to_owned(),
    }
}

/// `%XX` decoding of a URL path, as Go's `url.URL.Path` holds it.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL with its password hidden, for messages (BuildKit's
/// `urlutil.RedactCredentials`).
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("xxxxx"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> CopyError {
    CopyError::Io {
        op,
        root: path.to_path_buf(),
        path: "/".into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_url_path() {
        let name = |u: &str| file_name(&url::Url::parse(u).unwrap());
        assert_eq!(name("http://h/a/b.tar.gz"), "b.tar.gz");
        assert_eq!(name("http://h/a/b.tar.gz?x=1#f"), "b.tar.gz");
        assert_eq!(name("http://h/dir/"), "dir");
        assert_eq!(name("http://h/"), "__unnamed__");
        assert_eq!(name("http://h"), "__unnamed__");
        assert_eq!(name("http://h/a%20b.txt"), "a b.txt");
    }

    #[test]
    fn checksums_parse_as_go_digest_does() {
        let hex64 = "a".repeat(64);
        assert!(Checksum::parse(&format!("sha256:{hex64}")).is_ok());
        let err = |v: &str| Checksum::parse(v).unwrap_err().to_string();
        assert!(err("sha256").contains("invalid checksum digest format"));
        assert!(err("md5:abc").contains("unsupported digest algorithm"));
        assert!(err("sha256:abc").contains("invalid checksum digest length"));
        assert!(err(&format!("sha256:{}", "A".repeat(64))).contains("format"));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("https://u:secret@h/x"), "https://u:xxxxx@h/x");
        assert_eq!(redact("https://h/x"), "https://h/x");
    }
}
