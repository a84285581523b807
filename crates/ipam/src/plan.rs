//! The affinity and borrowing decision, as a pure function over what the allocator knows.
//!
//! Order (Calico's): addresses come from the host's own affine blocks; when they are full the
//! host claims a new, unclaimed block (if `autoAllocateBlocks` and below `maxBlocksPerHost`);
//! only when no block can be claimed, and strict affinity is off, does it borrow a free address
//! from a block affine to another host (or to none).

use std::collections::BTreeSet;

use ipnet::IpNet;

use crate::cidr::{block_count, nth_block};
use crate::model::IpamConfig;
use crate::pool::Pool;

/// What the allocator should do next for one more address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Allocate from this block, affine to the host.
    UseAffine(IpNet),
    /// Claim this unclaimed block for the host, then allocate from it.
    Claim(IpNet),
    /// Allocate from this block that belongs to another host (or none).
    Borrow(IpNet),
    /// Nothing left; the reason says which rule stopped us.
    Exhausted(ExhaustedReason),
}

/// Why no address could be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExhaustedReason {
    /// Every block of the pools is claimed and full.
    PoolsFull,
    /// The host's blocks are full and strict affinity forbids borrowing.
    StrictAffinity,
    /// The host holds `maxBlocksPerHost` blocks, and borrowing found nothing.
    MaxBlocksPerHost,
    /// `autoAllocateBlocks` is off and the host's blocks are full.
    AutoAllocateDisabled,
    /// No enabled pool matches this node, family and use.
    NoPools,
}

impl std::fmt::Display for ExhaustedReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ExhaustedReason::PoolsFull => "every block is claimed and full",
            ExhaustedReason::StrictAffinity => {
                "the host's blocks are full, no block is unclaimed, and strict affinity forbids borrowing"
            }
            ExhaustedReason::MaxBlocksPerHost => {
                "the host holds maxBlocksPerHost blocks and no other block has a free address"
            }
            ExhaustedReason::AutoAllocateDisabled => {
                "autoAllocateBlocks is off and the host's blocks are full"
            }
            ExhaustedReason::NoPools => "no enabled IP pool matches this node, family and use",
        })
    }
}

/// A block as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockFree {
    pub cidr: IpNet,
    /// Free, non-reserved addresses.
    pub free: usize,
}

/// Inputs of one decision.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    pub config: IpamConfig,
    /// The host's affine blocks inside the usable pools.
    pub affine: &'a [BlockFree],
    /// How many blocks (of this family, in any pool) the host holds: what maxBlocksPerHost
    /// counts.
    pub host_block_count: usize,
    /// An unclaimed block of the usable pools, if any (see [`find_unclaimed`]).
    pub unclaimed: Option<IpNet>,
    /// Blocks of the usable pools not affine to this host, with their free counts. Only
    /// consulted when borrowing is allowed; may be empty when the caller has not listed them.
    pub others: &'a [BlockFree],
    /// Whether any usable pool exists.
    pub have_pools: bool,
}

/// The next step for one more address.
pub fn next_step(input: &PlanInput<'_>) -> Step {
    if !input.have_pools {
        return Step::Exhausted(ExhaustedReason::NoPools);
    }
    if let Some(b) = input.affine.iter().find(|b| b.free > 0) {
        return Step::UseAffine(b.cidr);
    }
    let below_max = input.config.max_blocks_per_host == 0
        || input.host_block_count < input.config.max_blocks_per_host as usize;
    if input.config.auto_allocate_blocks
        && below_max
        && let Some(c) = input.unclaimed
    {
        return Step::Claim(c);
    }
    if input.config.strict_affinity {
        return Step::Exhausted(ExhaustedReason::StrictAffinity);
    }
    if let Some(b) = input.others.iter().find(|b| b.free > 0) {
        return Step::Borrow(b.cidr);
    }
    Step::Exhausted(if !input.config.auto_allocate_blocks {
        ExhaustedReason::AutoAllocateDisabled
    } else if !below_max && input.unclaimed.is_some() {
        ExhaustedReason::MaxBlocksPerHost
    } else {
        ExhaustedReason::PoolsFull
    })
}

/// Whether the planner needs the list of other hosts' blocks (so the allocator can skip that
/// read in the common case).
pub fn may_borrow(input: &PlanInput<'_>) -> bool {
    matches!(next_step(&PlanInput { others: &[], ..input.clone() }), Step::Exhausted(r)
        if r != ExhaustedReason::StrictAffinity && r != ExhaustedReason::NoPools)
}

/// The first block of `pools` (in pool order, each pool scanned from block `start % count`
/// and wrapping around) that is not in `existing`. Starting at a host-specific offset spreads
/// hosts over the pool so that concurrent claims rarely collide.
pub fn find_unclaimed(pools: &[&Pool], existing: &BTreeSet<IpNet>, start: u128) -> Option<IpNet> {
    for pool in pools {
        let n = block_count(&pool.cidr, pool.block_size);
        // Bounded: a pool whose blocks are all taken is scanned once. Large pools are sampled
        // up to 1<<16 blocks, more than any etcd-backed installation holds.
        let limit = n.min(1 << 16);
        for i in 0..limit {
            let idx = (start.wrapping_add(i)) % n;
            if let Some(b) = nth_block(&pool.cidr, pool.block_size, idx)
                && !existing.contains(&b)
            {
                return Some(b);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AllocationBlock;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashMap};
    use std::net::IpAddr;

    fn cfg(strict: bool, auto: bool, max: u32) -> IpamConfig {
        IpamConfig {
            strict_affinity: strict,
            auto_allocate_blocks: auto,
            max_blocks_per_host: max,
        }
    }

    fn bf(c: &str, free: usize) -> BlockFree {
        BlockFree {
            cidr: c.parse().unwrap(),
            free,
        }
    }

    #[test]
    fn own_blocks_first_then_claim_then_borrow() {
        let own = [bf("10.0.0.0/26", 0), bf("10.0.0.64/26", 3)];
        let other = [bf("10.0.0.128/26", 5)];
        let mut input = PlanInput {
            config: cfg(false, true, 0),
            affine: &own,
            host_block_count: 2,
            unclaimed: Some("10.0.0.192/26".parse().unwrap()),
            others: &other,
            have_pools: true,
        };
        assert_eq!(
            next_step(&input),
            Step::UseAffine("10.0.0.64/26".parse().unwrap())
        );
        let full = [bf("10.0.0.0/26", 0)];
        input.affine = &full;
        assert_eq!(
            next_step(&input),
            Step::Claim("10.0.0.192/26".parse().unwrap())
        );
        input.unclaimed = None;
        assert_eq!(
            next_step(&input),
            Step::Borrow("10.0.0.128/26".parse().unwrap())
        );
        input.config = cfg(true, true, 0);
        assert_eq!(
            next_step(&input),
            Step::Exhausted(ExhaustedReason::StrictAffinity)
        );
    }

    #[test]
    fn max_blocks_per_host_forces_borrowing_or_exhaustion() {
        let full = [bf("10.0.0.0/26", 0)];
        let input = PlanInput {
            config: cfg(false, true, 1),
            affine: &full,
            host_block_count: 1,
            unclaimed: Some("10.0.0.64/26".parse().unwrap()),
            others: &[],
            have_pools: true,
        };
        assert_eq!(
            next_step(&input),
            Step::Exhausted(ExhaustedReason::MaxBlocksPerHost)
        );
        assert!(may_borrow(&input));
    }

    /// A whole cluster in memory: hosts allocate through `next_step` exactly as the etcd
    /// allocator does, against a model set of allocated addresses.
    struct World {
        pool: Pool,
        config: IpamConfig,
        blocks: BTreeMap<IpNet, AllocationBlock>,
        model: HashMap<IpAddr, (usize, String)>,
    }

    impl World {
        fn alloc(&mut self, host: usize, handle: &str) -> Result<IpAddr, ExhaustedReason> {
            let hname = format!("h{host}");
            let reserved = |_: IpAddr| false;
            let affine: Vec<BlockFree> = self
                .blocks
                .values()
                .filter(|b| b.host() == Some(hname.as_str()))
                .map(|b| BlockFree {
                    cidr: b.cidr,
                    free: b.free_count(&reserved),
                })
                .collect();
            let others: Vec<BlockFree> = self
                .blocks
                .values()
                .filter(|b| b.host() != Some(hname.as_str()))
                .map(|b| BlockFree {
                    cidr: b.cidr,
                    free: b.free_count(&reserved),
                })
                .collect();
            let existing: BTreeSet<IpNet> = self.blocks.keys().copied().collect();
            let unclaimed = find_unclaimed(&[&self.pool], &existing, host as u128 * 3);
            let input = PlanInput {
                config: self.config,
                affine: &affine,
                host_block_count: affine.len(),
                unclaimed,
                others: &others,
                have_pools: true,
            };
            let step = next_step(&input);
            let cidr = match step {
                Step::UseAffine(c) => c,
                Step::Claim(c) => {
                    assert!(!self.blocks.contains_key(&c), "claimed an existing block");
                    self.blocks
                        .insert(c, AllocationBlock::new(c, Some(&hname), false));
                    c
                }
                Step::Borrow(c) => {
                    // Borrowing is only legal with strict affinity off, when the host's own
                    // blocks are full and no block can be claimed.
                    assert!(!self.config.strict_affinity);
                    assert!(affine.iter().all(|b| b.free == 0));
                    let max = self.config.max_blocks_per_host as usize;
                    assert!(
                        unclaimed.is_none()
                            || !self.config.auto_allocate_blocks
                            || (max > 0 && affine.len() >= max)
                    );
                    c
                }
                Step::Exhausted(r) => return Err(r),
            };
            let b = self.blocks.get_mut(&cidr).unwrap();
            let attrs = BTreeMap::from([("node".to_owned(), hname)]);
            let ips = b.auto_assign(1, Some(handle), &attrs, &reserved);
            assert_eq!(
                ips.len(),
                1,
                "planner chose block {cidr} without a free address"
            );
            Ok(ips[0])
        }
    }

    proptest! {
        #[test]
        fn cluster_never_double_allocates_and_borrows_only_when_allowed(
            strict in any::<bool>(),
            auto in any::<bool>(),
            max in 0u32..3,
            ops in proptest::collection::vec((0usize..4, any::<bool>(), any::<u8>()), 1..150),
        ) {
            let mut pool = Pool::new("p", "10.9.0.0/26".parse().unwrap());
            pool.block_size = 29; // 8 blocks of 8 addresses
            let mut w = World { pool, config: cfg(strict, auto, max), blocks: BTreeMap::new(), model: HashMap::new() };
            let mut n = 0;
            for (host, alloc, pick) in ops {
                if alloc || w.model.is_empty() {
                    n += 1;
                    match w.alloc(host, &format!("x{n}")) {
                        Ok(ip) => prop_assert!(w.model.insert(ip, (host, format!("x{n}"))).is_none(), "{ip} handed out twice"),
                        Err(r) => {
                            // Exhaustion must be real: under the rules, nothing was available.
                            let total_free: usize = w.blocks.values().map(|b| b.free_count(&|_| false)).sum();
                            let unclaimed = w.blocks.len() < 8;
                            if !strict && auto && max == 0 {
                                prop_assert!(total_free == 0 && !unclaimed, "exhausted ({r}) with {total_free} free");
                            }
                        }
                    }
                } else {
                    let ips: Vec<IpAddr> = w.model.keys().copied().collect();
                    let ip = ips[pick as usize % ips.len()];
                    let cidr = crate::cidr::block_containing(ip, 29);
                    let released = w.blocks.get_mut(&cidr).unwrap().release(&[ip], None);
                    prop_assert_eq!(released.len(), 1);
                    w.model.remove(&ip);
                }
                let allocated: usize = w.blocks.values().map(|b| b.in_use()).sum();
                prop_assert_eq!(allocated, w.model.len());
            }
        }
    }
}
