//! The hostile-schema corpus (`crates/schema/corpus/*.json`, written by `generate.py` there):
//! cycles, `$ref` to itself through applicators, fan-out, deep nesting, huge enums, slow
//! patterns with ~900 KB inputs, remote references. The unit tests, the API test, the fuzz
//! target's seeds, the probe and the benchmark all read the same cases.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// What the bounded evaluation must do with a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Registration refuses the schema.
    Refused,
    /// Registration accepts it; validating the case's input is refused as too costly.
    InputRefused,
    /// Registration accepts it and the input validates.
    Accepted,
}

/// One case.
#[derive(Debug, Clone)]
pub struct Case {
    /// File stem.
    pub name: String,
    /// The tool's input schema.
    pub schema: Value,
    /// The call's input (with its long string, if any, already expanded).
    pub input: Value,
    /// The expected outcome.
    pub expect: Expect,
    /// For refusals, the expected [`crate::SchemaError::reason`].
    pub reason: Option<String>,
}

impl Case {
    /// Parses one case file; `None` if it is not one (the fuzz target then reads the bytes as
    /// a bare schema).
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let Value::Object(mut case) = serde_json::from_slice::<Value>(bytes).ok()? else {
            return None;
        };
        let schema = case.remove("schema")?;
        let mut input = case
            .remove("input")
            .unwrap_or_else(|| Value::Object(Map::new()));
        let expect = match case.get("expect")?.as_str()? {
            "refused" => Expect::Refused,
            "input_refused" => Expect::InputRefused,
            "accepted" => Expect::Accepted,
            _ => return None,
        };
        if let Some(long) = case.get("long_string") {
            let unit = long.get("unit")?.as_str()?;
            let chars = usize::try_from(long.get("chars")?.as_u64()?).ok()?;
            // Bounded so a fuzzed case cannot ask for gigabytes.
            if unit.is_empty() || chars > 4 << 20 {
                return None;
            }
            let text: String = unit.chars().cycle().take(chars).collect();
            let copies = long.get("copies").and_then(Value::as_u64);
            // Bounded like `chars`: at most 4 Mi characters in all.
            if copies.is_some_and(|n| n == 0 || n.saturating_mul(chars as u64) > 4 << 20) {
                return None;
            }
            let map = input.as_object_mut()?;
            match (long.get("property"), copies) {
                (Some(Value::String(property)), None) => {
                    map.insert(property.clone(), Value::String(text));
                }
                (Some(Value::String(property)), Some(n)) => {
                    let items = (0..n).map(|_| Value::String(text.clone())).collect();
                    map.insert(property.clone(), Value::Array(items));
                }
                (_, None) => {
                    map.insert(text, Value::String("s".into()));
                }
                (_, Some(n)) => {
                    for i in 0..n {
                        map.insert(format!("{text}{i}"), Value::String("s".into()));
                    }
                }
            }
        }
        Some(Self {
            name: case
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            schema,
            input,
            expect,
            reason: case
                .get("reason")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }
}

/// The corpus, compiled in, so that the probe (`bulkhead probe`) can use it against a
/// deployment without the source tree. A test checks it lists every file of [`dir`].
const EMBEDDED: &[(&str, &str)] = &[
    (
        "anchor_under_content_schema",
        include_str!("../corpus/anchor_under_content_schema.json"),
    ),
    (
        "anchor_under_unknown_keyword",
        include_str!("../corpus/anchor_under_unknown_keyword.json"),
    ),
    (
        "cycle_through_if_then",
        include_str!("../corpus/cycle_through_if_then.json"),
    ),
    (
        "cycle_through_not_and_anchor",
        include_str!("../corpus/cycle_through_not_and_anchor.json"),
    ),
    (
        "cycle_two_refs",
        include_str!("../corpus/cycle_two_refs.json"),
    ),
    ("deep_nesting", include_str!("../corpus/deep_nesting.json")),
    (
        "deep_ref_chain",
        include_str!("../corpus/deep_ref_chain.json"),
    ),
    (
        "draft04_id_anchor",
        include_str!("../corpus/draft04_id_anchor.json"),
    ),
    (
        "duplicate_anchor_hides_cycle",
        include_str!("../corpus/duplicate_anchor_hides_cycle.json"),
    ),
    (
        "duplicate_anchor_hides_fanout",
        include_str!("../corpus/duplicate_anchor_hides_fanout.json"),
    ),
    ("dynamic_ref", include_str!("../corpus/dynamic_ref.json")),
    ("fanout_k16", include_str!("../corpus/fanout_k16.json")),
    ("fanout_k18", include_str!("../corpus/fanout_k18.json")),
    ("fanout_k20", include_str!("../corpus/fanout_k20.json")),
    ("fanout_k22", include_str!("../corpus/fanout_k22.json")),
    ("fanout_k24", include_str!("../corpus/fanout_k24.json")),
    ("fanout_k6", include_str!("../corpus/fanout_k6.json")),
    ("huge_enum", include_str!("../corpus/huge_enum.json")),
    (
        "many_pattern_properties_many_keys",
        include_str!("../corpus/many_pattern_properties_many_keys.json"),
    ),
    (
        "many_patterns",
        include_str!("../corpus/many_patterns.json"),
    ),
    (
        "near_cap_patterns_many_strings",
        include_str!("../corpus/near_cap_patterns_many_strings.json"),
    ),
    ("nested_id", include_str!("../corpus/nested_id.json")),
    (
        "pattern_long_input",
        include_str!("../corpus/pattern_long_input.json"),
    ),
    (
        "pattern_property_long_name",
        include_str!("../corpus/pattern_property_long_name.json"),
    ),
    (
        "pattern_too_long_text",
        include_str!("../corpus/pattern_too_long_text.json"),
    ),
    (
        "recursive_fanout_deep_input",
        include_str!("../corpus/recursive_fanout_deep_input.json"),
    ),
    (
        "recursive_tree",
        include_str!("../corpus/recursive_tree.json"),
    ),
    ("relative_ref", include_str!("../corpus/relative_ref.json")),
    ("remote_ref", include_str!("../corpus/remote_ref.json")),
    (
        "root_self_ref",
        include_str!("../corpus/root_self_ref.json"),
    ),
    (
        "self_ref_through_allof",
        include_str!("../corpus/self_ref_through_allof.json"),
    ),
    (
        "slow_pattern_n12000",
        include_str!("../corpus/slow_pattern_n12000.json"),
    ),
    (
        "slow_pattern_n3000",
        include_str!("../corpus/slow_pattern_n3000.json"),
    ),
    (
        "unresolved_ref",
        include_str!("../corpus/unresolved_ref.json"),
    ),
];

/// Every case (compiled in), sorted by name.
pub fn all() -> Vec<Case> {
    EMBEDDED
        .iter()
        .filter_map(|(_, text)| Case::parse(text.as_bytes()))
        .collect()
}

/// The names of the compiled-in cases.
pub fn names() -> impl Iterator<Item = &'static str> {
    EMBEDDED.iter().map(|(name, _)| *name)
}

/// Where the corpus is checked in.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// Every case of the checked-in directory, sorted by name.
pub fn load() -> std::io::Result<Vec<Case>> {
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(dir())? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let bytes = std::fs::read(&path)?;
        let case = Case::parse(&bytes).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not a corpus case", path.display()),
            )
        })?;
        cases.push(case);
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(cases)
}
