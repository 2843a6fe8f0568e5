//! The hostile-schema corpus against the shipped limits: each case is refused where it says,
//! for the reason it says; the legitimate ones validate.

use bulkhead_schema::corpus::{self, Expect};
use bulkhead_schema::{BoundedSchema, Limits};

#[test]
fn every_corpus_case_is_bounded_as_expected() {
    let cases = corpus::load().expect("the corpus loads");
    assert!(cases.len() >= 20, "the corpus is checked in");
    let limits = Limits::default();
    for case in cases {
        let compiled = BoundedSchema::compile(&case.schema, &limits);
        match case.expect {
            Expect::Refused => {
                let err = compiled.expect_err(&case.name);
                assert_eq!(
                    Some(err.reason()),
                    case.reason.as_deref(),
                    "{}: refused for the wrong reason: {err}",
                    case.name
                );
            }
            Expect::InputRefused => {
                let schema = compiled.unwrap_or_else(|e| panic!("{}: {e}", case.name));
                let err = schema.validate(&case.input, 5).expect_err(&case.name);
                assert_eq!(
                    Some(err.reason()),
                    case.reason.as_deref(),
                    "{}: {err}",
                    case.name
                );
            }
            Expect::Accepted => {
                let schema = compiled.unwrap_or_else(|e| panic!("{}: {e}", case.name));
                let errors = schema.validate(&case.input, 5).expect(&case.name);
                assert!(errors.is_empty(), "{}: {errors:?}", case.name);
            }
        }
    }
}

#[test]
fn the_compiled_in_corpus_is_the_checked_in_one() {
    let on_disk: Vec<String> = corpus::load()
        .expect("the corpus loads")
        .into_iter()
        .map(|c| c.name)
        .collect();
    let embedded: Vec<String> = corpus::all().into_iter().map(|c| c.name).collect();
    assert_eq!(
        on_disk, embedded,
        "list new corpus files in corpus.rs EMBEDDED"
    );
    assert_eq!(
        corpus::names().count(),
        embedded.len(),
        "every embedded case parses"
    );
}
