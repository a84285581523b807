//! Pure operations on one [`AllocationBlock`]: allocation in Calico's order, assignment of a
//! given address, release, and attribute bookkeeping. No I/O: the allocator reads a block,
//! applies one of these, and writes it back with a compare-and-swap.
//!
//! Allocation order (Calico's): free ordinals are taken from the front of `unallocated`, which
//! starts as `0..n` in address order; released ordinals are appended to its back, so a freed
//! address is reused as late as possible.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::cidr::{block_len, ip_to_ordinal, ordinal_to_ip};
use crate::model::{AllocationAttribute, AllocationBlock};

/// Errors of block operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("address {ip} is not inside block {block}")]
    NotInBlock { ip: IpAddr, block: IpNet },
    #[error("address {ip} is already allocated in block {block}")]
    AlreadyAllocated { ip: IpAddr, block: IpNet },
    #[error("block {block} is inconsistent: {reason}")]
    Corrupt { block: IpNet, reason: String },
}

/// One released allocation: its address, handle and the sequence number it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    pub ip: IpAddr,
    pub handle_id: Option<String>,
}

/// One allocated address with its attributes, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocatedIp<'a> {
    pub ordinal: usize,
    pub ip: IpAddr,
    pub attribute: Option<&'a AllocationAttribute>,
    pub sequence_number: Option<u64>,
}

impl AllocationBlock {
    /// A new, empty block, affine to `host` when given.
    pub fn new(cidr: IpNet, host: Option<&str>, strict_affinity: bool) -> Self {
        let n = block_len(&cidr);
        AllocationBlock {
            cidr: cidr.trunc(),
            affinity: host.map(|h| format!("host:{h}")),
            allocations: vec![None; n],
            unallocated: (0..n).collect(),
            attributes: Vec::new(),
            strict_affinity,
            sequence_number: 0,
            sequence_number_for_allocation: BTreeMap::new(),
            deleted: false,
        }
    }

    /// The node this block is affine to, if any.
    pub fn host(&self) -> Option<&str> {
        self.affinity.as_deref()?.strip_prefix("host:")
    }

    /// Checks the structural invariants the allocator relies on; a block read from etcd that
    /// fails them is refused rather than "repaired" silently.
    pub fn validate(&self) -> Result<(), BlockError> {
        let corrupt = |reason: String| BlockError::Corrupt {
            block: self.cidr,
            reason,
        };
        let n = block_len(&self.cidr);
        if self.allocations.len() != n {
            return Err(corrupt(format!(
                "{} allocation entries for {n} addresses",
                self.allocations.len()
            )));
        }
        let mut seen = vec![false; n];
        for &o in &self.unallocated {
            if o >= n || seen[o] {
                return Err(corrupt(format!(
                    "unallocated ordinal {o} repeated or out of range"
                )));
            }
            if self.allocations[o].is_some() {
                return Err(corrupt(format!(
                    "ordinal {o} is both allocated and unallocated"
                )));
            }
            seen[o] = true;
        }
        for (o, a) in self.allocations.iter().enumerate() {
            match a {
                None if !seen[o] => {
                    return Err(corrupt(format!(
                        "ordinal {o} is neither allocated nor free"
                    )));
                }
                Some(i) if *i >= self.attributes.len() => {
                    return Err(corrupt(format!(
                        "ordinal {o} points at missing attribute {i}"
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.allocations.len()
    }

    /// True when no address is allocated.
    pub fn is_empty(&self) -> bool {
        self.allocations.iter().all(Option::is_none)
    }

    pub fn in_use(&self) -> usize {
        self.allocations.iter().filter(|a| a.is_some()).count()
    }

    /// Free addresses that may be handed out (reserved ones excluded).
    pub fn free_count(&self, reserved: &dyn Fn(IpAddr) -> bool) -> usize {
        self.unallocated
            .iter()
            .filter(|&&o| !self.ordinal_reserved(o, reserved))
            .count()
    }

    fn ordinal_reserved(&self, o: usize, reserved: &dyn Fn(IpAddr) -> bool) -> bool {
        ordinal_to_ip(&self.cidr, o).is_none_or(reserved)
    }

    fn attribute_index(&mut self, handle: Option<&str>, attrs: &BTreeMap<String, String>) -> usize {
        if let Some(i) = self
            .attributes
            .iter()
            .position(|a| a.handle_id.as_deref() == handle && &a.secondary == attrs)
        {
            return i;
        }
        self.attributes.push(AllocationAttribute {
            handle_id: handle.map(str::to_owned),
            secondary: attrs.clone(),
        });
        self.attributes.len() - 1
    }

    fn bump_sequence(&mut self) {
        self.sequence_number += 1;
    }

    /// Allocates up to `n` free, non-reserved addresses in Calico's order. Returns them (fewer
    /// than `n` when the block runs out).
    pub fn auto_assign(
        &mut self,
        n: usize,
        handle: Option<&str>,
        attrs: &BTreeMap<String, String>,
        reserved: &dyn Fn(IpAddr) -> bool,
    ) -> Vec<IpAddr> {
        let mut picked = Vec::new();
        let mut keep = Vec::with_capacity(self.unallocated.len());
        for &o in &self.unallocated {
            if picked.len() < n && !self.ordinal_reserved(o, reserved) {
                picked.push(o);
            } else {
                keep.push(o);
            }
        }
        if picked.is_empty() {
            return Vec::new();
        }
        self.bump_sequence();
        self.unallocated = keep;
        let idx = self.attribute_index(handle, attrs);
        let mut ips = Vec::with_capacity(picked.len());
        for o in picked {
            self.allocations[o] = Some(idx);
            self.sequence_number_for_allocation
                .insert(o.to_string(), self.sequence_number);
            if let Some(ip) = ordinal_to_ip(&self.cidr, o) {
                ips.push(ip);
            }
        }
        ips
    }

    /// Allocates exactly `ip`.
    pub fn assign(
        &mut self,
        ip: IpAddr,
        handle: Option<&str>,
        attrs: &BTreeMap<String, String>,
    ) -> Result<(), BlockError> {
        let o = ip_to_ordinal(&self.cidr, ip).ok_or(BlockError::NotInBlock {
            ip,
            block: self.cidr,
        })?;
        if self.allocations[o].is_some() {
            return Err(BlockError::AlreadyAllocated {
                ip,
                block: self.cidr,
            });
        }
        self.bump_sequence();
        self.unallocated.retain(|&u| u != o);
        let idx = self.attribute_index(handle, attrs);
        self.allocations[o] = Some(idx);
        self.sequence_number_for_allocation
            .insert(o.to_string(), self.sequence_number);
        Ok(())
    }

    /// The sequence number recorded when `ip` was allocated.
    pub fn sequence_number_of(&self, ip: IpAddr) -> Option<u64> {
        let o = ip_to_ordinal(&self.cidr, ip)?;
        self.allocations[o]?;
        self.sequence_number_for_allocation
            .get(&o.to_string())
            .copied()
    }

    /// Releases the given addresses; addresses not allocated (or outside the block) are
    /// skipped. With `expected_sequence`, an address is released only if its allocation still
    /// carries that sequence number (it was not released and re-allocated meanwhile).
    pub fn release(
        &mut self,
        ips: &[IpAddr],
        expected_sequence: Option<&dyn Fn(IpAddr) -> Option<u64>>,
    ) -> Vec<Released> {
        let mut out = Vec::new();
        for &ip in ips {
            let Some(o) = ip_to_ordinal(&self.cidr, ip) else {
                continue;
            };
            let Some(idx) = self.allocations[o] else {
                continue;
            };
            if let Some(expected) = expected_sequence
                && let Some(want) = expected(ip)
                && self.sequence_number_of(ip) != Some(want)
            {
                continue;
            }
            self.allocations[o] = None;
            self.unallocated.push(o);
            self.sequence_number_for_allocation.remove(&o.to_string());
            out.push(Released {
                ip,
                handle_id: self.attributes.get(idx).and_then(|a| a.handle_id.clone()),
            });
        }
        if !out.is_empty() {
            self.bump_sequence();
            self.compact_attributes();
        }
        out
    }

    /// Releases every address of `handle`.
    pub fn release_handle(&mut self, handle: &str) -> Vec<Released> {
        let ips = self.ips_of_handle(handle);
        self.release(&ips, None)
    }

    pub fn ips_of_handle(&self, handle: &str) -> Vec<IpAddr> {
        self.allocated()
            .filter(|a| a.attribute.and_then(|x| x.handle_id.as_deref()) == Some(handle))
            .map(|a| a.ip)
            .collect()
    }

    /// Every allocated address, in ordinal order.
    pub fn allocated(&self) -> impl Iterator<Item = AllocatedIp<'_>> {
        self.allocations.iter().enumerate().filter_map(|(o, a)| {
            let idx = (*a)?;
            Some(AllocatedIp {
                ordinal: o,
                ip: ordinal_to_ip(&self.cidr, o)?,
                attribute: self.attributes.get(idx),
                sequence_number: self
                    .sequence_number_for_allocation
                    .get(&o.to_string())
                    .copied(),
            })
        })
    }

    /// The attributes of `ip` when it is allocated here.
    pub fn attribute_of(&self, ip: IpAddr) -> Option<&AllocationAttribute> {
        let o = ip_to_ordinal(&self.cidr, ip)?;
        self.attributes.get(self.allocations[o]?)
    }

    /// Drops attributes no allocation refers to and renumbers the references.
    fn compact_attributes(&mut self) {
        let mut used = vec![false; self.attributes.len()];
        for i in self.allocations.iter().flatten() {
            if let Some(u) = used.get_mut(*i) {
                *u = true;
            }
        }
        let mut remap = vec![0usize; self.attributes.len()];
        let mut next = 0;
        for (i, &u) in used.iter().enumerate() {
            if u {
                remap[i] = next;
                next += 1;
            }
        }
        let mut i = 0;
        self.attributes.retain(|_| {
            let keep = used[i];
            i += 1;
            keep
        });
        for a in self.allocations.iter_mut().flatten() {
            *a = remap[*a];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn attrs(node: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("node".to_owned(), node.to_owned())])
    }

    const NONE_RESERVED: &dyn Fn(IpAddr) -> bool = &|_| false;

    #[test]
    fn allocates_in_address_order_and_reuses_released_addresses_last() {
        let mut b = AllocationBlock::new("10.0.0.0/30".parse().unwrap(), Some("n1"), false);
        let got = b.auto_assign(2, Some("h1"), &attrs("n1"), NONE_RESERVED);
        assert_eq!(
            got,
            vec![
                "10.0.0.0".parse::<IpAddr>().unwrap(),
                "10.0.0.1".parse().unwrap()
            ]
        );
        b.release(&["10.0.0.0".parse().unwrap()], None);
        let next = b.auto_assign(3, Some("h2"), &attrs("n1"), NONE_RESERVED);
        let want: Vec<IpAddr> = ["10.0.0.2", "10.0.0.3", "10.0.0.0"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(next, want);
        assert!(
            b.auto_assign(1, None, &attrs("n1"), NONE_RESERVED)
                .is_empty()
        );
        b.validate().unwrap();
    }

    #[test]
    fn reserved_addresses_are_never_handed_out() {
        let mut b = AllocationBlock::new("10.0.0.0/30".parse().unwrap(), None, false);
        let reserved = |ip: IpAddr| ip == "10.0.0.1".parse::<IpAddr>().unwrap();
        assert_eq!(b.free_count(&reserved), 3);
        let got = b.auto_assign(4, None, &BTreeMap::new(), &reserved);
        assert_eq!(got.len(), 3);
        assert!(!got.contains(&"10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn release_with_stale_sequence_number_keeps_the_new_allocation() {
        let mut b = AllocationBlock::new("10.0.0.0/31".parse().unwrap(), None, false);
        let ip: IpAddr = "10.0.0.0".parse().unwrap();
        b.assign(ip, Some("old"), &BTreeMap::new()).unwrap();
        let old_seq = b.sequence_number_of(ip).unwrap();
        b.release(&[ip], None);
        b.assign(ip, Some("new"), &BTreeMap::new()).unwrap();
        let stale = move |_| Some(old_seq);
        assert!(b.release(&[ip], Some(&stale)).is_empty());
        assert_eq!(
            b.attribute_of(ip).unwrap().handle_id.as_deref(),
            Some("new")
        );
    }

    #[test]
    fn unused_attributes_are_dropped_and_indices_renumbered() {
        let mut b = AllocationBlock::new("10.0.0.0/29".parse().unwrap(), None, false);
        b.auto_assign(2, Some("a"), &BTreeMap::new(), NONE_RESERVED);
        b.auto_assign(2, Some("b"), &BTreeMap::new(), NONE_RESERVED);
        b.release_handle("a");
        assert_eq!(b.attributes.len(), 1);
        assert_eq!(b.ips_of_handle("b").len(), 2);
        b.validate().unwrap();
    }

    #[derive(Debug, Clone)]
    enum Op {
        Auto(usize, u8),
        Assign(u8, u8),
        Release(Vec<u8>),
        ReleaseHandle(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1usize..6, 0u8..4).prop_map(|(n, h)| Op::Auto(n, h)),
            (0u8..16, 0u8..4).prop_map(|(o, h)| Op::Assign(o, h)),
            proptest::collection::vec(0u8..16, 0..5).prop_map(Op::Release),
            (0u8..4).prop_map(Op::ReleaseHandle),
        ]
    }

    proptest! {
        /// Against a model (address → handle map): never double-allocates, never hands out a
        /// reserved address, releases exactly what is allocated, and keeps the block valid.
        #[test]
        fn block_matches_a_set_model(ops in proptest::collection::vec(op(), 1..60), v6 in any::<bool>()) {
            let cidr: IpNet = if v6 { "fd00::/124".parse().unwrap() } else { "10.1.2.16/28".parse().unwrap() };
            let ip_at = |o: u8| ordinal_to_ip(&cidr, o as usize).unwrap();
            let reserved_ip = ip_at(5);
            let reserved = move |ip: IpAddr| ip == reserved_ip;
            let mut b = AllocationBlock::new(cidr, Some("n"), false);
            let mut model: BTreeMap<IpAddr, String> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Auto(n, h) => {
                        let h = format!("h{h}");
                        let free_before = 16 - model.len() - usize::from(!model.contains_key(&reserved_ip));
                        let got = b.auto_assign(n, Some(&h), &BTreeMap::new(), &reserved);
                        prop_assert_eq!(got.len(), n.min(free_before));
                        for ip in got {
                            prop_assert!(ip != reserved_ip);
                            prop_assert!(model.insert(ip, h.clone()).is_none(), "double allocation of {}", ip);
                        }
                    }
                    Op::Assign(o, h) => {
                        let ip = ip_at(o);
                        let r = b.assign(ip, Some(&format!("h{h}")), &BTreeMap::new());
                        match model.entry(ip) {
                            std::collections::btree_map::Entry::Occupied(_) => prop_assert!(r.is_err()),
                            std::collections::btree_map::Entry::Vacant(v) => {
                                prop_assert!(r.is_ok());
                                v.insert(format!("h{h}"));
                            }
                        }
                    }
                    Op::Release(os) => {
                        let ips: Vec<IpAddr> = os.iter().map(|&o| ip_at(o)).collect::<BTreeSet<_>>().into_iter().collect();
                        let released = b.release(&ips, None);
                        let want: Vec<IpAddr> = ips.iter().copied().filter(|ip| model.contains_key(ip)).collect();
                        let got: Vec<IpAddr> = released.iter().map(|r| r.ip).collect();
                        prop_assert_eq!(&got, &want);
                        for r in released {
                            prop_assert_eq!(model.remove(&r.ip), r.handle_id);
                        }
                    }
                    Op::ReleaseHandle(h) => {
                        let h = format!("h{h}");
                        let released = b.release_handle(&h);
                        let want: BTreeSet<IpAddr> = model.iter().filter(|(_, v)| **v == h).map(|(k, _)| *k).collect();
                        let got: BTreeSet<IpAddr> = released.iter().map(|r| r.ip).collect();
                        prop_assert_eq!(got, want);
                        model.retain(|_, v| *v != h);
                    }
                }
                prop_assert!(b.validate().is_ok());
                let allocated: BTreeMap<IpAddr, String> = b.allocated()
                    .map(|a| (a.ip, a.attribute.unwrap().handle_id.clone().unwrap()))
                    .collect();
                prop_assert_eq!(&allocated, &model);
            }
        }
    }
}
