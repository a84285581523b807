//! calicoctl: resource management, IPAM and node commands.
