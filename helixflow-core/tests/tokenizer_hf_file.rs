//! `Tokenizer::from_file` on the all-MiniLM-L6-v2 folder against `minilm-embeddings.json`.
//!
mod common;

use helixflow_core::tokenizer::Tokenizer;
use serde_json::Value;

#[test]
fn minilm_token_ids_match_the_reference() {
    let dir = common::minilm_dir();
    let tok = Tokenizer::from_file(
        &dir.join("tokenizer.json"),
        Some(&dir.join("tokenizer_config.json")),
    )
    .unwrap();
    let golden: Value = common::golden("minilm-embeddings.json");
    for case in golden["cases"].as_array().unwrap() {
        let input = case["input"].as_str().unwrap();
        let expected: Vec<u32> = case["token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        // The file pads to 128 tokens; from_file must have switched that off.
        assert_eq!(
            tok.encode_with_post_processor(input).unwrap(),
            expected,
            "{input:?}"
        );
        // Plain encode adds nothing: the same ids without [CLS] and [SEP].
        assert_eq!(
            tok.encode(input, true).unwrap(),
            expected[1..expected.len() - 1],
            "{input:?}"
        );
    }
    assert_eq!(tok.token_to_id("[CLS]"), Some(101));
    assert!(tok.is_special(101) && tok.is_special(102));
}
