//! The command line of `killswitch`, as a library: its clap definitions, exit statuses and
//! examples, and nothing that talks to the daemon.
//!
//! The binary (`src/main.rs`) parses with these definitions; `killswitch-docgen` renders the man
//! page and the shell completions from the same ones, so that `--help`, `man killswitch` and tab
//! completion cannot drift apart. The library links only clap and `killswitch-types` (for the
//! value parsers), like the binary.

#![forbid(unsafe_code)]

pub mod args;
