//! Screening of tenant-supplied text on its way to the store or to an agent: the tenant's
//! policy applied field by field with `bulkhead-screening`, and every decision that matched a
//! rule recorded (a `screening_decisions` row and a `tool.screening` audit event) in the
//! caller's transaction.

use bulkhead_core::TenantContext;
use bulkhead_screening::{FieldKind, Policy, Screener, Verdict};
use bulkhead_store::audit::{self, Outcome};
use bulkhead_store::tenant::tools::{self as store, NewDecision};
use bulkhead_store::{Access, Store, StoreError, TenantTx};
use serde_json::{json, Map, Value};

/// Most decisions recorded for one write (a schema with thousands of poisoned strings still
/// leaves a bounded trail; the count is in the audit event).
pub const MAX_RECORDED_DECISIONS: usize = 50;

/// Keys of a JSON Schema whose string values are annotations for the reader (and the model):
/// screened under the tenant's policy and rewritten when sanitised. Every other string in a
/// schema (property names, `enum`, `const`, `default`, `pattern`, …) is data the schema
/// validates against: rewriting it would change what the tool accepts, so any match there is
/// refused under every policy.
pub const ANNOTATION_KEYS: &[&str] = &["description", "title", "$comment"];

/// Screening refused the content: the detail names the first refused field and its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentRejected(pub String);

/// One screened field that matched a rule.
#[derive(Debug, Clone)]
pub struct FieldDecision {
    /// Field path (`description`, `input_schema/properties/city/description`).
    pub field: String,
    /// How it ended.
    pub verdict: Verdict,
    /// Matched rule ids.
    pub rules: Vec<String>,
}

/// The decisions of one write.
#[derive(Debug)]
pub struct Report<'a> {
    screener: &'a Screener,
    /// The tenant's policy.
    pub policy: Policy,
    /// Fields that matched a rule (clean fields are not listed).
    pub decisions: Vec<FieldDecision>,
}

impl<'a> Report<'a> {
    /// An empty report under `policy`.
    pub fn new(screener: &'a Screener, policy: Policy) -> Self {
        Self {
            screener,
            policy,
            decisions: Vec::new(),
        }
    }

    /// Whether any field was refused.
    pub fn rejected(&self) -> bool {
        self.decisions
            .iter()
            .any(|d| d.verdict == Verdict::Rejected)
    }

    /// Whether any field was kept with a flag.
    pub fn flagged(&self) -> bool {
        self.decisions.iter().any(|d| d.verdict == Verdict::Flagged)
    }

    /// `flagged` or `clean` (sanitised text is clean once sanitised), as stored on a tool.
    pub fn outcome(&self) -> &'static str {
        if self.flagged() {
            "flagged"
        } else {
            "clean"
        }
    }

    /// The rule file's version.
    pub fn rules_version(&self) -> &str {
        self.screener.version()
    }

    /// Screens one text under the policy; `None` when refused.
    pub fn text(&mut self, kind: FieldKind, field: &str, text: &str) -> Option<String> {
        let out = self.screener.screen(kind, text, self.policy);
        if out.verdict != Verdict::Clean {
            self.decisions.push(FieldDecision {
                field: field.to_owned(),
                verdict: out.verdict,
                rules: out.rules,
            });
        }
        out.text
    }

    /// Screens a string that must not be rewritten: kept as it is when clean, refused on any
    /// match (whatever the policy).
    pub fn strict(&mut self, kind: FieldKind, field: &str, text: &str) -> bool {
        let out = self.screener.screen(kind, text, Policy::Reject);
        if out.verdict == Verdict::Clean {
            return true;
        }
        self.decisions.push(FieldDecision {
            field: field.to_owned(),
            verdict: Verdict::Rejected,
            rules: out.rules,
        });
        false
    }

    /// Screens every string of a JSON Schema (see [`ANNOTATION_KEYS`]); returns the schema
    /// with annotations replaced by their screened text.
    pub fn schema(&mut self, schema: &Value) -> Value {
        self.value("input_schema", schema)
    }

    fn value(&mut self, path: &str, value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut out = Map::new();
                for (key, v) in map {
                    let field = format!("{path}/{key}");
                    self.strict(FieldKind::SchemaText, &format!("{path}/<key>"), key);
                    match v {
                        Value::String(s) if ANNOTATION_KEYS.contains(&key.as_str()) => {
                            let kept = self.text(FieldKind::SchemaText, &field, s);
                            out.insert(key.clone(), Value::String(kept.unwrap_or_default()));
                        }
                        _ => {
                            out.insert(key.clone(), self.value(&field, v));
                        }
                    }
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.value(&format!("{path}/{i}"), v))
                    .collect(),
            ),
            Value::String(s) => {
                self.strict(FieldKind::SchemaText, path, s);
                value.clone()
            }
            other => other.clone(),
        }
    }

    /// Screens every string of a tool's answer under the policy (object keys strictly, as in
    /// schemas); returns the answer with strings replaced by their screened text.
    pub fn output(&mut self, value: &Value) -> Value {
        self.answer("output", value)
    }

    fn answer(&mut self, path: &str, value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut out = Map::new();
                for (key, v) in map {
                    self.strict(FieldKind::ToolOutput, &format!("{path}/<key>"), key);
                    out.insert(key.clone(), self.answer(&format!("{path}/{key}"), v));
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.answer(&format!("{path}/{i}"), v))
                    .collect(),
            ),
            Value::String(s) => Value::String(
                self.text(FieldKind::ToolOutput, path, s)
                    .unwrap_or_default(),
            ),
            other => other.clone(),
        }
    }

    /// The most severe verdict of the report (`clean` when nothing matched).
    pub fn verdict(&self) -> Verdict {
        let has = |v: Verdict| self.decisions.iter().any(|d| d.verdict == v);
        if has(Verdict::Rejected) {
            Verdict::Rejected
        } else if has(Verdict::Flagged) {
            Verdict::Flagged
        } else if has(Verdict::Sanitized) {
            Verdict::Sanitized
        } else {
            Verdict::Clean
        }
    }

    /// Every rule that matched, sorted, without repeats.
    pub fn rules(&self) -> Vec<String> {
        let set: std::collections::BTreeSet<&String> =
            self.decisions.iter().flat_map(|d| d.rules.iter()).collect();
        set.into_iter().cloned().collect()
    }

    /// The refusal (422 `content-rejected`) naming the first refused field and its rules.
    pub fn rejection(&self) -> ContentRejected {
        let refused: Vec<&FieldDecision> = self
            .decisions
            .iter()
            .filter(|d| d.verdict == Verdict::Rejected)
            .collect();
        let detail = match refused.first() {
            Some(first) => format!(
                "screening (rules {}, policy {}) refused {} field(s); first: {} matched {}",
                self.rules_version(),
                self.policy,
                refused.len(),
                first.field,
                first.rules.join(", ")
            ),
            None => "screening refused the content".to_owned(),
        };
        ContentRejected(detail)
    }

    /// Records every decision (bounded by [`MAX_RECORDED_DECISIONS`]) in `tx`: one row and one
    /// audit event each.
    pub async fn record(&self, tx: &mut TenantTx, subject: &str) -> Result<(), StoreError> {
        for d in self.decisions.iter().take(MAX_RECORDED_DECISIONS) {
            let id = store::record_decision(
                tx,
                &NewDecision {
                    subject,
                    field: &d.field,
                    policy: self.policy.as_str(),
                    verdict: d.verdict.as_str(),
                    rules: &d.rules,
                    rules_version: self.rules_version(),
                },
            )
            .await?;
            let outcome = if d.verdict == Verdict::Rejected {
                Outcome::Blocked
            } else {
                Outcome::Success
            };
            audit::record(
                tx,
                "tool.screening",
                Some(subject),
                outcome,
                json!({
                    "decision_id": id,
                    "field": d.field,
                    "policy": self.policy.as_str(),
                    "verdict": d.verdict.as_str(),
                    "rules": d.rules,
                    "rules_version": self.rules_version(),
                    "decisions_total": self.decisions.len(),
                }),
            )
            .await?;
        }
        Ok(())
    }

    /// Records the decisions in a transaction of their own (for refusals, whose write never
    /// happens) and commits it.
    pub async fn record_alone(
        &self,
        store: &Store,
        ctx: &TenantContext,
        subject: &str,
    ) -> Result<(), StoreError> {
        let mut tx = store.begin(ctx, Access::ReadWrite).await?;
        self.record(&mut tx, subject).await?;
        tx.commit().await?;
        tracing::warn!(target: "bulkhead::audit", action = "tool.screening", tenant_id = %ctx.tenant_id(), subject = %subject, "screening decision recorded");
        Ok(())
    }
}

/// The tenant's screening policy, read in `tx`. An unknown stored value (the database refuses
/// one) is treated as `reject`.
pub async fn policy(tx: &mut TenantTx) -> Result<Policy, StoreError> {
    let text = store::screening_policy(tx).await?;
    Ok(Policy::parse(&text).unwrap_or(Policy::Reject))
}
