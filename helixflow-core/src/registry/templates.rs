//! Chat templates the operator gives in place of models' own.

use crate::{Error, Result};

/// A chat template the operator gives in place of a model's own (`--chat-template`), as
/// for a base model that has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTemplateOverride {
    /// The model it is for (the id it is served under); `None`: every chat model.
    pub model: Option<String>,
    /// The template's Jinja source.
    pub source: String,
}

impl ChatTemplateOverride {
    /// Reads `[MODEL=]FILE`: the template in FILE, for MODEL or for every chat model.
    pub fn from_arg(arg: &str) -> Result<Self> {
        let (model, file) = match arg.split_once('=') {
            Some((model, file)) if !model.is_empty() && !model.contains(['/', '\\']) => {
                (Some(model.to_string()), file)
            }
            _ => (None, arg),
        };
        let source = Self::read(std::path::Path::new(file))?;
        Ok(Self { model, source })
    }

    /// The Jinja source in `file`.
    pub fn read(file: &std::path::Path) -> Result<String> {
        std::fs::read_to_string(file).map_err(|e| {
            Error::InvalidRequest(format!(
                "cannot read the chat template {}: {e}",
                file.display()
            ))
        })
    }

    /// The template for the model served as `id`, if any of `overrides` is for it (one
    /// naming it wins over one for every model).
    pub fn find<'a>(overrides: &'a [Self], id: &str) -> Option<&'a str> {
        overrides
            .iter()
            .find(|o| o.model.as_deref() == Some(id))
            .or_else(|| overrides.iter().find(|o| o.model.is_none()))
            .map(|o| o.source.as_str())
    }
}
