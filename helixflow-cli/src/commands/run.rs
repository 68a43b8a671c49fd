//! `helixflow run [MODEL] [PROMPT]`: one chat turn, streamed to stdout, or without a prompt
//! on a terminal a chat in the shell.

use std::io::{IsTerminal, Read, Write};

use anyhow::{bail, Context, Result};
use helixflow_core::chat_template::ChatMessage;
use helixflow_core::generation::GenerationParams;
use helixflow_core::sampling::SamplingParams;
use helixflow_core::source::ModelSpec;

use crate::args::{RunArgs, DEFAULT_CHAT_MODEL};
use crate::load;

/// The model and the prompt of `args`: the first word is the model when `--model` names none
/// and it names one (a built-in id, or an existing file or folder).
fn model_and_prompt(args: &RunArgs) -> (String, Option<String>) {
    let mut words = args.words.iter();
    let model = match &args.model {
        Some(model) => model.clone(),
        None => match args.words.first() {
            Some(first) if names_a_model(first) => {
                words.next();
                first.clone()
            }
            _ => DEFAULT_CHAT_MODEL.to_string(),
        },
    };
    let prompt: Vec<&str> = words.map(String::as_str).collect();
    (model, (!prompt.is_empty()).then(|| prompt.join(" ")))
}

/// Whether `word` names a model rather than saying something to one.
fn names_a_model(word: &str) -> bool {
    matches!(
        ModelSpec::parse(word),
        Ok(ModelSpec::BuiltIn(_) | ModelSpec::LocalFile(_) | ModelSpec::LocalDir(_))
    )
}

/// Runs the command.
pub fn run(args: RunArgs) -> Result<()> {
    let (model_id, prompt) = model_and_prompt(&args);
    let chat = args.interactive
        || (prompt.is_none() && args.messages.is_none() && std::io::stdin().is_terminal());
    let messages = if chat {
        Vec::new()
    } else {
        messages(&args, prompt)?
    };
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
    let model = load::chat_model_with(&model_id, args.chat_template.as_deref(), args.quantize)?;
    if chat {
        return super::chat::chat(&model, &params, args.system.as_deref());
    }
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
fn messages(args: &RunArgs, prompt: Option<String>) -> Result<Vec<ChatMessage>> {
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
        let prompt = match prompt.as_deref() {
            Some("-") => {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading the prompt from standard input")?;
                text
            }
            Some(p) => p.to_string(),
            None => bail!(
                "give a PROMPT (or `-` to read it from stdin), --messages FILE, or \
                 --interactive to chat"
            ),
        };
        messages.push(ChatMessage::new("user", prompt));
    }
    Ok(messages)
}
