//! Embedding helixflow-core in a program: load the default chat and embedding models (they are
//! downloaded into the cache on first use), stream a chat reply, and compare two sentences.
//!
//! Run with `cargo run -p helixflow-examples --example embed_library`.

use std::io::Write;

use helixflow_core::chat_model::ChatModel;
use helixflow_core::chat_template::ChatMessage;
use helixflow_core::embeddings::EmbeddingModel;
use helixflow_core::generation::GenerationParams;
use helixflow_core::source::{resolve, ModelHome, ModelSpec, StderrProgress};

fn main() -> Result<(), helixflow_core::Error> {
    let home = ModelHome::from_env()?;
    let path = |id: &str| -> Result<_, helixflow_core::Error> {
        Ok(resolve(&ModelSpec::parse(id)?, &home, &StderrProgress)?.path)
    };

    let chat = ChatModel::load_named(path("smollm2-135m-instruct")?, "smollm2-135m-instruct")?;
    let messages = [ChatMessage::new(
        "user",
        "Give me one fun fact about octopuses.",
    )];
    let reply = chat.chat_stream(&messages, &GenerationParams::greedy(64), |chunk| {
        for choice in &chunk.choices {
            print!("{}", choice.delta.content.as_deref().unwrap_or(""));
        }
        std::io::stdout().flush().ok();
        Ok(())
    })?;
    println!(
        "\n[{} prompt + {} completion tokens]",
        reply.usage.prompt_tokens, reply.usage.completion_tokens
    );

    let embedder = EmbeddingModel::load(&path("all-minilm-l6-v2")?)?;
    let v = embedder
        .embed(&["The weather is lovely today.", "It's so sunny outside!"])?
        .vectors;
    let cosine: f32 = v[0].iter().zip(&v[1]).map(|(a, b)| a * b).sum();
    println!("similarity: {cosine:.4}");
    Ok(())
}
