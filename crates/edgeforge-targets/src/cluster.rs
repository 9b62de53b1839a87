//! Edge clusters: a GGUF split across several small devices with llama.cpp's RPC backend. Every node runs
//! `rpc-server`; the head (the first node) runs the client with `--rpc` listing every node and
//! `--tensor-split` giving each node's share of the blocks, in node order. This module plans which blocks go
//! where, checks each node's memory, estimates decode speed with the link cost (an estimate, labelled), and
//! writes the commands.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TargetError};
use crate::profile::Profile;

/// The nodes of a `kind: cluster` profile; the first is the head.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub nodes: Vec<ClusterNode>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterNode {
    pub name: String,
    /// Address the head reaches the node's rpc-server at.
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub ram_bytes: u64,
    /// What the model may use of the RAM (default: 75% of it).
    #[serde(default)]
    pub budget_bytes: Option<u64>,
    /// Memory bandwidth for weight reads, GB/s.
    pub bandwidth_gb_s: f64,
    /// Link bandwidth to the head, GB/s (the head itself: none).
    #[serde(default)]
    pub link_gb_s: Option<f64>,
    /// One-way latency of the link to the head, milliseconds (default 0.5).
    #[serde(default)]
    pub link_latency_ms: Option<f64>,
}

fn default_port() -> u16 {
    50052
}

impl ClusterNode {
    pub fn budget(&self) -> u64 {
        self.budget_bytes.unwrap_or(self.ram_bytes / 4 * 3)
    }
}

/// Checks what serde cannot: at least one node, positive numbers, unique addresses.
pub fn check(c: &Cluster) -> std::result::Result<(), String> {
    if c.nodes.is_empty() {
        return Err("`cluster.nodes` is empty: list the devices, the head first".into());
    }
    for (i, n) in c.nodes.iter().enumerate() {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if n.ram_bytes == 0 || !positive(n.bandwidth_gb_s) || n.link_gb_s.is_some_and(|l| !positive(l)) || n.link_latency_ms.is_some_and(|l| !(l.is_finite() && l >= 0.0)) {
            return Err(format!("cluster node `{}`: ram_bytes, bandwidth_gb_s and link_gb_s must be positive numbers", n.name));
        }
        if i > 0 && n.link_gb_s.is_none() {
            return Err(format!("cluster node `{}`: give `link_gb_s` (its link to the head, e.g. 0.117 for gigabit Ethernet)", n.name));
        }
        if c.nodes[..i].iter().any(|m| (m.host.as_str(), m.port) == (n.host.as_str(), n.port)) {
            return Err(format!("cluster node `{}`: {}:{} is listed twice", n.name, n.host, n.port));
        }
    }
    Ok(())
}

/// What the plan needs to know about the exported GGUF.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterInput {
    /// Bytes of each block's tensors (`blk.N.*`), in block order.
    pub block_bytes: Vec<u64>,
    /// Tensors that stay with the client on the head: token embedding lookup, final norm.
    pub other_bytes: u64,
    /// The output head (`output.weight`, or the token embedding again when tied): llama.cpp offloads it to
    /// the last node with blocks.
    pub output_bytes: u64,
    /// KV cache bytes per block at the planned context (f16, as llama.cpp keeps it).
    pub kv_bytes_per_block: u64,
    /// Width of the activations sent between nodes (n_embd).
    pub n_embd: u64,
}

impl ClusterInput {
    /// Reads block sizes from a GGUF file and the KV size from its metadata (`ARCH.attention.head_count_kv`,
    /// `ARCH.embedding_length`, `ARCH.attention.head_count`).
    pub fn from_gguf(path: &Path, context: u64) -> Result<ClusterInput> {
        let bad = |message: String| TargetError::Profile { origin: path.display().to_string(), message };
        let f = edgeforge_core::gguf::GgufFile::open(path).map_err(|e| bad(e.to_string()))?;
        let arch = f.optional_str("general.architecture").map_err(|e| bad(e.to_string()))?.unwrap_or("llama").to_owned();
        let n_layers = f.require_u64(&format!("{arch}.block_count")).map_err(|e| bad(e.to_string()))?;
        let n_embd = f.require_u64(&format!("{arch}.embedding_length")).map_err(|e| bad(e.to_string()))?;
        let heads = f.require_u64(&format!("{arch}.attention.head_count")).map_err(|e| bad(e.to_string()))?.max(1);
        let kv_heads = f.optional_f64(&format!("{arch}.attention.head_count_kv")).ok().flatten().map_or(heads, |v| v as u64);
        if n_layers as usize > f.tensors.len() {
            return Err(bad(format!("{n_layers} blocks declared but only {} tensors", f.tensors.len())));
        }
        let mut block_bytes = vec![0u64; n_layers as usize];
        let mut other_bytes = 0u64;
        let size = |name: &str| f.tensors.iter().find(|t| t.name == name).map(|t| t.data_len);
        let output_bytes = size("output.weight").or_else(|| size("token_embd.weight")).unwrap_or(0);
        for t in &f.tensors {
            let block = t.name.strip_prefix("blk.").and_then(|r| r.split('.').next()).and_then(|n| n.parse::<usize>().ok());
            match block.and_then(|b| block_bytes.get_mut(b)) {
                Some(slot) => *slot += t.data_len,
                None => other_bytes += t.data_len,
            }
        }
        let head_dim = n_embd / heads;
        other_bytes -= size("output.weight").unwrap_or(0);
        Ok(ClusterInput { block_bytes, other_bytes, output_bytes, kv_bytes_per_block: 2 * kv_heads * head_dim * context * 2, n_embd })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeShare {
    pub name: String,
    pub address: String,
    /// Blocks `first..first + count`.
    pub first_block: usize,
    pub blocks: usize,
    /// Weights + KV cache on this node (the head also holds the embedding, the last node the output head).
    pub memory_bytes: u64,
    pub budget_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterPlan {
    pub profile: String,
    pub fits: bool,
    pub shortfalls: Vec<String>,
    pub nodes: Vec<NodeShare>,
    /// `--tensor-split` values, one per node in `--rpc` order.
    pub tensor_split: Vec<usize>,
    pub rpc: String,
    pub decode_tok_s_estimate: f64,
    pub estimate_note: String,
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

/// Blocks per node: shares proportional to memory bandwidth (so each node's part of a token takes about
/// the same time), capped by what each node's budget holds, the rest moved to nodes with room.
fn split(nodes: &[ClusterNode], input: &ClusterInput) -> (Vec<usize>, Vec<u64>) {
    let n = input.block_bytes.len();
    let per_block = input.block_bytes.iter().copied().max().unwrap_or(0) + input.kv_bytes_per_block;
    let caps: Vec<usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, nd)| {
            let last = i + 1 == nodes.len();
            let fixed = if i == 0 { input.other_bytes } else { 0 } + if last { input.output_bytes } else { 0 };
            (nd.budget().saturating_sub(fixed) / per_block.max(1)) as usize
        })
        .collect();
    let total_bw: f64 = nodes.iter().map(|x| x.bandwidth_gb_s).sum();
    let mut counts: Vec<usize> = nodes.iter().zip(&caps).map(|(nd, &cap)| ((n as f64 * nd.bandwidth_gb_s / total_bw).round() as usize).min(cap)).collect();
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_by(|&a, &b| nodes[b].bandwidth_gb_s.total_cmp(&nodes[a].bandwidth_gb_s).then(a.cmp(&b)));
    while counts.iter().sum::<usize>() > n {
        let Some(&i) = order.iter().rev().find(|&&i| counts[i] > 0) else { break };
        counts[i] -= 1;
    }
    while counts.iter().sum::<usize>() < n {
        let Some(&i) = order.iter().find(|&&i| counts[i] < caps[i]) else { break };
        counts[i] += 1;
    }
    let last_used = counts.iter().rposition(|&c| c > 0).unwrap_or(0);
    let mut first = 0;
    let memory = counts
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let w: u64 = input.block_bytes[first.min(n)..(first + c).min(n)].iter().sum();
            first += c;
            w + c as u64 * input.kv_bytes_per_block + if i == 0 { input.other_bytes } else { 0 } + if i == last_used { input.output_bytes } else { 0 }
        })
        .collect();
    (counts, memory)
}

pub fn plan(profile: &Profile, cluster: &Cluster, input: &ClusterInput) -> ClusterPlan {
    let n = input.block_bytes.len();
    let (counts, memory) = split(&cluster.nodes, input);
    let mut shortfalls = Vec::new();
    let placed: usize = counts.iter().sum();
    if placed < n {
        let need: u64 = input.block_bytes.iter().sum::<u64>() + n as u64 * input.kv_bytes_per_block + input.other_bytes + input.output_bytes;
        let have: u64 = cluster.nodes.iter().map(ClusterNode::budget).sum();
        shortfalls.push(format!(
            "{} of {n} blocks have no node with room: the model needs about {} (weights, KV cache, embedding and head), the {} nodes of {} allow {}",
            n - placed,
            mb(need),
            cluster.nodes.len(),
            profile.name,
            mb(have)
        ));
    }
    let mut first = 0;
    let nodes: Vec<NodeShare> = cluster
        .nodes
        .iter()
        .zip(counts.iter().zip(&memory))
        .map(|(nd, (&c, &m))| {
            let s = NodeShare { name: nd.name.clone(), address: format!("{}:{}", nd.host, nd.port), first_block: first, blocks: c, memory_bytes: m, budget_bytes: nd.budget() };
            first += c;
            s
        })
        .collect();
    let (tok_s, note) = estimate(&cluster.nodes, &nodes, input);
    ClusterPlan {
        profile: profile.name.clone(),
        fits: shortfalls.is_empty(),
        shortfalls,
        rpc: nodes.iter().map(|s| s.address.clone()).collect::<Vec<_>>().join(","),
        tensor_split: counts,
        nodes,
        decode_tok_s_estimate: tok_s,
        estimate_note: note,
    }
}

/// Seconds per token: each node reads its weights once at its bandwidth (roofline), the last node with
/// blocks also the output head; every remote node that holds blocks costs two activation transfers (head → node,
/// node → head, as the RPC client relays tensors between servers) and two link latencies.
fn estimate(nodes: &[ClusterNode], shares: &[NodeShare], input: &ClusterInput) -> (f64, String) {
    let mut seconds = 0.0;
    for (i, (nd, s)) in nodes.iter().zip(shares).enumerate() {
        let weights: u64 = input.block_bytes[s.first_block.min(input.block_bytes.len())..(s.first_block + s.blocks).min(input.block_bytes.len())].iter().sum();
        let last = shares.iter().rposition(|x| x.blocks > 0) == Some(i);
        let output = if last { input.output_bytes } else { 0 };
        seconds += (weights + output) as f64 / (nd.bandwidth_gb_s * 1e9);
        if i > 0 && s.blocks > 0 {
            let act = (input.n_embd * 4) as f64;
            seconds += 2.0 * act / (nd.link_gb_s.unwrap_or(0.1) * 1e9) + 2.0 * nd.link_latency_ms.unwrap_or(0.5) / 1e3;
        }
    }
    let note = "estimate, not a measurement: each node's weight bytes read once per token at its peak bandwidth (roofline), the output head on the last node, plus two activation transfers and two link latencies per remote node; llama.cpp's RPC round trips and compute time are not modelled".to_owned();
    (1.0 / seconds.max(1e-9), note)
}

impl ClusterPlan {
    /// The plan as Markdown with the commands to run it.
    pub fn markdown(&self, gguf_name: &str) -> String {
        let mut o = format!("# Cluster plan for `{gguf_name}` on {}\n\n", self.profile);
        if !self.fits {
            o.push_str(&format!("**Does not fit:** {}\n\n", self.shortfalls.join("; ")));
        }
        o.push_str("| node | address | blocks | memory | budget |\n|---|---|---|---:|---:|\n");
        for s in &self.nodes {
            let range = if s.blocks == 0 { "none".to_owned() } else { format!("{}–{} ({})", s.first_block, s.first_block + s.blocks - 1, s.blocks) };
            o.push_str(&format!("| {} | {} | {range} | {} | {} |\n", s.name, s.address, mb(s.memory_bytes), mb(s.budget_bytes)));
        }
        o.push_str(&format!("\nDecode: about {:.1} tok/s ({}).\n\n", self.decode_tok_s_estimate, self.estimate_note));
        o.push_str("On every node (llama.cpp built with -DGGML_RPC=ON; the binary is `rpc-server`, `ggml-rpc-server` in some builds):\n\n```sh\n");
        for s in &self.nodes {
            let port = s.address.rsplit(':').next().unwrap_or("50052");
            o.push_str(&format!("# {}\nrpc-server -H 0.0.0.0 -p {port}\n", s.name));
        }
        o.push_str(&format!("```\n\nOn the head ({}):\n\n```sh\n", self.nodes.first().map_or("", |s| s.name.as_str())));
        o.push_str(&format!("llama-cli -m {gguf_name} {}\n```\n", self.client_args().join(" ")));
        o
    }

    /// The client's arguments: every node over RPC, all blocks offloaded, split as planned.
    pub fn client_args(&self) -> Vec<String> {
        let split: Vec<String> = self.tensor_split.iter().map(ToString::to_string).collect();
        let layers: usize = self.tensor_split.iter().sum::<usize>() + 1;
        vec!["--rpc".into(), self.rpc.clone(), "-ngl".into(), layers.to_string(), "--tensor-split".into(), split.join(",")]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, port: u16, ram_gb: u64, bw: f64, link: Option<f64>) -> ClusterNode {
        ClusterNode { name: name.into(), host: "127.0.0.1".into(), port, ram_bytes: ram_gb << 30, budget_bytes: None, bandwidth_gb_s: bw, link_gb_s: link, link_latency_ms: None }
    }

    fn profile() -> Profile {
        crate::load_profile("raspberry-pi-5", Path::new(".")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn input(blocks: usize, block_mb: u64) -> ClusterInput {
        ClusterInput { block_bytes: vec![block_mb * 1_000_000; blocks], other_bytes: 30_000_000, output_bytes: 30_000_000, kv_bytes_per_block: 1_000_000, n_embd: 576 }
    }

    #[test]
    fn blocks_follow_bandwidth_and_memory() {
        let c = Cluster { nodes: vec![node("a", 1, 8, 20.0, None), node("b", 2, 8, 10.0, Some(0.117))] };
        assert!(check(&c).is_ok());
        let p = plan(&profile(), &c, &input(30, 2));
        assert!(p.fits, "{:?}", p.shortfalls);
        assert_eq!(p.tensor_split, [20, 10]);
        assert_eq!((p.nodes[1].first_block, p.nodes[1].blocks), (20, 10));
        assert_eq!(p.client_args().join(" "), "--rpc 127.0.0.1:1,127.0.0.1:2 -ngl 31 --tensor-split 20,10");
        // A small node takes what it can hold; the rest moves to the other.
        let small = Cluster { nodes: vec![node("a", 1, 8, 10.0, None), ClusterNode { budget_bytes: Some(35_000_000), ..node("b", 2, 1, 30.0, Some(0.117)) }] };
        let p = plan(&profile(), &small, &input(30, 2));
        assert_eq!(p.tensor_split, [29, 1]);
        // Too big for the cluster: refused with numbers.
        let p = plan(&profile(), &c, &input(30, 500));
        assert!(!p.fits && p.shortfalls[0].contains("blocks have no node with room"), "{:?}", p.shortfalls);
        let md = p.markdown("m.gguf");
        assert!(md.contains("Does not fit") && md.contains("rpc-server -H 0.0.0.0 -p 2"), "{md}");
    }

    #[test]
    fn the_link_costs_speed() {
        let fast = Cluster { nodes: vec![node("a", 1, 8, 10.0, None), node("b", 2, 8, 10.0, Some(1.0))] };
        let slow = Cluster { nodes: vec![node("a", 1, 8, 10.0, None), ClusterNode { link_latency_ms: Some(5.0), ..node("b", 2, 8, 10.0, Some(0.01)) }] };
        let (f, s) = (plan(&profile(), &fast, &input(30, 2)), plan(&profile(), &slow, &input(30, 2)));
        assert!(f.decode_tok_s_estimate > s.decode_tok_s_estimate * 1.5, "{} vs {}", f.decode_tok_s_estimate, s.decode_tok_s_estimate);
        assert!(f.estimate_note.starts_with("estimate"));
    }

    #[test]
    fn bad_clusters_are_named() {
        assert!(check(&Cluster { nodes: vec![] }).unwrap_err().contains("empty"));
        let e = check(&Cluster { nodes: vec![node("a", 1, 8, 10.0, None), node("b", 2, 8, 10.0, None)] }).unwrap_err();
        assert!(e.contains("`b`") && e.contains("link_gb_s"), "{e}");
        let e = check(&Cluster { nodes: vec![node("a", 1, 8, 10.0, None), node("b", 1, 8, 10.0, Some(1.0))] }).unwrap_err();
        assert!(e.contains("listed twice"), "{e}");
    }
}
