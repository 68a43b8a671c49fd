//! SmolLM2's own chat template renders every golden conversation exactly as llama.cpp did.

mod common;

use helixflow_core::chat_template::{ChatMessage, ChatTemplate};
use serde_json::Value;

#[test]
fn smollm2_template_renders_golden_prompts() {
    let golden: Value = common::golden("smollm2-chat.json");
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
