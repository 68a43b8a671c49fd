//! Any template source with any conversation: compiling and rendering are results, never a
//! crash, a hang or a runaway allocation (the render's fuel, output, memory and time limits).
#![no_main]

use helixflow_core::chat_template::{ChatMessage, ChatTemplate};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    template: String,
    messages: Vec<(u8, String)>,
    add_generation_prompt: bool,
    bos: Option<String>,
}

const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

fuzz_target!(|input: Input| {
    let Ok(template) = ChatTemplate::new(
        &input.template,
        "fuzzed",
        input.bos.as_deref(),
        Some("</s>"),
    ) else {
        return;
    };
    let messages: Vec<ChatMessage> = input
        .messages
        .into_iter()
        .map(|(role, content)| ChatMessage::new(ROLES[role as usize % ROLES.len()], content))
        .collect();
    let _ = template.render(&messages, input.add_generation_prompt);
});
