//! `helixflow models pull|list`.

use anyhow::Result;
use helixflow_core::source::{self, ModelHome, ModelSpec, StderrProgress};
use serde_json::json;

use crate::args::{ModelsArgs, ModelsCommand};

/// Runs the command.
pub fn run(args: ModelsArgs) -> Result<()> {
    let home = ModelHome::from_env()?;
    match args.command {
        ModelsCommand::Pull { id } => {
            let resolved = source::pull(&ModelSpec::parse(&id)?, &home, &StderrProgress)?;
            println!(
                "{} ({}) is at {}",
                resolved.name,
                resolved.kind,
                resolved.path.display()
            );
        }
        ModelsCommand::List { json } => {
            let models = source::list_cached(&home)?;
            if json {
                let list: Vec<_> = models
                    .iter()
                    .map(|m| json!({"id": m.id, "path": m.path, "size_bytes": m.size_bytes, "verified": m.verified, "license": m.license}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                if models.is_empty() {
                    println!("no models in {}", home.root().display());
                } else {
                    println!("{:<40} {:>10}  {:<8} PATH", "ID", "SIZE", "VERIFIED");
                    for m in models {
                        println!(
                            "{:<40} {:>10}  {:<8} {}",
                            m.id,
                            human_size(m.size_bytes),
                            if m.verified { "yes" } else { "-" },
                            m.path.display()
                        );
                    }
                }
                println!("\nbuilt-in models (`helixflow models pull ID`):");
                for entry in source::builtin_models() {
                    println!("  {:<24} {}", entry.id, entry.description);
                    println!("  {:<24} license: {}", "", entry.license);
                }
            }
        }
    }
    Ok(())
}

/// `123.4 MB` style sizes.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KB", "MB", "GB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    format!("{size:.1} {}", UNITS[unit])
}
