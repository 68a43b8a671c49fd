//! `helixflow run`: one chat turn, streamed to stdout.

use std::io::{Read, Write};

use anyhow::{bail, Context, Result};
use helixflow_core::chat_template::ChatMessage;
use helixflow_core::generation::GenerationParams;
use helixflow_core::sampling::SamplingParams;

use crate::args::RunArgs;
use crate::load;

/// Runs the command.
pub fn run(args: RunArgs) -> Result<()> {
    let messages = messages(&args)?;
    let params = GenerationParams {
        sampling: SamplingParams {
            temperature: args.temperature,
            top_p: args.top_p,
            seed: args.seed,
            ..SamplingParams::default()
        },
        max_tokens: Some(args.max_tokens),
        stop: args.stop.clone(),
        n: 1,
        ignore_eos: false,
        grammar: None,
    };
    let model = load::chat_model_with(&args.model, args.chat_template.as_deref(), args.quantize)?;
    if args.json {
        let completion = model.chat(&messages, &params)?;
        println!("{}", serde_json::to_string_pretty(&completion)?);
        return Ok(());
    }
    let mut stdout = std::io::stdout().lock();
    model.chat_stream(&messages, &params, |chunk| {
        for choice in &chunk.choices {
            if let Some(text) = &choice.delta.content {
                // A closed stdout (`| head`) ends generation instead of panicking.
                stdout
                    .write_all(text.as_bytes())
                    .and_then(|_| stdout.flush())
                    .map_err(|e| helixflow_core::Error::io("<stdout>", e))?;
            }
        }
        Ok(())
    })?;
    writeln!(stdout)?;
    Ok(())
}

/// The conversation: `--messages`, or `--system` plus PROMPT (or stdin for `-`).
fn messages(args: &RunArgs) -> Result<Vec<ChatMessage>> {
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(ChatMessage::new("system", system.clone()));
    }
    if let Some(path) = &args.messages {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        messages.extend(
            helixflow_core::chat_template::messages_from_openai(&value)
                .with_context(|| format!("in {}", path.display()))?,
        );
    } else {
        let prompt = match args.prompt.as_deref() {
            Some("-") => {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading the prompt from standard input")?;
                text
            }
            Some(p) => p.to_string(),
            None => bail!("give a PROMPT (or `-` to read it from stdin) or --messages FILE"),
        };
        messages.push(ChatMessage::new("user", prompt));
    }
    Ok(messages)
}
