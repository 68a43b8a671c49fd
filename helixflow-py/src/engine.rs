//! `helixflow._native.NativeEngine`: one model, loaded as the CLI loads it, with its engine.
//! The Python package (`helixflow.Engine`) checks argument types and shapes the JSON this
//! returns into OpenAI-like objects; everything else happens here and in the core.

use std::sync::{Arc, PoisonError, RwLock};

use helixflow_core::chat_template::messages_from_openai;
use helixflow_core::embeddings::{EmbeddingInput, EmbeddingModel, Embeddings};
use helixflow_core::engine::{EngineConfig, EngineHandle, KvBudget};
use helixflow_core::models::LoadQuantization;
use helixflow_core::registry::{ModelRegistry, RegistryConfig, ServedModel};
use helixflow_core::request::{GenerationOptions, GenerationRequest, TextPrompt};
use helixflow_core::source::StderrProgress;
use helixflow_core::Error;
use pyo3::prelude::*;
use pyo3::types::PyByteArray;

use crate::errors::{catch, exception, guarded, to_py};
use crate::generation::NativeGeneration;

/// A text completion's prompt: text, or token ids.
#[derive(FromPyObject)]
pub(crate) enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

/// A loaded model and, for chat models, its running engine.
#[pyclass(module = "helixflow._native", name = "NativeEngine", frozen)]
pub(crate) struct NativeEngine {
    model_id: String,
    kind: &'static str,
    context_length: Option<usize>,
    dimension: Option<usize>,
    /// `None` once closed.
    served: RwLock<Option<ServedModel>>,
}

fn invalid(message: impl Into<String>) -> PyErr {
    exception("InvalidRequestError", message)
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, json: &str) -> PyResult<T> {
    serde_json::from_str(json).map_err(|e| invalid(format!("{what}: {e}")))
}

impl NativeEngine {
    /// The model, or [`Error::EngineStopped`] once closed.
    fn served(&self) -> Result<ServedModel, Error> {
        self.served
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(Error::EngineStopped)
    }

    fn engine(&self) -> PyResult<EngineHandle> {
        guarded(|| self.served()?.chat().cloned())
    }

    fn embedder(&self) -> PyResult<Arc<EmbeddingModel>> {
        guarded(|| self.served()?.embedding().cloned())
    }

    /// Queues the prepared `request` and returns the generation to read.
    fn submit(
        &self,
        engine: &EngineHandle,
        request: GenerationRequest,
        stream: bool,
        include_usage: bool,
    ) -> PyResult<NativeGeneration> {
        let builder = request.answer_builder(self.model_id.clone(), stream, include_usage);
        let events = guarded(|| engine.submit(request.prompt, request.params))?;
        Ok(NativeGeneration::new(events, builder))
    }
}

#[pymethods]
impl NativeEngine {
    #[new]
    #[pyo3(signature = (model, *, max_num_seqs=None, max_batched_tokens=None, queue_capacity=None,
                        block_size=None, kv_cache_bytes=None, kv_cache_fraction=None,
                        quantize=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model: String,
        max_num_seqs: Option<usize>,
        max_batched_tokens: Option<usize>,
        queue_capacity: Option<usize>,
        block_size: Option<usize>,
        kv_cache_bytes: Option<usize>,
        kv_cache_fraction: Option<f64>,
        quantize: Option<String>,
    ) -> PyResult<Self> {
        let quantize = quantize
            .map(|q| q.parse::<LoadQuantization>())
            .transpose()
            .map_err(|e| invalid(e.to_string()))?;
        let defaults = EngineConfig::default();
        let kv_budget = match (kv_cache_bytes, kv_cache_fraction) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "give kv_cache_bytes or kv_cache_fraction, not both",
                ))
            }
            (Some(bytes), None) => KvBudget::Bytes(bytes),
            (None, Some(fraction)) => KvBudget::FractionOfMemory(fraction),
            (None, None) => defaults.kv_budget,
        };
        let config = EngineConfig {
            max_num_seqs: max_num_seqs.unwrap_or(defaults.max_num_seqs),
            max_batched_tokens: max_batched_tokens.unwrap_or(defaults.max_batched_tokens),
            queue_capacity: queue_capacity.unwrap_or(defaults.queue_capacity),
            block_size: block_size.unwrap_or(defaults.block_size),
            kv_budget,
        };
        guarded(|| config.validate())?;
        // Loading (and a first download) takes a while: other Python threads run meanwhile.
        let registry = py.detach(|| {
            catch(|| {
                let config = RegistryConfig {
                    engine: config,
                    quantize,
                    ..RegistryConfig::default()
                };
                ModelRegistry::start(config, &[model], &StderrProgress)
            })
        })?;
        let served = registry
            .loaded()
            .first()
            .cloned()
            .ok_or_else(|| exception("InternalError", "no model was loaded"))?;
        let (kind, context_length, dimension) = match &served {
            ServedModel::Chat(engine) => ("chat", Some(engine.model().context_length()), None),
            ServedModel::Embedding(model) => ("embedding", None, Some(model.dimension())),
        };
        Ok(Self {
            model_id: served.id().to_string(),
            kind,
            context_length,
            dimension,
            served: RwLock::new(Some(served)),
        })
    }

    /// The model's id.
    #[getter]
    fn model_id(&self) -> &str {
        &self.model_id
    }

    /// `chat` or `embedding`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.kind
    }

    /// A chat model's context length in tokens.
    #[getter]
    fn context_length(&self) -> Option<usize> {
        self.context_length
    }

    /// An embedding model's vector length.
    #[getter]
    fn dimension(&self) -> Option<usize> {
        self.dimension
    }

    /// Queues a chat completion of `messages_json` (OpenAI messages) with `options_json`
    /// (OpenAI generation options); `stream` asks for chunks, else for the whole answer.
    #[allow(clippy::too_many_arguments)]
    fn chat(
        &self,
        py: Python<'_>,
        messages_json: &str,
        options_json: &str,
        logprobs: bool,
        top_logprobs: Option<usize>,
        stream: bool,
        include_usage: bool,
    ) -> PyResult<NativeGeneration> {
        let engine = self.engine()?;
        let options: GenerationOptions = parse_json("options", options_json)?;
        let messages: serde_json::Value = parse_json("messages", messages_json)?;
        let messages = guarded(|| messages_from_openai(&messages))?;
        let chat = engine.model().clone();
        let request = py.detach(|| {
            catch(|| GenerationRequest::chat(&chat, &messages, &options, logprobs, top_logprobs))
        })?;
        self.submit(&engine, request, stream, include_usage)
    }

    /// Queues a text completion of `prompt` (text or token ids); `logprobs` is the legacy
    /// API's number of alternatives per token.
    #[allow(clippy::too_many_arguments)]
    fn complete(
        &self,
        py: Python<'_>,
        prompt: Prompt,
        options_json: &str,
        logprobs: Option<usize>,
        echo: bool,
        stream: bool,
        include_usage: bool,
    ) -> PyResult<NativeGeneration> {
        let engine = self.engine()?;
        let options: GenerationOptions = parse_json("options", options_json)?;
        let prompt = match prompt {
            Prompt::Text(text) => TextPrompt::Text(text),
            Prompt::Ids(ids) => TextPrompt::Tokens(ids),
        };
        let chat = engine.model().clone();
        let request = py.detach(|| {
            catch(|| GenerationRequest::text(&chat, prompt, &options, logprobs, echo))
        })?;
        self.submit(&engine, request, stream, include_usage)
    }

    /// One vector per text, within the request limits every front end applies.
    fn embed(&self, py: Python<'_>, texts: Vec<String>, truncate: bool) -> PyResult<Vec<Vec<f32>>> {
        let model = self.embedder()?;
        let embeddings = py.detach(|| catch(|| embed_request(&model, texts, truncate)))?;
        Ok(embeddings.vectors)
    }

    /// The vectors packed row by row as little-endian f32s, with the number of rows and the
    /// dimension: what NumPy reads without a copy per number.
    fn embed_packed<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        truncate: bool,
    ) -> PyResult<(Bound<'py, PyByteArray>, usize, usize)> {
        let model = self.embedder()?;
        let (bytes, rows) = py.detach(|| {
            catch(|| {
                let vectors = embed_request(&model, texts, truncate)?.vectors;
                let bytes: Vec<u8> = vectors
                    .iter()
                    .flatten()
                    .flat_map(|x| x.to_le_bytes())
                    .collect();
                Ok((bytes, vectors.len()))
            })
        })?;
        Ok((PyByteArray::new(py, &bytes), rows, model.dimension()))
    }

    /// The token ids of `text`; `special` recognises special tokens in the text and adds
    /// the model's own.
    fn tokenize(&self, py: Python<'_>, text: &str, special: bool) -> PyResult<Vec<u32>> {
        let served = self.served().map_err(to_py)?;
        let ids = py.detach(|| {
            catch(|| match &served {
                ServedModel::Chat(engine) if special => engine.model().encode_prompt(text),
                ServedModel::Chat(engine) => engine.model().tokenizer().encode(text, false),
                ServedModel::Embedding(model) if special => model.tokenize(text),
                ServedModel::Embedding(model) => model.tokenize_plain(text),
            })
        })?;
        Ok(ids)
    }

    /// The text of token ids.
    fn detokenize(&self, ids: Vec<u32>, skip_special: bool) -> PyResult<String> {
        guarded(|| match self.served()? {
            ServedModel::Chat(engine) => {
                let tokenizer = engine.model().tokenizer();
                if let Some(&id) = ids
                    .iter()
                    .find(|&&id| id as usize >= tokenizer.vocab_size())
                {
                    return Err(Error::InvalidRequest(format!(
                        "token id {id} is outside the vocabulary of {} tokens",
                        tokenizer.vocab_size()
                    )));
                }
                tokenizer.decode(&ids, skip_special)
            }
            ServedModel::Embedding(model) => model.detokenize(&ids, skip_special),
        })
    }

    /// The engine's figures as JSON (`{}` for embedding models, which have no engine loop).
    fn stats(&self) -> PyResult<String> {
        Ok(match self.served().map_err(to_py)? {
            ServedModel::Chat(engine) => serde_json::to_string(&engine.stats())
                .map_err(|e| exception("InternalError", e.to_string()))?,
            ServedModel::Embedding(_) => "{}".into(),
        })
    }

    /// Drops this handle on the model; running requests finish, new calls fail.
    fn close(&self) {
        self.served
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

/// Embeds `texts` as an API request: checked against the request limits, long texts refused
/// unless `truncate`.
fn embed_request(
    model: &EmbeddingModel,
    texts: Vec<String>,
    truncate: bool,
) -> helixflow_core::Result<Embeddings> {
    let sequences = model.prepare_request(EmbeddingInput::Texts(texts), truncate)?;
    model.embed_prepared(&sequences, &|| false)
}
