//! Learning-rate schedule: linear warmup from lr/warmup to lr, then cosine decay to lr · min_frac at the last
//! step. Warmup keeps the first AdamW steps (whose second-moment estimates are still noisy) small.

#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub peak_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub min_frac: f64,
}

impl Schedule {
    /// Learning rate of optimizer step `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.peak_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.peak_lr * (self.min_frac + (1.0 - self.min_frac) * cosine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s = Schedule { peak_lr: 1.0, warmup_steps: 4, total_steps: 104, min_frac: 0.1 };
        assert!((s.lr(0) - 0.25).abs() < 1e-12);
        assert!((s.lr(3) - 1.0).abs() < 1e-12);
        assert!((s.lr(4) - 1.0).abs() < 1e-12);
        assert!((s.lr(54) - 0.55).abs() < 1e-12);
        assert!((s.lr(104) - 0.1).abs() < 1e-12);
        assert!((1..104).all(|i| s.lr(i + 4) <= s.lr(i + 3) + 1e-15));
    }
}
