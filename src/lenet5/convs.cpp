// LeNet-5's convolution stack on the CPU, forward and backward:
//   conv1 1->6 5x5, max-pool 2, ReLU, conv2 6->16 5x5, max-pool 2, ReLU.
//
// At the seed's batch of 64, oneDNN spends most of a training step here: six and sixteen channels
// fill little of a vector. These loops put 16 images in the 16 lanes of a vector instead, so every
// multiply-add is a full vector whatever the channel count, and each max-pool is 3 compares. Built
// on first use by kernels.py (portable GCC/Clang vector extensions, no intrinsics); OpenMP, where
// the compiler has it, shares chunks and channels among `threads`; backprop.py uses torch's
// kernels when no compiler is at hand.
//
// Layout inside, "chunk-major": images in chunks of 16, each value followed by the same value of
// the other 15 images of its chunk; the lanes past the batch's last image hold zeros.
//   x    (chunks, 28*28, 16)           the input
//   r1   (chunks, 12*12*6, 16)         block 1's output, (i, j, c) order
//   r2   (chunks, 16*4*4, 16)          block 2's output, (c, i, j) order: torch's flatten
//   arg  same shape as r1 / r2         which of its 2x2 window's positions won, 0..3: the first
//                                      maximum, row by row, exactly as torch's max_pool2d
// Rows of the (B, 784) input and of the (B, 256) output and its gradient are one image each.

typedef float v16 __attribute__((vector_size(64)));                          // in registers
typedef float v16u __attribute__((vector_size(64), aligned(4), may_alias));  // at any float

static inline v16 load(const float *p) { return *(const v16u *)p; }
static inline void store(float *p, v16 v) { *(v16u *)p = v; }

static const v16 ZERO = {};

// max over a window's 4 positions (the first wins), then ReLU; `which` gets the winner
static inline v16 pool_relu(v16 a0, v16 a1, v16 a2, v16 a3, v16 *which) {
    v16 m = a0, w = ZERO;
    w = a1 > m ? ZERO + 1 : w; m = a1 > m ? a1 : m;
    w = a2 > m ? ZERO + 2 : w; m = a2 > m ? a2 : m;
    w = a3 > m ? ZERO + 3 : w; m = a3 > m ? a3 : m;
    *which = w;
    return m > ZERO ? m : ZERO;
}

static float lanes_sum(v16 v) {
    float s = 0;
    for (int q = 0; q < 16; q++) s += v[q];
    return s;
}

static void to_chunks(const float *rows, int n, int width, float *out) {
    const int chunks = (n + 15) / 16;
    for (int ch = 0; ch < chunks; ch++)
        for (int q = 0; q < 16; q++) {
            const int b = ch * 16 + q;
            float *o = out + ch * width * 16 + q;
            if (b < n)
                for (int f = 0; f < width; f++) o[f * 16] = rows[b * width + f];
            else
                for (int f = 0; f < width; f++) o[f * 16] = 0;
        }
}

static void from_chunks(const float *chunked, int n, int width, float *rows) {
    for (int b = 0; b < n; b++) {
        const float *c = chunked + (b / 16) * width * 16 + b % 16;
        for (int f = 0; f < width; f++) rows[b * width + f] = c[f * 16];
    }
}

static void block1_forward(const float *xc, const float *w1, const float *b1, float *r1c,
                           float *arg1c) {
    for (int i = 0; i < 12; i++)
        for (int j = 0; j < 12; j++) {
            v16 win[6][6];  // the 6x6 pixels the 4 windows of this pooled output cover
#pragma GCC unroll 6
            for (int r = 0; r < 6; r++)
#pragma GCC unroll 6
                for (int s = 0; s < 6; s++)
                    win[r][s] = load(xc + ((2 * i + r) * 28 + 2 * j + s) * 16);
            for (int c = 0; c < 6; c++) {
                const float *w = w1 + c * 25;
                v16 a0 = ZERO + b1[c], a1 = a0, a2 = a0, a3 = a0;
#pragma GCC unroll 5
                for (int k = 0; k < 5; k++)
#pragma GCC unroll 5
                    for (int l = 0; l < 5; l++) {
                        const float wk = w[k * 5 + l];
                        a0 += wk * win[k][l];
                        a1 += wk * win[k][l + 1];
                        a2 += wk * win[k + 1][l];
                        a3 += wk * win[k + 1][l + 1];
                    }
                const int o = ((i * 12 + j) * 6 + c) * 16;
                v16 which;
                store(r1c + o, pool_relu(a0, a1, a2, a3, &which));
                store(arg1c + o, which);
            }
        }
}

static void block2_forward(const float *r1c, const float *w2, const float *b2, float *r2c,
                           float *arg2c) {
    for (int u = 0; u < 4; u++)
        for (int v = 0; v < 4; v++)
            for (int og = 0; og < 16; og += 4) {  // 4 output channels x 4 window positions
                v16 acc[4][4];
                for (int o = 0; o < 4; o++)
                    for (int p = 0; p < 4; p++) acc[o][p] = ZERO + b2[og + o];
                for (int c = 0; c < 6; c++)
                    for (int r = 0; r < 6; r++) {  // one row of the 6x6 input the windows cover
                        v16 row[6];
#pragma GCC unroll 6
                        for (int s = 0; s < 6; s++)
                            row[s] = load(r1c + (((2 * u + r) * 12 + 2 * v + s) * 6 + c) * 16);
#pragma GCC unroll 4
                        for (int o = 0; o < 4; o++) {
                            const float *w = w2 + ((og + o) * 6 + c) * 25;
                            if (r < 5)  // window rows 0: kernel row r
#pragma GCC unroll 5
                                for (int l = 0; l < 5; l++) {
                                    acc[o][0] += w[r * 5 + l] * row[l];
                                    acc[o][1] += w[r * 5 + l] * row[l + 1];
                                }
                            if (r > 0)  // window rows 1: kernel row r - 1
#pragma GCC unroll 5
                                for (int l = 0; l < 5; l++) {
                                    acc[o][2] += w[(r - 1) * 5 + l] * row[l];
                                    acc[o][3] += w[(r - 1) * 5 + l] * row[l + 1];
                                }
                        }
                    }
                for (int o = 0; o < 4; o++) {
                    const int at = ((og + o) * 16 + u * 4 + v) * 16;
                    v16 which;
                    store(r2c + at, pool_relu(acc[o][0], acc[o][1], acc[o][2], acc[o][3], &which));
                    store(arg2c + at, which);
                }
            }
}

// x: (n, 784) rows; f: (n, 256) rows, block 2's output flattened as torch flattens it.
// xk, r1, arg1, r2, arg2: chunk-major, kept for the backward.
extern "C" void convs_forward(const float *x, int n, const float *w1, const float *b1,
                              const float *w2, const float *b2, float *xk, float *r1, float *arg1,
                              float *r2, float *arg2, float *f, int threads) {
    const int chunks = (n + 15) / 16;
    to_chunks(x, n, 784, xk);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int ch = 0; ch < chunks; ch++) {
        block1_forward(xk + ch * 784 * 16, w1, b1, r1 + ch * 864 * 16, arg1 + ch * 864 * 16);
        block2_forward(r1 + ch * 864 * 16, w2, b2, r2 + ch * 256 * 16, arg2 + ch * 256 * 16);
    }
    from_chunks(r2, n, 256, f);
}

// The gradient at a ReLU(max-pool) output, sent to the window position that won: (4, ...) planes.
static inline void route(v16 g, v16 out, v16 which, v16 *g0, v16 *g1, v16 *g2, v16 *g3) {
    g = out > ZERO ? g : ZERO;
    *g0 = which == ZERO ? g : ZERO;
    *g1 = which == ZERO + 1 ? g : ZERO;
    *g2 = which == ZERO + 2 ? g : ZERO;
    *g3 = which == ZERO + 3 ? g : ZERO;
}

// gconv: (16 channels, 8, 8) per chunk, the gradient at conv2's output.
static void block2_route(const float *gfc, const float *r2c, const float *arg2c, float *gconvc) {
    for (int o = 0; o < 16; o++)
        for (int u = 0; u < 4; u++)
            for (int v = 0; v < 4; v++) {
                const int at = (o * 16 + u * 4 + v) * 16;
                v16 g0, g1, g2, g3;
                route(load(gfc + at), load(r2c + at), load(arg2c + at), &g0, &g1, &g2, &g3);
                float *gc = gconvc + (o * 64 + 2 * u * 8 + 2 * v) * 16;
                store(gc, g0);
                store(gc + 16, g1);
                store(gc + 8 * 16, g2);
                store(gc + 9 * 16, g3);
            }
}

// gr1 (chunk-major, like r1) = the gradient at block 1's output: conv2's input gradient.
static void block2_input_grad(const float *gconvc, const float *w2, float *gr1c) {
    for (int y = 0; y < 12; y++)
        for (int x = 0; x < 12; x++) {
            v16 acc[6] = {ZERO, ZERO, ZERO, ZERO, ZERO, ZERO};
            const int k0 = y > 7 ? y - 7 : 0, k1 = y < 4 ? y : 4;
            const int l0 = x > 7 ? x - 7 : 0, l1 = x < 4 ? x : 4;
            for (int o = 0; o < 16; o++)
                for (int k = k0; k <= k1; k++)
                    for (int l = l0; l <= l1; l++) {
                        const v16 g = load(gconvc + (o * 64 + (y - k) * 8 + (x - l)) * 16);
                        const float *w = w2 + o * 150 + k * 5 + l;
#pragma GCC unroll 6
                        for (int c = 0; c < 6; c++) acc[c] += w[c * 25] * g;
                    }
            for (int c = 0; c < 6; c++) store(gr1c + ((y * 12 + x) * 6 + c) * 16, acc[c]);
        }
}

// dw2 (16, 6, 5, 5) += the weight gradient of input channel c, summed over every chunk.
static void block2_weight_grad(const float *r1, const float *gconv, int chunks, int c, float *dw2) {
    for (int k = 0; k < 5; k++)
        for (int og = 0; og < 16; og += 4) {
            v16 acc[4][5];
            for (int o = 0; o < 4; o++)
                for (int l = 0; l < 5; l++) acc[o][l] = ZERO;
            for (int ch = 0; ch < chunks; ch++) {
                const float *r1c = r1 + ch * 864 * 16, *gc = gconv + ch * 1024 * 16;
                for (int y = 0; y < 8; y++)
                    for (int x = 0; x < 8; x++) {
                        v16 row[5];
#pragma GCC unroll 5
                        for (int l = 0; l < 5; l++)
                            row[l] = load(r1c + (((y + k) * 12 + x + l) * 6 + c) * 16);
#pragma GCC unroll 4
                        for (int o = 0; o < 4; o++) {
                            const v16 g = load(gc + ((og + o) * 64 + y * 8 + x) * 16);
#pragma GCC unroll 5
                            for (int l = 0; l < 5; l++) acc[o][l] += g * row[l];
                        }
                    }
            }
            for (int o = 0; o < 4; o++)
                for (int l = 0; l < 5; l++)
                    dw2[((og + o) * 6 + c) * 25 + k * 5 + l] += lanes_sum(acc[o][l]);
        }
}

// dw1 (6, 25), db1 (6) += block 1's gradients for channel c, from gr1, the gradient at its output.
static void block1_weight_grad(const float *xk, const float *gr1, const float *r1,
                               const float *arg1, int chunks, int c, float *dw1, float *db1) {
    v16 bias_sum = ZERO;
    for (int k = 0; k < 5; k++) {  // one kernel row at a time: its 5 sums stay in registers
        v16 a0 = ZERO, a1 = ZERO, a2 = ZERO, a3 = ZERO, a4 = ZERO;
        for (int ch = 0; ch < chunks; ch++) {
            const float *xc = xk + ch * 784 * 16;
            for (int i = 0; i < 12; i++)
                for (int j = 0; j < 12; j++) {
                    const int at = ch * 864 * 16 + ((i * 12 + j) * 6 + c) * 16;
                    v16 g0, g1, g2, g3;
                    route(load(gr1 + at), load(r1 + at), load(arg1 + at), &g0, &g1, &g2, &g3);
                    if (k == 0) bias_sum += g0 + g1 + g2 + g3;
                    const float *t = xc + ((2 * i + k) * 28 + 2 * j) * 16;  // window row k
                    const float *b = t + 28 * 16;                          // and row k + 1
                    const v16 t0 = load(t), t1 = load(t + 16), t2 = load(t + 32),
                              t3 = load(t + 48), t4 = load(t + 64), t5 = load(t + 80);
                    const v16 b0 = load(b), b1 = load(b + 16), b2 = load(b + 32),
                              b3 = load(b + 48), b4 = load(b + 64), b5 = load(b + 80);
                    a0 += g0 * t0 + g1 * t1 + g2 * b0 + g3 * b1;
                    a1 += g0 * t1 + g1 * t2 + g2 * b1 + g3 * b2;
                    a2 += g0 * t2 + g1 * t3 + g2 * b2 + g3 * b3;
                    a3 += g0 * t3 + g1 * t4 + g2 * b3 + g3 * b4;
                    a4 += g0 * t4 + g1 * t5 + g2 * b4 + g3 * b5;
                }
        }
        dw1[c * 25 + k * 5 + 0] += lanes_sum(a0);
        dw1[c * 25 + k * 5 + 1] += lanes_sum(a1);
        dw1[c * 25 + k * 5 + 2] += lanes_sum(a2);
        dw1[c * 25 + k * 5 + 3] += lanes_sum(a3);
        dw1[c * 25 + k * 5 + 4] += lanes_sum(a4);
    }
    db1[c] += lanes_sum(bias_sum);
}

// gf: (n, 256) rows, the gradient at the forward's f. Scratch: gfk (chunks, 256, 16),
// gconv (chunks, 1024, 16), gr1 (chunks, 864, 16). The four gradients are added to (zero them).
extern "C" void convs_backward(const float *gf, int n, const float *w2, const float *xk,
                               const float *r1, const float *arg1, const float *r2,
                               const float *arg2, float *gfk, float *gconv, float *gr1,
                               float *dw1, float *db1, float *dw2, float *db2, int threads) {
    const int chunks = (n + 15) / 16;
    to_chunks(gf, n, 256, gfk);
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
        for (int ch = 0; ch < chunks; ch++) {
            block2_route(gfk + ch * 256 * 16, r2 + ch * 256 * 16, arg2 + ch * 256 * 16,
                         gconv + ch * 1024 * 16);
            block2_input_grad(gconv + ch * 1024 * 16, w2, gr1 + ch * 864 * 16);
        }
        // each channel's sums are its own: no two threads write the same gradient
#pragma omp for schedule(static)
        for (int task = 0; task < 12; task++) {
            if (task < 6)
                block2_weight_grad(r1, gconv, chunks, task, dw2);
            else
                block1_weight_grad(xk, gr1, r1, arg1, chunks, task - 6, dw1, db1);
        }
    }
    for (int o = 0; o < 16; o++) {  // conv2's bias: the sum of its output's gradient
        v16 sum = ZERO;
        for (int ch = 0; ch < chunks; ch++)
            for (int yx = 0; yx < 64; yx++) sum += load(gconv + ((ch * 16 + o) * 64 + yx) * 16);
        db2[o] += lanes_sum(sum);
    }
}
