//! Every architecture against llama.cpp on tiny random-weight models.
//!
//! `tests/fidelity/llama_cpp_reference.py` writes one small model per architecture (F32, a
//! copy requantised to `Q8_0` by llama.cpp's own quantizer, for `llama` and `qwen3moe` one
//! to `Q4_K_M`, for `llama` ones to `Q5_K_M`, `Q5_1` and `Q5_0`, and
//! the F32 weights as a Hugging Face folder in F32, F16 or BF16), with prompts longer than the
//! sliding windows, and records llama.cpp's greedy continuations (llama-cpp-python with its
//! plain CPU kernels). HelixFlow must give the same tokens, one sequence at a time, with the
//! prompts packed into the same steps and through the engine (batch invariance), and from the
//! folder (as it is, and quantised to `Q8_0` at load). HelixFlow takes the vector width
//! llama.cpp was built for (`GgmlBuild`), which its F32 products and softmax sums follow.
//!
//! The Python side needs llama-cpp-python and gguf: `HELIXFLOW_LLAMA_CPP_PYTHON` names its
//! interpreter (`benches/llama_cpp_venv.sh` installs one and prints it); without it the tests
//! say they were skipped, unless `HELIXFLOW_REQUIRE_LLAMA_CPP=1` (CI) makes that a failure.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use helixflow_core::chat_model::{ChatModel, LoadOptions};
use helixflow_core::engine::{Engine, EngineConfig, EngineEvent};
use helixflow_core::generation::GenerationParams;
use helixflow_core::gguf::GgufFile;
use helixflow_core::models::{self, CausalLm, GgmlBuild, LoadQuantization, SeqStep};

/// The reference cases, made once per test run, and the vector width llama.cpp was built
/// for; `None` when llama.cpp is not installed.
fn cases() -> Option<&'static (Vec<serde_json::Value>, GgmlBuild)> {
    static CASES: OnceLock<Option<(Vec<serde_json::Value>, GgmlBuild)>> = OnceLock::new();
    CASES
        .get_or_init(|| {
            let python = python()?;
            let dir = std::env::temp_dir().join(format!("helixflow-arch-{}", std::process::id()));
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fidelity/llama_cpp_reference.py");
            let output = Command::new(&python)
                .arg(&script)
                .arg(&dir)
                .output()
                .expect("run the llama.cpp reference script");
            assert!(
                output.status.success(),
                "{} failed: {}",
                script.display(),
                String::from_utf8_lossy(&output.stderr)
            );
            let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            let build = json["ggml_build"].as_str().unwrap().parse().unwrap();
            Some((json["cases"].as_array().unwrap().clone(), build))
        })
        .as_ref()
}

/// The interpreter with llama-cpp-python, if there is one.
fn python() -> Option<PathBuf> {
    let named = std::env::var_os("HELIXFLOW_LLAMA_CPP_PYTHON").map(PathBuf::from);
    let cached = dirs_home().map(|h| h.join(".cache/helixflow-bench/venv-native/bin/python"));
    let found = named.or(cached).filter(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var("HELIXFLOW_REQUIRE_LLAMA_CPP").as_deref() != Ok("1"),
            "llama-cpp-python is required (HELIXFLOW_LLAMA_CPP_PYTHON)"
        );
        eprintln!("skipped: no llama-cpp-python (set HELIXFLOW_LLAMA_CPP_PYTHON)");
    }
    found
}

fn dirs_home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

fn ids(value: &serde_json::Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

fn argmax(row: &[f32]) -> u32 {
    (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b }) as u32
}

/// Greedy continuations of `prompts`, all stepped together (each its own sequence).
fn greedy_together(model: &dyn CausalLm, prompts: &[Vec<u32>], steps: usize) -> Vec<Vec<u32>> {
    let mut kvs: Vec<_> = prompts.iter().map(|_| model.new_kv_state()).collect();
    let mut inputs: Vec<Vec<u32>> = prompts.to_vec();
    let mut outputs = vec![Vec::new(); prompts.len()];
    for _ in 0..steps {
        let mut batch: Vec<SeqStep<'_>> = kvs
            .iter_mut()
            .zip(&inputs)
            .zip(prompts)
            .map(|((kv, tokens), prompt)| SeqStep {
                tokens,
                kv,
                prompt_len: prompt.len(),
            })
            .collect();
        let logits = model.forward(&mut batch).unwrap();
        for ((row, out), input) in logits.iter().zip(&mut outputs).zip(&mut inputs) {
            let next = argmax(row);
            out.push(next);
            *input = vec![next];
        }
    }
    outputs
}

/// The engine's greedy tokens for `prompts`, all in flight together, with a token budget small
/// enough that prefills are chunked and share steps with the other sequence's decoding.
fn engine_greedy(chat: ChatModel, prompts: &[Vec<u32>], steps: usize) -> Vec<Vec<u32>> {
    let engine = Engine::start(
        Arc::new(chat),
        EngineConfig {
            max_batched_tokens: 16,
            ..EngineConfig::default()
        },
    )
    .unwrap();
    let params = GenerationParams {
        ignore_eos: true,
        ..GenerationParams::greedy(steps)
    };
    let streams: Vec<_> = prompts
        .iter()
        .map(|p| engine.submit(p.clone(), params.clone()).unwrap())
        .collect();
    streams
        .into_iter()
        .map(|stream| {
            let mut tokens = Vec::new();
            loop {
                match stream.recv_timeout(Duration::from_secs(120)) {
                    Ok(EngineEvent::Token { choice: 0, output }) => tokens.push(output.token),
                    Ok(EngineEvent::Done { .. }) => return tokens,
                    Ok(EngineEvent::Failed(e)) => panic!("request failed: {e}"),
                    Ok(_) => {}
                    Err(_) => panic!("no event within two minutes"),
                }
            }
        })
        .collect()
}

fn check(architecture: &str) {
    let Some((cases, build)) = cases() else {
        return;
    };
    let mine: Vec<_> = cases
        .iter()
        .filter(|c| c["architecture"] == architecture)
        .collect();
    assert!(mine.len() >= 2, "an F32 and a Q8_0 model of {architecture}");
    for case in mine {
        let file = case["file"].as_str().unwrap();
        let gguf = GgufFile::open(file).unwrap();
        let mut model = models::load_gguf(&gguf).unwrap();
        model.set_ggml_build(*build);
        assert_eq!(model.shape().architecture, architecture);
        let prompts: Vec<Vec<u32>> = case["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .map(ids)
            .collect();
        let expected: Vec<Vec<u32>> = case["tokens"].as_array().unwrap().iter().map(ids).collect();
        let steps = expected[0].len();
        for (prompt, want) in prompts.iter().zip(&expected) {
            let alone = greedy_together(model.as_ref(), std::slice::from_ref(prompt), steps);
            assert_eq!(&alone[0], want, "{file}: greedy tokens against llama.cpp's");
        }
        // Quantised weights run on HelixFlow's kernels, which reproduce ggml's arithmetic:
        // the logits after the first prompt are llama.cpp's to the bit (F32 matrices go
        // through candle's products, which add up in another order).
        if !file.ends_with("f32.gguf") {
            let want: Vec<u32> = case["first_logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| (v.as_f64().unwrap() as f32).to_bits())
                .collect();
            let mut kv = model.new_kv_state();
            let mut batch = [SeqStep {
                tokens: &prompts[0],
                kv: &mut kv,
                prompt_len: prompts[0].len(),
            }];
            let logits = model.forward(&mut batch).unwrap();
            let got: Vec<u32> = logits[0].iter().map(|v| v.to_bits()).collect();
            assert!(
                got == want,
                "{file}: the logits after the prompt are not llama.cpp's bits"
            );
        }
        let together = greedy_together(model.as_ref(), &prompts, steps);
        assert_eq!(together, expected, "{file}: the prompts stepped together");
        // Through the engine: chunked prefills beside another sequence's decoding (sliding
        // windows and experts included) change nothing.
        let mut chat = ChatModel::load_named(file, architecture).unwrap();
        chat.model_mut().set_ggml_build(*build);
        assert_eq!(
            engine_greedy(chat, &prompts, steps),
            expected,
            "{file}: through the engine"
        );

        // The same weights as a Hugging Face folder: as they are, and quantised at load as
        // llama.cpp's quantizer did the Q8_0 file.
        if !file.ends_with("f32.gguf") && !file.ends_with("q8_0.gguf") {
            continue;
        }
        let folder = case["hf_folder"].as_str().unwrap();
        let quantize = file
            .ends_with("q8_0.gguf")
            .then_some(LoadQuantization::Q8_0);
        let options = LoadOptions {
            quantize,
            ..LoadOptions::default()
        };
        let mut chat = ChatModel::load_with(folder, architecture, &options).unwrap();
        chat.model_mut().set_ggml_build(*build);
        assert_eq!(chat.model().shape().architecture, architecture);
        let together = greedy_together(chat.model(), &prompts, steps);
        assert_eq!(together, expected, "{folder} ({quantize:?}) against {file}");
        // Its tokenizer.json reads the pieces' text back as the same ids.
        let text: Vec<String> = prompts[0]
            .iter()
            .map(|&id| chat.tokenizer().decode(&[id], false).unwrap())
            .collect();
        assert_eq!(
            chat.tokenizer().encode(&text.join(" "), false).unwrap(),
            prompts[0]
        );
        // generation_config.json's end-of-sequence ids end a turn.
        assert!(chat.tokenizer().end_of_turn_ids().contains(&2), "{folder}");
    }
}

#[test]
fn llama_matches_llama_cpp() {
    check("llama");
}

#[test]
fn qwen2_matches_llama_cpp() {
    check("qwen2");
}

#[test]
fn qwen3_matches_llama_cpp() {
    check("qwen3");
}

#[test]
fn qwen3moe_matches_llama_cpp() {
    check("qwen3moe");
}

#[test]
fn gemma2_matches_llama_cpp() {
    check("gemma2");
}

#[test]
fn gemma3_matches_llama_cpp() {
    check("gemma3");
}

#[test]
fn phi3_matches_llama_cpp() {
    check("phi3");
}

#[test]
fn smollm3_matches_llama_cpp() {
    check("smollm3");
}

/// Structured outputs and tool calls hold on every architecture's tiny model (Q8_0, with
/// random weights, so every token the grammar allows is likely): a JSON schema for fifty
/// seeds at temperature 1, and `required` calls whose arguments validate, through the
/// engine's batches.
#[test]
fn structured_outputs_and_required_tool_calls_hold_on_every_architecture() {
    use helixflow_core::chat_template::ChatMessage;
    use helixflow_core::completion::FinishReason;
    use helixflow_core::request::{GenerationOptions, GenerationRequest};
    use helixflow_core::streaming::{Answer, AnswerPart};
    use serde_json::json;

    let Some((cases, _)) = cases() else { return };
    // Short, for the tiny models' 256-token context: a Hermes-format model (`<tool_call>`
    // blocks) whose template does not list the tools.
    const TEMPLATE: &str = "{# writes <tool_call> blocks #}{% for message in messages %}\
        {{ message.role }}: {{ message.content }}\n{% endfor %}assistant: ";
    let schema = json!({"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}},
        "required": ["name", "age", "tags"], "additionalProperties": false});
    let tools = json!([{"type": "function", "function": {"name": "lookup",
        "parameters": schema}}]);
    let validator = jsonschema::validator_for(&schema).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut checked = std::collections::BTreeSet::new();
    for case in cases
        .iter()
        .filter(|c| c["file"].as_str().unwrap().ends_with("q8_0.gguf"))
    {
        let (file, architecture) = (
            case["file"].as_str().unwrap(),
            case["architecture"].as_str().unwrap(),
        );
        checked.insert(architecture);
        let chat =
            Arc::new(ChatModel::load_with_template(file, architecture, Some(TEMPLATE)).unwrap());
        let engine = Engine::start(chat.clone(), EngineConfig::default()).unwrap();
        let messages = [ChatMessage::new("user", "Describe someone.")];
        let answers = |options: serde_json::Value, seeds: u64| {
            let requests: Vec<GenerationRequest> = (0..seeds)
                .map(|seed| {
                    let mut options = options.clone();
                    options["seed"] = json!(seed);
                    let options: GenerationOptions = serde_json::from_value(options).unwrap();
                    GenerationRequest::chat(&chat, &messages, &options, false, None).unwrap()
                })
                .collect();
            runtime.block_on(futures_util::future::join_all(requests.iter().map(
                |r| async {
                    let builder = r.answer_builder("m", false, false);
                    match common::run_request(&engine, r, builder).await.as_slice() {
                        [AnswerPart::Whole(Answer::Chat(answer))] => answer.choices[0].clone(),
                        other => panic!("one whole answer: {other:?}"),
                    }
                },
            )))
        };
        let format = json!({"type": "json_schema", "json_schema": {"name": "p", "schema": schema}});
        for choice in answers(
            json!({"temperature": 1.0, "max_tokens": 150, "response_format": format}),
            50,
        ) {
            assert_eq!(
                choice.finish_reason,
                FinishReason::Stop,
                "{file}: {choice:?}"
            );
            let value: serde_json::Value = serde_json::from_str(&choice.message.content).unwrap();
            assert!(validator.is_valid(&value), "{file}: {value}");
        }
        let options = json!({"temperature": 1.0, "max_tokens": 150, "tools": tools,
            "tool_choice": "required", "parallel_tool_calls": false});
        for choice in answers(options, 10) {
            assert_eq!(
                choice.finish_reason,
                FinishReason::ToolCalls,
                "{file}: {choice:?}"
            );
            for call in choice.message.tool_calls.unwrap() {
                assert_eq!(call.function.name, "lookup");
                let value: serde_json::Value =
                    serde_json::from_str(&call.function.arguments).unwrap();
                assert!(validator.is_valid(&value), "{file}: {value}");
            }
        }
    }
    assert_eq!(checked.len(), 8, "every architecture: {checked:?}");
}

/// A folder whose tensors or config do not fit its family is a clear error naming the
/// problem; so is quantising a GGUF at load.
#[test]
fn a_folder_that_disagrees_with_its_config_is_refused() {
    let Some((cases, _)) = cases() else { return };
    let source = PathBuf::from(cases[0]["hf_folder"].as_str().unwrap());
    let dir = std::env::temp_dir().join(format!("helixflow-bad-hf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let config_path = dir.join("config.json");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    let load = |config: &serde_json::Value| {
        std::fs::write(&config_path, config.to_string()).unwrap();
        ChatModel::load_with(&dir, "bad", &LoadOptions::default())
            .unwrap_err()
            .to_string()
    };
    let mut wider = config.clone();
    wider["hidden_size"] = serde_json::json!(96);
    let err = load(&wider);
    assert!(err.contains("token_embd.weight"), "{err}");
    let mut unknown = config.clone();
    unknown["model_type"] = serde_json::json!("mamba");
    let err = load(&unknown);
    assert!(err.contains("mamba") && err.contains("supported"), "{err}");
    let err = ChatModel::load_with(
        cases[0]["file"].as_str().unwrap(),
        "gguf",
        &LoadOptions {
            quantize: Some(LoadQuantization::Q4_0),
            ..LoadOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("safetensors"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

/// A file of an architecture HelixFlow does not know is a clear error naming it.
#[test]
fn an_unknown_architecture_is_refused_by_name() {
    let Some((cases, _)) = cases() else { return };
    let file = cases[0]["file"].as_str().unwrap();
    let mut bytes = std::fs::read(file).unwrap();
    let arch = cases[0]["architecture"].as_str().unwrap();
    // The architecture string in the header, replaced by one of the same length.
    let at = bytes
        .windows(arch.len() + 8)
        .position(|w| w[8..] == *arch.as_bytes() && w[..8] == (arch.len() as u64).to_le_bytes())
        .unwrap();
    let fake = "x".repeat(arch.len());
    bytes[at + 8..at + 8 + arch.len()].copy_from_slice(fake.as_bytes());
    let path = std::env::temp_dir().join(format!("helixflow-unknown-{}.gguf", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    let gguf = GgufFile::open(&path).unwrap();
    let err = models::load_gguf(&gguf).unwrap_err().to_string();
    assert!(err.contains(&fake) && err.contains("supported"), "{err}");
    std::fs::remove_file(path).ok();
}
