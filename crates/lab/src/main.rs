//! `calico-lab`: bring the seed's lab up and down (see `calico-lab --help`).

fn main() -> anyhow::Result<()> {
    anyhow::bail!("calico-lab: not implemented yet")
}
