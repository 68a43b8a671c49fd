//! `helixflow run MODEL` on a terminal without a prompt: a chat in the shell, as Ollama's
//! `run` has it. Each line is a turn of one conversation; `/clear` starts a new one, `/bye`
//! (or end of input) leaves; ctrl-c stops the answer being written, not the program.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use helixflow_core::chat_model::ChatModel;
use helixflow_core::chat_template::ChatMessage;
use helixflow_core::generation::GenerationParams;

/// What ctrl-c interrupts: the answer being written, if one is.
#[derive(Default)]
struct Interrupt {
    answering: AtomicBool,
    stop: AtomicBool,
}

/// Catches ctrl-c from now on (the program no longer ends on it): during an answer it stops
/// the answer; at the prompt it says how to leave.
fn catch_ctrl_c() -> Result<Arc<Interrupt>> {
    let interrupt = Arc::new(Interrupt::default());
    let caught = interrupt.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler")?;
    std::thread::Builder::new()
        .name("helixflow-ctrl-c".into())
        .spawn(move || {
            runtime.block_on(async move {
                while tokio::signal::ctrl_c().await.is_ok() {
                    if caught.answering.load(Ordering::SeqCst) {
                        caught.stop.store(true, Ordering::SeqCst);
                    } else {
                        eprintln!("\nUse Ctrl + d or /bye to exit.");
                    }
                }
            });
        })
        .context("starting the signal handler")?;
    Ok(interrupt)
}

/// The chat loop over standard input, starting from `system` (kept across `/clear`).
pub fn chat(model: &ChatModel, params: &GenerationParams, system: Option<&str>) -> Result<()> {
    let interrupt = catch_ctrl_c()?;
    let fresh = || -> Vec<ChatMessage> {
        system
            .map(|s| ChatMessage::new("system", s))
            .into_iter()
            .collect()
    };
    let mut history = fresh();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut stdout = std::io::stdout();
    loop {
        write!(stdout, ">>> ")?;
        stdout.flush()?;
        let Some(line) = lines.next() else {
            writeln!(stdout)?;
            return Ok(());
        };
        let line = line.context("reading standard input")?;
        let text = line.trim();
        match text {
            "" => continue,
            "/bye" => return Ok(()),
            "/clear" => {
                history = fresh();
                writeln!(stdout, "Cleared session context")?;
                continue;
            }
            "/?" | "/help" => {
                writeln!(
                    stdout,
                    "/clear  start a new conversation\n/bye    leave (or ctrl-d)\n\
                     ctrl-c  stop the answer being written"
                )?;
                continue;
            }
            command if command.starts_with('/') => {
                writeln!(stdout, "Unknown command '{command}'. Type /? for help")?;
                continue;
            }
            _ => {}
        }
        history.push(ChatMessage::new("user", text));
        interrupt.stop.store(false, Ordering::SeqCst);
        interrupt.answering.store(true, Ordering::SeqCst);
        let mut answer = String::new();
        let result = model.chat_stream(&history, params, |chunk| {
            if interrupt.stop.load(Ordering::SeqCst) {
                return Err(helixflow_core::Error::Cancelled);
            }
            for choice in &chunk.choices {
                if let Some(text) = &choice.delta.content {
                    answer.push_str(text);
                    let mut out = std::io::stdout().lock();
                    out.write_all(text.as_bytes())
                        .and_then(|_| out.flush())
                        .map_err(|e| helixflow_core::Error::io("<stdout>", e))?;
                }
            }
            Ok(())
        });
        interrupt.answering.store(false, Ordering::SeqCst);
        writeln!(stdout)?;
        match result {
            // What was written stays in the conversation, stopped or not.
            Ok(_) | Err(helixflow_core::Error::Cancelled) => {
                history.push(ChatMessage::new("assistant", answer));
            }
            Err(e) => {
                // The turn failed (a conversation too long for the context, say): it is
                // not kept, and the chat goes on.
                history.pop();
                eprintln!("error: {e}");
            }
        }
    }
}
