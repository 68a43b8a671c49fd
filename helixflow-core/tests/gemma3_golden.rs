//! Gemma 3 270M (the second built-in model, `gemma3` architecture, Q4_K_M) against llama.cpp's
//! reference outputs (`gemma3-270m.json`): SentencePiece tokenisation, and greedy completions
//! of raw prompts, token for token.

mod common;

use std::sync::OnceLock;

use common::{assert_encodes_like_llama_cpp, greedy_path, ids};
use helixflow_core::chat_model::ChatModel;
use helixflow_core::chat_template::ChatMessage;
use helixflow_core::generation::GenerationParams;
use helixflow_core::models::GgmlBuild;
use helixflow_core::Error;

/// The model, computing as the llama.cpp build that made the references did (AVX-512; the
/// references' README says so), whatever this CPU is.
fn model() -> &'static ChatModel {
    static MODEL: OnceLock<ChatModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let mut model =
            ChatModel::load_named(common::builtin("gemma-3-270m"), "gemma-3-270m").unwrap();
        model.model_mut().set_ggml_build(GgmlBuild::Avx512);
        model
    })
}

fn golden() -> serde_json::Value {
    common::golden("gemma3-270m.json")
}

#[test]
fn the_file_is_the_one_the_references_were_made_with() {
    let path = common::builtin("gemma-3-270m");
    let digest = helixflow_core::source::sha256_file(&path).unwrap();
    assert_eq!(digest, golden()["model_sha256"].as_str().unwrap());
    assert_eq!(model().model().shape().architecture, "gemma3");
}

#[test]
fn tokenization_matches_llama_cpp() {
    let tokenizer = model().tokenizer();
    let golden = golden();
    let cases = golden["tokenization_cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        assert_encodes_like_llama_cpp(tokenizer, case);
    }
}

/// Every completion: the prompt tokenised with its BOS as llama.cpp did, and greedy decoding
/// giving llama.cpp's tokens up to `robust_prefix` (past it an independent correct
/// implementation may diverge, the references' README explains why).
#[test]
fn greedy_completions_reproduce_llama_cpp() {
    let golden = golden();
    let cases = golden["completions"].as_array().unwrap();
    assert!(!cases.is_empty());
    let mut whole = 0;
    for case in cases {
        let prompt = case["prompt"].as_str().unwrap();
        let prompt_ids = ids(&case["prompt_token_ids"]);
        assert_eq!(
            model().encode_prompt(prompt).unwrap(),
            prompt_ids,
            "{prompt:?}"
        );
        let expected = ids(&case["generated_token_ids"]);
        let (path, _) = greedy_path(model(), &prompt_ids, expected.len());
        let robust = case["robust_prefix"].as_u64().unwrap() as usize;
        assert_eq!(
            path[..robust],
            expected[..robust],
            "{prompt:?}: the first {robust} tokens"
        );
        whole += usize::from(path == expected);
    }
    // With llama.cpp's tiled K-quant order for prompts (and the last layer's MLP on the
    // output rows alone), its arithmetic is reproduced bit for bit: every token matches,
    // past the robust prefixes too.
    assert_eq!(whole, cases.len(), "completions reproduced in full");
}

/// The completion path of the public API gives the same text as the reference.
#[test]
fn the_completion_api_gives_the_reference_text() {
    let golden = golden();
    let case = &golden["completions"][0];
    let params = GenerationParams::greedy(case["generated_token_ids"].as_array().unwrap().len());
    let completion = model()
        .complete(case["prompt"].as_str().unwrap(), &params)
        .unwrap();
    assert_eq!(
        completion.choices[0].text,
        case["generated_text"].as_str().unwrap()
    );
}

/// The GGUF has no chat template: a chat request is a clear error naming the model, unless
/// the operator supplies a template.
#[test]
fn chat_needs_a_template_the_base_model_lacks() {
    let messages = [ChatMessage::new("user", "Hello")];
    let err = model().render_chat(&messages).unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)), "{err:?}");
    assert!(err.to_string().contains("gemma-3-270m"), "{err}");
    assert!(!model().has_chat_template());

    let template = "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m.role }}\n\
                    {{ m.content }}<end_of_turn>\n{% endfor %}{{ '<start_of_turn>model\n' }}";
    let chat = ChatModel::load_with_template(
        common::builtin("gemma-3-270m"),
        "gemma-3-270m",
        Some(template),
    )
    .unwrap();
    assert_eq!(
        chat.render_chat(&messages).unwrap(),
        "<bos><start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n"
    );
}
