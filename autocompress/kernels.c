/* autocompress kernels: batch-1 act() of a compressed MLP or conv policy. C99, no malloc, nothing beyond libm.
 *
 * One source for two uses: the in-process C runtime (native.py compiles all of it into a shared
 * library) and the C export (export_c.py copies the part above the timing marker into policy.c).
 * Every layer runs one of four kernels, chosen per layer by measuring (native.py):
 *
 *   DENSE   y = b + x W, W fp32 input-major (in x out): the loop over outputs is contiguous and
 *           vectorises without reordering any sum;
 *   CSR     the kept fp32 weights only, grouped by input (ptr/idx/val);
 *   Q8      the artifact's codes one byte each (quant codes or codebook indices), input-major: a
 *           quarter of fp32's bytes; quant layers sum codes x inputs, then apply zero point and
 *           scale per output (the same values as decoded, summed in another order);
 *   INT8    integer arithmetic: inputs quantised per call to int8 (symmetric, one scale per
 *           tensor: max|x| / 127), int8 weights (the artifact's k-bit codes minus zero point),
 *           int32 accumulation, one fp32 scale per output row;
 *   PACKED  the artifact's own encoding (k-bit codes or codebook indices, optional bitmap of kept
 *           weights), decoded weight by weight as it is used: the smallest flash, exact fp32 values.
 *
 * Which kernels are compiled: every one for the in-process runtime; in the C export (which defines
 * ACZ_ONLY and ACZ_USE_<kernel> 1 for the kernels its layers run) only those, so that its flash holds
 * no code the policy never runs. The acz_ prefix keeps the functions out of a user's way.
 *
 * A conv layer (cv.oh > 0; activations flat C x H x W, its weight the out x (C·kh·kw) filter matrix)
 * runs one of three:
 *
 *   DENSE   direct convolution, fp32 filters output-major: per output channel and pixel, the sum over
 *           input channels and the kernel window, the window clipped to the image (the padding);
 *   IM2COL  the patch matrix (H'W' x C·kh·kw, 0 where padded) built in scratch, then one mat-vec
 *           per output pixel with the same fp32 filters;
 *   INT8    the whole layer input rounded to int8 with one scale (max|x| / 127), int8 filters,
 *           int32 sums per pixel and channel, one fp32 scale per output channel (layers.int8_conv_forward).
 *
 * An observation laid out H x W x C (in_c > 0) is transposed to C x H x W once, before layer 0.
 *
 * An int8 net may instead run integer-only as a whole (AczNet.iq, autocompress/intq.py): int8 activations
 * from the observation to the head, int32 sums (SMLAD where the core has it), fixed-point requantization,
 * activations by table; what a Cortex-M target runs for such a net (ACZ_IQ_ONLY: nothing else compiled). Its
 * conv layers (ACZ_IQ_CONV) run the same rows per output pixel over the pixel's int8 patch (acz_iq_conv).
 *
 * DENSE, CSR and PACKED compute the same fp32 sums (bias first, then over the inputs; compiled
 * with -ffast-math the compiler may reorder a sum, so results agree to float rounding); INT8
 * rounds the inputs, so its choice changes actions slightly, and it is recorded.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#ifndef ACZ_ONLY
#define ACZ_USE_DENSE 1
#define ACZ_USE_CSR 1
#define ACZ_USE_INT8 1
#define ACZ_USE_Q8 1
#define ACZ_USE_PACKED 1
#define ACZ_USE_CONV_DENSE 1
#define ACZ_USE_CONV_IM2COL 1
#define ACZ_USE_CONV_INT8 1
#define ACZ_USE_IQ 1
#define ACZ_IQ_LUT_ODD 1  /* the integer-only net's hidden activations (intq.activation_forms) */
#define ACZ_IQ_LUT 1
#define ACZ_IQ_RELU 1
#define ACZ_IQ_NONE 1
#define ACZ_IQ_W8 1  /* its weights a byte each, or 4 bits (intq.WEIGHT_FORMS) */
#define ACZ_IQ_W4 1
#define ACZ_IQ_CONV 1  /* its conv layers (an MLP's export leaves them out) */
#endif

#ifndef ACZ_ONLY  /* ACZ_USE_RNN */
#define ACZ_USE_RNN 1  /* the recurrent cell (a C export defines it only for a recurrent net) */
#endif  /* ACZ_USE_RNN */

enum { ACZ_DENSE = 0, ACZ_CSR = 1, ACZ_INT8 = 2, ACZ_Q8 = 3, ACZ_PACKED = 4, ACZ_IM2COL = 5 };
enum { ACZ_QUANT = 0, ACZ_CODEBOOK = 1 };
enum { ACZ_NONE = 0, ACZ_TANH = 1, ACZ_RELU = 2, ACZ_SILU = 3, ACZ_ELU = 4, ACZ_LEAKY_RELU = 5 };

typedef struct {
    int c, h, w;                        /* input channels, height, width (flat C x H x W) */
    int kh, kw, sh, sw;                 /* kernel, stride */
    int pt, pl;                         /* padding top, left (bottom, right: what oh, ow leave over) */
    int oh, ow;                         /* output height, width; 0: not a conv layer */
} AczConv;

typedef struct {
    int in, out, act, kind;             /* conv: in = C·kh·kw (the filter matrix's columns) */
    const float *b;                     /* NULL: no bias */
    const float *w;                     /* DENSE: in x wpad, input-major */
    int wpad;                           /* DENSE: out, or out rounded up with zero columns to whole blocks */
    const float *wt;                    /* DENSE: the last wpad % 8 outputs' weights again, output-major */
    const int32_t *ptr;                 /* CSR: ptr[in + 1] into idx (output index) and val */
    const uint16_t *idx;
    const float *val;
    const int8_t *q;                    /* INT8: out x in, output-major; qscale[out] */
    const float *qscale;
    const uint8_t *codes, *bitmap, *zero;   /* PACKED: output-major; bitmap NULL: every weight coded */
    const float *scale, *table;         /* quant: scale (and zero) per row if per_row else one; codebook: table */
    const uint8_t *codes8;              /* Q8: in x out, one code per weight (with scale, zero / table above) */
    int bits, qmin, enc, per_row;
    AczConv cv;                         /* conv layers: geometry; DENSE, IM2COL: w = out x in, output-major */
} AczLayer;

/* The integer-only int8 net (autocompress/intq.py: the arithmetic and its numpy mirror). Activations
 * are held widened: int16 where SMLAD reads them in pairs, else int32 (Thumb-1 loads a word with an
 * immediate offset, a signed byte or halfword only with a register one). */
#if defined(__ARM_FEATURE_SIMD32)
typedef int16_t acz_iqx_t;
#else
typedef int32_t acz_iqx_t;
#endif

typedef struct {
    int inpad, out, act, bits;          /* inpad: inputs rounded up to whole stored words (weights zero-padded) */
    const uint8_t *q;                   /* bits 8: bytes, weight + 128, w0 w2 w1 w3 a word; 4: nibbles, weight + 8
                                         * (intq.WEIGHT_FORMS); rows 4 at a time word by word (intq.interleave) */
    const int32_t *bias;                /* in the accumulator's scale */
    const int16_t *mult;                /* hidden: p = clamp((acc * mult 2^16 + half) >> (shift + 33), +-127); a */
    const int8_t *shift;                /* discrete head's output layer: the same, unclamped, to one scale */
    const int8_t *lut;                  /* hidden: activation over p = 0 .. 127 (odd: -lut[-p]) or -127 .. 127 */
    int lut_odd;                        /*   (by lut_odd); NULL: relu or none */
    const float *oscale;                /* a continuous head's output layer: acc * oscale */
#if ACZ_IQ_CONV
    AczConv cv;                         /* a conv layer's geometry (oh 0: a Linear layer); inpad: C·kh·kw padded */
#endif
} AczIQLayer;

typedef struct {
    int n_layers;
    const AczIQLayer *layers;
    const uint16_t *in_a;               /* x_q = round(obs a + c), normalisation folded in, in fixed point: */
    const int16_t *in_s;                /* a's 16-bit significand, its shift, c with ACZ_IQ_INPUT_FRAC */
    const int32_t *in_c;                /* fractional bits (acz_iq_input, intq.input_fixed) */
    acz_iqx_t *x0, *x1;                 /* scratch: activations, the widest padded input */
    int32_t *acc;                       /* scratch: the widest layer's accumulators */
#if ACZ_IQ_CONV
    int obs_h, obs_w, obs_c;            /* obs_c > 0: an H x W x C observation, made C x H x W once quantised */
    acz_iqx_t *cols;                    /* scratch: one output pixel's patch, the widest padded C·kh·kw */
#endif
} AczIQNet;

#if ACZ_USE_RNN
/* A recurrent cell (autocompress/recurrent.py: LSTM or GRU, G gates stacked as rows in PyTorch's order) that runs
 * after the first `at` layers: its input-to-hidden and hidden-to-hidden matrices are fp32 Linear layers of G·hidden
 * outputs (any kernel but INT8, which would round the cell's inputs), then the gate equations. Its state (h, then c
 * for an LSTM) lives in `state`, carried from one acz_act to the next, zeroed by acz_reset at an episode's start;
 * the layer after the cell reads h from there. Compiled (and, in a C export, written) for a recurrent net only. */
enum { ACZ_LSTM = 0, ACZ_GRU = 1 };
typedef struct {
    int cell, at, hidden;
    AczLayer ih, hh;
    float *state;                       /* hidden (GRU) or 2 x hidden (LSTM) values */
    float *gi, *gh;                     /* scratch: the two matrices' outputs (their padded width) */
} AczRnn;
#endif  /* ACZ_USE_RNN */

typedef struct {
    int n_layers, obs_dim, kind, act_dim, squash;  /* kind 0 discrete, 1 continuous; squash 0 clip, 1 tanh, 2 clip+map */
    const AczLayer *layers;
    const float *mean, *std, *low, *high;           /* mean/std NULL: no observation normalisation */
    float clip;                                     /* > 0: normalised observations clipped to [-clip, clip] */
    float *buf0, *buf1;                             /* scratch, the widest layer each */
    int8_t *qbuf;                                   /* scratch for INT8 inputs, the widest (conv: + C·kh·kw) */
    int in_h, in_w, in_c;                           /* in_c > 0: an H x W x C observation, made C x H x W */
    float *cols;                                    /* scratch for IM2COL's patch matrix (NULL: no IM2COL layer) */
    const AczIQNet *iq;                             /* non-NULL: the integer-only path runs instead of layers */
#if ACZ_USE_RNN
    const AczRnn *rnn;                              /* non-NULL: a recurrent cell runs after rnn->at layers */
#endif  /* ACZ_USE_RNN */
} AczNet;


#if ACZ_USE_PACKED
unsigned acz_code(const uint8_t *codes, long i, int bits) {
    long bit = i * bits;
    unsigned s = (unsigned)(bit & 7), v = codes[bit >> 3] >> s;
    if (s + (unsigned)bits > 8u) v |= (unsigned)codes[(bit >> 3) + 1] << (8u - s);
    return v & ((1u << bits) - 1u);
}
#endif

/* Outputs j0 .. j0+B-1 of a DENSE layer, their B sums held in registers over all inputs (B / 8
 * independent vector chains: a block of 8 waits on one FMA chain, hence the zero-padded columns). */
#define ACZ_DENSE_BLOCK(B)                                                  \
    for (; j0 + (B) <= L->wpad; j0 += (B)) {                                \
        float acc[B];                                                       \
        for (int j = 0; j < (B); j++) acc[j] = y[j0 + j];                   \
        for (int k = 0; k < L->in; k++) {                                   \
            const float xk = x[k];                                          \
            const float *w = L->w + (long)k * L->wpad + j0;                 \
            for (int j = 0; j < (B); j++) acc[j] += w[j] * xk;              \
        }                                                                   \
        for (int j = 0; j < (B); j++) y[j0 + j] = acc[j];                   \
    }

#if ACZ_USE_DENSE
void acz_dense(const AczLayer *L, const float *x, float *y) {
    int j0 = 0;
    ACZ_DENSE_BLOCK(64)
    ACZ_DENSE_BLOCK(32)
    ACZ_DENSE_BLOCK(8)
    for (int j = j0; j < L->wpad; j++) {  /* the last wpad % 8 outputs (e.g. a 2-action head): dot products */
        const float *wt = L->wt + (long)(j - j0) * L->in;
        float acc = y[j];
        for (int k = 0; k < L->in; k++) acc += wt[k] * x[k];
        y[j] = acc;
    }
}
#endif

#if ACZ_USE_CSR
void acz_csr(const AczLayer *L, const float *x, float *y) {
    for (int k = 0; k < L->in; k++) {
        const float xk = x[k];
        for (int32_t p = L->ptr[k]; p < L->ptr[k + 1]; p++) y[L->idx[p]] += L->val[p] * xk;
    }
}
#endif

/* A float the compiler must take as it is: under -ffast-math (the host build) it may otherwise turn
 * m / 127 into m * (1 / 127), sum * (s * qscale) into (sum * s) * qscale, or fuse b + sum * sq
 * into one FMA, each one rounding away from the numpy arithmetic the int8 kernels mirror
 * (layers.int8_forward): so the int8 kernels' results are bit for bit those of numpy. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define ACZ_OPAQUE(v) __asm__("" : "+x"(v))
#else
#define ACZ_OPAQUE(v) (void)(v)
#endif

#if ACZ_USE_INT8 || ACZ_USE_CONV_INT8
/* x[0 .. n-1] rounded to int8 with one scale max|x| / 127 into xq; returns that scale (0: all inputs 0). */
float acz_quantize(const float *x, int n, int8_t *xq) {
    float m = 0.0f;
    for (int k = 0; k < n; k++) m = fabsf(x[k]) > m ? fabsf(x[k]) : m;
    if (m == 0.0f) return 0.0f;
    const float inv = 127.0f / m;
    for (int k = 0; k < n; k++) {
        float v = rintf(x[k] * inv);
        xq[k] = (int8_t)(v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v));
    }
    float q = 127.0f;
    ACZ_OPAQUE(q);
    return m / q;
}
#endif

#if ACZ_USE_INT8 || ACZ_USE_CONV_INT8
/* int8 dot products, exact in int32 (|sum| <= 127 * 127 * n), up to 4 rows sharing one read of x.
 * The path (ACZ_I8_PATH) is the compiler's target (-march), fixed at build time like every instruction:
 *   3  AVX-512 VNNI: 32 products per vpdpbusd, which multiplies unsigned by signed bytes, so the weights
 *      are read as w ^ 0x80 = w + 128 (unsigned) and the 128 * sum x this adds is taken off once per call
 *      (acz_i8_offset);
 *   2  AVX2: 16 per vpmaddwd after sign extension to int16 (XNNPACK's qs8 way);
 *   1  SSE2 (every x86-64, so a build without -march): 8 per pmaddwd, the same way in 128 bits;
 *   0  elsewhere, or with -DACZ_PORTABLE: a plain loop.
 * The unsaturated forms only: vpmaddubsw's int16 pair sums would clip (MLAS keeps weights to 7 bits for
 * it); these need no change to the quantization grid. */
#if defined(ACZ_PORTABLE)
#define ACZ_I8_PATH 0
#elif defined(__AVX512VNNI__) && defined(__AVX512VL__) && defined(__AVX512BW__)
#define ACZ_I8_PATH 3
#elif defined(__AVX2__)
#define ACZ_I8_PATH 2
#elif defined(__SSE2__)
#define ACZ_I8_PATH 1
#else
#define ACZ_I8_PATH 0
#endif
#if ACZ_I8_PATH >= 2
#include <immintrin.h>
#elif ACZ_I8_PATH == 1
#include <emmintrin.h>
#endif
#define ACZ_I8_STEP (ACZ_I8_PATH == 3 ? 32 : ACZ_I8_PATH >= 1 ? 16 : 1)  /* bytes of x per step */
#if defined(__GNUC__)  /* inlined into its callers' row loops: the call costs ~15% of a 256-wide layer */
#define ACZ_INLINE static inline __attribute__((always_inline))
#else
#define ACZ_INLINE static inline
#endif

/* What acz_dot4_i8 over x[0 .. n) adds beyond the dot products (VNNI: 128 * the sum of x). */
static int32_t acz_i8_offset(const int8_t *x, int n) {
    int32_t s = 0;
#if ACZ_I8_PATH == 3
    for (int k = 0; k < n; k++) s += x[k];
#else
    (void)x; (void)n;
#endif
    return 128 * s;
}

/* One row's products of the inputs k .. n (past the last whole vector). */
static int32_t acz_dot_i8_tail(const int8_t *w, const int8_t *x, int k, int n) {
    int32_t acc = 0;
    for (; k < n; k++) acc += (int16_t)w[k] * (int16_t)x[k];
    return acc;
}

#if ACZ_I8_PATH == 3
#define ACZ_I8_X(p) _mm256_loadu_si256((const __m256i *)(const void *)(p))
#define ACZ_I8_MAC(a, w, xv) a = _mm256_dpbusd_epi32(a, _mm256_xor_si256(ACZ_I8_X(w), flip), xv)
#elif ACZ_I8_PATH == 2
#define ACZ_I8_X(p) _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(p)))
#define ACZ_I8_MAC(a, w, xv) a = _mm256_add_epi32(a, _mm256_madd_epi16(ACZ_I8_X(w), xv))
#elif ACZ_I8_PATH == 1
/* the low / high 8 bytes of v sign-extended to int16 (SSE2 has no pmovsxbw) */
#define ACZ_SX_LO(v) _mm_srai_epi16(_mm_unpacklo_epi8(v, v), 8)
#define ACZ_SX_HI(v) _mm_srai_epi16(_mm_unpackhi_epi8(v, v), 8)
#define ACZ_I8_MAC(a, w, xl, xh)                                                                      \
    do {                                                                                              \
        const __m128i w_ = _mm_loadu_si128((const __m128i *)(const void *)(w));                      \
        a = _mm_add_epi32(a, _mm_add_epi32(_mm_madd_epi16(ACZ_SX_LO(w_), xl), _mm_madd_epi16(ACZ_SX_HI(w_), xh))); \
    } while (0)
#endif

/* d[0..3]: the dot products of rows w, w + ld, w + 2 ld, w + 3 ld with x[0 .. n) (ld 0: one row, four
 * times); off: acz_i8_offset(x, n). */
ACZ_INLINE void acz_dot4_i8(const int8_t *w, long ld, const int8_t *x, int n, int32_t off, int32_t *d) {
    const int8_t *w0 = w, *w1 = w + ld, *w2 = w + 2 * ld, *w3 = w + 3 * ld;
    int k = 0;
#if ACZ_I8_PATH >= 2
#if ACZ_I8_PATH == 3
    const __m256i flip = _mm256_set1_epi8((char)0x80);
#endif
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (; k + ACZ_I8_STEP <= n; k += ACZ_I8_STEP) {
        const __m256i xv = ACZ_I8_X(x + k);
        ACZ_I8_MAC(a0, w0 + k, xv);
        ACZ_I8_MAC(a1, w1 + k, xv);
        ACZ_I8_MAC(a2, w2 + k, xv);
        ACZ_I8_MAC(a3, w3 + k, xv);
    }
#if ACZ_I8_PATH == 3
    if (k < n) {  /* the last n % 32 inputs by masked loads (bytes past n read as 0, never touched) */
        const __mmask32 m = (__mmask32)((1ull << (n - k)) - 1);
        const __m256i xv = _mm256_maskz_loadu_epi8(m, x + k);
        a0 = _mm256_dpbusd_epi32(a0, _mm256_xor_si256(_mm256_maskz_loadu_epi8(m, w0 + k), flip), xv);
        a1 = _mm256_dpbusd_epi32(a1, _mm256_xor_si256(_mm256_maskz_loadu_epi8(m, w1 + k), flip), xv);
        a2 = _mm256_dpbusd_epi32(a2, _mm256_xor_si256(_mm256_maskz_loadu_epi8(m, w2 + k), flip), xv);
        a3 = _mm256_dpbusd_epi32(a3, _mm256_xor_si256(_mm256_maskz_loadu_epi8(m, w3 + k), flip), xv);
        k = n;
    }
#endif
    /* the four rows' 8 lanes each, summed into one vector d0 d1 d2 d3 */
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(a0, a1), _mm256_hadd_epi32(a2, a3));
    _mm_storeu_si128((__m128i *)(void *)d, _mm_sub_epi32(_mm_add_epi32(_mm256_castsi256_si128(h),
                                                                        _mm256_extracti128_si256(h, 1)),
                                                          _mm_set1_epi32(off)));
#elif ACZ_I8_PATH == 1
    (void)off;
    __m128i a0 = _mm_setzero_si128(), a1 = a0, a2 = a0, a3 = a0;
    for (; k + 16 <= n; k += 16) {
        const __m128i xv = _mm_loadu_si128((const __m128i *)(const void *)(x + k));
        const __m128i xl = ACZ_SX_LO(xv), xh = ACZ_SX_HI(xv);
        ACZ_I8_MAC(a0, w0 + k, xl, xh);
        ACZ_I8_MAC(a1, w1 + k, xl, xh);
        ACZ_I8_MAC(a2, w2 + k, xl, xh);
        ACZ_I8_MAC(a3, w3 + k, xl, xh);
    }
    /* the four rows' 4 lanes each, summed into one vector d0 d1 d2 d3 (a 4x4 transpose by unpacks) */
    const __m128i s01 = _mm_add_epi32(_mm_unpacklo_epi32(a0, a1), _mm_unpackhi_epi32(a0, a1));
    const __m128i s23 = _mm_add_epi32(_mm_unpacklo_epi32(a2, a3), _mm_unpackhi_epi32(a2, a3));
    _mm_storeu_si128((__m128i *)(void *)d, _mm_add_epi32(_mm_unpacklo_epi64(s01, s23), _mm_unpackhi_epi64(s01, s23)));
#else
    (void)off;
    d[0] = d[1] = d[2] = d[3] = 0;
#endif
    if (k < n) {
        d[0] += acz_dot_i8_tail(w0, x, k, n);
        d[1] += acz_dot_i8_tail(w1, x, k, n);
        d[2] += acz_dot_i8_tail(w2, x, k, n);
        d[3] += acz_dot_i8_tail(w3, x, k, n);
    }
}

/* d[0 .. nr): rows w + i ld (nr <= 4; fewer than 4: the last out % 4 rows, one at a time). */
ACZ_INLINE void acz_dots_i8(const int8_t *w, long ld, int nr, const int8_t *x, int n, int32_t off, int32_t *d) {
    if (nr == 4) { acz_dot4_i8(w, ld, x, n, off, d); return; }
    int32_t e[4];
    for (int i = 0; i < nr; i++) {
        acz_dot4_i8(w + i * ld, 0, x, n, off, e);
        d[i] = e[0];
    }
}
#endif

#if ACZ_USE_INT8
void acz_int8(const AczLayer *L, const float *x, float *y, int8_t *xq) {
    const float s = acz_quantize(x, L->in, xq);
    if (s == 0.0f) return;                                 /* all inputs 0: y is the bias */
    const int32_t off = acz_i8_offset(xq, L->in);
    int32_t d[4];
    for (int j = 0; j < L->out; j += 4) {
        const int nr = L->out - j < 4 ? L->out - j : 4;
        acz_dots_i8(L->q + (long)j * L->in, L->in, nr, xq, L->in, off, d);
        for (int i = 0; i < nr; i++) {
            float sq = s * L->qscale[j + i];
            ACZ_OPAQUE(sq);
            float t = (float)d[i] * sq;
            ACZ_OPAQUE(t);  /* not fused into y's add */
            y[j + i] += t;
        }
    }
}
#endif

/* Outputs j0 .. j0+B-1 of a Q8 quant layer. With w = (c + off_j) * s_j (off_j = qmin - zero_j):
 * y_j += s_j * (sum_k c_jk x_k + off_j * sum_k x_k), so the inner loop is one convert + one FMA. */
#define ACZ_Q8_BLOCK(B)                                                                      \
    for (; j0 + (B) <= L->out; j0 += (B)) {                                                  \
        float acc[B];                                                                        \
        for (int j = 0; j < (B); j++) acc[j] = 0.0f;                                         \
        for (int k = 0; k < L->in; k++) {                                                    \
            const float xk = x[k];                                                           \
            const uint8_t *c = L->codes8 + (long)k * L->out + j0;                            \
            for (int j = 0; j < (B); j++) acc[j] += (float)c[j] * xk;                        \
        }                                                                                    \
        for (int j = 0; j < (B); j++) {                                                      \
            const int r = L->per_row ? j0 + j : 0;                                           \
            const float off = (float)L->qmin - (L->zero ? (float)L->zero[r] : 0.0f);         \
            y[j0 + j] += L->scale[r] * (acc[j] + off * xsum);                                \
        }                                                                                    \
    }

#if ACZ_USE_Q8
void acz_q8(const AczLayer *L, const float *x, float *y) {
    int j0 = 0;
    if (L->enc == ACZ_CODEBOOK) {                          /* table lookups: no blocking gains here */
        for (int k = 0; k < L->in; k++) {
            const float xk = x[k];
            const uint8_t *c = L->codes8 + (long)k * L->out;
            for (int j = 0; j < L->out; j++) y[j] += L->table[c[j]] * xk;
        }
        return;
    }
    float xsum = 0.0f;
    for (int k = 0; k < L->in; k++) xsum += x[k];
    ACZ_Q8_BLOCK(32)
    ACZ_Q8_BLOCK(8)
    ACZ_Q8_BLOCK(1)
}
#endif

#if ACZ_USE_PACKED
void acz_packed(const AczLayer *L, const float *x, float *y) {
    long n = 0;                                            /* index of the next stored code */
    for (int j = 0; j < L->out; j++) {
        const int r = L->per_row ? j : 0;
        const float s = L->enc == ACZ_QUANT ? L->scale[r] : 0.0f;
        const float z = (L->enc == ACZ_QUANT && L->zero) ? (float)L->zero[r] : 0.0f;
        float acc = y[j];
        for (int k = 0; k < L->in; k++) {
            const long i = (long)j * L->in + k;
            if (L->bitmap && !((L->bitmap[i >> 3] >> (i & 7)) & 1)) continue;
            const unsigned c = acz_code(L->codes, n++, L->bits);
            const float w = L->enc == ACZ_CODEBOOK ? L->table[c] : ((float)c + (float)L->qmin - z) * s;
            acc += w * x[k];
        }
        y[j] = acc;
    }
}
#endif


/* ---- conv layers: x flat C x H x W, y flat out x oh x ow, the bias per output channel included ---- */

#if ACZ_USE_CONV_DENSE
/* The outputs [*lo, *hi) (of n_out) whose window tap k reads inside an input of n pixels (stride s, padding pad). */
void acz_tap_range(int k, int pad, int s, int n, int n_out, int *lo, int *hi) {
    const int first = pad - k, last = n - 1 + pad - k;      /* o * s must lie in [first, last] */
    *lo = first > 0 ? (first + s - 1) / s : 0;
    *hi = last < 0 ? 0 : last / s + 1;
    if (*hi > n_out) *hi = n_out;
}

/* Direct convolution, the loops ordered so that the innermost runs along an output row (contiguous at
 * stride 1: it vectorises): each output sums bias, then its taps over (c, ky, kx) in the filter's order,
 * the taps outside the image (the padding) skipped. */
void acz_conv_direct(const AczLayer *L, const float *x, float *y) {
    const AczConv *g = &L->cv;
    const int hw = g->h * g->w, npix = g->oh * g->ow;
    for (int o = 0; o < L->out; o++) {
        float *yo = y + (long)o * npix;
        const float b = L->b ? L->b[o] : 0.0f;
        for (int p = 0; p < npix; p++) yo[p] = b;
        const float *wo = L->w + (long)o * L->in;
        for (int c = 0; c < g->c; c++)
            for (int ky = 0; ky < g->kh; ky++) {
                int y0, y1;
                acz_tap_range(ky, g->pt, g->sh, g->h, g->oh, &y0, &y1);
                for (int kx = 0; kx < g->kw; kx++) {
                    int x0, x1;
                    acz_tap_range(kx, g->pl, g->sw, g->w, g->ow, &x0, &x1);
                    const float wv = *wo++;
                    for (int oy = y0; oy < y1; oy++) {
                        const float *xr = x + (long)c * hw + (long)(oy * g->sh - g->pt + ky) * g->w + kx - g->pl;
                        float *yr = yo + (long)oy * g->ow;
                        if (g->sw == 1) for (int ox = x0; ox < x1; ox++) yr[ox] += wv * xr[ox];
                        else for (int ox = x0; ox < x1; ox++) yr[ox] += wv * xr[(long)ox * g->sw];
                    }
                }
            }
    }
}
#endif

/* Output pixel (oy, ox)'s patch: C·kh·kw values in the filter matrix's column order, 0 where padded
 * (a window wholly inside the image, as every 'valid' one is, copied without the bounds checks). */
#define ACZ_PATCH(T, g, x, oy, ox, row)                                                       \
    do {                                                                                      \
        const int iy_ = (oy) * (g)->sh - (g)->pt, ix_ = (ox) * (g)->sw - (g)->pl;             \
        T *r_ = (row);                                                                        \
        if (iy_ >= 0 && ix_ >= 0 && iy_ + (g)->kh <= (g)->h && ix_ + (g)->kw <= (g)->w) {    \
            for (int c_ = 0; c_ < (g)->c; c_++)                                               \
                for (int ky_ = 0; ky_ < (g)->kh; ky_++) {                                     \
                    const T *s_ = (x) + ((long)c_ * (g)->h + iy_ + ky_) * (g)->w + ix_;       \
                    for (int kx_ = 0; kx_ < (g)->kw; kx_++) *r_++ = s_[kx_];                  \
                }                                                                             \
            break;                                                                            \
        }                                                                                     \
        for (int c_ = 0; c_ < (g)->c; c_++)                                                   \
            for (int ky_ = 0; ky_ < (g)->kh; ky_++) {                                         \
                const int yy_ = iy_ + ky_;                                                    \
                for (int kx_ = 0; kx_ < (g)->kw; kx_++) {                                     \
                    const int xx_ = ix_ + kx_;                                                \
                    *r_++ = (yy_ >= 0 && yy_ < (g)->h && xx_ >= 0 && xx_ < (g)->w)            \
                        ? (x)[((long)c_ * (g)->h + yy_) * (g)->w + xx_] : (T)0;               \
                }                                                                             \
            }                                                                                 \
    } while (0)

#if ACZ_USE_CONV_IM2COL
void acz_conv_im2col(const AczLayer *L, const float *x, float *y, float *cols) {
    const AczConv *g = &L->cv;
    const int K = L->in, npix = g->oh * g->ow;
    for (int oy = 0; oy < g->oh; oy++)
        for (int ox = 0; ox < g->ow; ox++) ACZ_PATCH(float, g, x, oy, ox, cols + (long)(oy * g->ow + ox) * K);
    for (int p = 0; p < npix; p++) {
        const float *row = cols + (long)p * K;
        for (int o = 0; o < L->out; o++) {
            const float *wo = L->w + (long)o * K;
            float acc = L->b ? L->b[o] : 0.0f;
            for (int k = 0; k < K; k++) acc += wo[k] * row[k];
            y[(long)o * npix + p] = acc;
        }
    }
}
#endif

#if ACZ_USE_CONV_INT8
/* qbuf: the rounded input (C·H·W), then one pixel's int8 patch (C·kh·kw). */
void acz_conv_int8(const AczLayer *L, const float *x, float *y, int8_t *qbuf) {
    const AczConv *g = &L->cv;
    const int K = L->in, npix = g->oh * g->ow, n = g->c * g->h * g->w;
    int8_t *xq = qbuf, *patch = qbuf + n;
    const float s = acz_quantize(x, n, xq);
    for (int oy = 0; oy < g->oh; oy++)
        for (int ox = 0; ox < g->ow; ox++) {
            const int p = oy * g->ow + ox;
            if (s == 0.0f) {  /* all inputs 0: the bias */
                for (int o = 0; o < L->out; o++) y[(long)o * npix + p] = L->b ? L->b[o] : 0.0f;
                continue;
            }
            ACZ_PATCH(int8_t, g, xq, oy, ox, patch);
            const int32_t off = acz_i8_offset(patch, K);
            int32_t d[4];
            for (int o = 0; o < L->out; o += 4) {
                const int nr = L->out - o < 4 ? L->out - o : 4;
                acz_dots_i8(L->q + (long)o * K, K, nr, patch, K, off, d);
                for (int i = 0; i < nr; i++) {
                    float sq = s * L->qscale[o + i];
                    ACZ_OPAQUE(sq);
                    float t = (float)d[i] * sq;
                    ACZ_OPAQUE(t);  /* not fused into the bias's add */
                    y[(long)(o + i) * npix + p] = (L->b ? L->b[o + i] : 0.0f) + t;
                }
            }
        }
}
#endif

#if !ACZ_IQ_ONLY  /* the fp32 layer path (an integer-only export has none) */
/* Values a layer reads: C·H·W for a conv layer, `in` for a Linear one. */
int acz_in_size(const AczLayer *L) {
    return L->cv.oh > 0 ? L->cv.c * L->cv.h * L->cv.w : L->in;
}

/* A Linear layer: y = b + x W with the layer's kernel. */
void acz_linear(const AczLayer *L, const float *x, float *y, int8_t *qbuf) {
    (void)qbuf;  /* INT8's scratch: unused where the int8 kernel is not compiled */
    if (L->b) memcpy(y, L->b, sizeof(float) * (size_t)L->out); else memset(y, 0, sizeof(float) * (size_t)L->out);
    if (L->kind == ACZ_DENSE && L->wpad > L->out) memset(y + L->out, 0, sizeof(float) * (size_t)(L->wpad - L->out));
    switch (L->kind) {
#if ACZ_USE_CSR
        case ACZ_CSR: acz_csr(L, x, y); break;
#endif
#if ACZ_USE_INT8
        case ACZ_INT8: acz_int8(L, x, y, qbuf); break;
#endif
#if ACZ_USE_Q8
        case ACZ_Q8: acz_q8(L, x, y); break;
#endif
#if ACZ_USE_PACKED
        case ACZ_PACKED: acz_packed(L, x, y); break;
#endif
#if ACZ_USE_DENSE
        default: acz_dense(L, x, y);
#endif
    }
}

/* One layer: y = act(b + x W) (conv: b + x convolved with the filters) with the layer's kernel;
 * cols: IM2COL's scratch. */
void acz_layer(const AczLayer *L, const float *x, float *y, int8_t *qbuf, float *cols) {
    int n = L->out;
    (void)cols;  /* IM2COL's scratch: unused where no conv layer runs it */
    if (L->cv.oh == 0) acz_linear(L, x, y, qbuf);
    else {
        n *= L->cv.oh * L->cv.ow;
        switch (L->kind) {
#if ACZ_USE_CONV_IM2COL
            case ACZ_IM2COL: acz_conv_im2col(L, x, y, cols); break;
#endif
#if ACZ_USE_CONV_INT8
            case ACZ_INT8: acz_conv_int8(L, x, y, qbuf); break;
#endif
#if ACZ_USE_CONV_DENSE
            default: acz_conv_direct(L, x, y);
#endif
        }
    }
    if (L->act == ACZ_TANH) for (int j = 0; j < n; j++) y[j] = tanhf(y[j]);
    else if (L->act == ACZ_RELU) for (int j = 0; j < n; j++) y[j] = y[j] > 0.f ? y[j] : 0.f;
    else if (L->act == ACZ_SILU) for (int j = 0; j < n; j++) y[j] = y[j] / (1.f + expf(-y[j]));
    else if (L->act == ACZ_ELU) for (int j = 0; j < n; j++) y[j] = y[j] > 0.f ? y[j] : expm1f(y[j]);
    else if (L->act == ACZ_LEAKY_RELU) for (int j = 0; j < n; j++) y[j] = y[j] > 0.f ? y[j] : 0.01f * y[j];
}

#if ACZ_USE_RNN
/* recurrent.py's sigmoid: through tanh, it cannot overflow */
static float acz_sigmoid(float x) { return 0.5f * (1.0f + tanhf(0.5f * x)); }

/* One step of the cell on its input x: the state updated in place (recurrent.cell_step's equations; each
 * hidden unit reads only its own h and c, and gh was computed from h before any is written). */
void acz_rnn_step(const AczRnn *R, const float *x, int8_t *qbuf) {
    const int H = R->hidden;
    float *h = R->state, *c = R->state + H;
    const float *gi = R->gi, *gh = R->gh;
    acz_linear(&R->ih, x, R->gi, qbuf);
    acz_linear(&R->hh, h, R->gh, qbuf);
    if (R->cell == ACZ_GRU)
        for (int j = 0; j < H; j++) {
            const float r = acz_sigmoid(gi[j] + gh[j]), z = acz_sigmoid(gi[H + j] + gh[H + j]);
            const float n = tanhf(gi[2 * H + j] + r * gh[2 * H + j]);  /* r gates hh's n rows with their bias */
            h[j] = (1.0f - z) * n + z * h[j];
        }
    else
        for (int j = 0; j < H; j++) {
            const float i = acz_sigmoid(gi[j] + gh[j]), f = acz_sigmoid(gi[H + j] + gh[H + j]);
            c[j] = f * c[j] + i * tanhf(gi[2 * H + j] + gh[2 * H + j]);
            h[j] = acz_sigmoid(gi[3 * H + j] + gh[3 * H + j]) * tanhf(c[j]);
        }
}

/* An episode's start: the cell's state back to zeros (a feed-forward net has none). */
void acz_reset(const AczNet *net) {
    if (net->rnn)
        memset(net->rnn->state, 0, sizeof(float) * (size_t)net->rnn->hidden * (net->rnn->cell == ACZ_LSTM ? 2u : 1u));
}
#endif  /* ACZ_USE_RNN */

#endif

#if ACZ_USE_IQ
#if defined(__ARM_FEATURE_SIMD32) || defined(__ARM_FEATURE_SAT)
#include <arm_acle.h>
#endif
/* x_q = round(obs a + c) half away from zero, clamped to [-127, 127], in int32 from the fp32 bits alone
 * (intq.input_ints: t = m16 in_a >> (in_s - E), m16 obs's top 16 significand bits and E its biased exponent; a
 * zero / subnormal obs 0; a shift of 1 or less saturates, e.g. inf and NaN; then c added with obs's sign): no
 * floating point, so a core without an FPU links no soft-float for it, and one 16 x 16 multiply. */
#define ACZ_IQ_INPUT_FRAC 16        /* intq.INPUT_FRAC */
#define ACZ_IQ_INPUT_SAT (1 << 30)  /* intq.INPUT_SAT */
void acz_iq_input(const AczIQNet *iq, const float *obs, int n, acz_iqx_t *x) {
    const uint16_t *in_a = iq->in_a;
    const int16_t *in_s = iq->in_s;
    const int32_t *in_c = iq->in_c;
    for (int i = 0; i < n; i++) {
        const union { float f; uint32_t u; } bits = {obs[i]};  /* a word load: memcpy is a call on Thumb-1 */
        const uint32_t u = bits.u;
        const int biased = (int)((u >> 23) & 0xffu), shift = in_s[i] - biased;
        int32_t t = 0;
        if (biased) {
            if (shift <= 1)
                t = ACZ_IQ_INPUT_SAT;
            else if (shift < 32)
                t = (int32_t)(((((u & 0x7fffffu) | 0x800000u) >> 8) * (uint32_t)in_a[i]) >> shift);
        }
        const int32_t v = u >> 31 ? in_c[i] - t : in_c[i] + t;
        const uint32_t m = ((uint32_t)(v < 0 ? -v : v) + (1u << (ACZ_IQ_INPUT_FRAC - 1))) >> ACZ_IQ_INPUT_FRAC;
        const int r = m < 127 ? (int)m : 127;
        x[i] = (acz_iqx_t)(v < 0 ? -r : r);
    }
}

#if defined(__GNUC__)
#define ACZ_IQ_INLINE inline __attribute__((always_inline))
#else
#define ACZ_IQ_INLINE inline
#endif
#if defined(__GNUC__)
#define ACZ_IQ_OUT_OF_LINE __attribute__((noinline))
#else
#define ACZ_IQ_OUT_OF_LINE
#endif
/* s < 33 (a requantization multiplier of 1/4 or more, rare: a layer's sums are far finer than its outputs):
 * the whole 64-bit product and a variable 64-bit shift, a libgcc call on Thumb-1 and ~12 instructions
 * elsewhere, kept out of line so that each row epilogue carries a call rather than a copy (on the M4F's
 * [32, 32] int8 program 324 B of 4,416 of flash, at no cycle cost where the rows take the other path). */
static ACZ_IQ_OUT_OF_LINE int32_t acz_iq_scale_wide(int32_t acc, int32_t mh, int s) {
    return (int32_t)(((int64_t)acc * (mh * 65536) + ((int64_t)1 << (s - 1))) >> s);
}

/* round(acc * mult / 2^s), halves up (intq.requantize), with mult = mh 2^16 (its low 16 bits are zero:
 * intq.MULT_BITS; stored as mh) and s = sh + 33 (stored as sh); acz_iq_scale_hi: s >= 33, where only the
 * product's high word counts: floor((p + 2^(s-1)) / 2^s) = (hi + 2^(s-33)) >> (s-32) with hi = floor(p / 2^32)
 * = floor(acc mh / 2^16), since the low word adds less than 1 to an integer numerator. Thumb-1 has no 32 x 32
 * -> 64 multiply (libgcc's is a call of ~60 cycles); there hi = ah mh + (al mh >> 16) with acc = ah 2^16 + al
 * (al unsigned): two 16 x 16 products, neither overflowing. */
static ACZ_IQ_INLINE int32_t acz_iq_scale_hi(int32_t acc, int32_t mh, int sh) {
#if defined(__ARM_ARCH_ISA_THUMB) && __ARM_ARCH_ISA_THUMB == 1 || defined(ACZ_MULHI_16)
    const int32_t hi = (acc >> 16) * mh + (int32_t)((((uint32_t)acc & 0xffffu) * (uint32_t)mh) >> 16);
#else
    const int32_t hi = (int32_t)(((int64_t)acc * mh) >> 16);
#endif
    return ((hi >> sh) + 1) >> 1;  /* = (hi + 2^(s-33)) >> (s-32) */
}

static int32_t acz_iq_scale(int32_t acc, int32_t mh, int sh) {
    return sh < 0 ? acz_iq_scale_wide(acc, mh, sh + 33) : acz_iq_scale_hi(acc, mh, sh);
}

#define ACZ_IQ_CLAMP(p) ((p) > 127 ? 127 : ((p) < -127 ? -127 : (p)))

/* What a layer's row loop makes of each row's sum (a constant where the loop is inlined: one copy of the loop
 * per form the net runs, each requantizing and activating a row as soon as its sum is in registers). */
enum { ACZ_IQ_ACC, ACZ_IQ_OUT_RELU, ACZ_IQ_OUT_NONE, ACZ_IQ_OUT_LUT, ACZ_IQ_OUT_LUT_ODD };

/* acz_iq_scale with row j's multiplier and shift, both loaded unsigned: Thumb-1 loads a signed halfword or
 * byte only with a register offset, an unsigned one with an immediate offset (row j of a group: base + j). mh
 * is never negative; a negative sh (>= -32) reads as 256 + sh. */
static ACZ_IQ_INLINE int32_t acz_iq_scale_row(const uint16_t *mult, const uint8_t *shift, int k, int32_t acc) {
    const int32_t mh = mult[k];
    const unsigned sh = shift[k];
    return sh < 224 ? acz_iq_scale_hi(acc, mh, (int)sh) : acz_iq_scale_wide(acc, mh, (int)sh - 256 + 33);
}

/* A hidden row's activation from its sum: requantized, clamped to +-127, activated (intq.forward). */
static ACZ_IQ_INLINE int32_t acz_iq_act(const AczIQLayer *L, int form, const uint16_t *mult, const uint8_t *shift,
                                        int k, int32_t acc) {
    if (form == ACZ_IQ_OUT_RELU) {
#if defined(__ARM_FEATURE_SAT)
        return (int32_t)__usat(acz_iq_scale_row(mult, shift, k, acc), 7);  /* p clamped to [0, 127]: 1 instruction */
#else
        /* acc <= 0 rounds to p <= 0 (halves up), which relu makes 0: no requantization for it */
        if (acc <= 0)
            return 0;
        const int32_t p = acz_iq_scale_row(mult, shift, k, acc);
        return p > 127 ? 127 : p;
#endif
    }
    const int32_t p = acz_iq_scale_row(mult, shift, k, acc);
    if (form == ACZ_IQ_OUT_LUT_ODD) {  /* -lut[-v] below 0: |p| clamped, then the sign (fewer branches) */
        const int32_t m = p < 0 ? -p : p, t = L->lut[m > 127 ? 127 : m];
        return p < 0 ? -t : t;
    }
    const int32_t v = ACZ_IQ_CLAMP(p);
    return form == ACZ_IQ_OUT_LUT ? L->lut[v + 127] : v;
}

/* The integer-only net's weights are stored unsigned (+ 128 as bytes, or + 8 as nibbles where every code is
 * within [-8, 7]; intq.WEIGHT_FORMS), rows four at a time word by word, then the rows left over one by one
 * (intq.interleave); the offset times the inputs' sum is taken off once per row (`off`), so a core without
 * SMLAD loads every weight as an unsigned byte with an immediate offset. acc[j] = bias[j] - off +
 * sum_k (stored w_jk) x_k. ACZ_IQ_ROWS is the row loop every form runs: STEP inputs to a stored word, GROUPS
 * adding every word of inputs x .. end to four rows' sums a0..a3 (each input word loaded once for the four;
 * ACZ_IQ_WORDS over a GROUP of one word), ONE one word to a left-over row's sum a. */
#define ACZ_IQ_ROWS(STEP, GROUPS, ONE) do { \
    const uint8_t *w = L->q; \
    const acz_iqx_t *end = x + L->inpad; \
    int j = 0; \
    for (; j + 4 <= L->out; j += 4) { \
        int32_t a0 = L->bias[j] - off, a1 = L->bias[j + 1] - off, a2 = L->bias[j + 2] - off; \
        int32_t a3 = L->bias[j + 3] - off; \
        GROUPS; \
        ACZ_IQ_EMIT(j, 0, a0); ACZ_IQ_EMIT(j, 1, a1); ACZ_IQ_EMIT(j, 2, a2); ACZ_IQ_EMIT(j, 3, a3); \
    } \
    for (; j < L->out; j++) { \
        int32_t a = L->bias[j] - off; \
        for (const acz_iqx_t *xp = x; xp < end; xp += STEP, w += 4) ONE; \
        ACZ_IQ_EMIT(j, 0, a); \
    } \
} while (0)
#define ACZ_IQ_WORDS(STEP, GROUP) do { \
    const acz_iqx_t *xp = x; \
    do { GROUP; xp += STEP; w += 16; } while (xp < end);  /* at least one word: inpad >= STEP */ \
} while (0)
/* Row j's sum a: kept (ACZ_IQ_ACC), or activated into next, summed for the next layer's offset. */
#define ACZ_IQ_EMIT(j, k, a) do { \
    if (form == ACZ_IQ_ACC) acc[j + k] = a; \
    else sum += next[j + k] = (acz_iqx_t)acz_iq_act(L, form, (const uint16_t *)L->mult + j, \
                                                    (const uint8_t *)L->shift + j, k, a); \
} while (0)
#if defined(__ARM_FEATURE_SIMD32)
/* With SMLAD, per row and word: one weight load; its lanes masked out, each multiplied with an input pair. */
#define ACZ_IQ_SIMD_GROUP(LOADX, MAC) { \
    uint32_t w0, w1, w2, w3; \
    LOADX(xp); \
    memcpy(&w0, w, 4); memcpy(&w1, w + 4, 4); memcpy(&w2, w + 8, 4); memcpy(&w3, w + 12, 4); \
    MAC(a0, w0); MAC(a1, w1); MAC(a2, w2); MAC(a3, w3); \
}
#define ACZ_IQ_SIMD_ONE(LOADX, MAC) { uint32_t wv; LOADX(xp); memcpy(&wv, w, 4); MAC(a, wv); }
#endif

#if ACZ_IQ_W8
#if defined(__ARM_FEATURE_SIMD32)
/* 8-bit, w0 w2 w1 w3 a word: the even bytes (w0, w1) and the odd bytes (w2, w3) zero-extended to 16 bits by
 * one AND each (the mask in a register, so the odd bytes' shift folds into that AND), two SMLADs with the
 * input pairs (x0, x1) and (x2, x3). */
#define ACZ_IQ_MAC8(a, wv) (a = __smlad((wv) & m, x01, __smlad(((wv) >> 8) & m, x23, a)))
#define ACZ_IQ_X4(xp) uint32_t x01, x23; memcpy(&x01, xp, 4); memcpy(&x23, xp + 2, 4)
static ACZ_IQ_INLINE int32_t acz_iq_dense8(const AczIQLayer *L, const acz_iqx_t *x, int32_t off, int form,
                                            int32_t *acc, acz_iqx_t *next) {
    int32_t sum = 0;
    uint32_t m = 0x00ff00ffu;
    __asm__("" : "+r"(m));  /* opaque: an immediate mask would cost the odd bytes a separate shift */
    ACZ_IQ_ROWS(4, ACZ_IQ_WORDS(4, ACZ_IQ_SIMD_GROUP(ACZ_IQ_X4, ACZ_IQ_MAC8)),
                ACZ_IQ_SIMD_ONE(ACZ_IQ_X4, ACZ_IQ_MAC8));
    return sum;
}
#else
/* 8-bit without SMLAD: per input one load, then a byte load, multiply and add per row (Thumb-1 holds the four
 * sums, the input, the product and both pointers in its eight low registers). */
#define ACZ_IQ_GROUP8 { \
    int32_t v = xp[0]; \
    a0 += w[0] * v; a1 += w[4] * v; a2 += w[8] * v; a3 += w[12] * v; \
    v = xp[1]; \
    a0 += w[2] * v; a1 += w[6] * v; a2 += w[10] * v; a3 += w[14] * v; \
    v = xp[2]; \
    a0 += w[1] * v; a1 += w[5] * v; a2 += w[9] * v; a3 += w[13] * v; \
    v = xp[3]; \
    a0 += w[3] * v; a1 += w[7] * v; a2 += w[11] * v; a3 += w[15] * v; \
}
#if defined(__ARM_ARCH_ISA_THUMB) && __ARM_ARCH_ISA_THUMB == 1 && defined(__GNUC__)
/* Thumb-1 with GCC: the same loop (ACZ_IQ_WORDS over ACZ_IQ_GROUP8) in assembly, its registers pinned: the four
 * sums, both pointers, the input and the product in the eight low registers, the end in a high one (CMP reads it
 * there). GCC's allocation keeps the end on the stack (2 cycles a word) and, as the code around the loop
 * changes, moves a sum to a high register (1 more cycle per MAC on it); LDMIA loads an input and steps its
 * pointer in 2 cycles. At least one word: inpad >= 4. Unified syntax: GCC hands Thumb-1 inline assembly over in
 * divided syntax. */
#define ACZ_IQ_T1_MAC(a, k) "ldrb %[t], [%[w], #" #k "]\n\tmuls %[t], %[v]\n\tadds %[" #a "], %[t]\n\t"
#define ACZ_IQ_T1_INPUT(k0, k1, k2, k3) "ldmia %[xp]!, {%[v]}\n\t" \
    ACZ_IQ_T1_MAC(a0, k0) ACZ_IQ_T1_MAC(a1, k1) ACZ_IQ_T1_MAC(a2, k2) ACZ_IQ_T1_MAC(a3, k3)
#define ACZ_IQ_GROUPS8 do { \
    const acz_iqx_t *xp = x; \
    int32_t v, t; \
    __asm__(".syntax unified\n1:\n\t" ACZ_IQ_T1_INPUT(0, 4, 8, 12) ACZ_IQ_T1_INPUT(2, 6, 10, 14) \
            ACZ_IQ_T1_INPUT(1, 5, 9, 13) ACZ_IQ_T1_INPUT(3, 7, 11, 15) "adds %[w], #16\n\tcmp %[xp], %[end]\n\tbne 1b" \
            : [a0] "+l"(a0), [a1] "+l"(a1), [a2] "+l"(a2), [a3] "+l"(a3), [w] "+l"(w), [xp] "+l"(xp), \
              [v] "=&l"(v), [t] "=&l"(t) \
            : [end] "h"(end) : "cc", "memory"); \
} while (0)
#else
#define ACZ_IQ_GROUPS8 ACZ_IQ_WORDS(4, ACZ_IQ_GROUP8)
#endif
#define ACZ_IQ_ONE8 (a += w[0] * xp[0] + w[2] * xp[1] + w[1] * xp[2] + w[3] * xp[3])
static ACZ_IQ_INLINE int32_t acz_iq_dense8(const AczIQLayer *L, const acz_iqx_t *x, int32_t off, int form,
                                            int32_t *acc, acz_iqx_t *next) {
    int32_t sum = 0;
    ACZ_IQ_ROWS(4, ACZ_IQ_GROUPS8, ACZ_IQ_ONE8);
    return sum;
}
#endif
#endif

#if ACZ_IQ_W4
#if defined(__ARM_FEATURE_SIMD32)
/* 4-bit, w0 w2 w4 w6 w1 w3 w5 w7 a word (the lower nibble of each byte first): the word shifted by 0, 4, 8, 12
 * and masked to nibbles 0 and 4 holds (w0, w1), (w2, w3), (w4, w5), (w6, w7), each one SMLAD with an input
 * pair: one load feeds 8 MACs. */
#define ACZ_IQ_MAC4(a, wv) (a = __smlad((wv) & m, x01, __smlad(((wv) >> 4) & m, x23, \
                                __smlad(((wv) >> 8) & m, x45, __smlad(((wv) >> 12) & m, x67, a)))))
#define ACZ_IQ_X8(xp) uint32_t x01, x23, x45, x67; \
    memcpy(&x01, xp, 4); memcpy(&x23, xp + 2, 4); memcpy(&x45, xp + 4, 4); memcpy(&x67, xp + 6, 4)
static ACZ_IQ_INLINE int32_t acz_iq_dense4(const AczIQLayer *L, const acz_iqx_t *x, int32_t off, int form,
                                            int32_t *acc, acz_iqx_t *next) {
    int32_t sum = 0;
    uint32_t m = 0x000f000fu;
    __asm__("" : "+r"(m));  /* opaque, as in acz_iq_dense8 */
    ACZ_IQ_ROWS(8, ACZ_IQ_WORDS(8, ACZ_IQ_SIMD_GROUP(ACZ_IQ_X8, ACZ_IQ_MAC4)),
                ACZ_IQ_SIMD_ONE(ACZ_IQ_X8, ACZ_IQ_MAC4));
    return sum;
}
#else
/* 4-bit without SMLAD: byte p of a row's word holds the codes of inputs (p & 1) * 4 + (p >> 1) (low nibble)
 * and 2 further (high); per byte position the two inputs are loaded once for four rows. A loop, not unrolled:
 * Thumb-1 flash. */
#define ACZ_IQ_XL(p) (xp + ((p) & 1) * 4 + ((p) >> 1))  /* the low nibble's input; the high one's is 2 on */
#define ACZ_IQ_GROUP4 for (int p = 0; p < 4; p++) { \
    const int32_t lo = ACZ_IQ_XL(p)[0], hi = ACZ_IQ_XL(p)[2]; \
    a0 += (w[p] & 15) * lo + (w[p] >> 4) * hi; \
    a1 += (w[p + 4] & 15) * lo + (w[p + 4] >> 4) * hi; \
    a2 += (w[p + 8] & 15) * lo + (w[p + 8] >> 4) * hi; \
    a3 += (w[p + 12] & 15) * lo + (w[p + 12] >> 4) * hi; \
}
#define ACZ_IQ_ONE4 for (int p = 0; p < 4; p++) a += (w[p] & 15) * ACZ_IQ_XL(p)[0] + (w[p] >> 4) * ACZ_IQ_XL(p)[2]
static ACZ_IQ_INLINE int32_t acz_iq_dense4(const AczIQLayer *L, const acz_iqx_t *x, int32_t off, int form,
                                            int32_t *acc, acz_iqx_t *next) {
    int32_t sum = 0;
    ACZ_IQ_ROWS(8, ACZ_IQ_WORDS(8, ACZ_IQ_GROUP4), ACZ_IQ_ONE4);
    return sum;
}
#endif
#endif

/* One layer in the stored form's kernel (an export compiles only its own), `form` a constant: ACZ_IQ_ACC
 * leaves acc = the layer's bias + its weights times x; any other form writes the next layer's activations to
 * next and returns their sum. sum: of x, times the weights' offset (128 or 8), is what the unsigned storage
 * added. */
static ACZ_IQ_INLINE int32_t acz_iq_layer(const AczIQLayer *L, const acz_iqx_t *x, int32_t sum, int form,
                                          int32_t *acc, acz_iqx_t *next) {
#if ACZ_IQ_W4
    if (L->bits == 4)
        return acz_iq_dense4(L, x, 8 * sum, form, acc, next);
#endif
#if ACZ_IQ_W8
    return acz_iq_dense8(L, x, 128 * sum, form, acc, next);
#else
    return 0;
#endif
}

/* acz_iq_layer, one function per form the net runs (out of line: the row loop gets every register). */
#if defined(__GNUC__)
#define ACZ_IQ_NOINLINE __attribute__((noinline))
#else
#define ACZ_IQ_NOINLINE
#endif
#define ACZ_IQ_LAYER_FORM(NAME, FORM) \
    static ACZ_IQ_NOINLINE int32_t NAME(const AczIQLayer *L, const acz_iqx_t *x, int32_t sum, int32_t *acc, \
                                        acz_iqx_t *next) { return acz_iq_layer(L, x, sum, FORM, acc, next); }
ACZ_IQ_LAYER_FORM(acz_iq_layer_acc, ACZ_IQ_ACC)
#if ACZ_IQ_RELU
ACZ_IQ_LAYER_FORM(acz_iq_layer_relu, ACZ_IQ_OUT_RELU)
#endif
#if ACZ_IQ_NONE
ACZ_IQ_LAYER_FORM(acz_iq_layer_none, ACZ_IQ_OUT_NONE)
#endif
#if ACZ_IQ_LUT
ACZ_IQ_LAYER_FORM(acz_iq_layer_lut, ACZ_IQ_OUT_LUT)
#endif
#if ACZ_IQ_LUT_ODD
ACZ_IQ_LAYER_FORM(acz_iq_layer_lut_odd, ACZ_IQ_OUT_LUT_ODD)
#endif

/* A hidden layer's outputs OUT(j) (an lvalue: next[j] for a Linear layer, channel j of a conv layer's output
 * pixel) from its accumulators acc[j], j < L->out: requantize, clamp to +-127, activate, each added to `sum`
 * (the next layer's offset term). One pass per activation form, each compiled where the net has it
 * (ACZ_IQ_<FORM>). A conv layer's pass (a Linear layer activates in its row loop: acz_iq_layer_<form>); macros,
 * so OUT is any lvalue. */
#if ACZ_IQ_LUT_ODD
#define ACZ_IQ_ACT_LUT_ODD(OUT) } else if (L->lut && L->lut_odd) { \
    for (j = 0; j < L->out; j++) { \
        const int32_t p = acz_iq_scale(acc[j], L->mult[j], L->shift[j]), v = ACZ_IQ_CLAMP(p); \
        sum += OUT(j) = (acz_iqx_t)(v < 0 ? -L->lut[-v] : L->lut[v]); \
    }
#else
#define ACZ_IQ_ACT_LUT_ODD(OUT)
#endif
#if ACZ_IQ_LUT
#define ACZ_IQ_ACT_LUT(OUT) } else if (L->lut) { \
    for (j = 0; j < L->out; j++) { \
        const int32_t p = acz_iq_scale(acc[j], L->mult[j], L->shift[j]); \
        sum += OUT(j) = L->lut[ACZ_IQ_CLAMP(p) + 127]; \
    }
#else
#define ACZ_IQ_ACT_LUT(OUT)
#endif
#if ACZ_IQ_RELU && defined(__ARM_FEATURE_SAT)
#define ACZ_IQ_ACT_RELU(OUT) } else if (L->act == ACZ_RELU) { \
    for (j = 0; j < L->out; j++) { \
        const int32_t p = acz_iq_scale(acc[j], L->mult[j], L->shift[j]); \
        sum += OUT(j) = (acz_iqx_t)__usat(p, 7);  /* p clamped to [0, 127] in one instruction */ \
    }
#elif ACZ_IQ_RELU
/* acc <= 0 rounds to p <= 0 (halves up), which relu makes 0: no requantization for it */
#define ACZ_IQ_ACT_RELU(OUT) } else if (L->act == ACZ_RELU) { \
    for (j = 0; j < L->out; j++) { \
        const int32_t p = acc[j] > 0 ? acz_iq_scale(acc[j], L->mult[j], L->shift[j]) : 0; \
        sum += OUT(j) = (acz_iqx_t)(p > 127 ? 127 : p); \
    }
#else
#define ACZ_IQ_ACT_RELU(OUT)
#endif
#if ACZ_IQ_NONE
#define ACZ_IQ_ACT_NONE(OUT) } else { \
    for (j = 0; j < L->out; j++) { \
        const int32_t p = acz_iq_scale(acc[j], L->mult[j], L->shift[j]); \
        sum += OUT(j) = (acz_iqx_t)ACZ_IQ_CLAMP(p); \
    }
#else
#define ACZ_IQ_ACT_NONE(OUT)
#endif
#define ACZ_IQ_ACTIVATE(OUT) \
    sum = 0; \
    if (0) { ACZ_IQ_ACT_LUT_ODD(OUT) ACZ_IQ_ACT_LUT(OUT) ACZ_IQ_ACT_RELU(OUT) ACZ_IQ_ACT_NONE(OUT) }

#if ACZ_IQ_CONV
/* An H x W x C observation's int8 values (x, quantised in its own order) written C x H x W to y. */
static void acz_iq_chw(const AczIQNet *iq, const acz_iqx_t *x, acz_iqx_t *y) {
    const int hw = iq->obs_h * iq->obs_w;
    for (int p = 0; p < hw; p++)
        for (int c = 0; c < iq->obs_c; c++) y[c * hw + p] = *x++;
}

/* A conv layer, integer-only (intq.forward's conv step): per output pixel its int8 patch in scratch (ACZ_PATCH,
 * the fp32 im2col's: the filter matrix's column order, 0 where padded, the symmetric activations' zero), padded
 * to whole stored words, then the same rows and requantization as a Linear layer's; y flat out x oh x ow, as
 * the fp32 conv kernels write it (and the Linear layer after the last conv reads it). Returns y's sum. */
static int32_t acz_iq_conv(const AczIQLayer *L, const acz_iqx_t *x, acz_iqx_t *y, int32_t *acc, acz_iqx_t *patch) {
    const AczConv *g = &L->cv;
    const int K = g->c * g->kh * g->kw, npix = g->oh * g->ow;
    int32_t total = 0;
    for (int k = K; k & (L->bits == 4 ? 7 : 3); k++) patch[k] = 0;  /* padding: weights stored as the offset */
    for (int oy = 0; oy < g->oh; oy++)
        for (int ox = 0; ox < g->ow; ox++) {
            ACZ_PATCH(acz_iqx_t, g, x, oy, ox, patch);
            int32_t sum = 0;
            for (int k = 0; k < K; k++) sum += patch[k];
            acz_iq_layer_acc(L, patch, sum, acc, 0);
            acz_iqx_t *out = y + oy * g->ow + ox;  /* channel j at out[j * npix] */
#define ACZ_IQ_PIXEL(j) out[(j) * npix]
            int j;
            ACZ_IQ_ACTIVATE(ACZ_IQ_PIXEL);
#undef ACZ_IQ_PIXEL
            total += sum;
        }
    return total;
}
#endif

/* The integer-only net: int8 activations from the observation to the last layer. Returns the action
 * index for a discrete head (argmax of its outputs brought to one scale, all in integers); a
 * continuous head's outputs are written as fp32 to y (returns -1). */
int acz_iq_forward(const AczIQNet *iq, int obs_dim, const float *obs, float *y) {
    acz_iqx_t *x = iq->x0, *next = iq->x1;
    int32_t *acc = iq->acc;
#if ACZ_IQ_CONV
    if (iq->obs_c) {
        acz_iq_input(iq, obs, obs_dim, next);
        acz_iq_chw(iq, next, x);
    } else
#endif
    acz_iq_input(iq, obs, obs_dim, x);
    int32_t sum = 0;  /* of this layer's inputs: the weights' + 128 times it comes off every row */
    for (int k = 0; k < obs_dim; k++) sum += x[k];
    int n = obs_dim;
    for (int l = 0; l < iq->n_layers; l++) {
        const AczIQLayer *L = &iq->layers[l];
        int j;
#if ACZ_IQ_CONV
        if (L->cv.oh) {  /* a hidden conv layer: rows per output pixel, over its patch */
            sum = acz_iq_conv(L, x, next, acc, iq->cols);
            n = L->out * L->cv.oh * L->cv.ow;
            acz_iqx_t *t = x; x = next; next = t;
            continue;
        }
#endif
        /* padding to inpad (its weights are stored as the offset, i.e. 0); not `j < inpad`, which gcc makes a
         * call to memset (linked: flash) */
        for (j = n; j & (L->bits == 4 ? 7 : 3); j++) x[j] = 0;
        if (l == iq->n_layers - 1 || L->oscale) {
            acz_iq_layer_acc(L, x, sum, acc, next);
#if !ACZ_HEAD_DISCRETE
            if (L->oscale) {
                for (j = 0; j < L->out; j++) y[j] = (float)acc[j] * L->oscale[j];
                return -1;
            }
#else
            (void)y;
#endif
            int best = 0;
            int32_t top = acz_iq_scale(acc[0], L->mult[0], L->shift[0]);
            for (j = 1; j < L->out; j++) {
                const int32_t v = acz_iq_scale(acc[j], L->mult[j], L->shift[j]);
                if (v > top) { best = j; top = v; }
            }
            return best;
        }
        /* a hidden layer straight to the next one's activations: one row loop per activation form (an export
         * compiles only the forms its net has) */
        if (0) {
#if ACZ_IQ_LUT_ODD
        } else if (L->lut && L->lut_odd) {
            sum = acz_iq_layer_lut_odd(L, x, sum, acc, next);
#endif
#if ACZ_IQ_LUT
        } else if (L->lut) {
            sum = acz_iq_layer_lut(L, x, sum, acc, next);
#endif
#if ACZ_IQ_RELU
        } else if (L->act == ACZ_RELU) {
            sum = acz_iq_layer_relu(L, x, sum, acc, next);
#endif
#if ACZ_IQ_NONE
        } else {
            sum = acz_iq_layer_none(L, x, sum, acc, next);
#endif
        }
        acz_iqx_t *t = x; x = next; next = t;
        n = L->out;
    }
    return -1;
}
#endif

/* An fp32 value as an int32 of the same order (-0 as +0): argmax with integer compares, so a core
 * without an FPU links no soft-float comparison for it. */
static int32_t acz_order(float v) {
    int32_t i;
    memcpy(&i, &v, 4);
    return i >= 0 ? i : (int32_t)(0x80000000u - (uint32_t)i);
}

int acz_head(const AczNet *net, const float *x, int n_out, float *action) {
    if (net->kind == 0) {
        int best = 0;
        int32_t top = acz_order(x[0]);
        for (int j = 1; j < n_out; j++) {
            const int32_t o = acz_order(x[j]);
            if (o > top) { best = j; top = o; }
        }
        return best;
    }
#if ACZ_HEAD_DISCRETE  /* an export of a discrete policy: no continuous head (and no tanhf) in its flash */
    (void)action;
    return -1;
#endif
    for (int j = 0; j < net->act_dim; j++) {
        float m = x[j], lo = net->low[j], hi = net->high[j];
        if (net->squash == 0) { action[j] = m < lo ? lo : (m > hi ? hi : m); continue; }
        float a = net->squash == 1 ? tanhf(m) : (m < -1.f ? -1.f : (m > 1.f ? 1.f : m));
        action[j] = lo + (a + 1.f) * 0.5f * (hi - lo);
    }
    return -1;
}

/* The action for one observation: acz_head's contract. */
int acz_act(const AczNet *net, const float *obs, float *action) {
#if ACZ_USE_IQ
    if (net->iq) {
        const int a = acz_iq_forward(net->iq, net->obs_dim, obs, net->buf0);
        return net->kind == 0 ? a : acz_head(net, net->buf0, net->iq->layers[net->iq->n_layers - 1].out, action);
    }
#endif
#if ACZ_IQ_ONLY
    return -1;  /* an integer-only export: no fp32 layer is compiled */
#else
    const float *x = obs;
    float *bufs[2];
    bufs[0] = net->buf0;
    bufs[1] = net->buf1;
    if (net->in_c > 0) {  /* H x W x C: normalised as the env orders it, written C x H x W */
        const int hw = net->in_h * net->in_w;
        for (int p = 0; p < hw; p++)
            for (int c = 0; c < net->in_c; c++) {
                const int i = p * net->in_c + c;
                float v = obs[i];
                if (net->mean) {
                    v = (v - net->mean[i]) / net->std[i];
                    if (net->clip > 0.0f) v = v > net->clip ? net->clip : (v < -net->clip ? -net->clip : v);
                }
                bufs[1][c * hw + p] = v;
            }
        x = bufs[1];
    } else if (net->mean) {
        for (int i = 0; i < net->obs_dim; i++) {
            float v = (obs[i] - net->mean[i]) / net->std[i];
            if (net->clip > 0.0f) v = v > net->clip ? net->clip : (v < -net->clip ? -net->clip : v);
            bufs[1][i] = v;
        }
        x = bufs[1];
    }
    for (int l = 0; l < net->n_layers; l++) {
        float *y = bufs[l & 1];
#if ACZ_USE_RNN
        if (net->rnn && l == net->rnn->at) {  /* the cell, between layers at - 1 and at: layer at reads its h */
            acz_rnn_step(net->rnn, x, net->qbuf);
            x = net->rnn->state;
        }
#endif  /* ACZ_USE_RNN */
        acz_layer(&net->layers[l], x, y, net->qbuf, net->cols);
        x = y;
    }
    return acz_head(net, x, net->layers[net->n_layers - 1].out, action);
#endif
}

/* ---- timing: in-process runtime only ---- */
#include <time.h>


/* The int8 dot product's path in this build (ACZ_I8_PATH: 3 VNNI, 2 AVX2, 1 SSE2, 0 plain C); for tests. */
int acz_i8_path(void) { return ACZ_I8_PATH; }

static double acz_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

#define ACZ_BLOCK_WARMUP 4

/* Side-by-side latency: after `warmup` acts of each net, `rounds` rounds in which each net in turn
 * runs ACZ_BLOCK_WARMUP untimed, then `calls` timed acts. Round r acts on the recorded observations
 * r * calls, r * calls + 1, ... (mod n_obs), the same ones for every net, so that the rounds visit every
 * observation in turn. out[r * n_nets + i]: ns per act of net i in round r; seen (NULL: not counted):
 * seen[k] += the timed acts on observation k. Returns a checksum of the actions so that no call can be
 * optimised away. */
long acz_time(const AczNet *const *nets, int n_nets, const float *obs, int n_obs, int obs_dim,
              int warmup, int calls, int rounds, float *action, double *out, long *seen) {
    long sink = 0;
    for (int i = 0; i < n_nets; i++)
        for (int c = 0; c < warmup; c++) sink += acz_act(nets[i], obs + (long)(c % n_obs) * obs_dim, action);
    int first = 0;  /* the round's first observation */
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < n_nets; i++) {
            /* untimed acts first: the other nets evicted this one's weights (two [256, 256] nets overflow
             * a 512 KB L2), and a deployed policy running alone acts with them in cache */
            for (int c = 0; c < ACZ_BLOCK_WARMUP; c++)
                sink += acz_act(nets[i], obs + (long)((first + c) % n_obs) * obs_dim, action);
            int k = first;
            const double t0 = acz_now_ns();
            for (int c = 0; c < calls; c++) {
                sink += acz_act(nets[i], obs + (long)k * obs_dim, action);
                if (seen) seen[k]++;
                if (++k == n_obs) k = 0;
            }
            out[r * n_nets + i] = (acz_now_ns() - t0) / calls;
        }
        first = (int)(((long)first + calls) % n_obs);
    }
    return sink;
}

/* One layer's candidate kernels (n_k forms of the same layer), on `n_x` recorded inputs (acz_in_size
   floats each), taken in turn within every round so that a burst of load hits all of them alike:
   out[r * n_k + k] = ns per call of candidate k in round r. */
void acz_time_layer(const AczLayer *Ls, int n_k, const float *xs, int n_x, int calls, int rounds,
                    float *y, int8_t *qbuf, float *cols, double *out) {
    const long stride = acz_in_size(&Ls[0]);
    for (int k = 0; k < n_k; k++)  /* warm-up */
        for (int c = 0; c < calls; c++) acz_layer(&Ls[k], xs + (c % n_x) * stride, y, qbuf, cols);
    for (int r = 0; r < rounds; r++)
        for (int k = 0; k < n_k; k++) {
            const double t0 = acz_now_ns();
            for (int c = 0; c < calls; c++) acz_layer(&Ls[k], xs + (c % n_x) * stride, y, qbuf, cols);
            out[r * n_k + k] = (acz_now_ns() - t0) / calls;
        }
}
