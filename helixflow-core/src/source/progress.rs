//! Telling the user what model provisioning is doing.

/// Receives human-readable status lines while models are looked up and downloaded.
pub trait Progress {
    /// One status line ("downloading ...", "installed ... into ...").
    fn message(&self, msg: &str);

    /// Whether hub downloads may draw hf-hub's own progress bars on stderr.
    fn show_download_bars(&self) -> bool {
        true
    }
}

/// Prints status lines to stderr, and lets hub downloads draw progress bars.
#[derive(Debug, Clone, Copy, Default)]
pub struct StderrProgress;

impl Progress for StderrProgress {
    fn message(&self, msg: &str) {
        eprintln!("{msg}");
    }
}

/// Says nothing (servers, tests); no progress bars either.
#[derive(Debug, Clone, Copy, Default)]
pub struct SilentProgress;

impl Progress for SilentProgress {
    fn message(&self, msg: &str) {
        tracing::debug!("{msg}");
    }

    fn show_download_bars(&self) -> bool {
        false
    }
}
