//! A small HTTP/1.1 server for the simulator. Written by hand rather than on hyper because the cluster
//! is a Go `net/http` server and the simulator must behave like one where hyper will not: trailers are
//! sent whether or not the client asked for them (`TE: trailers`), a request head over Go's limit
//! (4096 + 4096 bytes) gets Go's raw 431, and a fault can drop a connection in the middle of a stream.
//! Routing and handlers live in `api.rs`; this file only speaks the wire protocol. One route,
//! `POST /add`, gets its body as it arrives instead of whole (an upload can be any size), while
//! its answer streams back, as the cluster's adder reads and answers at once.

use std::future::Future;
use std::pin::Pin as StdPin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;

/// Go's `http.Server` reads at most `MaxHeaderBytes` (the cluster's default 4096) plus 4096 bytes of
/// slack for the request line and headers.
pub const MAX_HEAD_BYTES: usize = 4096 + 4096;

/// One parsed request. The body has been read whole (the cluster ignores it, but it must be
/// consumed), but for `POST /add`, whose body arrives through `body_stream`.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The raw path, before the `?`.
    pub path: String,
    /// The raw query, after the `?` (empty when none).
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body piece by piece, for the one handler that takes it.
    pub body_stream: std::sync::Mutex<Option<BodyRx>>,
}

/// Pieces of a streamed request body; an `Err` when the connection broke or the framing did.
pub type BodyRx = tokio::sync::mpsc::Receiver<Result<Vec<u8>, String>>;
type BodyTx = tokio::sync::mpsc::Sender<Result<Vec<u8>, String>>;

/// Whether this request's body is handed to its handler as it arrives.
fn streams_body(method: &str, target: &str) -> bool {
    method == "POST" && target.split('?').next() == Some("/add")
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// One piece of a streamed body.
pub enum Chunk {
    Data(Vec<u8>),
    /// The end of the stream, with its trailers.
    End(Vec<(String, String)>),
    /// Drop the connection without finishing the chunked body.
    Abort,
}

pub type ChunkStream = StdPin<Box<dyn Stream<Item = Chunk> + Send>>;

pub enum Body {
    Empty,
    Full(Vec<u8>),
    Stream(ChunkStream),
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
    /// Close the connection after this response.
    pub close: bool,
}

impl Response {
    pub fn new(status: u16, body: Body) -> Response {
        Response { status, headers: Vec::new(), body, close: false }
    }

    pub fn header(mut self, k: &str, v: impl Into<String>) -> Response {
        self.headers.push((k.to_string(), v.into()));
        self
    }
}

pub type Handler =
    Arc<dyn Fn(Request) -> StdPin<Box<dyn Future<Output = Option<Response>> + Send>> + Send + Sync>;

/// Serves one connection until the client closes it, an error occurs, or the handler returns `None`
/// (meaning: drop the connection without answering).
pub async fn serve_connection(stream: TcpStream, handler: Handler) {
    let _ = stream.set_nodelay(true);
    let (mut rd, wr) = stream.into_split();
    let mut wr = BufWriter::with_capacity(64 * 1024, wr);
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    loop {
        let Some(head_len) = read_head(&mut rd, &mut buf).await else { return };
        if head_len > MAX_HEAD_BYTES {
            let body = "431 Request Header Fields Too Large";
            let msg = format!(
                "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n{body}"
            );
            refuse(&mut wr, msg.as_bytes()).await;
            return;
        }
        let Some(head) = parse_head(&buf[..head_len]) else {
            refuse(&mut wr, b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request").await;
            return;
        };
        buf.drain(..head_len);
        let get = |n: &str| header(&head.headers, n);
        if get("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            let _ = wr.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
            let _ = wr.flush().await;
        }
        if streams_body(&head.method, &head.target) {
            serve_streaming(head, &mut rd, &mut buf, &mut wr, &handler).await;
            let _ = wr.flush().await;
            let _ = wr.shutdown().await;
            // Go's `closeWriteAndWait`: after the FIN, read what the client still sends for a
            // while, so that closing with unread data (a reset) does not destroy the answer.
            let drain = async {
                let mut tmp = [0u8; 8192];
                while matches!(rd.read(&mut tmp).await, Ok(n) if n > 0) {}
            };
            let _ = tokio::time::timeout(std::time::Duration::from_millis(500), drain).await;
            return;
        }
        let Some(body) = read_body(&mut rd, &mut buf, &head.headers).await else { return };
        let client_close = get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || (head.http10
                && !get("connection").is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")));
        let (path, query) = match head.target.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (head.target.clone(), String::new()),
        };
        let head_only = head.method == "HEAD";
        let http10 = head.http10;
        let req = Request {
            method: head.method,
            path,
            query,
            headers: head.headers,
            body,
            body_stream: std::sync::Mutex::new(None),
        };
        let Some(resp) = handler(req).await else { return };
        let close = client_close || resp.close;
        if write_response(&mut wr, resp, close, http10, head_only).await.is_err() || close {
            let _ = wr.flush().await;
            let _ = wr.shutdown().await;
            return;
        }
    }
}

/// Serves a request whose body streams to its handler, then the connection closes (the adder
/// answers `Connection: close`). The body is read while the answer is written.
async fn serve_streaming<W: tokio::io::AsyncWrite + Unpin>(
    head: Head,
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut Vec<u8>,
    wr: &mut BufWriter<W>,
    handler: &Handler,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let chunked = header(&head.headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let len: usize =
        header(&head.headers, "content-length").and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    let (path, query) = match head.target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (head.target.clone(), String::new()),
    };
    let http10 = head.http10;
    let req = Request {
        method: head.method,
        path,
        query,
        headers: head.headers,
        body: Vec::new(),
        body_stream: std::sync::Mutex::new(Some(rx)),
    };
    let pump = async move {
        if chunked { pump_chunked(rd, buf, tx).await } else { pump_length(rd, buf, len, tx).await }
    };
    let answer = async {
        if let Some(resp) = handler(req).await {
            let _ = write_response(wr, resp, true, http10, false).await;
        }
    };
    tokio::join!(pump, answer);
}

/// Hands on a body of `len` bytes; stops when the handler no longer listens.
async fn pump_length(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut Vec<u8>,
    mut len: usize,
    tx: BodyTx,
) {
    let first = std::mem::take(buf);
    let first = first[..first.len().min(len)].to_vec();
    len -= first.len();
    if !first.is_empty() && tx.send(Ok(first)).await.is_err() {
        return;
    }
    while len > 0 {
        let mut tmp = vec![0u8; len.min(64 * 1024)];
        let n = match rd.read(&mut tmp).await {
            Ok(0) | Err(_) => {
                let _ = tx.send(Err("unexpected EOF".into())).await;
                return;
            }
            Ok(n) => n,
        };
        tmp.truncate(n);
        len -= n;
        if tx.send(Ok(tmp)).await.is_err() {
            return;
        }
    }
}

/// Hands on a chunked body as it arrives (a chunk of any size is never held whole).
async fn pump_chunked(rd: &mut tokio::net::tcp::OwnedReadHalf, buf: &mut Vec<u8>, tx: BodyTx) {
    const CUT: &str = "unexpected EOF";
    loop {
        let Some(mut left) = chunk_size_line(rd, buf).await else {
            let _ = tx.send(Err(CUT.into())).await;
            return;
        };
        if left == 0 {
            return;
        }
        while left > 0 {
            if buf.is_empty() && fill(rd, buf).await.is_none() {
                let _ = tx.send(Err(CUT.into())).await;
                return;
            }
            let n = left.min(buf.len());
            let piece: Vec<u8> = buf.drain(..n).collect();
            left -= n;
            if tx.send(Ok(piece)).await.is_err() {
                return;
            }
        }
        while buf.len() < 2 {
            if fill(rd, buf).await.is_none() {
                let _ = tx.send(Err(CUT.into())).await;
                return;
            }
        }
        buf.drain(..2);
    }
}

/// Reads one chunk-size line; `None` when the connection ends or the line is not hex.
async fn chunk_size_line(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut Vec<u8>,
) -> Option<usize> {
    let line_end = loop {
        if let Some(p) = find(buf, b"\r\n") {
            break p;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return None;
        }
        fill(rd, buf).await?;
    };
    let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
    let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
    buf.drain(..line_end + 2);
    Some(size)
}

/// Reads until `buf` holds a whole request head and returns its length (through the blank line);
/// more than [`MAX_HEAD_BYTES`] when the head is too large, 0 when its request line is malformed,
/// `None` when the client closed the connection first.
async fn read_head(rd: &mut tokio::net::tcp::OwnedReadHalf, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(pos) = find(buf, b"\r\n\r\n") {
            return Some(pos + 4);
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Some(usize::MAX);
        }
        // Go reads the request line first and answers a malformed one (a TLS ClientHello sent
        // to the plain listener, say) at once, without waiting for the rest of a head.
        if let Some(nl) = buf.iter().position(|&b| b == b'\n')
            && !request_line_ok(&buf[..nl])
        {
            return Some(0);
        }
        let mut tmp = [0u8; 8192];
        match rd.read(&mut tmp).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

/// A request head as parsed, before the target is split into path and query.
struct Head {
    method: String,
    target: String,
    http10: bool,
    headers: Vec<(String, String)>,
}

/// Parses a request head (empty when [`read_head`] found a malformed request line); `None` when it
/// does not parse, which Go answers with a raw 400.
fn parse_head(head: &[u8]) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; 96];
    let mut parsed = httparse::Request::new(&mut headers);
    let ok = !head.is_empty() && matches!(parsed.parse(head), Ok(httparse::Status::Complete(_)));
    if !ok || parsed.method.is_none() || parsed.path.is_none() {
        return None;
    }
    Some(Head {
        method: parsed.method.unwrap_or_default().to_string(),
        target: parsed.path.unwrap_or_default().to_string(),
        http10: parsed.version == Some(0),
        headers: parsed
            .headers
            .iter()
            .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
            .collect(),
    })
}

/// Reads the request body, chunked or of `Content-Length` (none: empty); `None` when the connection
/// ends or the chunked framing is broken.
async fn read_body(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut Vec<u8>,
    headers: &[(String, String)],
) -> Option<Vec<u8>> {
    if header(headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        return read_chunked(rd, buf).await;
    }
    let len: usize =
        header(headers, "content-length").and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    while buf.len() < len {
        let mut tmp = vec![0u8; (len - buf.len()).min(64 * 1024)];
        match rd.read(&mut tmp).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
    Some(buf.drain(..len).collect())
}

/// Writes a raw error answer, for a request that cannot be served; the caller then closes.
async fn refuse<W: tokio::io::AsyncWrite + Unpin>(wr: &mut BufWriter<W>, raw: &[u8]) {
    let _ = wr.write_all(raw).await;
    let _ = wr.flush().await;
}

/// The first header called `name` (in any case).
fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

async fn read_chunked(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut Vec<u8>,
) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(p) = find(buf, b"\r\n") {
                break p;
            }
            fill(rd, buf).await?;
        };
        let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // trailers, then an empty line
            loop {
                let end = loop {
                    if let Some(p) = find(buf, b"\r\n") {
                        break p;
                    }
                    fill(rd, buf).await?;
                };
                buf.drain(..end + 2);
                if end == 0 {
                    return Some(body);
                }
            }
        }
        while buf.len() < size + 2 {
            fill(rd, buf).await?;
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

async fn fill(rd: &mut tokio::net::tcp::OwnedReadHalf, buf: &mut Vec<u8>) -> Option<()> {
    let mut tmp = [0u8; 8192];
    match rd.read(&mut tmp).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            Some(())
        }
    }
}

/// Whether `line` (without its `\n`) can start a request as Go's `parseRequestLine` and
/// `ParseHTTPVersion` see it: `METHOD SP TARGET SP HTTP/d.d`. An empty line is left to the full
/// parse.
fn request_line_ok(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return true;
    }
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(_method), Some(_target), Some(proto)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    matches!(proto, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
        if major.is_ascii_digit() && minor.is_ascii_digit())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn write_response<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut BufWriter<W>,
    resp: Response,
    close: bool,
    http10: bool,
    head_only: bool,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Date: {}\r\n", chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT")));
    if close {
        head.push_str("Connection: close\r\n");
    }
    let no_body = resp.status == 204 || resp.status == 304 || (100..200).contains(&resp.status);
    match resp.body {
        Body::Empty | Body::Full(_) if no_body => {
            head.push_str("\r\n");
            wr.write_all(head.as_bytes()).await?;
        }
        Body::Empty => {
            head.push_str("Content-Length: 0\r\n\r\n");
            wr.write_all(head.as_bytes()).await?;
        }
        Body::Full(b) => {
            head.push_str(&format!("Content-Length: {}\r\n\r\n", b.len()));
            wr.write_all(head.as_bytes()).await?;
            if !head_only {
                wr.write_all(&b).await?;
            }
        }
        Body::Stream(mut s) => {
            if http10 {
                head.push_str("\r\n");
            } else {
                head.push_str("Transfer-Encoding: chunked\r\n\r\n");
            }
            wr.write_all(head.as_bytes()).await?;
            wr.flush().await?;
            while let Some(chunk) = s.next().await {
                match chunk {
                    Chunk::Data(d) if d.is_empty() => {}
                    Chunk::Data(d) => {
                        if http10 {
                            wr.write_all(&d).await?;
                        } else {
                            wr.write_all(format!("{:x}\r\n", d.len()).as_bytes()).await?;
                            wr.write_all(&d).await?;
                            wr.write_all(b"\r\n").await?;
                        }
                        if wr.buffer().len() > 32 * 1024 {
                            wr.flush().await?;
                        }
                    }
                    Chunk::End(trailers) => {
                        if !http10 {
                            wr.write_all(b"0\r\n").await?;
                            for (k, v) in trailers {
                                wr.write_all(format!("{k}: {v}\r\n").as_bytes()).await?;
                            }
                            wr.write_all(b"\r\n").await?;
                        }
                        break;
                    }
                    Chunk::Abort => {
                        wr.flush().await?;
                        return Err(std::io::Error::other("stream aborted by a fault"));
                    }
                }
            }
            if http10 {
                wr.flush().await?;
                return Err(std::io::Error::other("HTTP/1.0 streams end by closing"));
            }
        }
    }
    wr.flush().await
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::request_line_ok;

    #[test]
    fn request_lines_as_go_reads_them() {
        assert!(request_line_ok(b"GET /id HTTP/1.1\r"));
        assert!(request_line_ok(b"POST /pins/x?a=b HTTP/1.0"));
        assert!(request_line_ok(b"\r"), "an empty line is left to the full parse");
        assert!(!request_line_ok(b"GET /id\r"));
        assert!(!request_line_ok(b"GET  /id HTTP/1.1\r"), "two spaces: no version");
        assert!(!request_line_ok(b"GET /id HTTP/1.12\r"));
        // The start of a TLS ClientHello up to its first 0x0a byte.
        assert!(!request_line_ok(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03]));
    }
}
