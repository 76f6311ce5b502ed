//! The source tree's plan, checked: `src/shared` names neither program,
//! `src/device` never names the trainer, and no two modules use each other
//! (directly or around a longer loop). A module may use its enclosing
//! modules (`super::…`, items its parent re-exports): that is how Rust
//! modules share their parent's types, not a loop between peers.
//!
//! The check reads the `use` paths and `crate::…` / `super::…` paths of
//! every library file (test modules at the end of a file excluded: a test
//! may reach anywhere), resolves each to the deepest module that exists, and
//! looks for strongly connected groups of modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type ModPath = Vec<String>;

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/device/capture/mod.rs` → `[device, capture]`.
fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file
        .strip_prefix(src)
        .expect("under src")
        .with_extension("");
    let mut parts: ModPath = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The library's modules (binaries and the crate root excluded) and their
/// source without comments and without the trailing test module.
fn library_modules() -> BTreeMap<ModPath, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .iter()
        .filter(|f| !f.starts_with(src.join("bin")) && *f != &src.join("lib.rs"))
        .map(|f| {
            let text = std::fs::read_to_string(f).expect("read source");
            let code = match text.find("#[cfg(test)]\nmod tests") {
                Some(i) => &text[..i],
                None => &text[..],
            };
            let code: String = code
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            (module_of(&src, f), code)
        })
        .collect()
}

/// Every path in `code` that starts at `crate::` or `super::` (brace
/// groups expanded one level), as written.
fn rooted_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for root in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(root) {
            let start = from + i;
            from = start + root.len();
            let before = start.checked_sub(1).map(|b| bytes[b]);
            if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
                continue;
            }
            let rest = &code[start..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let head: Vec<String> = rest[..end]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            if rest[end..].starts_with('{') {
                let group = &rest[end + 1..rest[end..].find('}').map_or(rest.len(), |j| end + j)];
                for item in group.split(',') {
                    let mut path = head.clone();
                    path.extend(
                        item.trim()
                            .split("::")
                            .map(|s| s.split_whitespace().next().unwrap_or(""))
                            .filter(|s| !s.is_empty() && *s != "self")
                            .map(str::to_string),
                    );
                    out.push(path);
                }
            } else {
                out.push(head);
            }
        }
    }
    out
}

/// `use name::…;` lines that start at neither `crate` nor `super` (in a
/// mod.rs: a child module, or an external crate that `resolve` then
/// does not find among the modules).
fn child_uses(code: &str) -> Vec<Vec<String>> {
    code.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            l.strip_prefix("use ")
        })
        .filter(|rest| !rest.starts_with("crate::") && !rest.starts_with("super::"))
        .map(|rest| {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            rest[..end]
                .split("::")
                .filter(|s| !s.is_empty() && *s != "self")
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|p| !p.is_empty())
        .collect()
}

/// The child modules of `module` that its code names by a bare path
/// (`images::ImagesOpener::new(…)` in `capture/mod.rs`).
fn children_named(module: &ModPath, code: &str, modules: &BTreeSet<ModPath>) -> Vec<ModPath> {
    modules
        .iter()
        .filter(|c| c.len() == module.len() + 1 && c[..module.len()] == module[..])
        .filter(|c| {
            let token = format!("{}::", c[module.len()]);
            code.match_indices(&token).any(|(i, _)| {
                let before = code[..i].chars().next_back();
                !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == '_' || b == ':')
            })
        })
        .cloned()
        .collect()
}

/// The deepest existing module a path written in `module` names.
fn resolve(module: &ModPath, path: &[String], modules: &BTreeSet<ModPath>) -> Option<ModPath> {
    let mut full: ModPath = Vec::new();
    let mut rest = path;
    if rest.first().is_some_and(|p| p == "crate") {
        rest = &rest[1..];
    } else if rest.first().is_some_and(|p| p == "super") {
        // `super` is one level up from `module`, whether it is a file or a
        // folder's mod.rs
        full = module.clone();
        while rest.first().is_some_and(|p| p == "super") {
            full.pop();
            rest = &rest[1..];
        }
    } else {
        // `use child::…` in a folder's mod.rs: relative to the module
        full = module.clone();
    }
    full.extend(rest.iter().cloned());
    (1..=full.len())
        .rev()
        .map(|k| full[..k].to_vec())
        .find(|m| modules.contains(m))
}

/// Which modules each module uses (itself excluded).
fn use_graph() -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let sources = library_modules();
    let modules: BTreeSet<ModPath> = sources.keys().cloned().collect();
    sources
        .iter()
        .map(|(m, code)| {
            let mut uses: BTreeSet<ModPath> = rooted_paths(code)
                .into_iter()
                .chain(child_uses(code))
                .filter_map(|p| resolve(m, &p, &modules))
                .filter(|d| d != m)
                .collect();
            uses.extend(children_named(m, code, &modules));
            (m.clone(), uses)
        })
        .collect()
}

fn is_ancestor(a: &ModPath, b: &ModPath) -> bool {
    a.len() < b.len() && b[..a.len()] == a[..]
}

#[test]
fn shared_and_device_never_name_the_trainer() {
    let mut wrong = Vec::new();
    for (m, uses) in use_graph() {
        for d in uses {
            let forbidden = match m[0].as_str() {
                "shared" => d[0] == "device" || d[0] == "trainer",
                "device" => d[0] == "trainer",
                _ => false,
            };
            if forbidden {
                wrong.push(format!("{} uses {}", m.join("::"), d.join("::")));
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken: {wrong:#?}");
}

#[test]
fn no_module_import_circles() {
    // Tarjan's strongly connected components over "uses", edges to a
    // module's own ancestors left out.
    let graph: BTreeMap<ModPath, Vec<ModPath>> = use_graph()
        .into_iter()
        .map(|(m, uses)| {
            let peers = uses.into_iter().filter(|d| !is_ancestor(d, &m)).collect();
            (m, peers)
        })
        .collect();
    struct Tarjan<'a> {
        graph: &'a BTreeMap<ModPath, Vec<ModPath>>,
        index: BTreeMap<&'a ModPath, usize>,
        low: BTreeMap<&'a ModPath, usize>,
        stack: Vec<&'a ModPath>,
        circles: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a ModPath) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            for w in self.graph.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.stack.contains(&w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut group = Vec::new();
                while let Some(w) = self.stack.pop() {
                    group.push(w.join("::"));
                    if w == v {
                        break;
                    }
                }
                if group.len() > 1 {
                    self.circles.push(group);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph: &graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        circles: Vec::new(),
    };
    for m in graph.keys() {
        if !t.index.contains_key(m) {
            t.visit(m);
        }
    }
    assert!(
        t.circles.is_empty(),
        "modules using each other: {:#?}",
        t.circles
    );
}

/// The checker itself: it must see a circle and a layering break when
/// there is one (so the two tests above cannot pass by seeing nothing).
#[test]
fn the_checker_sees_paths() {
    let code = "use crate::shared::bbox::{BBox, Label};\nuse super::{frame, source::SourceConfig};\nlet x = crate::trainer::loss::f();";
    let paths = rooted_paths(code);
    assert!(paths.contains(&vec![
        "crate".into(),
        "shared".into(),
        "bbox".into(),
        "BBox".into()
    ]));
    assert!(paths.contains(&vec![
        "super".into(),
        "source".into(),
        "SourceConfig".into()
    ]));
    assert!(paths.contains(&vec![
        "crate".into(),
        "trainer".into(),
        "loss".into(),
        "f".into()
    ]));
    let graph = use_graph();
    let capture = vec!["device".to_string(), "capture".to_string()];
    let source = vec![
        "device".to_string(),
        "capture".to_string(),
        "source".to_string(),
    ];
    assert!(
        graph[&capture].contains(&source),
        "capture/mod.rs uses capture::source"
    );
    let config = vec!["device".to_string(), "config".to_string()];
    assert!(
        graph[&config].contains(&source),
        "config uses capture::source"
    );
}
