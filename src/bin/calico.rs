//! The `calico` CNI plugin (see the calico-cni crate). `calico kubeconfig` instead writes the
//! plugin's kubeconfig and keeps its token fresh (the chart's cni-kubeconfig container); a
//! container runtime runs a plugin without arguments.

fn main() {
    if std::env::args().nth(1).as_deref() == Some("kubeconfig") {
        std::process::exit(calico_cni::kubeconfig::main());
    }
    std::process::exit(calico_cni::main(calico_cni::Which::Calico));
}
