//! A streaming reader of a `multipart/form-data` upload, read as Go's `mime/multipart` reads it:
//! parts split at `\r\n--BOUNDARY` (a match followed by anything but `-`, space, tab, CR or LF is
//! data), headers until an empty line, the body handed out piece by piece as it arrives, never
//! held whole. Plus what boxo's `files.NewFileFromPartReader` takes from a part: its file name
//! (`filename` of `Content-Disposition`, query-unescaped, cleaned under `/`) and its kind
//! (`application/x-directory` or `multipart/form-data`: a directory; `application/symlink`: a
//! symlink; anything else a file).
//!
//! Not here: what the parts become (`add.rs`).

pub use super::http::BodyRx;

/// Go's `io.ErrUnexpectedEOF`, which a part read answers when the body ends inside it.
pub const UNEXPECTED_EOF: &str = "unexpected EOF";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    Symlink,
}

#[derive(Debug)]
pub struct PartHead {
    /// The cleaned path, starting with `/`.
    pub name: String,
    pub kind: Kind,
}

pub struct Multipart {
    rx: BodyRx,
    buf: Vec<u8>,
    eof: bool,
    /// `\r\n--BOUNDARY`.
    delim: Vec<u8>,
    started: bool,
    in_part: bool,
    done: bool,
}

/// Go's `ErrNotMultipart` and `ErrMissingBoundary` checks on the request's `Content-Type`: the
/// boundary, or the 400 message.
pub fn boundary(content_type: Option<&str>) -> Result<String, &'static str> {
    const NOT: &str = "request Content-Type isn't multipart/form-data";
    let ct = content_type.filter(|v| !v.is_empty()).ok_or(NOT)?;
    let (media, params) = media_type(ct).ok_or(NOT)?;
    if media != "multipart/form-data" && media != "multipart/mixed" {
        return Err(NOT);
    }
    params
        .into_iter()
        .find(|(k, _)| k == "boundary")
        .map(|(_, v)| v)
        .ok_or("no multipart boundary param in Content-Type")
}

/// `mime.ParseMediaType`, simplified: the lower-cased type and its `key=value` parameters (token or
/// quoted string); `None` when the type is empty or a parameter has no `=`.
pub fn media_type(v: &str) -> Option<(String, Vec<(String, String)>)> {
    let (media, mut rest) = v.split_once(';').map_or((v, ""), |(m, r)| (m, r));
    let media = media.trim().to_ascii_lowercase();
    if media.is_empty() {
        return None;
    }
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        if rest.is_empty() {
            return Some((media, params));
        }
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, ch)) = chars.next() {
                match ch {
                    '\\' => out.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            (out, &q[end?..])
        } else {
            let end = after.find(';').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.push((key, value));
        rest = tail;
    }
}

/// boxo's `fileName`: the `filename` parameter, query-unescaped when it unescapes, cleaned under
/// `/` (Go's `path.Clean("/" + name)`).
pub fn file_name(disposition: Option<&str>) -> String {
    let name = disposition
        .and_then(media_type)
        .and_then(|(_, p)| p.into_iter().find(|(k, _)| k == "filename").map(|(_, v)| v))
        .unwrap_or_default();
    let name = query_unescape(&name).unwrap_or(name);
    clean(&format!("/{name}"))
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte; `None` on a bad escape or bad UTF-8.
fn query_unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Go's `path.Clean` for a rooted path.
pub fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

impl Multipart {
    pub fn new(rx: BodyRx, boundary: &str) -> Multipart {
        Multipart {
            rx,
            buf: Vec::new(),
            eof: false,
            delim: format!("\r\n--{boundary}").into_bytes(),
            started: false,
            in_part: false,
            done: false,
        }
    }

    /// Reads one more piece of the body; false at its end.
    async fn fill(&mut self) -> Result<bool, String> {
        if self.eof {
            return Ok(false);
        }
        match self.rx.recv().await {
            Some(Ok(piece)) => {
                self.buf.extend_from_slice(&piece);
                Ok(true)
            }
            Some(Err(e)) => Err(e),
            None => {
                self.eof = true;
                Ok(false)
            }
        }
    }

    /// The next part's head, `None` after the closing boundary. Skips what is left of the
    /// current part.
    pub async fn next_part(&mut self) -> Result<Option<PartHead>, String> {
        if self.done {
            return Ok(None);
        }
        while self.in_part {
            self.read(usize::MAX).await?;
        }
        if !self.started {
            self.skip_preamble().await?;
            self.started = true;
        }
        // After a delimiter: `--` ends the body; else padding up to the end of the line.
        while self.buf.len() < 2 {
            if !self.fill().await? {
                return Err("multipart: NextPart: EOF".into());
            }
        }
        if self.buf.starts_with(b"--") {
            self.done = true;
            return Ok(None);
        }
        let nl = self.line_end().await?;
        self.buf.drain(..nl + 1);
        self.read_headers().await.map(Some)
    }

    /// The end of the current line (index of its `\n`), reading more as needed.
    async fn line_end(&mut self) -> Result<usize, String> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                return Ok(i);
            }
            if self.buf.len() > 64 * 1024 {
                return Err("multipart: NextPart: bufio: buffer full".into());
            }
            if !self.fill().await? {
                return Err("multipart: NextPart: EOF".into());
            }
        }
    }

    /// Skips to just after the first `--BOUNDARY` at the start of a line.
    async fn skip_preamble(&mut self) -> Result<(), String> {
        let first = self.delim[2..].to_vec();
        loop {
            let nl = self.line_end().await?;
            let line = self.buf[..nl].strip_suffix(b"\r").unwrap_or(&self.buf[..nl]).to_vec();
            if let Some(rest) = line.strip_prefix(first.as_slice())
                && (rest.is_empty()
                    || rest == b"--"
                    || rest.iter().all(|b| *b == b' ' || *b == b'\t'))
            {
                // Leave `--` (the end) or the rest of the line for `next_part`.
                self.buf.drain(..first.len());
                return Ok(());
            }
            self.buf.drain(..nl + 1);
        }
    }

    async fn read_headers(&mut self) -> Result<PartHead, String> {
        let (mut disposition, mut content_type) = (None, None);
        loop {
            let nl = self.line_end().await?;
            let line = String::from_utf8_lossy(&self.buf[..nl]).trim_end_matches('\r').to_string();
            self.buf.drain(..nl + 1);
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                let v = v.trim().to_string();
                if k.trim().eq_ignore_ascii_case("content-disposition") && disposition.is_none() {
                    disposition = Some(v);
                } else if k.trim().eq_ignore_ascii_case("content-type") && content_type.is_none() {
                    content_type = Some(v);
                }
            }
        }
        self.in_part = true;
        let kind = match content_type.as_deref().filter(|v| !v.is_empty()) {
            None => Kind::File,
            Some(ct) => match media_type(ct) {
                None => return Err("mime: no media type".into()),
                Some((m, _)) if m == "multipart/form-data" || m == "application/x-directory" => {
                    Kind::Directory
                }
                Some((m, _)) if m == "application/symlink" => Kind::Symlink,
                Some(_) => Kind::File,
            },
        };
        Ok(PartHead { name: file_name(disposition.as_deref()), kind })
    }

    /// Up to `max` bytes of the current part; `None` at its end.
    pub async fn read(&mut self, max: usize) -> Result<Option<Vec<u8>>, String> {
        if !self.in_part {
            return Ok(None);
        }
        let d = self.delim.len();
        loop {
            let mut from = 0;
            let mut data_end = self.buf.len().saturating_sub(d - 1);
            while let Some(i) = find(&self.buf[from..], &self.delim).map(|i| i + from) {
                match self.buf.get(i + d) {
                    // A delimiter at the very end of the body ends the part, as in Go.
                    None if self.eof => return Ok(self.end_or_data(i, max)),
                    None => {
                        data_end = i;
                        break;
                    }
                    Some(b'-' | b' ' | b'\t' | b'\r' | b'\n') => {
                        return Ok(self.end_or_data(i, max));
                    }
                    Some(_) => from = i + 1,
                }
            }
            if data_end > 0 {
                let n = data_end.min(max);
                return Ok(Some(self.buf.drain(..n).collect()));
            }
            if !self.fill().await? {
                // The body ended inside the part: what is left is data, then Go's error.
                if !self.buf.is_empty() {
                    let n = self.buf.len().min(max);
                    return Ok(Some(self.buf.drain(..n).collect()));
                }
                self.in_part = false;
                return Err(UNEXPECTED_EOF.into());
            }
        }
    }

    /// At a delimiter found at `i`: the data before it, or (none left) the end of the part.
    fn end_or_data(&mut self, i: usize, max: usize) -> Option<Vec<u8>> {
        if i > 0 {
            let n = i.min(max);
            return Some(self.buf.drain(..n).collect());
        }
        self.buf.drain(..self.delim.len());
        self.in_part = false;
        None
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    memchr::memmem::find(hay, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parts(body: &[u8], piece: usize) -> Result<Vec<(String, Kind, Vec<u8>)>, String> {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        for p in body.chunks(piece) {
            tx.send(Ok(p.to_vec())).await.expect("open");
        }
        drop(tx);
        let mut m = Multipart::new(rx, "XyZ");
        let mut out = Vec::new();
        while let Some(h) = m.next_part().await? {
            let mut data = Vec::new();
            while let Some(d) = m.read(7).await? {
                data.extend(d);
            }
            out.push((h.name, h.kind, data));
        }
        Ok(out)
    }

    #[tokio::test]
    async fn parts_split_at_the_boundary_whatever_the_pieces() {
        let body = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a%2Fb+c.txt\"\r\nContent-Type: application/octet-stream\r\n\r\nhello\r\n--XyZnot\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d\"\r\nContent-Type: application/x-directory\r\n\r\n\r\n--XyZ--\r\n";
        for piece in [1, 2, 3, 5, 64, 4096] {
            let got = parts(body, piece).await.expect("parses");
            assert_eq!(got.len(), 2, "piece {piece}");
            assert_eq!(got[0].0, "/a/b c.txt");
            assert_eq!(got[0].1, Kind::File);
            assert_eq!(got[0].2, b"hello\r\n--XyZnot");
            assert_eq!((got[1].0.as_str(), got[1].1), ("/d", Kind::Directory));
        }
    }

    #[tokio::test]
    async fn a_cut_body_is_an_error() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; filename=\"a\"\r\n\r\nhello";
        assert_eq!(parts(body, 3).await.unwrap_err(), UNEXPECTED_EOF);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(Ok(body.to_vec())).await.expect("open");
        drop(tx);
        let mut m = Multipart::new(rx, "XyZ");
        assert!(m.next_part().await.expect("a part").is_some());
        assert_eq!(m.read(100).await, Ok(Some(b"hello".to_vec())), "the data before the cut");
        assert_eq!(m.read(100).await, Err(UNEXPECTED_EOF.into()));
        assert_eq!(m.next_part().await.unwrap_err(), "multipart: NextPart: EOF");
        assert_eq!(parts(b"no boundary here", 4).await.unwrap_err(), "multipart: NextPart: EOF");
    }

    #[test]
    fn content_types() {
        assert_eq!(boundary(Some("multipart/form-data; boundary=\"a b\"")), Ok("a b".into()));
        assert!(boundary(Some("multipart/form-data")).is_err());
        assert!(boundary(Some("text/plain; boundary=x")).is_err());
        assert!(boundary(None).is_err());
        assert_eq!(clean("/a/../b/./c/"), "/b/c");
        assert_eq!(file_name(None), "/");
    }
}
