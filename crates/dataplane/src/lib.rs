//! Kernel state: links, addresses, routes, sysctls (rtnetlink) and nftables.
