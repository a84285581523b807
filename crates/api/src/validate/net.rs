//! Addresses and CIDRs in Calico's string forms.

use std::net::IpAddr;

use ipnet::IpNet;

use super::Errs;

/// Parses a CIDR (`10.0.0.0/16`). `strict` rejects host bits (`10.0.0.1/8`).
pub fn parse_cidr(s: &str, strict: bool) -> Result<IpNet, String> {
    let net: IpNet = s
        .parse()
        .map_err(|_| format!("{s:?} is not a valid CIDR"))?;
    if strict && net.trunc() != net {
        return Err(format!("{s:?} has host bits set; use {}", net.trunc()));
    }
    Ok(net)
}

/// An IP address or a CIDR; a bare address means a single host.
pub fn parse_ip_or_cidr(s: &str) -> Result<IpNet, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    parse_cidr(s, false)
}

/// Every entry an IP address or a CIDR.
pub(crate) fn check_ip_or_cidr_list(path: &str, nets: &[String], e: &mut Errs) {
    for (i, n) in nets.iter().enumerate() {
        if let Err(r) = parse_ip_or_cidr(n) {
            e.add(format!("{path}[{i}]"), r);
        }
    }
}

/// `ip`, `ipv4:port` or `[ipv6]:port`, as Calico's BGPPeer `peerIP` allows. Returns the
/// address.
pub(crate) fn parse_peer_ip(s: &str) -> Result<IpAddr, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(ip);
    }
    let bad = || format!("{s:?} is not an IP address, IPv4:port or [IPv6]:port");
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => rest.split_once("]:").ok_or_else(bad)?,
        None => s.rsplit_once(':').ok_or_else(bad)?,
    };
    let ip = host.parse::<IpAddr>().map_err(|_| bad())?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(ip),
        _ => Err(bad()),
    }
}

/// A Linux interface name as Calico accepts it (`*` for all where allowed).
pub(crate) fn is_interface_name(s: &str, allow_wildcards: bool) -> bool {
    (allow_wildcards && s == "*")
        || ((1..=15).contains(&s.len())
            && s.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(b, b'_' | b'.' | b'-')
                    || (allow_wildcards && b == b'*')
            }))
}

/// A MAC address (`ee:ee:ee:ee:ee:ee`, also `-` separated, or the 8-byte EUI-64 form).
pub(crate) fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    matches!(parts.len(), 6 | 8)
        && parts
            .iter()
            .all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok())
}
