//! The REST client: one `reqwest::Client` per peer URL with connect and read timeouts and a user
//! agent, retries with backoff for idempotent requests, and the `/allocations` stream read frame by
//! frame so that the `X-Stream-Error` trailer is seen (docs/cluster-api.md §5).

use std::time::Duration;

use backon::{BackoffBuilder, Retryable};
use bytes::{Buf, BytesMut};
use http_body_util::BodyExt;
use rand::Rng;
use url::Url;

use super::config::Auth;

/// What went wrong talking to a peer. Every message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot reach the cluster at {url}: {source}. Is the peer running and the address right?"
    )]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "the cluster at {url} refused the credentials ({message}): set LEDGER_BASIC_AUTH=user:password or LEDGER_TOKEN=<jwt>, or name a credentials file in the ledger.toml profile"
    )]
    Unauthorized { url: String, message: String },
    #[error("the cluster at {url} answered {status}: {message}")]
    Status { url: String, status: u16, message: String },
    #[error("the cluster at {url} sent something that is not the IPFS Cluster API: {message}")]
    Decode { url: String, message: String },
    #[error("request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

impl Error {
    /// Worth retrying for an idempotent request: connection trouble, 429, 5xx.
    fn retryable(&self) -> bool {
        match self {
            Error::Connect { .. } => true,
            Error::Status { status, .. } => *status == 429 || *status >= 500,
            Error::Http { source, .. } => source.is_timeout() || source.is_request(),
            _ => false,
        }
    }
}

/// Timeouts and retries.
#[derive(Debug, Clone)]
pub struct Settings {
    pub connect_timeout: Duration,
    /// Overall timeout of a non-streaming request.
    pub request_timeout: Duration,
    /// Longest silence while reading a response body (streams included).
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

impl Client {
    pub fn new(base: Url, auth: Option<Auth>, settings: Settings) -> anyhow::Result<Client> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("ledger/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.read_timeout)
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Client { http, base, auth, settings })
    }

    /// A client to the same peer with its own connection pool, for use on another thread's runtime
    /// (pooled connections belong to the runtime that opened them).
    pub fn fresh(&self) -> anyhow::Result<Client> {
        Client::new(self.base.clone(), self.auth.clone(), self.settings.clone())
    }

    /// The peer's URL (never with credentials).
    pub fn base(&self) -> &Url {
        &self.base
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base.as_str().trim_end_matches('/'), path_and_query)
    }

    /// A request with auth attached.
    pub fn request(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
    ) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, self.url(path_and_query));
        match &self.auth {
            None => rb,
            Some(Auth::Basic { user, password }) => rb.basic_auth(user, Some(password)),
            Some(Auth::Bearer(t)) => rb.bearer_auth(t),
        }
    }

    /// Sends an idempotent request, retrying connection errors, 429 and 5xx with exponential backoff
    /// and jitter. Returns the response once its status is below 400 (or a 404, which callers read).
    pub async fn send_idempotent(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        whole_timeout: bool,
    ) -> Result<reqwest::Response, Error> {
        let mut attempt = 0u32;
        let once = || async {
            let mut rb = self.request(method.clone(), path_and_query);
            if whole_timeout {
                rb = rb.timeout(self.settings.request_timeout);
            }
            match rb.send().await {
                Ok(resp) => self.check(resp).await,
                Err(e) => Err(self.transport_error(e)),
            }
        };
        once.retry(self.backoff(true))
            .when(Error::retryable)
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

    fn transport_error(&self, e: reqwest::Error) -> Error {
        let url = self.base.to_string();
        if e.is_connect() {
            Error::Connect { url, source: e }
        } else {
            Error::Http { url, source: e }
        }
    }

    /// Turns error statuses into [`Error`]s, keeping the cluster's own message.
    pub async fn check(&self, resp: reqwest::Response) -> Result<reqwest::Response, Error> {
        let status = resp.status().as_u16();
        if status < 400 || status == 404 {
            return Ok(resp);
        }
        let url = strip_query(resp.url());
        let body = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
            .unwrap_or_else(|| body.trim().chars().take(200).collect());
        if status == 401 {
            return Err(Error::Unauthorized { url, message });
        }
        Err(Error::Status { url, status, message })
    }

    /// `GET /id`: the answering peer's ID and name.
    pub async fn id(&self) -> Result<PeerIdentity, Error> {
        let resp = self.send_idempotent(reqwest::Method::GET, "/id", true).await?;
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

    /// `GET /allocations/{cid}`: the stored pin as this peer's replica has it, or `None` (404).
    pub async fn allocation(&self, cid: &str) -> Result<Option<bytes::Bytes>, Error> {
        let resp = self
            .send_idempotent(reqwest::Method::GET, &format!("/allocations/{cid}"), true)
            .await?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        let url = self.base.to_string();
        resp.bytes().await.map(Some).map_err(|e| Error::Http { url, source: e })
    }

    /// `POST {path_and_query}` with no body: a (re-)pin. Returns the status and the body, whatever the
    /// status; connection failures and 429/503 before the cluster took the request are retried.
    pub async fn post_pin(&self, path_and_query: &str) -> Result<(u16, String), Error> {
        /// A try that is worth another: the cluster was busy, or the connection never opened.
        enum Retry {
            Busy(reqwest::Response),
            Transport(reqwest::Error),
        }
        let once = || async {
            let rb = self
                .request(reqwest::Method::POST, path_and_query)
                .timeout(self.settings.request_timeout);
            match rb.send().await {
                Ok(resp) if matches!(resp.status().as_u16(), 429 | 503) => Err(Retry::Busy(resp)),
                Ok(resp) => Ok(resp),
                Err(e) => Err(Retry::Transport(e)),
            }
        };
        let resp = once
            .retry(self.backoff(false))
            .when(|r| match r {
                Retry::Busy(_) => true,
                Retry::Transport(e) => e.is_connect(),
            })
            .await;
        // Out of retries, a busy answer is the answer.
        let resp = match resp {
            Ok(resp) | Err(Retry::Busy(resp)) => resp,
            Err(Retry::Transport(e)) => return Err(self.transport_error(e)),
        };
        let status = resp.status().as_u16();
        if status == 401 {
            return Err(self.check(resp).await.err().unwrap_or(Error::Unauthorized {
                url: self.base.to_string(),
                message: "unauthorized".into(),
            }));
        }
        let body = resp.text().await.unwrap_or_default();
        Ok((status, body))
    }

    /// `GET /allocations?filter=all` as a stream of lines. Retries happen only before the stream
    /// starts; once items flow, a failure ends the stream (see [`AllocStream::outcome`]).
    pub async fn allocations(&self) -> Result<AllocStream, Error> {
        let resp =
            self.send_idempotent(reqwest::Method::GET, "/allocations?filter=all", false).await?;
        let status = resp.status().as_u16();
        let url = strip_query(resp.url());
        if status == 404 {
            return Err(Error::Decode { url, message: "GET /allocations answered 404".into() });
        }
        let empty = status == 204;
        let resp: http::Response<reqwest::Body> = resp.into();
        Ok(AllocStream {
            body: resp.into_body(),
            buf: BytesMut::with_capacity(256 * 1024),
            ended: empty,
            outcome: if empty { Some(StreamOutcome::Complete) } else { None },
            url,
        })
    }
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

/// How a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamOutcome {
    /// An empty `X-Stream-Error` trailer (or a 204).
    Complete,
    /// The trailer carried an error.
    TrailerError(String),
    /// The body ended without the trailer, or the connection broke, or a read timed out.
    Broken(String),
}

/// The lines of a `GET /allocations` stream.
pub struct AllocStream {
    body: reqwest::Body,
    buf: BytesMut,
    ended: bool,
    outcome: Option<StreamOutcome>,
    url: String,
}

impl AllocStream {
    /// The next NDJSON line (without its newline), or `None` at the end of the stream; then
    /// [`AllocStream::outcome`] says whether the stream was whole.
    pub async fn next_line(&mut self) -> Option<bytes::Bytes> {
        loop {
            if let Some(pos) = memchr(&self.buf) {
                let line = self.buf.split_to(pos + 1).freeze();
                let line = line.slice(..pos);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(line);
            }
            if self.ended {
                if !self.buf.is_empty() && self.outcome.is_none() {
                    // A last line without a newline: the stream was cut inside it.
                    self.outcome =
                        Some(StreamOutcome::Broken("the stream ended inside a line".into()));
                }
                self.buf.clear();
                return None;
            }
            match self.body.frame().await {
                None => {
                    self.ended = true;
                    if self.outcome.is_none() {
                        self.outcome = Some(StreamOutcome::Broken(
                            "the stream ended without its X-Stream-Error trailer".into(),
                        ));
                    }
                }
                Some(Err(e)) => {
                    self.ended = true;
                    let mut msg = e.to_string();
                    let mut src = std::error::Error::source(&e);
                    while let Some(s) = src {
                        msg.push_str(&format!(": {s}"));
                        src = s.source();
                    }
                    self.outcome = Some(StreamOutcome::Broken(msg));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buf.extend_from_slice(data.chunk()),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            let errors: Vec<String> = trailers
                                .get_all("x-stream-error")
                                .iter()
                                .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
                                .filter(|v| !v.is_empty())
                                .collect();
                            let present = trailers.contains_key("x-stream-error");
                            self.outcome = Some(if !present {
                                StreamOutcome::Broken(
                                    "the stream ended without its X-Stream-Error trailer".into(),
                                )
                            } else if errors.is_empty() {
                                StreamOutcome::Complete
                            } else {
                                StreamOutcome::TrailerError(errors.join("; "))
                            });
                        }
                    }
                },
            }
        }
    }

    /// How the stream ended; `None` until [`AllocStream::next_line`] has returned `None`.
    pub fn outcome(&self) -> Option<&StreamOutcome> {
        self.outcome.as_ref()
    }

    pub fn url(&self) -> &str {
        &self.url
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
