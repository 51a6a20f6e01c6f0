//! The daemon's layout keeps its privilege boundary visible (issue 12 point 8): the files
//! of `src/daemon/` are read, every reference from one daemon module to another
//! (`use` trees, and paths through `super::`, `self::`, `crate::daemon::`, a child
//! module or a name a `use` bound) is resolved to the file that holds its target, and
//! the test fails on
//!
//! - a cycle between files (a file that imports, directly or through others, a file
//!   that imports it back), and
//! - a reference across the layers: `parent/` (the root process) and `engine/` (the
//!   confined process) use only their own files and the shared pieces; the shared pieces
//!   (everything else below `src/daemon/`, `privsep/` included) use neither side nor
//!   what sits above both (`src/daemon/mod.rs`, the start in `start.rs`).
//!
//! `mod x;` declarations are not references (a folder's `mod.rs` declares its files),
//! comments and string literals are skipped, and an inline module (`mod tests { .. }`)
//! counts as part of its file.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// One source file: its path below `src/daemon/` with `/` separators, and its text.
struct SourceFile {
    path: String,
    text: String,
}

/// Where a file stands relative to the privilege boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    /// `src/daemon/mod.rs` and `start.rs`: above both processes (the fork).
    Above,
    /// `parent/`: the process that keeps root.
    Parent,
    /// `engine/`: the confined process.
    Engine,
    /// Everything else: used by both, below both.
    Shared,
}

fn layer_of(path: &str) -> Layer {
    if path == "mod.rs" || path == "start.rs" {
        Layer::Above
    } else if path.starts_with("parent/") {
        Layer::Parent
    } else if path.starts_with("engine/") {
        Layer::Engine
    } else {
        Layer::Shared
    }
}

/// Which layers a layer may use.
fn may_use(from: Layer, to: Layer) -> bool {
    match from {
        Layer::Above => true,
        Layer::Parent => matches!(to, Layer::Parent | Layer::Shared),
        Layer::Engine => matches!(to, Layer::Engine | Layer::Shared),
        Layer::Shared => to == Layer::Shared,
    }
}

/// The module path of a file, from the crate root: `parent/mod.rs` is
/// `daemon::parent`, `parent/table.rs` is `daemon::parent::table`.
fn module_of(path: &str) -> Vec<String> {
    let mut module = vec!["daemon".to_string()];
    let parts: Vec<&str> = path.split('/').collect();
    let (dirs, file) = parts.split_at(parts.len() - 1);
    module.extend(dirs.iter().map(|d| d.to_string()));
    let stem = file[0].strip_suffix(".rs").expect("a .rs file");
    if stem != "mod" {
        module.push(stem.to_string());
    }
    module
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Semi,
    Star,
    Other,
}

/// The tokens that matter for paths; comments, strings and character literals are
/// dropped, so a path named in a doc comment is not a reference.
fn tokens(text: &str) -> Vec<Token> {
    let c: Vec<char> = text.chars().collect();
    let ident_char = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if ch == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(Token::Other);
        } else if ch == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !ident_char(c[i - 1]))
            && c[i + 1..].iter().find(|&&x| x != '#') == Some(&'"')
        {
            // A raw string: r"..." or r#"..."#, ended by the quote and as many #.
            let hashes = c[i + 1..].iter().take_while(|&&x| x == '#').count();
            i += 2 + hashes;
            loop {
                if i >= c.len() {
                    break;
                }
                if c[i] == '"'
                    && c[i + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&x| x == '#')
                        .count()
                        == hashes
                {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
            out.push(Token::Other);
        } else if ch == '\'' {
            // A character literal ('x', '\n', '\u{..}'), else a lifetime or label.
            if next == Some('\\') {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
                while i < c.len() && ident_char(c[i]) {
                    i += 1;
                }
            }
            out.push(Token::Other);
        } else if ch == '$' || ident_char(ch) {
            // `$crate` in a macro is the crate.
            let start = if ch == '$' { i + 1 } else { i };
            i = start;
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            // A byte string or byte character (b"..", b'x') is a literal.
            if word == "b" && i < c.len() && (c[i] == '"' || c[i] == '\'') {
                continue;
            }
            out.push(Token::Ident(word));
        } else {
            i += 1;
            out.push(match ch {
                ':' if next == Some(':') => {
                    i += 1;
                    Token::PathSep
                }
                '{' => Token::Open,
                '}' => Token::Close,
                ',' => Token::Comma,
                ';' => Token::Semi,
                '*' => Token::Star,
                ch if ch.is_whitespace() => continue,
                _ => Token::Other,
            });
        }
    }
    out
}

/// The leaf paths of a use tree starting at `tokens[*at]`, each with the name it binds
/// (`None` for a glob); `*at` ends past the tree.
fn use_tree(
    tokens: &[Token],
    at: &mut usize,
    prefix: &[String],
    out: &mut Vec<(Vec<String>, Option<String>)>,
) {
    let mut path = prefix.to_vec();
    if tokens.get(*at) == Some(&Token::PathSep) {
        *at += 1;
    }
    loop {
        match tokens.get(*at) {
            Some(Token::Ident(word)) => {
                *at += 1;
                if word == "self" && !prefix.is_empty() && path.len() == prefix.len() {
                    // `{self, ..}`: the prefix itself.
                } else {
                    path.push(word.clone());
                }
                if tokens.get(*at) == Some(&Token::PathSep) {
                    *at += 1;
                    continue;
                }
                let mut name = path.last().cloned();
                if let (Some(Token::Ident(kw)), Some(Token::Ident(alias))) =
                    (tokens.get(*at), tokens.get(*at + 1))
                {
                    if kw == "as" {
                        name = Some(alias.clone());
                        *at += 2;
                    }
                }
                out.push((path, name));
                return;
            }
            Some(Token::Star) => {
                *at += 1;
                out.push((path, None));
                return;
            }
            Some(Token::Open) => {
                *at += 1;
                while !matches!(tokens.get(*at), Some(Token::Close) | None) {
                    use_tree(tokens, at, &path, out);
                    if tokens.get(*at) == Some(&Token::Comma) {
                        *at += 1;
                    }
                }
                *at += 1;
                return;
            }
            _ => return,
        }
    }
}

/// Every daemon module a file references: absolute module paths (from the crate root),
/// possibly ending in an item's name.
fn references(file: &SourceFile) -> Vec<Vec<String>> {
    let tokens = tokens(&file.text);
    let file_module = module_of(&file.path);
    // The scope a path is read in: the file's module plus the inline modules open here.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut children: BTreeSet<String> = BTreeSet::new();
    let mut bound: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut out = Vec::new();
    let scope = |inline: &[(String, usize)]| -> Vec<String> {
        let mut s = file_module.clone();
        s.extend(inline.iter().map(|(n, _)| n.clone()));
        s
    };
    // A path as written, made absolute; `None` when it leaves the crate (std, a
    // dependency) or is a name not known to be a module.
    let absolute = |scope: &[String],
                    children: &BTreeSet<String>,
                    bound: &BTreeMap<String, Vec<String>>,
                    path: &[String]|
     -> Option<Vec<String>> {
        let first = path.first()?;
        let mut abs: Vec<String>;
        let mut rest = &path[1..];
        match first.as_str() {
            "crate" => abs = Vec::new(),
            "self" => abs = scope.to_vec(),
            "super" => {
                abs = scope.to_vec();
                abs.pop()?;
                while rest.first().map(String::as_str) == Some("super") {
                    abs.pop()?;
                    rest = &rest[1..];
                }
            }
            name if children.contains(name) => {
                abs = scope.to_vec();
                abs.push(name.to_string());
            }
            name => abs = bound.get(name)?.clone(),
        }
        abs.extend(rest.iter().cloned());
        Some(abs)
    };
    let mut at = 0;
    while at < tokens.len() {
        match &tokens[at] {
            Token::Open => {
                depth += 1;
                at += 1;
            }
            Token::Close => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                at += 1;
            }
            Token::Ident(word) if word == "mod" => {
                if let Some(Token::Ident(name)) = tokens.get(at + 1) {
                    match tokens.get(at + 2) {
                        Some(Token::Open) => {
                            inline.push((name.clone(), depth));
                            depth += 1;
                            at += 3;
                            continue;
                        }
                        Some(Token::Semi) if inline.is_empty() => {
                            children.insert(name.clone());
                        }
                        _ => {}
                    }
                }
                at += 2;
            }
            Token::Ident(word) if word == "use" => {
                at += 1;
                let mut leaves = Vec::new();
                use_tree(&tokens, &mut at, &[], &mut leaves);
                let here = scope(&inline);
                for (path, name) in leaves {
                    if let Some(abs) = absolute(&here, &children, &bound, &path) {
                        if let Some(name) = name {
                            bound.insert(name, abs.clone());
                        }
                        out.push(abs);
                    }
                }
            }
            // `pub(in crate::daemon)` limits who sees an item; it imports nothing.
            Token::Ident(word) if word == "in" => {
                at += 1;
                while matches!(tokens.get(at), Some(Token::Ident(_) | Token::PathSep)) {
                    at += 1;
                }
            }
            Token::Ident(_) if at == 0 || tokens[at - 1] != Token::PathSep => {
                let mut path = Vec::new();
                while let Some(Token::Ident(w)) = tokens.get(at) {
                    path.push(w.clone());
                    at += 1;
                    if tokens.get(at) == Some(&Token::PathSep) {
                        at += 1;
                    } else {
                        break;
                    }
                }
                if path.len() > 1 {
                    let here = scope(&inline);
                    if let Some(abs) = absolute(&here, &children, &bound, &path) {
                        out.push(abs);
                    }
                }
            }
            _ => at += 1,
        }
    }
    out
}

/// File → the other daemon files it references.
fn graph(files: &[SourceFile]) -> BTreeMap<String, BTreeSet<String>> {
    let by_module: BTreeMap<Vec<String>, String> = files
        .iter()
        .map(|f| (module_of(&f.path), f.path.clone()))
        .collect();
    let mut edges = BTreeMap::new();
    for file in files {
        let mut targets = BTreeSet::new();
        for reference in references(file) {
            if reference.first().map(String::as_str) != Some("daemon") {
                continue;
            }
            // The longest prefix that is a file's module: the rest names items in it
            // (or inline modules, which belong to that file).
            let target = (1..=reference.len())
                .rev()
                .find_map(|n| by_module.get(&reference[..n]));
            if let Some(target) = target {
                if *target != file.path {
                    targets.insert(target.clone());
                }
            }
        }
        edges.insert(file.path.clone(), targets);
    }
    edges
}

/// The groups of files that reach each other (strongly connected components of more
/// than one file), each with one cycle through it spelled out.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(f) = todo.pop() {
            for t in edges.get(&f).into_iter().flatten() {
                if seen.insert(t.clone()) {
                    todo.push(t.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        edges.keys().map(|f| (f, reach(f))).collect();
    let mut done = BTreeSet::new();
    let mut found = Vec::new();
    for f in edges.keys() {
        if done.contains(f) || !reaches[f].contains(f) {
            continue;
        }
        let group: BTreeSet<String> = reaches[f]
            .iter()
            .filter(|g| reaches[g].contains(f))
            .cloned()
            .collect();
        done.extend(group.iter().cloned());
        // One cycle: the shortest way back to f, breadth first inside the group.
        let mut back: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([f.clone()]);
        let mut last = None;
        while let Some(g) = queue.pop_front() {
            let mut closing = false;
            for t in &edges[&g] {
                if t == f {
                    last = Some(g.clone());
                    closing = true;
                    break;
                }
                if group.contains(t) && !back.contains_key(t) {
                    back.insert(t.clone(), g.clone());
                    queue.push_back(t.clone());
                }
            }
            if closing {
                break;
            }
        }
        let mut path = vec![f.clone()];
        let mut g = last.expect("f reaches itself inside its group");
        while g != *f {
            path.push(g.clone());
            g = back[&g].clone();
        }
        path[1..].reverse();
        path.push(f.clone());
        found.push(format!("{} (a cycle among {:?})", path.join(" -> "), group));
    }
    // The pairs that import each other, spelled out: the first thing to break.
    for (from, targets) in edges {
        for to in targets {
            if from < to && edges.get(to).is_some_and(|back| back.contains(from)) {
                found.push(format!("{from} <-> {to}"));
            }
        }
    }
    found
}

/// References that cross the privilege boundary or go up from the shared pieces.
fn crossings(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut found = Vec::new();
    for (from, targets) in edges {
        for to in targets {
            let (a, b) = (layer_of(from), layer_of(to));
            if !may_use(a, b) {
                found.push(format!("{from} ({a:?}) uses {to} ({b:?})"));
            }
        }
    }
    found
}

fn read_tree(root: &Path, dir: &Path, out: &mut Vec<SourceFile>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            read_tree(root, &path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            let relative = path.strip_prefix(root).expect("below the root");
            out.push(SourceFile {
                path: relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/"),
                text: fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
            });
        }
    }
}

fn daemon_files() -> Vec<SourceFile> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/daemon");
    let mut files = Vec::new();
    read_tree(&root, &root, &mut files);
    assert!(
        files.iter().any(|f| f.path == "mod.rs"),
        "src/daemon/mod.rs not found"
    );
    files
}

#[test]
fn no_daemon_file_imports_a_file_that_imports_it_back() {
    let found = cycles(&graph(&daemon_files()));
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn parent_and_engine_use_only_their_own_files_and_the_shared_ones() {
    let found = crossings(&graph(&daemon_files()));
    assert!(
        found.is_empty(),
        "references across the layers:\n{}",
        found.join("\n")
    );
}

/// The two processes are folders of their own, so the rule above has something to
/// hold (an empty `parent/` would pass it trivially).
#[test]
fn each_process_has_its_folder() {
    let files = daemon_files();
    for folder in ["parent/", "engine/"] {
        let count = files.iter().filter(|f| f.path.starts_with(folder)).count();
        assert!(count > 1, "src/daemon/{folder} holds {count} files");
    }
}

// The checker itself, on made-up trees: it must see what it is there to see.

fn tree(files: &[(&str, &str)]) -> Vec<SourceFile> {
    files
        .iter()
        .map(|(path, text)| SourceFile {
            path: path.to_string(),
            text: text.to_string(),
        })
        .collect()
}

#[test]
fn the_checker_finds_a_cycle_through_three_files_and_a_grouped_use() {
    let files = tree(&[
        ("mod.rs", "mod a; mod b; mod c; pub use a::Thing;"),
        (
            "a.rs",
            "use super::{b::Other, b as bee};\npub struct Thing;",
        ),
        ("b.rs", "pub fn f() { super::c::g(); }"),
        (
            "c.rs",
            "use crate::daemon::a as first;\nfn g() { let _ = first::Thing; }",
        ),
    ]);
    let found = cycles(&graph(&files));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("a.rs -> b.rs -> c.rs -> a.rs"),
        "{found:?}"
    );
}

#[test]
fn the_checker_skips_comments_strings_and_declarations() {
    let files = tree(&[
        ("mod.rs", "mod a; mod b;"),
        (
            "a.rs",
            "//! See [`super::b`].\nuse super::b::X;\n/* super::b::Y */",
        ),
        (
            "b.rs",
            "/// [`super::a::Z`]\npub(in crate::daemon) fn g() {}\nconst S: &str = \"super::a::Z\";\nconst R: &str = r#\"super::a\"#;\nconst C: char = '\"'; fn f<'a>(_: &'a str) {}",
        ),
    ]);
    let edges = graph(&files);
    assert_eq!(edges["a.rs"], BTreeSet::from(["b.rs".to_string()]));
    assert_eq!(edges["b.rs"], BTreeSet::new());
    assert!(edges["mod.rs"].is_empty());
    assert!(cycles(&edges).is_empty());
}

#[test]
fn the_checker_reads_super_inside_an_inline_module() {
    let files = tree(&[
        ("privsep/mod.rs", "pub mod channel; pub mod message;"),
        ("privsep/message.rs", "pub struct M;"),
        (
            "privsep/channel.rs",
            "#[cfg(test)]\nmod tests {\n use super::super::message::M;\n use super::*;\n}\nfn x() {}",
        ),
    ]);
    let edges = graph(&files);
    assert_eq!(
        edges["privsep/channel.rs"],
        BTreeSet::from(["privsep/message.rs".to_string()])
    );
}

#[test]
fn the_checker_sees_the_boundary_crossed_both_ways_and_upwards() {
    let files = tree(&[
        (
            "mod.rs",
            "pub mod parent; pub mod engine; pub mod start; pub mod log;",
        ),
        ("start.rs", "use super::parent::Parent;"),
        ("parent/mod.rs", "mod process;"),
        (
            "parent/process.rs",
            "use crate::daemon::engine::process::E;",
        ),
        ("engine/mod.rs", "mod process;"),
        (
            "engine/process.rs",
            "fn f() { crate::daemon::parent::process::g(); }",
        ),
        ("log.rs", "use super::start::run;"),
    ]);
    let found = crossings(&graph(&files));
    assert_eq!(
        found,
        vec![
            "engine/process.rs (Engine) uses parent/process.rs (Parent)",
            "log.rs (Shared) uses start.rs (Above)",
            "parent/process.rs (Parent) uses engine/process.rs (Engine)",
        ]
    );
}
