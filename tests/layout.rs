//! The shape of the code, checked: SQL only in `src/store/` (and no transaction opened there), no
//! function over 80 lines outside tests, arrows that point down (commands → use cases → store), and
//! every comment that cites the cluster's REST contract points at the document in the repository.

use std::path::{Path, PathBuf};

/// The longest a function outside tests may be, in lines (signature to closing brace).
const MAX_FN_LINES: usize = 80;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, with its text up to its `#[cfg(test)]` module (tests may do what
/// they like).
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                let code = match text.find("#[cfg(test)]") {
                    Some(i) => text[..i].to_string(),
                    None => text,
                };
                out.push((p, code));
            }
        }
    }
    out.sort();
    assert!(!out.is_empty(), "no sources under {}", dir.display());
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap().display().to_string()
}

/// The line without its `//` comment and with string literals emptied (crudely: enough for code
/// formatted by rustfmt).
fn code_of(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_str = false;
                    out.push('"');
                }
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push('"');
            }
            '\'' => {
                // A char literal ('{', '\n') or a lifetime ('a).
                let rest: String = chars.clone().take(3).collect();
                if rest.starts_with('\\') {
                    chars.nth(2);
                } else if rest.chars().nth(1) == Some('\'') {
                    chars.nth(1);
                } else {
                    out.push(c);
                }
            }
            '/' if chars.peek() == Some(&'/') => break,
            _ => out.push(c),
        }
    }
    out
}

/// Functions longer than [`MAX_FN_LINES`]: (file, line, name, length).
fn long_functions(dir: &Path) -> Vec<(String, usize, String, usize)> {
    let sig = |l: &str| -> Option<String> {
        let t = l.trim_start();
        let t = t.strip_prefix("pub(crate) ").or_else(|| t.strip_prefix("pub ")).unwrap_or(t);
        let t = t.strip_prefix("async ").unwrap_or(t);
        let t = t.strip_prefix("const ").unwrap_or(t);
        let name = t.strip_prefix("fn ")?;
        Some(name.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect())
    };
    let mut long = Vec::new();
    for (path, text) in sources(dir) {
        let lines: Vec<String> = text.lines().map(code_of).collect();
        for (i, l) in lines.iter().enumerate() {
            let Some(name) = sig(l) else { continue };
            let (mut depth, mut opened) = (0i64, false);
            for (j, l) in lines.iter().enumerate().skip(i) {
                for c in l.chars() {
                    match c {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                if !opened && l.trim_end().ends_with(';') {
                    break; // a declaration without a body
                }
                if opened && depth <= 0 {
                    let n = j - i + 1;
                    if n > MAX_FN_LINES {
                        long.push((rel(&path), i + 1, name.clone(), n));
                    }
                    break;
                }
            }
        }
    }
    long
}

#[test]
fn no_function_is_longer_than_80_lines() {
    let mut long = long_functions(&root().join("src"));
    long.extend(long_functions(&root().join("crates")));
    assert!(long.is_empty(), "functions over {MAX_FN_LINES} lines: {long:#?}");
}

/// The measure itself: a long function is found, a short one is not.
#[test]
fn the_function_measure_finds_a_long_function() {
    let dir = tempfile::tempdir().unwrap();
    let body: String = (0..90).map(|i| format!("    let x{i} = \"{{\";\n")).collect();
    let text = format!("fn short() {{\n}}\n\npub async fn long() {{\n{body}}}\n");
    std::fs::write(dir.path().join("a.rs"), text).unwrap();
    let found: Vec<(String, usize)> = long_functions_in(dir.path());
    assert_eq!(found, vec![("long".to_string(), 92)]);
}

fn long_functions_in(dir: &Path) -> Vec<(String, usize)> {
    // `rel` needs paths under the repository; measure a copy of the lines directly.
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let copy = root().join("target").join("layout-measure");
        std::fs::create_dir_all(&copy).unwrap();
        std::fs::copy(&p, copy.join("a.rs")).unwrap();
        out.extend(long_functions(&copy).into_iter().map(|(_, _, name, n)| (name, n)));
        std::fs::remove_dir_all(&copy).unwrap();
    }
    out
}

/// Words that make a string literal SQL.
const SQL: &[&str] =
    &["SELECT ", "INSERT ", "UPDATE ", "DELETE ", "PRAGMA ", "CREATE ", "DROP ", "ALTER ", "WITH "];
/// Calls that run SQL.
const SQL_CALLS: &[&str] = &[
    ".execute(",
    ".execute_batch(",
    ".query_row(",
    ".query_map(",
    ".prepare(",
    ".prepare_cached(",
    ".pragma_update(",
    ".pragma_query(",
];
/// Calls that open a transaction.
const TX_CALLS: &[&str] = &[
    ".transaction(",
    ".transaction_with_behavior(",
    ".unchecked_transaction(",
    "Transaction::new",
];

/// (file, line) of every line outside `src/store/` that holds SQL or runs it.
fn sql_outside_store() -> Vec<String> {
    let mut found = Vec::new();
    let store = root().join("src").join("store");
    for dir in ["src", "crates"] {
        for (path, text) in sources(&root().join(dir)) {
            if path.starts_with(&store) {
                continue;
            }
            for (i, line) in text.lines().enumerate() {
                let code = code_of(line);
                let literal_sql = line.contains('"') && SQL.iter().any(|w| line.contains(w));
                if literal_sql || SQL_CALLS.iter().any(|c| code.contains(c)) {
                    found.push(format!("{}:{}: {}", rel(&path), i + 1, line.trim()));
                }
            }
        }
    }
    found
}

#[test]
fn sql_lives_in_the_store_and_the_store_opens_no_transaction() {
    let outside = sql_outside_store();
    assert!(outside.is_empty(), "SQL outside src/store/: {outside:#?}");
    let mut opened = Vec::new();
    for (path, text) in sources(&root().join("src").join("store")) {
        for (i, line) in text.lines().enumerate() {
            if TX_CALLS.iter().any(|c| code_of(line).contains(c)) {
                opened.push(format!("{}:{}: {}", rel(&path), i + 1, line.trim()));
            }
        }
    }
    assert!(
        opened.is_empty(),
        "transactions opened inside src/store/ (callers own them): {opened:#?}"
    );
}

#[test]
fn arrows_point_down() {
    let mut wrong = Vec::new();
    for (path, text) in sources(&root().join("src")) {
        let r = rel(&path);
        for (i, line) in text.lines().enumerate() {
            let code = code_of(line);
            let mut flag = |why: &str| wrong.push(format!("{r}:{}: {why}: {}", i + 1, line.trim()));
            // Only the command-line tree and the binary know the commands.
            if code.contains("crate::commands") && r != "src/cli.rs" && r != "src/main.rs" {
                flag("reaches into the commands");
            }
            // A command never calls another command.
            if r.starts_with("src/commands/") && code.contains("super::") {
                flag("a command reaching into a sibling");
            }
            // The store knows rows and domain values: not the cluster, nor the use cases.
            if r.starts_with("src/store/")
                && (code.contains("crate::cluster") || code.contains("crate::ledger"))
            {
                flag("the store reaching up");
            }
        }
    }
    assert!(wrong.is_empty(), "arrows that run back up: {wrong:#?}");
}

#[test]
fn every_citation_of_the_rest_contract_is_in_the_repository() {
    let doc = std::fs::read_to_string(root().join("docs/cluster-api.md")).unwrap();
    let mut bad = Vec::new();
    for dir in ["src", "crates", "tests"] {
        for (path, text) in sources(&root().join(dir)) {
            for (i, line) in text.lines().enumerate() {
                let Some(at) = line.find("cluster-api.md") else { continue };
                if !line[..at].ends_with("docs/") {
                    bad.push(format!("{}:{}: {}", rel(&path), i + 1, line.trim()));
                    continue;
                }
                // `docs/cluster-api.md §6.5` names a section the document has.
                let after = &line[at + "cluster-api.md".len()..];
                if let Some(sec) = after.trim_start().strip_prefix('§') {
                    let n: String =
                        sec.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
                    let n = n.trim_end_matches('.');
                    let heading = doc.lines().any(|l| {
                        l.starts_with('#') && l.trim_start_matches('#').trim().starts_with(n)
                    });
                    if !heading {
                        bad.push(format!("{}:{}: no section {n}", rel(&path), i + 1));
                    }
                }
            }
        }
    }
    assert!(bad.is_empty(), "citations of the REST contract that a reader cannot follow: {bad:#?}");
}
