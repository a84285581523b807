//! Calico block IPAM on the etcd datastore.
