//! `helixflow db migrate`, and opening the platform's store for the other commands.

use anyhow::{Context, Result};
use helixflow_core::platform::Store;

use crate::args::{DbArgs, DbCommand, StoreArgs};

/// Opens (and migrates) the store `DATABASE_URL` names, else the SQLite file in the data
/// directory.
pub async fn open_store(args: &StoreArgs) -> Result<Store> {
    let dir = crate::commands::data_dir(args.data_dir.as_deref())?;
    let url = Store::url_from_env(&dir)?;
    let store = Store::connect(&url)
        .await
        .with_context(|| format!("opening the database {}", redact(&url)))?;
    store.migrate().await?;
    Ok(store)
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Runs one `db` subcommand.
pub fn run(args: DbArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        match args.command {
            DbCommand::Migrate => {
                let store = open_store(&args.store).await?;
                eprintln!("the {:?} database is up to date", store.backend());
                store.close().await;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            super::redact("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(super::redact("sqlite:///a.db"), "sqlite:///a.db");
    }
}
