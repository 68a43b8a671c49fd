//! One module per subcommand.

pub mod bench;
pub mod chat;
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
/// directory; created if missing (a fresh machine has none), private to its owner.
pub fn data_dir(dir: Option<&Path>) -> Result<PathBuf> {
    let dir = match dir {
        Some(dir) => dir.to_path_buf(),
        None => dirs::data_dir()
            .context("no data directory: pass --data-dir")?
            .join("helixflow"),
    };
    // Whatever had to be tightened is logged as a warning.
    helixflow_core::platform::prepare_data_dir(&dir)?;
    Ok(dir)
}
