//! `helixflow embed`: embedding vectors as OpenAI-shaped JSON.

use anyhow::Result;
use serde_json::json;

use crate::args::EmbedArgs;
use crate::load;

/// Runs the command.
pub fn run(args: EmbedArgs) -> Result<()> {
    let model = load::embedding_model(&args.model)?;
    let inputs: Vec<&str> = args.texts.iter().map(String::as_str).collect();
    let embeddings = model.embed(&inputs)?;
    let data: Vec<_> = embeddings
        .vectors
        .iter()
        .enumerate()
        .map(|(index, v)| json!({"object": "embedding", "index": index, "embedding": v}))
        .collect();
    let out = json!({
        "object": "list",
        "data": data,
        "model": model.name(),
        "usage": {"prompt_tokens": embeddings.prompt_tokens, "total_tokens": embeddings.prompt_tokens},
    });
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
