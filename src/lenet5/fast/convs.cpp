// LeNet-5's convolution stack on the CPU, forward and backward:
//   conv1 1->6 5x5, max-pool 2, ReLU, conv2 6->16 5x5, max-pool 2, ReLU.
//
// At the seed's batch of 64, oneDNN spends most of a training step here: six and sixteen channels
// fill little of a vector. These loops put L images in the L lanes of the target's native vector
// instead (L = 16 with AVX-512, 8 with AVX2, 4 with SSE or NEON), so every multiply-add is a full
// vector whatever the channel count, and each max-pool is 3 compares and blends. The vectors are
// GCC/Clang vector extensions (no intrinsics) of exactly the native width: wider ones are split by
// the compiler, which then lowers their compares and selects to scalar code with branches.
// Built by native.py for each x86-64 level (or natively elsewhere); OpenMP, where the compiler
// has it, shares chunks and channels among `threads`.
//
// Layout inside, "chunk-major": images in chunks of L, each value followed by the same value of
// the other L - 1 images of its chunk; the lanes past the batch's last image hold zeros.
//   x    (chunks, 28*28, L)            the input
//   r1   (chunks, 12*12*6, L)          block 1's output, (i, j, c) order
//   r2   (chunks, 16*4*4, L)           block 2's output, (c, i, j) order: torch's flatten
//   arg  same shape as r1 / r2         which of its 2x2 window's positions won, 0..3: the first
//                                      maximum, row by row, exactly as torch's max_pool2d
// Rows of the (B, 784) input and of the (B, 256) output and its gradient are one image each.

#ifndef LANES  // the target's native vector, in floats
#if defined(__AVX512F__)
#define LANES 16
#elif defined(__AVX__)
#define LANES 8
#else
#define LANES 4  // SSE2 (every x86-64), NEON (every aarch64), or a generic target's 16-byte vector
#endif
#endif
enum { L = LANES };
// Output channels handled together in block 2: its accumulators stay in registers (32 vector
// registers with AVX-512, 16 on AVX2, SSE and the compilers' use of NEON's 32 is as wide as SSE)
enum { OG = L == 16 ? 4 : 2 };

typedef float vec __attribute__((vector_size(4 * L)));                          // in registers
typedef float vecu __attribute__((vector_size(4 * L), aligned(4), may_alias));  // at any float

static inline vec load(const float *p) { return *(const vecu *)p; }
static inline void store(float *p, vec v) { *(vecu *)p = v; }

static const vec ZERO = {};

// Sizes per image: the input, block 1's output, block 2's output, conv2's output
enum { X = 28 * 28, R1 = 12 * 12 * 6, R2 = 16 * 4 * 4, C2 = 16 * 8 * 8 };

extern "C" int convs_lanes(void) { return L; }

// max over a window's 4 positions (the first wins), then ReLU; `which` gets the winner
static inline vec pool_relu(vec a0, vec a1, vec a2, vec a3, vec *which) {
    vec m = a0, w = ZERO;
    w = a1 > m ? ZERO + 1 : w; m = a1 > m ? a1 : m;
    w = a2 > m ? ZERO + 2 : w; m = a2 > m ? a2 : m;
    w = a3 > m ? ZERO + 3 : w; m = a3 > m ? a3 : m;
    *which = w;
    return m > ZERO ? m : ZERO;
}

static float lanes_sum(vec v) {
    float s = 0;
    for (int q = 0; q < L; q++) s += v[q];
    return s;
}

static void to_chunks(const float *rows, int n, int width, float *out) {
    const int chunks = (n + L - 1) / L;
    for (int ch = 0; ch < chunks; ch++)
        for (int q = 0; q < L; q++) {
            const int b = ch * L + q;
            float *o = out + ch * width * L + q;
            if (b < n)
                for (int f = 0; f < width; f++) o[f * L] = rows[b * width + f];
            else
                for (int f = 0; f < width; f++) o[f * L] = 0;
        }
}

static void from_chunks(const float *chunked, int n, int width, float *rows) {
    for (int b = 0; b < n; b++) {
        const float *c = chunked + (b / L) * width * L + b % L;
        for (int f = 0; f < width; f++) rows[b * width + f] = c[f * L];
    }
}

static void block1_forward(const float *xc, const float *w1, const float *b1, float *r1c,
                           float *arg1c) {
    for (int i = 0; i < 12; i++)
        for (int j = 0; j < 12; j++) {
            vec win[6][6];  // the 6x6 pixels the 4 windows of this pooled output cover
#pragma GCC unroll 6
            for (int r = 0; r < 6; r++)
#pragma GCC unroll 6
                for (int s = 0; s < 6; s++)
                    win[r][s] = load(xc + ((2 * i + r) * 28 + 2 * j + s) * L);
            for (int c = 0; c < 6; c++) {
                const float *w = w1 + c * 25;
                vec a0 = ZERO + b1[c], a1 = a0, a2 = a0, a3 = a0;
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
                const int o = ((i * 12 + j) * 6 + c) * L;
                vec which;
                store(r1c + o, pool_relu(a0, a1, a2, a3, &which));
                store(arg1c + o, which);
            }
        }
}

static void block2_forward(const float *r1c, const float *w2, const float *b2, float *r2c,
                           float *arg2c) {
    for (int u = 0; u < 4; u++)
        for (int v = 0; v < 4; v++)
            for (int og = 0; og < 16; og += OG) {  // OG output channels x 4 window positions
                vec acc[OG][4];
                for (int o = 0; o < OG; o++)
                    for (int p = 0; p < 4; p++) acc[o][p] = ZERO + b2[og + o];
                for (int c = 0; c < 6; c++)
                    for (int r = 0; r < 6; r++) {  // one row of the 6x6 input the windows cover
                        vec row[6];
#pragma GCC unroll 6
                        for (int s = 0; s < 6; s++)
                            row[s] = load(r1c + (((2 * u + r) * 12 + 2 * v + s) * 6 + c) * L);
#pragma GCC unroll 4
                        for (int o = 0; o < OG; o++) {
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
                for (int o = 0; o < OG; o++) {
                    const int at = ((og + o) * 16 + u * 4 + v) * L;
                    vec which;
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
    const int chunks = (n + L - 1) / L;
    to_chunks(x, n, X, xk);
    // dynamic: when another process holds a core, the thread that has one takes the chunks left
#pragma omp parallel for num_threads(threads) schedule(dynamic)
    for (int ch = 0; ch < chunks; ch++) {
        block1_forward(xk + ch * X * L, w1, b1, r1 + ch * R1 * L, arg1 + ch * R1 * L);
        block2_forward(r1 + ch * R1 * L, w2, b2, r2 + ch * R2 * L, arg2 + ch * R2 * L);
    }
    from_chunks(r2, n, R2, f);
}

// The gradient at a ReLU(max-pool) output, sent to the window position that won: (4, ...) planes.
static inline void route(vec g, vec out, vec which, vec *g0, vec *g1, vec *g2, vec *g3) {
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
                const int at = (o * 16 + u * 4 + v) * L;
                vec g0, g1, g2, g3;
                route(load(gfc + at), load(r2c + at), load(arg2c + at), &g0, &g1, &g2, &g3);
                float *gc = gconvc + (o * 64 + 2 * u * 8 + 2 * v) * L;
                store(gc, g0);
                store(gc + L, g1);
                store(gc + 8 * L, g2);
                store(gc + 9 * L, g3);
            }
}

// gr1 (chunk-major, like r1) = the gradient at block 1's output: conv2's input gradient.
static void block2_input_grad(const float *gconvc, const float *w2, float *gr1c) {
    for (int y = 0; y < 12; y++)
        for (int x = 0; x < 12; x++) {
            vec acc[6] = {ZERO, ZERO, ZERO, ZERO, ZERO, ZERO};
            const int k0 = y > 7 ? y - 7 : 0, k1 = y < 4 ? y : 4;
            const int l0 = x > 7 ? x - 7 : 0, l1 = x < 4 ? x : 4;
            for (int o = 0; o < 16; o++)
                for (int k = k0; k <= k1; k++)
                    for (int l = l0; l <= l1; l++) {
                        const vec g = load(gconvc + (o * 64 + (y - k) * 8 + (x - l)) * L);
                        const float *w = w2 + o * 150 + k * 5 + l;
#pragma GCC unroll 6
                        for (int c = 0; c < 6; c++) acc[c] += w[c * 25] * g;
                    }
            for (int c = 0; c < 6; c++) store(gr1c + ((y * 12 + x) * 6 + c) * L, acc[c]);
        }
}

// dw2 (16, 6, 5, 5) += the weight gradient of input channel c, summed over every chunk.
static void block2_weight_grad(const float *r1, const float *gconv, int chunks, int c, float *dw2) {
    for (int k = 0; k < 5; k++)
        for (int og = 0; og < 16; og += OG) {
            vec acc[OG][5];
            for (int o = 0; o < OG; o++)
                for (int l = 0; l < 5; l++) acc[o][l] = ZERO;
            for (int ch = 0; ch < chunks; ch++) {
                const float *r1c = r1 + ch * R1 * L, *gc = gconv + ch * C2 * L;
                for (int y = 0; y < 8; y++)
                    for (int x = 0; x < 8; x++) {
                        vec row[5];
#pragma GCC unroll 5
                        for (int l = 0; l < 5; l++)
                            row[l] = load(r1c + (((y + k) * 12 + x + l) * 6 + c) * L);
#pragma GCC unroll 4
                        for (int o = 0; o < OG; o++) {
                            const vec g = load(gc + ((og + o) * 64 + y * 8 + x) * L);
#pragma GCC unroll 5
                            for (int l = 0; l < 5; l++) acc[o][l] += g * row[l];
                        }
                    }
            }
            for (int o = 0; o < OG; o++)
                for (int l = 0; l < 5; l++)
                    dw2[((og + o) * 6 + c) * 25 + k * 5 + l] += lanes_sum(acc[o][l]);
        }
}

// dw1 (6, 25), db1 (6) += block 1's gradients for channel c, from gr1, the gradient at its output.
static void block1_weight_grad(const float *xk, const float *gr1, const float *r1,
                               const float *arg1, int chunks, int c, float *dw1, float *db1) {
    vec bias_sum = ZERO;
    for (int k = 0; k < 5; k++) {  // one kernel row at a time: its 5 sums stay in registers
        vec a0 = ZERO, a1 = ZERO, a2 = ZERO, a3 = ZERO, a4 = ZERO;
        for (int ch = 0; ch < chunks; ch++) {
            const float *xc = xk + ch * X * L;
            for (int i = 0; i < 12; i++)
                for (int j = 0; j < 12; j++) {
                    const int at = ch * R1 * L + ((i * 12 + j) * 6 + c) * L;
                    vec g0, g1, g2, g3;
                    route(load(gr1 + at), load(r1 + at), load(arg1 + at), &g0, &g1, &g2, &g3);
                    if (k == 0) bias_sum += g0 + g1 + g2 + g3;
                    const float *t = xc + ((2 * i + k) * 28 + 2 * j) * L;  // window row k
                    const float *b = t + 28 * L;                          // and row k + 1
                    const vec t0 = load(t), t1 = load(t + L), t2 = load(t + 2 * L),
                              t3 = load(t + 3 * L), t4 = load(t + 4 * L), t5 = load(t + 5 * L);
                    const vec b0 = load(b), b1 = load(b + L), b2 = load(b + 2 * L),
                              b3 = load(b + 3 * L), b4 = load(b + 4 * L), b5 = load(b + 5 * L);
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

// gf: (n, 256) rows, the gradient at the forward's f. Scratch: gfk (chunks, 256, L),
// gconv (chunks, 1024, L), gr1 (chunks, 864, L). The four gradients are added to (zero them).
extern "C" void convs_backward(const float *gf, int n, const float *w2, const float *xk,
                               const float *r1, const float *arg1, const float *r2,
                               const float *arg2, float *gfk, float *gconv, float *gr1,
                               float *dw1, float *db1, float *dw2, float *db2, int threads) {
    const int chunks = (n + L - 1) / L;
    to_chunks(gf, n, R2, gfk);
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(dynamic)
        for (int ch = 0; ch < chunks; ch++) {
            block2_route(gfk + ch * R2 * L, r2 + ch * R2 * L, arg2 + ch * R2 * L, gconv + ch * C2 * L);
            block2_input_grad(gconv + ch * C2 * L, w2, gr1 + ch * R1 * L);
        }
        // each channel's sums are its own: no two threads write the same gradient
#pragma omp for schedule(dynamic)
        for (int task = 0; task < 12; task++) {
            if (task < 6)
                block2_weight_grad(r1, gconv, chunks, task, dw2);
            else
                block1_weight_grad(xk, gr1, r1, arg1, chunks, task - 6, dw1, db1);
        }
    }
    for (int o = 0; o < 16; o++) {  // conv2's bias: the sum of its output's gradient
        vec sum = ZERO;
        for (int ch = 0; ch < chunks; ch++)
            for (int yx = 0; yx < 64; yx++) sum += load(gconv + ((ch * 16 + o) * 64 + yx) * L);
        db2[o] += lanes_sum(sum);
    }
}

// ---- Training augmentation: random turns, scales, shears and bends (data.warp's arithmetic) ----
// Output pixel (i, j) sits at x = (2j + 1) / 28 - 1, y = (2i + 1) / 28 - 1. It samples the input
// at  A (x, y) + bend(x, y):  A = scale * [[cos, cos*shear - sin], [sin, sin*shear + cos]], bend a
// 4x4 grid of (dx, dy) spanning [-1, 1] interpolated bilinearly; bilinearly, paper (0) beyond the
// edge. params per image: turn, log scale, shear, unused, 16 dx, 16 dy (torch's (2, 4, 4) order).
#include <math.h>
#include <stdint.h>

static inline float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

static void warp_one(const uint8_t *in, const float *p, float *out) {
    // the input on paper: 2 pixels of 0 around it, so that every sample reads inside (no branches)
    float pad[32 * 32] = {};
    for (int i = 0; i < 28; i++)
        for (int j = 0; j < 28; j++) pad[(i + 2) * 32 + j + 2] = in[i * 28 + j];
    const float s = expf(p[1]), c = cosf(p[0]) * s, sn = sinf(p[0]) * s, sh = p[2];
    const float a00 = c, a01 = c * sh - sn, a10 = sn, a11 = sn * sh + c;
    float w[28][4] = {};  // pixel centres in the bend grid, bilinearly (data._bend_weights)
    for (int i = 0; i < 28; i++) {
        const float t = (2 * i + 1) / 28.0f * 1.5f;
        int k = (int)t; if (k > 2) k = 2;
        w[i][k] = 1 - (t - k);
        w[i][k + 1] = t - k;
    }
    for (int i = 0; i < 28; i++) {
        const float y = (2 * i + 1) / 28.0f - 1;
        float rx[4], ry[4];  // the bend grid's columns, interpolated to this row
        for (int l = 0; l < 4; l++) {
            rx[l] = ry[l] = 0;
            for (int k = 0; k < 4; k++) {
                rx[l] += w[i][k] * p[4 + k * 4 + l];
                ry[l] += w[i][k] * p[20 + k * 4 + l];
            }
        }
        for (int j = 0; j < 28; j++) {
            const float x = (2 * j + 1) / 28.0f - 1;
            const float bx = w[j][0] * rx[0] + w[j][1] * rx[1] + w[j][2] * rx[2] + w[j][3] * rx[3];
            const float by = w[j][0] * ry[0] + w[j][1] * ry[1] + w[j][2] * ry[2] + w[j][3] * ry[3];
            // the sample in the padded input's pixels; far outside it reads paper either way
            const float px = clampf(((a00 * x + a01 * y + bx + 1) * 28 - 1) * 0.5f + 2, 0, 30.5f);
            const float py = clampf(((a10 * x + a11 * y + by + 1) * 28 - 1) * 0.5f + 2, 0, 30.5f);
            const int x0 = (int)px, y0 = (int)py;  // px, py >= 0: truncation is floor
            const float wx = px - x0, wy = py - y0;
            const float *q = pad + y0 * 32 + x0;
            out[i * 28 + j] = (q[0] * (1 - wx) + q[1] * wx) * (1 - wy) + (q[32] * (1 - wx) + q[33] * wx) * wy;
        }
    }
}

extern "C" void warp_images(const uint8_t *in, int n, const float *params, float *out, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (n >= 32)
    for (int b = 0; b < n; b++) warp_one(in + b * 784, params + b * 36, out + b * 784);
}

// ---- Training batches: images picked by index and shifted, in one pass (data.take's arithmetic) ----
// out[b] = images[idx[b]] moved down dy and right dx (offsets[b] = (dy, dx)), paper (0) where it
// moved from beyond the edge; offsets NULL: no shift. A copy, so it equals torch's gather exactly.
// take_normalized: the same, written as data.normalize writes it, (v - sub) * mul in float (sub =
// 255 mean, mul = 1 / (255 std)): two roundings, as torch's sub_ then mul_ make them.
template <typename T, typename F>
static void take_one(const uint8_t *in, int dy, int dx, T *o, F put) {
    const T paper = put(0);
    if (dy == 0 && dx == 0) {  // no shift: one run of 784 pixels, in whole vectors
        for (int k = 0; k < 784; k++) o[k] = put(in[k]);
        return;
    }
    // the columns that come from the picture, [j0, j1); paper left and right of them
    const int j0 = dx > 0 ? (dx < 28 ? dx : 28) : 0, j1 = dx < 0 ? (28 + dx > 0 ? 28 + dx : 0) : 28;
    for (int i = 0; i < 28; i++, o += 28) {
        const int si = i - dy;
        if (si < 0 || si >= 28 || j0 >= j1) {
            for (int j = 0; j < 28; j++) o[j] = paper;
            continue;
        }
        const uint8_t *row = in + si * 28 - dx;
        for (int j = 0; j < j0; j++) o[j] = paper;
        for (int j = j0; j < j1; j++) o[j] = put(row[j]);
        for (int j = j1; j < 28; j++) o[j] = paper;
    }
}

// Split over the threads when there are enough images to pay for waking them (the batches made
// ahead, 2,048 at a time: half of this pass is waiting on memory, which a second core overlaps).
template <typename T, typename F>
static void take(const uint8_t *images, const int64_t *idx, int n, const int64_t *offsets, T *out, F put,
                 int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (n >= 256)
    for (int b = 0; b < n; b++) {
        const int dy = offsets ? (int)offsets[2 * b] : 0, dx = offsets ? (int)offsets[2 * b + 1] : 0;
        take_one(images + idx[b] * 784, dy, dx, out + (int64_t)b * 784, put);
    }
}

extern "C" void take_images(const uint8_t *images, const int64_t *idx, int n, const int64_t *offsets,
                            uint8_t *out, int threads) {
    take(images, idx, n, offsets, out, [](uint8_t v) { return v; }, threads);
}

extern "C" void take_normalized(const uint8_t *images, const int64_t *idx, int n, const int64_t *offsets,
                                float sub, float mul, float *out, int threads) {
    // a difference then a product: no fused multiply-add can join them, so the roundings are torch's
    take(images, idx, n, offsets, out, [=](uint8_t v) { return ((float)v - sub) * mul; }, threads);
}

// ---- Reading: the whole forward pass, one image at a time -------------------------------------
// Inference keeps nothing for a backward pass, and one digit must cost microseconds, so here each
// image goes through every layer on its own, in buffers that stay in L1: the vectors run along an
// output row (conv1), across the 16 output channels (conv2) and across the outputs of each fully
// connected layer. The weights come packed once by the caller (fast/forward.py), in this order:
//   w1 (6, 25), b1 (6)                      conv1 as torch has it
//   w2 (6*25, 16), b2 (16)                  conv2, output channel fastest
//   w3 (256, 128), b3 (128)                 fc1 transposed, outputs padded 120 -> 128 with zeros
//   w4 (120, 128), b4 (128)                 fc2 transposed, 84 -> 128
//   w5 (84, 64), b5 (64)                    fc3 transposed, 10 -> 64
enum { XW = 40 };                                   // a padded input row: conv1 reads 24 + 4 + slack
enum { NV1 = (24 + L - 1) / L };                    // vectors across one conv1 output row
enum { PW1 = 0, PB1 = PW1 + 150, PW2 = PB1 + 6, PB2 = PW2 + 2400, PW3 = PB2 + 16, PB3 = PW3 + 256 * 128,
       PW4 = PB3 + 128, PB4 = PW4 + 120 * 128, PW5 = PB4 + 128, PB5 = PW5 + 84 * 64, PACKED = PB5 + 64 };

extern "C" int lenet_packed_size(void) { return PACKED; }

static inline vec vmax(vec a, vec b) { return a > b ? a : b; }
static inline vec relu(vec a) { return a > ZERO ? a : ZERO; }

// conv1 -> max-pool -> ReLU: xp (28, XW) -> r1 (6, 12, 12)
static void read_block1(const float *xp, const float *w1, const float *b1, float *r1) {
    for (int c = 0; c < 6; c++) {
        const float *w = w1 + c * 25;
        for (int i = 0; i < 24; i += 2) {  // two output rows make one pooled row
            vec a[2][NV1];
            for (int v = 0; v < NV1; v++) a[0][v] = a[1][v] = ZERO + b1[c];
#pragma GCC unroll 6
            for (int k = 0; k < 6; k++)  // input row i + k feeds output row i (k < 5) and i + 1 (k > 0)
#pragma GCC unroll 5
                for (int l = 0; l < 5; l++)
#pragma GCC unroll 6
                    for (int v = 0; v < NV1; v++) {
                        const vec x = load(xp + (i + k) * XW + l + v * L);
                        if (k < 5) a[0][v] += w[k * 5 + l] * x;
                        if (k > 0) a[1][v] += w[(k - 1) * 5 + l] * x;
                    }
            float row[NV1 * L];
            for (int v = 0; v < NV1; v++) store(row + v * L, vmax(a[0][v], a[1][v]));
            float *out = r1 + (c * 12 + i / 2) * 12;
            for (int j = 0; j < 12; j++) {
                const float m = row[2 * j] > row[2 * j + 1] ? row[2 * j] : row[2 * j + 1];
                out[j] = m > 0 ? m : 0;
            }
        }
    }
}

// conv2 -> max-pool -> ReLU -> flatten: r1 (6, 12, 12) -> f (256) in torch's (c, i, j) order
static void read_block2(const float *r1, const float *w2, const float *b2, float *f) {
    enum { NO = 16 / L > 0 ? 16 / L : 1, QB = 4 };  // vectors across the 16 channels; columns at once
    static_assert(16 % L == 0, "16 output channels fill whole vectors");
    float c2[8 * 8 * 16];  // (i, j, channel)
    for (int y = 0; y < 8; y++)
        for (int x0 = 0; x0 < 8; x0 += QB) {
            vec acc[QB][NO];
            for (int q = 0; q < QB; q++)
                for (int o = 0; o < NO; o++) acc[q][o] = load(b2 + o * L);
            for (int c = 0; c < 6; c++)
                for (int k = 0; k < 5; k++) {
                    const float *in = r1 + (c * 12 + y + k) * 12 + x0;
#pragma GCC unroll 5
                    for (int l = 0; l < 5; l++) {
                        const float *w = w2 + ((c * 5 + k) * 5 + l) * 16;
                        vec wv[NO];
#pragma GCC unroll 4
                        for (int o = 0; o < NO; o++) wv[o] = load(w + o * L);
#pragma GCC unroll 4
                        for (int q = 0; q < QB; q++) {
                            const float s = in[l + q];
#pragma GCC unroll 4
                            for (int o = 0; o < NO; o++) acc[q][o] += s * wv[o];
                        }
                    }
                }
            for (int q = 0; q < QB; q++)
                for (int o = 0; o < NO; o++) store(c2 + (y * 8 + x0 + q) * 16 + o * L, acc[q][o]);
        }
    for (int o = 0; o < 16; o++)
        for (int u = 0; u < 4; u++)
            for (int v = 0; v < 4; v++) {
                const float *p = c2 + ((2 * u) * 8 + 2 * v) * 16 + o;
                float m = p[0];
                m = p[16] > m ? p[16] : m;
                m = p[128] > m ? p[128] : m;
                m = p[144] > m ? p[144] : m;
                f[o * 16 + u * 4 + v] = m > 0 ? m : 0;
            }
}

// y (NOUT, padded) = x (K) @ wt (K, NOUT) + b; ReLU if asked. Zeros in x (ReLU's) are skipped.
template <int K, int NOUT>
static void read_dense(const float *x, const float *wt, const float *b, float *y, bool relu_out) {
    enum { NV = NOUT / L, G = NV < 8 ? NV : 8 };
    static_assert(NOUT % L == 0 && NV % G == 0, "outputs fill whole groups of vectors");
    for (int g0 = 0; g0 < NV; g0 += G) {
        vec acc[G];
        for (int v = 0; v < G; v++) acc[v] = load(b + (g0 + v) * L);
        for (int k = 0; k < K; k++) {
            const float s = x[k];
            if (s == 0.0f) continue;
            const float *w = wt + k * NOUT + g0 * L;
#pragma GCC unroll 8
            for (int v = 0; v < G; v++) acc[v] += s * load(w + v * L);
        }
        for (int v = 0; v < G; v++) store(y + (g0 + v) * L, relu_out ? relu(acc[v]) : acc[v]);
    }
}

static void read_one(const uint8_t *pixels, const float *inputs, float scale, float shift,
                     const float *p, float *logits, float *features) {
    float xp[28 * XW] = {};
    if (pixels)
        for (int i = 0; i < 28; i++)
            for (int j = 0; j < 28; j++) xp[i * XW + j] = pixels[i * 28 + j] * scale + shift;
    else
        for (int i = 0; i < 28; i++)
            for (int j = 0; j < 28; j++) xp[i * XW + j] = inputs[i * 28 + j];
    float r1[6 * 12 * 12], f[256], h1[128], h2[128], z[64];
    read_block1(xp, p + PW1, p + PB1, r1);
    read_block2(r1, p + PW2, p + PB2, f);
    read_dense<256, 128>(f, p + PW3, p + PB3, h1, true);
    read_dense<120, 128>(h1, p + PW4, p + PB4, h2, true);
    read_dense<84, 64>(h2, p + PW5, p + PB5, z, false);
    for (int k = 0; k < 10; k++) logits[k] = z[k];
    if (features)
        for (int k = 0; k < 84; k++) features[k] = h2[k];
}

// n images: uint8 pixels (n, 784), normalised here as (p / 255 - mean) / std, or already
// normalised floats `inputs` (n, 784) when pixels is null. logits (n, 10); features (n, 84), the
// last hidden layer, or null.
extern "C" void lenet_read(const uint8_t *pixels, const float *inputs, int n, float mean, float std_,
                           const float *packed, float *logits, float *features, int threads) {
    const float scale = 1.0f / (255.0f * std_), shift = -mean / std_;
    if (threads <= 1 || n < 2 * threads) {  // a digit or a few: no thread team to start
        for (int b = 0; b < n; b++)
            read_one(pixels ? pixels + (long)b * 784 : nullptr, inputs ? inputs + (long)b * 784 : nullptr,
                     scale, shift, packed, logits + b * 10, features ? features + (long)b * 84 : nullptr);
        return;
    }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int b = 0; b < n; b++)
        read_one(pixels ? pixels + (long)b * 784 : nullptr, inputs ? inputs + (long)b * 784 : nullptr,
                 scale, shift, packed, logits + b * 10, features ? features + (long)b * 84 : nullptr);
}
