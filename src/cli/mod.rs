//! Parts of the command line kept out of `main.rs`: the help texts, printing, and the export
//! command.

pub(crate) mod export;
pub(crate) mod help;
pub(crate) mod output;
pub(crate) mod plan;
pub(crate) mod verify;
