//! `ledger config check`: the resolved profile with where each part came from and never the
//! credentials; unknown keys and bad values refused with their line; a credentials file others can
//! read warned about. Every address is a port nobody listens on: nothing is sent.

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use crate::util::{Out, ledger};

const USER: &str = "opsuser7";
const PASSWORD: &str = "pw-s3cret-91";

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    /// A directory holding `ledger.toml` (`toml`) and a private credentials file `creds`.
    fn new(toml: &str) -> Dir {
        let dir = Dir { dir: tempfile::tempdir().unwrap() };
        std::fs::write(dir.path("ledger.toml"), toml).unwrap();
        std::fs::write(dir.path("creds"), format!("{USER}:{PASSWORD}\n")).unwrap();
        dir.chmod("creds", 0o600);
        dir
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn chmod(&self, name: &str, mode: u32) {
        std::fs::set_permissions(self.path(name), std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn run(&self, env: &[(&str, &str)], args: &[&str]) -> Out {
        let mut cmd = ledger();
        cmd.current_dir(self.dir.path()).timeout(Duration::from_secs(30));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out: Out = cmd.args(args).output().unwrap().into();
        assert!(!out.stderr.contains("panicked"), "{out:?}");
        for secret in [USER, PASSWORD, "tok-s3cret-55"] {
            assert!(!out.all().contains(secret), "{secret} is shown: {out:?}");
        }
        assert!(!self.path("ledger.db").exists(), "a check creates no ledger");
        out
    }
}

const TWO_PROFILES: &str = r#"default = "shared"

[clusters.shared]
peers = ["http://127.0.0.1:1", "/ip4/127.0.0.1/tcp/2", "http://localhost:3"]
credentials = "creds"
discover = true
rest_port = 9094
org = "hrdag"

[clusters.shared.orgs.hrdag]
peer = "peer0"
replication = "2..3"

[clusters.shared.orgs.memorial]
contact = "ops@memorial.example"

[clusters.lab]
peers = ["http://127.0.0.1:4"]
"#;

#[test]
fn config_check_prints_the_resolved_profile_and_where_each_part_came_from() {
    let d = Dir::new(TWO_PROFILES);
    let out = d.run(&[], &["config", "check", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let r = out.json();
    assert_eq!(r["config"], "ledger.toml", "{r}");
    assert_eq!(r["cluster"], "shared");
    assert_eq!(r["profile"], serde_json::json!({ "name": "shared", "chosen_by": "default" }));
    assert_eq!(r["peers_from"], "the profile");
    let peers: Vec<(&str, bool)> = r["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["url"].as_str().unwrap(), p["writes"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        peers,
        [
            ("http://127.0.0.1:1/", true),
            ("http://127.0.0.1:2/", false),
            ("http://localhost:3/", false)
        ]
    );
    assert_eq!(r["discover"], serde_json::json!({ "on": true, "rest_port": 9094 }));
    // The file as ledger.toml names it, beside it (the working directory here).
    assert_eq!(
        r["credentials"],
        serde_json::json!({ "kind": "basic", "from": "the file creds", "overridden": [] })
    );
    assert_eq!(r["org"], "hrdag");
    assert_eq!(
        r["orgs"]["hrdag"],
        serde_json::json!({ "peer": "peer0", "contact": null, "replication": "2..3" })
    );
    assert_eq!(r["orgs"]["memorial"]["contact"], "ops@memorial.example");
    assert_eq!(r["other_profiles"], serde_json::json!(["lab"]));
    assert_eq!(r["warnings"], serde_json::json!([]));

    let out = d.run(&[], &["config", "check"]);
    assert_eq!(out.code, 0, "{out:?}");
    let first = out.stdout.lines().find(|l| l.contains("127.0.0.1:1")).unwrap();
    assert!(first.contains("takes the writes"), "{}", out.stdout);
    assert_eq!(out.stdout.matches("takes the writes").count(), 1, "{}", out.stdout);
    for line in [
        "profile         shared (chosen by default)",
        "credentials     Basic (user:password) from the file",
        "discover        on",
        "  hrdag: peer peer0, replication 2..3",
        "other profiles  lab",
    ] {
        assert!(out.stdout.contains(line), "{line:?} in:\n{}", out.stdout);
    }
    assert!(out.stderr.is_empty(), "{out:?}");

    // The environment's token comes first, and the file is named as not used.
    let out = d.run(&[("LEDGER_TOKEN", "tok-s3cret-55")], &["config", "check", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let r = out.json();
    assert_eq!(
        r["credentials"],
        serde_json::json!({ "kind": "bearer", "from": "LEDGER_TOKEN", "overridden": ["the file creds"] })
    );
    let out = d.run(&[], &["--profile", "lab", "config", "check", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let r = out.json();
    assert_eq!(r["profile"]["chosen_by"], "--profile");
    assert_eq!(
        (&r["credentials"], &r["org"]),
        (&serde_json::Value::Null, &serde_json::Value::Null)
    );
    assert_eq!(r["other_profiles"], serde_json::json!(["shared"]));
    assert_eq!(r["discover"]["on"], false);

    // --cluster wins over the file, which is then not read; userinfo in an address is Basic auth.
    let url = format!("http://{USER}:{PASSWORD}@127.0.0.1:5");
    let out = d.run(&[], &["--cluster", &url, "config", "check", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let r = out.json();
    assert_eq!(
        (&r["config"], &r["profile"], &r["peers_from"]),
        (&serde_json::Value::Null, &serde_json::Value::Null, &"--cluster".into())
    );
    assert_eq!(r["cluster"], "127.0.0.1:5");
    assert_eq!(r["credentials"]["from"], "the userinfo of http://***@127.0.0.1:5");
    assert_eq!(r["peers"][0]["url"], "http://127.0.0.1:5/");
}

#[test]
fn config_check_refuses_an_unknown_key_or_a_bad_value_with_its_line() {
    // A mistyped key may hold a secret: the message names the key and its line, never the line.
    let d =
        Dir::new("[clusters.lab]\npeers = [\"http://127.0.0.1:1\"]\n\ntoken = \"tok-s3cret-55\"\n");
    for args in [&["config", "check"][..], &["snapshot"][..]] {
        let out = d.run(&[], args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(
            out.stderr.contains("ledger.toml: line 4, column 1: unknown field `token`"),
            "{out:?}"
        );
        assert!(out.stderr.contains("expected one of `peers`"), "the keys it knows: {out:?}");
    }
    let d = Dir::new(
        "[clusters.lab]\npeers = [\"http://127.0.0.1:1\"]\n[clusters.lab.orgs.hrdag]\nreplication = \"3..1\"\n",
    );
    let out = d.run(&[], &["config", "check"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("line 4, column 15") && out.stderr.contains("\"3..1\""), "{out:?}");
    assert!(out.stderr.contains("MIN..MAX"), "{out:?}");
    // A value of the wrong type: named with its line, the userinfo in it hidden.
    let d =
        Dir::new(&format!("[clusters.lab]\npeers = \"http://{USER}:{PASSWORD}@127.0.0.1:1\"\n"));
    let out = d.run(&[], &["config", "check"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("line 2, column 9") && out.stderr.contains("***@127.0.0.1:1"),
        "{out:?}"
    );
    let d = Dir::new("[clusters.lab\n");
    let out = d.run(&[], &["config", "check"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("line 1"), "{out:?}");
    // The profile asked for is not there; no file at all.
    let d = Dir::new(TWO_PROFILES);
    let out = d.run(&[], &["--profile", "nope", "config", "check"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("no cluster named \"nope\""), "{out:?}");
    std::fs::remove_file(d.path("ledger.toml")).unwrap();
    let out = d.run(&[], &["config", "check"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("no cluster given"), "{out:?}");
}

#[test]
fn config_check_warns_about_a_credentials_file_others_can_read_and_a_profile_that_cannot_be_used() {
    let d = Dir::new(TWO_PROFILES);
    d.chmod("creds", 0o644);
    let out = d.run(&[], &["config", "check"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stderr.matches("warning").count(), 1, "said once: {out:?}");
    assert!(out.stderr.contains("mode 644") && out.stderr.contains("`chmod 600 creds`"), "{out:?}");
    let out = d.run(&[], &["config", "check", "--json"]);
    assert_eq!(out.code, 1, "{out:?}");
    let warnings = out.json()["warnings"].clone();
    assert_eq!(warnings.as_array().unwrap().len(), 1, "{warnings}");
    assert!(warnings[0].as_str().unwrap().contains("chmod 600 creds"), "{warnings}");
    d.chmod("creds", 0o600);
    assert_eq!(d.run(&[], &["config", "check"]).code, 0);

    // Another profile no command could use, and a default naming no profile.
    let broken = format!(
        "{TWO_PROFILES}\n[clusters.old]\npeers = [\"http://{USER}:{PASSWORD}@[bad\"]\nrest_port = 9094\n[clusters.empty]\npeers = []\n"
    );
    let d = Dir::new(&broken.replace("default = \"shared\"", "default = \"gone\""));
    let out = d.run(&[], &["--profile", "shared", "config", "check"]);
    assert_eq!(out.code, 1, "{out:?}");
    for w in [
        "`default` names the cluster \"gone\"",
        "the cluster \"old\": cannot read the cluster address \"http://***@[bad\"",
        "the cluster \"old\" gives rest_port",
        "the cluster \"empty\" lists no peers",
    ] {
        assert!(out.stderr.contains(w), "{w:?} in {}", out.stderr);
    }
}
