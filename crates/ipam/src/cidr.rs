//! Pure address arithmetic: pools split into blocks, block CIDR ↔ ordinals, IPv4 and IPv6, and
//! the etcd key form of a CIDR (`10.0.0.0-26`).
//!
//! Addresses are handled as `u128` so one code path serves both families.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Default block prefix length for IPv4 pools (`/26`, 64 addresses).
pub const DEFAULT_BLOCK_SIZE_V4: u8 = 26;
/// Default block prefix length for IPv6 pools (`/122`, 64 addresses).
pub const DEFAULT_BLOCK_SIZE_V6: u8 = 122;

/// Errors of the CIDR arithmetic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("block size /{block_size} is invalid for pool {pool}: {reason}")]
    BlockSize {
        pool: IpNet,
        block_size: u8,
        reason: &'static str,
    },
    #[error("invalid CIDR {text:?} in etcd key")]
    KeyCidr { text: String },
}

/// IP family of an address or network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of_net(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    pub fn of_ip(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Address width in bits.
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// `4` or `6`, as used in etcd keys (`ipv4`, `ipv6`).
    pub fn version(self) -> u8 {
        match self {
            Family::V4 => 4,
            Family::V6 => 6,
        }
    }

    pub fn default_block_size(self) -> u8 {
        match self {
            Family::V4 => DEFAULT_BLOCK_SIZE_V4,
            Family::V6 => DEFAULT_BLOCK_SIZE_V6,
        }
    }

    /// The block prefix lengths Calico accepts: /20../32 for IPv4, /116../128 for IPv6 (at most
    /// 4096 addresses per block, so a block document stays small).
    pub fn block_size_range(self) -> std::ops::RangeInclusive<u8> {
        match self {
            Family::V4 => 20..=32,
            Family::V6 => 116..=128,
        }
    }
}

pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address `value` of `family`; IPv4 values are truncated to 32 bits.
pub fn u128_to_ip(value: u128, family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

fn make_net(addr: u128, prefix: u8, family: Family) -> IpNet {
    match u128_to_ip(addr, family) {
        // Prefix lengths are validated by callers against the family width.
        IpAddr::V4(a) => IpNet::V4(Ipv4Net::new(a, prefix).expect("prefix <= 32 checked")),
        IpAddr::V6(a) => IpNet::V6(Ipv6Net::new(a, prefix).expect("prefix <= 128 checked")),
    }
}

/// Number of addresses in `net` (saturating at `u128::MAX` for `::/0`).
pub fn net_len(net: &IpNet) -> u128 {
    let host_bits = (net.max_prefix_len() - net.prefix_len()) as u32;
    1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
}

/// Checks that `block_size` can split `pool` into blocks.
pub fn check_block_size(pool: &IpNet, block_size: u8) -> Result<(), CidrError> {
    let family = Family::of_net(pool);
    if !family.block_size_range().contains(&block_size) {
        return Err(CidrError::BlockSize {
            pool: *pool,
            block_size,
            reason: "outside the range allowed for the family (/20-/32 IPv4, /116-/128 IPv6)",
        });
    }
    if block_size < pool.prefix_len() {
        return Err(CidrError::BlockSize {
            pool: *pool,
            block_size,
            reason: "blocks must not be larger than the pool",
        });
    }
    Ok(())
}

/// How many blocks of `/block_size` the pool holds.
pub fn block_count(pool: &IpNet, block_size: u8) -> u128 {
    let bits = (block_size - pool.prefix_len()) as u32;
    1u128.checked_shl(bits).unwrap_or(u128::MAX)
}

/// The `n`th block (0-based) of `/block_size` inside `pool`, or None past the end.
pub fn nth_block(pool: &IpNet, block_size: u8, n: u128) -> Option<IpNet> {
    if n >= block_count(pool, block_size) {
        return None;
    }
    let family = Family::of_net(pool);
    let step = 1u128 << (family.bits() - block_size);
    let base = ip_to_u128(pool.network());
    Some(make_net(base + n * step, block_size, family))
}

/// The block of `/block_size` that contains `ip`.
pub fn block_containing(ip: IpAddr, block_size: u8) -> IpNet {
    let family = Family::of_ip(&ip);
    let host_bits = (family.bits() - block_size) as u32;
    let mask = if host_bits >= 128 {
        0
    } else {
        !((1u128 << host_bits) - 1)
    };
    make_net(ip_to_u128(ip) & mask, block_size, family)
}

/// Number of addresses in a block (blocks hold at most 4096, so this fits usize).
pub fn block_len(block: &IpNet) -> usize {
    net_len(block) as usize
}

/// Position of `ip` inside `block`, or None when outside.
pub fn ip_to_ordinal(block: &IpNet, ip: IpAddr) -> Option<usize> {
    if Family::of_net(block) != Family::of_ip(&ip) || !block.contains(&ip) {
        return None;
    }
    Some((ip_to_u128(ip) - ip_to_u128(block.network())) as usize)
}

/// The address at `ordinal` inside `block`, or None past its end.
pub fn ordinal_to_ip(block: &IpNet, ordinal: usize) -> Option<IpAddr> {
    if (ordinal as u128) >= net_len(block) {
        return None;
    }
    Some(u128_to_ip(
        ip_to_u128(block.network()) + ordinal as u128,
        Family::of_net(block),
    ))
}

/// Whether two networks share any address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The CIDR as it appears in etcd keys: `/` replaced by `-` (`10.0.0.64-26`, `fd00::-122`).
pub fn key_cidr(net: &IpNet) -> String {
    net.to_string().replacen('/', "-", 1)
}

/// Inverse of [`key_cidr`]. The last `-` separates the prefix length (IPv6 text has no `-`).
pub fn parse_key_cidr(text: &str) -> Result<IpNet, CidrError> {
    let err = || CidrError::KeyCidr {
        text: text.to_owned(),
    };
    let (addr, len) = text.rsplit_once('-').ok_or_else(err)?;
    let net: IpNet = format!("{addr}/{len}").parse().map_err(|_| err())?;
    if net.network() != net.addr() {
        return Err(err());
    }
    Ok(net)
}

/// Splits `net` into `parts` equal subnets (`parts` a power of two, each part no smaller than a
/// single address). Used by `calicoctl ipam split`.
pub fn split(net: &IpNet, parts: u32) -> Option<Vec<IpNet>> {
    if parts == 0 || !parts.is_power_of_two() {
        return None;
    }
    let extra = parts.trailing_zeros() as u8;
    let new_len = net.prefix_len().checked_add(extra)?;
    if new_len > net.max_prefix_len() {
        return None;
    }
    Some(
        (0..parts as u128)
            .filter_map(|i| nth_block(&net.trunc(), new_len, i))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn pool_of_slash_24_has_four_blocks_of_slash_26_in_address_order() {
        let pool = net("192.168.0.0/24");
        assert_eq!(block_count(&pool, 26), 4);
        let blocks: Vec<_> = (0..5).map(|n| nth_block(&pool, 26, n)).collect();
        assert_eq!(
            blocks,
            vec![
                Some(net("192.168.0.0/26")),
                Some(net("192.168.0.64/26")),
                Some(net("192.168.0.128/26")),
                Some(net("192.168.0.192/26")),
                None
            ]
        );
    }

    #[test]
    fn ipv6_block_ordinals_and_keys() {
        let block = net("fd00:1::40/122");
        assert_eq!(block_len(&block), 64);
        let ip: IpAddr = "fd00:1::7f".parse().unwrap();
        assert_eq!(ip_to_ordinal(&block, ip), Some(63));
        assert_eq!(ordinal_to_ip(&block, 63), Some(ip));
        assert_eq!(ordinal_to_ip(&block, 64), None);
        assert_eq!(key_cidr(&block), "fd00:1::40-122");
        assert_eq!(parse_key_cidr("fd00:1::40-122"), Ok(block));
        assert_eq!(parse_key_cidr("10.0.0.64-26"), Ok(net("10.0.0.64/26")));
        assert!(parse_key_cidr("10.0.0.65-26").is_err());
        assert!(parse_key_cidr("nonsense").is_err());
    }

    #[test]
    fn block_sizes_outside_calico_limits_are_refused() {
        assert!(check_block_size(&net("10.0.0.0/16"), 26).is_ok());
        assert!(check_block_size(&net("10.0.0.0/16"), 19).is_err());
        assert!(check_block_size(&net("10.0.0.0/28"), 26).is_err());
        assert!(check_block_size(&net("fd00::/64"), 122).is_ok());
        assert!(check_block_size(&net("fd00::/64"), 64).is_err());
    }

    #[test]
    fn split_halves_and_quarters() {
        assert_eq!(
            split(&net("10.0.0.0/24"), 2),
            Some(vec![net("10.0.0.0/25"), net("10.0.0.128/25")])
        );
        assert_eq!(split(&net("10.0.0.0/24"), 3), None);
        assert_eq!(split(&net("10.0.0.0/31"), 4), None);
    }

    fn any_v4_block() -> impl Strategy<Value = IpNet> {
        (any::<u32>(), 20u8..=32)
            .prop_map(|(a, len)| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), len).unwrap()).trunc())
    }

    fn any_v6_block() -> impl Strategy<Value = IpNet> {
        (any::<u128>(), 116u8..=128)
            .prop_map(|(a, len)| IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), len).unwrap()).trunc())
    }

    proptest! {
        #[test]
        fn ordinals_round_trip_v4(block in any_v4_block(), ord in 0usize..4096) {
            match ordinal_to_ip(&block, ord) {
                Some(ip) => {
                    prop_assert!(block.contains(&ip));
                    prop_assert_eq!(ip_to_ordinal(&block, ip), Some(ord));
                    prop_assert_eq!(block_containing(ip, block.prefix_len()), block);
                }
                None => prop_assert!(ord >= block_len(&block)),
            }
        }

        #[test]
        fn ordinals_round_trip_v6(block in any_v6_block(), ord in 0usize..4096) {
            match ordinal_to_ip(&block, ord) {
                Some(ip) => {
                    prop_assert_eq!(ip_to_ordinal(&block, ip), Some(ord));
                    prop_assert_eq!(block_containing(ip, block.prefix_len()), block);
                }
                None => prop_assert!(ord >= block_len(&block)),
            }
        }

        #[test]
        fn key_form_round_trips(block in prop_oneof![any_v4_block(), any_v6_block()]) {
            prop_assert_eq!(parse_key_cidr(&key_cidr(&block)), Ok(block));
        }

        /// Blocks of a pool are disjoint, inside the pool, and cover it exactly.
        #[test]
        fn blocks_tile_the_pool(a in any::<u32>(), plen in 16u8..=30, extra in 0u8..=6) {
            let pool = IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), plen).unwrap()).trunc();
            let bsize = (plen + extra).clamp(20, 32).max(plen);
            let n = block_count(&pool, bsize);
            let mut total = 0u128;
            let mut prev_end: Option<u128> = None;
            for i in 0..n.min(64) {
                let b = nth_block(&pool, bsize, i).unwrap();
                prop_assert!(pool.contains(&b.network()) && pool.contains(&b.broadcast()));
                let start = ip_to_u128(b.network());
                if let Some(end) = prev_end { prop_assert_eq!(start, end + 1); }
                prev_end = Some(ip_to_u128(b.broadcast()));
                total += net_len(&b);
            }
            if n <= 64 { prop_assert_eq!(total, net_len(&pool)); }
        }
    }
}
