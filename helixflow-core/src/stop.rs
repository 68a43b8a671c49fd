//! Stop strings over streamed text: matched across token boundaries, never emitted.

use crate::error::{Error, Result};

/// The most stop strings one request may give (OpenAI allows 4; we are more generous).
pub const MAX_STOP_STRINGS: usize = 16;

/// The longest stop string accepted, in bytes. Holding back text costs O(length²) per delta,
/// so absurdly long stop strings are refused rather than slowing every step.
pub const MAX_STOP_BYTES: usize = 1024;

/// What one [`StopMatcher::push`] lets through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopStep {
    /// Text that is now known not to belong to a stop string: safe to emit. When `stopped`,
    /// everything up to (not including) the stop string.
    pub text: String,
    /// Whether a stop string has completed; generation should end.
    pub stopped: bool,
    /// Index (into the list given to [`StopMatcher::new`]) of the stop string that matched.
    pub matched: Option<usize>,
}

/// Finds stop strings in text that arrives as arbitrary deltas (one per token, say).
///
/// Text that could still be the start of a stop string is held back until it is known not to
/// be, so no part of a stop string is ever emitted. When several stop strings occur, the one
/// that *completes first* in the text wins (what a token-by-token check would see), and among
/// those completing at the same point the longest (earliest starting): with stops `"ab"` and
/// `"b"` over `"xab"` the output is `"x"` and `"ab"` matched. The result does not depend on how
/// the text is split into deltas.
///
/// Once a stop string has matched, further pushes are ignored: they return empty text with
/// `stopped = true`.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    longest: usize,
    pending: String,
    matched: Option<usize>,
}

impl StopMatcher {
    /// A matcher for `stops` (possibly none: then text passes straight through).
    ///
    /// Fails with [`Error::InvalidRequest`] on an empty stop string, more than
    /// [`MAX_STOP_STRINGS`] of them, or one longer than [`MAX_STOP_BYTES`].
    pub fn new(stops: &[String]) -> Result<Self> {
        if stops.len() > MAX_STOP_STRINGS {
            return Err(Error::InvalidRequest(format!(
                "at most {MAX_STOP_STRINGS} stop strings are allowed, got {}",
                stops.len()
            )));
        }
        for (i, stop) in stops.iter().enumerate() {
            if stop.is_empty() {
                return Err(Error::InvalidRequest(format!("stop string {i} is empty")));
            }
            if stop.len() > MAX_STOP_BYTES {
                return Err(Error::InvalidRequest(format!(
                    "stop string {i} is {} bytes long; the limit is {MAX_STOP_BYTES}",
                    stop.len()
                )));
            }
        }
        Ok(StopMatcher {
            stops: stops.to_vec(),
            longest: stops.iter().map(String::len).max().unwrap_or(0),
            pending: String::new(),
            matched: None,
        })
    }

    /// The stop strings, in the order given.
    pub fn stops(&self) -> &[String] {
        &self.stops
    }

    /// Whether a stop string has matched.
    pub fn is_stopped(&self) -> bool {
        self.matched.is_some()
    }

    /// Index of the stop string that matched, if any.
    pub fn matched(&self) -> Option<usize> {
        self.matched
    }

    /// The stop string that matched, if any.
    pub fn matched_stop(&self) -> Option<&str> {
        self.matched
            .and_then(|i| self.stops.get(i))
            .map(String::as_str)
    }

    /// Text held back because it might begin a stop string.
    pub fn held_back(&self) -> &str {
        &self.pending
    }

    /// Feeds the next piece of text and returns what can be emitted now.
    pub fn push(&mut self, delta: &str) -> StopStep {
        if self.matched.is_some() {
            return StopStep {
                text: String::new(),
                stopped: true,
                matched: self.matched,
            };
        }
        if self.stops.is_empty() {
            return StopStep {
                text: delta.to_string(),
                ..StopStep::default()
            };
        }
        self.pending.push_str(delta);
        if let Some((start, index)) = self.first_completed_match() {
            let mut text = std::mem::take(&mut self.pending);
            text.truncate(start);
            self.matched = Some(index);
            return StopStep {
                text,
                stopped: true,
                matched: Some(index),
            };
        }
        let held = self.pending.split_off(self.hold_back_from());
        StopStep {
            text: std::mem::replace(&mut self.pending, held),
            ..StopStep::default()
        }
    }

    /// Ends the stream: returns the held-back text (it never completed a stop string), or
    /// nothing when a stop string matched. The matcher is empty afterwards.
    pub fn finish(&mut self) -> String {
        let held = std::mem::take(&mut self.pending);
        if self.matched.is_some() {
            String::new()
        } else {
            held
        }
    }

    /// `(start, stop index)` of the match that ends first in `pending` (longest on ties,
    /// lowest index for duplicates). `pending` never holds a complete match from an earlier
    /// step, so a first occurrence per stop string is enough.
    fn first_completed_match(&self) -> Option<(usize, usize)> {
        let mut best: Option<(usize, usize, usize)> = None; // (end, start, index)
        for (index, stop) in self.stops.iter().enumerate() {
            if let Some(start) = self.pending.find(stop.as_str()) {
                let end = start + stop.len();
                if best.is_none_or(|(e, s, _)| (end, start) < (e, s)) {
                    best = Some((end, start, index));
                }
            }
        }
        best.map(|(_, start, index)| (start, index))
    }

    /// Start of the longest suffix of `pending` that is a proper prefix of some stop string
    /// (`pending.len()` when there is none). Only char boundaries are considered, so held-back
    /// text is always whole characters.
    fn hold_back_from(&self) -> usize {
        let len = self.pending.len();
        let earliest = len.saturating_sub(self.longest.saturating_sub(1));
        (earliest..len)
            .filter(|&i| self.pending.is_char_boundary(i))
            .find(|&i| {
                let suffix = self.pending.get(i..).unwrap_or("");
                self.stops
                    .iter()
                    .any(|stop| stop.len() > suffix.len() && stop.starts_with(suffix))
            })
            .unwrap_or(len)
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn matcher(stops: &[&str]) -> StopMatcher {
        StopMatcher::new(&stops.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    /// Pushes every delta; returns the emitted text (finish included) and the match.
    fn run(stops: &[&str], deltas: &[&str]) -> (String, Option<usize>) {
        let mut m = matcher(stops);
        let mut out = String::new();
        for delta in deltas {
            let step = m.push(delta);
            for stop in stops {
                assert!(!step.text.contains(stop), "emitted a stop: {:?}", step.text);
            }
            out.push_str(&step.text);
        }
        out.push_str(&m.finish());
        (out, m.matched())
    }

    /// Independent oracle: scan end positions in order; the first position where some stop
    /// string ends decides (longest such stop).
    fn oracle(stops: &[&str], text: &str) -> (String, Option<usize>) {
        let ends = text
            .char_indices()
            .map(|(i, c)| i + c.len_utf8())
            .collect::<Vec<_>>();
        for end in ends {
            let prefix = &text[..end];
            let hit = stops
                .iter()
                .enumerate()
                .filter(|(_, s)| prefix.ends_with(*s))
                .max_by_key(|(i, s)| (s.len(), std::cmp::Reverse(*i)));
            if let Some((i, s)) = hit {
                return (text[..end - s.len()].to_string(), Some(i));
            }
        }
        (text.to_string(), None)
    }

    #[test]
    fn stop_split_over_two_and_three_deltas() {
        assert_eq!(
            run(&["STOP"], &["hello ST", "OP world"]),
            ("hello ".into(), Some(0))
        );
        assert_eq!(
            run(&["STOP"], &["hello S", "TO", "P world"]),
            ("hello ".into(), Some(0))
        );
        let mut m = matcher(&["STOP"]);
        assert_eq!(m.push("hello S").text, "hello ");
        assert_eq!(m.held_back(), "S");
        let step = m.push("TO");
        assert_eq!((step.text.as_str(), step.stopped), ("", false));
        let step = m.push("P!");
        assert_eq!(step.text, "");
        assert!(step.stopped);
        assert_eq!(m.matched_stop(), Some("STOP"));
        // Later pushes are ignored.
        let after = m.push("more");
        assert!(after.stopped && after.text.is_empty());
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn held_back_text_is_released_when_it_diverges() {
        let mut m = matcher(&["STOP"]);
        assert_eq!(m.push("a ST").text, "a ");
        assert_eq!(m.push("AR").text, "STAR");
        assert_eq!(m.push("S").text, "");
        assert_eq!(m.finish(), "S");
        assert!(!m.is_stopped());
        // A held "S" that restarts the stop string is re-examined, not lost.
        assert_eq!(run(&["STOP"], &["SS", "TOP"]), ("S".into(), Some(0)));
    }

    #[test]
    fn first_completed_of_several_wins() {
        assert_eq!(
            run(&["world", "lo w"], &["hello world"]),
            ("hel".into(), Some(1))
        );
        assert_eq!(run(&["abcd", "bc"], &["abcd"]), ("a".into(), Some(1)));
        assert_eq!(
            run(&["abcd", "bc"], &["a", "b", "c", "d"]),
            ("a".into(), Some(1))
        );
    }

    #[test]
    fn overlapping_and_prefix_stops() {
        assert_eq!(run(&["ab", "b"], &["xab"]), ("x".into(), Some(0)));
        assert_eq!(run(&["ab", "b"], &["x", "a", "b"]), ("x".into(), Some(0)));
        assert_eq!(run(&["b", "ab"], &["xa", "b"]), ("x".into(), Some(1)));
        assert_eq!(run(&["ab", "abc"], &["xabc"]), ("x".into(), Some(0)));
        assert_eq!(run(&["abc", "ab"], &["x", "abc"]), ("x".into(), Some(1)));
        assert_eq!(run(&["ab", "b"], &["xa", "c"]), ("xac".into(), None));
    }

    #[test]
    fn unicode_is_held_back_by_whole_characters() {
        let mut m = matcher(&["🦀🦀", "é!"]);
        assert_eq!(m.push("a🦀").text, "a");
        assert_eq!(m.push("b").text, "🦀b");
        assert_eq!(m.push("caf").text, "caf");
        assert_eq!(m.push("é").text, "");
        assert_eq!(m.push("ê").text, "éê");
        let step = m.push("é!x");
        assert_eq!((step.text.as_str(), step.matched), ("", Some(1)));
        // Same leading byte, different character: not a prefix.
        assert_eq!(run(&["é"], &["ê", "ë"]), ("êë".into(), None));
        assert_eq!(run(&["🦀🦀"], &["x🦀", "🦀y"]), ("x".into(), Some(0)));
    }

    #[test]
    fn no_stops_pass_through() {
        let mut m = matcher(&[]);
        assert_eq!(m.push("abc").text, "abc");
        assert_eq!(m.push("").text, "");
        assert_eq!(m.push("dé").text, "dé");
        assert_eq!(m.finish(), "");
        assert!(!m.is_stopped());
    }

    #[test]
    fn rejects_bad_stop_lists() {
        assert!(matches!(
            StopMatcher::new(&["ok".into(), String::new()]),
            Err(Error::InvalidRequest(_))
        ));
        let many: Vec<String> = (0..=MAX_STOP_STRINGS).map(|i| i.to_string()).collect();
        assert!(matches!(
            StopMatcher::new(&many),
            Err(Error::InvalidRequest(_))
        ));
        assert!(StopMatcher::new(&many[..MAX_STOP_STRINGS]).is_ok());
        assert!(matches!(
            StopMatcher::new(&["x".repeat(MAX_STOP_BYTES + 1)]),
            Err(Error::InvalidRequest(_))
        ));
    }

    #[test]
    fn random_splits_match_the_oracle() {
        let mut rng = StdRng::seed_from_u64(0x5709);
        let alphabet = ["a", "b", "c", "é", "🦀", " ", "x"];
        let stop_sets: [&[&str]; 5] = [
            &["abc"],
            &["ab", "b"],
            &["b🦀", "éé", "x a", "cab"],
            &["aaa", "aab"],
            &["🦀🦀🦀", "c"],
        ];
        for case in 0..400 {
            let stops = stop_sets[case % stop_sets.len()];
            let len = rng.random_range(0..30);
            let text: String = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            let expected = oracle(stops, &text);
            assert_eq!(run(stops, &[text.as_str()]), expected, "unsplit {text:?}");
            for _ in 0..10 {
                let boundaries: Vec<usize> = text
                    .char_indices()
                    .map(|(i, _)| i)
                    .chain([text.len()])
                    .collect();
                let mut cuts: Vec<usize> = boundaries
                    .iter()
                    .copied()
                    .filter(|_| rng.random_bool(0.4))
                    .collect();
                cuts.insert(0, 0);
                cuts.push(text.len());
                cuts.dedup();
                let deltas: Vec<&str> = cuts.windows(2).map(|w| &text[w[0]..w[1]]).collect();
                assert_eq!(
                    run(stops, &deltas),
                    expected,
                    "{text:?} split as {deltas:?}"
                );
            }
        }
    }
}
