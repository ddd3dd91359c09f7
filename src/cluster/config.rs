//! Where the cluster is and how to authenticate: `--cluster`, `LEDGER_CLUSTER`, or a profile in
//! `ledger.toml`; credentials from `LEDGER_BASIC_AUTH`, `LEDGER_TOKEN`, or the profile's credentials
//! file. Credentials are held only in memory, never printed (their `Debug` is redacted), and an
//! address that cannot be read is named in messages with its userinfo replaced by `***`.

#![warn(clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Deserialize;
use url::Url;

/// Credentials for the cluster's REST API.
#[derive(Clone)]
pub enum Auth {
    Basic { user: String, password: String },
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Basic { user, .. } => write!(f, "Basic({user}:***)"),
            Auth::Bearer(_) => write!(f, "Bearer(***)"),
        }
    }
}

impl Auth {
    /// `user:password` (Basic) or a bare token (Bearer), as in a credentials file or env var.
    pub fn parse(s: &str) -> anyhow::Result<Auth> {
        let s = s.trim();
        if s.is_empty() {
            bail!("the credentials are empty");
        }
        if let Some(token) = s.strip_prefix("bearer ").or_else(|| s.strip_prefix("Bearer ")) {
            return Ok(Auth::Bearer(token.trim().to_string()));
        }
        match s.split_once(':') {
            Some((user, password)) if !user.is_empty() => {
                Ok(Auth::Basic { user: user.to_string(), password: password.to_string() })
            }
            Some(_) => bail!("the credentials have an empty user name; expected user:password"),
            None => Ok(Auth::Bearer(s.to_string())),
        }
    }

    /// `user:password`, as `LEDGER_BASIC_AUTH` must be: never taken for a token. The message never
    /// holds the value.
    pub fn basic(s: &str) -> anyhow::Result<Auth> {
        match s.trim().split_once(':') {
            Some((user, password)) if !user.is_empty() => {
                Ok(Auth::Basic { user: user.to_string(), password: password.to_string() })
            }
            Some(_) => bail!("the user name is empty; it must be user:password"),
            None => bail!(
                "it must be user:password, and it has no ':' (a Bearer token goes in LEDGER_TOKEN)"
            ),
        }
    }
}

/// An address as messages may show it: any userinfo (`user:password@`) replaced by `***`, whether
/// or not the address parses — everything between the scheme (or the start) and the last `@`.
pub fn redact(s: &str) -> String {
    match s.rsplit_once('@') {
        None => s.to_string(),
        Some((before, after)) => match before.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://***@{after}"),
            None => format!("***@{after}"),
        },
    }
}

/// `ledger.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The profile used when `--profile` is not given.
    pub default: Option<String>,
    #[serde(default)]
    pub clusters: BTreeMap<String, Profile>,
}

/// One cluster in `ledger.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// REST API addresses of the peers (URL or multiaddr); the first is where ledger writes.
    pub peers: Vec<String>,
    /// A file holding `user:password` (Basic) or a token (Bearer). Relative to ledger.toml.
    pub credentials: Option<PathBuf>,
    /// The organisations sharing the cluster: name → the peer each one runs (informational).
    #[serde(default)]
    pub orgs: BTreeMap<String, OrgConfig>,
    /// Find the other members' REST APIs from the cluster's `GET /peers` (as `--discover`).
    #[serde(default)]
    pub discover: bool,
    /// The members' REST port for discovery (as `--rest-port`; default: the first peer's port).
    pub rest_port: Option<u16>,
    /// The organisation this ledger acts for: `ledger add`'s default `--org`.
    pub org: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgConfig {
    pub peer: Option<String>,
    pub contact: Option<String>,
    /// The replication factors the organisation's pins should have, `"MIN..MAX"` (`ledger repin
    /// --org ORG --ensure` sets them). One that is not is refused when the file is read.
    #[serde(default, deserialize_with = "replication")]
    pub replication: Option<String>,
}

/// A `replication` as written, once [`parse_replication`] accepts it.
fn replication<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let r = Option::<String>::deserialize(d)?;
    if let Some(r) = &r {
        parse_replication(r).map_err(serde::de::Error::custom)?;
    }
    Ok(r)
}

/// The resolved cluster: a name for the ledger, the peers' API URLs (first = write peer), auth,
/// and whether the other members' REST APIs are to be discovered (see [`super::discover`]).
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub peers: Vec<Url>,
    pub auth: Option<Auth>,
    pub discover: Discover,
    /// Per organisation of the profile, its `replication` as written (none without a profile).
    pub org_replication: BTreeMap<String, Option<String>>,
    /// The profile's `org` (none without a profile).
    pub org: Option<String>,
    /// Where each of these came from.
    pub origin: Origin,
}

impl Target {
    /// The replication factors the profile gives `org` (`replication = "MIN..MAX"`).
    pub fn org_replication(&self, org: &str) -> anyhow::Result<(i32, i32)> {
        let Some(r) = self.org_replication.get(org) else {
            bail!(
                "the cluster {:?} has no organisation {org:?} in ledger.toml: add \
                 [clusters.{}.orgs.{org}] with replication = \"MIN..MAX\"",
                self.name,
                self.name
            );
        };
        let Some(r) = r else {
            bail!("the organisation {org:?} in ledger.toml has no replication = \"MIN..MAX\"");
        };
        parse_replication(r).map_err(|e| anyhow::anyhow!("ledger.toml, organisation {org:?}: {e}"))
    }
}

/// `MIN..MAX` or `N`: `-1..-1` (every peer), or 1 ≤ MIN ≤ MAX.
pub fn parse_replication(s: &str) -> Result<(i32, i32), String> {
    let (a, b) = s.split_once("..").unwrap_or((s, s));
    let n = |t: &str| {
        t.trim().parse::<i32>().map_err(|_| format!("{s:?} is not MIN..MAX (e.g. 2..3, or -1..-1)"))
    };
    match (n(a)?, n(b)?) {
        (-1, -1) => Ok((-1, -1)),
        (min, max) if min >= 1 && min <= max => Ok((min, max)),
        _ => Err(format!(
            "replication {s:?}: give -1..-1 (every peer) or MIN..MAX with 1 <= MIN <= MAX"
        )),
    }
}

/// Discovery as the profile asks for it (the flags come on top, in [`Sources`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Discover {
    pub on: bool,
    /// The REST port to try on every member's hosts; `None`: the port of the peer asked.
    pub rest_port: Option<u16>,
}

/// Parses a REST API address: an `http(s)://` URL, or ipfs-cluster-ctl's multiaddr form
/// (`/ip4/127.0.0.1/tcp/9094`, `/dns4/host/tcp/9094/https`). Userinfo in a URL becomes Basic auth and
/// is removed from the URL.
pub fn parse_address(s: &str) -> anyhow::Result<(Url, Option<Auth>)> {
    let s = s.trim();
    // Every message names the address with its userinfo hidden.
    let shown = redact(s);
    if s.starts_with('/') {
        let parts: Vec<&str> = s.split('/').skip(1).collect();
        let (host, rest) = match parts.as_slice() {
            ["ip4", h, rest @ ..] | ["dns4", h, rest @ ..] | ["dns", h, rest @ ..] => {
                (h.to_string(), rest)
            }
            ["ip6", h, rest @ ..] => (format!("[{h}]"), rest),
            ["dns6", h, rest @ ..] => (h.to_string(), rest),
            _ => bail!(
                "cannot read the multiaddr {shown:?}: expected /ip4|/ip6|/dns4|/dns6|/dns/HOST/tcp/PORT"
            ),
        };
        let (port, scheme) = match rest {
            ["tcp", port] | ["tcp", port, "http"] => (*port, "http"),
            ["tcp", port, "https"] | ["tcp", port, "tls", "http"] => (*port, "https"),
            _ => bail!("cannot read the multiaddr {shown:?}: expected …/tcp/PORT[/http|/https]"),
        };
        let port: u16 = port
            .parse()
            .map_err(|_| anyhow::anyhow!("cannot read the multiaddr {shown:?}: bad port"))?;
        let url = Url::parse(&format!("{scheme}://{host}:{port}"))
            .with_context(|| format!("cannot read the multiaddr {shown:?}"))?;
        // A host with `@`, `?` or `#` in it would turn into userinfo, a query or a fragment.
        let plain = url.username().is_empty() && url.password().is_none();
        if !plain
            || url.query().is_some()
            || url.fragment().is_some()
            || url.port_or_known_default() != Some(port)
        {
            bail!("cannot read the multiaddr {shown:?}: bad host");
        }
        return Ok((url, None));
    }
    let mut url = Url::parse(s).with_context(|| {
        format!("cannot read the cluster address {shown:?}: give an http(s):// URL or a multiaddr such as /ip4/127.0.0.1/tcp/9094")
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        bail!("the cluster address {shown:?} must be http:// or https://");
    }
    let auth = if url.username().is_empty() {
        None
    } else {
        let user =
            percent_encoding::percent_decode_str(url.username()).decode_utf8_lossy().into_owned();
        let password = percent_encoding::percent_decode_str(url.password().unwrap_or(""))
            .decode_utf8_lossy()
            .into_owned();
        Some(Auth::Basic { user, password })
    };
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok((url, auth))
}

/// Where the cluster comes from, in order: `--cluster`, `LEDGER_CLUSTER`, the profile.
pub struct Sources<'a> {
    pub cluster: Option<&'a str>,
    pub profile: Option<&'a str>,
    pub config: Option<&'a Path>,
    /// Environment lookup (injected for tests).
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// `--discover` and `--rest-port`, over the profile's settings.
    pub discover: Discover,
}

/// Where the resolved cluster's settings came from, for `ledger config check`. It names sources,
/// never credentials.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The configuration file read (none when `--cluster` or `LEDGER_CLUSTER` named the peers).
    pub config: Option<PathBuf>,
    /// That file as it was read, every profile of it.
    pub file: Option<std::sync::Arc<ConfigFile>>,
    /// What named the peers: `--cluster`, `LEDGER_CLUSTER` or `the profile`.
    pub peers: &'static str,
    /// How the profile was chosen: `--profile`, `default`, or `the only cluster` (none without
    /// a profile).
    pub chosen_by: Option<&'static str>,
    /// The credentials' source (`LEDGER_TOKEN`, `LEDGER_BASIC_AUTH`, the file, an address's
    /// userinfo), when there are credentials.
    pub credentials: Option<String>,
    /// The profile's credentials file, when it is the source.
    pub credentials_file: Option<PathBuf>,
    /// Credentials given that a source before them overrides, by source.
    pub overridden: Vec<String>,
}

/// The peers, auth and profile settings as one source gave them, before the environment's
/// credentials are applied.
struct Found {
    name: String,
    peers: Vec<Url>,
    /// Userinfo in the first address that has some.
    auth: Option<(Auth, String)>,
    creds_file: Option<PathBuf>,
    discover: Discover,
    org_replication: BTreeMap<String, Option<String>>,
    org: Option<String>,
    origin: Origin,
}

/// Resolves the cluster and credentials.
pub fn resolve(src: &Sources) -> anyhow::Result<Target> {
    let env_cluster = (src.env)("LEDGER_CLUSTER").filter(|s| !s.trim().is_empty());
    let given = src.cluster.map(|c| (c.to_string(), "--cluster"));
    let mut found = match given.or(env_cluster.map(|c| (c, "LEDGER_CLUSTER"))) {
        Some((list, source)) => from_list(src, &list, source)?,
        None => from_profile(src)?,
    };
    if found.peers.is_empty() {
        bail!("the cluster address is empty");
    }
    let auth = credentials(src, found.auth.take(), found.creds_file.take(), &mut found.origin)?;
    check_discover(found.discover)?;
    Ok(Target {
        name: found.name,
        peers: found.peers,
        auth,
        discover: found.discover,
        org_replication: found.org_replication,
        org: found.org,
        origin: found.origin,
    })
}

/// Parses one address of a list, keeping the first userinfo met as credentials.
fn add_peer(found: &mut Found, address: &str) -> anyhow::Result<()> {
    let (url, a) = parse_address(address)?;
    if let (None, Some(a)) = (&found.auth, a) {
        found.auth = Some((a, format!("the userinfo of {}", redact(address.trim()))));
    }
    found.peers.push(url);
    Ok(())
}

/// The peers of `--cluster` or `LEDGER_CLUSTER` (`source`): a comma-separated list.
fn from_list(src: &Sources, list: &str, source: &'static str) -> anyhow::Result<Found> {
    let mut found = Found {
        name: String::new(),
        peers: Vec::new(),
        auth: None,
        creds_file: None,
        discover: src.discover,
        org_replication: BTreeMap::new(),
        org: None,
        origin: Origin { peers: source, ..Origin::default() },
    };
    for a in list.split(',').filter(|a| !a.trim().is_empty()) {
        add_peer(&mut found, a).context(source)?;
    }
    let Some(first) = found.peers.first() else {
        bail!(
            "{source} names no peer: give http(s)://HOST:PORT URLs or multiaddrs, comma-separated"
        );
    };
    found.name = src.profile.map(str::to_string).unwrap_or_else(|| host_port(first));
    Ok(found)
}

/// Reads `ledger.toml` (or `--config FILE`), refusing what it cannot read; see [`parse_config`].
fn load(config: Option<&Path>) -> anyhow::Result<(PathBuf, ConfigFile)> {
    let path = config.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("ledger.toml"));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && config.is_none() => bail!(
            "no cluster given: pass --cluster http://HOST:9094 (or a multiaddr), set LEDGER_CLUSTER, or write a profile in ledger.toml (see the README)"
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let cfg =
        parse_config(&text).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    Ok((path, cfg))
}

/// Parses the text of `ledger.toml`. A key it does not know, a value of the wrong type or a
/// replication that is not `MIN..MAX` is refused with its line and column. The message never
/// quotes the file (a mistyped key may hold a secret), and userinfo in it is hidden.
pub fn parse_config(text: &str) -> Result<ConfigFile, String> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let message: Vec<String> = e.message().trim().split(' ').map(hide_userinfo).collect();
        let message = message.join(" ");
        match e.span() {
            Some(span) => {
                let before = text.get(..span.start).unwrap_or(text);
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
                format!("line {line}, column {column}: {message}")
            }
            None => message,
        }
    })
}

/// A word of a message with any `user:password@` in it replaced by `***@`.
fn hide_userinfo(word: &str) -> String {
    if word.contains('@') { redact(word) } else { word.to_string() }
}

/// The cluster of a profile in the configuration file.
fn from_profile(src: &Sources) -> anyhow::Result<Found> {
    let (path, cfg) = load(src.config)?;
    let (pname, chosen_by) = match (src.profile, &cfg.default) {
        (Some(p), _) => (p.to_string(), "--profile"),
        (None, Some(p)) => (p.clone(), "default"),
        (None, None) if cfg.clusters.len() == 1 => {
            (cfg.clusters.keys().next().cloned().unwrap_or_default(), "the only cluster")
        }
        (None, None) => {
            bail!("{} has several clusters and no `default`: pass --profile NAME", path.display())
        }
    };
    let Some(profile) = cfg.clusters.get(&pname) else {
        bail!("{} has no cluster named {pname:?}", path.display());
    };
    if profile.peers.is_empty() {
        bail!("the cluster {pname:?} in {} lists no peers", path.display());
    }
    let origin = Origin {
        config: Some(path.clone()),
        peers: "the profile",
        chosen_by: Some(chosen_by),
        ..Origin::default()
    };
    let mut found = Found {
        name: pname.clone(),
        peers: Vec::new(),
        auth: None,
        creds_file: profile.credentials.as_ref().map(|c| {
            if c.is_relative() {
                path.parent().unwrap_or(Path::new(".")).join(c)
            } else {
                c.clone()
            }
        }),
        discover: Discover {
            on: src.discover.on || profile.discover,
            rest_port: src.discover.rest_port.or(profile.rest_port),
        },
        org_replication: profile
            .orgs
            .iter()
            .map(|(o, c)| (o.clone(), c.replication.clone()))
            .collect(),
        org: profile.org.clone(),
        origin,
    };
    for a in &profile.peers {
        add_peer(&mut found, a)
            .with_context(|| format!("the peers of the cluster {pname:?} in {}", path.display()))?;
    }
    found.origin.file = Some(std::sync::Arc::new(cfg));
    Ok(found)
}

/// The credentials: the environment first, then the profile's file, then userinfo in the URL.
/// `origin` is told which was used and which it overrode.
fn credentials(
    src: &Sources,
    from_url: Option<(Auth, String)>,
    file: Option<PathBuf>,
    origin: &mut Origin,
) -> anyhow::Result<Option<Auth>> {
    let token = (src.env)("LEDGER_TOKEN").filter(|t| !t.is_empty());
    let basic = (src.env)("LEDGER_BASIC_AUTH").filter(|t| !t.is_empty());
    // Every source given, in the order of precedence: the first is used.
    let mut given: Vec<String> = Vec::new();
    if token.is_some() {
        given.push("LEDGER_TOKEN".to_string());
    }
    if basic.is_some() {
        given.push("LEDGER_BASIC_AUTH".to_string());
    }
    given.extend(file.as_ref().map(|f| format!("the file {}", f.display())));
    given.extend(from_url.as_ref().map(|(_, from)| from.clone()));
    let auth = if let Some(t) = token {
        Some(Auth::Bearer(t))
    } else if let Some(b) = basic {
        Some(Auth::basic(&b).context("LEDGER_BASIC_AUTH")?)
    } else if let Some(f) = file {
        let auth = read_credentials(&f)?;
        origin.credentials_file = Some(f);
        Some(auth)
    } else {
        from_url.map(|(a, _)| a)
    };
    if !given.is_empty() {
        origin.credentials = Some(given.remove(0));
    }
    origin.overridden = given;
    Ok(auth)
}

/// A REST port is a port (1–65535), and only given with discovery on.
fn check_discover(d: Discover) -> anyhow::Result<()> {
    match d.rest_port {
        Some(0) => bail!("the REST port 0 is not a port: give rest_port from 1 to 65535"),
        Some(port) if !d.on => bail!(
            "a REST port ({port}) is given but discovery is off: --rest-port (or rest_port) applies to --discover (or discover = true in the profile)"
        ),
        _ => Ok(()),
    }
}

/// The credentials in file `f`, with a warning on stderr when other users can read it.
fn read_credentials(f: &Path) -> anyhow::Result<Auth> {
    let text = std::fs::read_to_string(f)
        .with_context(|| format!("cannot read the credentials file {}", f.display()))?;
    if let Some(warning) = exposed(f) {
        eprintln!("ledger: warning: {warning}");
    }
    Auth::parse(&text).with_context(|| format!("in {}", f.display()))
}

/// Why the credentials file `f` is not private, if it is not: other users can read or change it.
pub fn exposed(f: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(f).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "the credentials file {} can be read or changed by other users (mode {mode:03o}): `chmod 600 {}` makes it private",
            f.display(),
            f.display()
        )
    })
}

/// `host:port` of a URL, used as the cluster's name when no profile names it.
pub fn host_port(u: &Url) -> String {
    format!("{}:{}", u.host_str().unwrap_or("?"), u.port_or_known_default().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_is_min_max_or_one_number() {
        assert_eq!(parse_replication("2..3"), Ok((2, 3)));
        assert_eq!(parse_replication("2"), Ok((2, 2)));
        assert_eq!(parse_replication("-1..-1"), Ok((-1, -1)));
        for bad in ["3..1", "0", "0..2", "-1..2", "-2..-2", "a..b", "", "1..", "..2"] {
            assert!(parse_replication(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses() {
        let (u, a) = parse_address("/ip4/127.0.0.1/tcp/9094").unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:9094/");
        assert!(a.is_none());
        let (u, _) = parse_address("/dns4/cluster.example/tcp/443/https").unwrap();
        assert_eq!(u.as_str(), "https://cluster.example/");
        let (u, a) = parse_address("http://admin:s%40cret@10.0.0.1:9094").unwrap();
        assert_eq!(u.as_str(), "http://10.0.0.1:9094/");
        assert!(matches!(a, Some(Auth::Basic { ref password, .. }) if password == "s@cret"));
        assert!(parse_address("ftp://x").is_err());
        assert!(parse_address("/ip4/1.2.3.4/udp/1").is_err());
    }

    #[test]
    fn credentials_never_show_in_debug() {
        let a = Auth::parse("admin:hunter2").unwrap();
        assert!(!format!("{a:?}").contains("hunter2"));
        let t = Auth::parse("eyJhbGciOi.x.y").unwrap();
        assert!(matches!(t, Auth::Bearer(_)));
        assert!(!format!("{t:?}").contains("eyJ"));
    }

    #[test]
    fn profiles_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("ledger.toml");
        std::fs::write(dir.path().join("creds"), "ops:pw\n").unwrap();
        std::fs::write(
            &cfg,
            "default = \"main\"\n[clusters.main]\npeers = [\"http://a:9094\", \"/ip4/10.0.0.2/tcp/9094\"]\ncredentials = \"creds\"\n[clusters.main.orgs.hrdag]\npeer = \"peer0\"\n",
        )
        .unwrap();
        let no_env = |_: &str| None;
        let t = resolve(&Sources {
            cluster: None,
            profile: None,
            config: Some(&cfg),
            env: &no_env,
            discover: Discover::default(),
        })
        .unwrap();
        assert_eq!(t.name, "main");
        assert_eq!(t.peers.len(), 2);
        assert!(matches!(t.auth, Some(Auth::Basic { ref user, .. }) if user == "ops"));
        let env = |k: &str| (k == "LEDGER_TOKEN").then(|| "tok".to_string());
        let t = resolve(&Sources {
            cluster: Some("http://x:1"),
            profile: None,
            config: None,
            env: &env,
            discover: Discover::default(),
        })
        .unwrap();
        assert_eq!(t.name, "x:1");
        assert!(matches!(t.auth, Some(Auth::Bearer(_))));
    }

    #[test]
    fn userinfo_never_shows_in_an_address_error() {
        assert_eq!(redact("http://alice:s3cret@[bad"), "http://***@[bad");
        assert_eq!(redact("alice:s3cret@host:9094"), "***@host:9094");
        assert_eq!(redact("http://host:9094"), "http://host:9094");
        for bad in [
            "http://alice:s3cret@[bad",
            "alice:s3cret@host:9094",
            "http://alice:s3cret@host:99999",
            "ftp://alice:s3cret@host",
            "http://alice:s3/cret@host",
            "http://alice:s3cret@ho st",
            "/ip4/alice:s3cret@1.2.3.4/tcp/1",
        ] {
            let err = format!("{:#}", parse_address(bad).expect_err(bad));
            assert!(!err.contains("s3cret") && !err.contains("cret"), "{bad}: {err}");
            assert!(err.contains("***"), "{bad}: the address is named: {err}");
        }
    }

    #[test]
    fn a_bad_multiaddr_is_named() {
        let err = format!("{:#}", parse_address("/ip4/999.1.1.1/tcp/1").err().unwrap());
        assert!(err.contains("/ip4/999.1.1.1/tcp/1") && err.contains("IPv4"), "{err}");
        let err = format!("{:#}", parse_address("/ip4/1.2.3.4/tcp/99999").err().unwrap());
        assert!(err.contains("/ip4/1.2.3.4/tcp/99999") && err.contains("port"), "{err}");
    }

    /// Resolves with `LEDGER_CLUSTER` (and nothing else) in the environment.
    fn resolve_env(cluster: Option<&str>, env_cluster: &str) -> anyhow::Result<Target> {
        let v = env_cluster.to_string();
        let env = move |k: &str| (k == "LEDGER_CLUSTER").then(|| v.clone());
        resolve(&Sources {
            cluster,
            profile: None,
            config: None,
            env: &env,
            discover: Discover::default(),
        })
    }

    #[test]
    fn an_empty_cluster_list_is_an_error_naming_its_source() {
        for (flag, env, source) in [
            (Some(""), "", "--cluster"),
            (Some(","), "", "--cluster"),
            (Some(" , "), "", "--cluster"),
            (None, ",", "LEDGER_CLUSTER"),
            (None, " ,, ", "LEDGER_CLUSTER"),
        ] {
            let err = format!("{:#}", resolve_env(flag, env).expect_err(source));
            assert!(err.contains(source) && err.contains("no peer"), "{flag:?} {env:?}: {err}");
        }
    }

    #[test]
    fn a_bad_address_names_where_it_came_from() {
        let err = format!("{:#}", resolve_env(Some("http://a:pw1@[x"), "").err().unwrap());
        assert!(err.starts_with("--cluster: ") && !err.contains("pw1"), "{err}");
        let err =
            format!("{:#}", resolve_env(None, "http://ok:1,/ip4/999.1.1.1/tcp/1").err().unwrap());
        assert!(err.starts_with("LEDGER_CLUSTER: ") && err.contains("999.1.1.1"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("ledger.toml");
        std::fs::write(&cfg, "[clusters.lab]\npeers = [\"http://u:pw2@[x\"]\n").unwrap();
        let no_env = |_: &str| None;
        let err = resolve(&Sources {
            cluster: None,
            profile: None,
            config: Some(&cfg),
            env: &no_env,
            discover: Discover::default(),
        })
        .err()
        .unwrap();
        let err = format!("{err:#}");
        assert!(err.contains("\"lab\"") && err.contains("ledger.toml"), "{err}");
        assert!(!err.contains("pw2"), "{err}");
    }

    #[test]
    fn basic_auth_from_the_environment_must_be_user_and_password() {
        let env = |k: &str| (k == "LEDGER_BASIC_AUTH").then(|| "alice".to_string());
        let src = Sources {
            cluster: Some("http://x:1"),
            profile: None,
            config: None,
            env: &env,
            discover: Discover::default(),
        };
        let err = format!("{:#}", resolve(&src).expect_err("alice is not user:password"));
        assert!(err.contains("LEDGER_BASIC_AUTH") && err.contains("user:password"), "{err}");
        assert!(err.contains("LEDGER_TOKEN"), "says where a token goes: {err}");
        assert!(!err.contains("alice"), "the value is not echoed: {err}");
        assert!(Auth::basic(":pw").is_err());
        assert!(
            matches!(Auth::basic("alice:"), Ok(Auth::Basic { ref user, .. }) if user == "alice")
        );
    }

    #[test]
    fn a_credentials_file_others_can_read_is_named_with_the_fix() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("creds");
        std::fs::write(&f, "ops:pw\n").unwrap();
        for (mode, exposed_) in
            [(0o644, true), (0o640, true), (0o604, true), (0o600, false), (0o400, false)]
        {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            let w = exposed(&f);
            assert_eq!(w.is_some(), exposed_, "mode {mode:o}: {w:?}");
            if let Some(w) = w {
                assert!(w.contains(&format!("chmod 600 {}", f.display())), "{w}");
                assert!(w.contains(&format!("{mode:03o}")), "{w}");
            }
        }
    }
}
