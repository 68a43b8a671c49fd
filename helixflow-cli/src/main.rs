//! `helixflow`: one-shot prompts, embeddings, model administration and benchmarks on the
//! HelixFlow engine. The binary only parses arguments and calls `helixflow-core`.

mod args;
mod client;
mod commands;
mod config_file;
mod load;

use args::ModelsCommand;
use clap::{CommandFactory, FromArgMatches};

fn main() {
    let matches = args::Cli::command().get_matches();
    let cli = match args::Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HELIXFLOW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        args::Command::Run(a) => commands::run::run(a),
        args::Command::Embed(a) => commands::embed::run(a),
        args::Command::Models(a) => commands::models::run(a),
        args::Command::Pull { id } => commands::models::run_command(ModelsCommand::Pull { id }),
        args::Command::Ls { json } => commands::models::run_command(ModelsCommand::List { json }),
        args::Command::Ps { json, server } => {
            commands::models::run_command(ModelsCommand::Ps { json, server })
        }
        args::Command::Rm { id } => commands::models::run_command(ModelsCommand::Rm { id }),
        args::Command::Bench(a) => commands::bench::run(a),
        args::Command::Keys(a) => commands::keys::run(a),
        args::Command::Users(a) => commands::users::run(a),
        args::Command::Usage(a) => commands::usage::run(a),
        args::Command::Db(a) => commands::db::run(a),
        args::Command::Serve(mut a) => {
            let serve = matches
                .subcommand_matches("serve")
                .expect("the serve subcommand");
            config_file::apply(&mut a, serve).and_then(|()| commands::serve::run(a))
        }
    };
    if let Err(err) = result {
        // `{:#}` prints the whole cause chain on one line, without a backtrace.
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
