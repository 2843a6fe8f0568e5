#!/usr/bin/env python3
"""Writes the hostile-schema corpus (one JSON file per case) next to this script.

Each case: {"name", "schema", "input", "expect", optional "long_string"}.
- expect: "refused" (registration answers 422 naming `reason`), "input_refused" (registration
  passes; a call with `input` is refused as too costly, 422), or "accepted" (a call validates).
- long_string: {"property", "unit", "chars"}: `input[property]` is set to `unit` repeated to
  `chars` characters (keeps ~900 KB inputs out of the repository); with `"property": null` that
  string becomes a property *name* (value "s") instead. With "copies": n, `input[property]` is
  an array of n such strings (or, with `"property": null`, n such names, each ending in its index).
The same files seed the `schema` fuzz target (fuzz/corpus/schema/) and are compiled into the
crate (src/corpus.rs EMBEDDED, for the probe). Re-run after editing:
    python3 crates/schema/corpus/generate.py && cp crates/schema/corpus/*.json fuzz/corpus/schema/
and list new files in EMBEDDED (a test checks the two agree).
"""
import json, os

here = os.path.dirname(os.path.abspath(__file__))
cases = []

def case(name, schema, expect, reason=None, input=None, long_string=None):
    c = {"name": name, "schema": schema, "input": input if input is not None else {"x": "s"}, "expect": expect}
    if reason: c["reason"] = reason
    if long_string: c["long_string"] = long_string
    cases.append(c)

obj = lambda **kw: dict({"type": "object"}, **kw)

# Issue 26: a two-step $ref cycle that consumes nothing.
case("cycle_two_refs", obj(**{"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
                              "properties": {"x": {"$ref": "#/$defs/a"}}}), "refused", "cycle", {"x": 1})
case("self_ref_through_allof", obj(**{"$defs": {"a": {"allOf": [{"$ref": "#/$defs/a"}]}},
                                      "properties": {"x": {"$ref": "#/$defs/a"}}}), "refused", "cycle")
case("root_self_ref", obj(**{"$ref": "#"}), "refused", "cycle")
case("cycle_through_not_and_anchor", obj(**{"$defs": {"a": {"$anchor": "A", "not": {"$ref": "#A"}}},
                                            "properties": {"x": {"$ref": "#A"}}}), "refused", "cycle")
case("cycle_through_if_then", obj(**{"$defs": {"a": {"if": {"$ref": "#/$defs/b"}},
                                               "b": {"then": {"$ref": "#/$defs/a"}}},
                                     "properties": {"x": {"$ref": "#/$defs/a"}}}), "refused", "cycle")

# Issue 27: fan-out, d_i = allOf[ref d_{i+1}, ref d_{i+1}].
for k in (16, 18, 20, 22, 24):
    defs = {f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i+1}"}, {"$ref": f"#/$defs/d{i+1}"}]} for i in range(k)}
    defs[f"d{k}"] = {"type": "string"}
    case(f"fanout_k{k}", obj(**{"$defs": defs, "properties": {"x": {"$ref": "#/$defs/d0"}}}),
         "refused", "expanded")

# Fan-out that only shows with the input: recursion through `properties`, three paths per level.
rec = obj(**{"properties": {"a": {"$ref": "#"}},
             "allOf": [{"properties": {"a": {"$ref": "#"}}}, {"properties": {"a": {"$ref": "#"}}}]})
deep = {}
for _ in range(40):
    deep = {"a": deep}
case("recursive_fanout_deep_input", rec, "input_refused", "steps", deep)

# Deep nesting: 40 levels of properties (80 JSON levels).
s = {"type": "string"}
for _ in range(40):
    s = {"type": "object", "properties": {"x": s}}
case("deep_nesting", s, "refused", "depth")
# A chain of 300 references, no fan-out.
defs = {f"c{i}": {"$ref": f"#/$defs/c{i+1}"} for i in range(300)}
defs["c300"] = {"type": "string"}
case("deep_ref_chain", obj(**{"$defs": defs, "properties": {"x": {"$ref": "#/$defs/c0"}}}), "refused", "expanded_depth")

# Huge enums.
case("huge_enum", obj(properties={"x": {"enum": list(range(5000))}}), "refused", "enum")

# Issue 27: slow patterns `[ab]*a[ab]{N}c` with ~900 KB inputs.
for n in (3000, 12000):
    case(f"slow_pattern_n{n}", obj(properties={"x": {"type": "string", "pattern": f"[ab]*a[ab]{{{n}}}c"}}),
         "refused", "pattern", {"x": ""}, {"property": "x", "unit": "ab", "chars": 921600})
# A pattern under the size cap: the long string is refused by the input cap instead. 200 KB,
# not the review's ~900 KB: a tool call's body is capped at 256 KiB (413 beyond, before any
# parsing), so the largest string that reaches the schema pool is of this size.
case("pattern_long_input", obj(properties={"x": {"type": "string", "pattern": "[ab]*a[ab]{20}c"}}),
     "input_refused", "pattern_input", {"x": ""}, {"property": "x", "unit": "ab", "chars": 200000})
case("pattern_property_long_name", obj(patternProperties={"^[ab]*a[ab]{20}c$": {"type": "string"}}),
     "input_refused", "pattern_input", {}, {"property": None, "unit": "ab", "chars": 200000})
case("pattern_too_long_text", obj(properties={"x": {"type": "string", "pattern": "a" * 1500}}),
     "refused", "pattern")

# References that would leave the document, and keywords that cannot be bounded statically.
case("remote_ref", obj(properties={"x": {"$ref": "https://schemas.invalid/x.json"}}), "refused", "remote")
case("relative_ref", obj(properties={"x": {"$ref": "other.json#/a"}}), "refused", "remote")
case("dynamic_ref", obj(**{"$dynamicAnchor": "n", "properties": {"x": {"$dynamicRef": "#n"}}}),
     "refused", "unsupported")
case("nested_id", obj(properties={"x": {"$id": "https://schemas.invalid/y", "type": "string"}}),
     "refused", "unsupported")
case("unresolved_ref", obj(properties={"x": {"$ref": "#/$defs/missing"}}), "refused", "unresolved")

# Review finding 1: the graph and the validator's `referencing` must resolve every anchor alike.
# A duplicate anchor: depth-first last-wins (old graph) sees `z`, breadth-first last-wins
# (referencing) sees `inner`, a self-cycle (or fan-out).
case("duplicate_anchor_hides_cycle", obj(**{"$defs": {
        "a": {"$defs": {"inner": {"$anchor": "x", "allOf": [{"$ref": "#x"}]}}},
        "z": {"$anchor": "x", "type": "string"}},
    "properties": {"p": {"$ref": "#x"}}}), "refused", "unsupported", {"p": 1})
defs = {f"d{i}": {"allOf": [{"$ref": f"#/$defs/a/$defs/d{i+1}"}, {"$ref": f"#/$defs/a/$defs/d{i+1}"}]} for i in range(24)}
defs["d24"] = {"type": "string"}
defs["d0"]["$anchor"] = "x"
case("duplicate_anchor_hides_fanout", obj(**{"$defs": {"a": {"$defs": defs},
                                                      "z": {"$anchor": "x", "type": "string"}},
                                            "properties": {"p": {"$ref": "#x"}}}), "refused", "unsupported", {"p": "s"})
# Draft 4 reads `"id": "#x"` as the anchor and ignores `$anchor`: older drafts are refused.
case("draft04_id_anchor", {"$schema": "http://json-schema.org/draft-04/schema#", "type": "object",
                           "definitions": {"a": {"id": "#x", "allOf": [{"$ref": "#x"}]},
                                           "b": {"$anchor": "x", "type": "string"}},
                           "properties": {"p": {"$ref": "#x"}}}, "refused", "unsupported", {"p": 1})
# `referencing` walks `contentSchema` (the graph does not model it) and never unknown keywords:
# anchors (and references) there are refused.
case("anchor_under_content_schema", obj(**{"contentSchema": {"$anchor": "x", "allOf": [{"$ref": "#x"}]},
                                           "properties": {"p": {"$ref": "#x"}}}), "refused", "unsupported", {"p": 1})
case("anchor_under_unknown_keyword", obj(**{"x-extra": {"s": {"$anchor": "x", "allOf": [{"$ref": "#x"}]}},
                                            "$defs": {"b": {"$anchor": "y", "type": "string"}},
                                            "properties": {"p": {"$ref": "#y"}}}), "refused", "unsupported", {"p": "s"})

# Review finding 2: a pattern check costs the string's length times the pattern's size.
# 700 near-cap patterns in one schema: refused at registration (too many to compile).
case("many_patterns", obj(properties={"s": {"type": "array", "items": {"allOf": [
    {"pattern": f"[ab]*a[ab]{{{800 - i}}}c"} for i in range(700)]}}}), "refused", "pattern", {"s": []})
# 8 near-cap patterns (allowed) on 12 strings of 16,000 characters: refused by the step budget.
# (12, not the review's 32: every input of the corpus fits a tool call's 256 KiB body.)
case("near_cap_patterns_many_strings", obj(properties={"s": {"type": "array", "items": {"allOf": [
    {"pattern": f"[ab]*a[ab]{{{800 - i}}}c"} for i in range(8)]}}}), "input_refused", "steps", {"s": []},
    {"property": "s", "unit": "ab", "chars": 16000, "copies": 12})
# 100 patternProperties on 12 names of 16,000 characters: refused by the step budget.
case("many_pattern_properties_many_keys", obj(patternProperties={
    f"^key{i}x[ab]*$": {"type": "string"} for i in range(100)}), "input_refused", "steps", {},
    {"property": None, "unit": "ab", "chars": 16000, "copies": 12})

# Legitimate shapes stay accepted: a recursive tree and a modest fan-out.
tree = obj(**{"$defs": {"node": {"type": "object", "properties": {
    "name": {"type": "string", "pattern": "^[a-z]+$"},
    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
    "properties": {"x": {"$ref": "#/$defs/node"}}})
case("recursive_tree", tree, "accepted", None,
     {"x": {"name": "a", "children": [{"name": "b", "children": []}, {"name": "c"}]}})
defs = {f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i+1}"}, {"$ref": f"#/$defs/d{i+1}"}]} for i in range(6)}
defs["d6"] = {"type": "string"}
case("fanout_k6", obj(**{"$defs": defs, "properties": {"x": {"$ref": "#/$defs/d0"}}}), "accepted")

for old in os.listdir(here):
    if old.endswith(".json"):
        os.remove(os.path.join(here, old))
for c in cases:
    with open(os.path.join(here, c["name"] + ".json"), "w") as f:
        json.dump(c, f, separators=(",", ":"))
        f.write("\n")
print(len(cases), "cases")
