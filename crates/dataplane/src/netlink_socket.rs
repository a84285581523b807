//! A raw netlink socket to the kernel, for the paths that pack many messages into one datagram
//! and read the answers themselves: rtnetlink route batches ([`crate::route_batch`]) and
//! nf_tables transactions (calico-nftables). One owner for opening, sizing, bounding and the
//! send/receive system calls; each protocol keeps its own messages and answer parsing.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// How long a receive waits for the kernel before giving up, so that a lost answer cannot
/// hang the caller.
const RECEIVE_TIMEOUT_SECS: libc::time_t = 10;

/// An open netlink socket, bound in the network namespace of the thread that opened it.
#[derive(Debug)]
pub struct NetlinkSocket {
    fd: OwnedFd,
}

impl NetlinkSocket {
    /// Opens a `protocol` socket (`libc::NETLINK_ROUTE`, `libc::NETLINK_NETFILTER`) in the
    /// calling thread's network namespace, asks for `buffer` bytes of send and receive buffer
    /// (forced with CAP_NET_ADMIN, else capped by the system's maximum), bounds receives in
    /// time and binds it (the kernel assigns the port id).
    pub fn open(protocol: libc::c_int, buffer: libc::c_int) -> io::Result<NetlinkSocket> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh fd we own.
        let socket = NetlinkSocket {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        };
        for (force, plain) in [
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        ] {
            // Without CAP_NET_ADMIN the forced size is refused; the capped one still helps.
            if !socket.set_option(libc::SOL_SOCKET, force, buffer) {
                socket.set_option(libc::SOL_SOCKET, plain, buffer);
            }
        }
        let tv = libc::timeval {
            tv_sec: RECEIVE_TIMEOUT_SECS,
            tv_usec: 0,
        };
        // SAFETY: valid timeval option on a socket we own.
        if unsafe {
            libc::setsockopt(
                socket.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: zeroed sockaddr_nl is valid (pid 0: the kernel assigns one).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: bind with a properly sized sockaddr_nl.
        if unsafe {
            libc::bind(
                socket.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(socket)
    }

    /// Sets an integer socket option; whether the kernel accepted it.
    pub fn set_option(&self, level: libc::c_int, opt: libc::c_int, value: libc::c_int) -> bool {
        // SAFETY: setsockopt with a valid int option on a socket we own.
        unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                opt,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            ) == 0
        }
    }

    /// The receive buffer the kernel granted, in bytes (0 if it cannot be read).
    pub fn receive_buffer(&self) -> usize {
        let mut size: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt into a c_int with its size.
        let ok = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&mut size as *mut libc::c_int).cast(),
                &mut len,
            )
        } == 0;
        if ok { size.max(0) as usize } else { 0 }
    }

    /// Sends `buf` to the kernel as one datagram (a short send is an error).
    pub fn send(&self, buf: &[u8]) -> io::Result<()> {
        // SAFETY: zeroed sockaddr_nl addresses the kernel (pid 0).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        loop {
            // SAFETY: buf is valid for its length; addr is a sockaddr_nl.
            let rc = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    buf.as_ptr().cast(),
                    buf.len(),
                    0,
                    (&addr as *const libc::sockaddr_nl).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as u32,
                )
            };
            if rc >= 0 {
                return if rc as usize == buf.len() {
                    Ok(())
                } else {
                    Err(io::Error::other(format!(
                        "short send {rc} of {}",
                        buf.len()
                    )))
                };
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Receives one datagram into `buf`; its length. `nowait`: return `WouldBlock` at once
    /// when nothing is queued rather than waiting (bounded) for the kernel.
    pub fn recv(&self, buf: &mut [u8], nowait: bool) -> io::Result<usize> {
        let flags = if nowait { libc::MSG_DONTWAIT } else { 0 };
        loop {
            // SAFETY: buf is valid for writes of its length.
            let rc = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    flags,
                )
            };
            if rc >= 0 {
                return Ok(rc as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}
