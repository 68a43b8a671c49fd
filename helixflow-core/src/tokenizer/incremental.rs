//! Streaming detokenisation: turning generated ids into text one token at a time.
//!
//! Decoding each token on its own is wrong in two ways: a multi-byte character may be split
//! across byte tokens, and SentencePiece decoders drop the leading space of the first token they
//! see. So each step decodes a small window of recent tokens twice (without and with the new
//! ones) and emits the difference, holding text back while it ends in an incomplete character.

use super::Tokenizer;
use crate::error::Result;

/// How many prompt tokens [`IncrementalDecoder::with_context`] keeps as context.
const CONTEXT_TOKENS: usize = 5;

/// Consumed ids are dropped once this many precede the decoding window.
const COMPACT_AFTER: usize = 256;

/// U+FFFD, what a decoder yields for an incomplete UTF-8 sequence.
const REPLACEMENT: char = '\u{FFFD}';

/// Turns a stream of token ids into text deltas (special tokens skipped).
///
/// The decoder holds no reference to its tokenizer (each call takes it), so a sequence can own
/// its decoder next to a shared tokenizer.
///
/// Concatenating every [`push`](Self::push) result and the final [`finish`](Self::finish) gives
/// `tokenizer.decode(ids, true)` for the pushed ids (plus, with context, what those ids add after
/// the context).
#[derive(Debug, Clone, Default)]
pub struct IncrementalDecoder {
    /// Ids seen so far (context and pushed), minus compacted ones.
    ids: Vec<u32>,
    /// Start of the window decoded for context.
    prefix_offset: usize,
    /// Ids before this have been emitted as text.
    read_offset: usize,
}

impl IncrementalDecoder {
    /// A decoder for text generated from scratch.
    pub fn new() -> Self {
        IncrementalDecoder {
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
        }
    }

    /// A decoder for text that continues `prompt_ids`: the last few prompt ids are decoded as
    /// context (not emitted), so that the first generated token gets its leading space right.
    pub fn with_context(prompt_ids: &[u32]) -> Self {
        let start = prompt_ids.len().saturating_sub(CONTEXT_TOKENS);
        let ids = prompt_ids.get(start..).unwrap_or_default().to_vec();
        let read_offset = ids.len();
        IncrementalDecoder {
            ids,
            prefix_offset: 0,
            read_offset,
        }
    }

    /// Adds a generated token and returns the text it completes (often empty: a special token,
    /// or part of a multi-byte character still waiting for its other bytes).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        self.emit(tokenizer, false)
    }

    /// Returns whatever text is still held back (an incomplete character comes out as U+FFFD).
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> Result<String> {
        self.emit(tokenizer, true)
    }

    fn emit(&mut self, tokenizer: &Tokenizer, flush: bool) -> Result<String> {
        if self.read_offset >= self.ids.len() {
            return Ok(String::new());
        }
        let window = self.ids.get(self.prefix_offset..).unwrap_or_default();
        let emitted = self.read_offset - self.prefix_offset;
        let prefix_text = tokenizer.decode(window.get(..emitted).unwrap_or_default(), true)?;
        let full_text = tokenizer.decode(window, true)?;
        if full_text.len() <= prefix_text.len() && !flush {
            // Nothing visible yet (e.g. a skipped special token); keep the window as it is.
            return Ok(String::new());
        }
        if full_text.ends_with(REPLACEMENT) && !flush {
            return Ok(String::new());
        }
        let delta = text_after(&prefix_text, &full_text).to_owned();
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        self.compact();
        Ok(delta)
    }

    /// Drops ids that can no longer be part of a window.
    fn compact(&mut self) {
        if self.prefix_offset >= COMPACT_AFTER {
            self.ids.drain(..self.prefix_offset);
            self.read_offset -= self.prefix_offset;
            self.prefix_offset = 0;
        }
    }
}

/// The part of `full` after `prefix`. Should the decoder have rewritten the prefix (it never
/// does for the pipelines built here), the text after the longest common prefix.
fn text_after<'t>(prefix: &str, full: &'t str) -> &'t str {
    if let Some(rest) = full.strip_prefix(prefix) {
        return rest;
    }
    let common: usize = prefix
        .chars()
        .zip(full.chars())
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| a.len_utf8())
        .sum();
    full.get(common..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_after_strips_the_prefix() {
        assert_eq!(text_after("Hello", "Hello world"), " world");
        assert_eq!(text_after("", "abc"), "abc");
        assert_eq!(text_after("abX", "abcd"), "cd");
        assert_eq!(text_after("日本", "日本語"), "語");
    }
}
