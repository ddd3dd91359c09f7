//! The JSON contract: every `--json` output has a JSON Schema in `docs/json/`, named after its
//! command (`db status` → `db-status.schema.json`). Real outputs of every command, from a story on a
//! simulated 3-peer cluster, are validated against them, so a change to a shape fails here until its
//! schema changes with it. The schemas close every object (`additionalProperties: false`), which
//! the test checks by adding a key to each output and seeing it refused.
//!
//! `LEDGER_JSON_SAMPLES=DIR` also writes each output into DIR (`tag-2.json`, …).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/json")
}

/// The commands whose `--json` a schema describes, as file names: every subcommand of the clap
/// tree that has a `--json` flag, its path joined by `-`.
fn commands_with_json() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, path: &mut Vec<String>, out: &mut BTreeSet<String>) {
        if !path.is_empty() && cmd.get_arguments().any(|a| a.get_long() == Some("json")) {
            out.insert(path.join("-"));
        }
        for sub in cmd.get_subcommands() {
            path.push(sub.get_name().to_string());
            walk(sub, path, out);
            path.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(&<ledger::cli::Cli as clap::CommandFactory>::command(), &mut Vec::new(), &mut out);
    out
}

fn schema(name: &str) -> Value {
    let path = schema_dir().join(format!("{name}.schema.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (every --json has a schema)", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Why `v` does not fit the schema `name`, one line per error (empty: it fits).
fn errors(name: &str, v: &Value) -> Vec<String> {
    let validator = jsonschema::validator_for(&schema(name))
        .unwrap_or_else(|e| panic!("{name}.schema.json is not a schema: {e}"));
    validator.iter_errors(v).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

#[test]
fn every_command_with_json_has_a_valid_schema_and_every_schema_a_command() {
    let commands = commands_with_json();
    for c in ["snapshots", "diff", "history", "tag", "convergence", "repin", "lost", "restore"] {
        assert!(commands.contains(c), "{c} has --json: {commands:?}");
    }
    let files: BTreeSet<String> = std::fs::read_dir(schema_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|f| f.strip_suffix(".schema.json").map(str::to_string))
        .collect();
    assert_eq!(files, commands, "a schema per command with --json, and no other");
    for name in &files {
        let s = schema(name);
        assert!(jsonschema::meta::is_valid(&s), "{name}.schema.json is not a valid JSON Schema");
        assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema", "{name}");
        assert!(s["title"].is_string() && s["description"].is_string(), "{name}: says what it is");
    }
}

/// A ledger and a simulated cluster, and every JSON output seen so far with its schema's name.
struct Story {
    dir: tempfile::TempDir,
    sim: Sim,
    seen: Vec<(String, Value)>,
}

impl Story {
    fn run(&self, args: &[&str]) -> Out {
        let mut cmd = ledger();
        cmd.current_dir(self.dir.path()).timeout(Duration::from_secs(120));
        let urls: Vec<&str> = self.sim.peers.iter().map(|p| p.url.as_str()).collect();
        cmd.args(["--db", "ledger.db", "--cluster", &urls.join(",")]).args(args);
        cmd.output().unwrap().into()
    }

    /// Runs `args` (which hold `--json`), which must exit with one of `codes`, and keeps its
    /// output for the schema `name`.
    fn json(&mut self, name: &str, args: &[&str], codes: &[i32]) -> Value {
        let out = self.run(args);
        assert!(codes.contains(&out.code), "{args:?}: {out:?}");
        let v = out.json();
        if let Some(dir) = std::env::var_os("LEDGER_JSON_SAMPLES") {
            let n = self.seen.iter().filter(|(s, _)| s == name).count() + 1;
            let text = serde_json::to_string_pretty(&v).unwrap();
            std::fs::write(Path::new(&dir).join(format!("{name}-{n}.json")), text).unwrap();
        }
        self.seen.push((name.to_string(), v.clone()));
        v
    }

    fn post(&self, path: &str) {
        let r = raw(self.sim.url(0), "POST", path, &[], b"");
        assert_eq!(r.status, 200, "POST {path}: {}", r.text());
    }
}

/// The story: snapshots, a tag run (planned, then run), single and bulk re-pins (each planned and
/// sent), damage and its losses, a restore, the comparisons, drift and pin status, an upload, and
/// the ledger's and the configuration's own reports.
fn tell(s: &mut Story) {
    s.json("snapshot", &["snapshot", "--all-peers", "--json"], &[0]);
    s.json("tag", &["tag", "--org", "hrdag", "--dry-run", "--json"], &[0]);
    s.json("tag", &["tag", "--org", "hrdag", "--settle", "300ms", "--json"], &[0]);
    s.json("convergence", &["convergence", "--json"], &[0]);
    s.json("owners", &["owners", "--json"], &[0]);
    s.sim.wait_converged(Duration::from_secs(30));
    let pins = sorted_pinset(s.sim.url(0), &[]);
    let ours: Vec<&str> = pins
        .iter()
        .filter(|p| p["metadata"]["org"] == "hrdag")
        .map(|p| p["cid"].as_str().unwrap())
        .collect();
    assert!(ours.len() >= 3, "{pins:?}");
    let (one, gone, stripped) = (ours[0], ours[1], ours[2]);
    s.json("repin", &["repin", one, "--meta", "project=contract", "--dry-run", "--json"], &[0]);
    s.json("repin", &["repin", one, "--meta", "project=contract", "--json"], &[0]);
    let set = ["repin", "--org", "hrdag", "--replication", "1..2"];
    s.json("repin", &[&set[..], &["--dry-run", "--json"]].concat(), &[0]);
    s.json("repin", &[&set[..], &["--settle", "300ms", "--json"]].concat(), &[0]);
    s.sim.wait_converged(Duration::from_secs(30));
    // An unpin, and a re-pin that drops every option: losses.
    let r = raw(s.sim.url(0), "DELETE", &format!("/pins/{gone}"), &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    s.post(&format!("/pins/{stripped}"));
    s.sim.wait_converged(Duration::from_secs(30));
    let snaps = s.json("snapshot", &["snapshot", "--all-peers", "--status", "--json"], &[0]);
    let last = snaps.as_array().unwrap().last().unwrap()["id"].to_string();
    s.json("lost", &["lost", "--json"], &[1]);
    s.json("restore", &["restore", "--from", "1", "--dry-run", "--json"], &[0, 1]);
    s.json("restore", &["restore", "--from", "1", "--json"], &[0, 1]);
    s.json("snapshots", &["snapshots", "--json"], &[0]);
    s.json("diff", &["diff", "1", &last, "--json"], &[1]);
    s.json("history", &["history", stripped, "--json"], &[0]);
    s.json("drift", &["drift", "--json"], &[0, 1]);
    s.json("drift", &["drift", "--status", "--json"], &[0, 1]);
    std::fs::write(s.dir.path().join("notes.txt"), "the contract\n").unwrap();
    let add = ["add", "notes.txt", "--org", "hrdag"];
    s.json("add", &[&add[..], &["--dry-run", "--json"]].concat(), &[0]);
    s.json("add", &[&add[..], &["--json"]].concat(), &[0]);
    s.json("db-status", &["db", "status", "--json"], &[0]);
    s.json("config-check", &["config", "check", "--json"], &[0]);
}

#[test]
fn every_json_output_of_a_story_matches_its_schema_and_nothing_else_does() {
    let sim = Sim::start(&["--peers", "3", "--pins", "40", "--seed", "7", "--lag", "0..20ms"]);
    let mut story = Story { dir: tempfile::tempdir().unwrap(), sim, seen: Vec::new() };
    tell(&mut story);
    let mut failures = Vec::new();
    for (name, v) in &story.seen {
        for e in errors(name, v) {
            failures.push(format!("{name}: {e}"));
        }
        // The schema closes the output: one more key (on the object, or on an array's first
        // element) is refused.
        let mut more = v.clone();
        let target = match &mut more {
            Value::Array(a) => a.first_mut(),
            o => Some(o),
        };
        if let Some(Value::Object(o)) = target {
            o.insert("not_in_the_contract".to_string(), Value::Bool(true));
            assert!(!errors(name, &more).is_empty(), "{name} takes a key it does not define");
        }
    }
    assert!(failures.is_empty(), "outputs that do not fit their schema:\n{}", failures.join("\n"));
    let told: BTreeSet<String> = story.seen.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(told, commands_with_json(), "every schema is held to a real output");
    the_readme_jq_examples_are_this_storys_output(&story);
}

/// The README's `--json | jq` examples (the block after `<!-- jq examples -->`): each `$ ` line
/// run in the story's directory, its output as the README shows it.
fn the_readme_jq_examples_are_this_storys_output(story: &Story) {
    if !have("jq", "--version", "apt-get install jq") {
        return;
    }
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let (_, after) = readme.split_once("<!-- jq examples -->").expect("the README's jq examples");
    let block = after.split_once("```console\n").unwrap().1.split_once("```").unwrap().0;
    let mut examples: Vec<(String, String)> = Vec::new();
    for line in block.lines() {
        match line.strip_prefix("$ ") {
            Some(cmd) => examples.push((cmd.to_string(), String::new())),
            None => {
                let (_, expected) = examples.last_mut().expect("a block that starts with $");
                expected.push_str(line);
                expected.push('\n');
            }
        }
    }
    assert!(examples.len() >= 3, "{block}");
    let bin_dir = bin().parent().unwrap().to_path_buf();
    let path = format!("{}:/usr/bin:/bin", bin_dir.display());
    for (cmd, expected) in &examples {
        assert!(cmd.contains("--json | jq"), "{cmd}");
        let out = std::process::Command::new("bash")
            .args(["-o", "pipefail", "-c", cmd])
            .current_dir(story.dir.path())
            .env_clear()
            .env("PATH", &path)
            .env("LEDGER_DB", "ledger.db")
            .output()
            .unwrap();
        let got = String::from_utf8_lossy(&out.stdout);
        assert_eq!(got, *expected, "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
