//! The screening rules against published tool-poisoning samples and ordinary tool
//! descriptions. `cargo test -p bulkhead-screening --test corpus -- --nocapture` prints the
//! counts.
//!
//! `corpus/poisoned/` holds attack descriptions from public write-ups (Invariant Labs' tool
//! poisoning, shadowing and WhatsApp rug pull; Trail of Bits' line jumping; CyberArk's
//! full-schema poisoning; Unicode tag, variation-selector, zero-width and bidi smuggling) and
//! variants of them; `corpus/benign/` holds ordinary descriptions, some deliberately close to the
//! rules' words ("previous page", "ignores case", "instructions of a previous release",
//! "Secret values are masked").
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use bulkhead_screening::{FieldKind, Policy, Screener, Verdict};

/// Bounds this suite holds the rules to: every published sample is caught (the bound on false
/// negatives is zero, so it is an equality), and at most one
/// ordinary description in the benign set (43 today) is flagged.
const MAX_FALSE_NEGATIVES: usize = 0;
const MAX_FALSE_POSITIVES: usize = 1;

fn samples(kind: &str) -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(kind);
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn poisoned_samples_are_caught_and_benign_ones_left_alone() {
    let screener = Screener::builtin().unwrap();
    let poisoned = samples("poisoned");
    let benign = samples("benign");
    assert!(poisoned.len() >= 25 && benign.len() >= 40);

    let mut false_negatives = Vec::new();
    for (name, text) in &poisoned {
        let out = screener.screen(FieldKind::ToolDescription, text, Policy::Reject);
        println!("poisoned {name}: {:?} {:?}", out.verdict, out.rules);
        if out.verdict != Verdict::Rejected {
            false_negatives.push(name.clone());
        }
    }
    let mut false_positives = Vec::new();
    for (name, text) in &benign {
        let out = screener.screen(FieldKind::ToolDescription, text, Policy::Reject);
        if out.verdict != Verdict::Clean {
            println!("benign {name}: {:?} {:?}", out.verdict, out.rules);
            false_positives.push(name.clone());
        }
    }
    println!(
        "screening corpus (rules {}): {} poisoned, {} false negatives {:?}; {} benign, {} false positives {:?}",
        screener.version(),
        poisoned.len(),
        false_negatives.len(),
        false_negatives,
        benign.len(),
        false_positives.len(),
        false_positives
    );
    assert_eq!(
        false_negatives.len(),
        MAX_FALSE_NEGATIVES,
        "missed: {false_negatives:?}"
    );
    assert!(
        false_positives.len() <= MAX_FALSE_POSITIVES,
        "flagged: {false_positives:?}"
    );
}

#[test]
fn sanitized_poison_is_clean_or_refused_never_passed_through() {
    let screener = Screener::builtin().unwrap();
    for (name, text) in samples("poisoned") {
        let out = screener.screen(FieldKind::ToolDescription, &text, Policy::Sanitize);
        assert!(!out.rules.is_empty(), "{name}");
        match out.verdict {
            Verdict::Sanitized => {
                let kept = out.text.unwrap();
                let again = screener.screen(FieldKind::ToolDescription, &kept, Policy::Reject);
                assert_eq!(again.verdict, Verdict::Clean, "{name}: {kept:?}");
            }
            Verdict::Rejected => assert!(out.text.is_none()),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn flagged_text_never_keeps_invisible_characters() {
    let screener = Screener::builtin().unwrap();
    for (name, text) in samples("poisoned") {
        let out = screener.screen(FieldKind::ToolDescription, &text, Policy::Flag);
        assert_eq!(out.verdict, Verdict::Flagged, "{name}");
        let kept = out.text.unwrap();
        assert!(
            !kept.chars().any(|c| {
                let c = u32::from(c);
                (0xE0000..=0xE007F).contains(&c)
                    || (0x200B..=0x200F).contains(&c)
                    || (0x202A..=0x202E).contains(&c)
                    || (0x2066..=0x2069).contains(&c)
                    || c == 0x1B
            }),
            "{name}: {kept:?}"
        );
    }
}

const MINIMAL: &str = r#"
version = "t1"
[limits]
tool_name = 64
tool_description = 100
schema_text = 100
session_title = 100
system_prompt = 100
tool_output = 100
"#;

#[test]
fn broken_rule_files_are_refused_whole() {
    let ok = format!(
        "{MINIMAL}[[rule]]\nid = \"x.y\"\ncategory = \"instruction\"\nkind = \"pattern\"\npattern = 'evil'\nabout = \"t\"\n"
    );
    assert!(Screener::from_toml(&ok).is_ok());
    let broken = [
        ("not toml", "version = ".to_owned()),
        ("no rules", MINIMAL.to_owned()),
        ("bad regex", ok.replace("'evil'", "'(unclosed'")),
        ("empty match", ok.replace("'evil'", "'a*'")),
        ("bad id", ok.replace("\"x.y\"", "\"X\"")),
        ("unknown category", ok.replace("\"instruction\"", "\"vibes\"")),
        ("unknown field", ok.replace("about = ", "severity = 1\nabout = ")),
        ("pattern without pattern", ok.replace("pattern = 'evil'\n", "")),
        ("zero limit", ok.replace("tool_name = 64", "tool_name = 0")),
        ("bad version", ok.replace("\"t1\"", "\"\"")),
        (
            "duplicate id",
            format!("{ok}[[rule]]\nid = \"x.y\"\ncategory = \"markup\"\nkind = \"pattern\"\npattern = 'b'\nabout = \"t\"\n"),
        ),
        (
            "range backwards",
            format!("{MINIMAL}[[rule]]\nid = \"c.d\"\ncategory = \"invisible\"\nkind = \"chars\"\nranges = [[\"2000\", \"1000\"]]\nabout = \"t\"\n"),
        ),
        (
            "range not a scalar",
            format!("{MINIMAL}[[rule]]\nid = \"c.d\"\ncategory = \"invisible\"\nkind = \"chars\"\nranges = [[\"D800\", \"D800\"]]\nabout = \"t\"\n"),
        ),
        (
            "range covers newline",
            format!("{MINIMAL}[[rule]]\nid = \"c.d\"\ncategory = \"invisible\"\nkind = \"chars\"\nranges = [[\"0000\", \"001F\"]]\nabout = \"t\"\n"),
        ),
    ];
    for (what, text) in broken {
        assert!(Screener::from_toml(&text).is_err(), "{what} was accepted");
    }
}
