//! calicoctl: manage Calico resources in the datastore (see the `calico-ctl` crate).

fn main() {
    std::process::exit(calico_ctl::main_with_args(std::env::args().collect()));
}
