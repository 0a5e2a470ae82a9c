// LeNet-5's first block on the CPU: conv 1->6 5x5, max-pool 2, ReLU, forward and backward.
//
// oneDNN spends most of a CPU training step's time here: a convolution with one input channel and
// a 6-channel max-pool vectorise badly. These two loops put 16 images in the 16 lanes of a vector
// instead, so every multiply-add is a full vector and the pool is 3 compares. Built on first use
// by kernels.py (portable GCC/Clang vector extensions, no intrinsics); backprop.py falls back to
// torch's kernels when no compiler is at hand.
//
// Layout, "chunk-major": images in chunks of 16, each value followed by the same value of the
// other 15 images in its chunk.
//   x    (chunks, 28*28, 16)      input, normalised
//   out  (chunks, 12*12*6, 16)    relu(max over the 2x2 window of conv1), (i, j, c) order = NHWC
//   arg  (chunks, 12*12*6, 16)    which of the window's 4 positions won, 0..3 (first max wins,
//                                 row by row, exactly as torch's max_pool2d)
//   grad (chunks, 12*12*6, 16)    the loss's gradient with respect to `out`

typedef float v16 __attribute__((vector_size(64)));                          // in registers
typedef float v16u __attribute__((vector_size(64), aligned(4), may_alias));  // at any float

static inline v16 load(const float *p) { return *(const v16u *)p; }
static inline void store(float *p, v16 v) { *(v16u *)p = v; }

extern "C" void conv1_pool_relu_forward(const float *x, const float *weight, const float *bias,
                                        float *out, float *arg, int chunks) {
    for (int ch = 0; ch < chunks; ch++) {
        const float *xc = x + ch * 784 * 16;
        float *oc = out + ch * 864 * 16, *ac = arg + ch * 864 * 16;
        for (int i = 0; i < 12; i++)
            for (int j = 0; j < 12; j++) {
                v16 win[6][6];  // the 6x6 pixels the four 5x5 windows of this pooled output cover
#pragma GCC unroll 6
                for (int r = 0; r < 6; r++)
#pragma GCC unroll 6
                    for (int s = 0; s < 6; s++) win[r][s] = load(xc + ((2 * i + r) * 28 + 2 * j + s) * 16);
                for (int c = 0; c < 6; c++) {
                    const float *w = weight + c * 25;
                    const v16 zero = {};
                    v16 a0 = zero + bias[c], a1 = a0, a2 = a0, a3 = a0;  // the window's 4 positions
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
                    v16 m = a0, which = zero;  // strictly greater replaces: the first max wins
                    which = a1 > m ? zero + 1 : which; m = a1 > m ? a1 : m;
                    which = a2 > m ? zero + 2 : which; m = a2 > m ? a2 : m;
                    which = a3 > m ? zero + 3 : which; m = a3 > m ? a3 : m;
                    const int o = ((i * 12 + j) * 6 + c) * 16;
                    store(oc + o, m > zero ? m : zero);
                    store(ac + o, which);
                }
            }
    }
}

// dweight (6*25) and dbias (6) receive the sums over every image of the chunks given.
extern "C" void conv1_pool_relu_backward(const float *x, const float *grad, const float *out,
                                         const float *arg, float *dweight, float *dbias,
                                         int chunks) {
    const v16 zero = {};
    for (int c = 0; c < 6; c++) {
        v16 bias_sum = zero;
        for (int k = 0; k < 5; k++) {  // one kernel row at a time: its 5 sums stay in registers
            v16 a0 = zero, a1 = zero, a2 = zero, a3 = zero, a4 = zero;
            for (int ch = 0; ch < chunks; ch++) {
                const float *xc = x + ch * 784 * 16;
                for (int i = 0; i < 12; i++)
                    for (int j = 0; j < 12; j++) {
                        const int o = ch * 864 * 16 + ((i * 12 + j) * 6 + c) * 16;
                        const v16 which = load(arg + o);
                        const v16 g = load(out + o) > zero ? load(grad + o) : zero;  // ReLU's
                        if (k == 0) bias_sum += g;
                        // max-pool's gradient: all of it to the window position that won
                        const v16 g0 = which == zero ? g : zero, g1 = which == zero + 1 ? g : zero;
                        const v16 g2 = which == zero + 2 ? g : zero, g3 = which == zero + 3 ? g : zero;
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
            const v16 acc[5] = {a0, a1, a2, a3, a4};
            for (int l = 0; l < 5; l++) {
                float sum = 0;
                for (int q = 0; q < 16; q++) sum += acc[l][q];
                dweight[c * 25 + k * 5 + l] += sum;
            }
        }
        float sum = 0;
        for (int q = 0; q < 16; q++) sum += bias_sum[q];
        dbias[c] += sum;
    }
}
