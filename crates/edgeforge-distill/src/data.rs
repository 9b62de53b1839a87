//! Seeded visiting order of the training sequences. The order of each epoch is a shuffle keyed by (seed,
//! epoch), so the whole stream is a function of a single counter: a resumed run continues exactly where the
//! checkpoint's cursor says, with no generator state to save.

/// splitmix64: a small, well-mixed generator; the order must not depend on any library's version.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub struct DataOrder {
    n: usize,
    seed: u64,
    epoch: Option<(u64, Vec<usize>)>,
}

impl DataOrder {
    pub fn new(n: usize, seed: u64) -> Self {
        Self { n, seed, epoch: None }
    }

    /// The sequence visited at position `cursor` of the stream (sample counter across epochs).
    pub fn at(&mut self, cursor: u64) -> usize {
        if self.n == 0 {
            return 0;
        }
        let epoch = cursor / self.n as u64;
        let within = (cursor % self.n as u64) as usize;
        if self.epoch.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut state = self.seed ^ epoch.wrapping_mul(0xD6E8_FEB8_6659_FD93);
            let mut order: Vec<usize> = (0..self.n).collect();
            for i in (1..self.n).rev() {
                let j = (splitmix(&mut state) % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
            self.epoch = Some((epoch, order));
        }
        self.epoch.as_ref().map_or(0, |(_, order)| order[within])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_epoch_is_a_permutation_and_seeded() {
        let mut a = DataOrder::new(10, 7);
        let mut epoch0: Vec<usize> = (0..10).map(|c| a.at(c)).collect();
        let epoch1: Vec<usize> = (10..20).map(|c| a.at(c)).collect();
        assert_ne!(epoch0, epoch1);
        let mut b = DataOrder::new(10, 7);
        assert_eq!(b.at(13), epoch1[3]);
        assert_eq!(b.at(2), epoch0[2]);
        epoch0.sort_unstable();
        assert_eq!(epoch0, (0..10).collect::<Vec<_>>());
    }
}
