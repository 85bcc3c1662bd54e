//! A minimal HTTP/1.1 client connection: GET requests on one keep-alive TCP connection, and a
//! response reader for `Content-Length`, `chunked` and read-until-close bodies. Just enough for
//! oxcast's playlist answers; no pipelining, no redirects, no compression (none is asked for).

use std::fmt;
use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 << 10;
/// Largest body accepted (a live playlist is a few KiB).
const MAX_BODY: usize = 8 << 20;

#[derive(Debug)]
pub enum Error {
    /// The server closed the connection before a whole response arrived.
    Closed,
    /// A socket error (reset, refused, ...).
    Io(io::Error),
    /// The response was not valid HTTP/1.x as this reader understands it.
    Malformed(&'static str),
}

impl Error {
    /// A short, stable name for counting errors by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Closed => "closed",
            Error::Io(e) => match e.kind() {
                io::ErrorKind::ConnectionReset => "reset",
                io::ErrorKind::ConnectionAborted => "aborted",
                io::ErrorKind::BrokenPipe => "broken_pipe",
                _ => "io",
            },
            Error::Malformed(_) => "malformed",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Closed => write!(f, "connection closed before the response was complete"),
            Error::Io(e) => write!(f, "{e}"),
            Error::Malformed(what) => write!(f, "malformed response: {what}"),
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

/// What the caller needs of a response besides its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// The server will close the connection after this response.
    pub close: bool,
    /// `Retry-After` in whole seconds, when given as a number.
    pub retry_after_s: Option<u64>,
}

/// One keep-alive connection. `body` holds the last response's (de-chunked) body.
pub struct Conn {
    stream: TcpStream,
    host: String,
    buf: Vec<u8>,
    pub body: Vec<u8>,
    req: Vec<u8>,
}

impl Conn {
    pub async fn connect(addr: std::net::SocketAddr, host: &str) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            host: host.to_string(),
            buf: Vec::with_capacity(4096),
            body: Vec::with_capacity(4096),
            req: Vec::with_capacity(256),
        })
    }

    /// Sends `GET target` and reads the whole response; the body is left in `self.body`.
    pub async fn get(&mut self, target: &str) -> Result<Head, Error> {
        self.req.clear();
        self.req.extend_from_slice(b"GET ");
        self.req.extend_from_slice(target.as_bytes());
        self.req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        self.req.extend_from_slice(self.host.as_bytes());
        self.req
            .extend_from_slice(b"\r\nUser-Agent: oxcast-live-fanout\r\nAccept: */*\r\n\r\n");
        self.stream.write_all(&self.req).await?;
        loop {
            let head = self.read_response().await?;
            // 1xx (100 Continue and the like) precede the real answer.
            if !(100..200).contains(&head.status) {
                return Ok(head);
            }
        }
    }

    /// Appends what the socket has to `buf`; `Closed` at end of stream.
    async fn fill(&mut self) -> Result<(), Error> {
        if self.buf.capacity() - self.buf.len() < 2048 {
            self.buf.reserve(8192);
        }
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(Error::Closed);
        }
        Ok(())
    }

    async fn read_response(&mut self) -> Result<Head, Error> {
        // Head.
        let mut scanned = 0;
        let head_end = loop {
            if let Some(i) = find(&self.buf[scanned..], b"\r\n\r\n") {
                break scanned + i + 4;
            }
            scanned = self.buf.len().saturating_sub(3);
            if self.buf.len() > MAX_HEAD {
                return Err(Error::Malformed("response head too large"));
            }
            self.fill().await?;
        };
        let parsed = parse_head(&self.buf[..head_end])?;
        let head = Head {
            status: parsed.status,
            close: parsed.close,
            retry_after_s: parsed.retry_after_s,
        };
        self.body.clear();
        let no_body =
            (100..200).contains(&parsed.status) || parsed.status == 204 || parsed.status == 304;
        let mut pos = head_end;
        if no_body {
            // Nothing follows the head.
        } else if parsed.chunked {
            pos = self.read_chunked(pos).await?;
        } else if let Some(len) = parsed.content_length {
            if len > MAX_BODY {
                return Err(Error::Malformed("body too large"));
            }
            while self.buf.len() < pos + len {
                self.fill().await?;
            }
            self.body.extend_from_slice(&self.buf[pos..pos + len]);
            pos += len;
        } else {
            // No length: the body runs to the end of the connection.
            loop {
                match self.fill().await {
                    Ok(()) => {}
                    Err(Error::Closed) => break,
                    Err(e) => return Err(e),
                }
                if self.buf.len() - pos > MAX_BODY {
                    return Err(Error::Malformed("body too large"));
                }
            }
            self.body.extend_from_slice(&self.buf[pos..]);
            pos = self.buf.len();
            self.consume(pos);
            return Ok(Head {
                close: true,
                ..head
            });
        }
        self.consume(pos);
        Ok(head)
    }

    /// Decodes a chunked body starting at `pos` into `body`; returns the offset after it.
    async fn read_chunked(&mut self, mut pos: usize) -> Result<usize, Error> {
        loop {
            let line_end = self.line_at(pos).await?;
            let size = parse_chunk_size(&self.buf[pos..line_end - 2])?;
            pos = line_end;
            if size == 0 {
                // Trailers, up to an empty line.
                loop {
                    let end = self.line_at(pos).await?;
                    let empty = end - pos == 2;
                    pos = end;
                    if empty {
                        return Ok(pos);
                    }
                }
            }
            if self.body.len() + size > MAX_BODY {
                return Err(Error::Malformed("body too large"));
            }
            while self.buf.len() < pos + size + 2 {
                self.fill().await?;
            }
            self.body.extend_from_slice(&self.buf[pos..pos + size]);
            if &self.buf[pos + size..pos + size + 2] != b"\r\n" {
                return Err(Error::Malformed("chunk not followed by CRLF"));
            }
            pos += size + 2;
        }
    }

    /// The offset just past the CRLF ending the line that starts at `pos`, reading as needed.
    async fn line_at(&mut self, pos: usize) -> Result<usize, Error> {
        let mut scanned = pos;
        loop {
            if let Some(i) = find(&self.buf[scanned..], b"\r\n") {
                return Ok(scanned + i + 2);
            }
            scanned = self.buf.len().saturating_sub(1).max(pos);
            if self.buf.len() - pos > 4096 {
                return Err(Error::Malformed("chunk line too long"));
            }
            self.fill().await?;
        }
    }

    fn consume(&mut self, n: usize) {
        if n >= self.buf.len() {
            self.buf.clear();
        } else {
            self.buf.drain(..n);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[derive(Debug, PartialEq, Eq)]
pub struct ParsedHead {
    pub status: u16,
    pub content_length: Option<usize>,
    pub chunked: bool,
    pub close: bool,
    pub retry_after_s: Option<u64>,
}

/// Parses a response head (status line and headers, ending in an empty line).
pub fn parse_head(head: &[u8]) -> Result<ParsedHead, Error> {
    let text = std::str::from_utf8(head).map_err(|_| Error::Malformed("head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().ok_or(Error::Malformed("no status line"))?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(Error::Malformed("not HTTP/1.x"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or(Error::Malformed("bad status code"))?;
    let mut out = ParsedHead {
        status,
        content_length: None,
        chunked: false,
        // HTTP/1.0 closes unless told otherwise.
        close: version == "HTTP/1.0",
        retry_after_s: None,
    };
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(Error::Malformed("header without a colon"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            out.content_length = Some(
                value
                    .parse()
                    .map_err(|_| Error::Malformed("bad Content-Length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            out.chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',') {
                let t = token.trim();
                if t.eq_ignore_ascii_case("close") {
                    out.close = true;
                } else if t.eq_ignore_ascii_case("keep-alive") {
                    out.close = false;
                }
            }
        } else if name.eq_ignore_ascii_case("retry-after") {
            out.retry_after_s = value.parse().ok();
        }
    }
    Ok(out)
}

fn parse_chunk_size(line: &[u8]) -> Result<usize, Error> {
    let hex = line.split(|&b| b == b';').next().unwrap_or(b"");
    let hex = std::str::from_utf8(hex)
        .map_err(|_| Error::Malformed("bad chunk size"))?
        .trim();
    if hex.is_empty() || hex.len() > 8 {
        return Err(Error::Malformed("bad chunk size"));
    }
    usize::from_str_radix(hex, 16).map_err(|_| Error::Malformed("bad chunk size"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn head_fields() {
        let h = parse_head(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 12\r\nRetry-After: 1\r\n\
              Connection: close\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            h,
            ParsedHead {
                status: 503,
                content_length: Some(12),
                chunked: false,
                close: true,
                retry_after_s: Some(1),
            }
        );
        let h = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap();
        assert!(h.chunked && !h.close && h.content_length.is_none());
        assert!(parse_head(b"ICY 200 OK\r\n\r\n").is_err());
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a").unwrap(), 26);
        assert_eq!(parse_chunk_size(b"0;ext=1").unwrap(), 0);
        assert!(parse_chunk_size(b"zz").is_err());
        assert!(parse_chunk_size(b"").is_err());
    }

    /// A scripted server: answers each request with the next canned response, byte by byte
    /// in small writes so that every split point of the reader is exercised.
    async fn serve(responses: Vec<&'static [u8]>) -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = Vec::new();
            for r in responses {
                // Wait for a whole request head.
                loop {
                    if find(&req, b"\r\n\r\n").is_some() {
                        break;
                    }
                    let mut b = [0u8; 512];
                    let n = s.read(&mut b).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    req.extend_from_slice(&b[..n]);
                }
                req.clear();
                for piece in r.chunks(3) {
                    s.write_all(piece).await.unwrap();
                    s.flush().await.unwrap();
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn keep_alive_lengths_chunks_and_close() {
        let addr = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\nX-T: 1\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Busy\r\nRetry-After: 1\r\nContent-Length: 2\r\n\r\nno",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end",
        ])
        .await;
        let mut c = Conn::connect(addr, "x").await.unwrap();
        let h = c.get("/a").await.unwrap();
        assert_eq!(
            (h.status, h.close, &c.body[..]),
            (200, false, &b"hello"[..])
        );
        let h = c.get("/b").await.unwrap();
        assert_eq!((h.status, &c.body[..]), (200, &b"abcdefg"[..]));
        let h = c.get("/c").await.unwrap();
        assert_eq!(
            (h.status, h.retry_after_s, &c.body[..]),
            (503, Some(1), &b"no"[..])
        );
        let h = c.get("/d").await.unwrap();
        assert_eq!(
            (h.status, h.close, &c.body[..]),
            (200, true, &b"to the end"[..])
        );
        let kind = c.get("/e").await.unwrap_err().kind();
        assert!(["closed", "reset", "broken_pipe"].contains(&kind), "{kind}");
    }
}
