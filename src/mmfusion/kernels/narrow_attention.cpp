// Fused softmax attention for narrow heads (D_h <= 8) on the CPU, forward and backward.
//
// out = softmax(scale·q kᵀ + β·act(extra) + key bias) v per (sample, head), where act is the identity or the exact
// GELU and the key bias is 0 for real keys and -1e4 for padded ones (from a bool mask). A (sample, head) with no
// real key gives zeros (and zero gradients). Nothing T×S is stored: the forward keeps one row of logits in a
// thread-local buffer and returns the log-sum-exp per query; the backward recomputes each row (FlashAttention-2's
// scheme) and accumulates dK, dV in thread-local buffers. Keys and values are transposed to (D_h, S) and padded to
// whole vectors so that every loop over keys runs on full 8-float vectors (GCC/Clang vector extensions: AVX2 on
// x86-64, NEON pairs on aarch64); D_h and the number of query rows sharing one pass over the keys are template
// parameters, so their loops unroll.
//
// Shapes: q (B, H, T, D), k/v (B, H, S, D) with any strides but a contiguous last axis (so split-head views of
// (B, T, H·D) projections are read in place), extra (B, H, T, S) contiguous or empty, key_mask (B, S) bool or
// empty. out and the gradients of q, k, v are returned as (B, H, ·, D) views of (B, ·, H, D) storage, so merging
// heads afterwards is free; lse is (B, H, T).

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif
#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace {

// Flush denormal results and inputs to zero on this thread while the kernel runs (restored afterwards). Products of
// tiny softmax weights (~1e-38) with gradients would otherwise be denormal, and arithmetic on denormals is up to
// ~100x slower on x86; their contribution is below float32 resolution anyway.
struct FlushDenormals {
#if defined(__SSE__)
  unsigned int saved = _mm_getcsr();
  FlushDenormals() { _mm_setcsr(saved | 0x8040); }
  ~FlushDenormals() { _mm_setcsr(saved); }
#endif
};

constexpr int W = 8;  // floats per vector
typedef float vf __attribute__((vector_size(4 * W)));
typedef int32_t vi __attribute__((vector_size(4 * W)));

inline vf splat(float x) { return vf{} + x; }
inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof(v)); }
// the first n (< W) floats at p, zeros after; and the matching partial store (row tails of extra / its gradient)
inline vf load_part(const float* p, int64_t n) {
  float t[W] = {};
  std::memcpy(t, p, sizeof(float) * n);
  return load(t);
}
inline void store_part(float* p, vf v, int64_t n) {
  float t[W];
  store(t, v);
  std::memcpy(p, t, sizeof(float) * n);
}
inline float hsum(vf v) {
  float s = 0.0f;
  for (int i = 0; i < W; ++i) s += v[i];
  return s;
}
inline float hmax(vf v) {
  float m = v[0];
  for (int i = 1; i < W; ++i) m = std::max(m, v[i]);
  return m;
}
#if defined(__AVX__)
inline vf vmax(vf a, vf b) { return _mm256_max_ps(a, b); }
inline vf vmin(vf a, vf b) { return _mm256_min_ps(a, b); }
inline vf vfloor(vf x) { return _mm256_floor_ps(x); }
#else
inline vf vmax(vf a, vf b) { return a > b ? a : b; }
inline vf vmin(vf a, vf b) { return a < b ? a : b; }
inline vf vfloor(vf x) {  // truncation, then one down where that rounded up (true is -1)
  const vf n = __builtin_convertvector(__builtin_convertvector(x, vi), vf);
  return n + __builtin_convertvector(n > x, vf);
}
#endif

// exp(x) = 2^t with t = x·log2(e) = n + f, n the nearest integer, |f| <= 1/2, and 2^f by a degree-6 polynomial
// (near-minimax on [-1/2, 1/2]: relative error < 1e-7 in float32, as good as Cephes' expf with fewer operations).
// f comes from one fused multiply-add, so the product x·log2(e) is not rounded. Exactly 0 below -87, so -1e4
// logits vanish as in torch. Arguments here are never large and positive (logits minus their maximum, -e²/2).
inline vf vexp(vf x) {
  constexpr float kLog2e = 1.44269504088896341f;
#if defined(__AVX__)
  const vf n = _mm256_round_ps(x * kLog2e, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
  const vf n = vfloor(x * kLog2e + 0.5f);
#endif
#if defined(__FMA__)
  const vf f = _mm256_fmsub_ps(x, splat(kLog2e), n);
#else
  const vf f = x * kLog2e - n;
#endif
  vf p = splat(1.5350867761299014e-4f);
  p = p * f + 1.339997281320393e-3f;
  p = p * f + 9.618470445275307e-3f;
  p = p * f + 5.550328642129898e-2f;
  p = p * f + 2.4022647738456726e-1f;
  p = p * f + 6.931471824645996e-1f;
  p = p * f + 1.0f;
  const vf nc = vmax(n, splat(-126.0f));
  const vi bits = (__builtin_convertvector(nc, vi) + 127) << 23;
  const vf res = p * reinterpret_cast<const vf&>(bits);
  return x < -87.0f ? vf{} : res;
}

// a / b to ~1 ulp: the hardware reciprocal estimate plus one Newton step where there is one (a division costs
// several times more on many x86 cores), else a division.
inline vf vdiv(vf a, vf b) {
#if defined(__AVX__)
  vf r = _mm256_rcp_ps(b);
  r = r * (2.0f - b * r);
  return a * r;
#else
  return a / b;
#endif
}

// erf(x): the single-precision rational approximation also used by Eigen and XLA, exact ±1 beyond |x| = 4.
inline vf verf(vf x) {
  const vf xc = vmin(vmax(x, splat(-4.0f)), splat(4.0f));
  const vf x2 = xc * xc;
  vf p = splat(-2.72614225801306e-10f);
  p = p * x2 + 2.77068142495902e-08f;
  p = p * x2 + -2.10102402082508e-06f;
  p = p * x2 + -5.69250639462346e-05f;
  p = p * x2 + -7.34990630326855e-04f;
  p = p * x2 + -2.95459980854025e-03f;
  p = p * x2 + -1.60960333262415e-02f;
  p = p * xc;
  vf q = splat(-1.45660718464996e-05f);
  q = q * x2 + -2.13374055278905e-04f;
  q = q * x2 + -1.68282697438203e-03f;
  q = q * x2 + -7.37332916720468e-03f;
  q = q * x2 + -1.42647390514189e-02f;
  return vdiv(p, q);
}

constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;
constexpr float kPadLogit = -1e30f;  // logit of the padding lanes past S: exp() gives exactly 0
constexpr float kMaskedLogit = -1e4f;  // logit of a masked key (mmfusion.modules.attention.MASKED_LOGIT)

// β·act(e) added to the logits and, with grad, act'(e) (GELU(e) = e·Φ(e), GELU'(e) = Φ(e) + e·φ(e): one erf).
template <bool GELU>
inline vf act(vf e, vf* grad) {
  if constexpr (GELU) {
    const vf cdf = 0.5f * (1.0f + verf(e * kInvSqrt2));
    if (grad != nullptr) *grad = cdf + e * kInvSqrt2Pi * vexp(-0.5f * e * e);
    return e * cdf;
  } else {
    if (grad != nullptr) *grad = splat(1.0f);
    return e;
  }
}

// A (B, H, rows, D) float array with any strides and a contiguous last axis.
template <class P>
struct Strided {
  P* p = nullptr;
  int64_t sb = 0, sh = 0, sr = 0;  // strides of sample, head, row
  Strided() = default;
  explicit Strided(const at::Tensor& t)
      : p(const_cast<P*>(t.data_ptr<float>())), sb(t.stride(0)), sh(t.stride(1)), sr(t.stride(2)) {}
  P* row(int64_t b, int64_t h, int64_t i) const { return p + b * sb + h * sh + i * sr; }
};

// The operands (extra and the mask only where given).
struct Operands {
  int64_t B, H, T, S;
  float scale;
  Strided<const float> q, k, v;
  const float* extra;
  const bool* mask;
  Operands(const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_, const at::Tensor& extra_,
           const at::Tensor& mask_, double scale_)
      : B(q_.size(0)), H(q_.size(1)), T(q_.size(2)), S(k_.size(2)), scale(static_cast<float>(scale_)), q(q_),
        k(k_), v(v_), extra(extra_.defined() ? extra_.data_ptr<float>() : nullptr),
        mask(mask_.defined() ? mask_.data_ptr<bool>() : nullptr) {}
  const float* extra_row(int64_t n, int64_t i) const { return extra + (n * T + i) * S; }
};

// Calls f(i, rows) over query rows [begin, end) in groups of R rows, then single rows for the remainder; ``rows``
// is a std::integral_constant, so f can pass it on as a template argument.
template <int R, class F>
inline void in_row_groups(int64_t begin, int64_t end, F&& f) {
  int64_t i = begin;
  for (; i + R <= end; i += R) f(i, std::integral_constant<int, R>{});
  for (; i < end; ++i) f(i, std::integral_constant<int, 1>{});
}

// Per-thread copies of one head's keys: kᵀ, vᵀ (D, SP) and the key bias (SP), SP = S rounded up to whole vectors;
// padding lanes hold zeros (keys, values) and kPadLogit (bias). ``any_real`` is false when every key is masked.
template <int D>
struct KeyBlock {
  int64_t S = 0, SP = 0;
  bool any_real = true;
  std::vector<float> kt, vt, bias;
  explicit KeyBlock(int64_t S_) : S(S_), SP((S_ + W - 1) / W * W), kt(D * SP), vt(D * SP), bias(SP, kPadLogit) {}
  void load_head(const Operands& in, int64_t b, int64_t h) {
    for (int64_t j = 0; j < S; ++j) {
      const float* kj = in.k.row(b, h, j);
      const float* vj = in.v.row(b, h, j);
      for (int c = 0; c < D; ++c) {
        kt[c * SP + j] = kj[c];
        vt[c * SP + j] = vj[c];
      }
    }
    any_real = true;
    if (in.mask == nullptr) {
      std::fill(bias.begin(), bias.begin() + S, 0.0f);
    } else {
      const bool* m = in.mask + b * S;
      any_real = false;
      for (int64_t j = 0; j < S; ++j) {
        bias[j] = m[j] ? 0.0f : kMaskedLogit;
        any_real |= m[j];
      }
    }
  }
};

// R query rows of one head: logits, softmax, output and log-sum-exp. Row r of q is at q + r·qs (D floats, scaled
// by ``scale`` here), of out at out + r·os; ex rows (R, S) contiguous or null.
template <int D, int R, bool EX, bool GELU>
inline void forward_rows(const KeyBlock<D>& kb, const float* q, int64_t qs, float scale, const float* ex,
                         float beta, float* out, int64_t os, float* lse, float* buf) {
  const int64_t S = kb.S, SP = kb.SP;
  vf qb[R][D], mx[R];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < D; ++c) qb[r][c] = splat(q[r * qs + c] * scale);
    mx[r] = splat(kPadLogit);
  }
  const int64_t full_end = S / W * W;  // vectors wholly inside the row; the rest (if any) is the tail
  auto step = [&](int64_t j, auto full) {
    vf kj[D];
    for (int c = 0; c < D; ++c) kj[c] = load(&kb.kt[c * SP + j]);
    const vf bj = load(&kb.bias[j]);
    for (int r = 0; r < R; ++r) {
      vf s = bj;
      if constexpr (EX) {
        const float* e = ex + r * S + j;
        s += beta * act<GELU>(decltype(full)::value ? load(e) : load_part(e, S - j), nullptr);
      }
      for (int c = 0; c < D; ++c) s += qb[r][c] * kj[c];
      store(buf + r * SP + j, s);
      mx[r] = vmax(mx[r], s);
    }
  };
  for (int64_t j = 0; j < full_end; j += W) step(j, std::true_type{});
  if (full_end < SP) step(full_end, std::false_type{});
  vf m[R], sum[R], acc[R][D];
  for (int r = 0; r < R; ++r) {
    m[r] = splat(hmax(mx[r]));
    sum[r] = vf{};
    for (int c = 0; c < D; ++c) acc[r][c] = vf{};
  }
  for (int64_t j = 0; j < SP; j += W) {
    vf vj[D];
    for (int c = 0; c < D; ++c) vj[c] = load(&kb.vt[c * SP + j]);
    for (int r = 0; r < R; ++r) {
      const vf p = vexp(load(buf + r * SP + j) - m[r]);
      sum[r] += p;
      for (int c = 0; c < D; ++c) acc[r][c] += p * vj[c];
    }
  }
  for (int r = 0; r < R; ++r) {
    const float total = hsum(sum[r]);
    for (int c = 0; c < D; ++c) out[r * os + c] = hsum(acc[r][c]) / total;
    lse[r] = m[r][0] + std::log(total);
  }
}

template <int D, bool EX, bool GELU>
void forward_impl(const Operands& in, float beta, Strided<float> out, float* lse) {
  constexpr int R = EX ? 1 : 2;  // rows per pass over the keys (measured best at D_h = 5 on AVX2)
  const int64_t T = in.T, S = in.S, H = in.H;
  // work items: (head, block of query rows), so that a single clip (few heads) still uses every thread
  const int64_t rows = 64;
  const int64_t blocks = (T + rows - 1) / rows;
  at::parallel_for(0, in.B * H * blocks, 1, [&](int64_t begin, int64_t end) {
    FlushDenormals flush;
    KeyBlock<D> kb(S);
    std::vector<float> buf(R * kb.SP);
    int64_t loaded = -1;
    for (int64_t w = begin; w < end; ++w) {
      const int64_t n = w / blocks, block = w % blocks, b = n / H, h = n % H;
      if (n != loaded) {
        kb.load_head(in, b, h);
        loaded = n;
      }
      const int64_t first = block * rows, last = std::min(T, (block + 1) * rows);
      if (!kb.any_real) {  // no real key: zeros (attend()'s convention for a missing modality)
        for (int64_t i = first; i < last; ++i) {
          std::fill(out.row(b, h, i), out.row(b, h, i) + D, 0.0f);
          lse[n * T + i] = 0.0f;
        }
        continue;
      }
      in_row_groups<R>(first, last, [&](int64_t i, auto group) {
        forward_rows<D, decltype(group)::value, EX, GELU>(kb, in.q.row(b, h, i), in.q.sr, in.scale,
                                                           EX ? in.extra_row(n, i) : nullptr, beta, out.row(b, h, i),
                                                           out.sr, lse + n * T + i, buf.data());
      });
    }
  });
}

// R query rows of one head against every key: dS, dQ of these rows, dex = β·dS·act' for them; dKᵀ, dVᵀ
// accumulated (D, SP). Sharing the pass over keys between R rows shares the loads and stores of kᵀ, vᵀ, dKᵀ, dVᵀ.
// Rows r of q, g (the output's gradient), o (the output) and dq are at ptr + r·stride.
template <int D, int R, bool EX, bool GELU>
inline void backward_rows(const KeyBlock<D>& kb, const float* q, int64_t qs, float scale, const float* g,
                          int64_t gs, const float* o, int64_t os, const float* lse, const float* ex, float* dex,
                          float beta, float* dkt, float* dvt, float* dq, int64_t dqs) {
  const int64_t S = kb.S, SP = kb.SP;
  vf qb[R][D], gb[R][D], delta[R], L[R], dqa[R][D];
  for (int r = 0; r < R; ++r) {
    float d = 0.0f;
    for (int c = 0; c < D; ++c) {
      qb[r][c] = splat(q[r * qs + c] * scale);
      gb[r][c] = splat(g[r * gs + c]);
      d += g[r * gs + c] * o[r * os + c];
      dqa[r][c] = vf{};
    }
    delta[r] = splat(d);
    L[r] = splat(lse[r]);
  }
  const int64_t full_end = S / W * W;  // vectors wholly inside the row; the rest (if any) is the tail
  auto step = [&](int64_t j, auto full) {
    constexpr bool FULL = decltype(full)::value;
    vf kj[D], vj[D], dk[D], dv[D];
    for (int c = 0; c < D; ++c) {
      kj[c] = load(&kb.kt[c * SP + j]);
      vj[c] = load(&kb.vt[c * SP + j]);
      dk[c] = load(dkt + c * SP + j);
      dv[c] = load(dvt + c * SP + j);
    }
    const vf bj = load(&kb.bias[j]);
    for (int r = 0; r < R; ++r) {
      vf s = bj, grad_act;
      if constexpr (EX) {
        const float* e = ex + r * S + j;
        s += beta * act<GELU>(FULL ? load(e) : load_part(e, S - j), &grad_act);
      }
      vf dp = vf{};
      for (int c = 0; c < D; ++c) {
        s += qb[r][c] * kj[c];
        dp += gb[r][c] * vj[c];
      }
      const vf p = vexp(s - L[r]);
      const vf ds = p * (dp - delta[r]);
      for (int c = 0; c < D; ++c) {
        dqa[r][c] += ds * kj[c];
        dk[c] += ds * qb[r][c];
        dv[c] += p * gb[r][c];
      }
      if constexpr (EX) {
        const vf de = beta * ds * grad_act;
        if constexpr (FULL) store(dex + r * S + j, de);
        else store_part(dex + r * S + j, de, S - j);
      }
    }
    for (int c = 0; c < D; ++c) {
      store(dkt + c * SP + j, dk[c]);
      store(dvt + c * SP + j, dv[c]);
    }
  };
  for (int64_t j = 0; j < full_end; j += W) step(j, std::true_type{});
  if (full_end < SP) step(full_end, std::false_type{});
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < D; ++c) dq[r * dqs + c] = hsum(dqa[r][c]) * scale;
}

struct Gradients {
  Strided<const float> out, grad_out;
  const float* lse;
  Strided<float> dq, dk, dv;
  float* dextra;
};

template <int D, bool EX, bool GELU>
void backward_impl(const Operands& in, float beta, const Gradients& gr) {
  constexpr int R = GELU ? 1 : 2;  // rows per pass over the keys (measured best at D_h = 5 on AVX2)
  const int64_t T = in.T, S = in.S, H = in.H;
  at::parallel_for(0, in.B * H, 1, [&](int64_t begin, int64_t end) {
    FlushDenormals flush;
    KeyBlock<D> kb(S);
    std::vector<float> dkt(D * kb.SP), dvt(D * kb.SP);
    const int64_t SP = kb.SP;
    for (int64_t n = begin; n < end; ++n) {
      const int64_t b = n / H, h = n % H;
      kb.load_head(in, b, h);
      std::fill(dkt.begin(), dkt.end(), 0.0f);
      std::fill(dvt.begin(), dvt.end(), 0.0f);
      if (kb.any_real) {
        in_row_groups<R>(0, T, [&](int64_t i, auto group) {
          backward_rows<D, decltype(group)::value, EX, GELU>(
              kb, in.q.row(b, h, i), in.q.sr, in.scale, gr.grad_out.row(b, h, i), gr.grad_out.sr,
              gr.out.row(b, h, i), gr.out.sr, gr.lse + n * T + i, EX ? in.extra_row(n, i) : nullptr,
              EX ? gr.dextra + (n * T + i) * S : nullptr, beta, dkt.data(), dvt.data(), gr.dq.row(b, h, i),
              gr.dq.sr);
        });
      } else {  // the output was constant zero: no gradient anywhere
        for (int64_t i = 0; i < T; ++i) std::fill(gr.dq.row(b, h, i), gr.dq.row(b, h, i) + D, 0.0f);
        if (EX) std::fill(gr.dextra + n * T * S, gr.dextra + (n + 1) * T * S, 0.0f);
      }
      for (int64_t j = 0; j < S; ++j) {
        float* dk = gr.dk.row(b, h, j);
        float* dv = gr.dv.row(b, h, j);
        for (int c = 0; c < D; ++c) {
          dk[c] = dkt[c * SP + j];
          dv[c] = dvt[c * SP + j];
        }
      }
    }
  });
}

void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& extra,
                  const at::Tensor& mask) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "narrow attention: q, k, v must be (B, H, T|S, D)");
  TORCH_CHECK(q.scalar_type() == at::kFloat && k.scalar_type() == at::kFloat && v.scalar_type() == at::kFloat,
              "narrow attention: float32 only");
  TORCH_CHECK(q.stride(3) == 1 && k.stride(3) == 1 && v.stride(3) == 1,
              "narrow attention: the head axis of q, k, v must be contiguous");
  TORCH_CHECK(k.sizes() == v.sizes() && q.size(0) == k.size(0) && q.size(1) == k.size(1) && q.size(3) == k.size(3),
              "narrow attention: shapes of q, k, v disagree");
  TORCH_CHECK(q.size(3) >= 1 && q.size(3) <= 8, "narrow attention: head width must be 1..8");
  if (mask.defined()) {
    TORCH_CHECK(mask.scalar_type() == at::kBool && mask.is_contiguous() && mask.dim() == 2 &&
                    mask.size(0) == k.size(0) && mask.size(1) == k.size(2),
                "narrow attention: key_mask must be a contiguous bool (B, S)");
  }
  if (extra.defined()) {
    TORCH_CHECK(extra.is_contiguous() && extra.scalar_type() == at::kFloat && extra.dim() == 4 &&
                    extra.size(0) == q.size(0) && extra.size(1) == q.size(1) && extra.size(2) == q.size(2) &&
                    extra.size(3) == k.size(2),
                "narrow attention: extra must be a contiguous float32 (B, H, T, S)");
  }
}

// (B, H, rows, D) view of fresh (B, rows, H, D) storage
at::Tensor heads_last(const at::Tensor& like) {
  return at::empty({like.size(0), like.size(2), like.size(1), like.size(3)}, like.options()).transpose(1, 2);
}

#define NARROW_DISPATCH_D(D_VAL, ...)                 \
  switch (D_VAL) {                                    \
    case 1: { constexpr int D = 1; __VA_ARGS__; break; } \
    case 2: { constexpr int D = 2; __VA_ARGS__; break; } \
    case 3: { constexpr int D = 3; __VA_ARGS__; break; } \
    case 4: { constexpr int D = 4; __VA_ARGS__; break; } \
    case 5: { constexpr int D = 5; __VA_ARGS__; break; } \
    case 6: { constexpr int D = 6; __VA_ARGS__; break; } \
    case 7: { constexpr int D = 7; __VA_ARGS__; break; } \
    default: { constexpr int D = 8; __VA_ARGS__; break; } \
  }

std::vector<at::Tensor> forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const c10::optional<at::Tensor>& extra_opt, double beta, double scale,
                                const c10::optional<at::Tensor>& mask_opt, bool gelu) {
  const at::Tensor extra = extra_opt.has_value() ? *extra_opt : at::Tensor();
  const at::Tensor mask = mask_opt.has_value() ? *mask_opt : at::Tensor();
  check_inputs(q, k, v, extra, mask);
  auto out = heads_last(q);
  auto lse = at::empty({q.size(0), q.size(1), q.size(2)}, q.options());
  const float b = static_cast<float>(beta);
  const Operands in(q, k, v, extra, mask, scale);
  NARROW_DISPATCH_D(q.size(3), {
    if (!extra.defined()) forward_impl<D, false, false>(in, b, Strided<float>(out), lse.data_ptr<float>());
    else if (gelu) forward_impl<D, true, true>(in, b, Strided<float>(out), lse.data_ptr<float>());
    else forward_impl<D, true, false>(in, b, Strided<float>(out), lse.data_ptr<float>());
  });
  return {out, lse};
}

std::vector<at::Tensor> backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const c10::optional<at::Tensor>& extra_opt, double beta, double scale,
                                 const c10::optional<at::Tensor>& mask_opt, bool gelu, const at::Tensor& out,
                                 const at::Tensor& lse, const at::Tensor& grad_out) {
  const at::Tensor extra = extra_opt.has_value() ? *extra_opt : at::Tensor();
  const at::Tensor mask = mask_opt.has_value() ? *mask_opt : at::Tensor();
  check_inputs(q, k, v, extra, mask);
  TORCH_CHECK(grad_out.sizes() == q.sizes() && out.sizes() == q.sizes() && grad_out.stride(3) == 1 &&
                  out.stride(3) == 1 && lse.is_contiguous(),
              "narrow attention: out, grad_out must be (B, H, T, D) with a contiguous head axis");
  auto dq = heads_last(q);
  auto dk = heads_last(k);
  auto dv = heads_last(v);
  at::Tensor dextra;
  if (extra.defined()) dextra = at::empty_like(extra);  // computed with the other gradients either way
  const float b = static_cast<float>(beta);
  const Operands in(q, k, v, extra, mask, scale);
  const Gradients gr{Strided<const float>(out), Strided<const float>(grad_out), lse.data_ptr<float>(),
                     Strided<float>(dq), Strided<float>(dk), Strided<float>(dv),
                     extra.defined() ? dextra.data_ptr<float>() : nullptr};
  NARROW_DISPATCH_D(q.size(3), {
    if (!extra.defined()) backward_impl<D, false, false>(in, b, gr);
    else if (gelu) backward_impl<D, true, true>(in, b, gr);
    else backward_impl<D, true, false>(in, b, gr);
  });
  return {dq, dk, dv, dextra};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "fused narrow-head attention, forward: (out, lse)",
        py::call_guard<py::gil_scoped_release>());
  m.def("backward", &backward, "fused narrow-head attention, backward: (dq, dk, dv, dextra)",
        py::call_guard<py::gil_scoped_release>());
}
