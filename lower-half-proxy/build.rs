//! The proxy exports its `malloc` family dynamically so the whole lower world (its libc,
//! MPI and their dependencies) binds to them (DESIGN.md rule 2), and it is linked with the
//! real MPI library (MPICH, `libmpich.so.12`), which therefore lives only in the lower world.
fn main() {
    println!("cargo:rustc-link-arg-bin=mana_lower=-rdynamic");
    println!("cargo:rustc-link-arg-bin=mana_lower=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg-bin=mana_lower=-lmpich");
    println!("cargo:rustc-link-arg-bin=mana_lower=-Wl,--as-needed");
}
