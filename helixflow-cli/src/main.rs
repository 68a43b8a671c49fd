//! `helixflow`: one-shot prompts, embeddings, model administration and benchmarks on the
//! HelixFlow engine. The binary only parses arguments and calls `helixflow-core`.

mod args;
mod commands;
mod load;

use clap::Parser;

fn main() {
    let cli = args::Cli::parse();
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
        args::Command::Bench(a) => commands::bench::run(a),
        args::Command::Serve(a) => commands::serve::run(a),
    };
    if let Err(err) = result {
        // `{:#}` prints the whole cause chain on one line, without a backtrace.
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
