//! Socket options BGP needs and std/tokio do not expose: TCP-MD5 signatures (RFC 2385, Linux
//! `TCP_MD5SIG`) and GTSM / TTL security (RFC 5082, `IP_MINTTL`, `IPV6_MINHOPCOUNT`).

use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;

/// Linux `TCP_MD5SIG` socket option.
const TCP_MD5SIG: libc::c_int = 14;
/// Linux `TCP_MD5SIG_MAXKEYLEN`.
pub const MD5_MAX_KEY_LEN: usize = 80;
/// Linux `IPV6_MINHOPCOUNT`.
const IPV6_MINHOPCOUNT: libc::c_int = 73;

/// `struct tcp_md5sig` from `<linux/tcp.h>`.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; MD5_MAX_KEY_LEN],
}

#[derive(Debug, thiserror::Error)]
pub enum SockoptError {
    #[error("TCP-MD5 key for {peer} is {len} bytes, the kernel takes at most {MD5_MAX_KEY_LEN}")]
    KeyTooLong { peer: IpAddr, len: usize },
    #[error("setsockopt {option} for {peer}")]
    Setsockopt {
        option: &'static str,
        peer: IpAddr,
        #[source]
        source: std::io::Error,
    },
}

fn sockaddr_storage(addr: IpAddr, socket_is_v6: bool) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let addr = match addr {
        // A dual-stack IPv6 socket sees IPv4 peers as v4-mapped addresses.
        IpAddr::V4(v4) if socket_is_v6 => IpAddr::V6(v4.to_ipv6_mapped()),
        a => a,
    };
    match addr {
        IpAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage; both are repr(C) POD.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, sin) };
        }
        IpAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as above.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, sin6) };
        }
    }
    ss
}

fn setsockopt<T>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
    option: &'static str,
    peer: IpAddr,
) -> Result<(), SockoptError> {
    // SAFETY: `value` points to a live T of the given size for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(SockoptError::Setsockopt {
            option,
            peer,
            source: std::io::Error::last_os_error(),
        })
    }
}

/// Installs (or with `None` removes) the TCP-MD5 key for `peer` on a socket. On a listening
/// socket this covers connections accepted from that peer.
pub fn set_md5(
    fd: RawFd,
    socket_is_v6: bool,
    peer: IpAddr,
    key: Option<&str>,
) -> Result<(), SockoptError> {
    let bytes = key.unwrap_or("").as_bytes();
    if bytes.len() > MD5_MAX_KEY_LEN {
        return Err(SockoptError::KeyTooLong {
            peer,
            len: bytes.len(),
        });
    }
    let mut sig = TcpMd5Sig {
        addr: sockaddr_storage(peer, socket_is_v6),
        flags: 0,
        prefixlen: 0,
        keylen: bytes.len() as u16,
        ifindex: 0,
        key: [0; MD5_MAX_KEY_LEN],
    };
    sig.key[..bytes.len()].copy_from_slice(bytes);
    match setsockopt(fd, libc::IPPROTO_TCP, TCP_MD5SIG, &sig, "TCP_MD5SIG", peer) {
        // Removing a key that is not there is fine.
        Err(SockoptError::Setsockopt { source, .. })
            if key.is_none() && source.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        r => r,
    }
}

/// GTSM: send with TTL 255 and drop packets that crossed more than `hops` routers.
pub fn set_ttl_security(
    fd: RawFd,
    socket_is_v6: bool,
    peer: IpAddr,
    hops: u8,
) -> Result<(), SockoptError> {
    let ttl: libc::c_int = 255;
    let min: libc::c_int = 256 - libc::c_int::from(hops.max(1));
    if socket_is_v6 {
        setsockopt(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_UNICAST_HOPS,
            &ttl,
            "IPV6_UNICAST_HOPS",
            peer,
        )?;
        setsockopt(
            fd,
            libc::IPPROTO_IPV6,
            IPV6_MINHOPCOUNT,
            &min,
            "IPV6_MINHOPCOUNT",
            peer,
        )?;
    }
    if !socket_is_v6 || peer.is_ipv4() {
        // For v4-mapped peers on a v6 socket the IPv4 options apply as well.
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_TTL, &ttl, "IP_TTL", peer)?;
        setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MINTTL,
            &min,
            "IP_MINTTL",
            peer,
        )?;
    }
    Ok(())
}

/// Unmaps `::ffff:a.b.c.d` so peers are always keyed by their plain address.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
