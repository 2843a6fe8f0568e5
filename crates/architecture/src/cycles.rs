//! Import cycles between sibling modules.
//!
//! For each module P of a crate target, the nodes are P's direct children, each standing for its
//! whole subtree. Code in module S reaching module T adds the edge A → B in the graph of their
//! lowest common ancestor P, where A and B are the children of P that contain S and T. When S or
//! T is P itself (a parent using a child, a child using `super::helper`), there is no edge. Every
//! strongly connected component of two or more children is one violation, keyed
//! `import-cycle <target root> crate::<P>::{a, b, …}`.

use std::collections::{BTreeMap, BTreeSet};

use crate::modules::{target_roots, ModuleId, ModuleTree};
use crate::{Error, Parsed, Violation};

/// Where an edge was seen first: enough for a developer to find and cut it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Evidence {
    file: String,
    line: usize,
    path: String,
}

/// Edges between the children of one parent, with the first evidence of each (by file, line).
type SiblingEdges = BTreeMap<(ModuleId, ModuleId), Evidence>;

/// The import cycles of every crate target of the workspace.
pub(crate) fn check(parsed: &Parsed) -> Result<Vec<Violation>, Error> {
    let mut violations = Vec::new();
    for root in target_roots(parsed) {
        let tree = ModuleTree::build(parsed, &root)?;
        violations.extend(cycles_of(&tree));
    }
    Ok(violations)
}

fn cycles_of(tree: &ModuleTree<'_>) -> Vec<Violation> {
    let mut edges_by_parent: BTreeMap<ModuleId, SiblingEdges> = BTreeMap::new();
    for source in 0..tree.modules.len() {
        for reference in tree.references(source) {
            let Some(absolute) = tree.reference_target(source, &reference) else {
                continue;
            };
            let target = tree.resolve(&absolute);
            let Some((parent, from, to)) = sibling_edge(tree, source, target) else {
                continue;
            };
            let evidence = Evidence {
                file: tree.modules[source].file.clone(),
                line: reference.line,
                path: reference.segments.join("::"),
            };
            edges_by_parent
                .entry(parent)
                .or_default()
                .entry((from, to))
                .and_modify(|kept| {
                    if evidence < *kept {
                        *kept = evidence.clone();
                    }
                })
                .or_insert(evidence);
        }
    }
    let mut violations = Vec::new();
    for (parent, edges) in &edges_by_parent {
        for component in strongly_connected(edges) {
            violations.push(describe(tree, *parent, &component, edges));
        }
    }
    violations
}

/// The parent and the two children of it that an edge from `source` to `target` joins, if
/// neither is the parent itself.
fn sibling_edge(
    tree: &ModuleTree<'_>,
    source: ModuleId,
    target: ModuleId,
) -> Option<(ModuleId, ModuleId, ModuleId)> {
    let source_line = ancestry(tree, source);
    let target_line = ancestry(tree, target);
    let shared = source_line
        .iter()
        .zip(&target_line)
        .take_while(|(a, b)| a == b)
        .count();
    let from = *source_line.get(shared)?;
    let to = *target_line.get(shared)?;
    Some((source_line[shared - 1], from, to))
}

/// The modules from the root down to `id`, both included.
fn ancestry(tree: &ModuleTree<'_>, id: ModuleId) -> Vec<ModuleId> {
    let mut line = vec![id];
    let mut current = id;
    while let Some(parent) = tree.modules[current].parent {
        line.push(parent);
        current = parent;
    }
    line.reverse();
    line
}

/// Tarjan's algorithm over one parent's children; only components of two or more, each sorted.
fn strongly_connected(edges: &SiblingEdges) -> Vec<Vec<ModuleId>> {
    let mut successors: BTreeMap<ModuleId, Vec<ModuleId>> = BTreeMap::new();
    for &(from, to) in edges.keys() {
        successors.entry(from).or_default().push(to);
        successors.entry(to).or_default();
    }
    let mut search = Tarjan {
        successors: &successors,
        next_index: 0,
        index: BTreeMap::new(),
        low_link: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for &node in successors.keys() {
        if !search.index.contains_key(&node) {
            search.visit(node);
        }
    }
    let mut components: Vec<Vec<ModuleId>> = search
        .components
        .into_iter()
        .filter(|component| component.len() > 1)
        .map(|mut component| {
            component.sort_unstable();
            component
        })
        .collect();
    components.sort();
    components
}

struct Tarjan<'e> {
    successors: &'e BTreeMap<ModuleId, Vec<ModuleId>>,
    next_index: usize,
    index: BTreeMap<ModuleId, usize>,
    low_link: BTreeMap<ModuleId, usize>,
    stack: Vec<ModuleId>,
    on_stack: BTreeSet<ModuleId>,
    components: Vec<Vec<ModuleId>>,
}

impl Tarjan<'_> {
    /// Recursive: its depth is bounded by the number of children of one module.
    fn visit(&mut self, node: ModuleId) {
        self.index.insert(node, self.next_index);
        self.low_link.insert(node, self.next_index);
        self.next_index += 1;
        self.stack.push(node);
        self.on_stack.insert(node);
        let successors = self.successors;
        for &next in successors.get(&node).into_iter().flatten() {
            if !self.index.contains_key(&next) {
                self.visit(next);
                let lowest = self.low_link[&node].min(self.low_link[&next]);
                self.low_link.insert(node, lowest);
            } else if self.on_stack.contains(&next) {
                let lowest = self.low_link[&node].min(self.index[&next]);
                self.low_link.insert(node, lowest);
            }
        }
        if self.low_link[&node] == self.index[&node] {
            let mut component = Vec::new();
            while let Some(member) = self.stack.pop() {
                self.on_stack.remove(&member);
                component.push(member);
                if member == node {
                    break;
                }
            }
            self.components.push(component);
        }
    }
}

fn module_name(tree: &ModuleTree<'_>, id: ModuleId) -> String {
    let mut name = String::from("crate");
    for segment in &tree.modules[id].path {
        name.push_str("::");
        name.push_str(segment);
    }
    name
}

fn describe(
    tree: &ModuleTree<'_>,
    parent: ModuleId,
    component: &[ModuleId],
    edges: &SiblingEdges,
) -> Violation {
    let mut members: Vec<String> = component
        .iter()
        .map(|&id| tree.modules[id].path.last().cloned().unwrap_or_default())
        .collect();
    members.sort();
    let key = format!(
        "import-cycle {} {}::{{{}}}",
        tree.root_file,
        module_name(tree, parent),
        members.join(", ")
    );
    let mut detail = format!(
        "  {} sibling modules of {} import each other in a circle; one reference per edge:\n",
        members.len(),
        module_name(tree, parent)
    );
    for ((from, to), evidence) in edges {
        if component.contains(from) && component.contains(to) {
            detail.push_str(&format!(
                "  {} -> {}: {}:{} `{}`\n",
                module_name(tree, *from),
                module_name(tree, *to),
                evidence.file,
                evidence.line,
                evidence.path
            ));
        }
    }
    Violation { key, detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Workspace;

    fn violations(sources: &[(&str, &str)]) -> Vec<Violation> {
        let workspace = Workspace::from_sources(sources.iter().copied());
        let parsed = crate::parse_all(&workspace).expect("sources parse");
        check(&parsed).expect("check runs")
    }

    fn keys(sources: &[(&str, &str)]) -> Vec<String> {
        violations(sources).into_iter().map(|v| v.key).collect()
    }

    #[test]
    fn a_two_cycle_is_found_with_evidence_for_each_edge() {
        let found = violations(&[
            ("crates/demo/src/lib.rs", "mod a;\nmod b;\n"),
            ("crates/demo/src/a.rs", "use crate::b::B;\npub struct A;\n"),
            (
                "crates/demo/src/b.rs",
                "pub struct B;\n\nfn f() -> crate::a::A { crate::a::A }\n",
            ),
        ]);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(
            found[0].key,
            "import-cycle crates/demo/src/lib.rs crate::{a, b}"
        );
        assert!(
            found[0]
                .detail
                .contains("crate::a -> crate::b: crates/demo/src/a.rs:1 `crate::b::B`"),
            "{}",
            found[0].detail
        );
        assert!(
            found[0]
                .detail
                .contains("crate::b -> crate::a: crates/demo/src/b.rs:3 `crate::a::A`"),
            "{}",
            found[0].detail
        );
    }

    #[test]
    fn a_three_cycle_through_super_and_expressions_is_found() {
        let found = keys(&[
            ("crates/demo/src/lib.rs", "mod outer;\n"),
            (
                "crates/demo/src/outer/mod.rs",
                "mod x;\nmod y;\nmod z;\nmod alone;\n",
            ),
            (
                "crates/demo/src/outer/x.rs",
                "pub fn fx() { super::y::fy() }\n",
            ),
            (
                "crates/demo/src/outer/y.rs",
                "pub fn fy() { let _ = crate::outer::z::Z { n: 1 }; }\n",
            ),
            (
                "crates/demo/src/outer/z.rs",
                "pub struct Z { pub n: u8 }\nfn g(v: self::Z) -> Option<super::x::Unit> { None }\n",
            ),
            (
                "crates/demo/src/outer/alone.rs",
                "fn h() { super::x::fx() }\n",
            ),
        ]);
        // `super::x::Unit` does not exist; it still names module x, which is what counts.
        assert_eq!(
            found,
            vec!["import-cycle crates/demo/src/lib.rs crate::outer::{x, y, z}"]
        );
    }

    #[test]
    fn parent_and_child_using_each_other_is_not_a_cycle() {
        let found = keys(&[
            (
                "crates/demo/src/lib.rs",
                "mod a;\nmod b;\npub fn helper() {}\npub fn run() { a::go(); b::go(); }\n",
            ),
            (
                "crates/demo/src/a.rs",
                "pub fn go() { super::helper(); crate::b::go(); }\n",
            ),
            (
                "crates/demo/src/b.rs",
                "use super::helper;\npub fn go() { helper(); crate::run(); }\n",
            ),
        ]);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn test_modules_imports_do_not_count() {
        let found = keys(&[
            ("crates/demo/src/lib.rs", "mod a;\nmod b;\n"),
            ("crates/demo/src/a.rs", "pub fn fa() { crate::b::fb() }\n"),
            (
                "crates/demo/src/b.rs",
                "pub fn fb() {}\n#[cfg(test)]\nmod tests {\n    use crate::a::fa;\n}\n#[cfg(test)]\nmod more_tests;\n",
            ),
        ]);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn grouped_use_is_followed() {
        let found = keys(&[
            ("crates/demo/src/lib.rs", "mod a;\nmod b;\nmod c;\n"),
            (
                "crates/demo/src/a.rs",
                "use crate::{b::{self, B}, c::C as Sea};\npub struct A;\n",
            ),
            ("crates/demo/src/b.rs", "pub struct B;\n"),
            (
                "crates/demo/src/c.rs",
                "use crate::{b::B, a::A};\npub struct C;\n",
            ),
        ]);
        assert_eq!(
            found,
            vec!["import-cycle crates/demo/src/lib.rs crate::{a, c}"]
        );
    }

    #[test]
    fn inline_modules_re_exports_and_macro_calls_are_followed() {
        let found = keys(&[
            (
                "crates/demo/src/lib.rs",
                "pub use shapes::Circle;\nmod shapes;\nmod draw {\n    pub fn pen() { println!(\"{}\", crate::shapes::area()) }\n}\n",
            ),
            ("crates/demo/src/shapes.rs", "pub struct Circle;\npub fn area() -> u8 { 0 }\nfn f(_: crate::draw::Pen) {}\n"),
        ]);
        // `crate::draw::Pen` names draw although Pen does not exist: a reference to the module.
        assert_eq!(
            found,
            vec!["import-cycle crates/demo/src/lib.rs crate::{draw, shapes}"]
        );

        let through_re_export = keys(&[
            ("crates/demo/src/lib.rs", "mod a;\nmod b;\npub use b::B;\n"),
            ("crates/demo/src/a.rs", "pub fn fa(_: crate::B) {}\n"),
            (
                "crates/demo/src/b.rs",
                "pub struct B;\nfn g() { crate::a::fa(B) }\n",
            ),
        ]);
        assert_eq!(
            through_re_export,
            vec!["import-cycle crates/demo/src/lib.rs crate::{a, b}"]
        );
    }

    #[test]
    fn glob_imports_of_the_parent_reach_what_the_parent_imports() {
        let found = keys(&[
            ("crates/demo/src/lib.rs", "mod a;\nmod b;\n"),
            (
                "crates/demo/src/a/mod.rs",
                "mod inner;\nuse crate::b::Thing;\npub fn fa() {}\n",
            ),
            (
                "crates/demo/src/a/inner.rs",
                "use super::*;\nfn f(_: Thing) {}\n",
            ),
            (
                "crates/demo/src/b.rs",
                "pub struct Thing;\nfn g() { crate::a::fa() }\n",
            ),
        ]);
        assert_eq!(
            found,
            vec!["import-cycle crates/demo/src/lib.rs crate::{a, b}"]
        );
    }

    #[test]
    fn each_binary_is_its_own_crate() {
        let found = keys(&[
            ("crates/demo/src/lib.rs", "pub mod a;\n"),
            ("crates/demo/src/a.rs", "pub fn fa() {}\n"),
            ("crates/demo/src/main.rs", "mod cli;\nmod run;\n"),
            (
                "crates/demo/src/cli.rs",
                "pub fn parse() { crate::run::go() }\n",
            ),
            (
                "crates/demo/src/run.rs",
                "pub fn go() { crate::cli::parse(); demo::a::fa() }\n",
            ),
        ]);
        assert_eq!(
            found,
            vec!["import-cycle crates/demo/src/main.rs crate::{cli, run}"]
        );
    }

    #[test]
    fn a_missing_module_file_is_an_error_not_a_pass() {
        let workspace = Workspace::from_sources([("crates/demo/src/lib.rs", "mod gone;\n")]);
        let parsed = crate::parse_all(&workspace).expect("sources parse");
        let error = check(&parsed).expect_err("missing module");
        assert!(
            error.to_string().contains("crates/demo/src/gone.rs"),
            "{error}"
        );
    }
}
