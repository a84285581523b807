//! The `calico-ipam` CNI IPAM plugin (see the calico-cni crate).

fn main() {
    std::process::exit(calico_cni::main(calico_cni::Which::CalicoIpam));
}
