//! Datastore trait and its etcd v3 implementation in Calico's key layout.
