#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("weights: `{tensor}` has {got} values, expected {expected}")]
    WeightLength { tensor: String, expected: usize, got: usize },
    #[error("weights: {what} = {value} is invalid: {why}")]
    BadShape { what: &'static str, value: usize, why: &'static str },
    #[error("token id {id} at position {position} is outside the vocabulary of {vocab_size}")]
    TokenOutOfRange { id: u32, position: usize, vocab_size: usize },
    #[error("KV cache holds {capacity} tokens; {used} used, {requested} more requested")]
    CacheFull { capacity: usize, used: usize, requested: usize },
    #[error("logits_from {from} is past the {n} tokens of this call")]
    LogitsFrom { from: usize, n: usize },
    #[error("KV cache was made for another model ({cache_layers} layers, {cache_width} wide; model has {model_layers}, {model_width})")]
    CacheMismatch { cache_layers: usize, cache_width: usize, model_layers: usize, model_width: usize },
    #[error("weights: `{tensor}` is a {got:?} matrix, expected {expected:?}")]
    LinearShape { tensor: String, expected: [usize; 2], got: [usize; 2] },
    #[error("weights: packed `{tensor}` is inconsistent: {why}")]
    PackedWeight { tensor: String, why: &'static str },
    #[error("internal: matrix product `{what}` got inconsistent shapes")]
    Kernel { what: &'static str },
}
