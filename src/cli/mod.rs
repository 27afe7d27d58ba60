//! The command-line interface's flags (`args`) and each command's body (`commands`), so
//! that `main.rs` holds only the command list and the dispatch.

pub mod args;
pub mod commands;
