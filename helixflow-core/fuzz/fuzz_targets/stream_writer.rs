//! Any stream of generated pieces through the stop-string matcher and the chunk writers:
//! never a crash; the text shown never contains a stop string and is the generated text up
//! to it; every chunk serialises to JSON that reads back to the same text.
#![no_main]

use helixflow_core::completion::FinishReason;
use helixflow_core::generation::TokenOutput;
use helixflow_core::stop::StopMatcher;
use helixflow_core::streaming::{ChatChunker, ChunkHeader, TextChunker};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    stops: Vec<String>,
    pieces: Vec<String>,
}

fuzz_target!(|input: Input| {
    let Ok(mut matcher) = StopMatcher::new(&input.stops) else {
        return;
    };
    let header = ChunkHeader {
        id: "chatcmpl-fuzz".into(),
        created: 0,
        model: "fuzzed".into(),
    };
    let mut chat = ChatChunker::new(header.clone(), 1);
    let mut text = TextChunker::new(header, 1);
    let (mut shown, mut generated) = (String::new(), String::new());
    let mut stopped = false;
    let count = input.pieces.len();
    for (i, piece) in input.pieces.into_iter().enumerate() {
        generated.push_str(&piece);
        let step = matcher.push(&piece);
        let last = step.stopped || i + 1 == count;
        let mut out = step.text;
        if last && !step.stopped {
            out.push_str(&matcher.finish());
        }
        shown.push_str(&out);
        let output = TokenOutput {
            token: i as u32,
            text: out.clone(),
            logprob: None,
            finish: last.then_some(if step.stopped {
                FinishReason::Stop
            } else {
                FinishReason::Length
            }),
        };
        let chat_chunks = chat.token(0, output.clone()).into_iter();
        let text_chunks = text.token(0, output).into_iter();
        let chat_json = chat_chunks.map(|c| serde_json::to_string(&c));
        for json in chat_json.chain(text_chunks.map(|c| serde_json::to_string(&c))) {
            let json = json.expect("chunks serialise");
            let value: serde_json::Value = serde_json::from_str(&json).expect("chunks are JSON");
            assert!(value["choices"].is_array(), "{json}");
        }
        if step.stopped {
            stopped = true;
            break;
        }
    }
    for stop in input.stops.iter().filter(|s| !s.is_empty()) {
        assert!(!shown.contains(stop.as_str()), "{shown:?} shows {stop:?}");
    }
    assert!(generated.starts_with(&shown), "{shown:?} is not a prefix of {generated:?}");
    if !stopped {
        assert_eq!(shown, generated);
    }
});
