//! The `calico` CNI plugin (see the calico-cni crate).

fn main() {
    std::process::exit(calico_cni::main(calico_cni::Which::Calico));
}
