//! One request's lifecycle on the default model, as every front end runs it: options and a
//! prompt become one validated `GenerationRequest` (field-aware errors), the engine runs it,
//! and `AnswerBuilder` makes the streamed chunks and the whole answer, which agree with each
//! other and with `ChatModel`'s own answer.

mod common;

use std::sync::Arc;

use helixflow_core::chat_model::ChatModel;
use helixflow_core::chat_template::ChatMessage;
use helixflow_core::engine::{Engine, EngineConfig};
use helixflow_core::request::{GenerationOptions, GenerationRequest, TextPrompt};
use helixflow_core::streaming::{Answer, AnswerBuilder, AnswerChunk, AnswerPart};
use helixflow_core::{Error, ErrorClass};

fn model() -> Arc<ChatModel> {
    Arc::new(ChatModel::load_named(common::chat_gguf(), "smollm2-135m-instruct").unwrap())
}

fn options(json: serde_json::Value) -> GenerationOptions {
    serde_json::from_value(json).unwrap()
}

#[tokio::test]
async fn streamed_and_whole_answers_agree_with_the_chat_model() {
    let chat = model();
    let engine = Engine::start(chat.clone(), EngineConfig::default()).unwrap();
    let messages = [ChatMessage::new("user", "Name three primary colors.")];
    let options = options(serde_json::json!({"temperature": 0, "max_tokens": 12}));
    let request = GenerationRequest::chat(&chat, &messages, &options, true, Some(2)).unwrap();
    assert_eq!(request.prompt, chat.encode_chat(&messages).unwrap());

    let (n, logprobs) = (request.params.n, request.params.sampling.logprobs);
    let whole = common::run_request(
        &engine,
        &request,
        AnswerBuilder::whole(request.kind, request.header("m"), n, logprobs),
    )
    .await;
    let [AnswerPart::Whole(Answer::Chat(whole))] = whole.as_slice() else {
        panic!("one whole chat answer: {whole:?}")
    };
    let streamed = common::run_request(
        &engine,
        &request,
        AnswerBuilder::streamed(request.kind, request.header("m"), n, true),
    )
    .await;
    let chunks: Vec<_> = streamed
        .iter()
        .map(|part| match part {
            AnswerPart::Chunk(AnswerChunk::Chat(chunk)) => chunk,
            other => panic!("chat chunks only: {other:?}"),
        })
        .collect();
    let text: String = chunks
        .iter()
        .flat_map(|c| c.choices.iter().filter_map(|c| c.delta.content.clone()))
        .collect();
    assert_eq!(text, whole.choices[0].message.content);
    // Every token's logprob arrives once, held-back tokens' included.
    let streamed_logprobs: usize = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|c| c.logprobs.as_ref())
        .map(|l| l.content.len())
        .sum();
    let whole_logprobs = whole.choices[0].logprobs.as_ref().unwrap().content.len();
    assert_eq!(streamed_logprobs, whole_logprobs);
    assert_eq!(chunks.last().unwrap().usage, Some(whole.usage));

    // The model's own (engine-less) path answers through the same builder.
    let direct = chat.chat(&messages, &request.params).unwrap();
    assert_eq!(
        direct.choices[0].message.content,
        whole.choices[0].message.content
    );
    assert_eq!(direct.usage, whole.usage);
}

#[test]
fn bad_requests_name_the_field_at_fault() {
    let chat = model();
    let none = GenerationOptions::default();
    let text = |prompt: TextPrompt, logprobs: Option<usize>, echo: bool| {
        GenerationRequest::text(&chat, prompt, &none, logprobs, echo).unwrap_err()
    };
    let field = |e: Error| (e.class(), e.field().map(String::from));
    let invalid = |name: &str| (ErrorClass::InvalidRequest, Some(name.to_string()));
    assert_eq!(
        field(text(TextPrompt::Text("hi".into()), None, true)),
        invalid("echo")
    );
    assert_eq!(
        field(text(TextPrompt::Text("hi".into()), Some(21), false)),
        invalid("logprobs")
    );
    assert_eq!(
        field(text(TextPrompt::Tokens(Vec::new()), None, false)),
        invalid("prompt")
    );
    // Options are checked against the model before any tokenising.
    let hot = options(serde_json::json!({"temperature": 5}));
    let e = GenerationRequest::chat(&chat, &[ChatMessage::new("user", "hi")], &hot, false, None)
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::InvalidRequest);
    let e = GenerationRequest::chat(&chat, &[], &none, false, Some(2)).unwrap_err();
    assert!(e.to_string().contains("top_logprobs"), "{e}");
}
