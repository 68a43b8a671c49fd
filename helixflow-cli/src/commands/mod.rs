//! One module per subcommand.

pub mod bench;
pub mod db;
pub mod embed;
pub mod keys;
pub mod models;
pub mod run;
pub mod serve;
pub mod usage;
pub mod users;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Where the server and the store keep their files: `dir` if given, else the user's data
/// directory.
pub fn data_dir(dir: Option<&Path>) -> Result<PathBuf> {
    match dir {
        Some(dir) => Ok(dir.to_path_buf()),
        None => Ok(dirs::data_dir()
            .context("no data directory: pass --data-dir")?
            .join("helixflow")),
    }
}
