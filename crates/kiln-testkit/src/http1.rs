//! Just enough HTTP/1.1 for the proxy and the token server: message heads
//! and body framing (RFC 9112 §6), read as raw pieces so that a proxy can
//! forward, count and cut them.

use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt};

/// The start line and headers of a request or response.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub(crate) start: String,
    pub(crate) headers: Vec<(String, String)>,
}

impl Head {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn remove(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// `GET` of `GET /v2/ HTTP/1.1`.
    pub(crate) fn method(&self) -> &str {
        self.start.split(' ').next().unwrap_or("")
    }

    /// `/v2/` of `GET /v2/ HTTP/1.1`.
    pub(crate) fn target(&self) -> &str {
        self.start.split(' ').nth(1).unwrap_or("")
    }

    /// `200` of `HTTP/1.1 200 OK`.
    pub(crate) fn status(&self) -> u16 {
        self.start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    pub(crate) fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || self.start.ends_with("HTTP/1.0")
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.start);
        for (n, v) in &self.headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// Reads a message head; `None` on a clean end of stream before it.
pub(crate) async fn read_head<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Option<Head>> {
    let mut start = String::new();
    loop {
        start.clear();
        if r.read_line(&mut start).await? == 0 {
            return Ok(None);
        }
        // RFC 9112 §2.2: ignore empty lines before a request line.
        if !start.trim().is_empty() {
            break;
        }
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(Some(Head {
        start: start.trim_end().to_string(),
        headers,
    }))
}

/// How a body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

pub(crate) fn request_framing(head: &Head) -> Framing {
    if is_chunked(head) {
        Framing::Chunked
    } else {
        match content_length(head) {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }
    }
}

pub(crate) fn response_framing(head: &Head, request_method: &str) -> Framing {
    let status = head.status();
    if request_method == "HEAD" || (100..200).contains(&status) || status == 204 || status == 304 {
        return Framing::None;
    }
    if is_chunked(head) {
        return Framing::Chunked;
    }
    match content_length(head) {
        Some(0) => Framing::None,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    }
}

fn is_chunked(head: &Head) -> bool {
    head.header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
}

fn content_length(head: &Head) -> Option<u64> {
    head.header("content-length").and_then(|v| v.parse().ok())
}

/// Reads a body as raw pieces (chunk framing included), in order.
pub(crate) struct BodyReader {
    framing: Framing,
    remaining: u64,
    done: bool,
}

impl BodyReader {
    pub(crate) fn new(framing: Framing) -> BodyReader {
        BodyReader {
            framing,
            remaining: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            done: framing == Framing::None,
        }
    }

    /// The next piece, `None` at the end of the body.
    pub(crate) async fn next<R: AsyncBufRead + AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
    ) -> io::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        match self.framing {
            Framing::None => Ok(None),
            Framing::Length(_) => {
                let want = self.remaining.min(64 << 10) as usize;
                let mut buf = vec![0; want];
                let n = r.read(&mut buf).await?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                buf.truncate(n);
                self.remaining -= n as u64;
                self.done = self.remaining == 0;
                Ok(Some(buf))
            }
            Framing::UntilClose => {
                let mut buf = vec![0; 64 << 10];
                let n = r.read(&mut buf).await?;
                if n == 0 {
                    self.done = true;
                    return Ok(None);
                }
                buf.truncate(n);
                Ok(Some(buf))
            }
            Framing::Chunked => {
                let mut piece = Vec::new();
                let mut line = String::new();
                if r.read_line(&mut line).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                piece.extend_from_slice(line.as_bytes());
                let size_text = line.trim().split(';').next().unwrap_or("");
                let size = u64::from_str_radix(size_text, 16)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
                if size == 0 {
                    // Trailers, up to an empty line.
                    loop {
                        let mut trailer = String::new();
                        if r.read_line(&mut trailer).await? == 0 {
                            return Err(io::ErrorKind::UnexpectedEof.into());
                        }
                        piece.extend_from_slice(trailer.as_bytes());
                        if trailer.trim().is_empty() {
                            break;
                        }
                    }
                    self.done = true;
                    return Ok(Some(piece));
                }
                let start = piece.len();
                piece.resize(start + size as usize + 2, 0);
                r.read_exact(&mut piece[start..]).await?;
                Ok(Some(piece))
            }
        }
    }
}

/// The whole body (for small bodies: token requests).
pub(crate) async fn read_body<R: AsyncBufRead + AsyncRead + Unpin>(
    r: &mut R,
    framing: Framing,
) -> io::Result<Vec<u8>> {
    let mut reader = BodyReader::new(framing);
    let mut out = Vec::new();
    while let Some(piece) = reader.next(r).await? {
        out.extend(piece);
    }
    if framing == Framing::Chunked {
        out = dechunk(&out);
    }
    Ok(out)
}

fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..eol])
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        rest = &rest[eol + 2..];
        if size == 0 || rest.len() < size {
            break;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[(size + 2).min(rest.len())..];
    }
    out
}

/// A complete response with a body.
pub(crate) fn response(
    status: u16,
    reason: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunked_bodies_round_trip() {
        let raw = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nTrailer: 1\r\n\r\nNEXT".to_vec();
        let mut r = tokio::io::BufReader::new(&raw[..]);
        let mut reader = BodyReader::new(Framing::Chunked);
        let mut pieces = Vec::new();
        while let Some(p) = reader.next(&mut r).await.unwrap() {
            pieces.extend(p);
        }
        assert_eq!(pieces, raw[..raw.len() - 4]);
        assert_eq!(dechunk(&pieces), b"hello world");
    }

    #[tokio::test]
    async fn heads() {
        let raw = b"\r\nGET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
        let mut r = tokio::io::BufReader::new(&raw[..]);
        let head = read_head(&mut r).await.unwrap().unwrap();
        assert_eq!((head.method(), head.target()), ("GET", "/v2/"));
        assert_eq!(request_framing(&head), Framing::Length(3));
        assert_eq!(read_body(&mut r, Framing::Length(3)).await.unwrap(), b"abc");
        assert!(read_head(&mut r).await.unwrap().is_none());
    }
}
