//! One module per subcommand.

pub mod bench;
pub mod embed;
pub mod models;
pub mod run;
pub mod serve;
