//! Structured outputs on the default model: `response_format` and vLLM's
//! `structured_outputs` hold every sampled answer to its grammar, through the engine's
//! continuous batching with seeds, `n > 1`, logprobs and streaming; a bad grammar is an
//! error naming its field.

mod common;

use std::sync::Arc;

use helixflow_core::chat_model::ChatModel;
use helixflow_core::chat_template::ChatMessage;
use helixflow_core::completion::{ChatCompletion, FinishReason};
use helixflow_core::engine::{Engine, EngineConfig, EngineHandle};
use helixflow_core::request::{GenerationOptions, GenerationRequest};
use helixflow_core::streaming::{Answer, AnswerChunk, AnswerPart};
use serde_json::{json, Value};

fn model() -> Arc<ChatModel> {
    Arc::new(ChatModel::load_named(common::chat_gguf(), "smollm2-135m-instruct").unwrap())
}

fn request(chat: &ChatModel, prompt: &str, options: Value) -> GenerationRequest {
    let options: GenerationOptions = serde_json::from_value(options).unwrap();
    let messages = [ChatMessage::new("user", prompt)];
    GenerationRequest::chat(chat, &messages, &options, false, None).unwrap()
}

/// The whole answer to `request`, run on `engine`.
async fn answer(engine: &EngineHandle, request: &GenerationRequest) -> ChatCompletion {
    let parts = run(engine, request, false).await;
    match parts.as_slice() {
        [AnswerPart::Whole(Answer::Chat(whole))] => whole.clone(),
        other => panic!("one whole chat answer: {other:?}"),
    }
}

async fn run(engine: &EngineHandle, request: &GenerationRequest, stream: bool) -> Vec<AnswerPart> {
    common::run_request(engine, request, request.answer_builder("m", stream, false)).await
}

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 24},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "colors": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3},
            "member": {"type": "boolean"}
        },
        "required": ["name", "age", "colors", "member"],
        "additionalProperties": false
    })
}

#[tokio::test]
async fn json_schema_answers_validate_for_fifty_seeds_at_temperature_one() {
    let chat = model();
    let engine = Engine::start(chat.clone(), EngineConfig::default()).unwrap();
    let schema = person_schema();
    let format = json!({"type": "json_schema",
        "json_schema": {"name": "person", "schema": schema, "strict": true}});
    // All fifty in flight together: masks per sequence in continuous batches.
    let requests: Vec<GenerationRequest> = (0..50)
        .map(|seed| {
            let options = json!({"temperature": 1.0, "seed": seed, "max_tokens": 300,
                "response_format": format});
            request(&chat, "Describe a person as JSON.", options)
        })
        .collect();
    let answers = futures_util::future::join_all(requests.iter().map(|r| answer(&engine, r))).await;
    let mut texts = std::collections::HashSet::new();
    for answer in &answers {
        let choice = &answer.choices[0];
        assert_eq!(
            choice.finish_reason,
            FinishReason::Stop,
            "{:?}",
            choice.message.content
        );
        common::assert_valid(&schema, &choice.message.content);
        // Written as json.dumps writes it: no free whitespace to wander into.
        assert!(
            !choice.message.content.contains('\n'),
            "{}",
            choice.message.content
        );
        texts.insert(choice.message.content.clone());
    }
    assert!(texts.len() > 10, "seeds give different answers: {texts:?}");

    // json_object: any JSON object (a small model at temperature 1 may nest objects past
    // its budget: then the answer ends on the length, and only then is it incomplete).
    let mut complete = 0;
    for seed in 0..6 {
        let options = json!({"temperature": 1.0, "seed": seed, "max_tokens": 200,
            "response_format": {"type": "json_object"}});
        let object = answer(
            &engine,
            &request(&chat, "Reply with a JSON object.", options),
        )
        .await;
        let (text, finish) = (
            &object.choices[0].message.content,
            object.choices[0].finish_reason,
        );
        if finish == FinishReason::Stop {
            let value: Value = serde_json::from_str(text).unwrap();
            assert!(value.is_object(), "{value}");
            complete += 1;
        } else {
            assert_eq!(finish, FinishReason::Length);
        }
    }
    assert!(complete > 0, "some answer fits its budget");
}

#[tokio::test]
async fn several_choices_logprobs_and_streams_keep_to_the_schema() {
    let chat = model();
    let engine = Engine::start(chat.clone(), EngineConfig::default()).unwrap();
    let schema = person_schema();
    let options = json!({"temperature": 0.9, "seed": 7, "n": 4, "max_tokens": 300,
        "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}});
    let options: GenerationOptions = serde_json::from_value(options).unwrap();
    let messages = [ChatMessage::new("user", "A person, please.")];
    let request = GenerationRequest::chat(&chat, &messages, &options, true, Some(2)).unwrap();
    let whole = answer(&engine, &request).await;
    assert_eq!(whole.choices.len(), 4);
    for choice in &whole.choices {
        common::assert_valid(&schema, &choice.message.content);
        let logprobs = choice.logprobs.as_ref().unwrap();
        assert!(!logprobs.content.is_empty());
    }
    // The same seed streamed: the same answers, chunk by chunk.
    let streamed = run(&engine, &request, true).await;
    let mut texts = vec![String::new(); 4];
    for part in streamed {
        let AnswerPart::Chunk(AnswerChunk::Chat(chunk)) = part else {
            panic!("chunks only")
        };
        for choice in chunk.choices {
            texts[choice.index].push_str(choice.delta.content.as_deref().unwrap_or(""));
        }
    }
    let wholes: Vec<&str> = whole
        .choices
        .iter()
        .map(|c| c.message.content.as_str())
        .collect();
    assert_eq!(texts, wholes);
}

#[tokio::test]
async fn regex_choice_and_lark_grammars_hold() {
    let chat = model();
    let engine = Engine::start(chat.clone(), EngineConfig::default()).unwrap();
    let run_with = |spec: Value, seed: u64| {
        let options = json!({"temperature": 1.0, "seed": seed, "max_tokens": 40,
            "structured_outputs": spec});
        request(&chat, "Answer briefly.", options)
    };
    for seed in 0..5 {
        let phone = run_with(json!({"regex": "[0-9]{3}-[0-9]{4}"}), seed);
        let text = answer(&engine, &phone).await.choices[0]
            .message
            .content
            .clone();
        assert!(
            text.len() == 8
                && text.as_bytes()[3] == b'-'
                && text.replace('-', "").bytes().all(|b| b.is_ascii_digit()),
            "{text:?}"
        );
        let choice = run_with(json!({"choice": ["yes", "no", "maybe so"]}), seed);
        let text = answer(&engine, &choice).await.choices[0]
            .message
            .content
            .clone();
        assert!(
            ["yes", "no", "maybe so"].contains(&text.as_str()),
            "{text:?}"
        );
        let lark = run_with(
            json!({"grammar": "start: \"color: \" COLOR\nCOLOR: \"red\" | \"blue\""}),
            seed,
        );
        let text = answer(&engine, &lark).await.choices[0]
            .message
            .content
            .clone();
        assert!(
            ["color: red", "color: blue"].contains(&text.as_str()),
            "{text:?}"
        );
    }
    // A budget too small for the grammar ends on the length, as OpenAI's does.
    let options = json!({"temperature": 0, "max_tokens": 3,
        "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": person_schema()}}});
    let cut = answer(&engine, &request(&chat, "A person.", options)).await;
    assert_eq!(cut.choices[0].finish_reason, FinishReason::Length);
}

#[test]
fn bad_grammars_and_combinations_name_their_field() {
    let chat = model();
    let messages = [ChatMessage::new("user", "hi")];
    let field_of = |options: Value| {
        let options: GenerationOptions = serde_json::from_value(options).unwrap();
        let e = GenerationRequest::chat(&chat, &messages, &options, false, None).unwrap_err();
        (e.field().map(String::from), e.to_string())
    };
    for (options, field) in [
        (
            json!({"response_format": {"type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}}}}),
            "response_format",
        ),
        (
            json!({"response_format": {"type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "frobnicate"}}}}),
            "response_format",
        ),
        (
            json!({"response_format": {"type": "xml"}}),
            "response_format",
        ),
        (
            json!({"structured_outputs": {"regex": "(unclosed"}}),
            "structured_outputs",
        ),
        (
            json!({"structured_outputs": {"grammar": "start: missing_rule"}}),
            "structured_outputs",
        ),
        (
            json!({"structured_outputs": {"regex": "a"}, "response_format": {"type": "json_object"}}),
            "structured_outputs",
        ),
        (
            json!({"response_format": {"type": "json_object"}, "ignore_eos": true}),
            "ignore_eos",
        ),
    ] {
        let (got, message) = field_of(options.clone());
        assert_eq!(got.as_deref(), Some(field), "{options}: {message}");
    }
}
