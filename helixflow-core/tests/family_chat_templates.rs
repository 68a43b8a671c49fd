//! The chat templates of the families beyond Llama render as Hugging Face's jinja2 renders
//! them: Gemma 3's (slices, `is string` tests, `raise_exception` on roles out of turn) and
//! Qwen3's (a namespace, reversed slicing, `split`/`strip` chains and thinking blocks). The
//! templates are in `tests/fixtures/chat_templates`; the expected strings come from Python's
//! jinja2 3.1 with `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)`.

use std::path::PathBuf;

use helixflow_core::chat_template::{ChatMessage, ChatTemplate};

fn template(name: &str) -> ChatTemplate {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/chat_templates")
        .join(format!("{name}.jinja"));
    let source = std::fs::read_to_string(path).unwrap();
    ChatTemplate::new(&source, name, Some("<bos>"), Some("<eos>")).unwrap()
}

fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", " Hi "),
        ChatMessage::new("assistant", "<think>\nhmm\n</think>\n\nHello!"),
        ChatMessage::new("user", "More?"),
    ]
}

#[test]
fn gemma3_template_renders_as_jinja2() {
    assert_eq!(
        template("gemma3").render(&conversation(), true).unwrap(),
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n<think>\nhmm\n</think>\n\nHello!<end_of_turn>\n<start_of_turn>user\nMore?<end_of_turn>\n<start_of_turn>model\n"
    );
    // Two user turns in a row: the template's own error, not a panic.
    let out_of_turn = [ChatMessage::new("user", "a"), ChatMessage::new("user", "b")];
    let err = template("gemma3")
        .render(&out_of_turn, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("must alternate"), "{err}");
}

#[test]
fn qwen3_template_renders_as_jinja2() {
    assert_eq!(
        template("qwen3").render(&conversation(), true).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n Hi <|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nMore?<|im_end|>\n<|im_start|>assistant\n"
    );
}
