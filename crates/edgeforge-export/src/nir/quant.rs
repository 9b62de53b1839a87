//! Weights on the chip's integer grid: signed `bits`-bit integers with one float scale per output row.
//!
//! Why per row: a neuromorphic core's dense synapses hold one integer per synapse (Lava's Dense: 8-bit
//! signed mantissas with a shared exponent), and a per-output scale is a per-neuron gain, which NIR carries
//! as the IF neuron's `r` and the host applies to read-out rows. Per-group scales within a row (our int4
//! g32/g64 formats, GGUF's blocks) have no place on the chip, so such weights are re-quantized per row.

use edgeforge_core::{Tensor, TensorData};

use crate::error::{ExportError, Result};

/// A matrix as the chip holds it: `int_weights[r*n_in + c] · scales[r]` is the real weight.
#[derive(Debug, Clone)]
pub struct ChipWeights {
    pub n_out: usize,
    pub n_in: usize,
    pub bits: u32,
    /// Integers in `[-2^(bits-1), 2^(bits-1) - 1]`, stored as f32 (exact: |value| ≤ 128).
    pub int_weights: Vec<f32>,
    pub scales: Vec<f32>,
    /// True when these are the model's own quantized codes (same grid), false when re-quantized here.
    pub exact_codes: bool,
}

impl ChipWeights {
    /// The real-valued weight row-major (what the chip computes with, up to the per-row gain).
    pub fn dequantized(&self) -> Vec<f32> {
        self.int_weights.iter().enumerate().map(|(i, w)| w * self.scales[i / self.n_in.max(1)]).collect()
    }
}

/// The largest magnitude the symmetric grid uses when re-quantizing (the grid's −2^(bits−1) is left unused
/// so that +w and −w round to opposite integers).
pub fn grid_max(bits: u32) -> f32 {
    ((1u32 << (bits - 1)) - 1) as f32
}

/// Round-to-nearest per row, scale = max |w| / grid_max. A zero row gets scale 1 and zero weights.
pub fn quantize_rows(values: &[f32], n_out: usize, n_in: usize, bits: u32) -> ChipWeights {
    let q = grid_max(bits);
    let mut int_weights = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(n_out);
    for row in values.chunks_exact(n_in.max(1)).take(n_out) {
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 && max.is_finite() { max / q } else { 1.0 };
        scales.push(scale);
        int_weights.extend(row.iter().map(|v| (v / scale).round().clamp(-q, q)));
    }
    ChipWeights { n_out, n_in, bits, int_weights, scales, exact_codes: false }
}

/// The chip form of weight tensor `name` ([n_out, n_in]) at `bits`. Symmetric per-channel codes of at most
/// `bits` bits go over exactly; other quantized formats of at most `bits` bits and float weights are
/// re-quantized per row. A quantized tensor wider than the chip grid is refused: squeezing 8-bit codes into
/// 4 bits without calibration belongs in the recipe's quantization pass, not silently in an exporter.
pub fn chip_weights(name: &str, t: &Tensor, bits: u32) -> Result<ChipWeights> {
    let (n_out, n_in) = match t.shape.as_slice() {
        &[r, c] => (r, c),
        other => return Err(ExportError::Unsupported { what: format!("{name}: expected a matrix, got shape {other:?}") }),
    };
    if let TensorData::Quantized(q) = &t.data {
        let src_bits = u32::from(q.format.bits);
        if src_bits > bits {
            return Err(ExportError::DoesNotFit {
                target: format!("a {bits}-bit chip grid"),
                shortfalls: vec![format!("{name} is {} ({src_bits}-bit codes)", t.format_name())],
                fixes: vec![format!("quantize to {bits} bits in the recipe (e.g. `quantize-rtn` or `gptq` with `bits: {bits}`, `group_size: per-channel`)")],
            });
        }
        if q.format.symmetric && q.format.group_size >= n_in && q.scales.len() == n_out && q.is_consistent(n_out * n_in) {
            let zero = (q.format.levels() / 2) as f32;
            let int_weights = (0..n_out * n_in).map(|i| f32::from(q.code(i)) - zero).collect();
            let scales = q.scales.iter().map(|s| s.to_f32()).collect();
            return Ok(ChipWeights { n_out, n_in, bits, int_weights, scales, exact_codes: true });
        }
    }
    let values = t.to_f32(name)?;
    Ok(quantize_rows(&values, n_out, n_in, bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_to_the_grid_and_dequantize_within_half_a_step() {
        let values = [0.6f32, -1.0, 0.25, 0.0, 0.0, 0.0, 3.0, 1.0, -2.0];
        let w = quantize_rows(&values, 3, 3, 4);
        assert_eq!(w.int_weights[..3], [4.0, -7.0, 2.0]);
        assert_eq!(w.int_weights[3..6], [0.0, 0.0, 0.0]);
        assert_eq!(w.scales[1], 1.0);
        for (a, b) in w.dequantized().iter().zip(values) {
            assert!((a - b).abs() <= 3.0 / 7.0 / 2.0 + 1e-6, "{a} vs {b}");
        }
        assert!(w.int_weights.iter().all(|v| v.abs() <= grid_max(4)));
    }
}
