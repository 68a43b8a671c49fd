//! `helixflow users`: create, list and disable users in the platform's store, with the server
//! running or not. Passwords never come from the command line, where `ps` would show them.

use std::io::BufRead;

use anyhow::{bail, Context, Result};
use helixflow_core::platform::{NewUser, Scope, Store, User};

use crate::args::{UsersArgs, UsersCommand};
use crate::commands::db::open_store;

/// Where `users create` reads the password without `--password-stdin`.
const PASSWORD_ENV: &str = "HELIXFLOW_USER_PASSWORD";

/// Runs one `users` subcommand.
pub fn run(args: UsersArgs) -> Result<()> {
    // Read before the store opens, so a missing password fails without touching it.
    let password = match &args.command {
        UsersCommand::Create { password_stdin, .. } => Some(password(*password_stdin)?),
        _ => None,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let store = open_store(&args.store).await?;
        let result = match args.command {
            UsersCommand::Create {
                username,
                scopes,
                json,
                ..
            } => {
                let scopes = scopes
                    .iter()
                    .map(|s| Scope::parse(s))
                    .collect::<Result<Vec<_>, _>>()?;
                let new = NewUser {
                    username,
                    password: password.unwrap_or_default(),
                    scopes,
                };
                let user = store.create_user(new).await?;
                if json {
                    println!("{}", serde_json::to_string(&user)?);
                } else {
                    println!("{}", user.id);
                    eprintln!("created {} ({})", user.username, user.id);
                }
                Ok(())
            }
            UsersCommand::List { json } => {
                let users = store.list_users().await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&users)?);
                } else {
                    print_table(&users);
                }
                Ok(())
            }
            UsersCommand::Disable { user } => disable(&store, &user).await,
        };
        store.close().await;
        result
    })
}

/// The password: the first line of standard input, or the environment variable.
fn password(from_stdin: bool) -> Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        let password = line.trim_end_matches(['\n', '\r']);
        if password.is_empty() {
            bail!("no password on standard input");
        }
        return Ok(password.to_string());
    }
    match std::env::var(PASSWORD_ENV) {
        Ok(password) if !password.is_empty() => Ok(password),
        _ => bail!(
            "give the new user's password on standard input with --password-stdin, or in \
             {PASSWORD_ENV}"
        ),
    }
}

/// Disables the user with this id, else with this username.
async fn disable(store: &Store, id_or_name: &str) -> Result<()> {
    let user = match store.get_user(id_or_name).await? {
        Some(user) => user,
        None => match store.get_user_by_name(id_or_name).await? {
            Some(user) => user,
            None => bail!("no user has the id or username `{id_or_name}`"),
        },
    };
    store.disable_user(&user.id).await?;
    eprintln!(
        "disabled {} ({}): their logins and access tokens are refused",
        user.username, user.id
    );
    Ok(())
}

fn print_table(users: &[User]) {
    println!(
        "{:<22} {:<32} {:<17} {:<8}",
        "id", "username", "scopes", "state"
    );
    for user in users {
        let scopes: Vec<&str> = user.scopes.iter().map(|s| s.as_str()).collect();
        let state = if user.is_active() {
            "active"
        } else {
            "disabled"
        };
        println!(
            "{:<22} {:<32} {:<17} {:<8}",
            user.id,
            user.username,
            scopes.join(","),
            state
        );
    }
}
