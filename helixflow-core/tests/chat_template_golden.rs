//! SmolLM2's own chat template renders every golden conversation exactly as llama.cpp did.

use std::path::PathBuf;

use helixflow_core::chat_template::{ChatMessage, ChatTemplate};
use serde_json::Value;

#[test]
fn smollm2_template_renders_golden_prompts() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden/smollm2-chat.json");
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let source = golden["chat_template"].as_str().unwrap();
    let template =
        ChatTemplate::new(source, "smollm2", Some("<|im_start|>"), Some("<|im_end|>")).unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
        assert_eq!(
            template.render(&messages, true).unwrap(),
            case["prompt"].as_str().unwrap(),
            "{messages:?}"
        );
    }
}
