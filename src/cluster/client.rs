//! The REST client: one `reqwest::Client` per peer URL with connect and read timeouts and a user
//! agent, retries with backoff for idempotent requests, and the `/allocations` stream read frame by
//! frame so that the `X-Stream-Error` trailer is seen (docs/cluster-api.md §5).
//!
//! `--timeout` bounds every request as a whole, its retries included: a try starts only while the
//! deadline is ahead, and gets what is left of it. A stream gets the same time per complete line
//! (a peer that trickles bytes without ever finishing a line is cut off) and no line may be longer
//! than [`MAX_LINE`].

use std::time::Duration;

use backon::{BackoffBuilder, Retryable};
use bytes::{Buf, BytesMut};
use http_body_util::BodyExt;
use rand::Rng;
use tokio::time::Instant;
use url::Url;

use super::config::Auth;

/// The longest line an `/allocations` stream may send (one pin): 16 MiB. A longer one ends the
/// stream as broken, so a peer sending an endless line cannot fill the memory.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// What went wrong talking to a peer. Every message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot reach the cluster at {url}: {detail}. Is the peer running and the address right?"
    )]
    Connect { url: String, detail: String },
    #[error(
        "the TLS handshake with {url} failed: the port answers plain HTTP, not HTTPS; use http:// for this peer"
    )]
    PlainHttp { url: String },
    #[error(
        "the TLS handshake with {url} failed: {detail}. Is this port HTTPS, and its certificate valid for this name?"
    )]
    Tls { url: String, detail: String },
    #[error(
        "no answer from the cluster at {url} within {} (--timeout): is the peer overloaded or stuck? A slow peer needs a longer --timeout",
        crate::ids::format_duration(*.after)
    )]
    Timeout { url: String, after: Duration },
    #[error(
        "no answer to GET /id from the cluster at {url} within {} (--timeout): is the peer overloaded or stuck? The cluster asks its IPFS daemon (kubo) for /id, so a stopped or busy kubo holds it while the rest of the API answers; check the peer's kubo, or give a longer --timeout",
        crate::ids::format_duration(*.after)
    )]
    IdTimeout { url: String, after: Duration },
    #[error(
        "the cluster at {url} refused the credentials{}: set LEDGER_BASIC_AUTH=user:password or LEDGER_TOKEN=<jwt>, or name a credentials file in the ledger.toml profile",
        .message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default()
    )]
    Unauthorized { url: String, message: Option<String> },
    #[error("the cluster at {url} answered {status}{}", .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Status { url: String, status: u16, message: Option<String> },
    #[error(
        "the cluster at {url} answered {status} with a redirect to {}: ledger does not follow redirects (a redirected POST can come back as a GET that changes nothing, and the credentials would go where the redirect says); give --cluster the address the peer's API listens on",
        .location.as_deref().unwrap_or("no Location")
    )]
    Redirect { url: String, status: u16, location: Option<String> },
    #[error("the cluster at {url} sent something that is not the IPFS Cluster API: {message}")]
    Decode { url: String, message: String },
    #[error("request to {url} failed: {detail}")]
    Http { url: String, detail: String, retry: bool },
}

impl Error {
    /// Worth retrying for an idempotent request: connection trouble, 429, 5xx.
    fn retryable(&self) -> bool {
        match self {
            Error::Connect { .. } => true,
            Error::Status { status, .. } => *status == 429 || *status >= 500,
            Error::Http { retry, .. } => *retry,
            _ => false,
        }
    }
}

/// The causes of `e`, each once: reqwest's own message (which repeats the URL) is left out when
/// there is more to say, and a cause whose text its parent already holds is not repeated.
fn detail(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let text = s.to_string();
        if !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        src = s.source();
    }
    if parts.is_empty() {
        return e.to_string();
    }
    parts.join(": ")
}

/// Whether a rustls error is among the causes of `e` (the TLS handshake failed), looking inside
/// the I/O errors that wrap it too.
fn is_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut src = Some(e);
    while let Some(s) = src {
        if s.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(inner) = s.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref())
            && is_tls(inner)
        {
            return true;
        }
        src = s.source();
    }
    false
}

/// Timeouts and retries.
#[derive(Debug, Clone)]
pub struct Settings {
    pub connect_timeout: Duration,
    /// Longest time a request may take as a whole, its retries included (for a stream: until its
    /// head has arrived).
    pub request_timeout: Duration,
    /// Longest silence while reading a response body, and longest wait for a complete line of a
    /// stream.
    pub read_timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            retries: 4,
            backoff: Duration::from_millis(200),
        }
    }
}

/// A client for one peer's REST API.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    auth: Option<Auth>,
    settings: Settings,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("auth", &self.auth)
            .finish()
    }
}

/// backon's `adjust`: no further try unless it would start before `deadline`.
fn before<E>(deadline: Instant) -> impl FnMut(&E, Option<Duration>) -> Option<Duration> {
    move |_, wait| wait.filter(|w| Instant::now() + *w < deadline)
}

/// How long an https try may wait before [`Client::answers_plain_http`] is asked.
const PLAIN_HTTP_CHECK_AFTER: Duration = Duration::from_secs(1);

impl Client {
    pub fn new(base: Url, auth: Option<Auth>, settings: Settings) -> anyhow::Result<Client> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("ledger/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.read_timeout)
            .pool_max_idle_per_host(64)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Client { http, base, auth, settings })
    }

    /// A client to the same peer with its own connection pool, for use on another thread's runtime
    /// (pooled connections belong to the runtime that opened them).
    pub fn fresh(&self) -> anyhow::Result<Client> {
        Client::new(self.base.clone(), self.auth.clone(), self.settings.clone())
    }

    /// `--timeout`: the longest wait for one request, its retries included.
    pub fn timeout(&self) -> Duration {
        self.settings.request_timeout
    }

    /// The peer's URL (never with credentials).
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The peer's URL with `path_and_query` after its path. Built from the parsed base (only the
    /// path and query are parsed), not from a string parsed whole: that was 2.8% of the
    /// instructions of a `ledger tag` run (reports/BENCHMARKS.md).
    fn url(&self, path_and_query: &str) -> Url {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let mut url = self.base.clone();
        url.set_path(&format!("{}{path}", self.base.path().trim_end_matches('/')));
        url.set_query(query);
        url.set_fragment(None);
        url
    }

    /// A request with auth attached.
    pub fn request(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
    ) -> reqwest::RequestBuilder {
        self.request_on(&self.http, method, path_and_query)
    }

    fn request_on(
        &self,
        http: &reqwest::Client,
        method: reqwest::Method,
        path_and_query: &str,
    ) -> reqwest::RequestBuilder {
        let rb = http.request(method, self.url(path_and_query));
        match &self.auth {
            None => rb,
            Some(Auth::Basic { user, password }) => rb.basic_auth(user, Some(password)),
            Some(Auth::Bearer(t)) => rb.bearer_auth(t),
        }
    }

    /// One try of `rb`, ended at `deadline`: with `whole`, reading the body included; with `check`,
    /// an error status is turned into an [`Error`]. An https try still waiting after a second
    /// checks whether the port speaks plain HTTP (a TLS handshake sent to it may never be answered).
    async fn try_once(
        &self,
        rb: reqwest::RequestBuilder,
        deadline: Instant,
        whole: bool,
        check: bool,
    ) -> Result<reqwest::Response, Error> {
        let rb =
            if whole { rb.timeout(deadline.saturating_duration_since(Instant::now())) } else { rb };
        let attempt = async {
            match rb.send().await {
                Ok(resp) if check => self.check(resp).await,
                Ok(resp) => Ok(resp),
                Err(e) => Err(self.transport_error(e).await),
            }
        };
        let watched = async {
            if self.base.scheme() != "https" {
                return attempt.await;
            }
            tokio::select! {
                r = attempt => r,
                () = self.plain_http_watch() => Err(Error::PlainHttp { url: self.base.to_string() }),
            }
        };
        match tokio::time::timeout_at(deadline, watched).await {
            Ok(r) => r,
            Err(_) => Err(self.timeout_error()),
        }
    }

    /// Returns once the peer is found to answer plain HTTP on its https port; never otherwise.
    async fn plain_http_watch(&self) {
        tokio::time::sleep(PLAIN_HTTP_CHECK_AFTER).await;
        if !self.answers_plain_http().await {
            std::future::pending::<()>().await;
        }
    }

    /// Whether the peer's port answers a plain HTTP request with HTTP (and not with the "plain HTTP
    /// sent to an HTTPS port" 400 that TLS servers give).
    async fn answers_plain_http(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let host = match self.base.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string(),
            None => return false,
        };
        let Some(port) = self.base.port_or_known_default() else { return false };
        let end = Instant::now() + Duration::from_secs(2);
        let Ok(Ok(mut s)) =
            tokio::time::timeout_at(end, tokio::net::TcpStream::connect((host.as_str(), port)))
                .await
        else {
            return false;
        };
        let head = format!("GET /id HTTP/1.0\r\nHost: {host}\r\n\r\n");
        if s.write_all(head.as_bytes()).await.is_err() {
            return false;
        }
        let mut buf = vec![0u8; 1024];
        let mut n = 0;
        while n < buf.len() {
            match tokio::time::timeout_at(end, s.read(&mut buf[n..])).await {
                Ok(Ok(k)) if k > 0 => n += k,
                _ => break,
            }
        }
        let text = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
        let tls_refusal = text.get(9..12) == Some("400") && text.contains("https");
        text.starts_with("http/") && !tls_refusal
    }

    fn timeout_error(&self) -> Error {
        Error::Timeout { url: self.base.to_string(), after: self.settings.request_timeout }
    }

    /// Sends an idempotent request, retrying connection errors, 429 and 5xx with exponential backoff
    /// and jitter while the `--timeout` deadline allows. Returns the response once its status is
    /// below 400 (or a 404, which callers read).
    pub async fn send_idempotent(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        whole_timeout: bool,
    ) -> Result<reqwest::Response, Error> {
        let deadline = Instant::now() + self.settings.request_timeout;
        let mut attempt = 0u32;
        let once = || {
            let rb = self.request(method.clone(), path_and_query);
            self.try_once(rb, deadline, whole_timeout, true)
        };
        once.retry(self.backoff(true))
            .when(Error::retryable)
            .adjust(before(deadline))
            .notify(|e, _| {
                attempt += 1;
                tracing::debug!(%e, attempt, "retrying");
            })
            .await
    }

    /// The waits between tries: `settings.retries` of them, doubling from `settings.backoff`
    /// without a cap. With `jitter` each wait is scaled by a factor drawn uniformly from
    /// [0.5, 1.5), so the mean stays on the doubling. backon's own `with_jitter` adds
    /// U[0, 1) × the wait (a factor in [1, 2)), which would stretch the whole retry window by half;
    /// hence the jitter is applied here on backon's delays instead.
    fn backoff(&self, jitter: bool) -> impl backon::Backoff + use<> {
        backon::ExponentialBuilder::new()
            .with_min_delay(self.settings.backoff)
            .with_factor(2.0)
            .without_max_delay()
            .with_max_times(self.settings.retries as usize)
            .build()
            .map(move |d| {
                if !jitter {
                    return d;
                }
                let f: f64 = rand::rng().random_range(0.5..1.5);
                Duration::try_from_secs_f64(d.as_secs_f64() * f).unwrap_or(d)
            })
    }

    async fn transport_error(&self, e: reqwest::Error) -> Error {
        let url = self.base.to_string();
        if e.is_timeout() && !e.is_connect() {
            self.timeout_error()
        } else if is_tls(&e) {
            if self.answers_plain_http().await {
                Error::PlainHttp { url }
            } else {
                Error::Tls { url, detail: detail(&e) }
            }
        } else if e.is_connect() {
            Error::Connect { url, detail: detail(&e) }
        } else {
            Error::Http { url, detail: detail(&e), retry: e.is_request() }
        }
    }

    /// Turns error statuses and redirects into [`Error`]s, keeping the cluster's own message.
    pub async fn check(&self, resp: reqwest::Response) -> Result<reqwest::Response, Error> {
        let status = resp.status().as_u16();
        if status < 300 || status == 404 {
            return Ok(resp);
        }
        if status < 400 {
            return Err(self.redirect_error(&resp));
        }
        let url = strip_query(resp.url());
        let message = message_of(&resp.text().await.unwrap_or_default());
        if status == 401 {
            return Err(Error::Unauthorized { url, message });
        }
        Err(Error::Status { url, status, message })
    }

    /// A 3xx, which ledger never follows (see [`Error::Redirect`]). A real peer sends one for a path
    /// that ends in `/` (307) or is not clean (301; docs/cluster-api.md §1); a proxy in front of it
    /// may send one to another address. The `Location` is named as an absolute URL without its
    /// query or any credentials in it.
    fn redirect_error(&self, resp: &reqwest::Response) -> Error {
        let location = resp.headers().get(reqwest::header::LOCATION);
        let location =
            location.map(|l| match resp.url().join(&String::from_utf8_lossy(l.as_bytes())) {
                Ok(to) => strip_query(&to),
                Err(_) => "a Location that is not a URL".to_string(),
            });
        Error::Redirect { url: strip_query(resp.url()), status: resp.status().as_u16(), location }
    }

    /// `GET /id`: the answering peer's ID and name.
    pub async fn id(&self) -> Result<PeerIdentity, Error> {
        // ipfs-cluster's /id waits on kubo, one request a second once kubo has failed: the timeout
        // says so (seen on v1.1.6: 14.8 s for /id while /allocations took 1.4 ms).
        let resp =
            self.send_idempotent(reqwest::Method::GET, "/id", true).await.map_err(|e| match e {
                Error::Timeout { url, after } => Error::IdTimeout { url, after },
                e => e,
            })?;
        let url = self.base.to_string();
        if resp.status().as_u16() == 404 {
            return Err(Error::Decode { url, message: "GET /id answered 404".into() });
        }
        let v: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| Error::Decode { url: url.clone(), message: e.to_string() })?;
        let id = v.get("id").and_then(|x| x.as_str()).filter(|s| !s.is_empty());
        let Some(id) = id else {
            return Err(Error::Decode { url, message: "GET /id has no \"id\"".into() });
        };
        Ok(PeerIdentity {
            id: id.to_string(),
            peername: v.get("peername").and_then(|x| x.as_str()).unwrap_or("").to_string(),
        })
    }

    /// `GET /peers`: the cluster's members as this peer knows them (docs/cluster-api.md §4, "GET
    /// /peers"): every peer with a valid `ping` metric and the peer itself, one that could not be
    /// asked with its `error`.
    pub async fn peers(&self) -> Result<Vec<Member>, Error> {
        let resp = self.send_idempotent(reqwest::Method::GET, "/peers", true).await?;
        let url = self.base.to_string();
        let body = resp.bytes().await.map_err(|e| Error::Http {
            url: url.clone(),
            detail: detail(&e),
            retry: false,
        })?;
        let mut members = Vec::new();
        for line in body.split(|b| *b == b'\n').filter(|l| !l.trim_ascii().is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line)
                .map_err(|e| Error::Decode { url: url.clone(), message: e.to_string() })?;
            let Some(id) = v.get("id").and_then(|x| x.as_str()).filter(|s| !s.is_empty()) else {
                return Err(Error::Decode {
                    url,
                    message: "a GET /peers item has no \"id\"".into(),
                });
            };
            let text = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
            let error = Some(text("error")).filter(|e| !e.is_empty());
            // A member that could not be asked is listed with its ID and error only (`addresses`
            // null): docs/cluster-api.md §4, "GET /peers".
            let addresses = v
                .get("addresses")
                .and_then(|x| x.as_array())
                .map(|a| a.iter().filter_map(|x| x.as_str()).map(str::to_string).collect())
                .unwrap_or_default();
            let peername = text("peername");
            members.push(Member { id: id.to_string(), peername, addresses, error });
        }
        Ok(members)
    }

    /// `GET /allocations/{cid}`: the stored pin as this peer's replica has it, or `None` (404).
    pub async fn allocation(&self, cid: &str) -> Result<Option<bytes::Bytes>, Error> {
        let resp = self
            .send_idempotent(reqwest::Method::GET, &format!("/allocations/{cid}"), true)
            .await?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        let url = self.base.to_string();
        let retry = false;
        resp.bytes().await.map(Some).map_err(|e| Error::Http { url, detail: detail(&e), retry })
    }

    /// `POST {path_and_query}` with no body: a (re-)pin. Returns the status and the body, whatever the
    /// status; connection failures and 429/503 before the cluster took the request are retried
    /// while the `--timeout` deadline allows.
    pub async fn post_pin(&self, path_and_query: &str) -> Result<(u16, String), Error> {
        /// A try that is worth another: the cluster was busy, or the connection never opened.
        enum Retry {
            Busy(reqwest::Response),
            Failed(Error),
        }
        let deadline = Instant::now() + self.settings.request_timeout;
        let once = || async {
            let rb = self.request(reqwest::Method::POST, path_and_query);
            match self.try_once(rb, deadline, true, false).await {
                Ok(resp) if matches!(resp.status().as_u16(), 429 | 503) => Err(Retry::Busy(resp)),
                Ok(resp) => Ok(resp),
                Err(e) => Err(Retry::Failed(e)),
            }
        };
        let resp = once
            .retry(self.backoff(false))
            .when(|r| match r {
                Retry::Busy(_) => true,
                Retry::Failed(e) => matches!(e, Error::Connect { .. }),
            })
            .adjust(before(deadline))
            .await;
        // Out of retries, a busy answer is the answer.
        let resp = match resp {
            Ok(resp) | Err(Retry::Busy(resp)) => resp,
            Err(Retry::Failed(e)) => return Err(e),
        };
        let status = resp.status().as_u16();
        if (300..400).contains(&status) {
            return Err(self.redirect_error(&resp));
        }
        if status == 401 {
            return Err(self
                .check(resp)
                .await
                .err()
                .unwrap_or(Error::Unauthorized { url: self.base.to_string(), message: None }));
        }
        let body = resp.text().await.unwrap_or_default();
        Ok((status, body))
    }

    /// `POST /add?{query}` with `form` as its body (docs/cluster-api.md §4 "POST /add"). Never
    /// retried: the body is read once. The upload takes as long as it takes while bytes move; it
    /// fails when `sent` has not grown for `--timeout`, which, once everything is sent, bounds the
    /// wait for the answer to begin. The answer comes as lines, then (on an error only) the
    /// `X-Stream-Error` trailer: a successful add sends none.
    pub async fn add(
        &self,
        query: &str,
        form: reqwest::multipart::Form,
        sent: &super::add::Sent,
    ) -> Result<AllocStream, Error> {
        // No read timeout: reqwest's would also bound the time until the answer's head, which a
        // peer sends only once it has read the whole upload.
        let http = reqwest::Client::builder()
            .user_agent(concat!("ledger/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(self.settings.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Http {
                url: self.base.to_string(),
                detail: detail(&e),
                retry: false,
            })?;
        let path = if query.is_empty() { "/add".to_string() } else { format!("/add?{query}") };
        let send = self.request_on(&http, reqwest::Method::POST, &path).multipart(form).send();
        let stalled = async {
            let (mut last, mut since) = (sent.get(), Instant::now());
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let now = sent.get();
                if now != last {
                    (last, since) = (now, Instant::now());
                } else if since.elapsed() >= self.settings.request_timeout {
                    return;
                }
            }
        };
        let resp = tokio::select! {
            r = send => match r {
                Ok(resp) => self.check(resp).await?,
                Err(e) => return Err(self.transport_error(e).await),
            },
            () = stalled => return Err(self.timeout_error()),
        };
        Ok(self.lines(resp, false))
    }

    /// `GET /allocations?filter=all` as a stream of lines. Retries happen only before the stream
    /// starts; once items flow, a failure ends the stream (see [`AllocStream::outcome`]).
    pub async fn allocations(&self) -> Result<AllocStream, Error> {
        self.stream("/allocations?filter=all").await
    }

    /// `GET /pins?local=true`: this peer's own tracker status of every pin in its replica, one
    /// GlobalPinInfo per line with this peer alone in its `peer_map` (docs/cluster-api.md §4, "GET
    /// /pins"), streamed as `/allocations` is.
    pub async fn local_statuses(&self) -> Result<AllocStream, Error> {
        self.stream("/pins?local=true").await
    }

    /// A streaming `GET` (docs/cluster-api.md §5): 200 and lines, 204 empty; a 404 is not the API.
    async fn stream(&self, path_and_query: &str) -> Result<AllocStream, Error> {
        let resp = self.send_idempotent(reqwest::Method::GET, path_and_query, false).await?;
        let status = resp.status().as_u16();
        let url = strip_query(resp.url());
        if status == 404 {
            let path = path_and_query.split('?').next().unwrap_or(path_and_query);
            return Err(Error::Decode { url, message: format!("GET {path} answered 404") });
        }
        Ok(self.lines(resp, true))
    }

    /// The answer `resp` as a stream of lines; with `trailer`, a stream is whole only once an
    /// empty `X-Stream-Error` trailer has come.
    fn lines(&self, resp: reqwest::Response, trailer: bool) -> AllocStream {
        let url = strip_query(resp.url());
        let empty = resp.status().as_u16() == 204;
        let resp: http::Response<reqwest::Body> = resp.into();
        AllocStream {
            body: resp.into_body(),
            buf: BytesMut::with_capacity(256 * 1024),
            scanned: 0,
            line_timeout: self.settings.read_timeout,
            line_due: None,
            ended: empty,
            outcome: if empty { Some(StreamOutcome::Complete) } else { None },
            url,
            trailer,
        }
    }
}

/// What an error answer says, for a message: the cluster's `message` (or a body that is a JSON
/// string, or text), else the JSON as sent; `None` when it says nothing (empty, `{}`, `null`).
fn message_of(body: &str) -> Option<String> {
    let text = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(v) => match v.get("message").and_then(|m| m.as_str()) {
            Some(m) => m.to_string(),
            None if v.is_null() || v.as_object().is_some_and(|o| o.is_empty()) => String::new(),
            None if v.as_array().is_some_and(|a| a.is_empty()) => String::new(),
            None => v.to_string(),
        },
        Err(_) => body.to_string(),
    };
    let text: String = text.trim().chars().take(200).collect();
    (!text.is_empty()).then_some(text)
}

fn strip_query(u: &Url) -> String {
    let mut u = u.clone();
    u.set_query(None);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// Who answered.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    pub id: String,
    pub peername: String,
}

/// A member of the cluster, as `GET /peers` lists it. Two are equal when their ID, name and error
/// are: the addresses, which only discovery reads, are neither stored nor compared.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Member {
    pub id: String,
    pub peername: String,
    /// Its cluster (libp2p) addresses, each ending `/p2p/<id>`; not its REST API's address,
    /// which the cluster never lists (docs/cluster-api.md §4, "GET /peers").
    #[serde(skip)]
    pub addresses: Vec<String>,
    /// Why the listing peer could not ask it (it is still a member).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PartialEq for Member {
    fn eq(&self, other: &Member) -> bool {
        (&self.id, &self.peername, &self.error) == (&other.id, &other.peername, &other.error)
    }
}

impl Eq for Member {}

/// How a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamOutcome {
    /// An empty `X-Stream-Error` trailer (or a 204).
    Complete,
    /// The trailer carried an error.
    TrailerError(String),
    /// The body ended without the trailer, or the connection broke, or a read timed out, or a line
    /// was too long or too slow.
    Broken(String),
}

/// The lines of a `GET /allocations` stream.
pub struct AllocStream {
    body: reqwest::Body,
    buf: BytesMut,
    /// How much of `buf` is known to hold no newline.
    scanned: usize,
    /// Longest wait for the next complete line.
    line_timeout: Duration,
    /// When the line being waited for is due: set by the first wait for it, so that a call of
    /// [`AllocStream::next_line`] dropped while it waits (a reader's own timeout) changes nothing.
    line_due: Option<Instant>,
    ended: bool,
    outcome: Option<StreamOutcome>,
    url: String,
    /// Whether the stream must end with the `X-Stream-Error` trailer to be whole.
    trailer: bool,
}

impl AllocStream {
    /// The next NDJSON line (without its newline), or `None` at the end of the stream; then
    /// [`AllocStream::outcome`] says whether the stream was whole. A line longer than [`MAX_LINE`],
    /// or one that takes longer than the line timeout to arrive, breaks the stream. Cancel-safe:
    /// dropped while it waits, the next call goes on where it stood.
    pub async fn next_line(&mut self) -> Option<bytes::Bytes> {
        loop {
            if let Some(line) = self.buffered_line() {
                return Some(line);
            }
            if !self.ended && self.buf.len() > MAX_LINE {
                self.stop(format!(
                    "a line longer than {} MiB (the most one pin may take): the peer sent {} bytes without a newline",
                    MAX_LINE >> 20,
                    self.buf.len()
                ));
            }
            if self.ended {
                if !self.buf.is_empty() && self.outcome.is_none() {
                    // A last line without a newline: the stream was cut inside it.
                    self.outcome =
                        Some(StreamOutcome::Broken("the stream ended inside a line".into()));
                }
                self.buf.clear();
                self.scanned = 0;
                return None;
            }
            let due = *self.line_due.get_or_insert_with(|| Instant::now() + self.line_timeout);
            let frame = match tokio::time::timeout_at(due, self.body.frame()).await {
                Ok(frame) => frame,
                Err(_) => {
                    self.stop(format!(
                        "no complete line within {} (--timeout): the peer is stuck or too slow",
                        crate::ids::format_duration(self.line_timeout)
                    ));
                    continue;
                }
            };
            match frame {
                None => {
                    self.ended = true;
                    if self.outcome.is_none() {
                        self.outcome = Some(trailer_outcome(&http::HeaderMap::new(), self.trailer));
                    }
                }
                Some(Err(e)) => {
                    self.ended = true;
                    let (top, more) = (e.to_string(), detail(&e));
                    let msg = if more == top { top } else { format!("{top}: {more}") };
                    self.outcome = Some(StreamOutcome::Broken(msg));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buf.extend_from_slice(data.chunk()),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.outcome = Some(trailer_outcome(&trailers, self.trailer));
                        }
                    }
                },
            }
        }
    }

    /// The next line if it has arrived whole already (no waiting); `None` says nothing about the
    /// end of the stream.
    pub fn buffered_line(&mut self) -> Option<bytes::Bytes> {
        while let Some(pos) = memchr(&self.buf[self.scanned..]).map(|p| p + self.scanned) {
            self.scanned = 0;
            let line = self.buf.split_to(pos + 1).freeze();
            let line = line.slice(..pos);
            if !line.iter().all(u8::is_ascii_whitespace) {
                self.line_due = None;
                return Some(line);
            }
        }
        self.scanned = self.buf.len();
        None
    }

    /// Ends the stream as broken, with why.
    fn stop(&mut self, why: String) {
        self.ended = true;
        self.outcome = Some(StreamOutcome::Broken(why));
        self.buf.clear();
        self.scanned = 0;
    }

    /// How the stream ended; `None` until [`AllocStream::next_line`] has returned `None`.
    pub fn outcome(&self) -> Option<&StreamOutcome> {
        self.outcome.as_ref()
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

/// What the trailers say: complete when `X-Stream-Error` is present and empty, or absent when not
/// `required`.
fn trailer_outcome(trailers: &http::HeaderMap, required: bool) -> StreamOutcome {
    let errors: Vec<String> = trailers
        .get_all("x-stream-error")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if required && !trailers.contains_key("x-stream-error") {
        StreamOutcome::Broken("the stream ended without its X-Stream-Error trailer".into())
    } else if errors.is_empty() {
        StreamOutcome::Complete
    } else {
        StreamOutcome::TrailerError(errors.join("; "))
    }
}

fn memchr(b: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(retries: u32, backoff: Duration) -> Client {
        let settings = Settings { retries, backoff, ..Settings::default() };
        Client::new(Url::parse("http://127.0.0.1:1/").unwrap(), None, settings).unwrap()
    }

    /// Within a microsecond: backon doubles in f32 seconds.
    fn close(a: Duration, b: Duration) -> bool {
        a.abs_diff(b) < Duration::from_micros(1)
    }

    #[test]
    fn a_request_url_is_the_base_then_the_path_and_query_as_written() {
        let cases = [
            ("http://127.0.0.1:9094", "/allocations/QmX"),
            ("http://127.0.0.1:9094/", "/pins/QmX?name=a%20b&meta-org=x%2Fy&mode=recursive"),
            ("https://u@example.test:443/cluster/", "/pins/ipfs/QmX?meta-k=%3F%23%26"),
            ("http://[::1]:9094/a/b", "/allocations?filter=pin&local=true"),
        ];
        for (base, pq) in cases {
            let c = Client::new(Url::parse(base).unwrap(), None, Settings::default()).unwrap();
            let whole = format!("{}{pq}", base.trim_end_matches('/'));
            assert_eq!(c.url(pq), Url::parse(&whole).unwrap(), "{base} + {pq}");
        }
    }

    #[test]
    fn an_error_answer_says_the_clusters_message_or_nothing() {
        let m = |b: &str| message_of(b);
        assert_eq!(
            m(r#"{"code":401,"message":"unauthorized: access denied"}"#).as_deref(),
            Some("unauthorized: access denied")
        );
        assert_eq!(
            m(r#""unauthorized: invalid token""#).as_deref(),
            Some("unauthorized: invalid token")
        );
        assert_eq!(m("  plain text\n").as_deref(), Some("plain text"));
        assert_eq!(m(r#"{"error":"x"}"#).as_deref(), Some(r#"{"error":"x"}"#));
        for nothing in ["", " ", "{}", "[]", "null", r#""""#, r#"{"message":""}"#] {
            assert_eq!(m(nothing), None, "{nothing:?}");
        }
        let e = Error::Unauthorized { url: "http://127.0.0.1:1/".into(), message: None };
        assert!(e.to_string().contains("refused the credentials: set LEDGER_BASIC_AUTH"), "{e}");
    }

    #[test]
    fn backoff_doubles_from_the_base_once_per_retry() {
        let c = client(4, Duration::from_millis(200));
        let waits: Vec<Duration> = c.backoff(false).collect();
        let want = [200, 400, 800, 1600].map(Duration::from_millis);
        assert_eq!(waits.len(), want.len());
        for (got, want) in waits.iter().zip(want) {
            assert!(close(*got, want), "{got:?} vs {want:?}");
        }
        assert_eq!(client(0, Duration::from_millis(200)).backoff(false).count(), 0);
    }

    #[test]
    fn jitter_scales_each_wait_by_a_half_to_one_and_a_half() {
        let c = client(6, Duration::from_millis(100));
        let (mut below, mut above) = (0, 0);
        for _ in 0..200 {
            let waits: Vec<Duration> = c.backoff(true).collect();
            assert_eq!(waits.len(), 6);
            for (k, got) in waits.iter().enumerate() {
                let base = Duration::from_millis(100) * 2u32.pow(k as u32);
                assert!(*got >= base / 2 - Duration::from_micros(1), "{got:?} < {base:?}/2");
                assert!(*got < base * 3 / 2 + Duration::from_micros(1), "{got:?} ≥ 1.5 × {base:?}");
                if *got < base {
                    below += 1;
                } else {
                    above += 1;
                }
            }
        }
        assert!(below > 0 && above > 0, "jitter spreads both ways ({below} below, {above} above)");
    }
}
