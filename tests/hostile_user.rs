//! What a hostile but fair user tried (issue 12, points 10, 12–16 and 18): inputs that panicked or
//! hung, credentials echoed or handed on, exit codes lost, messages that did not say where or why.
//! Every test runs the real binary; the ones that need a cluster run `ledger sim serve`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::*;

/// A ledger in a temporary directory, run with a clean environment and a bound on its time (a
/// hang fails the test instead of stalling the suite).
struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        Lab { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn db(&self) -> PathBuf {
        self.path("ledger.db")
    }

    fn run_with(&self, env: &[(&str, &str)], args: &[&str]) -> Out {
        let mut cmd = ledger();
        cmd.current_dir(self.dir.path()).timeout(Duration::from_secs(60));
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.arg("--db").arg(self.db()).args(args).output().unwrap().into()
    }

    fn run(&self, args: &[&str]) -> Out {
        self.run_with(&[], args)
    }
}

/// An exit code that is 2, and a message on stderr that is not a panic.
fn refused(out: &Out, what: &str) {
    assert_eq!(out.code, 2, "{what}: {out:?}");
    assert!(!out.stderr.contains("panicked"), "{what}: a panic: {}", out.stderr);
}

/// One simulated peer holding `n` generated pins, and a ledger with a snapshot of it, taken before
/// three of them were unpinned and after: two snapshots that differ, and losses.
fn lab_with_losses(n: &str) -> (Sim, Lab) {
    let sim = Sim::start(&["--peers", "1", "--pins", n, "--seed", "12", "--lag", "0"]);
    let lab = Lab::new();
    let out = lab.run(&["--cluster", sim.url(0), "snapshot"]);
    assert_eq!(out.code, 0, "{out:?}");
    for p in sorted_pinset(sim.url(0), &[]).iter().take(3) {
        let cid = p["cid"].as_str().unwrap();
        let r = raw(sim.url(0), "DELETE", &format!("/pins/{cid}"), &[], b"");
        assert_eq!(r.status, 200, "unpin {cid}: {}", r.text());
    }
    (sim, lab)
}

// ------------------------------------------------------------------------------------------------
// 10. No input may panic (or hang)

#[test]
fn a_rate_too_small_to_pace_is_refused_at_once() {
    let sim = Sim::start(&["--peers", "1", "--pins", "40", "--seed", "3", "--lag", "0"]);
    let lab = Lab::new();
    for rate in ["1e-30", "0.0009", "0", "-3", "NaN", "inf"] {
        let out = lab.run(&[
            "--cluster",
            sim.url(0),
            "tag",
            "--org",
            "x",
            "--settle",
            "0s",
            "--rate",
            rate,
        ]);
        refused(&out, &format!("tag --rate {rate}"));
        assert!(out.stderr.contains("--rate") && out.stderr.contains("0.001"), "{out:?}");
    }
    assert!(!lab.db().exists(), "nothing was recorded");
    let demo = lab.path("demo");
    let demo = demo.to_str().unwrap();
    for args in [
        ["--rate", "1e-30"],
        ["--rate", "-1"],
        ["--apply-rate", "1e-300"],
        ["--pins", "18446744073709551615"],
        ["--owned", "18446744073709551615"],
    ] {
        let pins: &[&str] = if args[0] == "--pins" { &[] } else { &["--pins", "5"] };
        let out = lab.run(&[&["demo", "--out", demo][..], pins, &args[..]].concat());
        refused(&out, &format!("demo {args:?}"));
        assert!(out.stderr.contains(args[0]), "{out:?}");
    }
    assert!(!Path::new(demo).exists(), "the demo did not start");
    // A small rate that is allowed still runs (0.001/s is one re-pin every 1000 s: a dry run).
    let out =
        lab.run(&["--cluster", sim.url(0), "tag", "--org", "x", "--rate", "0.001", "--dry-run"]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn the_simulator_refuses_more_pins_than_it_can_hold() {
    for (flag, value) in [("--pins", "18446744073709551615"), ("--apply-rate", "1e-300")] {
        let out: Out = ledger()
            .args(["sim", "serve", flag, value])
            .timeout(Duration::from_secs(20))
            .output()
            .unwrap()
            .into();
        refused(&out, &format!("sim serve {flag} {value}"));
        assert!(out.stderr.contains(flag), "{out:?}");
    }
}

#[test]
fn an_empty_cluster_list_is_an_error_not_a_panic() {
    let lab = Lab::new();
    for (env, args, source) in [
        (None, vec!["--cluster", "", "snapshot"], "--cluster"),
        (None, vec!["--cluster", " , ", "snapshot", "--all-peers"], "--cluster"),
        (Some(","), vec!["snapshot"], "LEDGER_CLUSTER"),
        (Some(",,"), vec!["tag", "--org", "x"], "LEDGER_CLUSTER"),
    ] {
        let env: Vec<(&str, &str)> = env.map(|v| ("LEDGER_CLUSTER", v)).into_iter().collect();
        let out = lab.run_with(&env, &args);
        refused(&out, &format!("{env:?} {args:?}"));
        assert!(out.stderr.contains(source) && out.stderr.contains("no peer"), "{out:?}");
    }
}

#[test]
fn a_damaged_migration_history_is_refused_not_a_panic() {
    for (column, value) in [("checksum", "abc"), ("applied_on", "yesterday"), ("checksum", "")] {
        let lab = Lab::new();
        assert_eq!(lab.run(&["db", "migrate"]).code, 0);
        let conn = rusqlite::Connection::open(lab.db()).unwrap();
        conn.execute(
            &format!("UPDATE refinery_schema_history SET {column} = ?1 WHERE version = 1"),
            [value],
        )
        .unwrap();
        drop(conn);
        let out = lab.run(&["snapshots"]);
        refused(&out, &format!("{column} = {value:?}"));
        assert!(out.stderr.contains("V1 (initial)"), "{out:?}");
        let out = lab.run(&["db", "status"]);
        assert_eq!(out.code, 1, "db status says what the others refuse: {out:?}");
        assert!(out.stderr.contains("V1 (initial)"), "{out:?}");
    }
}

// ------------------------------------------------------------------------------------------------
// 12. Userinfo of an address that does not parse is never echoed

#[test]
fn a_bad_address_with_userinfo_is_named_without_it() {
    let sim = Sim::start(&["--peers", "1", "--pins", "3", "--lag", "0"]);
    let lab = Lab::new();
    let bad = |secret: &str| format!("http://alice:{secret}@[bad:9094");
    std::fs::write(
        lab.path("ledger.toml"),
        format!("[clusters.lab]\npeers = [{:?}]\n", bad("pw-profile")),
    )
    .unwrap();
    let flag = bad("pw-flag");
    let env = bad("pw-env");
    let peer = bad("pw-peer");
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (vec![], vec!["--cluster", &flag, "snapshot"], "pw-flag", "--cluster"),
        (vec![("LEDGER_CLUSTER", &env)], vec!["snapshot"], "pw-env", "LEDGER_CLUSTER"),
        (vec![], vec!["snapshot"], "pw-profile", "ledger.toml"),
        (vec![], vec!["--cluster", sim.url(0), "snapshot", "--peer", &peer], "pw-peer", "--peer"),
        (
            vec![],
            vec!["--cluster", sim.url(0), "tag", "--org", "x", "--peer", &peer],
            "pw-peer",
            "--peer",
        ),
        (
            vec![],
            vec!["--cluster", sim.url(0), "watch", "--every", "1s", "--peer", &peer],
            "pw-peer",
            "--peer",
        ),
    ];
    for (env, args, secret, source) in cases {
        let out = lab.run_with(&env, &args);
        refused(&out, source);
        assert!(!out.all().contains(secret), "{source}: the password is echoed: {out:?}");
        assert!(out.stderr.contains(source), "{source}: where the address came from: {out:?}");
        assert!(out.stderr.contains("http://***@[bad:9094"), "{source}: which address: {out:?}");
    }
}

/// 18: a multiaddr that does not parse is named, with where it came from.
#[test]
fn a_bad_multiaddr_is_named_with_its_source() {
    let lab = Lab::new();
    let out = lab.run(&["--cluster", "/ip4/999.1.1.1/tcp/1", "snapshot"]);
    refused(&out, "--cluster /ip4/999.1.1.1/tcp/1");
    assert!(
        out.stderr.contains("/ip4/999.1.1.1/tcp/1") && out.stderr.contains("--cluster"),
        "{out:?}"
    );
    let out = lab.run_with(
        &[("LEDGER_CLUSTER", "/ip4/127.0.0.1/tcp/1,/ip4/1.2.3.4/tcp/99999")],
        &["snapshot"],
    );
    refused(&out, "LEDGER_CLUSTER");
    assert!(
        out.stderr.contains("/ip4/1.2.3.4/tcp/99999") && out.stderr.contains("LEDGER_CLUSTER"),
        "{out:?}"
    );
}

// ------------------------------------------------------------------------------------------------
// 13. The --on-loss hook gets no credential

#[test]
fn the_loss_hook_gets_no_credential() {
    let (sim, lab) = lab_with_losses("30");
    let with_userinfo = sim.url(0).replacen("http://", "http://ops:pw-in-url@", 1);
    let dump = lab.path("hook.env");
    let hook = format!("cat > /dev/null; env > {}", dump.display());
    let env = [
        ("LEDGER_CLUSTER", with_userinfo.as_str()),
        ("LEDGER_BASIC_AUTH", "ops:pw-basic"),
        ("LEDGER_TOKEN", "tok-secret"),
        ("AWS_SECRET_ACCESS_KEY", "aws-secret"),
        ("HOME", "/home/ops"),
        ("LANG", "C.UTF-8"),
        ("LC_ALL", "C.UTF-8"),
    ];
    let out = lab.run_with(&env, &["watch", "--every", "1s", "--rounds", "1", "--on-loss", &hook]);
    assert_eq!(out.code, 0, "{out:?}");
    let seen =
        std::fs::read_to_string(&dump).unwrap_or_else(|e| panic!("the hook ran: {e}; {out:?}"));
    for secret in ["pw-in-url", "pw-basic", "tok-secret", "aws-secret"] {
        assert!(!seen.contains(secret), "the hook was handed {secret}:\n{seen}");
    }
    for name in ["LEDGER_BASIC_AUTH=", "LEDGER_TOKEN=", "LEDGER_CLUSTER="] {
        assert!(!seen.lines().any(|l| l.starts_with(name)), "{name}\n{seen}");
    }
    let has = |line: &str| seen.lines().any(|l| l == line);
    assert!(has(&format!("LEDGER_DB={}", lab.db().display())), "the ledger it watches:\n{seen}");
    for line in ["HOME=/home/ops", "LANG=C.UTF-8", "LC_ALL=C.UTF-8", "TZ=UTC"] {
        assert!(has(line), "{line}:\n{seen}");
    }
    assert!(seen.lines().any(|l| l.starts_with("PATH=")), "{seen}");
}

// ------------------------------------------------------------------------------------------------
// 14, 15. Credentials: a file others can read, Basic auth without a password

#[test]
fn a_credentials_file_others_can_read_is_warned_about() {
    let sim = Sim::start(&["--peers", "1", "--pins", "5", "--lag", "0", "--basic-auth", "ops:pw"]);
    let lab = Lab::new();
    let creds = lab.path("creds");
    std::fs::write(&creds, "ops:pw\n").unwrap();
    std::fs::write(
        lab.path("ledger.toml"),
        format!("[clusters.lab]\npeers = [\"{}\"]\ncredentials = \"creds\"\n", sim.url(0)),
    )
    .unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = lab.run(&["snapshot"]);
    assert_eq!(out.code, 0, "still used: {out:?}");
    assert!(out.stderr.contains("warning") && out.stderr.contains("other users"), "{out:?}");
    // The file as named in ledger.toml, beside it (here: the working directory).
    assert!(out.stderr.contains("`chmod 600 creds`"), "the fix: {out:?}");
    assert!(out.stderr.contains("644"), "{out:?}");
    assert!(!out.all().contains("ops:pw"), "{out:?}");
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = lab.run(&["snapshot"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stderr.contains("warning"), "a private file is used without a word: {out:?}");
}

#[test]
fn basic_auth_without_a_colon_says_user_and_password() {
    let lab = Lab::new();
    // A port nobody listens on: the error must come before any request.
    let out = lab.run_with(
        &[("LEDGER_BASIC_AUTH", "alice")],
        &["--cluster", "http://127.0.0.1:1", "snapshot"],
    );
    refused(&out, "LEDGER_BASIC_AUTH=alice");
    assert!(
        out.stderr.contains("LEDGER_BASIC_AUTH") && out.stderr.contains("user:password"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("reach"), "nothing was sent: {out:?}");
}

// ------------------------------------------------------------------------------------------------
// 16. A broken pipe keeps the command's exit code

/// The exit code of `ledger ARGS` whose stdout is a pipe nobody reads (its read end closed before
/// the start: every write finds it broken).
fn code_with_stdout_closed(lab: &Lab, args: &[&str]) -> (i32, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = Command::new(bin())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TZ", "UTC")
        .arg("--db")
        .arg(lab.db())
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_broken_pipe_keeps_the_attention_exit() {
    let (sim, lab) = lab_with_losses("30");
    assert_eq!(lab.run(&["--cluster", sim.url(0), "snapshot"]).code, 0);
    for args in [
        vec!["diff", "1", "2"],
        vec!["diff", "1", "2", "--json"],
        vec!["lost"],
        vec!["lost", "--json"],
    ] {
        assert_eq!(lab.run(&args).code, 1, "{args:?} finds something");
        let (code, stderr) = code_with_stdout_closed(&lab, &args);
        assert_eq!(code, 1, "{args:?} | (closed): {stderr}");
        assert!(!stderr.contains("error"), "a closed pipe is not an error: {stderr}");
    }
    // And a command that finds nothing still exits 0.
    let (code, stderr) = code_with_stdout_closed(&lab, &["diff", "2", "2"]);
    assert_eq!(code, 0, "{stderr}");
}

// ------------------------------------------------------------------------------------------------
// 18. The smaller ones

#[test]
fn durations_cannot_be_negative_and_some_cannot_be_zero() {
    let lab = Lab::new();
    for (args, says) in [
        (vec!["tag", "--org", "x", "--settle", "-1s"], "cannot be negative"),
        (vec!["tag", "--org", "x", "--probe-every", "-500ms"], "cannot be negative"),
        (vec!["tag", "--org", "x", "--run-timeout", "-1m"], "cannot be negative"),
        (vec!["--timeout", "-5s", "snapshot"], "cannot be negative"),
        (vec!["watch", "--every", "-1m"], "cannot be negative"),
        (vec!["demo", "--lag", "-1s..2s"], "cannot be negative"),
        (vec!["sim", "serve", "--latency", "-1s"], "cannot be negative"),
        (vec!["--timeout", "0s", "snapshot"], "longer than 0s"),
        (vec!["snapshot", "--timeout", "0"], "longer than 0s"),
        (vec!["watch", "--every", "0s"], "longer than 0s"),
    ] {
        let out = lab.run(&args);
        refused(&out, &format!("{args:?}"));
        assert!(out.stderr.contains(says), "{args:?}: {out:?}");
        assert!(!out.stderr.contains("unexpected argument"), "{args:?}: {out:?}");
    }
    assert!(!lab.db().exists());
}

#[test]
fn max_passes_and_rounds_are_at_least_one() {
    let sim = Sim::start(&["--peers", "1", "--pins", "20", "--seed", "4", "--lag", "0"]);
    let lab = Lab::new();
    let c = sim.url(0);
    for (args, flag) in [
        (
            vec!["--cluster", c, "tag", "--org", "x", "--settle", "0s", "--max-passes", "0"],
            "--max-passes",
        ),
        (vec!["--cluster", c, "watch", "--every", "1s", "--rounds", "0"], "--rounds"),
    ] {
        let out = lab.run(&args);
        refused(&out, flag);
        assert!(out.stderr.contains(flag), "{out:?}");
    }
    assert!(!lab.db().exists(), "nothing ran");
}

#[test]
fn a_failed_migration_is_named_without_its_sql() {
    let lab = Lab::new();
    let conn = rusqlite::Connection::open(lab.db()).unwrap();
    conn.execute_batch("CREATE TABLE series (x)").unwrap();
    drop(conn);
    let out = lab.run(&["snapshots"]);
    refused(&out, "a foreign table");
    assert!(
        out.stderr.contains("V1 (initial) failed") && out.stderr.contains("already exists"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("CREATE TABLE") && !out.stderr.contains("--"), "the SQL: {out:?}");
    assert!(out.stderr.lines().count() <= 2, "{out:?}");
}

#[test]
fn db_status_says_checksum_mismatch_as_every_command_refuses() {
    let lab = Lab::new();
    assert_eq!(lab.run(&["db", "migrate"]).code, 0);
    let conn = rusqlite::Connection::open(lab.db()).unwrap();
    conn.execute("UPDATE refinery_schema_history SET checksum = '123' WHERE version = 2", [])
        .unwrap();
    drop(conn);
    let refusal = lab.run(&["snapshots"]);
    refused(&refusal, "snapshots");
    assert!(refusal.stderr.contains("checksum mismatch"), "{refusal:?}");
    let out = lab.run(&["db", "status"]);
    assert_eq!(out.code, 1, "{out:?}");
    let row = out.stdout.lines().find(|l| l.starts_with("V2")).unwrap_or_default();
    assert!(row.contains("checksum mismatch"), "{out:?}");
    // Every other migration is applied (V1, V3, V4, … whatever this build has).
    let migrations = out.stdout.lines().filter(|l| l.starts_with('V')).count();
    assert!(migrations >= 5, "{out:?}");
    let applied = out.stdout.lines().filter(|l| l.contains("  applied  ")).count();
    assert_eq!(applied, migrations - 1, "{out:?}");
    let said = refusal.stderr.trim_start_matches("ledger: error: ").trim();
    assert!(out.stderr.contains(said), "the same words as the refusal: {out:?}");
    let out = lab.run(&["db", "status", "--json"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.json()["migrations"][1]["checksum_mismatch"], true, "{out:?}");
    assert_eq!(out.json()["migrations"][0]["checksum_mismatch"], false, "{out:?}");
}

#[test]
fn read_commands_never_create_a_ledger_and_writers_no_directory() {
    let lab = Lab::new();
    let missing = lab.path("no/such/dir");
    let db = missing.join("x.db");
    let db = db.to_str().unwrap();
    for args in [
        vec!["snapshots"],
        vec!["diff", "1", "2"],
        vec!["history", "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"],
        vec!["lost"],
        vec!["owners"],
        vec!["convergence"],
        vec!["report"],
        vec!["export", "runs", "--csv", "-"],
    ] {
        let out: Out = ledger().args(["--db", db]).args(&args).output().unwrap().into();
        refused(&out, &format!("{args:?}"));
        assert!(out.stderr.contains("there is no ledger at") && out.stderr.contains(db), "{out:?}");
        assert!(!lab.path("no").exists(), "{args:?} created {}", missing.display());
    }
    // db status lists every migration as pending, and creates nothing either: not even a lock
    // file in the directory it runs in (it left `:memory:.open.lock` there).
    let status = |json: bool| -> Out {
        let mut cmd = ledger();
        cmd.current_dir(lab.dir.path()).args(["--db", db, "db", "status"]);
        if json {
            cmd.arg("--json");
        }
        cmd.output().unwrap().into()
    };
    let out = status(false);
    assert_eq!(out.code, 0, "{out:?}");
    let rows: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with('V')).collect();
    assert!(rows.len() >= 4 && rows.iter().all(|r| r.contains(" pending ")), "{out:?}");
    assert_eq!(status(true).json()["exists"], false);
    let left: Vec<_> =
        std::fs::read_dir(lab.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "db status created {left:?}");
    // A writing command creates the file, not the directories.
    let out: Out = ledger()
        .args(["--db", db, "--cluster", "http://127.0.0.1:1", "snapshot"])
        .output()
        .unwrap()
        .into();
    refused(&out, "snapshot");
    assert!(out.stderr.contains("does not exist"), "{out:?}");
    assert!(!lab.path("no").exists());
    let out: Out = ledger().args(["--db", db, "db", "migrate"]).output().unwrap().into();
    refused(&out, "db migrate");
    assert!(!lab.path("no").exists());
    // In a directory that exists, it does.
    std::fs::create_dir_all(&missing).unwrap();
    let out: Out = ledger().args(["--db", db, "db", "migrate"]).output().unwrap().into();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(Path::new(db).exists());
}

#[test]
fn sim_serve_takes_no_ledger_options() {
    let help = |args: &[&str]| -> String {
        let out: Out = ledger().args(args).arg("--help").output().unwrap().into();
        assert_eq!(out.code, 0, "{out:?}");
        out.stdout
    };
    for args in [&["sim", "serve"][..], &["sim"][..]] {
        let h = help(args);
        for flag in
            ["--db", "--cluster", "--profile", "--config", "--timeout", "--discover", "--rest-port"]
        {
            assert!(!h.contains(flag), "{args:?} --help lists {flag}:\n{h}");
        }
        assert!(h.contains("--verbose") && h.contains("--quiet"), "{h}");
    }
    // Every other command keeps them.
    for cmd in ["snapshot", "tag", "lost", "db", "demo"] {
        let h = help(&[cmd]);
        for flag in
            ["--db", "--cluster", "--profile", "--config", "--timeout", "--discover", "--rest-port"]
        {
            assert!(h.contains(flag), "{cmd} --help lacks {flag}:\n{h}");
        }
    }
    for args in [
        vec!["sim", "serve", "--db", "x.db"],
        vec!["sim", "--cluster", "http://a:1", "serve"],
        vec!["sim", "serve", "--discover"],
        vec!["sim", "serve", "--rest-port", "9094"],
    ] {
        let out: Out =
            ledger().args(&args).timeout(Duration::from_secs(20)).output().unwrap().into();
        refused(&out, &format!("{args:?}"));
    }
}

#[test]
fn sim_error_faults_name_a_real_endpoint() {
    for bad in ["nosuch:500:1", "pins/x:500", "pin:0", "pin:1000"] {
        let out: Out = ledger()
            .args(["sim", "serve", "--error", bad])
            .timeout(Duration::from_secs(20))
            .output()
            .unwrap()
            .into();
        refused(&out, bad);
        assert!(out.stderr.contains("--error"), "{out:?}");
    }
    // The control API refuses it too, and keeps the faults it had.
    let sim = Sim::start(&["--peers", "1", "--lag", "0", "--error", "version:503"]);
    let body = r#"{"errors":[{"endpoint":"nosuch","status":500}]}"#;
    let r = raw(
        sim.url(0),
        "POST",
        "/_sim/faults",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("nosuch"), "{}", r.text());
    assert_eq!(sim.control("GET", "/_sim/faults", "")["errors"][0]["endpoint"], "version");
}
