//! Tenant-supplied JSON Schemas with bounded cost.
//!
//! A JSON Schema is a small program: `$ref`s can form cycles that never consume input, fan out
//! (`d_i = allOf[ref d_{i+1}, ref d_{i+1}]` is 2^K subschemas to evaluate from 1 KB of text), and
//! a `pattern` costs its compiled size times the length of the string it runs on. The
//! `jsonschema` crate evaluates what it is given and can neither be interrupted nor told a
//! budget, so the bound lives here, in front of it:
//!
//! - [`BoundedSchema::compile`] (registration, and again at every use) refuses, naming why and
//!   where: more than [`Limits::max_bytes`] of JSON or [`Limits::max_depth`] levels; references
//!   that are not local (`#…`), that point at nothing, or that use `$dynamicRef`/`$recursiveRef`;
//!   a nested `$id`; a cycle of references and in-place applicators that consumes no input; an
//!   *expanded* evaluation (every `$ref` and applicator followed, shared subschemas counted once
//!   per path) of more than [`Limits::max_expanded_nodes`] subschemas or
//!   [`Limits::max_expanded_depth`] levels; an `enum` of more than [`Limits::max_enum_values`];
//!   a pattern longer than [`Limits::max_pattern_chars`] or compiling larger than
//!   [`Limits::pattern_size_limit`] bytes. Recursion through `properties`/`items`/… is allowed:
//!   it consumes input, so its depth is the instance's.
//! - [`BoundedSchema::validate`] first walks the instance over the schema graph counting the
//!   subschema applications the validator can make (an over-approximation: every branch of
//!   `anyOf`, every pattern property on every value), and refuses over
//!   [`Limits::max_eval_steps`], or a string longer than [`Limits::max_pattern_input_chars`]
//!   checked against a pattern; only then runs the validator.
//! - [`Evaluator`] runs that work on a few dedicated threads (large stacks, outside the async
//!   runtime) with a bounded queue, a per-owner share of it and a deadline: a full queue or an
//!   owner over its share is [`PoolError::Busy`], a missed deadline [`PoolError::Deadline`],
//!   never a stalled runtime or a crashed process.
//!
//! Public surface: [`Limits`], [`BoundedSchema`], [`SchemaError`], [`Evaluator`],
//! [`PoolError`]; [`corpus`] reads the checked-in hostile-schema corpus for tests, the fuzz
//! target and the benchmark. Used by the tool registry (`/v1/tools`) and meant for any other
//! tenant-supplied schema (MCP tool schemas).

#![forbid(unsafe_code)]

pub mod corpus;
mod graph;
mod pool;

use serde_json::Value;

pub use pool::{Evaluator, PoolError};

/// The bounds. [`Limits::default`] is what the server ships.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest schema, serialized.
    pub max_bytes: usize,
    /// Deepest JSON nesting of the schema document.
    pub max_depth: usize,
    /// Most subschemas in the expanded evaluation tree (each `$ref` and applicator followed).
    pub max_expanded_nodes: u64,
    /// Longest chain of subschemas in the expanded tree.
    pub max_expanded_depth: usize,
    /// Most values of one `enum`.
    pub max_enum_values: usize,
    /// Longest `pattern` (or `patternProperties` key), in characters.
    pub max_pattern_chars: usize,
    /// Largest compiled size of one pattern (the `regex` crate's `size_limit`), in bytes: the
    /// cost of a match is about this times the length of the string.
    pub pattern_size_limit: usize,
    /// Longest string (or property name) checked against a pattern, in characters.
    pub max_pattern_input_chars: usize,
    /// Most subschema applications one validation may make; a pattern check counts its
    /// string's length times the pattern's weight (1, 4 or 8 by compiled size) / 64.
    pub max_eval_steps: u64,
    /// Most distinct patterns (`pattern`s and `patternProperties` keys) in one schema:
    /// each is compiled, so many near-cap patterns are costly before any input is seen.
    pub max_patterns: usize,
    /// Most total pattern weight in one schema (every occurrence counted: the validator
    /// compiles each): weight 1 is a pattern compiling under 1/8 of
    /// [`Limits::pattern_size_limit`], 4 under half, 8 up to the limit.
    pub max_pattern_weight: u64,
}

/// Measured (release build, `jsonschema` 0.33): the fan-out shape at the expansion cap (K=10,
/// ~3,000 subschemas) validates in ~14 ms; K=12 (~12,000) took 95 ms, so the cap is 5,000. The
/// largest `[ab]*a[ab]{N}c` under the 64 KiB pattern cap is N≈800; on a 16 Ki-character string
/// it takes ~12 ms (N=3000 is refused; the reported 12.6 s case was N=3000 on ~900 KB).
impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024,
            max_depth: 64,
            max_expanded_nodes: 5_000,
            max_expanded_depth: 128,
            max_enum_values: 1_000,
            max_pattern_chars: 1_000,
            pattern_size_limit: 64 * 1024,
            max_pattern_input_chars: 16 * 1024,
            max_eval_steps: 50_000,
            max_patterns: 128,
            max_pattern_weight: 256,
        }
    }
}

/// Why a schema or an evaluation was refused. Every message names the cause (and, for a
/// schema, the JSON pointer of the subschema), never a server detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// More than [`Limits::max_bytes`].
    #[error("the schema is {size} bytes of JSON; at most {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Deeper than [`Limits::max_depth`].
    #[error("the schema nests deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// A `$ref` that is not a local `#…` reference (nothing is ever fetched).
    #[error("{at}: only local references (`#…`) are allowed, not `{reference}`")]
    RemoteRef {
        /// Where.
        at: String,
        /// The reference.
        reference: String,
    },
    /// A local `$ref` that names no subschema of the document.
    #[error("{at}: the reference `{reference}` names no subschema of this schema")]
    UnresolvedRef {
        /// Where.
        at: String,
        /// The reference.
        reference: String,
    },
    /// A keyword whose cost cannot be bounded statically (`$dynamicRef`, nested `$id`, …).
    #[error("{at}: `{keyword}` is not supported in tenant schemas")]
    Unsupported {
        /// Where.
        at: String,
        /// The keyword.
        keyword: String,
    },
    /// References and in-place applicators (`allOf`, `not`, …) that lead back to themselves
    /// without descending into the input: evaluation would never end.
    #[error("{at}: references form a cycle that does not consume input")]
    Cycle {
        /// A subschema on the cycle.
        at: String,
    },
    /// The expanded evaluation tree is larger than [`Limits::max_expanded_nodes`].
    #[error(
        "following every $ref and applicator gives more than {max} subschemas to evaluate (e.g. references that fan out)"
    )]
    TooExpensive {
        /// The limit.
        max: u64,
    },
    /// The expanded evaluation tree is deeper than [`Limits::max_expanded_depth`].
    #[error("following $refs nests deeper than {max} levels")]
    TooDeepExpanded {
        /// The limit.
        max: usize,
    },
    /// An `enum` of more than [`Limits::max_enum_values`].
    #[error("{at}: `enum` lists {len} values; at most {max}")]
    EnumTooLarge {
        /// Where.
        at: String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A pattern longer than [`Limits::max_pattern_chars`].
    #[error("{at}: the pattern is longer than {max} characters")]
    PatternTooLong {
        /// Where.
        at: String,
        /// The limit.
        max: usize,
    },
    /// A pattern compiling larger than [`Limits::pattern_size_limit`].
    #[error("{at}: the pattern compiles larger than the {max}-byte limit (e.g. large counted repetitions)")]
    PatternTooComplex {
        /// Where.
        at: String,
        /// The limit.
        max: usize,
    },
    /// More distinct patterns than [`Limits::max_patterns`], or more total pattern weight
    /// than [`Limits::max_pattern_weight`].
    #[error("the schema has too many or too large patterns ({count}; at most {max} distinct, and a bounded total compiled size)")]
    TooManyPatterns {
        /// How many.
        count: usize,
        /// The limit on distinct patterns.
        max: usize,
    },
    /// Not a schema the validator accepts.
    #[error("not a valid JSON Schema: {0}")]
    Invalid(String),
    /// Validating this input would take more than [`Limits::max_eval_steps`].
    #[error("validating the input against the schema needs more than {max} steps")]
    InputTooCostly {
        /// The limit.
        max: u64,
    },
    /// A string checked against a pattern is longer than [`Limits::max_pattern_input_chars`].
    #[error("a string checked against a pattern is longer than {max} characters")]
    PatternInputTooLong {
        /// The limit.
        max: usize,
    },
}

impl SchemaError {
    /// A stable one-word class of the refusal, for audit metadata and tests: `size`, `depth`,
    /// `remote`, `unresolved`, `unsupported`, `cycle`, `expanded`, `expanded_depth`, `enum`,
    /// `pattern`, `invalid`, `steps`, `pattern_input`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "size",
            Self::TooDeep { .. } => "depth",
            Self::RemoteRef { .. } => "remote",
            Self::UnresolvedRef { .. } => "unresolved",
            Self::Unsupported { .. } => "unsupported",
            Self::Cycle { .. } => "cycle",
            Self::TooExpensive { .. } => "expanded",
            Self::TooDeepExpanded { .. } => "expanded_depth",
            Self::EnumTooLarge { .. } => "enum",
            Self::PatternTooLong { .. }
            | Self::PatternTooComplex { .. }
            | Self::TooManyPatterns { .. } => "pattern",
            Self::Invalid(_) => "invalid",
            Self::InputTooCostly { .. } => "steps",
            Self::PatternInputTooLong { .. } => "pattern_input",
        }
    }
}

/// A schema that passed the registration check, compiled. Cheap to share (`Arc`) across calls.
pub struct BoundedSchema {
    graph: graph::Graph,
    /// Size of the schema's JSON text.
    bytes: usize,
    /// Total pattern weight (each weight unit compiles to at most 1/8 of the size cap).
    pattern_weight: u64,
    limits: Limits,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for BoundedSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedSchema")
            .field("subschemas", &self.graph.len())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// External references are never fetched (a tenant's schema must not make the server connect
/// anywhere); the graph check refuses them before this is ever asked.
struct NoRetrieval;

impl jsonschema::Retrieve for NoRetrieval {
    fn retrieve(
        &self,
        _uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err("external references are not fetched".into())
    }
}

fn options(pattern_size_limit: usize) -> jsonschema::ValidationOptions {
    jsonschema::options()
        .with_retriever(NoRetrieval)
        // The linear-time `regex` engine: no backtracking; its cost is compiled size × input.
        .with_pattern_options(
            jsonschema::PatternOptions::regex()
                .size_limit(pattern_size_limit)
                .dfa_size_limit(pattern_size_limit.saturating_mul(4)),
        )
}

impl BoundedSchema {
    /// Checks `schema` against `limits` and compiles it. Its cost is linear in the schema's
    /// size (bounded by [`Limits::max_bytes`]); run it off the async runtime all the same
    /// ([`Evaluator::run`]), since compiling patterns is not free.
    pub fn compile(schema: &Value, limits: &Limits) -> Result<Self, SchemaError> {
        let size = serde_json::to_vec(schema).map_or(usize::MAX, |v| v.len());
        if size > limits.max_bytes {
            return Err(SchemaError::TooLarge {
                size,
                max: limits.max_bytes,
            });
        }
        if json_depth(schema, limits.max_depth + 1) > limits.max_depth {
            return Err(SchemaError::TooDeep {
                max: limits.max_depth,
            });
        }
        let mut graph = graph::Graph::build(schema, limits)?;
        let distinct: std::collections::HashSet<&str> =
            graph.patterns().iter().map(|p| p.text.as_str()).collect();
        if distinct.len() > limits.max_patterns {
            return Err(SchemaError::TooManyPatterns {
                count: distinct.len(),
                max: limits.max_patterns,
            });
        }
        let mut weights: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        let mut total = 0u64;
        for i in 0..graph.patterns().len() {
            let pattern = &graph.patterns()[i];
            let weight = match weights.get(&pattern.text) {
                Some(&w) => w,
                None => {
                    let w = pattern_weight(&pattern.at, &pattern.text, limits)?;
                    weights.insert(pattern.text.clone(), w);
                    w
                }
            };
            total = total.saturating_add(weight);
            if total > limits.max_pattern_weight {
                return Err(SchemaError::TooManyPatterns {
                    count: graph.patterns().len(),
                    max: limits.max_patterns,
                });
            }
            graph.set_pattern_weight(i, weight);
        }
        let validator = options(limits.pattern_size_limit)
            .build(schema)
            .map_err(|e| SchemaError::Invalid(e.to_string().chars().take(300).collect()))?;
        Ok(Self {
            graph,
            bytes: size,
            pattern_weight: total,
            limits: limits.clone(),
            validator,
        })
    }

    /// Validates `instance`: `Ok` with at most `max_errors` messages (`<instance path>:
    /// <error>`, each at most 200 characters; empty when valid), or `Err` when the input would
    /// cost more than the limits allow (nothing was evaluated then).
    pub fn validate(
        &self,
        instance: &Value,
        max_errors: usize,
    ) -> Result<Vec<String>, SchemaError> {
        self.graph.check_cost(instance, &self.limits)?;
        Ok(self
            .validator
            .iter_errors(instance)
            .take(max_errors)
            .map(|e| {
                let text = format!("{}: {e}", e.instance_path);
                text.chars().take(200).collect()
            })
            .collect())
    }

    /// A generous estimate of its memory, in bytes (for a cache's weigher): its compiled
    /// patterns, its graph and its text.
    pub fn approx_bytes(&self) -> u64 {
        let patterns = self
            .pattern_weight
            .saturating_mul((self.limits.pattern_size_limit / 8) as u64);
        patterns
            .saturating_add(self.graph.len() as u64 * 256)
            .saturating_add(self.bytes as u64 * 4)
    }

    /// The limits it was checked against.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// Depth of a JSON value, counting stops at `stop` (so a hostile document costs no more than
/// `stop` levels of recursion).
fn json_depth(value: &Value, stop: usize) -> usize {
    if stop == 0 {
        return 0;
    }
    let children = match value {
        Value::Array(items) => items.iter().map(|v| json_depth(v, stop - 1)).max(),
        Value::Object(map) => map.values().map(|v| json_depth(v, stop - 1)).max(),
        _ => return 1,
    };
    1 + children.unwrap_or(0)
}

/// A pattern within the length cap whose compiled form fits the size cap, and its cost weight:
/// 1 if it compiles under 1/8 of the size cap, 4 under half, 8 up to the cap. A pattern that
/// fails for another reason (syntax) is left to the validator's own error (weight 8).
fn pattern_weight(at: &str, pattern: &str, limits: &Limits) -> Result<u64, SchemaError> {
    if pattern.chars().count() > limits.max_pattern_chars {
        return Err(SchemaError::PatternTooLong {
            at: at.to_owned(),
            max: limits.max_pattern_chars,
        });
    }
    // Through the validator itself, so the pattern is translated from ECMA 262 exactly as it
    // will be when evaluated (e.g. `\w` is ASCII there).
    let probe = serde_json::json!({ "pattern": pattern });
    for (divisor, weight) in [(8, 1), (2, 4), (1, 8)] {
        if options(limits.pattern_size_limit / divisor)
            .build(&probe)
            .is_ok()
        {
            return Ok(weight);
        }
    }
    // Fails under the cap: too large if it compiles under the regex crate's own default.
    if options(10 * (1 << 20)).build(&probe).is_ok() {
        return Err(SchemaError::PatternTooComplex {
            at: at.to_owned(),
            max: limits.pattern_size_limit,
        });
    }
    Ok(8)
}

#[cfg(test)]
mod tests;
