fn main() {
    eprintln!("calicoctl: not built yet");
    std::process::exit(1);
}
