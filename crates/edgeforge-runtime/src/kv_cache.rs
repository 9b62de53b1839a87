//! Keys and values of past positions, per layer, `[capacity, kv_width]` row-major.

pub struct KvCache {
    pub(crate) capacity: usize,
    pub(crate) len: usize,
    pub(crate) width: usize,
    pub(crate) k: Vec<Vec<f32>>,
    pub(crate) v: Vec<Vec<f32>>,
    /// The forward pass's buffers for this context, reused by every call (no allocation per decode step).
    pub(crate) ws: crate::forward::Workspace,
}

impl KvCache {
    pub(crate) fn new(n_layers: usize, width: usize, capacity: usize) -> Self {
        Self {
            capacity,
            len: 0,
            width,
            k: (0..n_layers).map(|_| vec![0.0; capacity * width]).collect(),
            v: (0..n_layers).map(|_| vec![0.0; capacity * width]).collect(),
            ws: Default::default(),
        }
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forget every position (the buffers are kept for the next sequence).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Drop positions from `len` on (e.g. to re-run a suffix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}
