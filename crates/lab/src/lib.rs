//! Lab harness: network namespaces as hosts, real processes, guaranteed teardown.
