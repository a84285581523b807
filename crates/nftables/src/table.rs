//! The table as data: every set (with its elements) and every chain (with its rules), by name.
//! The renderer fills a [`TableSpec`]; [`full_batch`] turns it into one batch that replaces the
//! whole table, [`diff`] into the smallest batch that turns the last applied table into it.
//!
//! The diff works on names and contents only (keep it simple):
//! - a chain whose rules are unchanged is not touched (its handle and its rules' handles and
//!   counters stay); a changed chain is flushed and refilled in place, so every jump to it
//!   stays valid; a new chain is added, a chain no longer wanted is flushed and deleted;
//! - a set whose spec changed is deleted and re-created, and every chain that looks it up is
//!   rewritten with it (the kernel refuses to delete a set still referenced);
//! - an interval set whose members changed gets only the intervals that differ (each a start
//!   and its end, removed or added together); a plain set or verdict map gets only the
//!   elements that differ;
//! - everything goes in one batch, ordered so that the kernel never sees a reference to a
//!   missing object or the deletion of a referenced one (see [`diff`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use crate::batch::{Batch, ChainSpec, Expr, Family, SetElem, SetSpec, Verdict};

/// One rule: its expressions and its comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    /// Expressions, in order.
    pub exprs: Vec<Expr>,
    /// nft comment (`None`: no comment).
    pub comment: Option<String>,
}

impl RuleSpec {
    /// Names of the chains this rule jumps or goes to.
    fn chain_refs(&self) -> impl Iterator<Item = &str> {
        self.exprs.iter().filter_map(|e| match e {
            Expr::Verdict(Verdict::Jump(c) | Verdict::Goto(c)) => Some(c.as_str()),
            _ => None,
        })
    }

    /// Names of the sets and maps this rule looks up.
    fn set_refs(&self) -> impl Iterator<Item = &str> {
        self.exprs.iter().filter_map(|e| match e {
            Expr::Lookup { set, .. } | Expr::LookupReg { set, .. } | Expr::VerdictMap(set) => {
                Some(set.as_str())
            }
            _ => None,
        })
    }
}

/// A chain and its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainState {
    /// Name and, for a base chain, hook, priority and policy.
    pub spec: ChainSpec,
    /// Rules in order.
    pub rules: Vec<RuleSpec>,
}

/// A set (or verdict map) and its elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetState {
    /// Name, key type and flags.
    pub spec: SetSpec,
    /// Elements in the order they are sent (interval sets: sorted start/end pairs).
    pub elems: Vec<SetElem>,
}

/// Everything in the table, by name. Chains and sets are shared (`Arc`): a table rendered
/// from the previous one reuses what did not change, so cloning it and comparing the
/// unchanged parts cost a pointer each.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableSpec {
    /// Sets and verdict maps.
    pub sets: BTreeMap<String, Arc<SetState>>,
    /// Chains.
    pub chains: BTreeMap<String, Arc<ChainState>>,
}

impl TableSpec {
    /// Declares a chain (a second declaration of the same name keeps the first one's rules).
    pub fn add_chain(&mut self, chain: &ChainSpec) {
        self.chains.entry(chain.name.clone()).or_insert_with(|| {
            Arc::new(ChainState {
                spec: chain.clone(),
                rules: Vec::new(),
            })
        });
    }

    /// Appends a rule to a chain (declared as a regular chain if it was not yet).
    pub fn add_rule(&mut self, chain: &str, exprs: &[Expr], comment: Option<&str>) {
        self.add_chain(&ChainSpec::regular(chain));
        if let Some(c) = self.chains.get_mut(chain) {
            Arc::make_mut(c).rules.push(RuleSpec {
                exprs: exprs.to_vec(),
                comment: comment.map(str::to_owned),
            });
        }
    }

    /// Declares a set.
    pub fn add_set(&mut self, set: &SetSpec) {
        self.sets.entry(set.name.clone()).or_insert_with(|| {
            Arc::new(SetState {
                spec: set.clone(),
                elems: Vec::new(),
            })
        });
    }

    /// Appends elements to a declared set.
    pub fn add_elements(&mut self, set: &str, elems: &[SetElem]) {
        if let Some(s) = self.sets.get_mut(set) {
            Arc::make_mut(s).elems.extend_from_slice(elems);
        }
    }

    /// Takes chain `name` from `prev` as it is (shared, not copied); `false` if it has none.
    pub fn reuse_chain(&mut self, prev: &TableSpec, name: &str) -> bool {
        match prev.chains.get(name) {
            Some(c) => {
                self.chains.insert(name.to_owned(), c.clone());
                true
            }
            None => false,
        }
    }

    /// Takes set `name` from `prev` as it is; `false` if it has none.
    pub fn reuse_set(&mut self, prev: &TableSpec, name: &str) -> bool {
        match prev.sets.get(name) {
            Some(s) => {
                self.sets.insert(name.to_owned(), s.clone());
                true
            }
            None => false,
        }
    }

    /// Takes every chain of `prev` named `prefix` followed by digits (a chain's numbered
    /// helpers, e.g. tier chains `fw-<if>-t0`, `fw-<if>-t1`).
    pub fn reuse_numbered_chains(&mut self, prev: &TableSpec, prefix: &str) {
        for (name, c) in prev.chains.range(prefix.to_owned()..) {
            let Some(rest) = name.strip_prefix(prefix) else {
                break;
            };
            if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
                self.chains.insert(name.clone(), c.clone());
            }
        }
    }

    /// Takes every set of `prev` named `prefix` followed by digits (a chain's auxiliary sets
    /// `<chain>#<n>`).
    pub fn reuse_numbered_sets(&mut self, prev: &TableSpec, prefix: &str) {
        for (name, set) in prev.sets.range(prefix.to_owned()..) {
            let Some(rest) = name.strip_prefix(prefix) else {
                break;
            };
            if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
                self.sets.insert(name.clone(), set.clone());
            }
        }
    }

    /// Number of rules in all chains.
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(|c| c.rules.len()).sum()
    }
}

/// The parts of a table that a change touches, by name: the new state of each set and chain
/// (`None`: it goes). Everything the patch does not name stays as it is. Built by
/// [`crate::render::render_changes`] from what the program says changed, so a round costs the
/// change, not the table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TablePatch {
    /// Sets and verdict maps.
    pub sets: BTreeMap<String, Option<Arc<SetState>>>,
    /// Chains.
    pub chains: BTreeMap<String, Option<Arc<ChainState>>>,
}

impl TablePatch {
    /// Takes every set and chain of `part` (a table holding only new or changed parts).
    pub fn put(&mut self, part: TableSpec) {
        self.sets
            .extend(part.sets.into_iter().map(|(n, s)| (n, Some(s))));
        self.chains
            .extend(part.chains.into_iter().map(|(n, c)| (n, Some(c))));
    }

    /// Whether it names nothing.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty() && self.chains.is_empty()
    }
}

impl TableSpec {
    /// Makes this table what `patch` says for every name it names.
    pub fn apply_patch(&mut self, patch: &TablePatch) {
        for (name, s) in &patch.sets {
            match s {
                Some(s) => {
                    self.sets.insert(name.clone(), s.clone());
                }
                None => {
                    self.sets.remove(name);
                }
            }
        }
        for (name, c) in &patch.chains {
            match c {
                Some(c) => {
                    self.chains.insert(name.clone(), c.clone());
                }
                None => {
                    self.chains.remove(name);
                }
            }
        }
    }
}

/// The operations that turn `old` into `old` with `patch` applied: [`diff`] of the parts the
/// patch names only (old and new), so its cost follows the patch. `None` when the patch
/// changes the spec of a set or chain that stays (re-creating it means rewriting every
/// chain that refers to it, which only the whole [`diff`] knows).
pub fn diff_patch(old: &TableSpec, patch: &TablePatch) -> Option<Vec<Op>> {
    let (mut from, mut to) = (TableSpec::default(), TableSpec::default());
    for (name, new) in &patch.sets {
        let prev = old.sets.get(name);
        if let (Some(o), Some(n)) = (prev, new)
            && o.spec != n.spec
        {
            return None;
        }
        if let Some(o) = prev {
            from.sets.insert(name.clone(), o.clone());
        }
        if let Some(n) = new {
            to.sets.insert(name.clone(), n.clone());
        }
    }
    for (name, new) in &patch.chains {
        let prev = old.chains.get(name);
        if let (Some(o), Some(n)) = (prev, new)
            && o.spec != n.spec
        {
            return None;
        }
        if let Some(o) = prev {
            from.chains.insert(name.clone(), o.clone());
        }
        if let Some(n) = new {
            to.chains.insert(name.clone(), n.clone());
        }
    }
    Some(diff(&Applied::Exactly(from), &to))
}

/// What the last applied table is known to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Exactly this table (we applied it).
    Exactly(TableSpec),
    /// A table left by a previous run: which chains and sets exist, with their specs, but not
    /// their contents. Every chain and set the next table keeps is rewritten in place.
    Adopted(TableSpec),
}

impl Applied {
    fn table(&self) -> &TableSpec {
        match self {
            Applied::Exactly(t) | Applied::Adopted(t) => t,
        }
    }
}

/// One step of a transaction, in the order it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Remove every rule of a chain (the chain and its handle stay).
    FlushChain(String),
    /// Delete an (empty, unreferenced) chain.
    DeleteChain(String),
    /// Create a chain.
    AddChain(ChainSpec),
    /// Append a rule.
    AddRule(String, RuleSpec),
    /// Create a set.
    AddSet(SetSpec),
    /// Delete an unreferenced set.
    DeleteSet(String),
    /// Remove every element of a set.
    FlushSet(String),
    /// Add elements.
    AddElems(String, Vec<SetElem>),
    /// Remove elements (by key).
    DeleteElems(String, Vec<SetElem>),
}

/// The steps that turn `from` into `to`. Order, so that every reference resolves and no
/// referenced object is deleted:
/// 1. flush the chains that change or go, remove map elements that change or go (this drops
///    their references to chains and sets);
/// 2. delete the chains and sets that go (or whose spec changed);
/// 3. create new sets, then new chains, then fill sets (map elements may point at new chains);
/// 4. add the rules of new and changed chains, regular chains before base chains.
pub fn diff(from: &Applied, to: &TableSpec) -> Vec<Op> {
    let old = from.table();
    let adopted = matches!(from, Applied::Adopted(_));
    let mut ops = Vec::new();

    // Sets that must be re-created: gone from `to` or with another spec.
    let recreated: BTreeSet<&str> = old
        .sets
        .iter()
        .filter(|(n, s)| to.sets.get(*n).is_some_and(|t| t.spec != s.spec))
        .map(|(n, _)| n.as_str())
        .collect();
    let removed_sets: Vec<&str> = old
        .sets
        .keys()
        .filter(|n| !to.sets.contains_key(*n))
        .map(String::as_str)
        .collect();
    // Chains to re-create (a base chain whose hook, priority or policy changed).
    let rechained: BTreeSet<&str> = old
        .chains
        .iter()
        .filter(|(n, c)| to.chains.get(*n).is_some_and(|t| t.spec != c.spec))
        .map(|(n, _)| n.as_str())
        .collect();
    // A map element jumping to a re-created chain pins it: such elements are removed before
    // the chain is deleted and added again after it is re-created.
    let pins_rechained = |e: &SetElem| matches!(&e.verdict, Some(Verdict::Jump(c) | Verdict::Goto(c)) if rechained.contains(c.as_str()));
    // Chains whose rules are (re)written: new, changed, or referring to a re-created set or
    // chain (their references must be dropped before it is deleted).
    let rewritten = |name: &str, c: &Arc<ChainState>| -> bool {
        match old.chains.get(name) {
            None => true,
            Some(o) => {
                adopted
                    || (!Arc::ptr_eq(o, c) && o.rules != c.rules)
                    || o.spec != c.spec
                    || (!(recreated.is_empty() && rechained.is_empty())
                        && c.rules.iter().any(|r| {
                            r.set_refs().any(|s| recreated.contains(s))
                                || r.chain_refs().any(|x| rechained.contains(x))
                        }))
            }
        }
    };

    // 1. Flush what changes or goes; drop changing and vanishing map elements.
    for (name, c) in &old.chains {
        let goes = !to.chains.contains_key(name);
        let changes = to.chains.get(name).is_some_and(|t| rewritten(name, t));
        if (goes || changes) && (adopted || !c.rules.is_empty()) {
            ops.push(Op::FlushChain(name.clone()));
        }
    }
    for (name, s) in &old.sets {
        let Some(t) = to.sets.get(name) else {
            // Going: empty it first, its map elements may point at chains that go too.
            if adopted || !s.elems.is_empty() {
                ops.push(Op::FlushSet(name.clone()));
            }
            continue;
        };
        if s.spec != t.spec || adopted {
            // Re-created or of unknown content: emptied now, filled in step 3.
            ops.push(Op::FlushSet(name.clone()));
            continue;
        }
        if s.spec.interval {
            if s.elems.iter().any(pins_rechained) {
                ops.push(Op::FlushSet(name.clone()));
            } else if !(Arc::ptr_eq(s, t) || s.elems == t.elems) {
                // Only the intervals that changed (a start and its end go together).
                let gone = intervals_not_in(&s.elems, &t.elems);
                if !gone.is_empty() {
                    ops.push(Op::DeleteElems(name.clone(), gone));
                }
            }
            continue; // the new intervals in step 3
        }
        let pinned = !rechained.is_empty() && s.elems.iter().any(pins_rechained);
        if (Arc::ptr_eq(s, t) || s.elems == t.elems) && !pinned {
            continue;
        }
        let gone = elems_not_in(&s.elems, &t.elems, &pins_rechained);
        if !gone.is_empty() {
            ops.push(Op::DeleteElems(name.clone(), gone));
        }
    }

    // 2. Delete what goes.
    for name in old.chains.keys() {
        if !to.chains.contains_key(name) || rechained.contains(name.as_str()) {
            ops.push(Op::DeleteChain(name.clone()));
        }
    }
    for name in removed_sets.iter().chain(recreated.iter()) {
        ops.push(Op::DeleteSet((*name).to_owned()));
    }

    // 3. New sets, new chains, set contents.
    for (name, s) in &to.sets {
        if !old.sets.contains_key(name) || recreated.contains(name.as_str()) {
            ops.push(Op::AddSet(s.spec.clone()));
        }
    }
    for (name, c) in &to.chains {
        if !old.chains.contains_key(name) || rechained.contains(name.as_str()) {
            ops.push(Op::AddChain(c.spec.clone()));
        }
    }
    for (name, s) in &to.sets {
        match old.sets.get(name) {
            Some(o) if o.spec == s.spec && !adopted => {
                let pinned = !rechained.is_empty() && s.elems.iter().any(pins_rechained);
                if (Arc::ptr_eq(o, s) || o.elems == s.elems) && !pinned {
                    continue;
                }
                if s.spec.interval {
                    push_elems(&mut ops, name, intervals_not_in(&s.elems, &o.elems));
                } else {
                    push_elems(
                        &mut ops,
                        name,
                        elems_not_in(&s.elems, &o.elems, &pins_rechained),
                    );
                }
            }
            // Adopted (flushed in step 1), new or re-created: all members.
            _ => push_elems(&mut ops, name, s.elems.clone()),
        }
    }

    // 4. Rules: regular chains first, base chains (live at commit anyway) last.
    for base in [false, true] {
        for (name, c) in &to.chains {
            if c.spec.base.is_some() == base && rewritten(name, c) {
                for r in &c.rules {
                    ops.push(Op::AddRule(name.clone(), r.clone()));
                }
            }
        }
    }
    ops
}

/// The elements of `from` that `other` lacks, or that are `pinned` (removed and re-added
/// around a re-created chain). A hash lookup: a set of a large cluster holds thousands of
/// members, and a linear search per member made one diff quadratic (seconds per change).
fn elems_not_in(
    from: &[SetElem],
    other: &[SetElem],
    pinned: &dyn Fn(&SetElem) -> bool,
) -> Vec<SetElem> {
    let other: HashSet<&SetElem> = other.iter().collect();
    from.iter()
        .filter(|e| !other.contains(e) || pinned(e))
        .cloned()
        .collect()
}

/// The elements of the intervals of `from` (a start and the end after it, if any) that are
/// not intervals of `other`. An interval set's members change by whole intervals: sending
/// only those keeps a one-address change in a set of thousands one small transaction (a
/// flush and refill of a 1,000-member set took the kernel 8-10 ms), and the kernel takes the
/// removal and re-adding of the same start key in one transaction.
fn intervals_not_in(from: &[SetElem], other: &[SetElem]) -> Vec<SetElem> {
    fn intervals(elems: &[SetElem]) -> impl Iterator<Item = &[SetElem]> {
        let mut i = 0;
        std::iter::from_fn(move || {
            let start = i;
            if start >= elems.len() {
                return None;
            }
            i += 1;
            if elems.get(i).is_some_and(|e| e.interval_end) {
                i += 1;
            }
            Some(&elems[start..i])
        })
    }
    let other: HashSet<&[SetElem]> = intervals(other).collect();
    intervals(from)
        .filter(|iv| !other.contains(iv))
        .flatten()
        .cloned()
        .collect()
}

fn push_elems(ops: &mut Vec<Op>, set: &str, elems: Vec<SetElem>) {
    if !elems.is_empty() {
        ops.push(Op::AddElems(set.to_owned(), elems));
    }
}

/// The ops as one batch on `table` (which is created first if missing, a no-op otherwise).
pub fn to_batch(table: &str, ops: &[Op]) -> Batch {
    let mut b = Batch::new(Family::Inet);
    b.add_table(table);
    for op in ops {
        match op {
            Op::FlushChain(c) => b.flush_chain(table, c),
            Op::DeleteChain(c) => b.delete_chain(table, c),
            Op::AddChain(spec) => b.add_chain(table, spec),
            Op::AddRule(c, r) => b.add_rule(table, c, &r.exprs, r.comment.as_deref()),
            Op::AddSet(spec) => b.add_set(table, spec),
            Op::DeleteSet(s) => b.delete_set(table, s),
            Op::FlushSet(s) => b.flush_set(table, s),
            Op::AddElems(s, e) => b.add_elements(table, s, e),
            Op::DeleteElems(s, e) => b.delete_elements(table, s, e),
        }
    }
    b
}

/// One batch that replaces the whole table: *add table; delete table; add table* and then
/// everything of `spec`. Packets see the old table or the new one, never a mix or none.
pub fn full_batch(table: &str, spec: &TableSpec) -> Batch {
    let mut b = Batch::new(Family::Inet);
    b.add_table(table);
    b.delete_table(table);
    let ops = diff(&Applied::Exactly(TableSpec::default()), spec);
    let rest = to_batch(table, &ops);
    b.append(rest);
    b
}

/// Why the simulated kernel refused a step (see [`simulate`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// The step names an object that does not exist.
    #[error("{0}: no such object")]
    Missing(String),
    /// The step creates an object that exists.
    #[error("{0}: exists")]
    Exists(String),
    /// The step deletes an object that is still referenced or not empty.
    #[error("{0}: busy")]
    Busy(String),
}

/// Applies `ops` to `table` with the kernel's reference rules (a model for tests: what the
/// kernel refuses, this refuses too): rules and map elements may only name existing chains
/// and sets; a chain must be empty and unreferenced to be deleted, a set unreferenced; an
/// element key of a plain set is added once and removed only when present.
pub fn simulate(table: &TableSpec, ops: &[Op]) -> Result<TableSpec, SimError> {
    let mut t = table.clone();
    let chain_used = |t: &TableSpec, name: &str| {
        t.chains
            .values()
            .flat_map(|c| c.rules.iter())
            .any(|r| r.chain_refs().any(|c| c == name))
            || t.sets.values().flat_map(|s| s.elems.iter()).any(
                |e| matches!(&e.verdict, Some(Verdict::Jump(c) | Verdict::Goto(c)) if c == name),
            )
    };
    for op in ops {
        match op {
            Op::FlushChain(c) => {
                Arc::make_mut(
                    t.chains
                        .get_mut(c)
                        .ok_or_else(|| SimError::Missing(c.clone()))?,
                )
                .rules
                .clear();
            }
            Op::DeleteChain(c) => {
                let ch = t
                    .chains
                    .get(c)
                    .ok_or_else(|| SimError::Missing(c.clone()))?;
                if !ch.rules.is_empty() || chain_used(&t, c) {
                    return Err(SimError::Busy(c.clone()));
                }
                t.chains.remove(c);
            }
            Op::AddChain(spec) => {
                if t.chains.contains_key(&spec.name) {
                    return Err(SimError::Exists(spec.name.clone()));
                }
                t.add_chain(spec);
            }
            Op::AddRule(c, r) => {
                for target in r.chain_refs() {
                    if !t.chains.contains_key(target) {
                        return Err(SimError::Missing(target.to_owned()));
                    }
                }
                for s in r.set_refs() {
                    if !t.sets.contains_key(s) {
                        return Err(SimError::Missing(s.to_owned()));
                    }
                }
                Arc::make_mut(
                    t.chains
                        .get_mut(c)
                        .ok_or_else(|| SimError::Missing(c.clone()))?,
                )
                .rules
                .push(r.clone());
            }
            Op::AddSet(spec) => {
                if t.sets.contains_key(&spec.name) {
                    return Err(SimError::Exists(spec.name.clone()));
                }
                t.add_set(spec);
            }
            Op::DeleteSet(s) => {
                if !t.sets.contains_key(s) {
                    return Err(SimError::Missing(s.clone()));
                }
                let used = t
                    .chains
                    .values()
                    .flat_map(|c| c.rules.iter())
                    .any(|r| r.set_refs().any(|x| x == s));
                if used {
                    return Err(SimError::Busy(s.clone()));
                }
                t.sets.remove(s);
            }
            Op::FlushSet(s) => {
                Arc::make_mut(
                    t.sets
                        .get_mut(s)
                        .ok_or_else(|| SimError::Missing(s.clone()))?,
                )
                .elems
                .clear();
            }
            Op::AddElems(s, elems) => {
                for e in elems {
                    if let Some(Verdict::Jump(c) | Verdict::Goto(c)) = &e.verdict
                        && !t.chains.contains_key(c)
                    {
                        return Err(SimError::Missing(c.clone()));
                    }
                }
                let set = Arc::make_mut(
                    t.sets
                        .get_mut(s)
                        .ok_or_else(|| SimError::Missing(s.clone()))?,
                );
                for e in elems {
                    if set.elems.iter().any(|x| x.key == e.key) {
                        return Err(SimError::Exists(format!("{s} element {:?}", e.key)));
                    }
                    set.elems.push(e.clone());
                }
            }
            Op::DeleteElems(s, elems) => {
                let set = Arc::make_mut(
                    t.sets
                        .get_mut(s)
                        .ok_or_else(|| SimError::Missing(s.clone()))?,
                );
                for e in elems {
                    let at = set
                        .elems
                        .iter()
                        .position(|x| x.key == e.key)
                        .ok_or_else(|| SimError::Missing(format!("{s} element {:?}", e.key)))?;
                    set.elems.remove(at);
                }
            }
        }
    }
    Ok(t)
}

/// The same table up to the order of set elements (which the kernel does not keep).
pub fn same_table(a: &TableSpec, b: &TableSpec) -> bool {
    let norm = |t: &TableSpec| {
        let mut t = t.clone();
        // Interval sets too: their intervals are changed one by one (each a start and its
        // end, never two elements with one key), so sorting by key gives their order back.
        for s in t.sets.values_mut() {
            Arc::make_mut(s).elems.sort_by(|x, y| x.key.cmp(&y.key));
        }
        t
    };
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{Hook, KeyType};
    use proptest::prelude::*;

    fn jump(c: &str) -> RuleSpec {
        RuleSpec {
            exprs: vec![Expr::Verdict(Verdict::Jump(c.into()))],
            comment: Some(format!("to {c}")),
        }
    }

    fn lookup(s: &str, v: Verdict) -> RuleSpec {
        RuleSpec {
            exprs: vec![
                Expr::Lookup {
                    set: s.into(),
                    inverted: false,
                },
                Expr::Verdict(v),
            ],
            comment: None,
        }
    }

    fn set(name: &str, interval: bool, map: bool) -> SetSpec {
        SetSpec {
            name: name.into(),
            key: if map {
                KeyType::IfName
            } else {
                KeyType::Ipv4Addr
            },
            interval: interval && !map,
            verdict_map: map,
        }
    }

    fn table(policy_rules: usize) -> TableSpec {
        let mut t = TableSpec::default();
        t.add_set(&set("s", true, false));
        t.add_elements("s", &[SetElem::key(vec![10, 0, 0, 0])]);
        for p in ["pol:i:a", "pol:i:b"] {
            t.add_chain(&ChainSpec::regular(p));
        }
        for n in 0..policy_rules {
            t.add_rule(
                "pol:i:a",
                &lookup("s", Verdict::Accept).exprs,
                Some(&n.to_string()),
            );
        }
        t.add_rule("pol:i:b", &lookup("s", Verdict::Drop).exprs, None);
        t.add_rule("tw-x", &jump("pol:i:a").exprs, None);
        t.add_rule("tw-x", &jump("pol:i:b").exprs, None);
        t.add_set(&set("to-wl", false, true));
        t.add_elements(
            "to-wl",
            &[SetElem {
                verdict: Some(Verdict::Goto("tw-x".into())),
                ..SetElem::key(b"x".to_vec())
            }],
        );
        t.add_chain(&ChainSpec::base("to-wl", Hook::Forward, 1, Verdict::Accept));
        t.add_rule("to-wl", &[Expr::VerdictMap("to-wl".into())], None);
        t
    }

    #[test]
    fn one_rule_change_touches_only_that_chain() {
        let a = table(2);
        let b = table(3);
        let ops = diff(&Applied::Exactly(a.clone()), &b);
        let touched: BTreeSet<&str> = ops
            .iter()
            .map(|o| match o {
                Op::FlushChain(c) | Op::AddRule(c, _) => c.as_str(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(touched, BTreeSet::from(["pol:i:a"]));
        assert_eq!(simulate(&a, &ops).unwrap(), b);
    }

    #[test]
    fn unchanged_table_needs_no_step() {
        let a = table(2);
        assert!(diff(&Applied::Exactly(a.clone()), &a).is_empty());
    }

    #[test]
    fn removed_endpoint_drops_map_element_before_its_chain() {
        let a = table(1);
        let mut b = a.clone();
        b.chains.remove("tw-x");
        Arc::make_mut(b.sets.get_mut("to-wl").unwrap())
            .elems
            .clear();
        let ops = diff(&Applied::Exactly(a.clone()), &b);
        assert_eq!(simulate(&a, &ops).unwrap(), b);
        let del_elem = ops
            .iter()
            .position(|o| matches!(o, Op::DeleteElems(..)))
            .unwrap();
        let del_chain = ops
            .iter()
            .position(|o| matches!(o, Op::DeleteChain(_)))
            .unwrap();
        assert!(del_elem < del_chain);
    }

    #[test]
    fn adopted_table_is_rewritten_in_place() {
        let a = table(2);
        let mut skeleton = a.clone();
        for c in skeleton.chains.values_mut() {
            Arc::make_mut(c).rules.clear();
        }
        for s in skeleton.sets.values_mut() {
            Arc::make_mut(s).elems.clear();
        }
        let ops = diff(&Applied::Adopted(skeleton.clone()), &a);
        assert!(!ops.iter().any(|o| matches!(
            o,
            Op::DeleteChain(_) | Op::DeleteSet(_) | Op::AddChain(_) | Op::AddSet(_)
        )));
        // Whatever the old rules and members were, the result is `a`.
        assert_eq!(simulate(&a, &ops).unwrap(), a);
        assert_eq!(simulate(&skeleton, &ops).unwrap(), a);
    }

    #[test]
    fn full_batch_starts_by_replacing_the_table() {
        let b = full_batch("t", &table(1));
        let kinds: Vec<u16> = b.messages.iter().take(3).map(|m| m.ty).collect();
        use crate::batch::msg;
        assert_eq!(kinds, vec![msg::NEWTABLE, msg::DELTABLE, msg::NEWTABLE]);
    }

    /// Random tables over a small universe of names, so that two draws share, change and
    /// lose chains, sets and elements. Every reference in a drawn table resolves.
    fn arb_table() -> impl Strategy<Value = TableSpec> {
        let chains = proptest::collection::btree_set(0usize..6, 0..6);
        let sets = proptest::collection::btree_map(0usize..4, (any::<bool>(), any::<bool>()), 0..4);
        let seeds = proptest::collection::vec(any::<u32>(), 0..40);
        (chains, sets, seeds).prop_map(|(chains, sets, seeds)| {
            let mut t = TableSpec::default();
            let mut seed = seeds.into_iter().cycle();
            let mut next = move || seed.next().unwrap_or(0) as usize;
            let chain_names: Vec<String> = chains.iter().map(|c| format!("c{c}")).collect();
            for (s, (interval, map)) in &sets {
                let name = format!("s{s}");
                t.add_set(&set(&name, *interval, *map));
                let n = next() % 4;
                let mut keys: BTreeSet<u8> = BTreeSet::new();
                for _ in 0..n {
                    keys.insert((next() % 8) as u8);
                }
                let elems: Vec<SetElem> = keys
                    .into_iter()
                    .filter_map(|k| {
                        if *map {
                            if chain_names.is_empty() {
                                return None;
                            }
                            let c = &chain_names[next() % chain_names.len()];
                            Some(SetElem {
                                verdict: Some(Verdict::Goto(c.clone())),
                                ..SetElem::key(vec![k])
                            })
                        } else {
                            Some(SetElem::key(vec![k]))
                        }
                    })
                    .collect();
                t.add_elements(&name, &elems);
            }
            let set_names: Vec<String> = sets.keys().map(|s| format!("s{s}")).collect();
            for (i, c) in chains.iter().enumerate() {
                let name = format!("c{c}");
                if c % 3 == 2 {
                    t.add_chain(&ChainSpec::base(
                        &name,
                        Hook::Forward,
                        (next() % 2) as i32,
                        Verdict::Accept,
                    ));
                } else {
                    t.add_chain(&ChainSpec::regular(&name));
                }
                for _ in 0..next() % 4 {
                    let r = match next() % 3 {
                        // Jumps only to chains declared before, so the graph has no loop.
                        0 if i > 0 => jump(&chain_names[next() % i]),
                        1 if !set_names.is_empty() => {
                            lookup(&set_names[next() % set_names.len()], Verdict::Accept)
                        }
                        _ => RuleSpec {
                            exprs: vec![Expr::Counter, Expr::Verdict(Verdict::Drop)],
                            comment: Some(format!("r{}", next() % 3)),
                        },
                    };
                    t.add_rule(&name, &r.exprs, r.comment.as_deref());
                }
            }
            t
        })
    }

    proptest! {
        #[test]
        fn applying_the_diff_gives_the_target(a in arb_table(), b in arb_table()) {
            let ops = diff(&Applied::Exactly(a.clone()), &b);
            let got = simulate(&a, &ops);
            prop_assert!(got.is_ok(), "{:?}\nops: {:?}", got, ops);
            prop_assert!(same_table(&got.unwrap(), &b));
            // From nothing: the full table.
            let full = simulate(&TableSpec::default(), &diff(&Applied::Exactly(TableSpec::default()), &b));
            prop_assert!(full.is_ok());
            prop_assert!(same_table(&full.unwrap(), &b));
        }

        #[test]
        fn untouched_chains_are_not_in_the_diff(a in arb_table(), b in arb_table()) {
            let ops = diff(&Applied::Exactly(a.clone()), &b);
            for (name, c) in &b.chains {
                let same = a.chains.get(name) == Some(c)
                    && c.rules.iter().all(|r| r.set_refs().all(|s| a.sets.get(s).map(|x| &x.spec) == b.sets.get(s).map(|x| &x.spec)));
                if same {
                    let touched = ops.iter().any(|o| matches!(o,
                        Op::FlushChain(x) | Op::DeleteChain(x) | Op::AddRule(x, _) if x == name));
                    prop_assert!(!touched, "{} touched: {:?}", name, ops);
                }
            }
        }

        #[test]
        fn untouched_sets_are_not_in_the_diff(a in arb_table(), b in arb_table()) {
            let ops = diff(&Applied::Exactly(a.clone()), &b);
            for (name, s) in &b.sets {
                let pinned = s.elems.iter().any(|e| matches!(&e.verdict,
                    Some(Verdict::Jump(c) | Verdict::Goto(c))
                        if a.chains.get(c).zip(b.chains.get(c)).is_some_and(|(x, y)| x.spec != y.spec)));
                if a.sets.get(name) == Some(s) && !pinned {
                    let touched = ops.iter().any(|o| matches!(o,
                        Op::FlushSet(x) | Op::DeleteSet(x) | Op::AddElems(x, _) | Op::DeleteElems(x, _) if x == name));
                    prop_assert!(!touched, "{} touched: {:?}", name, ops);
                }
            }
        }

        /// Interval sets as the renderer fills them (merged ranges of addresses, a start and
        /// an end each): the diff changes whole intervals only, never flushes, and the result
        /// is the target's set.
        #[test]
        fn interval_sets_change_by_intervals(
            a in proptest::collection::btree_set(0u8..40, 0..24),
            b in proptest::collection::btree_set(0u8..40, 0..24),
        ) {
            let table = |addrs: &BTreeSet<u8>| {
                let mut t = TableSpec::default();
                t.add_set(&set("s", true, false));
                let nets = addrs.iter().map(|x| {
                    ipnet::IpNet::from(std::net::IpAddr::from([10, 0, 0, *x]))
                });
                t.add_elements("s", &crate::render::interval_elems(nets));
                t
            };
            let (ta, tb) = (table(&a), table(&b));
            let ops = diff(&Applied::Exactly(ta.clone()), &tb);
            prop_assert!(!ops.iter().any(|o| matches!(o, Op::FlushSet(_))), "{:?}", ops);
            let got = simulate(&ta, &ops);
            prop_assert!(got.is_ok(), "{:?}\nops: {:?}", got, ops);
            prop_assert!(same_table(&got.unwrap(), &tb));
            prop_assert_eq!(ops.is_empty(), a == b);
        }

        #[test]
        fn adopted_skeleton_converges(a in arb_table(), b in arb_table()) {
            // The kernel holds `a`; the agent only knows its skeleton.
            let mut skeleton = a.clone();
            for c in skeleton.chains.values_mut() { Arc::make_mut(c).rules.clear(); }
            for s in skeleton.sets.values_mut() { Arc::make_mut(s).elems.clear(); }
            let ops = diff(&Applied::Adopted(skeleton), &b);
            let got = simulate(&a, &ops);
            prop_assert!(got.is_ok(), "{:?}\nops: {:?}", got, ops);
            prop_assert!(same_table(&got.unwrap(), &b));
        }
    }
}
