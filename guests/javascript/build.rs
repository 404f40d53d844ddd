//! Link settings of the guest that hold however it is built.

fn main() {
    // A 1 MiB shadow stack (linear memory) for QuickJS's C frames and Rust's.
    // QuickJS's own limit (src/stack.rs) stops deep recursion well before
    // it is used up.
    println!("cargo:rustc-link-arg=-zstack-size=1048576");
    println!("cargo:rerun-if-changed=build.rs");
}
