//! Tool calling and thinking on the default model, in every format: its own template
//! (ChatML without tools: the generic JSON format) and Qwen3's (Hermes `<tool_call>` blocks,
//! `<think>`, `enable_thinking`), which SmolLM2 shares the turn markers of. `required` and
//! named choices give calls whose arguments validate, for many seeds at temperature 1;
//! streamed answers add up to the whole ones; tool results go back into the conversation.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use helixflow_core::chat_model::ChatModel;
use helixflow_core::chat_template::ChatMessage;
use helixflow_core::completion::{ChatCompletion, FinishReason};
use helixflow_core::engine::{Engine, EngineConfig, EngineHandle};
use helixflow_core::reply::Reasoning;
use helixflow_core::request::{GenerationOptions, GenerationRequest};
use helixflow_core::streaming::{Answer, AnswerChunk, AnswerPart};
use helixflow_core::tools::{ToolCall, ToolFormat};
use serde_json::{json, Value};

fn smollm2() -> Arc<ChatModel> {
    Arc::new(ChatModel::load_named(common::chat_gguf(), "smollm2-135m-instruct").unwrap())
}

/// The default model's weights with Qwen3's chat template, tools and thinking included.
fn with_qwen3_template() -> Arc<ChatModel> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/chat_templates/qwen3-tools.jinja");
    with_template(&std::fs::read_to_string(path).unwrap())
}

fn with_template(template: &str) -> Arc<ChatModel> {
    Arc::new(
        ChatModel::load_with_template(common::chat_gguf(), "smollm2-other", Some(template))
            .unwrap(),
    )
}

/// ChatML turns with the tools listed in the system turn, and `marker` where a family's
/// template writes its calls (what tells the format apart).
fn listing_tools(marker: &str) -> String {
    format!(
        "{{% if tools %}}<|im_start|>system\nTools: {{{{ tools | tojson }}}}. Call them as \
         {marker}.<|im_end|>\n{{% endif %}}{{% for message in messages %}}<|im_start|>\
         {{{{ message.role }}}}\n{{{{ message.content }}}}<|im_end|>\n{{% endfor %}}\
         <|im_start|>assistant\n"
    )
}

fn weather_schema() -> Value {
    json!({"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 20},
        "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": false})
}

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather",
            "description": "The weather in a city", "parameters": weather_schema()}},
        {"type": "function", "function": {"name": "get_time",
            "description": "The time in a time zone", "parameters": {"type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 20}}, "required": ["zone"],
            "additionalProperties": false}}}
    ])
}

fn request(chat: &ChatModel, messages: &[ChatMessage], options: Value) -> GenerationRequest {
    let options: GenerationOptions = serde_json::from_value(options).unwrap();
    GenerationRequest::chat(chat, messages, &options, false, None).unwrap()
}

fn ask(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::new("user", text)]
}

async fn run(engine: &EngineHandle, request: &GenerationRequest, stream: bool) -> Vec<AnswerPart> {
    common::run_request(engine, request, request.answer_builder("m", stream, false)).await
}

async fn answer(engine: &EngineHandle, request: &GenerationRequest) -> ChatCompletion {
    match run(engine, request, false).await.as_slice() {
        [AnswerPart::Whole(Answer::Chat(whole))] => whole.clone(),
        other => panic!("one whole chat answer: {other:?}"),
    }
}

/// Checks the calls of a `required` answer: valid arguments for the function named.
fn assert_calls(answer: &ChatCompletion) -> Vec<ToolCall> {
    let choice = &answer.choices[0];
    assert_eq!(choice.finish_reason, FinishReason::ToolCalls, "{choice:?}");
    let calls = choice.message.tool_calls.clone().unwrap();
    assert!(!calls.is_empty());
    for call in &calls {
        assert!(call.id.starts_with("call_"), "{call:?}");
        assert_eq!(call.kind, "function");
        match call.function.name.as_str() {
            "get_weather" => common::assert_valid(&weather_schema(), &call.function.arguments),
            "get_time" => {
                let args: Value = serde_json::from_str(&call.function.arguments).unwrap();
                assert!(args["zone"].is_string(), "{args}");
            }
            other => panic!("an unknown function {other}"),
        }
    }
    calls
}

#[tokio::test]
async fn required_calls_validate_for_many_seeds_in_every_format() {
    let llama3 = with_template(&listing_tools(
        "<|python_tag|>{\"name\": …, \"parameters\": …}",
    ));
    let mistral = with_template(&listing_tools(
        "[TOOL_CALLS][{\"name\": …, \"arguments\": …}]",
    ));
    assert_eq!(llama3.tool_format(), ToolFormat::Llama3);
    assert_eq!(mistral.tool_format(), ToolFormat::Mistral);
    for chat in [smollm2(), with_qwen3_template(), llama3, mistral] {
        let format = chat.tool_format();
        let engine = Engine::start(chat.clone(), EngineConfig::default()).unwrap();
        let requests: Vec<GenerationRequest> = (0..30)
            .map(|seed| {
                let options = json!({"temperature": 1.0, "seed": seed, "max_tokens": 300,
                    "tools": tools(), "tool_choice": "required"});
                request(&chat, &ask("What is the weather in Paris?"), options)
            })
            .collect();
        let answers =
            futures_util::future::join_all(requests.iter().map(|r| answer(&engine, r))).await;
        let mut names = std::collections::HashSet::new();
        let mut cut = 0;
        for answer in &answers {
            // A small model at temperature 1 may call and call again until `max_tokens`:
            // then, and only then, the answer is incomplete.
            if answer.choices[0].finish_reason == FinishReason::Length {
                cut += 1;
                continue;
            }
            for call in assert_calls(answer) {
                names.insert(call.function.name);
            }
        }
        assert!(cut <= answers.len() / 3, "{format:?}: {cut} cut short");
        assert!(!names.is_empty(), "{format:?}");
        eprintln!("{format:?}: {cut} of {} cut short", answers.len());
        // A named function, one call only.
        let options = json!({"temperature": 1.0, "seed": 7, "max_tokens": 200,
            "tools": tools(), "parallel_tool_calls": false,
            "tool_choice": {"type": "function", "function": {"name": "get_time"}}});
        let named = answer(&engine, &request(&chat, &ask("Time?"), options)).await;
        let calls = assert_calls(&named);
        assert_eq!(calls.len(), 1, "{format:?}");
        assert_eq!(calls[0].function.name, "get_time");
    }
}

#[tokio::test]
async fn the_formats_follow_the_templates() {
    assert_eq!(smollm2().tool_format(), ToolFormat::Generic);
    let qwen = with_qwen3_template();
    assert_eq!(qwen.tool_format(), ToolFormat::Hermes);
    // The tools reach Qwen3's template, which lists them in its system turn.
    let options = json!({"tools": tools()});
    let prompt = request(&qwen, &ask("Hi"), options).prompt;
    let text = qwen.tokenizer().decode(&prompt, false).unwrap();
    assert!(text.contains("<tools>\n{\"type\": \"function\""), "{text}");
    // chat_template_kwargs reach it too: no thinking, and the answer is read so.
    let thinking = request(&qwen, &ask("Hi"), json!({}));
    assert_eq!(thinking.reply.reasoning, Reasoning::Optional);
    let quiet = request(
        &qwen,
        &ask("Hi"),
        json!({"chat_template_kwargs": {"enable_thinking": false}}),
    );
    let text = qwen.tokenizer().decode(&quiet.prompt, false).unwrap();
    assert!(text.ends_with("<think>\n\n</think>\n\n"), "{text:?}");
    assert_eq!(quiet.reply.reasoning, Reasoning::Off);
    // The default template knows no tools: they are described in a system turn.
    let smol = smollm2();
    let prompt = request(&smol, &ask("Hi"), json!({"tools": tools()})).prompt;
    let text = smol.tokenizer().decode(&prompt, false).unwrap();
    assert!(
        text.contains("\"get_weather\"") && text.contains("{\"tool_calls\""),
        "{text}"
    );
}

#[tokio::test]
async fn streamed_calls_and_thinking_add_up_to_the_whole_answer() {
    let qwen = with_qwen3_template();
    let engine = Engine::start(qwen.clone(), EngineConfig::default()).unwrap();
    let cases = [
        json!({"temperature": 1.0, "seed": 3, "max_tokens": 200, "tools": tools(),
            "tool_choice": "required"}),
        // Thinking, forced by a grammar so that the tiny model writes it.
        json!({"temperature": 1.0, "seed": 5, "max_tokens": 60, "structured_outputs":
            {"regex": "<think>\\n[a-z ]{3,12}\\n</think>\\n\\nHello [a-z]{1,8}\\."}}),
    ];
    for options in cases {
        let request = request(&qwen, &ask("Weather in Rome?"), options.clone());
        let whole = answer(&engine, &request).await;
        let parts = run(&engine, &request, true).await;
        let (mut content, mut reasoning) = (String::new(), String::new());
        let mut calls: Vec<(String, String, String)> = Vec::new();
        let mut finish = None;
        for part in parts {
            let AnswerPart::Chunk(AnswerChunk::Chat(chunk)) = part else {
                panic!("chat chunks")
            };
            for choice in chunk.choices {
                content.push_str(choice.delta.content.as_deref().unwrap_or(""));
                reasoning.push_str(choice.delta.reasoning_content.as_deref().unwrap_or(""));
                for piece in choice.delta.tool_calls.into_iter().flatten() {
                    if let Some(id) = piece.id {
                        // The id, type and name come first, with no arguments yet.
                        assert_eq!(piece.index, calls.len());
                        assert_eq!(piece.kind.as_deref(), Some("function"));
                        assert!(piece.function.arguments.is_empty());
                        calls.push((id, piece.function.name.unwrap(), String::new()));
                    } else {
                        calls[piece.index].2.push_str(&piece.function.arguments);
                    }
                }
                finish = choice.finish_reason.or(finish);
            }
        }
        let message = &whole.choices[0].message;
        assert_eq!(content, message.content, "{options}");
        assert_eq!(
            reasoning,
            message.reasoning_content.clone().unwrap_or_default()
        );
        let whole_calls: Vec<(String, String)> = message
            .tool_calls
            .iter()
            .flatten()
            .map(|c| (c.function.name.clone(), c.function.arguments.clone()))
            .collect();
        let streamed_calls: Vec<(String, String)> = calls
            .into_iter()
            .map(|(_, name, args)| (name, args))
            .collect();
        assert_eq!(streamed_calls, whole_calls);
        assert_eq!(finish, Some(whole.choices[0].finish_reason));
        if options.get("structured_outputs").is_some() {
            let thought = message.reasoning_content.as_deref().unwrap();
            assert!(thought.trim().len() >= 3, "{thought:?}");
            assert!(
                message.content.starts_with("Hello "),
                "{:?}",
                message.content
            );
            assert!(message.tool_calls.is_none());
        } else {
            assert_calls(&whole);
        }
    }
}

#[tokio::test]
async fn tool_results_go_back_to_the_model() {
    for chat in [smollm2(), with_qwen3_template()] {
        let engine = Engine::start(chat.clone(), EngineConfig::default()).unwrap();
        let options = json!({"temperature": 0.0, "max_tokens": 200, "tools": tools(),
            "tool_choice": "required"});
        let first = answer(&engine, &request(&chat, &ask("Weather in Oslo?"), options)).await;
        let calls = assert_calls(&first);
        let mut history = ask("Weather in Oslo?");
        let mut assistant = ChatMessage::new("assistant", "");
        assistant.tool_calls = Some(calls.clone());
        history.push(assistant);
        for call in &calls {
            let mut result = ChatMessage::new("tool", "{\"temperature\": 3}");
            result.tool_call_id = Some(call.id.clone());
            history.push(result);
        }
        // Answering after the results; `auto` lets it call again or answer.
        let options = json!({"temperature": 0.0, "max_tokens": 40, "tools": tools()});
        let request = request(&chat, &history, options);
        let text = chat.tokenizer().decode(&request.prompt, false).unwrap();
        assert!(text.contains("temperature") && text.contains('3'), "{text}");
        assert!(text.contains(&calls[0].function.name), "{text}");
        let second = answer(&engine, &request).await;
        let choice = &second.choices[0];
        assert!(
            !choice.message.content.is_empty() || choice.message.tool_calls.is_some(),
            "{choice:?}"
        );
        // A result that answers no call is refused, naming `messages`.
        let mut stray = ChatMessage::new("tool", "42");
        stray.tool_call_id = Some("call_nope".into());
        let options: GenerationOptions = serde_json::from_value(json!({"tools": tools()})).unwrap();
        let err = GenerationRequest::chat(
            &chat,
            &[ChatMessage::new("user", "q"), stray],
            &options,
            false,
            None,
        )
        .unwrap_err();
        assert_eq!(err.field(), Some("messages"), "{err}");
    }
}

#[tokio::test]
async fn bad_tool_requests_name_their_field() {
    let chat = smollm2();
    let cases = [
        (
            json!({"tools": [{"type": "function", "function": {"name": "has space"}}]}),
            "tools",
        ),
        (
            json!({"tools": tools(), "tool_choice": "sometimes"}),
            "tool_choice",
        ),
        (json!({"tool_choice": "required"}), "tool_choice"),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f", "parameters":
                {"type": "object", "properties": {"x": {"type": "frobnicate"}}}}}],
                "tool_choice": "required"}),
            "tools",
        ),
        (
            json!({"tools": tools(), "response_format": {"type": "json_object"}}),
            "tools",
        ),
    ];
    for (options, field) in cases {
        let options: GenerationOptions = serde_json::from_value(options.clone()).unwrap();
        let err = GenerationRequest::chat(&chat, &ask("q"), &options, false, None).unwrap_err();
        assert_eq!(err.field(), Some(field), "{options:?}: {err}");
    }
    // Text completions have no tools.
    let options: GenerationOptions = serde_json::from_value(json!({"tools": tools()})).unwrap();
    let prompt = helixflow_core::request::TextPrompt::Text("x".into());
    let err = GenerationRequest::text(&chat, prompt, &options, None, false).unwrap_err();
    assert_eq!(err.field(), Some("tools"));
}
