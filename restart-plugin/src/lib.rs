//! The restarter's first-stage decisions that do not need the restarter's process: the
//! plan handed to the final stage ([`plan`], also compiled into the restorer), what is
//! decided from an image before anything is mapped ([`prepare`]), and the fuzz entry point
//! over all of it ([`fuzz`]).

pub mod fuzz;
#[allow(dead_code)]
pub mod plan;
pub mod prepare;
