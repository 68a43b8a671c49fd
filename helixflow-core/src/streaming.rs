//! Shaping a request's engine events into OpenAI's objects, the same for every front end:
//! [`AnswerBuilder`] is the one place that does it, for a streamed answer (its chunks, then
//! the usage chunk) or a whole one. Under it, [`ChoiceCollector`] gathers a whole answer and
//! [`ChatChunker`] and [`TextChunker`] make the chunks of a streamed one.
//!
//! A token whose text is held back (part of a UTF-8 character, or a possible stop string)
//! makes no chunk; its logprob goes out with the next chunk that has text, so every logprob
//! arrives exactly once and in order.

use std::collections::VecDeque;

use serde::Serialize;

use crate::completion::{
    system_fingerprint, ChatChunkChoice, ChatCompletion, ChatCompletionChunk, ChatDelta,
    ChoiceLogprobs, FinishReason, FunctionCallDelta, GeneratedChoice, LegacyLogprobs,
    TextChunkChoice, TextCompletion, TextCompletionChunk, TokenLogprob, ToolCallDelta, Usage,
};
use crate::engine::EngineEvent;
use crate::generation::TokenOutput;
use crate::reply::{split_reply, ReplyDelta, ReplySplitter, ReplySyntax};
use crate::Result;

/// What a request's answer looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    /// A `chat.completion` (chunks: `chat.completion.chunk`).
    Chat,
    /// A `text_completion`, as the legacy completions API answers.
    Text,
}

impl AnswerKind {
    /// The prefix of the answer's id.
    pub fn id_prefix(self) -> &'static str {
        match self {
            Self::Chat => "chatcmpl",
            Self::Text => "cmpl",
        }
    }
}

/// One chunk of a streamed answer; serialises as the chunk itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AnswerChunk {
    /// A chat completion's chunk.
    Chat(ChatCompletionChunk),
    /// A text completion's chunk.
    Text(TextCompletionChunk),
}

/// A whole answer; serialises as the completion itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Answer {
    /// A chat completion.
    Chat(ChatCompletion),
    /// A text completion.
    Text(TextCompletion),
}

/// What one engine event makes for the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerPart {
    /// A chunk to send (streamed answers; the last one may be the usage chunk).
    Chunk(AnswerChunk),
    /// The whole answer (answers that are not streamed), after the last event.
    Whole(Answer),
}

enum Shaper {
    Chat(ChatChunker),
    Text(TextChunker),
    Whole(ChoiceCollector),
}

/// Turns one request's engine events into what its caller sees: the chunks of a streamed
/// answer (and the usage chunk, when asked for) or the whole answer, with its usage. Every
/// front end and [`crate::chat_model::ChatModel`] answer through it.
pub struct AnswerBuilder {
    kind: AnswerKind,
    header: ChunkHeader,
    shaper: Shaper,
    include_usage: bool,
    /// What a chat answer's text holds beside content (thinking, tool calls).
    reply: ReplySyntax,
    prompt_tokens: usize,
    usage: Option<Usage>,
    /// Parts made and not yet taken (one token may make several chunks).
    ready: VecDeque<AnswerPart>,
}

impl std::fmt::Debug for AnswerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerBuilder")
            .field("kind", &self.kind)
            .field("id", &self.header.id)
            .field("usage", &self.usage)
            .finish_non_exhaustive()
    }
}

impl AnswerBuilder {
    /// A builder of `n` choices' chunks; `include_usage` adds the usage chunk at the end.
    pub fn streamed(kind: AnswerKind, header: ChunkHeader, n: usize, include_usage: bool) -> Self {
        let shaper = match kind {
            AnswerKind::Chat => Shaper::Chat(ChatChunker::new(header.clone(), n)),
            AnswerKind::Text => Shaper::Text(TextChunker::new(header.clone(), n)),
        };
        Self::new(kind, header, shaper, include_usage)
    }

    /// A builder of the whole answer of `n` choices; `logprobs` says whether they carry
    /// logprobs.
    pub fn whole(kind: AnswerKind, header: ChunkHeader, n: usize, logprobs: bool) -> Self {
        let shaper = Shaper::Whole(ChoiceCollector::new(n, logprobs));
        Self::new(kind, header, shaper, false)
    }

    fn new(kind: AnswerKind, header: ChunkHeader, shaper: Shaper, include_usage: bool) -> Self {
        Self {
            kind,
            header,
            shaper,
            include_usage,
            reply: ReplySyntax::default(),
            prompt_tokens: 0,
            usage: None,
            ready: VecDeque::new(),
        }
    }

    /// Reads a chat answer's text in `syntax`: its thinking becomes `reasoning_content` and
    /// its tool calls `tool_calls` (with `finish_reason: tool_calls`).
    pub fn with_reply(mut self, syntax: ReplySyntax) -> Self {
        self.reply = syntax;
        if let Shaper::Chat(chunker) = &mut self.shaper {
            chunker.set_reply(syntax);
        }
        self
    }

    /// Takes the next event and returns the next part for the caller, if one is ready (see
    /// [`Self::pop_ready`] for the others one event may make). A failed request returns the
    /// engine's error.
    pub fn push(&mut self, event: EngineEvent) -> Result<Option<AnswerPart>> {
        match event {
            EngineEvent::Started { prompt_tokens } => self.prompt_tokens = prompt_tokens,
            EngineEvent::Done { completion_tokens } => {
                let usage = Usage::new(self.prompt_tokens, completion_tokens);
                self.usage = Some(usage);
                if let Some(part) = self.finish(usage) {
                    self.ready.push_back(part);
                }
            }
            EngineEvent::Failed(e) => return Err(e),
            EngineEvent::Token { choice, output } => {
                let chunks: Vec<AnswerChunk> = match &mut self.shaper {
                    Shaper::Chat(c) => c
                        .token(choice, output)
                        .into_iter()
                        .map(AnswerChunk::Chat)
                        .collect(),
                    Shaper::Text(c) => c
                        .token(choice, output)
                        .map(AnswerChunk::Text)
                        .into_iter()
                        .collect(),
                    Shaper::Whole(c) => {
                        c.push(EngineEvent::Token { choice, output })?;
                        Vec::new()
                    }
                };
                self.ready.extend(chunks.into_iter().map(AnswerPart::Chunk));
            }
        }
        Ok(self.ready.pop_front())
    }

    /// The next part made by earlier events and not yet taken.
    pub fn pop_ready(&mut self) -> Option<AnswerPart> {
        self.ready.pop_front()
    }

    fn finish(&mut self, usage: Usage) -> Option<AnswerPart> {
        let ChunkHeader { id, created, model } = self.header.clone();
        match std::mem::replace(
            &mut self.shaper,
            Shaper::Whole(ChoiceCollector::new(0, false)),
        ) {
            Shaper::Whole(collector) => {
                let choices = collector.into_choices();
                Some(AnswerPart::Whole(match self.kind {
                    AnswerKind::Chat => {
                        let mut answer = ChatCompletion::new(id, created, model, choices, usage);
                        if !self.reply.is_plain() {
                            for choice in &mut answer.choices {
                                split_choice(self.reply, choice);
                            }
                        }
                        Answer::Chat(answer)
                    }
                    AnswerKind::Text => {
                        Answer::Text(TextCompletion::new(id, created, model, choices, usage))
                    }
                }))
            }
            Shaper::Chat(c) if self.include_usage => {
                Some(AnswerPart::Chunk(AnswerChunk::Chat(c.usage(usage))))
            }
            Shaper::Text(c) if self.include_usage => {
                Some(AnswerPart::Chunk(AnswerChunk::Text(c.usage(usage))))
            }
            _ => None,
        }
    }

    /// The request's token counts, once it is done.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Whether the request is done: its `Done` event has been taken, and every part.
    pub fn is_done(&self) -> bool {
        self.usage.is_some() && self.ready.is_empty()
    }

    /// The prompt's length, once the `Started` event has been taken.
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }

    /// What every chunk of the answer shares.
    pub fn header(&self) -> &ChunkHeader {
        &self.header
    }
}

/// Splits a whole chat choice's text into content, thinking and tool calls.
fn split_choice(syntax: ReplySyntax, choice: &mut crate::completion::ChatChoice) {
    let (reply, called) = split_reply(syntax, &choice.message.content);
    let message = &mut choice.message;
    message.content = reply.content;
    message.reasoning_content = (!reply.reasoning.is_empty()).then_some(reply.reasoning);
    message.tool_calls = (!reply.calls.is_empty()).then_some(reply.calls);
    choice.finish_reason = choice.finish_reason.after_calls(called);
}

/// Gathers a request's events into its finished choices.
#[derive(Debug)]
pub struct ChoiceCollector {
    choices: Vec<GeneratedChoice>,
    prompt_tokens: usize,
}

impl ChoiceCollector {
    /// A collector for `n` choices; `logprobs` says whether they carry logprobs.
    pub fn new(n: usize, logprobs: bool) -> Self {
        Self {
            choices: (0..n).map(|_| GeneratedChoice::new(logprobs)).collect(),
            prompt_tokens: 0,
        }
    }

    /// Takes one event: the usage once the request is done, the engine's error if it failed,
    /// `None` while it runs.
    pub fn push(&mut self, event: EngineEvent) -> Result<Option<Usage>> {
        match event {
            EngineEvent::Started { prompt_tokens } => self.prompt_tokens = prompt_tokens,
            EngineEvent::Token { choice, output } => {
                if let Some(c) = self.choices.get_mut(choice) {
                    c.push(&output);
                }
            }
            EngineEvent::Done { completion_tokens } => {
                return Ok(Some(Usage::new(self.prompt_tokens, completion_tokens)));
            }
            EngineEvent::Failed(e) => return Err(e),
        }
        Ok(None)
    }

    /// The prompt's length, once the `Started` event has been seen.
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }

    /// The choices, in index order.
    pub fn into_choices(self) -> Vec<GeneratedChoice> {
        self.choices
    }
}

/// What every chunk of one streamed completion shares.
#[derive(Debug, Clone)]
pub struct ChunkHeader {
    /// The completion's id.
    pub id: String,
    /// Unix time of creation, in seconds.
    pub created: u64,
    /// The model that answers.
    pub model: String,
}

/// Makes the `chat.completion.chunk`s of a streamed chat completion: the role in each
/// choice's first chunk, then text deltas (content, and thinking apart), and each tool call
/// as two chunks: its id, type and name, then its arguments.
#[derive(Debug)]
pub struct ChatChunker {
    header: ChunkHeader,
    started: Vec<bool>,
    /// Each choice's logprobs of tokens whose text is still held back.
    pending: Vec<Vec<TokenLogprob>>,
    /// Each choice's splitter, when answers hold more than content.
    replies: Vec<ReplySplitter>,
    /// Each choice's calls so far.
    calls: Vec<usize>,
}

impl ChatChunker {
    /// A chunker for `n` choices.
    pub fn new(header: ChunkHeader, n: usize) -> Self {
        Self {
            header,
            started: vec![false; n],
            pending: vec![Vec::new(); n],
            replies: Vec::new(),
            calls: vec![0; n],
        }
    }

    /// Reads the choices' text in `syntax` (see [`AnswerBuilder::with_reply`]).
    pub fn set_reply(&mut self, syntax: ReplySyntax) {
        self.replies = if syntax.is_plain() {
            Vec::new()
        } else {
            vec![ReplySplitter::new(syntax); self.started.len()]
        };
    }

    /// The chunks of choice `choice`'s token `output` (often one, none while text is held
    /// back, more when it completes tool calls).
    pub fn token(&mut self, choice: usize, output: TokenOutput) -> Vec<ChatCompletionChunk> {
        let Some(pending) = self.pending.get_mut(choice) else {
            return Vec::new();
        };
        pending.extend(output.logprob);
        let first = !std::mem::replace(&mut self.started[choice], true);
        let (reply, called) = match self.replies.get_mut(choice) {
            Some(splitter) => {
                let mut reply = splitter.push(&output.text);
                if output.finish.is_some() {
                    reply.append(splitter.finish());
                }
                (reply, splitter.has_called())
            }
            None => (
                ReplyDelta {
                    content: output.text,
                    ..ReplyDelta::default()
                },
                false,
            ),
        };
        let finish = output.finish.map(|reason| reason.after_calls(called));
        if reply.is_empty() && finish.is_none() && !first {
            return Vec::new();
        }
        let tokens = std::mem::take(pending);
        let logprobs = (!tokens.is_empty()).then_some(ChoiceLogprobs { content: tokens });
        let mut chunks = Vec::new();
        let has_text = !reply.content.is_empty() || !reply.reasoning.is_empty();
        if first || has_text || logprobs.is_some() || reply.calls.is_empty() {
            let delta = ChatDelta {
                role: first.then(|| "assistant".to_string()),
                content: (!reply.content.is_empty() || (first && reply.reasoning.is_empty()))
                    .then_some(reply.content),
                reasoning_content: (!reply.reasoning.is_empty()).then_some(reply.reasoning),
                tool_calls: None,
            };
            let last = reply.calls.is_empty();
            chunks.push(self.choice_chunk(choice, delta, logprobs, finish.filter(|_| last)));
        }
        let calls = reply.calls.len();
        for (i, call) in reply.calls.into_iter().enumerate() {
            let index = self.calls[choice];
            self.calls[choice] += 1;
            let opening = ToolCallDelta {
                index,
                id: Some(call.id),
                kind: Some(call.kind),
                function: FunctionCallDelta {
                    name: Some(call.function.name),
                    arguments: String::new(),
                },
            };
            let arguments = ToolCallDelta {
                index,
                function: FunctionCallDelta {
                    name: None,
                    arguments: call.function.arguments,
                },
                ..ToolCallDelta::default()
            };
            for (part, piece) in [opening, arguments].into_iter().enumerate() {
                let delta = ChatDelta {
                    tool_calls: Some(vec![piece]),
                    ..ChatDelta::default()
                };
                let last = i + 1 == calls && part == 1;
                chunks.push(self.choice_chunk(choice, delta, None, finish.filter(|_| last)));
            }
        }
        chunks
    }

    fn choice_chunk(
        &self,
        index: usize,
        delta: ChatDelta,
        logprobs: Option<ChoiceLogprobs>,
        finish_reason: Option<FinishReason>,
    ) -> ChatCompletionChunk {
        let choice = ChatChunkChoice {
            index,
            delta,
            logprobs,
            finish_reason,
        };
        self.chunk(vec![choice], None)
    }

    /// The last chunk: no choices, the usage counts.
    pub fn usage(&self, usage: Usage) -> ChatCompletionChunk {
        self.chunk(Vec::new(), Some(usage))
    }

    fn chunk(&self, choices: Vec<ChatChunkChoice>, usage: Option<Usage>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.header.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.header.created,
            model: self.header.model.clone(),
            system_fingerprint: system_fingerprint(),
            choices,
            usage,
        }
    }
}

/// Makes the chunks of a streamed text completion: one choice's text delta each, with the
/// legacy logprobs whose `text_offset`s continue across chunks.
#[derive(Debug)]
pub struct TextChunker {
    header: ChunkHeader,
    /// Each choice's text length so far, in characters: the next token's `text_offset`.
    offsets: Vec<usize>,
    /// Each choice's logprobs of tokens whose text is still held back.
    pending: Vec<Vec<TokenLogprob>>,
}

impl TextChunker {
    /// A chunker for `n` choices.
    pub fn new(header: ChunkHeader, n: usize) -> Self {
        Self {
            header,
            offsets: vec![0; n],
            pending: vec![Vec::new(); n],
        }
    }

    /// The chunk of choice `choice`'s token `output`, if it has one to send.
    pub fn token(&mut self, choice: usize, output: TokenOutput) -> Option<TextCompletionChunk> {
        let pending = self.pending.get_mut(choice)?;
        pending.extend(output.logprob);
        if output.text.is_empty() && output.finish.is_none() {
            return None;
        }
        let offset = self.offsets.get_mut(choice)?;
        let tokens = std::mem::take(pending);
        let logprobs = (!tokens.is_empty()).then(|| {
            let legacy = LegacyLogprobs::new(&tokens, *offset);
            *offset += tokens
                .iter()
                .map(|t| t.token.chars().count())
                .sum::<usize>();
            legacy
        });
        let delta = TextChunkChoice {
            index: choice,
            text: output.text,
            logprobs,
            finish_reason: output.finish,
        };
        Some(self.chunk(vec![delta], None))
    }

    /// The last chunk: no choices, the usage counts.
    pub fn usage(&self, usage: Usage) -> TextCompletionChunk {
        self.chunk(Vec::new(), Some(usage))
    }

    fn chunk(&self, choices: Vec<TextChunkChoice>, usage: Option<Usage>) -> TextCompletionChunk {
        TextCompletionChunk {
            id: self.header.id.clone(),
            object: "text_completion".into(),
            created: self.header.created,
            model: self.header.model.clone(),
            system_fingerprint: system_fingerprint(),
            choices,
            usage,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::completion::FinishReason;

    fn header() -> ChunkHeader {
        ChunkHeader {
            id: "x".into(),
            created: 1,
            model: "m".into(),
        }
    }

    fn output(text: &str, logprob: f32, finish: Option<FinishReason>) -> TokenOutput {
        TokenOutput {
            token: 0,
            text: text.into(),
            logprob: Some(TokenLogprob {
                token: format!("t{logprob}"),
                logprob,
                bytes: Vec::new(),
                top_logprobs: Vec::new(),
            }),
            finish,
        }
    }

    #[test]
    fn held_back_logprobs_go_out_with_the_next_text() {
        let mut chat = ChatChunker::new(header(), 1);
        let first = chat.token(0, output("", -1.0, None)).remove(0);
        assert_eq!(first.choices[0].delta.role.as_deref(), Some("assistant"));
        assert!(chat.token(0, output("", -2.0, None)).is_empty());
        let next = chat
            .token(0, output("é", -3.0, Some(FinishReason::Stop)))
            .remove(0);
        let logprobs = next.choices[0].logprobs.as_ref().unwrap();
        assert_eq!(logprobs.content.len(), 2);
        assert_eq!(next.choices[0].finish_reason, Some(FinishReason::Stop));
        assert_eq!(chat.usage(Usage::new(3, 3)).choices.len(), 0);
    }

    #[test]
    fn text_offsets_continue_across_chunks() {
        let mut text = TextChunker::new(header(), 2);
        assert!(text.token(1, output("", -1.0, None)).is_none());
        let a = text.token(1, output("ab", -2.0, None)).unwrap();
        let offsets = &a.choices[0].logprobs.as_ref().unwrap().text_offset;
        assert_eq!(offsets, &[0, 3]); // "t-1" is 3 characters
        let b = text.token(1, output("c", -3.0, None)).unwrap();
        assert_eq!(b.choices[0].logprobs.as_ref().unwrap().text_offset, [6]);
        assert!(text.token(5, output("c", -3.0, None)).is_none());
    }

    #[test]
    fn the_builder_streams_chunks_then_the_usage_or_answers_whole() {
        let events = || {
            vec![
                EngineEvent::Started { prompt_tokens: 3 },
                EngineEvent::Token {
                    choice: 0,
                    output: output("", -1.0, None),
                },
                EngineEvent::Token {
                    choice: 0,
                    output: output("", -2.0, None),
                },
                EngineEvent::Token {
                    choice: 0,
                    output: output("ok", -3.0, Some(FinishReason::Stop)),
                },
                EngineEvent::Done {
                    completion_tokens: 3,
                },
            ]
        };
        let mut streamed = AnswerBuilder::streamed(AnswerKind::Chat, header(), 1, true);
        let mut parts = Vec::new();
        for event in events() {
            parts.extend(streamed.push(event).unwrap());
        }
        // The role, then the text with both held-back logprobs, then the usage.
        assert_eq!(parts.len(), 3);
        let AnswerPart::Chunk(AnswerChunk::Chat(text)) = &parts[1] else {
            panic!("{parts:?}")
        };
        assert_eq!(text.choices[0].logprobs.as_ref().unwrap().content.len(), 2);
        let AnswerPart::Chunk(AnswerChunk::Chat(last)) = &parts[2] else {
            panic!("{parts:?}")
        };
        assert_eq!(last.usage, Some(Usage::new(3, 3)));
        assert!(streamed.is_done());

        let mut whole = AnswerBuilder::whole(AnswerKind::Text, header(), 1, true);
        let mut parts = Vec::new();
        for event in events() {
            parts.extend(whole.push(event).unwrap());
        }
        let [AnswerPart::Whole(Answer::Text(answer))] = parts.as_slice() else {
            panic!("{parts:?}")
        };
        assert_eq!(answer.choices[0].text, "ok");
        assert_eq!(answer.usage, Usage::new(3, 3));
        let failed = whole.push(EngineEvent::Failed(crate::Error::EngineStopped));
        assert!(failed.is_err());
    }

    #[test]
    fn the_collector_gathers_choices_and_counts() {
        let mut collector = ChoiceCollector::new(2, false);
        let events = [
            EngineEvent::Started { prompt_tokens: 4 },
            EngineEvent::Token {
                choice: 1,
                output: output("hi", -1.0, Some(FinishReason::Length)),
            },
        ];
        for event in events {
            assert_eq!(collector.push(event).unwrap(), None);
        }
        let done = EngineEvent::Done {
            completion_tokens: 1,
        };
        assert_eq!(collector.push(done).unwrap(), Some(Usage::new(4, 1)));
        let choices = collector.into_choices();
        assert_eq!(choices[1].text, "hi");
        assert_eq!(choices[0].tokens, 0);
        let mut failing = ChoiceCollector::new(1, false);
        assert!(failing
            .push(EngineEvent::Failed(crate::Error::EngineStopped))
            .is_err());
    }
}
