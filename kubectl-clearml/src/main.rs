fn main() {
    println!("kubectl-clearml {}", env!("CARGO_PKG_VERSION"));
}
