use std::time::Duration;

use serde_json::json;

use crate::{BoundedSchema, Evaluator, Limits, PoolError, SchemaError};

fn compile(schema: serde_json::Value) -> Result<BoundedSchema, SchemaError> {
    BoundedSchema::compile(&schema, &Limits::default())
}

#[test]
fn the_reported_cycle_is_refused_naming_it() {
    let err = compile(json!({"type":"object","$defs":{"a":{"$ref":"#/$defs/b"},
        "b":{"$ref":"#/$defs/a"}},"properties":{"x":{"$ref":"#/$defs/a"}}}))
    .expect_err("a cycle");
    assert_eq!(err.reason(), "cycle");
    assert!(err.to_string().contains("#/$defs/"), "{err}");
}

#[test]
fn recursion_through_properties_is_allowed_and_bounded_by_the_input() {
    let schema = compile(json!({"type":"object","properties":{
        "child":{"$ref":"#"},"name":{"type":"string"}}}))
    .expect("consumes input");
    let mut input = json!({"name":"leaf"});
    for _ in 0..50 {
        input = json!({"child": input, "name": "n"});
    }
    assert_eq!(
        schema.validate(&input, 5).expect("cheap"),
        Vec::<String>::new()
    );
    let bad = json!({"child":{"name": 3}});
    assert_eq!(schema.validate(&bad, 5).expect("cheap").len(), 1);
}

#[test]
fn percent_encoded_and_anchor_references_resolve() {
    let schema = compile(json!({"type":"object","$defs":{"a b":{"type":"string"},
        "c":{"$anchor":"C","type":"integer"}},
        "properties":{"x":{"$ref":"#/$defs/a%20b"},"y":{"$ref":"#C"}}}))
    .expect("local references");
    assert!(schema
        .validate(&json!({"x":"s","y":1}), 5)
        .expect("cheap")
        .is_empty());
    assert_eq!(
        schema
            .validate(&json!({"x":1,"y":"s"}), 5)
            .expect("cheap")
            .len(),
        2
    );
}

#[test]
fn a_pattern_under_the_cap_still_refuses_long_strings() {
    let schema = compile(json!({"type":"object","properties":{
        "x":{"type":"string","pattern":"^[a-z]+$"}}}))
    .expect("small pattern");
    let long = "a".repeat(Limits::default().max_pattern_input_chars + 1);
    let err = schema
        .validate(&json!({ "x": long }), 5)
        .expect_err("too long");
    assert_eq!(err.reason(), "pattern_input");
    // Strings under no pattern are not capped.
    let plain =
        compile(json!({"type":"object","properties":{"x":{"type":"string"}}})).expect("plain");
    assert!(plain
        .validate(&json!({ "x": long }), 5)
        .expect("no pattern")
        .is_empty());
}

#[test]
fn ordinary_patterns_pass_the_size_cap() {
    for pattern in [
        r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$",
        r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        r"^\w{1,64}$",
        r"^https?://[^\s/$.?#].[^\s]*$",
    ] {
        compile(json!({"type":"object","properties":{"x":{"type":"string","pattern":pattern}}}))
            .unwrap_or_else(|e| panic!("{pattern}: {e}"));
    }
}

#[tokio::test]
async fn the_pool_refuses_an_owner_over_its_share_and_serves_others() {
    let pool = Evaluator::new(1, 4, 1, Duration::from_secs(5));
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let busy = pool.clone();
    let first = tokio::spawn(async move {
        busy.run("b", move || {
            let _ = wait.recv_timeout(Duration::from_secs(5));
        })
        .await
    });
    // Let the first job reach the thread.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(pool.run("b", || 1).await, Err(PoolError::Busy));
    let other = pool.clone();
    let served = tokio::spawn(async move { other.run("a", || 2).await });
    release.send(()).expect("the job waits");
    assert_eq!(first.await.expect("joins"), Ok(()));
    assert_eq!(served.await.expect("joins"), Ok(2));
}

#[tokio::test]
async fn the_pool_answers_deadline_and_survives_a_panic() {
    let pool = Evaluator::new(1, 4, 4, Duration::from_millis(200));
    let slow = pool
        .run("a", || std::thread::sleep(Duration::from_millis(600)))
        .await;
    assert_eq!(slow, Err(PoolError::Deadline));
    let panicked: Result<(), _> = pool.run("a", || panic!("a bug")).await;
    // Queued behind the slow job past the deadline, or run and caught: never a crash.
    assert!(matches!(
        panicked,
        Err(PoolError::Failed | PoolError::Deadline)
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pool.run("a", || 7).await, Ok(7));
}

#[tokio::test]
async fn one_owners_long_jobs_never_hold_every_thread() {
    // Review finding 2: with a FIFO queue, an owner's two long jobs took both threads and
    // everyone else waited past the deadline.
    let pool = Evaluator::new(2, 8, 4, Duration::from_secs(1));
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let wait = std::sync::Arc::new(std::sync::Mutex::new(wait));
    let mut long = Vec::new();
    for _ in 0..2 {
        let busy = pool.clone();
        let wait = std::sync::Arc::clone(&wait);
        long.push(tokio::spawn(async move {
            busy.run("b", move || {
                let _ = wait.lock().map(|w| w.recv_timeout(Duration::from_secs(3)));
            })
            .await
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Another owner is served while "b" still waits to be released.
    assert_eq!(pool.run("a", || 2).await, Ok(2));
    release.send(()).expect("b's job waits");
    release.send(()).ok();
    for job in long {
        let _ = job.await.expect("joins");
    }
}

#[test]
fn pattern_checks_are_charged_by_string_length() {
    let schema = compile(json!({"type":"object","properties":{"s":{"type":"array",
        "items":{"type":"string","pattern":"^[a-z]+$"}}}}))
    .expect("small pattern");
    // 256 strings of 16,000 characters: 1 step each before, 16,000 × 1 / 64 = 250 each now.
    let long = "a".repeat(16_000);
    let input = json!({ "s": vec![long; 256] });
    assert_eq!(
        schema.validate(&input, 5).expect_err("too costly").reason(),
        "steps"
    );
    // Short strings are still cheap.
    assert!(schema
        .validate(&json!({"s":["abc","def"]}), 5)
        .expect("cheap")
        .is_empty());
}

#[test]
fn a_duplicate_anchor_is_refused() {
    let err = compile(
        json!({"type":"object","$defs":{"a":{"$anchor":"x","type":"string"},
        "b":{"$anchor":"x","type":"integer"}},"properties":{"p":{"$ref":"#x"}}}),
    )
    .expect_err("two anchors named x");
    assert_eq!(err.reason(), "unsupported");
    assert!(err.to_string().contains("$anchor"), "{err}");
}

/// Schema work yields the CPU to request threads: the pool's threads run nicer than the caller.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_pool_threads_run_at_a_lower_priority_than_the_process() {
    let pool = Evaluator::new(1, 4, 4, Duration::from_secs(5));
    let caller = rustix::process::getpriority_process(None).expect("own priority");
    let worker = pool
        .run("a", || {
            rustix::process::getpriority_process(None).expect("priority")
        })
        .await
        .expect("runs");
    assert_eq!(worker, (caller + crate::pool::NICE).min(19));
    assert!(
        worker > caller || caller == 19,
        "worker {worker}, caller {caller}"
    );
}
