//! The tokens one sequence has seen so far, counted for the repetition penalties.

use std::collections::HashMap;

/// How often one token occurs in the prompt and in the generated text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Occurrences {
    prompt: u32,
    generated: u32,
}

/// Prompt and generated tokens of one sequence, with per-token counts.
///
/// The repetition penalty looks at every distinct token of the prompt and the generated text;
/// the frequency and presence penalties only at the generated text. Both walk the distinct
/// tokens seen (not the vocabulary), so a step costs O(distinct tokens).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenHistory {
    prompt_len: usize,
    generated: Vec<u32>,
    counts: HashMap<u32, Occurrences>,
}

impl TokenHistory {
    /// A history that starts with `prompt`.
    pub fn new(prompt: &[u32]) -> Self {
        let mut counts: HashMap<u32, Occurrences> = HashMap::new();
        for &id in prompt {
            counts.entry(id).or_default().prompt += 1;
        }
        TokenHistory {
            prompt_len: prompt.len(),
            generated: Vec::new(),
            counts,
        }
    }

    /// Records a newly generated token.
    pub fn push_generated(&mut self, id: u32) {
        self.generated.push(id);
        let entry = self.counts.entry(id).or_default();
        entry.generated = entry.generated.saturating_add(1);
    }

    /// Number of prompt tokens.
    pub fn prompt_len(&self) -> usize {
        self.prompt_len
    }

    /// The generated tokens, in order.
    pub fn generated(&self) -> &[u32] {
        &self.generated
    }

    /// How often `id` occurs in the generated text.
    pub fn generated_count(&self, id: u32) -> u32 {
        self.counts.get(&id).map_or(0, |c| c.generated)
    }

    /// Whether `id` occurs in the prompt or the generated text.
    pub fn contains(&self, id: u32) -> bool {
        self.counts.contains_key(&id)
    }

    /// Every distinct token of prompt and generated text (any order).
    pub(crate) fn distinct_tokens(&self) -> impl Iterator<Item = u32> + '_ {
        self.counts.keys().copied()
    }

    /// Every distinct generated token with its count (any order).
    pub(crate) fn generated_counts(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.counts
            .iter()
            .filter(|(_, c)| c.generated > 0)
            .map(|(&id, c)| (id, c.generated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_prompt_and_generated_separately() {
        let mut h = TokenHistory::new(&[5, 5, 7]);
        assert_eq!(h.prompt_len(), 3);
        assert!(h.contains(5) && h.contains(7) && !h.contains(9));
        assert_eq!(h.generated_count(5), 0);
        h.push_generated(5);
        h.push_generated(9);
        h.push_generated(9);
        assert_eq!(h.generated(), &[5, 9, 9]);
        assert_eq!(h.generated_count(5), 1);
        assert_eq!(h.generated_count(9), 2);
        assert_eq!(h.generated_count(7), 0);
        let mut distinct: Vec<u32> = h.distinct_tokens().collect();
        distinct.sort_unstable();
        assert_eq!(distinct, vec![5, 7, 9]);
        let mut generated: Vec<(u32, u32)> = h.generated_counts().collect();
        generated.sort_unstable();
        assert_eq!(generated, vec![(5, 1), (9, 2)]);
    }
}
