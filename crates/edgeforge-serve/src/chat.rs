//! Chat prompts: the model's `tokenizer.chat_template` (Jinja, from the GGUF metadata) rendered with
//! minijinja, and the rendered text tokenized with its special tokens (`<|im_start|>`, …) as single ids, as
//! llama.cpp's server does. A GGUF without a template (edgeforge's exports do not carry one yet) gets
//! ChatML, the format of the SmolLM2 family, and the server says so at startup.

use edgeforge_tokenizer::{Tokenizer, TokenizerError};
use minijinja::{Environment, ErrorKind};
use serde::Serialize;

/// ChatML, used when the GGUF has no `tokenizer.chat_template`.
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Tokens that end an assistant turn in the chat formats we know (besides the model's EOS).
const END_OF_TURN: [&str; 5] = ["<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>"];

#[derive(Debug, Clone, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

pub struct ChatTemplate {
    env: Environment<'static>,
    /// "gguf" (the model's own) or "chatml" (the fallback).
    pub source: &'static str,
    bos: String,
    eos: String,
}

fn raise_exception(msg: String) -> Result<String, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

impl ChatTemplate {
    /// The model's template, else ChatML. A template that does not parse is an error naming it.
    pub fn new(template: Option<String>, tokenizer: &Tokenizer) -> Result<Self, minijinja::Error> {
        let source = if template.is_some() { "gguf" } else { "chatml" };
        let mut env = Environment::new();
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned("chat", template.unwrap_or_else(|| CHATML.to_owned()))?;
        let text = |id: Option<u32>| id.and_then(|i| tokenizer.token_text(i)).unwrap_or_default();
        Ok(Self { env, source, bos: text(tokenizer.bos_id()), eos: text(tokenizer.eos_id()) })
    }

    /// The prompt for `messages`, ending with the assistant's turn opening.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, minijinja::Error> {
        let messages: Vec<minijinja::Value> = messages.iter().map(|m| minijinja::context! { role => m.role.as_str(), content => m.content.as_str() }).collect();
        let ctx = minijinja::context! { messages => messages, add_generation_prompt => true, bos_token => self.bos.as_str(), eos_token => self.eos.as_str() };
        self.env.get_template("chat")?.render(ctx)
    }
}

/// The control and user-defined tokens of the vocabulary (GGUF token types 3 and 4), longest first.
pub fn special_tokens(tokenizer: &Tokenizer) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = match tokenizer.gguf_vocab() {
        Some(v) => v
            .token_types
            .iter()
            .flatten()
            .enumerate()
            .filter(|&(i, &t)| matches!(t, 3 | 4) && !v.tokens[i].is_empty())
            .map(|(i, _)| (v.tokens[i].clone(), i as u32))
            .collect(),
        None => Vec::new(),
    };
    out.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
    out
}

/// The ids that end generation: EOS and any end-of-turn token the vocabulary has.
pub fn stop_ids(tokenizer: &Tokenizer) -> Vec<u32> {
    let mut ids: Vec<u32> = tokenizer.eos_id().into_iter().chain(END_OF_TURN.iter().filter_map(|t| tokenizer.token_id(t))).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// `text` tokenized with each occurrence of a special token's text as that token's id (llama.cpp's
/// `parse_special = true`); the text between them as usual, without BOS/EOS added.
pub fn encode_with_specials(tokenizer: &Tokenizer, specials: &[(String, u32)], text: &str) -> Result<Vec<u32>, TokenizerError> {
    let mut ids = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let next = specials.iter().filter_map(|(s, id)| rest.find(s.as_str()).map(|at| (at, s.len(), *id))).min_by_key(|&(at, len, _)| (at, usize::MAX - len));
        let Some((at, len, id)) = next else {
            ids.extend(tokenizer.encode(rest, false)?);
            break;
        };
        if at > 0 {
            ids.extend(tokenizer.encode(&rest[..at], false)?);
        }
        ids.push(id);
        rest = &rest[at + len..];
    }
    Ok(ids)
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    pub(crate) fn tiny_tokenizer() -> Tokenizer {
        let (tokens, types, merges) = edgeforge_tests::tiny_vocab();
        let v = edgeforge_tokenizer::GgufVocab {
            model: "gpt2".into(),
            pre: Some("smollm".into()),
            tokens,
            token_types: Some(types),
            merges,
            bos_id: Some(0),
            eos_id: Some(0),
            add_bos: Some(false),
            ..Default::default()
        };
        Tokenizer::from_gguf_vocab(&v).unwrap()
    }

    fn user(text: &str) -> Vec<ChatMessage> {
        vec![ChatMessage { role: "user".into(), content: text.into() }]
    }

    #[test]
    fn chatml_is_the_fallback_and_a_gguf_template_is_rendered_with_minijinja() {
        let tok = tiny_tokenizer();
        let t = ChatTemplate::new(None, &tok).unwrap();
        assert_eq!(t.source, "chatml");
        assert_eq!(t.render(&user("hi")).unwrap(), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
        let own = "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}";
        let t = ChatTemplate::new(Some(own.into()), &tok).unwrap();
        assert_eq!(t.source, "gguf");
        assert_eq!(t.render(&user("hi")).unwrap(), "<|endoftext|>[user]hi[assistant]");
        let raising = "{% if messages[0].role != 'system' %}{{ raise_exception('system first') }}{% endif %}";
        let err = ChatTemplate::new(Some(raising.into()), &tok).unwrap().render(&user("hi")).unwrap_err();
        assert!(err.to_string().contains("system first"), "{err}");
        assert!(ChatTemplate::new(Some("{% for %}".into()), &tok).is_err());
    }

    #[test]
    fn special_token_text_becomes_one_id_only_where_asked() {
        let tok = tiny_tokenizer();
        let specials = special_tokens(&tok);
        let im_start = tok.token_id("<|im_start|>").unwrap();
        assert!(specials.iter().any(|(s, id)| s == "<|im_start|>" && *id == im_start), "{specials:?}");
        let ids = encode_with_specials(&tok, &specials, "<|im_start|>the cat<|im_start|>").unwrap();
        let body = tok.encode("the cat", false).unwrap();
        assert_eq!(ids, [vec![im_start], body.clone(), vec![im_start]].concat());
        // The plain encoder reads the same text as characters.
        assert!(!tok.encode("<|im_start|>the cat", false).unwrap().contains(&im_start));
        assert_eq!(stop_ids(&tok), vec![0]);
    }
}
