//! The proxy exports its `malloc` family dynamically so the whole lower world (its libc,
//! later MPI and its dependencies) binds to them (DESIGN.md rule 2).
fn main() {
    println!("cargo:rustc-link-arg-bin=mana_lower=-rdynamic");
}
