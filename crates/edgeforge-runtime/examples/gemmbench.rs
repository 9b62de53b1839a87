use edgeforge_runtime::kernels::matmul::{matmul, MatRef, Threads};
fn cpu() -> f64 { let mut ts = libc_ts(); ts }
fn libc_ts() -> f64 {
    let t = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let f: Vec<&str> = t.rsplit(')').next().unwrap().split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}
fn main() {
    let threads = if std::env::args().nth(1).as_deref() == Some("pool") { Threads::Pool } else { Threads::Single };
    for &(m, k, n, reps) in &[(512usize, 576usize, 1536usize, 200usize), (512, 576, 576, 400), (512, 1536, 576, 200), (192, 512, 192, 2000), (256, 512, 256, 1500)] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut out = vec![0f32; m * n];
        let t0 = std::time::Instant::now(); let c0 = cpu();
        for _ in 0..reps { assert!(matmul(&mut out, 0, n, MatRef::row_major(&a, m, k), MatRef::transposed(&w, n, k), false, threads)); }
        let wall = t0.elapsed().as_secs_f64(); let c = cpu() - c0;
        let fl = 2.0 * (m * k * n * reps) as f64;
        println!("{m}x{k}x{n}: wall {:.1} GF/s, thread-cpu {:.1} GF/s", fl / wall / 1e9, fl / c.max(1e-9) / 1e9);
    }
}
