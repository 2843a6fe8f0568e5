//! The module tree of each crate target, built from `mod` declarations the way rustc finds files,
//! with what each module defines and imports, so that a path can be resolved to the module it
//! reaches.

use std::collections::{BTreeMap, BTreeSet};

use syn::visit::Visit;

use crate::{is_cfg_test, tokens, Error, Parsed};

/// Index into [`ModuleTree::modules`]; the crate root is 0.
pub(crate) type ModuleId = usize;

/// Re-exports and globs are followed at most this deep, which also ends import loops.
const MAX_RESOLVE_DEPTH: usize = 16;

/// What a name brought in by `use` stands for.
#[derive(Debug, Clone)]
pub(crate) enum Binding {
    /// A path inside this crate, from the crate root (without `crate`).
    Local(Vec<String>),
    /// Another crate's item (or something this check cannot place).
    External,
}

/// One module: a file module or an inline `mod x { … }`. (No `Debug`: syn's items have it only
/// with its `extra-traits` feature, which nothing here needs.)
pub(crate) struct Module<'a> {
    /// Names from the crate root: empty for the root, `["routes", "auth"]` below it.
    pub(crate) path: Vec<String>,
    pub(crate) parent: Option<ModuleId>,
    pub(crate) children: BTreeMap<String, ModuleId>,
    /// The file its code is written in (an inline module's is its parent's).
    pub(crate) file: String,
    /// Its own items: neither `mod` items (children are modules of their own) nor
    /// `#[cfg(test)]` items.
    pub(crate) items: Vec<&'a syn::Item>,
    /// Names of the items it defines (functions, types, constants, macros…).
    defined: BTreeSet<String>,
    /// Names its `use` items bring in.
    bindings: BTreeMap<String, Binding>,
    /// Paths (from the crate root) of the modules it glob-imports from.
    globs: Vec<Vec<String>>,
}

/// The modules of one crate target (a library, or one binary).
pub(crate) struct ModuleTree<'a> {
    /// The target's root file (`crates/server/src/lib.rs`), which names the tree in reports.
    pub(crate) root_file: String,
    pub(crate) modules: Vec<Module<'a>>,
}

/// A path written in a module's code, before resolution.
#[derive(Debug, Clone)]
pub(crate) struct Reference {
    pub(crate) segments: Vec<String>,
    pub(crate) line: usize,
}

/// The root files of every crate target: `src/lib.rs`, `src/main.rs`, `src/bin/*.rs` and
/// `src/bin/*/main.rs` of each `crates/*`.
pub(crate) fn target_roots(parsed: &Parsed) -> Vec<String> {
    parsed
        .keys()
        .filter(|path| {
            let parts: Vec<&str> = path.split('/').collect();
            match parts.as_slice() {
                ["crates", _, "src", rest @ ..] => matches!(
                    rest,
                    ["lib.rs"] | ["main.rs"] | ["bin", _] | ["bin", _, "main.rs"]
                ),
                _ => false,
            }
        })
        .cloned()
        .collect()
}

impl<'a> ModuleTree<'a> {
    /// Builds the tree of the target rooted at `root_file`.
    pub(crate) fn build(parsed: &'a Parsed, root_file: &str) -> Result<Self, Error> {
        let mut tree = ModuleTree {
            root_file: root_file.to_owned(),
            modules: Vec::new(),
        };
        let root = &parsed[root_file];
        tree.add_module(
            parsed,
            Vec::new(),
            None,
            root_file,
            &root.items,
            parent_dir(root_file),
        )?;
        Ok(tree)
    }

    /// Adds a module and, depth first, its children. `child_dir` is where its `mod x;`
    /// declarations look for `x.rs` or `x/mod.rs`.
    fn add_module(
        &mut self,
        parsed: &'a Parsed,
        path: Vec<String>,
        parent: Option<ModuleId>,
        file: &str,
        items: &'a [syn::Item],
        child_dir: String,
    ) -> Result<ModuleId, Error> {
        let id = self.modules.len();
        self.modules.push(Module {
            path: path.clone(),
            parent,
            children: BTreeMap::new(),
            file: file.to_owned(),
            items: Vec::new(),
            defined: BTreeSet::new(),
            bindings: BTreeMap::new(),
            globs: Vec::new(),
        });
        // Children first, so that `use child::X` finds `child` wherever `mod child;` is written.
        for item in items {
            let syn::Item::Mod(module) = item else {
                continue;
            };
            if is_cfg_test(&module.attrs) {
                continue;
            }
            let name = module.ident.to_string();
            let mut child_path = path.clone();
            child_path.push(name.clone());
            let child = match &module.content {
                Some((_, inner)) => self.add_module(
                    parsed,
                    child_path,
                    Some(id),
                    file,
                    inner,
                    format!("{child_dir}/{name}"),
                )?,
                None => {
                    let (child_file, grandchild_dir) =
                        locate_module_file(parsed, file, &child_dir, module)?;
                    let child_items = &parsed[&child_file].items;
                    self.add_module(
                        parsed,
                        child_path,
                        Some(id),
                        &child_file,
                        child_items,
                        grandchild_dir,
                    )?
                }
            };
            self.modules[id].children.insert(name, child);
        }
        for item in items {
            if !matches!(item, syn::Item::Mod(_)) && !is_cfg_test(item_attrs(item)) {
                self.add_item(id, item);
            }
        }
        Ok(id)
    }

    fn add_item(&mut self, id: ModuleId, item: &'a syn::Item) {
        if let Some(name) = defined_name(item) {
            self.modules[id].defined.insert(name);
        }
        if let syn::Item::Use(item_use) = item {
            for import in flatten_use(&item_use.tree, item_use.leading_colon.is_some()) {
                let absolute = if import.external {
                    None
                } else {
                    self.absolute(id, &import.segments)
                };
                match (import.name, absolute) {
                    (UseName::Glob, Some(target)) => self.modules[id].globs.push(target),
                    (UseName::Glob, None) => {}
                    (UseName::Named(name), target) => {
                        let binding = target.map_or(Binding::External, Binding::Local);
                        self.modules[id].bindings.insert(name, binding);
                    }
                    (UseName::Underscore, _) => {}
                }
            }
        }
        self.modules[id].items.push(item);
    }

    /// The path from the crate root that `segments`, written in module `id`, stands for, if it
    /// starts with `crate`, `self`, `super` or a child module's name. `None` for any other path
    /// (another crate, a local name, a prelude name).
    pub(crate) fn absolute(&self, id: ModuleId, segments: &[String]) -> Option<Vec<String>> {
        let first = segments.first()?;
        match first.as_str() {
            "crate" => Some(segments[1..].to_vec()),
            "self" => {
                let mut absolute = self.modules[id].path.clone();
                absolute.extend_from_slice(&segments[1..]);
                Some(absolute)
            }
            "super" => {
                let mut module = id;
                let mut rest = segments;
                while rest.first().is_some_and(|segment| segment == "super") {
                    module = self.modules[module].parent?;
                    rest = &rest[1..];
                }
                let mut absolute = self.modules[module].path.clone();
                absolute.extend_from_slice(rest);
                Some(absolute)
            }
            name if self.modules[id].children.contains_key(name) => {
                let mut absolute = self.modules[id].path.clone();
                absolute.extend_from_slice(segments);
                Some(absolute)
            }
            _ => None,
        }
    }

    /// The absolute path a reference written in module `id` reaches, if it is one of this
    /// crate's: prefixed paths, and unprefixed ones that a glob import of `id` provides. Names
    /// starting with a lowercase letter alone (`config`) are not taken from globs: they are far
    /// more often a local variable than an imported function.
    pub(crate) fn reference_target(
        &self,
        id: ModuleId,
        reference: &Reference,
    ) -> Option<Vec<String>> {
        if let Some(absolute) = self.absolute(id, &reference.segments) {
            return Some(absolute);
        }
        let first = reference.segments.first()?;
        let lone_lowercase =
            reference.segments.len() == 1 && first.chars().next().is_some_and(|c| c.is_lowercase());
        if lone_lowercase || self.modules[id].bindings.contains_key(first) {
            return None;
        }
        let module = &self.modules[id];
        module.globs.iter().find_map(|glob| {
            let glob_module = self.resolve_exact(glob)?;
            self.provides(glob_module, first).then(|| {
                let mut absolute = glob.clone();
                absolute.extend_from_slice(&reference.segments);
                absolute
            })
        })
    }

    /// The module an absolute path reaches: the deepest module it names, after following
    /// re-exports and globs; an item's path reaches the module that holds the item.
    pub(crate) fn resolve(&self, segments: &[String]) -> ModuleId {
        self.resolve_from_depth(segments, 0)
    }

    fn resolve_from_depth(&self, segments: &[String], depth: usize) -> ModuleId {
        let mut current = 0;
        for (index, segment) in segments.iter().enumerate() {
            let module = &self.modules[current];
            if let Some(&child) = module.children.get(segment) {
                current = child;
                continue;
            }
            if module.defined.contains(segment) || depth >= MAX_RESOLVE_DEPTH {
                return current;
            }
            let rest = &segments[index + 1..];
            match module.bindings.get(segment) {
                Some(Binding::Local(target)) => {
                    let mut next = target.clone();
                    next.extend_from_slice(rest);
                    return self.resolve_from_depth(&next, depth + 1);
                }
                Some(Binding::External) => return current,
                None => {}
            }
            for glob in &module.globs {
                let Some(glob_module) = self.resolve_exact(glob) else {
                    continue;
                };
                if glob_module != current && self.provides(glob_module, segment) {
                    let mut next = glob.clone();
                    next.extend_from_slice(&segments[index..]);
                    return self.resolve_from_depth(&next, depth + 1);
                }
            }
            return current;
        }
        current
    }

    /// The module an absolute path names exactly (through child modules only).
    fn resolve_exact(&self, segments: &[String]) -> Option<ModuleId> {
        segments.iter().try_fold(0, |current, segment| {
            self.modules[current].children.get(segment).copied()
        })
    }

    fn provides(&self, id: ModuleId, name: &str) -> bool {
        let module = &self.modules[id];
        module.children.contains_key(name)
            || module.defined.contains(name)
            || module.bindings.contains_key(name)
    }

    /// Every path the module's own code writes (not its children's).
    pub(crate) fn references(&self, id: ModuleId) -> Vec<Reference> {
        let mut collector = ReferenceCollector::default();
        for item in &self.modules[id].items {
            collector.visit_item(item);
        }
        collector.found
    }
}

/// The directory of a file path (`crates/a/src/lib.rs` → `crates/a/src`).
fn parent_dir(file: &str) -> String {
    file.rsplit_once('/')
        .map_or_else(String::new, |(dir, _)| dir.to_owned())
}

/// Finds the file of `mod name;` declared in `declared_in`, honouring `#[path = "…"]`, and the
/// directory its own `mod` declarations look in.
fn locate_module_file(
    parsed: &Parsed,
    declared_in: &str,
    child_dir: &str,
    module: &syn::ItemMod,
) -> Result<(String, String), Error> {
    let name = module.ident.to_string();
    if let Some(explicit) = path_attribute(&module.attrs) {
        let file = normalize(&format!("{}/{explicit}", parent_dir(declared_in)));
        if parsed.contains_key(&file) {
            let dir = parent_dir(&file);
            return Ok((file, dir));
        }
        return Err(Error::MissingModule {
            declared_in: declared_in.to_owned(),
            name,
            candidates: file,
        });
    }
    let candidates = [
        format!("{child_dir}/{name}.rs"),
        format!("{child_dir}/{name}/mod.rs"),
    ];
    match candidates.iter().find(|file| parsed.contains_key(*file)) {
        Some(file) => Ok((file.clone(), format!("{child_dir}/{name}"))),
        None => Err(Error::MissingModule {
            declared_in: declared_in.to_owned(),
            name,
            candidates: candidates.join(", "),
        }),
    }
}

fn path_attribute(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|attr| match &attr.meta {
        syn::Meta::NameValue(pair) if pair.path.is_ident("path") => match &pair.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(text),
                ..
            }) => Some(text.value()),
            _ => None,
        },
        _ => None,
    })
}

/// Resolves `.` and `..` in a `/`-separated relative path.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}

pub(crate) fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    use syn::Item;
    match item {
        Item::Const(item) => &item.attrs,
        Item::Enum(item) => &item.attrs,
        Item::ExternCrate(item) => &item.attrs,
        Item::Fn(item) => &item.attrs,
        Item::ForeignMod(item) => &item.attrs,
        Item::Impl(item) => &item.attrs,
        Item::Macro(item) => &item.attrs,
        Item::Mod(item) => &item.attrs,
        Item::Static(item) => &item.attrs,
        Item::Struct(item) => &item.attrs,
        Item::Trait(item) => &item.attrs,
        Item::TraitAlias(item) => &item.attrs,
        Item::Type(item) => &item.attrs,
        Item::Union(item) => &item.attrs,
        Item::Use(item) => &item.attrs,
        _ => &[],
    }
}

fn defined_name(item: &syn::Item) -> Option<String> {
    use syn::Item;
    let ident = match item {
        Item::Const(item) => &item.ident,
        Item::Enum(item) => &item.ident,
        Item::Fn(item) => &item.sig.ident,
        Item::Macro(item) => item.ident.as_ref()?,
        Item::Static(item) => &item.ident,
        Item::Struct(item) => &item.ident,
        Item::Trait(item) => &item.ident,
        Item::TraitAlias(item) => &item.ident,
        Item::Type(item) => &item.ident,
        Item::Union(item) => &item.ident,
        _ => return None,
    };
    Some(ident.to_string())
}

/// What one leaf of a `use` tree brings in.
#[derive(Debug)]
pub(crate) enum UseName {
    Named(String),
    Glob,
    Underscore,
}

#[derive(Debug)]
pub(crate) struct UseLeaf {
    /// The full path written (for a glob, the module globbed; for `a::{self}`, `a`).
    pub(crate) segments: Vec<String>,
    pub(crate) name: UseName,
    /// `use ::x` names another crate.
    external: bool,
    line: usize,
}

/// The leaves of a `use` tree, groups expanded: `use crate::{a::X, b::{self, Y as Z}}` gives
/// `crate::a::X`, `crate::b` and `crate::b::Y` (bound as `Z`).
pub(crate) fn flatten_use(tree: &syn::UseTree, leading_colon: bool) -> Vec<UseLeaf> {
    let mut leaves = Vec::new();
    flatten_into(tree, &mut Vec::new(), None, leading_colon, &mut leaves);
    leaves
}

fn flatten_into(
    tree: &syn::UseTree,
    prefix: &mut Vec<String>,
    first_line: Option<usize>,
    external: bool,
    leaves: &mut Vec<UseLeaf>,
) {
    match tree {
        syn::UseTree::Path(path) => {
            let line = first_line.unwrap_or_else(|| path.ident.span().start().line);
            prefix.push(path.ident.to_string());
            flatten_into(&path.tree, prefix, Some(line), external, leaves);
            prefix.pop();
        }
        syn::UseTree::Name(name) => {
            let line = first_line.unwrap_or_else(|| name.ident.span().start().line);
            let ident = name.ident.to_string();
            let (segments, bound) = if ident == "self" {
                (prefix.clone(), prefix.last().cloned().unwrap_or_default())
            } else {
                let mut segments = prefix.clone();
                segments.push(ident.clone());
                (segments, ident)
            };
            leaves.push(UseLeaf {
                segments,
                name: UseName::Named(bound),
                external,
                line,
            });
        }
        syn::UseTree::Rename(rename) => {
            let line = first_line.unwrap_or_else(|| rename.ident.span().start().line);
            let mut segments = prefix.clone();
            let ident = rename.ident.to_string();
            if ident != "self" {
                segments.push(ident);
            }
            let name = if rename.rename == "_" {
                UseName::Underscore
            } else {
                UseName::Named(rename.rename.to_string())
            };
            leaves.push(UseLeaf {
                segments,
                name,
                external,
                line,
            });
        }
        syn::UseTree::Glob(glob) => {
            let line = first_line.unwrap_or_else(|| glob.star_token.span.start().line);
            leaves.push(UseLeaf {
                segments: prefix.clone(),
                name: UseName::Glob,
                external,
                line,
            });
        }
        syn::UseTree::Group(group) => {
            for inner in &group.items {
                flatten_into(inner, prefix, first_line, external, leaves);
            }
        }
    }
}

/// Collects the paths of a module's own items; skips child modules and `#[cfg(test)]` items.
#[derive(Debug, Default)]
struct ReferenceCollector {
    found: Vec<Reference>,
}

impl<'ast> Visit<'ast> for ReferenceCollector {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        if is_cfg_test(item_attrs(item)) {
            return;
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_item_mod(&mut self, _child: &'ast syn::ItemMod) {
        // A module inside a function body or an impl is rare; a module item at module level
        // is a child, walked as a module of its own.
    }

    fn visit_item_use(&mut self, item_use: &'ast syn::ItemUse) {
        if item_use.leading_colon.is_some() {
            return;
        }
        for leaf in flatten_use(&item_use.tree, false) {
            self.found.push(Reference {
                segments: leaf.segments,
                line: leaf.line,
            });
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() {
            if let Some(first) = path.segments.first() {
                self.found.push(Reference {
                    segments: path
                        .segments
                        .iter()
                        .map(|segment| segment.ident.to_string())
                        .collect(),
                    line: first.ident.span().start().line,
                });
            }
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        for path in tokens::paths_in(mac.tokens.clone()) {
            if matches!(path.segments[0].as_str(), "crate" | "super" | "self") {
                self.found.push(Reference {
                    segments: path.segments,
                    line: path.line,
                });
            }
        }
    }
}
