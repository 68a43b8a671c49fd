//! Structured outputs: answers held to a JSON schema, a regular expression, a list of choices
//! or a Lark grammar, by masking at each step the tokens that would leave the grammar.
//!
//! The grammar engine is [llguidance](https://github.com/guidance-ai/llguidance) (as in
//! llama.cpp, vLLM, SGLang and mistral.rs). A [`GrammarSpec`] says what the client asked for
//! (OpenAI's `response_format`, vLLM's `structured_outputs`); [`Grammars::compile`] turns it
//! into a [`Grammar`] for one model (a bad schema fails there, naming the request field);
//! each generated sequence then carries its own [`TokenConstraint`].

mod vocabulary;

use std::sync::{Arc, OnceLock};

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Value};

use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// What an answer must match.
#[derive(Debug, Clone, PartialEq)]
pub enum GrammarSpec {
    /// Any JSON value valid against this JSON schema (`{}`: any JSON).
    JsonSchema(Value),
    /// Text matching this regular expression, whole.
    Regex(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
    /// A grammar in llguidance's Lark syntax.
    Lark(String),
}

impl GrammarSpec {
    /// The spec of OpenAI's `response_format` (`None` for `{"type": "text"}`).
    pub fn from_response_format(format: &Value) -> Result<Option<Self>> {
        let bad = |message: &str| Error::invalid_field("response_format", message);
        match format.get("type").and_then(Value::as_str) {
            Some("text") => Ok(None),
            Some("json_object") => Ok(Some(Self::JsonSchema(json!({"type": "object"})))),
            Some("json_schema") => {
                let Some(spec) = format.get("json_schema").filter(|s| s.is_object()) else {
                    return Err(bad(
                        "response_format.json_schema must be an object with the schema",
                    ));
                };
                if !spec.get("name").is_some_and(Value::is_string) {
                    return Err(bad("response_format.json_schema.name is required"));
                }
                match spec.get("schema") {
                    None | Some(Value::Null) => Ok(Some(Self::JsonSchema(json!({})))),
                    Some(schema @ (Value::Object(_) | Value::Bool(_))) => {
                        Ok(Some(Self::JsonSchema(schema.clone())))
                    }
                    Some(_) => Err(bad("response_format.json_schema.schema must be an object")),
                }
            }
            _ => Err(bad(
                "response_format.type must be `text`, `json_object` or `json_schema`",
            )),
        }
    }

    /// The spec of vLLM's `structured_outputs` extension: exactly one of `json` (a schema,
    /// as an object or a string), `regex`, `choice`, `grammar` (Lark) or `json_object: true`.
    pub fn from_structured_outputs(spec: &Value) -> Result<Self> {
        let field = "structured_outputs";
        let bad = |message: String| Error::invalid_field(field, message);
        let Some(fields) = spec.as_object() else {
            return Err(bad(format!("{field} must be an object")));
        };
        let given: Vec<(&String, &Value)> = fields.iter().filter(|(_, v)| !v.is_null()).collect();
        let [(kind, value)] = given.as_slice() else {
            return Err(bad(format!(
                "{field} takes exactly one of `json`, `regex`, `choice`, `grammar`, `json_object`"
            )));
        };
        let text = || {
            value
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| bad(format!("{field}.{kind} must be a string")))
        };
        match kind.as_str() {
            "json" => match value {
                Value::String(schema) => serde_json::from_str(schema)
                    .map(Self::JsonSchema)
                    .map_err(|e| bad(format!("{field}.json is not JSON: {e}"))),
                schema => Ok(Self::JsonSchema((*schema).clone())),
            },
            "json_object" if value == &&Value::Bool(true) => {
                Ok(Self::JsonSchema(json!({"type": "object"})))
            }
            "regex" => text().map(Self::Regex),
            "grammar" => text().map(Self::Lark),
            "choice" => {
                let choices: Option<Vec<String>> = value
                    .as_array()
                    .map(|a| a.iter().map(|c| c.as_str().map(str::to_owned)).collect())
                    .unwrap_or(None);
                match choices {
                    Some(choices) if !choices.is_empty() => Ok(Self::Choice(choices)),
                    _ => Err(bad(format!("{field}.choice must be a list of strings"))),
                }
            }
            other => Err(bad(format!("{field}.{other} is not supported"))),
        }
    }

    fn top_level(&self) -> TopLevelGrammar {
        match self {
            Self::JsonSchema(schema) => TopLevelGrammar::from_json_schema(compact_json(schema)),
            Self::Regex(regex) => TopLevelGrammar::from_regex(regex),
            Self::Choice(choices) => {
                // Lark string literals take JSON's escapes.
                let literals: Vec<String> = choices
                    .iter()
                    .map(|c| Value::String(c.clone()).to_string())
                    .collect();
                TopLevelGrammar::from_lark(format!("start: {}", literals.join(" | ")))
            }
            Self::Lark(grammar) => TopLevelGrammar::from_lark(grammar.clone()),
        }
    }
}

/// `schema` with llguidance's JSON options set, unless the client set them (`x-guidance`):
/// no free whitespace, `, ` between items and `: ` after keys, as Python's `json.dumps`
/// writes. A sampled answer then cannot wander off into blank lines until `max_tokens`,
/// which small models do when any whitespace may follow any token.
fn compact_json(schema: &Value) -> Value {
    let mut schema = match schema {
        Value::Bool(true) => json!({}),
        other => other.clone(),
    };
    if let Some(fields) = schema.as_object_mut() {
        fields.entry("x-guidance").or_insert_with(
            || json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}),
        );
    }
    schema
}

/// One model's grammar compiler: its vocabulary as llguidance needs it, built on first use
/// (a pass over the vocabulary) and shared by every request to the model.
#[derive(Default)]
pub struct Grammars {
    factory: OnceLock<std::result::Result<Arc<ParserFactory>, String>>,
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammars").finish_non_exhaustive()
    }
}

impl Grammars {
    /// Compiles `spec` (from the request field `field`, which errors name) for a model whose
    /// logits cover `vocab_size` tokens of `tokenizer` and whose answers end on its
    /// end-of-turn tokens.
    pub fn compile(
        &self,
        spec: &GrammarSpec,
        field: &str,
        tokenizer: &Tokenizer,
        vocab_size: usize,
    ) -> Result<Grammar> {
        let factory = self
            .factory
            .get_or_init(|| {
                let env = vocabulary::token_env(tokenizer, vocab_size, tokenizer.end_of_turn_ids())
                    .map_err(|e| e.to_string())?;
                let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
                factory.quiet();
                Ok(Arc::new(factory))
            })
            .as_ref()
            .map_err(|e| Error::InvalidRequest(format!("structured outputs: {e}")))?;
        let parser = factory
            .create_parser(spec.top_level())
            .map_err(|e| Error::invalid_field(field, format!("{field}: {e}")))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(Error::invalid_field(field, format!("{field}: {e}")));
        }
        Ok(Grammar {
            spec: spec.clone(),
            matcher,
        })
    }
}

/// A compiled grammar, ready to constrain sequences: each takes a
/// [`Grammar::constraint`] of its own.
#[derive(Clone)]
pub struct Grammar {
    spec: GrammarSpec,
    matcher: Matcher,
}

impl Grammar {
    /// What the grammar holds answers to.
    pub fn spec(&self) -> &GrammarSpec {
        &self.spec
    }

    /// A fresh constraint for one sequence.
    pub fn constraint(&self) -> TokenConstraint {
        TokenConstraint {
            matcher: self.matcher.clone(),
        }
    }
}

impl std::fmt::Debug for Grammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Grammar").field(&self.spec).finish()
    }
}

impl PartialEq for Grammar {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

/// One sequence's progress through its grammar.
#[derive(Clone)]
pub struct TokenConstraint {
    matcher: Matcher,
}

impl TokenConstraint {
    /// The tokens allowed next, as a bit set over the vocabulary (bit `i % 32` of word
    /// `i / 32` for token `i`); the end-of-turn tokens once the grammar is complete.
    pub fn allowed(&mut self) -> Result<Vec<u32>> {
        self.matcher
            .compute_mask_or_eos()
            .map(Vec::from)
            .map_err(|e| Error::InvalidRequest(format!("structured output: {e}")))
    }

    /// Takes the sampled token; `true` when the grammar is complete and can take no more.
    pub fn accept(&mut self, token: u32) -> Result<bool> {
        self.matcher
            .consume_token(token)
            .map_err(|e| Error::InvalidRequest(format!("structured output: {e}")))?;
        Ok(self.matcher.is_stopped())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_formats() {
        assert_eq!(
            GrammarSpec::from_response_format(&json!({"type": "text"})).unwrap(),
            None
        );
        assert_eq!(
            GrammarSpec::from_response_format(&json!({"type": "json_object"})).unwrap(),
            Some(GrammarSpec::JsonSchema(json!({"type": "object"})))
        );
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let format = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}});
        assert_eq!(
            GrammarSpec::from_response_format(&format).unwrap(),
            Some(GrammarSpec::JsonSchema(schema))
        );
        for bad in [
            json!({"type": "yaml"}),
            json!({"type": "json_schema"}),
            json!({"type": "json_schema", "json_schema": {"schema": {}}}),
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": 3}}),
        ] {
            let e = GrammarSpec::from_response_format(&bad).unwrap_err();
            assert_eq!(e.field(), Some("response_format"), "{bad}");
        }
    }

    #[test]
    fn vllm_structured_outputs() {
        let spec = |v: Value| GrammarSpec::from_structured_outputs(&v);
        assert_eq!(
            spec(json!({"regex": "a+"})).unwrap(),
            GrammarSpec::Regex("a+".into())
        );
        assert_eq!(
            spec(json!({"choice": ["yes", "no"]})).unwrap(),
            GrammarSpec::Choice(vec!["yes".into(), "no".into()])
        );
        assert_eq!(
            spec(json!({"json": "{\"type\": \"string\"}"})).unwrap(),
            GrammarSpec::JsonSchema(json!({"type": "string"}))
        );
        for bad in [
            json!({}),
            json!({"regex": "a", "choice": ["a"]}),
            json!({"choice": []}),
            json!({"regex": 3}),
            json!({"xml": "x"}),
        ] {
            assert_eq!(
                spec(bad.clone()).unwrap_err().field(),
                Some("structured_outputs"),
                "{bad}"
            );
        }
    }
}
