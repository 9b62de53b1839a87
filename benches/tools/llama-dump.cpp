// Dumps every tensor llama.cpp computes for one batch (the first perplexity chunk of a text), so that
// edgeforge's `--rounding llamacpp` arithmetic can be checked op by op against the pinned llama.cpp build
// (benches/llamacpp-bitexact.sh builds and runs this). Not part of the product.
//
// Usage: llama-dump MODEL TEXT N_TOKENS OUT_DIR [DECODE]
// Writes OUT_DIR/index.tsv (seq, name, op, type, ne0..ne3, src names) and OUT_DIR/<seq>.bin (the tensor's
// elements in row-major order, contiguous, in its own type), plus OUT_DIR/tokens.txt. With DECODE = 1, then
// decodes the next token of the text on its own (a decode step at position N_TOKENS) and writes its tensors
// the same way to OUT_DIR/decode.
#include "llama.h"
#include "ggml.h"
#include "ggml-backend.h"
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

struct Dump {
    std::string dir;
    FILE * index = nullptr;
    int seq = 0;
};

static bool on_tensor(struct ggml_tensor * t, bool ask, void * user) {
    if (ask) {
        return true;
    }
    Dump * d = (Dump *) user;
    const size_t row = ggml_row_size(t->type, t->ne[0]);
    std::vector<uint8_t> all(row * t->ne[1] * t->ne[2] * t->ne[3]);
    std::vector<uint8_t> full(ggml_nbytes(t));
    ggml_backend_tensor_get(t, full.data(), 0, full.size());
    size_t o = 0;
    for (int64_t i3 = 0; i3 < t->ne[3]; i3++)
        for (int64_t i2 = 0; i2 < t->ne[2]; i2++)
            for (int64_t i1 = 0; i1 < t->ne[1]; i1++) {
                const size_t off = i1 * t->nb[1] + i2 * t->nb[2] + i3 * t->nb[3];
                if (t->nb[0] == ggml_type_size(t->type) || ggml_is_quantized(t->type)) {
                    memcpy(all.data() + o, full.data() + off, row);
                } else {
                    const size_t es = ggml_type_size(t->type);
                    for (int64_t i0 = 0; i0 < t->ne[0]; i0++) memcpy(all.data() + o + i0 * es, full.data() + off + i0 * t->nb[0], es);
                }
                o += row;
            }
    char path[4096];
    snprintf(path, sizeof path, "%s/%05d.bin", d->dir.c_str(), d->seq);
    FILE * f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "cannot write %s\n", path); exit(1); }
    fwrite(all.data(), 1, all.size(), f);
    fclose(f);
    fprintf(d->index, "%d\t%s\t%s\t%s\t%lld\t%lld\t%lld\t%lld", d->seq, t->name, ggml_op_desc(t), ggml_type_name(t->type),
            (long long) t->ne[0], (long long) t->ne[1], (long long) t->ne[2], (long long) t->ne[3]);
    for (int i = 0; i < GGML_MAX_SRC; i++) {
        if (t->src[i]) fprintf(d->index, "\t%s", t->src[i]->name);
    }
    // op_params (as i32 words) for ops whose arithmetic depends on them.
    fprintf(d->index, "\tparams");
    for (int i = 0; i < 8; i++) fprintf(d->index, ":%d", t->op_params[i]);
    fprintf(d->index, "\n");
    d->seq++;
    return true;
}

int main(int argc, char ** argv) {
    if (argc != 5 && argc != 6) { fprintf(stderr, "usage: %s MODEL TEXT N_TOKENS OUT_DIR [DECODE]\n", argv[0]); return 2; }
    const int n = atoi(argv[3]);
    const int steps = argc == 6 ? atoi(argv[5]) : 0;
    Dump d;
    d.dir = argv[4];
    llama_backend_init();
    auto mp = llama_model_default_params();
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "cannot load %s\n", argv[1]); return 1; }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    std::ifstream in(argv[2]);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    std::vector<llama_token> toks(text.size() + 16);
    // As llama-perplexity: tokenize the whole text with the BOS the vocabulary asks for, then put BOS first.
    const bool add_bos = llama_vocab_get_add_bos(vocab);
    int nt = llama_tokenize(vocab, text.c_str(), (int) text.size(), toks.data(), (int) toks.size(), add_bos, false);
    if (nt < n + steps) { fprintf(stderr, "text has %d tokens, fewer than %d\n", nt, n + steps); return 1; }
    toks.resize(n + steps);
    if (add_bos) toks[0] = llama_vocab_bos(vocab);
    auto cp = llama_context_default_params();
    cp.n_ctx = n + steps;
    cp.n_batch = n;
    cp.n_ubatch = n;
    cp.n_threads = 2;
    cp.n_threads_batch = 2;
    cp.cb_eval = on_tensor;
    cp.cb_eval_user_data = &d;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "cannot create a context\n"); return 1; }
    std::string ip = d.dir + "/index.tsv";
    d.index = fopen(ip.c_str(), "w");
    if (!d.index) { fprintf(stderr, "cannot write %s\n", ip.c_str()); return 1; }
    llama_batch b = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        b.token[i] = toks[i]; b.pos[i] = i; b.n_seq_id[i] = 1; b.seq_id[i][0] = 0; b.logits[i] = 1;
    }
    b.n_tokens = n;
    if (llama_decode(ctx, b) != 0) { fprintf(stderr, "decode failed\n"); return 1; }
    fclose(d.index);
    FILE * tf = fopen((d.dir + "/tokens.txt").c_str(), "w");
    for (int i = 0; i < n + steps; i++) fprintf(tf, "%d\n", toks[i]);
    fclose(tf);
    // The logits as llama_get_logits returns them ([n, n_vocab] f32).
    FILE * lf = fopen((d.dir + "/logits.bin").c_str(), "wb");
    fwrite(llama_get_logits(ctx), sizeof(float), (size_t) n * llama_vocab_n_tokens(vocab), lf);
    fclose(lf);
    if (steps > 0) {
        d.dir += "/decode";
        d.seq = 0;
        d.index = fopen((d.dir + "/index.tsv").c_str(), "w");
        if (!d.index) { fprintf(stderr, "cannot write %s/index.tsv (create the folder first)\n", d.dir.c_str()); return 1; }
        llama_batch one = llama_batch_init(1, 0, 1);
        one.token[0] = toks[n]; one.pos[0] = n; one.n_seq_id[0] = 1; one.seq_id[0][0] = 0; one.logits[0] = 1;
        one.n_tokens = 1;
        if (llama_decode(ctx, one) != 0) { fprintf(stderr, "decode step failed\n"); return 1; }
        fclose(d.index);
        llama_batch_free(one);
    }
    llama_batch_free(b);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
