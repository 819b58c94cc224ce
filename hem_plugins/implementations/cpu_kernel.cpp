// The C++ kernel (see cpu_kernel.py): the two forward passes and the
// backward of hem_loss for p = 1, each one pass over a range of rows [j0, j1) of the
// (N, C, S) logits (row j = (j / S, j % S)), read in place through their strides.
// Plain C ABI (no torch headers): loaded with ctypes, so it compiles in about a second.
//
// Mask layout (shared by pass2 and grad): S == 1, bit j * C + c (row-major); S > 1, rows in
// blocks of BLOCK from row 0, block k's bits start at k * BLOCK * C and run class-major,
// bit k * BLOCK * C + c * nb + (j - k * BLOCK), nb the rows of the block. Callers split work
// at multiples of BLOCK rows, so no two calls write the same byte.
#include <cmath>
#include <cstdint>
#include <cstring>

typedef int64_t i64;
static const i64 BLOCK = 256;

struct bf16 {
  uint16_t v;
};

static inline float load(const float* p) { return *p; }
static inline double load(const double* p) { return *p; }
static inline float load(const bf16* p) {
  uint32_t u = (uint32_t)p->v << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
static inline void store(float* p, float v) { *p = v; }
static inline void store(double* p, double v) { *p = v; }
static inline void store(bf16* p, float f) {  // round to nearest even, as torch does
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (std::isnan(f)) {
    p->v = 0x7fc0;
    return;
  }
  u += 0x7fff + ((u >> 16) & 1);
  p->v = (uint16_t)(u >> 16);
}

template <typename T> struct Acc { typedef float type; };
template <> struct Acc<double> { typedef double type; };

// Per-row quantities of rows [j0, j1): safe target, validity, weight, shift = x_t - mu.
template <typename T, typename A>
struct Rows {
  const T* x; i64 sN, sC, sS, C, S;
  const i64* t; i64 ignore;
  const A* w; const A* cw; A mu; const A* mc;

  // Fills the per-row arrays for rows j0 .. j0 + nb; returns flags via bad/posinf.
  inline void prep(i64 j0, i64 nb, i64* off, i64* tt, A* sh, A* rw, bool* ok, int* bad,
                   int* posinf) const {
    for (i64 b = 0; b < nb; ++b) {
      i64 j = j0 + b, n = S == 1 ? j : j / S, s = j - n * S;  // no division for (N, C)
      off[b] = n * sN + s * sS;
      i64 tj = t[j];
      bool valid = tj != ignore;
      bool in_range = tj >= 0 && tj < C;
      if (valid && !in_range) *bad = 1;
      valid = valid && in_range;
      if (!valid) tj = 0;
      A r = 1;
      if (w) r = w[j];
      if (cw) r = w ? r * cw[tj] : cw[tj];
      if ((w || cw) && r == 0) valid = false;
      A xt = load(x + off[b] + tj * sC);
      if (valid && std::isinf(xt) && xt > 0) *posinf = 1;
      A m = mc ? mc[tj] : mu;
      tt[b] = tj;
      ok[b] = valid;
      sh[b] = xt - m;
      rw[b] = valid ? r : (A)0;
    }
  }
};

static inline i64 block_rows(i64 j0, i64 j1, i64 S) {
  // S == 1: any length; S > 1: up to the next multiple of BLOCK.
  if (S == 1) return (j1 - j0) < BLOCK ? (j1 - j0) : BLOCK;
  i64 end = (j0 / BLOCK + 1) * BLOCK;
  return (end < j1 ? end : j1) - j0;
}

template <typename A>
static inline A hinge(A v) { return v < (A)0 ? (A)0 : v; }  // keeps NaN, as clamp_min does

// Runs of rows of one sample within a block: [seg[i], seg[i + 1]), sample segn[i].
static inline int segments(i64 jb, i64 nb, i64 S, i64* seg, i64* segn) {
  int k = 0;
  for (i64 b = 0; b < nb;) {
    i64 j = jb + b, n = j / S, end = (n + 1) * S - jb;
    seg[k] = b;
    segn[k++] = n;
    b = end < nb ? end : nb;
  }
  seg[k] = nb;
  return k;
}

// Pass 1: out[0] += sum of the weighted errors, out[1] += entries in the threshold's mean,
// out[2] = 1 on a target outside [0, C), out[3] = 1 on a +inf target logit of a valid row.
template <typename T>
static void pass1(const T* x, i64 sN, i64 sC, i64 sS, i64 C, i64 S, i64 j0, i64 j1,
                  const i64* t, i64 ignore, const void* w_, const void* cw_, double mu,
                  const void* mc_, int has_mv, double mv, double* out) {
  typedef typename Acc<T>::type A;
  Rows<T, A> R{x, sN, sC, sS, C, S, t, ignore, (const A*)w_, (const A*)cw_, (A)mu, (const A*)mc_};
  bool weighted = w_ || cw_;
  i64 off[BLOCK], tt[BLOCK], seg[BLOCK + 1], segn[BLOCK], active[BLOCK];
  A sh[BLOCK], rw[BLOCK], acc[BLOCK];
  bool ok[BLOCK];
  int bad = 0, posinf = 0;
  double total = 0, count = 0;
  const A amv = (A)mv, ninf = -INFINITY;
  for (i64 jb = j0; jb < j1;) {
    i64 nb = block_rows(jb, j1, S);
    R.prep(jb, nb, off, tt, sh, rw, ok, &bad, &posinf);
    if (S == 1) {
      for (i64 b = 0; b < nb; ++b) {
        if (!ok[b]) {
          acc[b] = 0;
          continue;
        }
        const T* xr = x + off[b];
        A s = sh[b], a = 0;
        if (sC == 1 && has_mv) {  // one loop: errors and active units
          int32_t n_active = 0;  // 32-bit: the same lanes as the float sum
          for (i64 c = 0; c < C; ++c) {
            A v = load(xr + c);
            a += hinge(v - s);
            n_active += (v != amv) & (v != ninf);
          }
          acc[b] = a;
          active[b] = n_active;
          continue;
        }
        if (sC == 1) {
          for (i64 c = 0; c < C; ++c) a += hinge((A)load(xr + c) - s);
        } else {
          for (i64 c = 0; c < C; ++c) a += hinge((A)load(xr + c * sC) - s);
        }
        acc[b] = a;
        if (has_mv) {
          i64 n_active = 0;
          for (i64 c = 0; c < C; ++c) {
            A v = load(xr + c * sC);
            n_active += (v != amv) & (v != ninf);
          }
          active[b] = n_active;
        }
      }
    } else {
      for (i64 b = 0; b < nb; ++b) acc[b] = 0, active[b] = 0;
      int ns = segments(jb, nb, S, seg, segn);
      for (int k = 0; k < ns; ++k) {
        i64 b0 = seg[k], b1 = seg[k + 1];
        for (i64 c = 0; c < C; ++c) {
          const T* xp = x + off[b0] + c * sC;
          if (sS == 1) {
            for (i64 b = b0; b < b1; ++b) acc[b] += hinge((A)load(xp + (b - b0)) - sh[b]);
          } else {
            for (i64 b = b0; b < b1; ++b) acc[b] += hinge((A)load(xp + (b - b0) * sS) - sh[b]);
          }
          if (has_mv) {
            for (i64 b = b0; b < b1; ++b) {
              A v = load(xp + (b - b0) * sS);
              active[b] += (v != amv) & (v != ninf);
            }
          }
        }
      }
    }
    for (i64 b = 0; b < nb; ++b) {
      if (!ok[b]) continue;
      const T* xr = x + off[b];
      A a = acc[b] - hinge((A)load(xr + tt[b] * sC) - sh[b]);  // the target's error is 0
      total += weighted ? (double)(a * rw[b]) : (double)a;
      count += has_mv ? (double)active[b] : (double)C;
    }
    jb += nb;
  }
  out[0] += total;
  out[1] += count;
  if (bad) out[2] = 1;
  if (posinf) out[3] = 1;
}

static inline void put_bits(uint8_t* mask, i64 bit0, const uint8_t* kb, i64 n) {
  // Bits bit0 .. bit0 + n - 1 from kb (0/1 bytes): a head up to a byte boundary with |=
  // (its byte may hold the previous row's bits), whole bytes, then the tail with |=.
  i64 i = 0;
  for (; i < n && ((bit0 + i) & 7); ++i)
    mask[(bit0 + i) >> 3] |= (uint8_t)(kb[i] << ((bit0 + i) & 7));
  for (; i + 8 <= n; i += 8) {  // 8 bytes of 0/1 -> one byte, byte q to bit q: one multiply
    uint64_t w = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    std::memcpy(&w, kb + i, 8);  // byte q of w is kb[i + q]
#else
    for (int q = 0; q < 8; ++q) w |= (uint64_t)kb[i + q] << (8 * q);
#endif
    mask[(bit0 + i) >> 3] = (uint8_t)((w * 0x0102040810204080ULL) >> 56);
  }
  for (; i < n; ++i) mask[(bit0 + i) >> 3] |= (uint8_t)(kb[i] << ((bit0 + i) & 7));
}

// Pass 2: the kept mask (bits, see the layout above; zeroed here), the safe
// targets tc, the row weights rw_out (if weighted), per-row kept sums (if rowsum), and
// out[0] += sum of kept errors, out[1] += their number.
template <typename T, typename TI>
static void pass2(const T* x, i64 sN, i64 sC, i64 sS, i64 C, i64 S, i64 j0, i64 j1,
                  const i64* t, i64 ignore, const void* w_, const void* cw_, double mu,
                  const void* mc_, double ebar_d, uint8_t* mask, TI* tc, void* rw_out_,
                  void* rowsum_, double* out) {
  typedef typename Acc<T>::type A;
  Rows<T, A> R{x, sN, sC, sS, C, S, t, ignore, (const A*)w_, (const A*)cw_, (A)mu, (const A*)mc_};
  A* rw_out = (A*)rw_out_;
  A* rowsum = (A*)rowsum_;
  bool weighted = w_ || cw_;
  i64 off[BLOCK], tt[BLOCK], seg[BLOCK + 1], segn[BLOCK];
  A sh[BLOCK], rw[BLOCK], rs[BLOCK];
  bool ok[BLOCK];
  uint8_t kb[BLOCK > 4096 ? BLOCK : 4096];
  int bad = 0, posinf = 0;
  double ksum = 0;
  i64 kcount = 0;
  const A ebar = (A)ebar_d;
  // This range's mask bytes (its own: j0 is a multiple of 8, or of BLOCK), zeroed here
  // rather than by a torch op over the whole mask (an OpenMP region).
  std::memset(mask + ((j0 * C) >> 3), 0, (size_t)(((j1 * C + 7) >> 3) - ((j0 * C) >> 3)));
  for (i64 jb = j0; jb < j1;) {
    i64 nb = block_rows(jb, j1, S);
    R.prep(jb, nb, off, tt, sh, rw, ok, &bad, &posinf);
    for (i64 b = 0; b < nb; ++b) {
      tc[jb + b] = (TI)tt[b];
      if (rw_out) rw_out[jb + b] = rw[b];
      rs[b] = 0;
      // Invalid rows keep nothing: a shift so large that every error clamps to 0.
      if (!ok[b]) sh[b] = INFINITY;
    }
    if (S == 1 && sC == 1 && !weighted && C <= 4096) {
      // (N, C) rows, contiguous, unweighted: the rows' bytes back to back in kb (their bits
      // follow each other in the mask), one count and one put_bits per kb-full of rows
      // instead of per row (the per-row cost that dominates at C ~ 100). Same sums.
      i64 pos = 0, bit0 = jb * C;
      for (i64 b = 0; b < nb; ++b) {
        if (pos + C > 4096) {
          for (i64 i = 0; i < pos; ++i) kcount += kb[i];
          put_bits(mask, bit0, kb, pos);
          bit0 += pos;
          pos = 0;
        }
        uint8_t* kr = kb + pos;
        pos += C;
        if (!ok[b]) {
          std::memset(kr, 0, (size_t)C);
          continue;
        }
        const T* xr = x + off[b];
        A s = sh[b], a = 0;
        i64 tb = tt[b];
        for (i64 c = 0; c < C; ++c) {
          A e = hinge((A)load(xr + c) - s);
          uint8_t kept = e > ebar;
          kr[c] = kept;
          a += kept ? e : (A)0;
        }
        if (kr[tb]) {  // the target's error is never kept
          kr[tb] = 0;
          a -= hinge((A)load(xr + tb) - s);
        }
        rs[b] = a;
        ksum += (double)a;
      }
      for (i64 i = 0; i < pos; ++i) kcount += kb[i];
      put_bits(mask, bit0, kb, pos);
    } else if (S == 1) {
      for (i64 b = 0; b < nb; ++b) {
        if (!ok[b]) continue;
        const T* xr = x + off[b];
        A s = sh[b], r = rw[b], a = 0;
        i64 bit = (jb + b) * C, tb = tt[b], k = 0;
        for (i64 c0 = 0; c0 < C; c0 += 4096) {
          i64 c1 = c0 + 4096 < C ? c0 + 4096 : C;
          if (sC == 1 && !weighted) {
            const T* xc = xr + c0;
            for (i64 c = 0; c < c1 - c0; ++c) {
              A e = hinge((A)load(xc + c) - s);
              uint8_t kept = e > ebar;
              kb[c] = kept;
              a += kept ? e : (A)0;
            }
            if (tb >= c0 && tb < c1 && kb[tb - c0]) {  // the target's error is never kept
              kb[tb - c0] = 0;
              a -= hinge((A)load(xr + tb) - s);
            }
          } else {
            for (i64 c = c0; c < c1; ++c) {
              A e = hinge((A)load(xr + c * sC) - s);
              if (weighted) e *= r;
              uint8_t kept = (e > ebar) & (c != tb);
              kb[c - c0] = kept;
              a += kept ? e : (A)0;
            }
          }
          for (i64 c = 0; c < c1 - c0; ++c) k += kb[c];
          put_bits(mask, bit + c0, kb, c1 - c0);
        }
        rs[b] = a;
        ksum += (double)a;
        kcount += k;
      }
    } else {
      i64 base = jb * C;  // jb is a multiple of BLOCK
      int ns = segments(jb, nb, S, seg, segn);
      for (i64 c = 0; c < C; ++c) {
        for (int k = 0; k < ns; ++k) {
          i64 b0 = seg[k], b1 = seg[k + 1];
          const T* xp = x + off[b0] + c * sC;
          for (i64 b = b0; b < b1; ++b) {
            A e = hinge((A)load(xp + (b - b0) * sS) - sh[b]);
            if (weighted) e *= rw[b];
            uint8_t kept = (e > ebar) & (c != tt[b]);
            kb[b] = kept;
            rs[b] += kept ? e : (A)0;
          }
        }
        for (i64 b = 0; b < nb; ++b) kcount += kb[b];
        put_bits(mask, base + c * nb, kb, nb);
      }
      for (i64 b = 0; b < nb; ++b) ksum += (double)rs[b];
    }
    if (rowsum)
      for (i64 b = 0; b < nb; ++b) rowsum[jb + b] = rs[b];
    jb += nb;
  }
  out[0] += ksum;
  out[1] += (double)kcount;
}

template <typename T> struct Bits { typedef uint32_t type; };
template <> struct Bits<double> { typedef uint64_t type; };
template <> struct Bits<bf16> { typedef uint16_t type; };

// All-ones or zero lanes for the 8 bits of a mask byte: m[v][q] = bit q of v ? ~0 : 0.
template <typename U>
struct Expand {
  U m[256][8];
  Expand() {
    for (int v = 0; v < 256; ++v)
      for (int q = 0; q < 8; ++q) m[v][q] = ((v >> q) & 1) ? (U)~(U)0 : (U)0;
  }
};
template <typename U>
static const Expand<U>& expand() {
  static const Expand<U> table;
  return table;
}

// Backward: grad (contiguous (N, C, S), dtype T) = coef on kept entries, minus the row's
// kept count times coef at the target. coef: coef_rows[j] if given, else the scalar, times
// rw[j] if given. Each row's coefficient is rounded to T once; an entry is then its bits
// or zero (a branch-free select over the mask bits, 8 entries a mask byte).
template <typename T, typename TI>
static void grad(const uint8_t* mask, const TI* tc, i64 C, i64 S, i64 j0, i64 j1, double coef_d,
                 const void* coef_rows_, const void* rw_, T* g) {
  typedef typename Acc<T>::type A;
  typedef typename Bits<T>::type U;
  const A* coef_rows = (const A*)coef_rows_;
  const A* rw = (const A*)rw_;
  A cf[BLOCK];
  U cfu[BLOCK];
  uint8_t kb[BLOCK];
  i64 cnt[BLOCK], seg[BLOCK + 1], segn[BLOCK];
  for (i64 jb = j0; jb < j1;) {
    i64 nb = block_rows(jb, j1, S);
    for (i64 b = 0; b < nb; ++b) {
      A v = coef_rows ? coef_rows[jb + b] : (A)coef_d;
      if (rw) v *= rw[jb + b];
      cf[b] = v;
      T tv;
      store(&tv, v);
      std::memcpy(&cfu[b], &tv, sizeof(U));
      cnt[b] = 0;
    }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (S == 1 && C <= 4096) {
      // A row's mask bits to 0/1 bytes, 8 at a time, then one loop the compiler
      // vectorises: entry = coefficient bits or zero, and the row's kept count.
      uint8_t kr[4096 + 16];
      for (i64 b = 0; b < nb; ++b) {
        i64 j = jb + b, bit = j * C, byte0 = bit >> 3, sh = bit & 7;
        i64 nbytes = (sh + C + 7) >> 3;  // within the mask: its last byte holds bit + C - 1
        for (i64 q = 0; q < nbytes; ++q) {
          // Byte i of w: bit i of the mask byte, then 0/1 (no carry crosses a byte).
          uint64_t w = ((uint64_t)mask[byte0 + q] * 0x0101010101010101ULL) & 0x8040201008040201ULL;
          w = ((w + 0x7f7f7f7f7f7f7f7fULL) >> 7) & 0x0101010101010101ULL;
          std::memcpy(kr + 8 * q, &w, 8);
        }
        const uint8_t* kk = kr + sh;
        U* gr = (U*)(g + j * C);
        const U cv = cfu[b];
        U k = 0;  // at most C <= 4096: fits every U
        for (i64 c = 0; c < C; ++c) {
          k += kk[c];
          gr[c] = (U)(0 - (U)kk[c]) & cv;
        }
        store(g + j * C + tc[j], -(A)(i64)k * cf[b]);
      }
    } else
#endif
    if (S == 1) {
      for (i64 b = 0; b < nb; ++b) {
        i64 j = jb + b, bit = j * C, k = 0, c = 0;
        U* gr = (U*)(g + j * C);
        const U cv = cfu[b];
        for (; c < C && ((bit + c) & 7); ++c) {
          U m = (mask[(bit + c) >> 3] >> ((bit + c) & 7)) & 1;
          k += m;
          gr[c] = (U)(0 - m) & cv;
        }
        const Expand<U>& ex = expand<U>();
        for (; c + 8 <= C; c += 8) {
          const unsigned v = mask[(bit + c) >> 3];
          k += __builtin_popcount(v);
          const U* m = ex.m[v];
          for (int q = 0; q < 8; ++q) gr[c + q] = m[q] & cv;
        }
        for (; c < C; ++c) {
          U m = (mask[(bit + c) >> 3] >> ((bit + c) & 7)) & 1;
          k += m;
          gr[c] = (U)(0 - m) & cv;
        }
        store(g + j * C + tc[j], -(A)k * cf[b]);
      }
    } else {
      i64 base = jb * C;
      int ns = segments(jb, nb, S, seg, segn);
      for (i64 c = 0; c < C; ++c) {
        i64 bit0 = base + c * nb, b = 0;
        if ((bit0 & 7) == 0) {
          for (; b + 8 <= nb; b += 8) {
            unsigned v = mask[(bit0 + b) >> 3];
            for (int q = 0; q < 8; ++q) kb[b + q] = (v >> q) & 1;
          }
        }
        for (; b < nb; ++b) kb[b] = (mask[(bit0 + b) >> 3] >> ((bit0 + b) & 7)) & 1;
        for (int k = 0; k < ns; ++k) {
          i64 b0 = seg[k], b1 = seg[k + 1], n = segn[k], s0 = jb + b0 - n * S;
          U* gp = (U*)(g + (n * C + c) * S + s0) - b0;
          for (i64 bb = b0; bb < b1; ++bb) {
            cnt[bb] += kb[bb];
            gp[bb] = (U)(0 - (U)kb[bb]) & cfu[bb];
          }
        }
      }
      for (i64 b = 0; b < nb; ++b) {
        i64 j = jb + b, n = j / S, s = j - n * S;
        store(g + (n * C + (i64)tc[j]) * S + s, -(A)cnt[b] * cf[b]);
      }
    }
    jb += nb;
  }
}

#define PASS1(NAME, T)                                                                      \
  extern "C" void NAME(const void* x, i64 sN, i64 sC, i64 sS, i64 C, i64 S, i64 j0, i64 j1, \
                       const i64* t, i64 ignore, const void* w, const void* cw, double mu,  \
                       const void* mc, int has_mv, double mv, double* out) {                \
    pass1<T>((const T*)x, sN, sC, sS, C, S, j0, j1, t, ignore, w, cw, mu, mc, has_mv, mv,   \
             out);                                                                          \
  }
PASS1(hem_pass1_f32, float)
PASS1(hem_pass1_f64, double)
PASS1(hem_pass1_bf16, bf16)

#define PASS2(NAME, T, TI)                                                                  \
  extern "C" void NAME(const void* x, i64 sN, i64 sC, i64 sS, i64 C, i64 S, i64 j0, i64 j1, \
                       const i64* t, i64 ignore, const void* w, const void* cw, double mu,  \
                       const void* mc, double ebar, uint8_t* mask, void* tc, void* rw_out,  \
                       void* rowsum, double* out) {                                         \
    pass2<T, TI>((const T*)x, sN, sC, sS, C, S, j0, j1, t, ignore, w, cw, mu, mc, ebar,     \
                 mask, (TI*)tc, rw_out, rowsum, out);                                       \
  }
#define GRAD(NAME, T, TI)                                                                    \
  extern "C" void NAME(const uint8_t* mask, const void* tc, i64 C, i64 S, i64 j0, i64 j1,    \
                       double coef, const void* coef_rows, const void* rw, void* g) {        \
    grad<T, TI>(mask, (const TI*)tc, C, S, j0, j1, coef, coef_rows, rw, (T*)g);              \
  }
// Both passes in one call (a small input: one range of rows): out[0..3] as pass1's,
// out[4..5] as pass2's, with ebar = out[0] / max(out[1], 1).
#define FORWARD(NAME, T, TI)                                                                  \
  extern "C" void NAME(const void* x, i64 sN, i64 sC, i64 sS, i64 C, i64 S, i64 j0, i64 j1,   \
                       const i64* t, i64 ignore, const void* w, const void* cw, double mu,    \
                       const void* mc, int has_mv, double mv, uint8_t* mask, void* tc,        \
                       void* rw_out, void* rowsum, double* out) {                             \
    for (int i = 0; i < 6; ++i) out[i] = 0;                                                   \
    pass1<T>((const T*)x, sN, sC, sS, C, S, j0, j1, t, ignore, w, cw, mu, mc, has_mv, mv,     \
             out);                                                                            \
    double ebar = out[0] / (out[1] > 1 ? out[1] : 1);                                         \
    pass2<T, TI>((const T*)x, sN, sC, sS, C, S, j0, j1, t, ignore, w, cw, mu, mc, ebar, mask, \
                 (TI*)tc, rw_out, rowsum, out + 4);                                           \
  }
#define BOTH(SUFFIX, T, TI) \
  PASS2(hem_pass2_##SUFFIX, T, TI) GRAD(hem_grad_##SUFFIX, T, TI) FORWARD(hem_forward_##SUFFIX, T, TI)
BOTH(f32_u8, float, uint8_t)
BOTH(f32_i16, float, int16_t)
BOTH(f32_i32, float, int32_t)
BOTH(f64_u8, double, uint8_t)
BOTH(f64_i16, double, int16_t)
BOTH(f64_i32, double, int32_t)
BOTH(bf16_u8, bf16, uint8_t)
BOTH(bf16_i16, bf16, int16_t)
BOTH(bf16_i32, bf16, int32_t)

// Online HEM+ counting: add the valid targets (not ignore, in [0, C)) of t to counts, then
// margins[c] = sqrt(scale_over_k * total / (n_present * counts[c])), an absent class taking
// the smallest present count (the largest margin), every class `fallback` while total is 0.
extern "C" void hem_count_online(const i64* t, i64 n, i64 C, i64 ignore, double* counts,
                                 float* margins, double scale_over_k, double fallback) {
  for (i64 i = 0; i < n; ++i) {
    i64 v = t[i];
    if (v != ignore && v >= 0 && v < C) counts[v] += 1.0;
  }
  double total = 0, smallest = INFINITY;
  i64 present = 0;
  for (i64 c = 0; c < C; ++c) {
    if (counts[c] > 0) {
      total += counts[c];
      ++present;
      if (counts[c] < smallest) smallest = counts[c];
    }
  }
  for (i64 c = 0; c < C; ++c) {
    if (total > 0) {
      double s = counts[c] > 0 ? counts[c] : smallest;
      margins[c] = (float)std::sqrt(total * scale_over_k / (double)present / s);
    } else {
      margins[c] = (float)fallback;
    }
  }
}

#ifdef HEM_TORCH_OP
// The small call as a PyTorch operator with its autograd in C++ (compiled with -DHEM_TORCH_OP
// and torch's headers, cpu_kernel.py): hem_plugins_kernel::small_loss, registered by
// hem_register_op(). One range of rows (at most chunked.CHUNK_ELEMS logits), reduction
// 'mean' (the |K| divisor) or 'sum', no row or class weights, no avg_factor: the same
// foreign calls as KernelFunction's forward and backward, without Python around them.
// Values that need the checks (a bad target, non-finite errors, a bad margin) raise
// NEEDS_CHECKS, and cpu_kernel.py runs the call again through KernelFunction, which
// names the problem or applies the rules of non-finite values.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace {
using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
typedef void (*forward_fn)(const void*, i64, i64, i64, i64, i64, i64, i64, const i64*, i64,
                           const void*, const void*, double, const void*, int, double, uint8_t*,
                           void*, void*, void*, double*);
typedef void (*grad_fn)(const uint8_t*, const void*, i64, i64, i64, i64, double, const void*,
                        const void*, void*);
const forward_fn FORWARDS[3][3] = {
    {hem_forward_f32_u8, hem_forward_f32_i16, hem_forward_f32_i32},
    {hem_forward_f64_u8, hem_forward_f64_i16, hem_forward_f64_i32},
    {hem_forward_bf16_u8, hem_forward_bf16_i16, hem_forward_bf16_i32}};
const grad_fn GRADS[3][3] = {{hem_grad_f32_u8, hem_grad_f32_i16, hem_grad_f32_i32},
                             {hem_grad_f64_u8, hem_grad_f64_i16, hem_grad_f64_i32},
                             {hem_grad_bf16_u8, hem_grad_bf16_i16, hem_grad_bf16_i32}};
const i64 TARGET_BYTES[3] = {1, 2, 4};
const char* NEEDS_CHECKS = "hem_plugins_kernel: the values need the checks";

int dtype_index(at::ScalarType s) {
  return s == at::kFloat ? 0 : s == at::kDouble ? 1 : s == at::kBFloat16 ? 2 : -1;
}
int target_index(i64 C) { return C <= 255 ? 0 : C <= 32767 ? 1 : 2; }  // small_int_dtype

struct SmallLoss : public torch::autograd::Function<SmallLoss> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& target,
                        const Tensor& mc, double mu, int64_t ignore, double mask_value,
                        bool has_mask_value, bool sum) {
    const int di = dtype_index(x.scalar_type());
    TORCH_CHECK(di >= 0 && x.device().is_cpu() && x.dim() >= 2, NEEDS_CHECKS);
    const at::ScalarType compute = di == 1 ? at::kDouble : at::kFloat;
    const i64 n = x.size(0), c = x.size(1), s = x.dim() == 2 ? 1 : x.numel() / (n * c);
    const Tensor x3 = x.dim() == 2 ? x : x.reshape({n, c, s});
    const i64 sn = x3.stride(0), sc = x3.stride(1), ss = x.dim() == 2 ? 1 : x3.stride(2);
    const Tensor t = (target.scalar_type() == at::kLong && target.is_contiguous())
                         ? target
                         : target.to(at::kLong).contiguous();
    const i64 rows = n * s;
    const int ti = target_index(c);
    const i64 tbytes = rows * TARGET_BYTES[ti];
    Tensor saved = at::empty({tbytes + (rows * c + 7) / 8}, at::kByte);
    uint8_t* sp = saved.data_ptr<uint8_t>();
    double out[6];
    FORWARDS[di][ti](x3.data_ptr(), sn, sc, ss, c, s, 0, rows, t.data_ptr<i64>(), ignore,
                     nullptr, nullptr, mu, mc.numel() ? mc.data_ptr() : nullptr,
                     has_mask_value ? 1 : 0, mask_value, sp + tbytes, sp, nullptr, nullptr, out);
    TORCH_CHECK(out[2] == 0 && out[3] == 0 && std::isfinite(out[0]), NEEDS_CHECKS);
    const double div = sum ? 1.0 : (out[5] > 1.0 ? out[5] : 1.0);
    ctx->saved_data["div"] = div;
    ctx->saved_data["shape"] = x.sizes();
    ctx->saved_data["s"] = s;
    ctx->saved_data["x_dtype"] = static_cast<int64_t>(x.scalar_type());
    ctx->save_for_backward({saved});
    return at::scalar_tensor(out[4] / div, at::TensorOptions().dtype(compute));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    // As @once_differentiable: a gradient asked for with create_graph=True is a constant
    // (a backward through it raises "does not require grad"); a grad_out that requires grad
    // itself would need a second derivative, which the loss does not have.
    TORCH_CHECK(!(at::GradMode::is_enabled() && grad_out[0].requires_grad()),
                "hem_loss: trying to differentiate twice; the loss's gradient is not "
                "differentiable");
    const Tensor saved = ctx->get_saved_variables()[0];
    const auto shape = ctx->saved_data["shape"].toIntVector();
    const i64 s = ctx->saved_data["s"].toInt(), c = shape[1], rows = shape[0] * s;
    const double coef = grad_out[0].item<double>() / ctx->saved_data["div"].toDouble();
    const at::ScalarType x_dtype = static_cast<at::ScalarType>(ctx->saved_data["x_dtype"].toInt());
    const int di = dtype_index(x_dtype), ti = target_index(c);
    Tensor grad = at::empty(shape, at::TensorOptions().dtype(x_dtype));
    uint8_t* sp = saved.data_ptr<uint8_t>();
    GRADS[di][ti](sp + rows * TARGET_BYTES[ti], sp, c, s, 0, rows, coef, nullptr, nullptr,
                  grad.data_ptr());
    return {grad, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

Tensor small_loss(const Tensor& x, const Tensor& target, const c10::optional<Tensor>& table,
                  double mu, int64_t ignore, c10::optional<double> mask_value, bool sum) {
  // The checks of checks.check_logits_target and check_margin, for a call that skipped them
  // (cpu_kernel.small_call): any failure goes back to Python, which names the problem.
  const int di0 = dtype_index(x.scalar_type());
  TORCH_CHECK(di0 >= 0 && x.device().is_cpu() && x.dim() >= 2 && x.size(1) > 0 &&
                  x.numel() > 0 && target.device().is_cpu() && target.dim() == x.dim() - 1 &&
                  target.size(0) == x.size(0) && std::isfinite(mu) && mu >= 0 &&
                  at::isIntegralType(target.scalar_type(), /*includeBool=*/false),
              NEEDS_CHECKS);
  for (int64_t d = 2; d < x.dim(); ++d) TORCH_CHECK(target.size(d - 1) == x.size(d), NEEDS_CHECKS);
  TORCH_CHECK(!table.has_value() || (table->dim() == 1 && table->numel() == x.size(1)),
              NEEDS_CHECKS);
  // The margins as the kernel reads them (options.margin_table), checked as
  // checks.input_value_flags checks them; an empty tensor where one margin serves all rows.
  Tensor mc = at::empty({0}, at::kFloat);
  if (table.has_value()) {
    const int di = dtype_index(x.scalar_type());
    mc = table->to(at::kCPU, di == 1 ? at::kDouble : at::kFloat).contiguous();
    // C values read in place: no reduction operator, no scalar tensors (a call's margins are few).
    bool ok = true;
    if (mc.scalar_type() == at::kDouble) {
      const double* m = mc.data_ptr<double>();
      for (int64_t i = 0; i < mc.numel(); ++i) ok = ok && m[i] >= 0 && std::isfinite(m[i]);
    } else {
      const float* m = mc.data_ptr<float>();
      for (int64_t i = 0; i < mc.numel(); ++i) ok = ok && m[i] >= 0 && std::isfinite(m[i]);
    }
    TORCH_CHECK(ok, NEEDS_CHECKS);
  }
  return SmallLoss::apply(x, target, mc, mu, ignore, mask_value.value_or(0.0),
                          mask_value.has_value(), sum);
}
}  // namespace

// Registers hem_plugins_kernel::small_loss once per process (another copy of this library,
// built in another cache, may have registered it): 1 registered, 0 already there, -1 failed.
extern "C" int hem_register_op() {
  try {
    if (c10::Dispatcher::singleton().findSchema({"hem_plugins_kernel::small_loss", ""}))
      return 0;
    static torch::Library* library = new torch::Library(
        torch::Library::DEF, "hem_plugins_kernel", {}, __FILE__, __LINE__);
    library->def(
        "small_loss(Tensor x, Tensor target, Tensor? table, float mu, int ignore_index, "
        "float? mask_value, bool sum) -> Tensor",
        &small_loss);
    return 1;
  } catch (...) {
    return -1;
  }
}
#endif  // HEM_TORCH_OP
