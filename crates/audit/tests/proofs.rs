//! Proof generation and verification against a naive recursive RFC 9162 §2.1 implementation.
#![allow(clippy::unwrap_used)]

use bulkhead_audit::tree::{self, Hash};
use proptest::prelude::*;

/// RFC 9162 §2.1.1 MTH, by its definition.
fn mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => tree::empty_root(),
        1 => d[0],
        n => {
            let k = largest_pow2_below(n);
            tree::node_hash(&mth(&d[..k]), &mth(&d[k..]))
        }
    }
}

fn largest_pow2_below(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// RFC 9162 §2.1.3.1 PATH(m, D[n]).
fn path(m: usize, d: &[Hash]) -> Vec<Hash> {
    let n = d.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = largest_pow2_below(n);
    if m < k {
        let mut p = path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

/// RFC 9162 §2.1.4.1 SUBPROOF(m, D[n], b).
fn subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { Vec::new() } else { vec![mth(d)] };
    }
    let k = largest_pow2_below(n);
    if m <= k {
        let mut p = subproof(m, &d[..k], b);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = subproof(m - k, &d[k..], false);
        p.push(mth(&d[..k]));
        p
    }
}

fn leaves(n: usize, seed: u8) -> Vec<Hash> {
    (0..n)
        .map(|i| tree::leaf_hash(&[seed, (i & 0xff) as u8, (i >> 8) as u8]))
        .collect()
}

fn root(d: &[Hash]) -> Hash {
    let nodes = tree::all_nodes(d);
    tree::root_from_nodes(d.len() as u64, &nodes).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn roots_match_the_definition(n in 0usize..600, seed: u8) {
        let d = leaves(n, seed);
        prop_assert_eq!(root(&d), mth(&d));
        let mut builder = tree::RootBuilder::new();
        for leaf in &d { builder.push(*leaf); }
        prop_assert_eq!(builder.root(), mth(&d));
    }

    #[test]
    fn inclusion_proofs_match_and_verify(n in 1usize..600, pick: usize, seed: u8) {
        let d = leaves(n, seed);
        let m = pick % n;
        let nodes = tree::all_nodes(&d);
        let plan = tree::inclusion_plan(m as u64, n as u64).unwrap();
        let proof = plan.resolve(&nodes).unwrap();
        prop_assert_eq!(&proof, &path(m, &d));
        let r = mth(&d);
        prop_assert!(tree::verify_inclusion(m as u64, n as u64, &d[m], &proof, &r).is_ok());
        // Another leaf, index, size or root fails.
        let other = tree::leaf_hash(b"other");
        prop_assert!(tree::verify_inclusion(m as u64, n as u64, &other, &proof, &r).is_err());
        if n > 1 {
            let wrong_index = ((m + 1) % n) as u64;
            if d[wrong_index as usize] != d[m] {
                prop_assert!(tree::verify_inclusion(wrong_index, n as u64, &d[m], &proof, &r).is_err());
            }
        }
        // (The size alone is not bound by a path, e.g. for a leaf in the left perfect subtree:
        // the signed checkpoint binds it, together with the root.)
        prop_assert!(tree::verify_inclusion(m as u64, n as u64, &d[m], &proof, &other).is_err());
        if let Some((first, rest)) = proof.split_first() {
            let mut bent = proof.clone();
            bent[0] = tree::node_hash(first, first);
            prop_assert!(tree::verify_inclusion(m as u64, n as u64, &d[m], &bent, &r).is_err());
            prop_assert!(tree::verify_inclusion(m as u64, n as u64, &d[m], rest, &r).is_err());
        }
        // Only the planned nodes were needed.
        let needed: std::collections::HashMap<_, _> = plan.nodes().into_iter().map(|id| (id, nodes[&id])).collect();
        prop_assert_eq!(plan.resolve(&needed).unwrap(), proof);
    }

    #[test]
    fn consistency_proofs_match_and_verify(n in 1usize..600, pick: usize, seed: u8) {
        let d = leaves(n, seed);
        let m = 1 + pick % n;
        let nodes = tree::all_nodes(&d);
        let plan = tree::consistency_plan(m as u64, n as u64).unwrap();
        let proof = plan.resolve(&nodes).unwrap();
        prop_assert_eq!(&proof, &subproof(m, &d, true));
        let (old, new) = (mth(&d[..m]), mth(&d));
        prop_assert!(tree::verify_consistency(m as u64, n as u64, &old, &new, &proof).is_ok());
        let other = tree::leaf_hash(b"other");
        prop_assert!(tree::verify_consistency(m as u64, n as u64, &other, &new, &proof).is_err());
        prop_assert!(tree::verify_consistency(m as u64, n as u64, &old, &other, &proof).is_err());
        if m < n {
            // A history rewritten below the old size is caught.
            let mut forked = d;
            forked[pick % m] = other;
            let forked_root = mth(&forked);
            let forked_proof = plan.resolve(&tree::all_nodes(&forked)).unwrap();
            prop_assert!(tree::verify_consistency(m as u64, n as u64, &old, &forked_root, &forked_proof).is_err());
            let mut bent = proof;
            bent[0] = other;
            prop_assert!(tree::verify_consistency(m as u64, n as u64, &old, &new, &bent).is_err());
        }
    }

    #[test]
    fn appending_creates_exactly_the_new_complete_nodes(n in 1usize..300, seed: u8) {
        let d = leaves(n, seed);
        let nodes = tree::all_nodes(&d);
        // Every complete aligned subtree is present and correct.
        for (id, hash) in &nodes {
            let start = (id.index << id.level) as usize;
            let end = start + (1usize << id.level);
            prop_assert!(end <= n);
            prop_assert_eq!(*hash, mth(&d[start..end]));
        }
        let expected: usize = (0..=20).map(|l| n >> l).sum();
        prop_assert_eq!(nodes.len(), expected);
    }
}

#[test]
fn bad_ranges_are_errors_not_panics() {
    assert!(tree::inclusion_plan(0, 0).is_err());
    assert!(tree::inclusion_plan(5, 5).is_err());
    assert!(tree::consistency_plan(0, 5).is_err());
    assert!(tree::consistency_plan(6, 5).is_err());
    assert!(tree::consistency_plan(5, 5).unwrap().nodes().is_empty());
    let r = tree::empty_root();
    assert!(tree::verify_inclusion(0, 0, &r, &[], &r).is_err());
    assert!(tree::verify_consistency(0, 1, &r, &r, &[]).is_err());
    assert!(tree::verify_consistency(3, 2, &r, &r, &[]).is_err());
    assert!(tree::verify_consistency(3, 3, &r, &r, &[]).is_ok());
    assert!(tree::verify_consistency(2, 4, &r, &r, &[]).is_err());
    assert!(tree::verify_inclusion(u64::MAX - 1, u64::MAX, &r, &[r; 70], &r).is_err());
}
