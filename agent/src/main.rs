fn main() {
    println!("clearml-k8s-agent {}", clearml_agent::VERSION);
}
