//! `ledger completions` and `ledger man`: the bash script loaded in a real bash completes a
//! command and a flag; every shell gets a script; the man pages render and name every command.

use std::collections::BTreeSet;

use crate::util::*;

fn stdout_of(args: &[&str]) -> String {
    let out = ledger().args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// What bash's programmable completion offers for `words`, the last one being completed, with
/// ledger's script loaded as `complete -F` calls it (the command, the word, the word before).
fn complete(script: &std::path::Path, words: &[&str]) -> BTreeSet<String> {
    let words_q: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let (cur, prev) = (words[words.len() - 1], words[words.len() - 2]);
    let body = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={}\nCOMP_LINE='{}'\nCOMP_POINT=${{#COMP_LINE}}\n_ledger ledger '{cur}' '{prev}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        words_q.join(" "),
        words.len() - 1,
        words.join(" "),
    );
    let out = std::process::Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &body])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn the_bash_completion_completes_a_command_and_a_flag() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("ledger.bash");
    std::fs::write(&script, stdout_of(&["completions", "bash"])).unwrap();
    let commands = complete(&script, &["ledger", "sna"]);
    assert_eq!(commands, BTreeSet::from(["snapshot".into(), "snapshots".into()]));
    let flags = complete(&script, &["ledger", "tag", "--con"]);
    assert!(flags.contains("--concurrency") && flags.contains("--config"), "{flags:?}");
    assert!(flags.iter().all(|f| f.starts_with("--con")), "{flags:?}");
    let nested = complete(&script, &["ledger", "db", "mi"]);
    assert_eq!(nested, BTreeSet::from(["migrate".to_string()]));
}

#[test]
fn every_shell_gets_a_script_and_an_unknown_one_is_refused() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let script = stdout_of(&["completions", shell]);
        assert!(
            script.contains("snapshots") && script.contains("concurrency"),
            "{shell}: {script}"
        );
    }
    let out = ledger().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values: bash"));
}

#[test]
fn man_pages_render_for_ledger_and_each_command() {
    let page = stdout_of(&["man", "tag"]);
    assert!(page.contains(".TH ledger-tag 1") && page.contains("ledger 0.1.0"), "{page}");
    assert!(page.contains("\\-\\-concurrency"), "{page}");
    let page = stdout_of(&["man", "db", "migrate"]);
    assert!(page.contains(".TH ledger-db-migrate 1"), "{page}");
    let out = ledger().args(["man", "db", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`ledger db` has no command `nope`; it has: status, migrate"), "{err}");
    assert!(!err.contains("help"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let out = ledger().args(["man", "--out-dir"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pages: BTreeSet<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    // One page per command `ledger --help` lists (its `help` aside), and ledger's own.
    let help = stdout_of(&["--help"]);
    let listed = help.split("Commands:").nth(1).unwrap().split("\n\n").next().unwrap();
    // A command's line starts two spaces in; its description's continuation lines further.
    let names = listed.lines().filter(|l| l.starts_with("  ") && !l.starts_with("   "));
    let names: Vec<&str> = names.filter_map(|l| l.split_whitespace().next()).collect();
    assert!(names.len() > 15 && names.contains(&"tag"), "{names:?}");
    for name in names.into_iter().filter(|n| *n != "help") {
        assert!(pages.contains(&format!("ledger-{name}.1")), "{name}: {pages:?}");
    }
    for p in ["ledger.1", "ledger-db-migrate.1", "ledger-db-status.1", "ledger-sim-serve.1"] {
        assert!(pages.contains(p), "{p}: {pages:?}");
    }
    assert!(pages.iter().all(|p| !p.contains("help")), "{pages:?}");
    // man(1) shows the page where it is installed (not needed: the pages are checked above).
    let has_man = std::process::Command::new("man").arg("--version").output();
    if has_man.is_ok_and(|o| o.status.success()) {
        let shown = std::process::Command::new("man")
            .arg("-l")
            .arg(dir.path().join("ledger-tag.1"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&shown.stdout);
        assert!(text.contains("ledger-tag - Tag every unowned pin"), "{text}");
    }
}
