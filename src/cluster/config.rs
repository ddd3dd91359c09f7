//! Where the cluster is and how to authenticate: `--cluster`, `LEDGER_CLUSTER`, or a profile in
//! `ledger.toml`; credentials from `LEDGER_BASIC_AUTH`, `LEDGER_TOKEN`, or the profile's credentials
//! file. Credentials are held only in memory, never printed (their `Debug` is redacted).

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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgConfig {
    pub peer: Option<String>,
    pub contact: Option<String>,
}

/// The resolved cluster: a name for the ledger, the peers' API URLs (first = write peer), auth.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub peers: Vec<Url>,
    pub auth: Option<Auth>,
}

/// Parses a REST API address: an `http(s)://` URL, or ipfs-cluster-ctl's multiaddr form
/// (`/ip4/127.0.0.1/tcp/9094`, `/dns4/host/tcp/9094/https`). Userinfo in a URL becomes Basic auth and
/// is removed from the URL.
pub fn parse_address(s: &str) -> anyhow::Result<(Url, Option<Auth>)> {
    let s = s.trim();
    if s.starts_with('/') {
        let parts: Vec<&str> = s.split('/').skip(1).collect();
        let (host, rest) = match parts.as_slice() {
            ["ip4", h, rest @ ..] | ["dns4", h, rest @ ..] | ["dns", h, rest @ ..] => {
                (h.to_string(), rest)
            }
            ["ip6", h, rest @ ..] => (format!("[{h}]"), rest),
            ["dns6", h, rest @ ..] => (h.to_string(), rest),
            _ => bail!(
                "cannot read the multiaddr {s:?}: expected /ip4|/ip6|/dns4|/dns6|/dns/HOST/tcp/PORT"
            ),
        };
        let (port, scheme) = match rest {
            ["tcp", port] | ["tcp", port, "http"] => (*port, "http"),
            ["tcp", port, "https"] | ["tcp", port, "tls", "http"] => (*port, "https"),
            _ => bail!("cannot read the multiaddr {s:?}: expected …/tcp/PORT[/http|/https]"),
        };
        let port: u16 = port.parse().with_context(|| format!("bad port in {s:?}"))?;
        let url = Url::parse(&format!("{scheme}://{host}:{port}"))?;
        return Ok((url, None));
    }
    let mut url = Url::parse(s).with_context(|| {
        format!("cannot read the cluster address {s:?}: give an http(s):// URL or a multiaddr such as /ip4/127.0.0.1/tcp/9094")
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        bail!("the cluster address {s:?} must be http:// or https://");
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
}

/// Resolves the cluster and credentials.
pub fn resolve(src: &Sources) -> anyhow::Result<Target> {
    let env_cluster = (src.env)("LEDGER_CLUSTER").filter(|s| !s.trim().is_empty());
    let mut peers = Vec::new();
    let mut auth = None;
    let name;
    let mut creds_file = None;
    if let Some(list) = src.cluster.map(str::to_string).or(env_cluster) {
        for a in list.split(',').filter(|a| !a.trim().is_empty()) {
            let (url, a) = parse_address(a)?;
            auth = auth.or(a);
            peers.push(url);
        }
        name = src.profile.map(str::to_string).unwrap_or_else(|| host_port(&peers[0]));
    } else {
        let path =
            src.config.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("ledger.toml"));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && src.config.is_none() => bail!(
                "no cluster given: pass --cluster http://HOST:9094 (or a multiaddr), set LEDGER_CLUSTER, or write a profile in ledger.toml (see the README)"
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let cfg: ConfigFile =
            toml::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))?;
        let pname = match src.profile.map(str::to_string).or(cfg.default.clone()) {
            Some(p) => p,
            None if cfg.clusters.len() == 1 => {
                cfg.clusters.keys().next().cloned().unwrap_or_default()
            }
            None => bail!(
                "{} has several clusters and no `default`: pass --profile NAME",
                path.display()
            ),
        };
        let Some(profile) = cfg.clusters.get(&pname) else {
            bail!("{} has no cluster named {pname:?}", path.display());
        };
        if profile.peers.is_empty() {
            bail!("the cluster {pname:?} in {} lists no peers", path.display());
        }
        for a in &profile.peers {
            let (url, a) = parse_address(a)?;
            auth = auth.or(a);
            peers.push(url);
        }
        creds_file = profile.credentials.as_ref().map(|c| {
            if c.is_relative() {
                path.parent().unwrap_or(Path::new(".")).join(c)
            } else {
                c.clone()
            }
        });
        name = pname;
    }
    if peers.is_empty() {
        bail!("the cluster address is empty");
    }
    // Credentials: env first, then the profile's file, then userinfo in the URL.
    if let Some(t) = (src.env)("LEDGER_TOKEN").filter(|t| !t.is_empty()) {
        auth = Some(Auth::Bearer(t));
    } else if let Some(b) = (src.env)("LEDGER_BASIC_AUTH").filter(|t| !t.is_empty()) {
        auth = Some(Auth::parse(&b).context("LEDGER_BASIC_AUTH must be user:password")?);
    } else if let Some(f) = creds_file {
        let text = std::fs::read_to_string(&f)
            .with_context(|| format!("cannot read the credentials file {}", f.display()))?;
        auth = Some(Auth::parse(&text).with_context(|| format!("in {}", f.display()))?);
    }
    Ok(Target { name, peers, auth })
}

/// `host:port` of a URL, used as the cluster's name when no profile names it.
pub fn host_port(u: &Url) -> String {
    format!("{}:{}", u.host_str().unwrap_or("?"), u.port_or_known_default().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let t =
            resolve(&Sources { cluster: None, profile: None, config: Some(&cfg), env: &no_env })
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
        })
        .unwrap();
        assert_eq!(t.name, "x:1");
        assert!(matches!(t.auth, Some(Auth::Bearer(_))));
    }
}
