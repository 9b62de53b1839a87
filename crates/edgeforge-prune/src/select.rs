//! From unit scores to the units each block keeps.

/// Round `k` to the nearest multiple of `multiple` inside `[lo, width]` (a width that is not itself a
/// multiple stays reachable, so ratio 0 keeps everything).
fn round_keep(k: f64, multiple: usize, lo: usize, width: usize) -> usize {
    let m = multiple.max(1) as f64;
    let rounded = ((k / m).round() * m) as usize;
    let rounded = if k >= width as f64 - 0.5 { width } else { rounded };
    rounded.clamp(lo.min(width), width)
}

/// How many units each block keeps.
/// - per block: `width·(1 − ratio_b)`, rounded to `multiple`;
/// - global (`ratios` has one entry): units of all blocks ranked together by score divided by the block's
///   mean score (raw scores are not comparable across blocks), the top `Σwidth·(1 − ratio)` kept, then each
///   block's count rounded to `multiple`.
pub fn allocate(scores: &[Vec<f64>], ratios: &[f64], global: bool, multiple: usize, min_keep: usize) -> Vec<usize> {
    if !global {
        return scores
            .iter()
            .enumerate()
            .map(|(b, s)| {
                let r = ratios.get(b).or(ratios.first()).copied().unwrap_or(0.0);
                round_keep(s.len() as f64 * (1.0 - r), multiple, min_keep.max(multiple.min(s.len())), s.len())
            })
            .collect();
    }
    let ratio = ratios.first().copied().unwrap_or(0.0);
    let mut pooled: Vec<(f64, usize, usize)> = Vec::new();
    for (b, s) in scores.iter().enumerate() {
        let mean = s.iter().sum::<f64>() / s.len().max(1) as f64;
        pooled.extend(s.iter().enumerate().map(|(i, v)| (if mean > 0.0 { v / mean } else { 0.0 }, b, i)));
    }
    // Highest first; ties by block then index, so the choice is reproducible.
    pooled.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let total: usize = scores.iter().map(Vec::len).sum();
    let keep_total = (total as f64 * (1.0 - ratio)).round() as usize;
    let mut counts = vec![0usize; scores.len()];
    for &(_, b, _) in pooled.iter().take(keep_total) {
        counts[b] += 1;
    }
    counts
        .iter()
        .zip(scores)
        .map(|(&c, s)| round_keep(c as f64, multiple, min_keep.max(multiple.min(s.len())), s.len()))
        .collect()
}

/// Indices of the `k` highest scores, ascending (ties keep the lower index).
pub fn top(scores: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_block_counts_round_to_the_multiple() {
        let s = vec![vec![1.0; 1536]; 2];
        assert_eq!(allocate(&s, &[0.25], false, 32, 1), vec![1152, 1152]);
        assert_eq!(allocate(&s, &[0.0, 0.5], false, 64, 1), vec![1536, 768]);
        // A width that is not a multiple survives ratio 0.
        assert_eq!(allocate(&[vec![1.0; 100]], &[0.0], false, 32, 1), vec![100]);
    }

    #[test]
    fn global_ranking_moves_channels_to_the_block_whose_scores_spread_more() {
        // Block 0's scores are flat, block 1 has a few dominant channels and many weak ones.
        let flat = vec![1.0; 64];
        let spread: Vec<f64> = (0..64).map(|i| if i < 16 { 10.0 } else { 0.1 }).collect();
        let counts = allocate(&[flat, spread], &[0.5], true, 1, 1);
        assert_eq!(counts.iter().sum::<usize>(), 64);
        assert!(counts[0] > counts[1], "{counts:?}");
    }

    #[test]
    fn top_keeps_the_best_in_index_order() {
        assert_eq!(top(&[0.5, 3.0, 1.0, 3.0], 2), vec![1, 3]);
    }
}
