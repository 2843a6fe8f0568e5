//! RFC 9162 §2.1 Merkle trees: hashing, roots, inclusion and consistency proofs.
//!
//! Proofs are generated from *complete aligned subtrees* ([`NodeId`]): the subtree of `2^level`
//! leaves starting at leaf `index * 2^level`. Every hash a proof needs is a hash of such subtrees
//! (combined right to left for the ragged right edge), so a store that keeps the hash of every
//! complete aligned subtree ([`NodeId`]s at level 0 are the leaf hashes) can answer any proof by
//! reading `O(log² n)` rows, and appending a leaf creates at most `log₂ n + 1` new nodes
//! ([`new_nodes_after_append`]). Generation is two-step so that a store can fetch what it needs in
//! one query: [`inclusion_plan`] / [`consistency_plan`] name the nodes, [`Plan::resolve`] builds
//! the proof from their hashes.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::AuditError;

/// A SHA-256 value: a leaf hash, a node hash or a root.
pub type Hash = [u8; 32];

/// `MTH({})`: the hash of an empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// `H(0x00 ‖ data)`: the hash of the leaf whose entry is `data`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `H(0x01 ‖ left ‖ right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// A complete aligned subtree: leaves `[index << level, (index + 1) << level)`.
///
/// Invariant: `level <= 63`, and the subtree lies inside the tree it is asked of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// Height: 0 for a leaf.
    pub level: u8,
    /// Position among the subtrees of that height, from the left.
    pub index: u64,
}

/// The largest power of two strictly smaller than `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The complete aligned subtrees that make up leaves `[start, end)`, left to right, when `start`
/// is a multiple of the largest power of two not above `end - start` (true of every range the
/// RFC 9162 proof recursion produces). The hash of the range is these hashes folded right to left.
fn decompose(start: u64, end: u64, out: &mut Vec<NodeId>) {
    let mut at = start;
    while at < end {
        let remaining = end - at;
        // Largest power of two <= remaining that keeps `at` aligned.
        let mut level = 63 - remaining.leading_zeros();
        if at != 0 {
            level = level.min(at.trailing_zeros());
        }
        out.push(NodeId {
            level: level as u8,
            index: at >> level,
        });
        at += 1u64 << level;
    }
}

/// The hash of leaves `[start, end)` from the hashes of its complete aligned subtrees.
fn range_hash(start: u64, end: u64, nodes: &HashMap<NodeId, Hash>) -> Result<Hash, AuditError> {
    let mut parts = Vec::new();
    decompose(start, end, &mut parts);
    let mut acc: Option<Hash> = None;
    for id in parts.iter().rev() {
        let h = nodes.get(id).ok_or(AuditError::MissingNode {
            level: id.level,
            index: id.index,
        })?;
        acc = Some(match acc {
            None => *h,
            Some(right) => node_hash(h, &right),
        });
    }
    acc.ok_or(AuditError::EmptyRange)
}

/// What a proof consists of: hashes of leaf ranges, in proof order, and the nodes they need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `[start, end)` ranges whose subtree hashes, in this order, are the proof.
    ranges: Vec<(u64, u64)>,
}

impl Plan {
    /// Every node whose hash [`Plan::resolve`] needs, without duplicates.
    pub fn nodes(&self) -> Vec<NodeId> {
        let mut out = Vec::new();
        for &(start, end) in &self.ranges {
            decompose(start, end, &mut out);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Builds the proof from the hashes of [`Plan::nodes`].
    pub fn resolve(&self, nodes: &HashMap<NodeId, Hash>) -> Result<Vec<Hash>, AuditError> {
        self.ranges
            .iter()
            .map(|&(start, end)| range_hash(start, end, nodes))
            .collect()
    }
}

/// The nodes needed for the root of a tree of `size` leaves (empty for `size == 0`).
pub fn root_nodes(size: u64) -> Vec<NodeId> {
    let mut out = Vec::new();
    decompose(0, size, &mut out);
    out
}

/// The root of a tree of `size` leaves from the hashes of [`root_nodes`].
pub fn root_from_nodes(size: u64, nodes: &HashMap<NodeId, Hash>) -> Result<Hash, AuditError> {
    if size == 0 {
        return Ok(empty_root());
    }
    range_hash(0, size, nodes)
}

/// RFC 9162 §2.1.3.1 `PATH(index, D[size])`, as a plan.
pub fn inclusion_plan(index: u64, size: u64) -> Result<Plan, AuditError> {
    if index >= size {
        return Err(AuditError::IndexOutOfRange { index, size });
    }
    let mut ranges = Vec::new();
    // Walk down from the root; the sibling of each step is pushed, then reversed (leaf first).
    let (mut start, mut end, mut m) = (0u64, size, index);
    while end - start > 1 {
        let k = split(end - start);
        if m < k {
            ranges.push((start + k, end));
            end = start + k;
        } else {
            ranges.push((start, start + k));
            start += k;
            m -= k;
        }
    }
    ranges.reverse();
    Ok(Plan { ranges })
}

/// RFC 9162 §2.1.4.1 `PROOF(old, D[new])`, as a plan. `0 < old <= new`; `old == new` is empty.
pub fn consistency_plan(old: u64, new: u64) -> Result<Plan, AuditError> {
    if old == 0 || old > new {
        return Err(AuditError::BadConsistencyRange { old, new });
    }
    let mut ranges = Vec::new();
    // SUBPROOF(m, D[start:end], b), unrolled.
    let (mut start, mut end, mut m, mut b) = (0u64, new, old, true);
    loop {
        let n = end - start;
        if m == n {
            if !b {
                ranges.push((start, end));
            }
            break;
        }
        let k = split(n);
        if m <= k {
            ranges.push((start + k, end));
            end = start + k;
        } else {
            ranges.push((start, start + k));
            start += k;
            m -= k;
            b = false;
        }
    }
    ranges.reverse();
    Ok(Plan { ranges })
}

/// The nodes that become complete when leaf `index` is appended (`index` = the old tree size),
/// lowest first, each with its two children. Level 0 (the leaf itself) is not listed.
pub fn new_nodes_after_append(index: u64) -> Vec<(NodeId, NodeId, NodeId)> {
    let mut out = Vec::new();
    let size = index + 1;
    let mut level = 1u8;
    while level < 64 && size % (1u64 << level) == 0 {
        let id = NodeId {
            level,
            index: (size >> level) - 1,
        };
        let left = NodeId {
            level: level - 1,
            index: id.index * 2,
        };
        let right = NodeId {
            level: level - 1,
            index: id.index * 2 + 1,
        };
        out.push((id, left, right));
        level += 1;
    }
    out
}

/// The nodes an appender must know to extend a tree of `size` leaves: its right frontier.
pub fn frontier(size: u64) -> Vec<NodeId> {
    root_nodes(size)
}

/// RFC 9162 §2.1.3.2: checks that `leaf` is at `index` in the tree of `size` whose root is
/// `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), AuditError> {
    if index >= size {
        return Err(AuditError::IndexOutOfRange { index, size });
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(AuditError::ProofMismatch);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n == 0 && r == *root {
        Ok(())
    } else {
        Err(AuditError::ProofMismatch)
    }
}

/// RFC 9162 §2.1.4.2: checks that the tree of `new_size` with root `new_root` extends the tree of
/// `old_size` with root `old_root`.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), AuditError> {
    if old_size == 0 || old_size > new_size {
        return Err(AuditError::BadConsistencyRange {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == new_size {
        return if proof.is_empty() && old_root == new_root {
            Ok(())
        } else {
            Err(AuditError::ProofMismatch)
        };
    }
    if proof.is_empty() {
        return Err(AuditError::ProofMismatch);
    }
    let mut path: Vec<Hash> = proof.to_vec();
    // If old_size is an exact power of two, the old root is the first element.
    if old_size.is_power_of_two() {
        path.insert(0, *old_root);
    }
    let Some((first, rest)) = path.split_first() else {
        return Err(AuditError::ProofMismatch);
    };
    let (mut f_n, mut s_n) = (old_size - 1, new_size - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s_n == 0 {
            return Err(AuditError::ProofMismatch);
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n == 0 && fr == *old_root && sr == *new_root {
        Ok(())
    } else {
        Err(AuditError::ProofMismatch)
    }
}

/// Computes a root incrementally in `O(log n)` memory: push leaf hashes in order, read the root.
///
/// Invariant: `stack` holds the hashes of the complete subtrees of the leaves pushed so far,
/// largest (leftmost) first, with strictly decreasing sizes.
#[derive(Debug, Clone, Default)]
pub struct RootBuilder {
    stack: Vec<(u64, Hash)>,
    size: u64,
}

impl RootBuilder {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut item = (1u64, leaf);
        while let Some(&(size, hash)) = self.stack.last() {
            if size != item.0 {
                break;
            }
            self.stack.pop();
            item = (size * 2, node_hash(&hash, &item.1));
        }
        self.stack.push(item);
        self.size += 1;
    }

    /// Leaves pushed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root of the leaves pushed so far.
    pub fn root(&self) -> Hash {
        let mut acc: Option<Hash> = None;
        for (_, h) in self.stack.iter().rev() {
            acc = Some(match acc {
                None => *h,
                Some(right) => node_hash(h, &right),
            });
        }
        acc.unwrap_or_else(empty_root)
    }
}

/// Every complete aligned subtree hash of a list of leaf hashes (for tests and small trees).
pub fn all_nodes(leaves: &[Hash]) -> HashMap<NodeId, Hash> {
    let mut nodes = HashMap::new();
    for (i, leaf) in leaves.iter().enumerate() {
        let i = i as u64;
        nodes.insert(NodeId { level: 0, index: i }, *leaf);
        for (id, l, r) in new_nodes_after_append(i) {
            // Children were inserted before their parents (lowest first).
            if let (Some(lh), Some(rh)) = (nodes.get(&l).copied(), nodes.get(&r).copied()) {
                nodes.insert(id, node_hash(&lh, &rh));
            }
        }
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_the_largest_power_of_two_below() {
        assert_eq!(split(2), 1);
        assert_eq!(split(3), 2);
        assert_eq!(split(4), 2);
        assert_eq!(split(5), 4);
        assert_eq!(split(1 << 40), 1 << 39);
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(
            empty_root()[..4],
            [0xe3, 0xb0, 0xc4, 0x42],
            "SHA-256(\"\") starts e3b0c442"
        );
    }

    #[test]
    fn new_nodes_follow_the_binary_carry() {
        assert!(new_nodes_after_append(0).is_empty());
        assert_eq!(new_nodes_after_append(1).len(), 1);
        assert!(new_nodes_after_append(2).is_empty());
        assert_eq!(new_nodes_after_append(7).len(), 3);
    }
}
