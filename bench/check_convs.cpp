// Checks convs.cpp's forward pass against plain scalar loops, for any target a compiler builds:
//   c++ -O2 -fopenmp -march=x86-64-v3 bench/check_convs.cpp -o /tmp/check && /tmp/check
//   aarch64-linux-gnu-g++ -O2 -static bench/check_convs.cpp -o /tmp/check-arm && qemu-aarch64 /tmp/check-arm
// (bench/check_isa.sh does every level and aarch64.) The Python tests check forward and backward
// against PyTorch's autograd at every x86-64 level the CPU runs; this is the check where there is no
// PyTorch: another architecture, run under an emulator.
#include "../src/lenet5/fast/convs.cpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

static float rnd(unsigned *s) { *s = *s * 1664525u + 1013904223u; return (*s >> 8) / 8388608.0f - 1.0f; }

// One image: conv (cin -> cout, 5x5, valid) + bias, 2x2 max-pool, ReLU; in and out (c, h, w).
static void block(const float *in, int cin, int h, const float *w, const float *b, int cout, float *out) {
    const int o = h - 4, p = o / 2;
    std::vector<float> conv(cout * o * o);
    for (int co = 0; co < cout; co++)
        for (int y = 0; y < o; y++)
            for (int x = 0; x < o; x++) {
                float s = b[co];
                for (int ci = 0; ci < cin; ci++)
                    for (int k = 0; k < 5; k++)
                        for (int l = 0; l < 5; l++)
                            s += w[((co * cin + ci) * 5 + k) * 5 + l] * in[(ci * h + y + k) * h + x + l];
                conv[(co * o + y) * o + x] = s;
            }
    for (int co = 0; co < cout; co++)
        for (int y = 0; y < p; y++)
            for (int x = 0; x < p; x++) {
                const float *c = &conv[(co * o + 2 * y) * o + 2 * x];
                float m = std::fmax(std::fmax(c[0], c[1]), std::fmax(c[o], c[o + 1]));
                out[(co * p + y) * p + x] = m > 0 ? m : 0;
            }
}

int main() {
    unsigned seed = 1;
    const int n = 37;  // not a multiple of any lane count
    std::vector<float> x(n * 784), w1(150), b1(6), w2(2400), b2(16), f(n * 256);
    for (auto *v : {&x, &w1, &b1, &w2, &b2})
        for (float &e : *v) e = rnd(&seed);
    const int chunks = (n + L - 1) / L;
    std::vector<float> xk(chunks * X * L), r1(chunks * R1 * L), a1(chunks * R1 * L),
        r2(chunks * R2 * L), a2(chunks * R2 * L);
    convs_forward(x.data(), n, w1.data(), b1.data(), w2.data(), b2.data(), xk.data(), r1.data(),
                  a1.data(), r2.data(), a2.data(), f.data(), 2);
    float worst = 0, largest = 0;
    std::vector<float> h1(R1), ref(R2);
    for (int i = 0; i < n; i++) {
        block(&x[i * 784], 1, 28, w1.data(), b1.data(), 6, h1.data());
        block(h1.data(), 6, 12, w2.data(), b2.data(), 16, ref.data());
        for (int j = 0; j < R2; j++) {
            worst = std::fmax(worst, std::fabs(ref[j] - f[i * R2 + j]));
            largest = std::fmax(largest, std::fabs(ref[j]));
        }
    }
    const bool ok = worst <= 1e-5f * largest;
    std::printf("convs_forward, %d lanes, %d images: max |difference| %.2e of max |value| %.2f: %s\n",
                convs_lanes(), n, worst, largest, ok ? "ok" : "WRONG");
    return ok ? 0 : 1;
}
