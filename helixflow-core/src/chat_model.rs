//! A loaded chat model: weights, tokenizer and chat template together, with the calls a user
//! makes — chat, complete, stream.

use std::path::Path;

use crate::chat_template::{ChatMessage, ChatTemplate, TemplateExtras};
use crate::completion::{
    new_id, unix_now, ChatCompletion, ChatCompletionChunk, TextCompletion, TextCompletionChunk,
};
use crate::engine::EngineEvent;
use crate::error::{Error, Result};
use crate::generation::{run_batch, GenerationParams, Sequence, TokenOutput};
use crate::gguf::GgufFile;
use crate::models::{self, CausalLm, LoadQuantization};
use crate::reply::{Reasoning, ReplySyntax};
use crate::sampling::choice_seed;
use crate::streaming::{Answer, AnswerBuilder, AnswerChunk, AnswerKind, AnswerPart, ChunkHeader};
use crate::structured::{Grammar, GrammarSpec, Grammars};
use crate::tokenizer::{GgufVocab, Tokenizer};
use crate::tools::{ChatTools, ToolFormat};

/// A conversation's prompt, and how its answer is to be read.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatPrompt {
    /// The prompt's token ids.
    pub ids: Vec<u32>,
    /// What the answer's text may hold beside content.
    pub reply: ReplySyntax,
}

/// How [`ChatModel::load_with`] loads a model.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions<'a> {
    /// A chat template (Jinja source) in place of the model's own, as for a base model that
    /// has none.
    pub chat_template: Option<&'a str>,
    /// Quantise a safetensors model's matrices at load to this packed format (a GGUF file
    /// keeps the formats it has: asking for one is an error).
    pub quantize: Option<LoadQuantization>,
}

/// A chat (decoder) model ready to generate.
pub struct ChatModel {
    name: String,
    model: Box<dyn CausalLm>,
    tokenizer: Tokenizer,
    /// `None` for a model without one (a base model): chat requests are refused.
    template: Option<ChatTemplate>,
    /// Compiles structured outputs' grammars over this model's vocabulary.
    grammars: Grammars,
}

impl std::fmt::Debug for ChatModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatModel")
            .field("name", &self.name)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl ChatModel {
    /// Loads a GGUF file, naming the model after the file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        Self::load_named(path, name)
    }

    /// Loads a GGUF file under the given model name (what responses report).
    pub fn load_named(path: impl AsRef<Path>, name: impl Into<String>) -> Result<Self> {
        Self::load_with_template(path, name, None)
    }

    /// [`Self::load_named`] with the chat template `chat_template` (Jinja source) in place of
    /// the one in the file, as for a base model that has none.
    pub fn load_with_template(
        path: impl AsRef<Path>,
        name: impl Into<String>,
        chat_template: Option<&str>,
    ) -> Result<Self> {
        let options = LoadOptions {
            chat_template,
            ..LoadOptions::default()
        };
        Self::load_with(path, name, &options)
    }

    /// Loads a GGUF file, or a Hugging Face folder (`config.json`, safetensors weights,
    /// `tokenizer.json`, `tokenizer_config.json` or `chat_template.jinja`,
    /// `generation_config.json`), under the model name `name`.
    pub fn load_with(
        path: impl AsRef<Path>,
        name: impl Into<String>,
        options: &LoadOptions<'_>,
    ) -> Result<Self> {
        let name = name.into();
        let path = path.as_ref();
        let (gguf, tokenizer, own_template) = if models::is_hf_folder(path) {
            let gguf = models::import_hf_folder(path, options.quantize)?;
            let tokenizer = Tokenizer::from_hf_folder(path)?;
            let template = tokenizer.chat_template().map(str::to_owned);
            (gguf, tokenizer, template)
        } else {
            if let Some(format) = options.quantize {
                return Err(Error::InvalidRequest(format!(
                    "{}: quantising at load ({format:?}) applies to safetensors folders; a GGUF \
                     keeps its own formats",
                    path.display()
                )));
            }
            let gguf = GgufFile::open(path)?;
            let tokenizer = Tokenizer::from_gguf_vocab(&vocab_from_gguf(&gguf)?)?;
            let template = gguf
                .get("tokenizer.chat_template")
                .map(|v| {
                    v.as_str().map(str::to_owned).ok_or_else(|| {
                        Error::invalid_file(gguf.path(), "tokenizer.chat_template is not a string")
                    })
                })
                .transpose()?;
            (gguf, tokenizer, template)
        };
        let model = models::load_gguf(&gguf)?;
        if tokenizer.vocab_size() > model.shape().vocab_size {
            return Err(Error::invalid_file(
                gguf.path(),
                "the tokenizer has more tokens than the embedding has rows",
            ));
        }
        let source = options.chat_template.or(own_template.as_deref());
        let template = source
            .map(|source| {
                ChatTemplate::new(source, &name, tokenizer.bos_token(), tokenizer.eos_token())
            })
            .transpose()?;
        Ok(Self {
            name,
            model,
            tokenizer,
            template,
            grammars: Grammars::default(),
        })
    }

    /// Whether the model has a chat template (from its file or from the operator); without
    /// one it answers completions only.
    pub fn has_chat_template(&self) -> bool {
        self.template.is_some()
    }

    /// The name responses report.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// `spec` compiled for this model, to hold its answers to (structured outputs); a
    /// grammar llguidance cannot compile is [`Error::InvalidField`] naming `field`, the
    /// request field it came from.
    pub fn grammar(&self, spec: &GrammarSpec, field: &str) -> Result<Grammar> {
        let vocab = self.model.shape().vocab_size;
        self.grammars.compile(spec, field, &self.tokenizer, vocab)
    }

    /// The network.
    pub fn model(&self) -> &dyn CausalLm {
        self.model.as_ref()
    }

    /// The network, to change how it computes (see [`CausalLm::set_ggml_build`]).
    pub fn model_mut(&mut self) -> &mut dyn CausalLm {
        self.model.as_mut()
    }

    /// The context length in tokens.
    pub fn context_length(&self) -> usize {
        self.model.shape().context_length
    }

    /// Renders `messages` with the model's chat template, ready for the assistant's turn.
    pub fn render_chat(&self, messages: &[ChatMessage]) -> Result<String> {
        self.render_chat_with(messages, &TemplateExtras::default())
    }

    /// [`Self::render_chat`] with tools and template variables in the template's context.
    pub fn render_chat_with(
        &self,
        messages: &[ChatMessage],
        extras: &TemplateExtras,
    ) -> Result<String> {
        if messages.is_empty() {
            return Err(Error::InvalidRequest("messages must not be empty".into()));
        }
        match &self.template {
            Some(template) => template.render_with(messages, true, extras),
            None => Err(Error::InvalidRequest(format!(
                "model `{}` has no chat template (it is a base model for completions): use \
                 /v1/completions, or give the server a template with --chat-template FILE",
                self.name
            ))),
        }
    }

    /// Tokenises a prompt, recognising special tokens, with BOS when the model wants one.
    /// A prompt over [`MAX_PROMPT_BYTES`] is refused before any work.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        check_prompt_size(text.len())?;
        let ids = self.tokenizer.encode(text, true)?;
        release_after_large_input(text.len());
        Ok(self.with_bos(ids))
    }

    fn with_bos(&self, mut ids: Vec<u32>) -> Vec<u32> {
        if let (true, Some(bos)) = (self.tokenizer.add_bos(), self.tokenizer.bos_token_id()) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        ids
    }

    /// The prompt of a conversation: rendered with the model's chat template and tokenised,
    /// the template's own text with its special tokens, and what the messages say as plain
    /// text, always (`<|im_end|>` written in a message is that text, not a turn's end). Roles
    /// must be among [`crate::chat_template::ROLES`]; conversations over
    /// [`MAX_PROMPT_BYTES`] are refused before any work.
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        Ok(self
            .encode_chat_with(messages, None, Default::default())?
            .ids)
    }

    /// [`Self::encode_chat`] of a conversation that may use `tools`, with `kwargs` as more
    /// template variables (`chat_template_kwargs`): also says how the answer is to be read
    /// (the tools' format, whether it thinks first). Tools go to the template as Hugging
    /// Face passes them, or, for a template that knows none, in a system message
    /// ([`ToolFormat::prepare`]).
    pub fn encode_chat_with(
        &self,
        messages: &[ChatMessage],
        tools: Option<&ChatTools>,
        kwargs: serde_json::Map<String, serde_json::Value>,
    ) -> Result<ChatPrompt> {
        let size: usize = messages
            .iter()
            .map(|m| m.role.len() + m.content.len())
            .sum();
        check_prompt_size(size)?;
        for (i, message) in messages.iter().enumerate() {
            crate::chat_template::check_role(i, &message.role)?;
        }
        let format = self.tool_format();
        let uses_tools = tools.is_some()
            || messages
                .iter()
                .any(|m| m.role == "tool" || m.tool_calls.is_some());
        let prepared;
        let messages = if uses_tools && !format.is_native() {
            prepared = format.prepare(messages, tools);
            &prepared[..]
        } else {
            messages
        };
        let extras = TemplateExtras {
            tools: tools
                .filter(|_| format.is_native())
                .map(|t| t.definitions.clone()),
            kwargs,
        };
        let special = messages
            .iter()
            .any(|m| self.tokenizer.find_special_text(&m.content).is_some());
        let (ids, rendered) = if special {
            self.encode_chat_apart(messages, &extras)?
        } else {
            // No message can be mistaken for a control token: the usual, exact path.
            let rendered = self.render_chat_with(messages, &extras)?;
            (self.tokenizer.encode(&rendered, true)?, rendered)
        };
        release_after_large_input(size);
        let thinks = self.template.as_ref().is_some_and(ChatTemplate::thinks);
        let end = rendered.trim_end();
        let reasoning = if !thinks || end.ends_with("</think>") {
            Reasoning::Off
        } else if end.ends_with("<think>") {
            Reasoning::Open
        } else {
            Reasoning::Optional
        };
        Ok(ChatPrompt {
            ids: self.with_bos(ids),
            reply: ReplySyntax {
                tools: tools.map(|_| format),
                reasoning,
            },
        })
    }

    /// The chat template's Jinja source, if the model has one.
    pub fn chat_template_source(&self) -> Option<&str> {
        self.template.as_ref().map(ChatTemplate::source)
    }

    /// How this model's template writes tool calls.
    pub fn tool_format(&self) -> ToolFormat {
        self.template
            .as_ref()
            .map_or(ToolFormat::Generic, ChatTemplate::tool_format)
    }

    /// Renders with each message's content replaced by a marker, then tokenises the
    /// template's text (special tokens parsed) and each content (as text) apart.
    fn encode_chat_apart(
        &self,
        messages: &[ChatMessage],
        extras: &TemplateExtras,
    ) -> Result<(Vec<u32>, String)> {
        // Private-use characters no tokenizer treats specially and no message is likely to
        // hold; a message that does is refused below rather than misread.
        let marker = |i: usize| format!("\u{F8FE}{i}\u{F8FF}");
        let marked: Vec<ChatMessage> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| ChatMessage {
                content: marker(i),
                ..m.clone()
            })
            .collect();
        let rendered = self.render_chat_with(&marked, extras)?;
        let mut ids = Vec::new();
        let mut rest = rendered.as_str();
        let mut next = 0;
        while let Some(at) = rest.find('\u{F8FE}') {
            let (before, from) = rest.split_at(at);
            let end = from.find('\u{F8FF}').map(|e| e + '\u{F8FF}'.len_utf8());
            let index = end.and_then(|end| from[3..end - 3].parse::<usize>().ok());
            if index != Some(next) {
                return Err(self.content_apart_error(messages));
            }
            ids.extend(self.tokenizer.encode(before, true)?);
            ids.extend(self.tokenizer.encode(&messages[next].content, false)?);
            next += 1;
            rest = &from[end.unwrap_or(from.len())..];
        }
        if next != messages.len() {
            return Err(self.content_apart_error(messages));
        }
        ids.extend(self.tokenizer.encode(rest, true)?);
        Ok((ids, rendered))
    }

    fn content_apart_error(&self, messages: &[ChatMessage]) -> Error {
        let (i, token) = messages
            .iter()
            .enumerate()
            .find_map(|(i, m)| {
                self.tokenizer
                    .find_special_text(&m.content)
                    .map(|(_, t)| (i, t.to_string()))
            })
            .unwrap_or_default();
        Error::InvalidRequest(format!(
            "messages[{i}] contains the special token text `{token}`, and the chat template of \
             `{}` transforms message contents, so they cannot be kept apart from its own special \
             tokens; remove it from the message",
            self.name
        ))
    }

    /// Answers a conversation.
    pub fn chat(
        &self,
        messages: &[ChatMessage],
        params: &GenerationParams,
    ) -> Result<ChatCompletion> {
        let prompt = self.encode_chat(messages)?;
        Self::chat_answer(self.answer(AnswerKind::Chat, &prompt, params, None)?)
    }

    /// Answers a conversation, handing each chunk to `on_chunk` as it is generated, and
    /// returns the whole completion at the end. An error from `on_chunk` (the reader went
    /// away) stops generation and is returned.
    pub fn chat_stream(
        &self,
        messages: &[ChatMessage],
        params: &GenerationParams,
        mut on_chunk: impl FnMut(ChatCompletionChunk) -> Result<()>,
    ) -> Result<ChatCompletion> {
        let prompt = self.encode_chat(messages)?;
        let mut on_chunk = |chunk| match chunk {
            AnswerChunk::Chat(chunk) => on_chunk(chunk),
            AnswerChunk::Text(_) => Ok(()),
        };
        Self::chat_answer(self.answer(AnswerKind::Chat, &prompt, params, Some(&mut on_chunk))?)
    }

    fn chat_answer(answer: Answer) -> Result<ChatCompletion> {
        match answer {
            Answer::Chat(answer) => Ok(answer),
            Answer::Text(_) => Err(Error::StepFailed("a chat answered as text".into())),
        }
    }

    /// Continues a raw text prompt (no chat template).
    pub fn complete(&self, prompt: &str, params: &GenerationParams) -> Result<TextCompletion> {
        let ids = self.encode_text(prompt)?;
        Self::text_answer(self.answer(AnswerKind::Text, &ids, params, None)?)
    }

    /// Continues a raw text prompt, handing each chunk of the streamed answer to `on_chunk`
    /// as it is generated, and returns the whole completion at the end.
    pub fn complete_stream(
        &self,
        prompt: &str,
        params: &GenerationParams,
        mut on_chunk: impl FnMut(TextCompletionChunk) -> Result<()>,
    ) -> Result<TextCompletion> {
        let ids = self.encode_text(prompt)?;
        let mut on_chunk = |chunk| match chunk {
            AnswerChunk::Text(chunk) => on_chunk(chunk),
            AnswerChunk::Chat(_) => Ok(()),
        };
        Self::text_answer(self.answer(AnswerKind::Text, &ids, params, Some(&mut on_chunk))?)
    }

    /// A text prompt's ids, which must not be empty.
    fn encode_text(&self, prompt: &str) -> Result<Vec<u32>> {
        let ids = self.encode_prompt(prompt)?;
        if ids.is_empty() {
            return Err(Error::invalid_field("prompt", "the prompt is empty"));
        }
        Ok(ids)
    }

    fn text_answer(answer: Answer) -> Result<TextCompletion> {
        match answer {
            Answer::Text(answer) => Ok(answer),
            Answer::Chat(_) => Err(Error::StepFailed("a completion answered as chat".into())),
        }
    }

    /// Generates `params.n` choices after `prompt` (token ids), all stepped together, as
    /// the engine would: their events go through the one [`AnswerBuilder`], which returns
    /// the whole answer and, when there is an `on_chunk`, hands it each chunk of the
    /// streamed answer (no chunks are made without one).
    fn answer(
        &self,
        kind: AnswerKind,
        prompt: &[u32],
        params: &GenerationParams,
        mut on_chunk: Option<&mut dyn FnMut(AnswerChunk) -> Result<()>>,
    ) -> Result<Answer> {
        params.validate(self.model.shape().vocab_size)?;
        let budget = params.token_budget(prompt.len(), self.context_length())?;
        let header = ChunkHeader {
            id: new_id(kind.id_prefix()),
            created: unix_now(),
            model: self.name.clone(),
        };
        let mut chunks = on_chunk
            .is_some()
            .then(|| AnswerBuilder::streamed(kind, header.clone(), params.n, false));
        let mut whole = AnswerBuilder::whole(kind, header, params.n, params.sampling.logprobs);
        let started = || EngineEvent::Started {
            prompt_tokens: prompt.len(),
        };
        if let Some(chunks) = &mut chunks {
            chunks.push(started())?;
        }
        whole.push(started())?;
        // One base seed for the request, so every choice gets its own reproducible stream.
        let base_seed = params.sampling.seed.unwrap_or_else(rand::random);
        let mut seqs = (0..params.n)
            .map(|i| {
                Sequence::new(
                    self.model.as_ref(),
                    &self.tokenizer,
                    prompt.to_vec(),
                    params,
                    budget,
                    Some(choice_seed(base_seed, i as u64)),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let mut generated = 0;
        run_batch(
            self.model.as_ref(),
            &self.tokenizer,
            &mut seqs,
            |choice, out| {
                generated += 1;
                let token = |output: &TokenOutput| EngineEvent::Token {
                    choice,
                    output: output.clone(),
                };
                whole.push(token(out))?;
                if let (Some(chunks), Some(on_chunk)) = (&mut chunks, &mut on_chunk) {
                    let first = chunks.push(token(out))?;
                    for part in first
                        .into_iter()
                        .chain(std::iter::from_fn(|| chunks.pop_ready()))
                    {
                        if let AnswerPart::Chunk(chunk) = part {
                            on_chunk(chunk)?;
                        }
                    }
                }
                Ok(())
            },
        )?;
        let done = EngineEvent::Done {
            completion_tokens: generated,
        };
        match whole.push(done)? {
            Some(AnswerPart::Whole(answer)) => Ok(answer),
            _ => Err(Error::StepFailed("the answer did not complete".into())),
        }
    }
}

/// The largest prompt, in bytes of text (a conversation's roles and contents), accepted for
/// tokenisation: far more than the longest context holds, and checked before any work.
pub const MAX_PROMPT_BYTES: usize = 2 << 20;

fn check_prompt_size(bytes: usize) -> Result<()> {
    if bytes > MAX_PROMPT_BYTES {
        return Err(Error::InvalidRequest(format!(
            "the prompt is {bytes} bytes; at most {MAX_PROMPT_BYTES} are accepted"
        )));
    }
    Ok(())
}

/// Inputs from this size on leave enough freed memory behind to be worth handing back.
const LARGE_INPUT_BYTES: usize = 256 << 10;

/// Hands freed heap memory back to the operating system after a large input was processed:
/// glibc keeps it in per-thread arenas otherwise, and a burst of large prompts would leave
/// the process hundreds of megabytes larger for good.
pub fn release_after_large_input(bytes: usize) {
    if bytes < LARGE_INPUT_BYTES {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Reads the `tokenizer.ggml.*` metadata of a GGUF file.
pub fn vocab_from_gguf(gguf: &GgufFile) -> Result<GgufVocab> {
    let id = |key: &str| -> Result<Option<u32>> {
        match gguf.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| {
                    Error::invalid_file(gguf.path(), format!("`{key}` is not a token id"))
                }),
        }
    };
    let flag = |key: &str| gguf.get(key).and_then(|v| v.as_bool());
    let tokens = gguf
        .get_string_array("tokenizer.ggml.tokens")?
        .ok_or_else(|| Error::invalid_file(gguf.path(), "no tokenizer.ggml.tokens"))?;
    let token_types = gguf
        .get_f64_array("tokenizer.ggml.token_type")?
        .unwrap_or_default()
        .into_iter()
        .map(|t| t as i32)
        .collect();
    Ok(GgufVocab {
        model: gguf.get_str("tokenizer.ggml.model")?.to_string(),
        pre: gguf
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        tokens,
        token_types,
        merges: gguf
            .get_string_array("tokenizer.ggml.merges")?
            .unwrap_or_default(),
        scores: gguf
            .get_f64_array("tokenizer.ggml.scores")?
            .unwrap_or_default()
            .into_iter()
            .map(|s| s as f32)
            .collect(),
        bos_token_id: id("tokenizer.ggml.bos_token_id")?,
        eos_token_id: id("tokenizer.ggml.eos_token_id")?,
        unknown_token_id: id("tokenizer.ggml.unknown_token_id")?,
        padding_token_id: id("tokenizer.ggml.padding_token_id")?,
        eot_token_id: id("tokenizer.ggml.eot_token_id")?,
        add_bos: flag("tokenizer.ggml.add_bos_token"),
        add_eos: flag("tokenizer.ggml.add_eos_token"),
        add_space_prefix: flag("tokenizer.ggml.add_space_prefix"),
    })
}
