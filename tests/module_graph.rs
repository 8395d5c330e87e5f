//! The top-level modules of the `pollbus` library form a DAG: no `crate::` import cycles.
//!
//! What it checks: every `src/**/*.rs` file except the crate roots (`lib.rs`, `main.rs`) belongs
//! to one top-level module (`src/poll.rs` → `poll`, `src/source/revel.rs` → `source`). The file
//! is tokenized with `proc-macro2`, so comments are dropped and string literals (doc comments
//! included) are single tokens that are never looked into. Every path that starts with `crate::`
//! — in `use` lines, in groups such as `use crate::{a::x, b}` (each item of the group counts), in
//! code (`crate::metrics::Metrics::new()`), and inside macro invocations — adds an edge from the
//! file's top-level module to the module named after `crate::`; so does a `super::super::…` chain
//! long enough to reach the crate root (the depth of the file and of inline `mod name { … }`
//! blocks is counted). References from a module to itself are not edges. The test prints every
//! edge with the file and line of its first reference and fails if the graph has a cycle, naming
//! the cycle (`config -> sink -> config`) with a file and line for each edge.
//!
//! What it does not check: shorter `super::` and `self::` paths (they stay inside the top-level
//! module), `$crate` in macro definitions, `#[path = "…"]` module files (none in `src/`), names
//! brought in by a glob or re-export (`crate::a::X` where `a` re-exports `b::X` is an edge to `a`,
//! which is what a reader sees), references through `pollbus::` (only the binary's tests, the
//! integration tests and benches use that name, and they are outside the library), and cycles
//! between submodules of one top-level module.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use proc_macro2::{Delimiter, TokenStream, TokenTree};

/// Where a reference between two top-level modules was found first.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Site {
    file: String,
    line: usize,
}

/// Edges between top-level modules, each with the first place that creates it.
type Graph = BTreeMap<(String, String), Site>;

/// The top-level module a file under `src/` belongs to; `None` for the crate roots.
fn top_level_module(relative: &Path) -> Option<String> {
    let mut components = relative.components();
    let first = components.next()?.as_os_str().to_str()?.to_owned();
    if components.next().is_some() {
        return Some(first);
    }
    let stem = first.strip_suffix(".rs")?;
    match stem {
        "lib" | "main" => None,
        _ => Some(stem.to_owned()),
    }
}

/// Every reference to a top-level module in the source of a file whose module is `depth` levels
/// below the crate root, with its line, in source order: `crate::<module>` paths, and `super::`
/// chains that climb to the crate root (counting inline `mod name { … }` blocks).
fn crate_references(source: &str, depth: usize) -> Result<Vec<(String, usize)>, String> {
    let tokens =
        TokenStream::from_str(source).map_err(|error| format!("cannot tokenize: {error}"))?;
    let mut found = Vec::new();
    collect(tokens, depth, &mut found);
    Ok(found)
}

fn collect(tokens: TokenStream, depth: usize, found: &mut Vec<(String, usize)>) {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let mut index = 0;
    while index < tokens.len() {
        match &tokens[index] {
            TokenTree::Group(group) => {
                // `mod name { … }` nests one level deeper.
                let inline_module = index >= 2
                    && matches!(&tokens[index - 2], TokenTree::Ident(i) if i == "mod")
                    && group.delimiter() == Delimiter::Brace;
                collect(group.stream(), depth + usize::from(inline_module), found);
            }
            TokenTree::Ident(ident) if ident == "crate" => {
                let after_dollar = index > 0
                    && matches!(&tokens[index - 1], TokenTree::Punct(p) if p.as_char() == '$');
                if !after_dollar && is_path_separator(&tokens[index + 1..]) {
                    heads_after(&tokens[index + 3..], ident.span().start().line, found);
                }
            }
            TokenTree::Ident(ident) if ident == "super" && !follows_separator(&tokens[..index]) => {
                // Count the chain `super::super::…`; it reaches the crate root at `depth` steps.
                let mut steps = 1;
                let mut next = index + 1;
                while is_path_separator(&tokens[next..])
                    && matches!(tokens.get(next + 2), Some(TokenTree::Ident(i)) if i == "super")
                {
                    steps += 1;
                    next += 3;
                }
                if steps == depth && is_path_separator(&tokens[next..]) {
                    heads_after(&tokens[next + 2..], ident.span().start().line, found);
                }
                index = next;
                continue;
            }
            _ => {}
        }
        index += 1;
    }
}

/// The module (or the modules of a `{…}` group) that starts `tokens`, right after `crate::`.
fn heads_after(tokens: &[TokenTree], line: usize, found: &mut Vec<(String, usize)>) {
    match tokens.first() {
        Some(TokenTree::Ident(module)) => found.push((module.to_string(), line)),
        Some(TokenTree::Group(group)) if group.delimiter() == Delimiter::Brace => {
            for module in group_heads(group.stream()) {
                found.push((module, line));
            }
        }
        _ => {}
    }
}

/// `::` at the end of `tokens` (the ident after it is not the start of a path).
fn follows_separator(tokens: &[TokenTree]) -> bool {
    matches!(
        tokens,
        [.., TokenTree::Punct(a), TokenTree::Punct(b)] if a.as_char() == ':' && b.as_char() == ':'
    )
}

/// `::` at the start of `tokens`.
fn is_path_separator(tokens: &[TokenTree]) -> bool {
    matches!(
        tokens,
        [TokenTree::Punct(a), TokenTree::Punct(b), ..] if a.as_char() == ':' && b.as_char() == ':'
    )
}

/// The first identifier of each comma-separated item of a `use` group (`{a::x, b, c::{d, e}}` →
/// `a`, `b`, `c`). `self` names the crate root itself and is skipped.
fn group_heads(tokens: TokenStream) -> Vec<String> {
    let mut heads = Vec::new();
    let mut at_item_start = true;
    for token in tokens {
        match token {
            TokenTree::Punct(p) if p.as_char() == ',' => at_item_start = true,
            TokenTree::Ident(ident) if at_item_start => {
                at_item_start = false;
                if ident != "self" {
                    heads.push(ident.to_string());
                }
            }
            _ => at_item_start = false,
        }
    }
    heads
}

/// How many levels below the crate root the module of a file is: `a.rs` and `a/mod.rs` 1,
/// `a/b.rs` 2.
fn file_depth(relative: &Path) -> usize {
    let components = relative.components().count();
    if relative.file_name().is_some_and(|name| name == "mod.rs") {
        components - 1
    } else {
        components
    }
}

/// Builds the graph between top-level modules from `(path relative to src/, contents)` pairs.
/// Fails on a file that does not tokenize.
fn build_graph(files: &[(PathBuf, String)]) -> Result<Graph, String> {
    let mut graph = Graph::new();
    for (path, source) in files {
        let Some(from) = top_level_module(path) else {
            continue;
        };
        let shown = format!("src/{}", path.display());
        let references = crate_references(source, file_depth(path))
            .map_err(|error| format!("{shown}: {error}"))?;
        for (to, line) in references {
            if to == from {
                continue;
            }
            graph.entry((from.clone(), to)).or_insert_with(|| Site {
                file: shown.clone(),
                line,
            });
        }
    }
    Ok(graph)
}

/// One cycle of the graph as its edges in order, or `None` when the graph is a DAG.
fn find_cycle(graph: &Graph) -> Option<Vec<(String, String)>> {
    let mut adjacency: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in graph.keys() {
        adjacency.entry(from).or_default().push(to);
        adjacency.entry(to).or_default();
    }
    // Depth-first search; a back edge to a node on the current path closes a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks: BTreeMap<&str, Mark> = adjacency.keys().map(|node| (*node, Mark::New)).collect();
    fn visit<'a>(
        node: &'a str,
        adjacency: &BTreeMap<&'a str, Vec<&'a str>>,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<(String, String)>> {
        marks.insert(node, Mark::OnPath);
        path.push(node);
        for next in &adjacency[node] {
            match marks[next] {
                Mark::OnPath => {
                    let start = path.iter().position(|n| n == next).expect("on the path");
                    let mut cycle: Vec<&str> = path[start..].to_vec();
                    cycle.push(next);
                    return Some(
                        cycle
                            .windows(2)
                            .map(|w| (w[0].to_owned(), w[1].to_owned()))
                            .collect(),
                    );
                }
                Mark::New => {
                    if let Some(cycle) = visit(next, adjacency, marks, path) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(node, Mark::Done);
        None
    }
    let nodes: Vec<&str> = adjacency.keys().copied().collect();
    for node in nodes {
        if marks[node] == Mark::New {
            let mut path = Vec::new();
            if let Some(cycle) = visit(node, &adjacency, &mut marks, &mut path) {
                return Some(cycle);
            }
        }
    }
    None
}

/// `a -> b -> a`, then one `a -> b  (file:line)` line per edge.
fn describe_cycle(graph: &Graph, cycle: &[(String, String)]) -> String {
    let mut names: Vec<&str> = cycle.iter().map(|(from, _)| from.as_str()).collect();
    names.push(&cycle[0].0);
    let mut text = format!("module cycle: {}\n", names.join(" -> "));
    for edge in cycle {
        let site = &graph[edge];
        text.push_str(&format!(
            "  {} -> {}  ({}:{})\n",
            edge.0, edge.1, site.file, site.line
        ));
    }
    text
}

fn rust_files(dir: &Path, root: &Path, out: &mut Vec<(PathBuf, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, root, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let source = std::fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
            out.push((
                path.strip_prefix(root).expect("under src").to_path_buf(),
                source,
            ));
        }
    }
}

#[test]
fn top_level_modules_form_a_dag() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &src, &mut files);
    assert!(
        files.len() > 10,
        "found only {} files under {}",
        files.len(),
        src.display()
    );
    let graph = build_graph(&files).unwrap_or_else(|error| panic!("{error}"));

    println!("top-level module graph ({} edges):", graph.len());
    for ((from, to), site) in &graph {
        println!("  {from} -> {to}  ({}:{})", site.file, site.line);
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!("{}", describe_cycle(&graph, &cycle));
    }
}

fn tiny(files: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
    files
        .iter()
        .map(|(path, source)| (PathBuf::from(path), source.to_string()))
        .collect()
}

#[test]
fn the_check_finds_a_cycle_and_names_each_edge() {
    let files = tiny(&[
        (
            "lib.rs",
            "pub mod config; pub mod sink; use crate::sink::Sink;",
        ),
        (
            "config/mod.rs",
            "mod parse;\nuse crate::{clock::Clock, sink::servicebus::ConnectionString};",
        ),
        (
            "config/parse.rs",
            "// use crate::store::Store;\nconst S: &str = \"crate::store\";",
        ),
        (
            "sink/mod.rs",
            "mod stdout;\n\nfn f() { let _ = crate::config::load(); }",
        ),
        ("sink/stdout.rs", "use super::Sink;"),
        ("clock.rs", "macro_rules! m { () => { $crate::sink::x() } }"),
    ]);
    let graph = build_graph(&files).unwrap();
    let edges: Vec<(&str, &str)> = graph
        .keys()
        .map(|(from, to)| (from.as_str(), to.as_str()))
        .collect();
    // Comments, string literals, `$crate`, `super::` and the crate root add no edge.
    assert_eq!(
        edges,
        [("config", "clock"), ("config", "sink"), ("sink", "config")]
    );
    assert_eq!(
        graph[&("sink".into(), "config".into())],
        Site {
            file: "src/sink/mod.rs".into(),
            line: 3
        }
    );

    let cycle = find_cycle(&graph).expect("config and sink import each other");
    let text = describe_cycle(&graph, &cycle);
    assert!(
        text.starts_with("module cycle: config -> sink -> config\n"),
        "{text}"
    );
    assert!(
        text.contains("config -> sink  (src/config/mod.rs:2)"),
        "{text}"
    );
    assert!(
        text.contains("sink -> config  (src/sink/mod.rs:3)"),
        "{text}"
    );
}

#[test]
fn the_check_accepts_a_dag_and_reads_nested_groups() {
    let files = tiny(&[
        (
            "poll.rs",
            "use crate::{source::{Source, Page}, store::Store};",
        ),
        ("source/revel.rs", "use crate::{formats::datefmt, http};"),
        (
            "store/mod.rs",
            "pub(crate) use crate::formats::datefmt as d;",
        ),
    ]);
    let graph = build_graph(&files).unwrap();
    let edges: Vec<(&str, &str)> = graph
        .keys()
        .map(|(from, to)| (from.as_str(), to.as_str()))
        .collect();
    assert_eq!(
        edges,
        [
            ("poll", "source"),
            ("poll", "store"),
            ("source", "formats"),
            ("source", "http"),
            ("store", "formats")
        ]
    );
    assert_eq!(find_cycle(&graph), None);
}

#[test]
fn the_check_follows_super_chains_that_reach_the_crate_root() {
    let files = tiny(&[
        (
            "metrics.rs",
            "mod inner { use super::super::poll::PollReport; use super::Metrics; }",
        ),
        (
            "source/revel.rs",
            "use super::super::{http, record::Record};\nuse super::Source;",
        ),
        (
            "source/mod.rs",
            "#[cfg(test)]\nmod tests { use super::super::super::x; use super::*; }",
        ),
        (
            "store/sqlite/mod.rs",
            "mod tests { use super::super::super::detect; }",
        ),
        ("store/sqlite/pool.rs", "use super::super::budget;"),
    ]);
    let graph = build_graph(&files).unwrap();
    let edges: Vec<(&str, &str)> = graph
        .keys()
        .map(|(from, to)| (from.as_str(), to.as_str()))
        .collect();
    assert_eq!(
        edges,
        [
            ("metrics", "poll"),
            ("source", "http"),
            ("source", "record"),
            ("store", "detect")
        ]
    );
}
