//! The schema as a graph of subschemas: which are applied to the same instance (in-place
//! applicators and `$ref`), which to parts of it (properties, items, …). Registration checks it
//! statically; every validation walks the instance over it first, counting.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::{Limits, SchemaError};

/// One subschema.
#[derive(Debug, Default)]
struct Node {
    /// JSON pointer into the document, as a URI fragment (`#`, `#/properties/x`).
    at: String,
    /// Applied to the same instance: `allOf`/`anyOf`/`oneOf`/`not`/`if`/`then`/`else`,
    /// `dependentSchemas`, and resolved `$ref`s.
    in_place: Vec<usize>,
    /// `properties`: applied to the value of that name.
    properties: Vec<(String, usize)>,
    /// `patternProperties`, `additionalProperties`, `unevaluatedProperties`: counted as applied
    /// to every value.
    each_value: Vec<usize>,
    /// `propertyNames`: applied to every name.
    names: Vec<usize>,
    /// `items` (one schema), `additionalItems`, `contains`, `unevaluatedItems`: every item.
    each_item: Vec<usize>,
    /// `prefixItems`, `items` (array form): item by item.
    prefix: Vec<usize>,
    /// Has `unevaluated*`: the validator re-evaluates in-place subschemas per member.
    unevaluated: bool,
    /// Checks strings against a pattern (`pattern`, `format: regex`).
    string_pattern: bool,
    /// Checks property names against patterns (`patternProperties`).
    name_pattern: bool,
    /// Cost weight of the string pattern (see [`crate::pattern_weight`]): a string of `n`
    /// characters costs `n × weight / PATTERN_CHARS_PER_STEP` steps.
    string_weight: u64,
    /// Sum of the weights of its `patternProperties` patterns, charged per property name.
    name_weight: u64,
    /// Length of its `enum`.
    enum_len: usize,
    /// `uniqueItems: true`.
    unique: bool,
}

/// The graph, with the expanded cost of every subschema reachable from the root.
#[derive(Debug)]
pub(crate) struct Graph {
    nodes: Vec<Node>,
    /// Every pattern in the document.
    patterns: Vec<Pattern>,
    /// Expanded size of each subschema (from the registration check), used to charge
    /// `unevaluated*` per member.
    expanded: Vec<u64>,
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// `%XX` decoding of a URI fragment (a JSON pointer in a `$ref` may be percent-encoded).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// One pattern of the document and where it applies.
#[derive(Debug)]
pub(crate) struct Pattern {
    /// The subschema that checks it.
    node: usize,
    /// JSON pointer of the pattern.
    pub(crate) at: String,
    /// The pattern text.
    pub(crate) text: String,
    /// A `patternProperties` key (checked against names) rather than a `pattern`.
    on_names: bool,
}

/// Characters of input one step of a weight-1 pattern covers: a pattern check costs about its
/// compiled size times the string's length, so it is charged by length, not as one step.
pub(crate) const PATTERN_CHARS_PER_STEP: u64 = 64;

/// Weight of `format: regex`: the instance string itself is compiled, as costly as the largest
/// pattern allowed.
const FORMAT_REGEX_WEIGHT: u64 = 8;

/// Keywords that make the validator's reference resolution (the `referencing` crate) see
/// something: wherever the graph does not model a subschema, these are refused, so the graph
/// and the validator can never resolve a reference differently.
const REFERENCE_KEYWORDS: &[&str] = &[
    "$ref",
    "$anchor",
    "$id",
    "$defs",
    "definitions",
    "$schema",
    "$dynamicRef",
    "$dynamicAnchor",
    "$recursiveRef",
    "$recursiveAnchor",
];

/// The `$schema` values accepted (`referencing` trims a trailing `#` the same way). Older
/// drafts resolve anchors differently (draft 4 reads `"id": "#x"` as an anchor and ignores
/// `$anchor`), which the graph does not model.
const SUPPORTED_DRAFTS: &[&str] = &[
    "https://json-schema.org/draft/2020-12/schema",
    "https://json-schema.org/draft/2019-09/schema",
];

/// The first reference keyword in `value` (recursively), as `(pointer, keyword)`.
fn find_reference_keyword(value: &Value, at: &str) -> Option<(String, String)> {
    match value {
        Value::Object(map) => {
            if let Some(k) = REFERENCE_KEYWORDS.iter().find(|k| map.contains_key(**k)) {
                return Some((at.to_owned(), (*k).to_owned()));
            }
            map.iter()
                .find_map(|(k, v)| find_reference_keyword(v, &format!("{at}/{}", escape(k))))
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| find_reference_keyword(v, &format!("{at}/{i}"))),
        _ => None,
    }
}

struct Builder<'a> {
    limits: &'a Limits,
    nodes: Vec<Node>,
    by_pointer: HashMap<String, usize>,
    anchors: HashMap<String, usize>,
    /// `(node, pointer of the $ref, reference)`, resolved once every node is known.
    refs: Vec<(usize, String, String)>,
    patterns: Vec<Pattern>,
}

impl Builder<'_> {
    /// Adds the subschema at `at` (and everything under it); returns its index.
    fn schema(&mut self, value: &Value, at: String, root: bool) -> Result<usize, SchemaError> {
        let index = self.nodes.len();
        self.nodes.push(Node {
            at: at.clone(),
            ..Node::default()
        });
        self.by_pointer.insert(at.clone(), index);
        let Value::Object(map) = value else {
            // `true`/`false` (or something the validator will refuse): a leaf.
            return Ok(index);
        };
        for keyword in [
            "$dynamicRef",
            "$recursiveRef",
            "$dynamicAnchor",
            "$recursiveAnchor",
        ] {
            if map.contains_key(keyword) {
                return Err(SchemaError::Unsupported {
                    at,
                    keyword: keyword.to_owned(),
                });
            }
        }
        // A nested `$id` starts a new resource whose references resolve against another base:
        // the graph would no longer be the validator's.
        if !root && map.get("$id").is_some_and(Value::is_string) {
            return Err(SchemaError::Unsupported {
                at,
                keyword: "$id".to_owned(),
            });
        }
        if let Some(draft) = map.get("$schema") {
            let known = draft
                .as_str()
                .is_some_and(|d| SUPPORTED_DRAFTS.contains(&d.trim_end_matches('#')));
            if !known {
                return Err(SchemaError::Unsupported {
                    at,
                    keyword: "$schema".to_owned(),
                });
            }
        }
        if let Some(anchor) = map.get("$anchor") {
            // A second anchor of the same name: the graph and `referencing` pick the last one
            // in different walk orders (depth- vs breadth-first), so which subschema `#name`
            // means would depend on who asks. Refused rather than guessed.
            let Value::String(anchor) = anchor else {
                return Err(SchemaError::Unsupported {
                    at,
                    keyword: "$anchor".to_owned(),
                });
            };
            if self.anchors.insert(anchor.clone(), index).is_some() {
                return Err(SchemaError::Unsupported {
                    at: format!("{at}/$anchor"),
                    keyword: "$anchor".to_owned(),
                });
            }
        }
        if let Some(Value::String(reference)) = map.get("$ref") {
            self.refs
                .push((index, format!("{at}/$ref"), reference.clone()));
        }
        if let Some(Value::Array(values)) = map.get("enum") {
            if values.len() > self.limits.max_enum_values {
                return Err(SchemaError::EnumTooLarge {
                    at: format!("{at}/enum"),
                    len: values.len(),
                    max: self.limits.max_enum_values,
                });
            }
            self.nodes[index].enum_len = values.len();
        }
        if let Some(Value::String(pattern)) = map.get("pattern") {
            self.patterns.push(Pattern {
                node: index,
                at: format!("{at}/pattern"),
                text: pattern.clone(),
                on_names: false,
            });
            self.nodes[index].string_pattern = true;
        }
        if map.get("format").and_then(Value::as_str) == Some("regex") {
            self.nodes[index].string_pattern = true;
            self.nodes[index].string_weight = FORMAT_REGEX_WEIGHT;
        }
        self.nodes[index].unique = map.get("uniqueItems") == Some(&Value::Bool(true));
        self.nodes[index].unevaluated =
            map.contains_key("unevaluatedProperties") || map.contains_key("unevaluatedItems");

        for (keyword, child) in map {
            let here = format!("{at}/{}", escape(keyword));
            match keyword.as_str() {
                "not" | "if" | "then" | "else" => {
                    let c = self.schema(child, here, false)?;
                    self.nodes[index].in_place.push(c);
                }
                "allOf" | "anyOf" | "oneOf" => {
                    for c in self.array(child, &here)? {
                        self.nodes[index].in_place.push(c);
                    }
                }
                "dependentSchemas" | "dependencies" => {
                    for (_, c) in self.map(child, &here, true)? {
                        self.nodes[index].in_place.push(c);
                    }
                }
                "properties" => {
                    let children = self.map(child, &here, false)?;
                    self.nodes[index].properties.extend(children);
                }
                "patternProperties" => {
                    if let Value::Object(entries) = child {
                        for key in entries.keys() {
                            self.patterns.push(Pattern {
                                node: index,
                                at: format!("{here}/{}", escape(key)),
                                text: key.clone(),
                                on_names: true,
                            });
                        }
                    }
                    self.nodes[index].name_pattern = true;
                    for (_, c) in self.map(child, &here, false)? {
                        self.nodes[index].each_value.push(c);
                    }
                }
                "additionalProperties" | "unevaluatedProperties" => {
                    let c = self.schema(child, here, false)?;
                    self.nodes[index].each_value.push(c);
                }
                "propertyNames" => {
                    let c = self.schema(child, here, false)?;
                    self.nodes[index].names.push(c);
                }
                "items" if child.is_array() => {
                    let children = self.array(child, &here)?;
                    self.nodes[index].prefix.extend(children);
                }
                "items" | "additionalItems" | "contains" | "unevaluatedItems" => {
                    let c = self.schema(child, here, false)?;
                    self.nodes[index].each_item.push(c);
                }
                "prefixItems" => {
                    let children = self.array(child, &here)?;
                    self.nodes[index].prefix.extend(children);
                }
                // Not applied where they stand; reachable only through `$ref`.
                "$defs" | "definitions" => {
                    self.map(child, &here, false)?;
                }
                // Keywords whose value is not a subschema the graph models (`contentSchema`,
                // `default`, unknown keywords, …): `referencing` may still walk some of them
                // (`contentSchema`) and register anchors there, so nothing in them may take
                // part in resolving references.
                _ => {
                    if let Some((at, keyword)) = find_reference_keyword(child, &here) {
                        return Err(SchemaError::Unsupported { at, keyword });
                    }
                }
            }
        }
        Ok(index)
    }

    fn array(&mut self, value: &Value, at: &str) -> Result<Vec<usize>, SchemaError> {
        let Value::Array(items) = value else {
            return Ok(Vec::new());
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| self.schema(item, format!("{at}/{i}"), false))
            .collect()
    }

    /// The subschemas of a keyword whose value maps names to schemas. With `schemas_only`,
    /// other values (the property lists of draft 7's `dependencies`) are skipped.
    fn map(
        &mut self,
        value: &Value,
        at: &str,
        schemas_only: bool,
    ) -> Result<Vec<(String, usize)>, SchemaError> {
        let Value::Object(entries) = value else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(entries.len());
        for (key, child) in entries {
            if schemas_only && !(child.is_object() || child.is_boolean()) {
                continue;
            }
            let c = self.schema(child, format!("{at}/{}", escape(key)), false)?;
            out.push((key.clone(), c));
        }
        Ok(out)
    }

    fn resolve(&self, at: &str, reference: &str) -> Result<usize, SchemaError> {
        let unresolved = || SchemaError::UnresolvedRef {
            at: at.to_owned(),
            reference: reference.to_owned(),
        };
        let Some(fragment) = reference.strip_prefix('#') else {
            return Err(SchemaError::RemoteRef {
                at: at.to_owned(),
                reference: reference.to_owned(),
            });
        };
        let fragment = percent_decode(fragment).ok_or_else(unresolved)?;
        if fragment.is_empty() || fragment.starts_with('/') {
            self.by_pointer
                .get(&format!("#{fragment}"))
                .copied()
                .ok_or_else(unresolved)
        } else {
            self.anchors.get(&fragment).copied().ok_or_else(unresolved)
        }
    }
}

/// In-place edges: one subschema's in-place children (its resolved `$ref` included).
fn find_in_place_cycle(nodes: &[Node]) -> Option<usize> {
    // Iterative colouring DFS: a document of 64 KiB can chain thousands of references.
    const WHITE: u8 = 0;
    const GREY: u8 = 1;
    const BLACK: u8 = 2;
    let mut colour = vec![WHITE; nodes.len()];
    for start in 0..nodes.len() {
        if colour[start] != WHITE {
            continue;
        }
        let mut stack = vec![(start, 0usize)];
        colour[start] = GREY;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&child) = nodes[node].in_place.get(*next) {
                *next += 1;
                match colour[child] {
                    WHITE => {
                        colour[child] = GREY;
                        stack.push((child, 0));
                    }
                    GREY => return Some(child),
                    _ => {}
                }
            } else {
                colour[node] = BLACK;
                stack.pop();
            }
        }
    }
    None
}

impl Node {
    fn children(&self) -> impl Iterator<Item = usize> + '_ {
        self.in_place
            .iter()
            .chain(self.properties.iter().map(|(_, c)| c))
            .chain(&self.each_value)
            .chain(&self.names)
            .chain(&self.each_item)
            .chain(&self.prefix)
            .copied()
    }

    /// What applying this subschema costs by itself, in steps.
    fn own_cost(&self) -> u64 {
        1 + (self.enum_len as u64) / 32
    }
}

struct Expansion<'a> {
    nodes: &'a [Node],
    limits: &'a Limits,
    memo: Vec<Option<u64>>,
    on_path: Vec<bool>,
}

impl Expansion<'_> {
    /// Size of the tree of subschemas met evaluating `node`, every `$ref` and applicator
    /// followed and shared subschemas counted once per path (memoised, so computing it is
    /// linear). A reference back to a subschema on the current path goes through an
    /// input-consuming keyword (in-place cycles were refused before): it counts one here and
    /// is bounded by the instance at validation time.
    fn size(&mut self, node: usize, depth: usize) -> Result<u64, SchemaError> {
        if depth > self.limits.max_expanded_depth {
            return Err(SchemaError::TooDeepExpanded {
                max: self.limits.max_expanded_depth,
            });
        }
        if let Some(size) = self.memo[node] {
            return Ok(size);
        }
        if self.on_path[node] {
            return Ok(1);
        }
        self.on_path[node] = true;
        let mut total = self.nodes[node].own_cost();
        let children: Vec<usize> = self.nodes[node].children().collect();
        for child in children {
            total = total.saturating_add(self.size(child, depth + 1)?);
            if total > self.limits.max_expanded_nodes {
                return Err(SchemaError::TooExpensive {
                    max: self.limits.max_expanded_nodes,
                });
            }
        }
        self.on_path[node] = false;
        self.memo[node] = Some(total);
        Ok(total)
    }
}

impl Graph {
    /// The registration check of the graph: references local and resolvable, no in-place
    /// cycle, expanded size and depth within the limits.
    pub(crate) fn build(schema: &Value, limits: &Limits) -> Result<Self, SchemaError> {
        let mut builder = Builder {
            limits,
            nodes: Vec::new(),
            by_pointer: HashMap::new(),
            anchors: HashMap::new(),
            refs: Vec::new(),
            patterns: Vec::new(),
        };
        builder.schema(schema, "#".to_owned(), true)?;
        let refs = std::mem::take(&mut builder.refs);
        for (node, at, reference) in refs {
            let target = builder.resolve(&at, &reference)?;
            builder.nodes[node].in_place.push(target);
        }
        let nodes = builder.nodes;
        if let Some(node) = find_in_place_cycle(&nodes) {
            return Err(SchemaError::Cycle {
                at: nodes[node].at.clone(),
            });
        }
        let mut expansion = Expansion {
            nodes: &nodes,
            limits,
            memo: vec![None; nodes.len()],
            on_path: vec![false; nodes.len()],
        };
        expansion.size(0, 0)?;
        let expanded = expansion.memo.iter().map(|m| m.unwrap_or(1)).collect();
        Ok(Self {
            nodes,
            patterns: builder.patterns,
            expanded,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    pub(crate) fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Records the cost weight of pattern `i` (of [`Self::patterns`]).
    pub(crate) fn set_pattern_weight(&mut self, i: usize, weight: u64) {
        let p = &self.patterns[i];
        let node = &mut self.nodes[p.node];
        if p.on_names {
            node.name_weight = node.name_weight.saturating_add(weight);
        } else {
            node.string_weight = node.string_weight.max(weight);
        }
    }

    /// Steps for checking `text` against patterns of total `weight`.
    fn pattern_steps(text: &str, weight: u64) -> u64 {
        (text.chars().count() as u64)
            .saturating_mul(weight)
            .div_ceil(PATTERN_CHARS_PER_STEP)
    }

    /// Walks `instance` over the graph, counting the subschema applications the validator may
    /// make (every branch, every pattern property on every value: an upper bound), refusing
    /// over [`Limits::max_eval_steps`] or a too-long string under a pattern.
    pub(crate) fn check_cost(&self, instance: &Value, limits: &Limits) -> Result<(), SchemaError> {
        let mut steps = 0u64;
        self.walk(0, instance, 0, &mut steps, limits)
    }

    fn charge(steps: &mut u64, by: u64, limits: &Limits) -> Result<(), SchemaError> {
        *steps = steps.saturating_add(by);
        if *steps > limits.max_eval_steps {
            return Err(SchemaError::InputTooCostly {
                max: limits.max_eval_steps,
            });
        }
        Ok(())
    }

    fn walk(
        &self,
        node: usize,
        instance: &Value,
        depth: usize,
        steps: &mut u64,
        limits: &Limits,
    ) -> Result<(), SchemaError> {
        // Recursion through the input is as deep as the input (serde_json stops at 128), times
        // the in-place chain per level; past this it is refused rather than risk the stack.
        if depth > 4 * limits.max_expanded_depth {
            return Err(SchemaError::InputTooCostly {
                max: limits.max_eval_steps,
            });
        }
        let n = &self.nodes[node];
        Self::charge(steps, n.own_cost(), limits)?;
        let too_long = |text: &str| text.chars().count() > limits.max_pattern_input_chars;
        if n.string_pattern {
            if let Value::String(text) = instance {
                if too_long(text) {
                    return Err(SchemaError::PatternInputTooLong {
                        max: limits.max_pattern_input_chars,
                    });
                }
                Self::charge(steps, Self::pattern_steps(text, n.string_weight), limits)?;
            }
        }
        for &child in &n.in_place {
            self.walk(child, instance, depth + 1, steps, limits)?;
        }
        match instance {
            Value::Object(map) => self.walk_object(node, map, depth, steps, limits)?,
            Value::Array(items) => {
                if n.unique {
                    Self::charge(steps, items.len() as u64, limits)?;
                }
                if n.unevaluated {
                    Self::charge(
                        steps,
                        (items.len() as u64).saturating_mul(self.expanded[node]),
                        limits,
                    )?;
                }
                for &child in &n.each_item {
                    for item in items {
                        self.walk(child, item, depth + 1, steps, limits)?;
                    }
                }
                for (&child, item) in n.prefix.iter().zip(items) {
                    self.walk(child, item, depth + 1, steps, limits)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn walk_object(
        &self,
        node: usize,
        map: &Map<String, Value>,
        depth: usize,
        steps: &mut u64,
        limits: &Limits,
    ) -> Result<(), SchemaError> {
        let n = &self.nodes[node];
        if n.name_pattern {
            Self::charge(steps, map.len() as u64, limits)?;
            if map
                .keys()
                .any(|k| k.chars().count() > limits.max_pattern_input_chars)
            {
                return Err(SchemaError::PatternInputTooLong {
                    max: limits.max_pattern_input_chars,
                });
            }
            for key in map.keys() {
                Self::charge(steps, Self::pattern_steps(key, n.name_weight), limits)?;
            }
        }
        if n.unevaluated {
            Self::charge(
                steps,
                (map.len() as u64).saturating_mul(self.expanded[node]),
                limits,
            )?;
        }
        for (name, child) in &n.properties {
            if let Some(value) = map.get(name) {
                self.walk(*child, value, depth + 1, steps, limits)?;
            }
        }
        for &child in &n.each_value {
            for value in map.values() {
                self.walk(child, value, depth + 1, steps, limits)?;
            }
        }
        for &child in &n.names {
            for name in map.keys() {
                self.walk(
                    child,
                    &Value::String(name.clone()),
                    depth + 1,
                    steps,
                    limits,
                )?;
            }
        }
        Ok(())
    }
}
