// cuda_emu.h: just enough of CUDA to compile graphsmile's device code (kernels/*.cuh,
// unmodified) as host C++ with g++ and run it on the CPU, for tests/test_cuda_emulated.py.
//
// Execution model.
//   * Blocks run one after the other, in an order chosen by the scheduling policy.
//   * The threads of a block are fibers on one OS thread (a small hand-written context switch on
//     x86-64, ucontext elsewhere or with -DCUDA_EMU_UCONTEXT), run by a deterministic
//     cooperative scheduler: a thread runs until it reaches __syncthreads(), a warp shuffle or
//     its end. Lanes of a warp are independent (the worst case of Volta's independent thread
//     scheduling): nothing is assumed about lock-step execution.
//   * __syncthreads() releases when every thread of the block that has not exited waits at the
//     same barrier (same call site and same dynamic instance); exited threads count as arrived,
//     as on sm_70+. A barrier some live threads never reach is reported as a deadlock.
//   * __shfl_xor_sync(0xffffffff, v, laneMask, width) is exact: it resolves when all 32 lanes of
//     the warp wait at the same shuffle (same site, instance, laneMask and width); a lane that
//     exited, a partial warp or any other mask is reported as an error (undefined in CUDA).
//   * __shared__ variables are function statics (one copy, shared by the block's threads),
//     filled with 0xff bytes (NaN / -1) before every block: a read of shared memory the block
//     did not write shows up as NaN instead of a stale value of the previous block.
//   * Policy 0 runs blocks and threads in index order, 1 in reverse order, p >= 2 in an order
//     shuffled (seed p) for every block and between every two barriers. A result that depends
//     on the policy is a race (a missing barrier, two blocks writing one element, ...).
//
// Errors (deadlock, divergent barrier or shuffle, bad launch) print "cuda_emu: ..." to stderr
// and exit with status 3. Built with -fsanitize=address,undefined the global-memory accesses
// of the kernels are bounds-checked too (fiber switches are annotated for ASan).
#pragma once

#include <elf.h>
#include <link.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && !defined(CUDA_EMU_UCONTEXT)
#define CUDA_EMU_ASM_SWITCH 1
#else
#define CUDA_EMU_ASM_SWITCH 0
#endif

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define CUDA_EMU_ASAN 1
#else
#define CUDA_EMU_ASAN 0
#endif

// ---- CUDA keywords --------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static
// __restrict__ is a GNU keyword already.

// ---- vector types ---------------------------------------------------------------------------
struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct __attribute__((aligned(8))) float2 {
  float x, y;
};
struct __attribute__((aligned(16))) float4 {
  float x, y, z, w;
};
struct __attribute__((aligned(16))) double2 {
  double x, y;
};

// ---- math: the float overloads, as in device code ---------------------------------------------
using std::sqrt;
using std::fabs;
using std::exp;
using std::log;
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
// The fast intrinsics (shift_pair_nll_tiled_kernel with kFast): the accurate functions here, so
// the emulator checks the kernel's logic, not the approximations (those are tested on a GPU).
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }

// ---- built-in variables -------------------------------------------------------------------------
inline uint3 threadIdx{0, 0, 0};
inline uint3 blockIdx{0, 0, 0};
inline dim3 blockDim{1, 1, 1};
inline dim3 gridDim{1, 1, 1};
inline constexpr int warpSize = 32;

namespace cuda_emu {

enum class St : uint8_t { Runnable, AtSync, AtShfl, Done };

#if CUDA_EMU_ASM_SWITCH
// cuemu_switch(save, to): pushes the callee-saved registers, MXCSR and the x87 control word
// on the current stack, stores the stack pointer in *save, switches to the stack `to` (saved
// the same way, or prepared by init_fiber) and pops them from there. ucontext's
// swapcontext does the same plus two sigprocmask system calls, ten times slower.
extern "C" void cuemu_switch(void** save, void* to);
asm(R"(
  .pushsection .text
  .weak cuemu_switch
  .type cuemu_switch, @function
cuemu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size cuemu_switch, .-cuemu_switch
  .popsection
)");
#endif

struct Fiber {
#if CUDA_EMU_ASM_SWITCH
  void* sp = nullptr;
#else
  ucontext_t ctx;
#endif
  St st = St::Done;
  const char* file = "";
  int line = 0;
  uint64_t nsync = 0, nshfl = 0;  // barriers / shuffles executed so far (dynamic instance)
  // pending shuffle
  unsigned mask = 0;
  int lane_mask = 0, width = 0;
  size_t vsize = 0;
  unsigned char val[8] = {}, out[8] = {};
};

struct Stats {
  uint64_t launches = 0, blocks = 0, threads = 0, switches = 0;
};

struct Sched {
  std::vector<Fiber> f;
  std::vector<char*> stacks;
  size_t stack_size = 64 * 1024;
#if CUDA_EMU_ASM_SWITCH
  void* main_sp = nullptr;
#else
  ucontext_t main_ctx;
#endif
  int cur = -1;
  int nthreads = 0;
  const std::function<void()>* body = nullptr;
  int policy = 0;
  std::mt19937_64 rng{0};
  const char* kernel = "";
  Stats stats;
#if CUDA_EMU_ASAN
  const void* main_bottom = nullptr;
  size_t main_size = 0;
#endif
};

inline Sched& S() {
  static Sched s;
  return s;
}

[[noreturn]] inline void fail(const char* fmt, ...) {
  Sched& s = S();
  std::fprintf(stderr, "cuda_emu: kernel %s, block (%u,%u,%u)", s.kernel, blockIdx.x, blockIdx.y, blockIdx.z);
  if (s.cur >= 0) std::fprintf(stderr, ", thread %d", s.cur);
  std::fprintf(stderr, ": ");
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "\n");
  std::fflush(stderr);
  std::_Exit(3);
}

// ---- fiber switching (annotated for AddressSanitizer) ---------------------------------------------
inline void raw_switch_to_main(Fiber& me) {
  Sched& s = S();
#if CUDA_EMU_ASM_SWITCH
  cuemu_switch(&me.sp, s.main_sp);
#else
  swapcontext(&me.ctx, &s.main_ctx);
#endif
}

inline void switch_to_main(bool exiting) {
  Sched& s = S();
  Fiber& me = s.f[s.cur];
#if CUDA_EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(exiting ? nullptr : &fake, s.main_bottom, s.main_size);
  raw_switch_to_main(me);
  __sanitizer_finish_switch_fiber(fake, &s.main_bottom, &s.main_size);
#else
  (void)exiting;
  raw_switch_to_main(me);
#endif
}

inline void resume(int tid) {
  Sched& s = S();
  s.cur = tid;
  threadIdx = uint3{static_cast<unsigned>(tid), 0u, 0u};
  ++s.stats.switches;
#if CUDA_EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, s.stacks[tid], s.stack_size);
#endif
#if CUDA_EMU_ASM_SWITCH
  cuemu_switch(&s.main_sp, s.f[tid].sp);
#else
  swapcontext(&s.main_ctx, &s.f[tid].ctx);
#endif
#if CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  s.cur = -1;
}

inline void fiber_entry() {
  Sched& s = S();
#if CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &s.main_bottom, &s.main_size);
#endif
  (*s.body)();
  s.f[s.cur].st = St::Done;
  switch_to_main(/*exiting=*/true);
  fail("resumed an exited thread");
}

// A fresh thread on stack `t`: the first switch to it enters fiber_entry.
inline void init_fiber(Fiber& f, int t) {
  Sched& s = S();
#if CUDA_EMU_ASM_SWITCH
  static const uint64_t csr = [] {
    uint32_t mxcsr;
    uint16_t fpucw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpucw));
    return static_cast<uint64_t>(mxcsr) | (static_cast<uint64_t>(fpucw) << 32);
  }();
  auto* sp = reinterpret_cast<uint64_t*>((reinterpret_cast<uintptr_t>(s.stacks[t]) + s.stack_size) & ~uintptr_t(15));
  *--sp = 0;                                              // fiber_entry's return address (never used)
  *--sp = reinterpret_cast<uint64_t>(&fiber_entry);       // popped by cuemu_switch's ret
  for (int r = 0; r < 6; ++r) *--sp = 0;                  // rbp, rbx, r12-r15
  *--sp = csr;                                            // MXCSR, x87 control word
  f.sp = sp;
#else
  if (getcontext(&f.ctx) != 0) fail("getcontext failed");
  f.ctx.uc_stack.ss_sp = s.stacks[t];
  f.ctx.uc_stack.ss_size = s.stack_size;
  f.ctx.uc_link = nullptr;
  makecontext(&f.ctx, &fiber_entry, 0);
#endif
}

// ---- shared memory poisoning --------------------------------------------------------------------
// g++ ignores section attributes on the statics of function templates, so the __shared__
// arrays are found by name instead: the writable function-local statics (mangled "_ZZN...")
// of the functions whose mangled name starts with CUDA_EMU_SHARED_PREFIX (the kernels'
// namespace; device code has no other mutable statics), looked up once in the executable's
// own symbol table (/proc/self/exe) and shifted by the load bias (PIE).
#ifndef CUDA_EMU_SHARED_PREFIX
#define CUDA_EMU_SHARED_PREFIX "_ZZN10graphsmile3gpu"
#endif

struct Range {
  uintptr_t lo, hi;
};

inline int load_bias_cb(dl_phdr_info* info, size_t, void* data) {
  *static_cast<uintptr_t*>(data) = info->dlpi_addr;  // the first object is the executable
  return 1;
}

inline std::vector<Range> find_shared_arrays() {
  std::vector<Range> out;
  FILE* fp = std::fopen("/proc/self/exe", "rb");
  if (fp == nullptr) fail("cannot open /proc/self/exe to find the __shared__ arrays");
  std::vector<unsigned char> img;
  unsigned char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, fp)) > 0) img.insert(img.end(), buf, buf + n);
  std::fclose(fp);
  if (img.size() < sizeof(Elf64_Ehdr)) fail("/proc/self/exe is not an ELF file");
  const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(img.data());
  if (std::memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64)
    fail("/proc/self/exe is not a 64-bit ELF file");
  uintptr_t bias = 0;
  dl_iterate_phdr(&load_bias_cb, &bias);
  const auto* sh = reinterpret_cast<const Elf64_Shdr*>(img.data() + eh->e_shoff);
  const size_t plen = std::strlen(CUDA_EMU_SHARED_PREFIX);
  for (int i = 0; i < eh->e_shnum; ++i) {
    if (sh[i].sh_type != SHT_SYMTAB) continue;
    const auto* sym = reinterpret_cast<const Elf64_Sym*>(img.data() + sh[i].sh_offset);
    const char* str = reinterpret_cast<const char*>(img.data() + sh[sh[i].sh_link].sh_offset);
    const size_t count = sh[i].sh_size / sizeof(Elf64_Sym);
    for (size_t k = 0; k < count; ++k) {
      if (ELF64_ST_TYPE(sym[k].st_info) != STT_OBJECT || sym[k].st_size == 0 || sym[k].st_shndx == SHN_UNDEF ||
          sym[k].st_shndx >= SHN_LORESERVE || sym[k].st_shndx >= eh->e_shnum || !(sh[sym[k].st_shndx].sh_flags & SHF_WRITE))
        continue;  // only writable statics: a constant table of a device function is left alone
      const char* name = str + sym[k].st_name;
      if (std::strncmp(name, CUDA_EMU_SHARED_PREFIX, plen) != 0) continue;
      out.push_back({bias + sym[k].st_value, bias + sym[k].st_value + sym[k].st_size});
    }
  }
  if (out.empty()) fail("no __shared__ array found in the symbol table (stripped binary?)");
  return out;
}

inline const std::vector<Range>& shared_arrays() {
  static const std::vector<Range> r = find_shared_arrays();
  return r;
}

// Fills every __shared__ array with 0xff bytes (float/double NaN, integer -1): shared memory
// is garbage at the start of a block on a GPU, and a stale value of the previous block must
// not pass for a result here.
inline void poison_shared() {
  for (const Range& r : shared_arrays()) std::memset(reinterpret_cast<void*>(r.lo), 0xff, r.hi - r.lo);
}

inline size_t shared_bytes() {
  size_t n = 0;
  for (const Range& r : shared_arrays()) n += r.hi - r.lo;
  return n;
}

// ---- barriers and shuffles -------------------------------------------------------------------------
inline const char* state_name(St st) {
  switch (st) {
    case St::Runnable: return "runnable";
    case St::AtSync: return "__syncthreads";
    case St::AtShfl: return "__shfl_xor_sync";
    default: return "exited";
  }
}

[[noreturn]] inline void fail_state(const char* what) {
  Sched& s = S();
  std::fprintf(stderr, "cuda_emu: kernel %s, block (%u,%u,%u): %s; thread states:\n", s.kernel, blockIdx.x,
               blockIdx.y, blockIdx.z, what);
  for (int t = 0; t < s.nthreads; ++t) {
    const Fiber& f = s.f[t];
    std::fprintf(stderr, "  thread %d: %s", t, state_name(f.st));
    if (f.st == St::AtSync || f.st == St::AtShfl)
      std::fprintf(stderr, " at %s:%d (barrier #%llu, shuffle #%llu)", f.file, f.line,
                   static_cast<unsigned long long>(f.nsync), static_cast<unsigned long long>(f.nshfl));
    std::fprintf(stderr, "\n");
  }
  std::fflush(stderr);
  std::_Exit(3);
}

inline void check_in_kernel(const char* what) {
  if (S().cur < 0) fail("%s called outside a kernel", what);
}

// Resolves warp w's shuffle once all its lanes wait at it.
inline void try_resolve_warp(int w) {
  Sched& s = S();
  const int l0 = w * 32;
  if (l0 + 32 > s.nthreads) fail("__shfl_xor_sync with a full mask in a partial warp (blockDim %d)", s.nthreads);
  for (int l = 0; l < 32; ++l) {
    const St st = s.f[l0 + l].st;
    if (st == St::Runnable || st == St::AtSync) return;  // not there yet (or a deadlock, found later)
  }
  const Fiber& f0 = s.f[l0];
  for (int l = 0; l < 32; ++l) {
    const Fiber& f = s.f[l0 + l];
    if (f.st == St::Done) fail_state("__shfl_xor_sync with mask 0xffffffff but a lane of the warp has exited");
    if (f.line != f0.line || std::strcmp(f.file, f0.file) != 0 || f.nshfl != f0.nshfl || f.lane_mask != f0.lane_mask ||
        f.width != f0.width || f.vsize != f0.vsize || f.mask != f0.mask)
      fail_state("the lanes of a warp wait at different shuffles (divergent __shfl_xor_sync)");
  }
  for (int l = 0; l < 32; ++l) {
    Fiber& f = s.f[l0 + l];
    // CUDA: the source lane is l ^ laneMask; a lane of a later width-group gives one's own value.
    const int src = l ^ f.lane_mask;
    const int group_end = (l / f.width + 1) * f.width;
    const Fiber& from = src >= group_end ? f : s.f[l0 + src];
    std::memcpy(f.out, from.val, f.vsize);
  }
  for (int l = 0; l < 32; ++l) s.f[l0 + l].st = St::Runnable;
}

// Runs one block: blockDim.x fibers executing *body.
inline void run_block(const std::function<void()>& body) {
  Sched& s = S();
  const int n = s.nthreads;
  s.body = &body;
  poison_shared();
  for (int t = 0; t < n; ++t) {
    Fiber& f = s.f[t];
    f = Fiber{};
    init_fiber(f, t);
    f.st = St::Runnable;
  }
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  if (s.policy == 1) std::reverse(order.begin(), order.end());
  for (;;) {
    if (s.policy >= 2) std::shuffle(order.begin(), order.end(), s.rng);
    bool ran = false;
    for (int t : order) {
      if (s.f[t].st != St::Runnable) continue;
      ran = true;
      resume(t);
      if (s.f[t].st == St::AtShfl) try_resolve_warp(t / 32);
      if (s.f[t].st == St::Done) {  // an exit may complete a warp's shuffle (an error) or a barrier
        const int w = t / 32;
        if ((w + 1) * 32 <= n) {
          bool any_shfl = false;
          for (int l = 0; l < 32; ++l) any_shfl |= s.f[w * 32 + l].st == St::AtShfl;
          if (any_shfl) try_resolve_warp(w);
        }
      }
    }
    if (ran) continue;
    // Nobody can run: everybody exited, or every live thread waits at one barrier.
    int live = 0, first = -1;
    for (int t = 0; t < n; ++t)
      if (s.f[t].st != St::Done) {
        ++live;
        if (first < 0) first = t;
      }
    if (live == 0) break;
    const Fiber& f0 = s.f[first];
    for (int t = 0; t < n; ++t) {
      const Fiber& f = s.f[t];
      if (f.st == St::Done) continue;
      if (f.st != St::AtSync) fail_state("deadlock: some threads wait at __syncthreads, others at a shuffle");
      if (f.line != f0.line || std::strcmp(f.file, f0.file) != 0 || f.nsync != f0.nsync)
        fail_state("divergent __syncthreads: live threads wait at different barriers");
    }
    for (int t = 0; t < n; ++t)
      if (s.f[t].st == St::AtSync) s.f[t].st = St::Runnable;
  }
  s.body = nullptr;
}

// Launches body() on a grid of blocks of block.x threads (1-D blocks only).
inline void launch(const char* name, dim3 grid, dim3 block, const std::function<void()>& body) {
  Sched& s = S();
  if (block.y != 1 || block.z != 1) fail("only 1-D blocks are emulated");
  if (block.x == 0 || block.x > 1024) fail("bad block size %u", block.x);
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) fail("empty grid (%u,%u,%u): an invalid launch in CUDA", grid.x, grid.y, grid.z);
  if (grid.y > 65535 || grid.z > 65535) fail("grid.y/z over 65535");
  s.kernel = name;
  s.nthreads = static_cast<int>(block.x);
  if (s.f.size() < block.x) s.f.resize(block.x);
  while (s.stacks.size() < block.x) {  // each stack with a guard page below it: an overflow faults
    const size_t guard = 4096;
    void* p = mmap(nullptr, s.stack_size + guard, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || mprotect(p, guard, PROT_NONE) != 0) fail("mmap of a fiber stack failed");
    s.stacks.push_back(static_cast<char*>(p) + guard);
  }
  gridDim = grid;
  blockDim = block;
  const uint64_t nblocks = uint64_t(grid.x) * grid.y * grid.z;
  std::vector<uint64_t> order(nblocks);
  std::iota(order.begin(), order.end(), uint64_t(0));
  if (s.policy == 1) std::reverse(order.begin(), order.end());
  if (s.policy >= 2) std::shuffle(order.begin(), order.end(), s.rng);
  for (uint64_t b : order) {
    blockIdx = uint3{static_cast<unsigned>(b % grid.x), static_cast<unsigned>((b / grid.x) % grid.y),
                     static_cast<unsigned>(b / (uint64_t(grid.x) * grid.y))};
    run_block(body);
    ++s.stats.blocks;
    s.stats.threads += block.x;
  }
  ++s.stats.launches;
  s.kernel = "";
}

inline void set_policy(int policy) {
  S().policy = policy;
  S().rng.seed(static_cast<uint64_t>(policy));
}

}  // namespace cuda_emu

// ---- intrinsics (global namespace, found by unqualified lookup from the kernels) -----------------
inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  using namespace cuda_emu;
  check_in_kernel("__syncthreads");
  Sched& s = S();
  Fiber& me = s.f[s.cur];
  me.st = St::AtSync;
  me.file = file;
  me.line = line;
  switch_to_main(false);
  ++me.nsync;
}

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize, const char* file = __builtin_FILE(),
                         int line = __builtin_LINE()) {
  using namespace cuda_emu;
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "shuffle of a type CUDA cannot shuffle");
  check_in_kernel("__shfl_xor_sync");
  if (mask != 0xffffffffu) fail("__shfl_xor_sync with mask %#x: only full-warp masks are emulated", mask);
  if (width <= 0 || width > 32 || (width & (width - 1)) != 0)
    fail("__shfl_xor_sync with width %d (must be a power of two <= 32)", width);
  Sched& s = S();
  Fiber& me = s.f[s.cur];
  me.st = St::AtShfl;
  me.file = file;
  me.line = line;
  me.mask = mask;
  me.lane_mask = laneMask;
  me.width = width;
  me.vsize = sizeof(T);
  std::memcpy(me.val, &var, sizeof(T));
  switch_to_main(false);
  ++me.nshfl;
  T out;
  std::memcpy(&out, me.out, sizeof(T));
  return out;
}

// ---- tensor cores: nvcuda::wmma at the API level ---------------------------------------------------
// The hardware spreads a fragment over the warp's registers in a layout the API never shows, so
// here every lane holds the whole tile (as floats) and computes the whole product: the results
// are the API's. What the hardware would reject is an error: pointers not 32-byte aligned, a
// leading dimension that is not a multiple of 16 bytes. (Tensor cores accumulate in fp32 with
// their own rounding; the products of 16-bit inputs are exact in either.)
struct __half {
  uint16_t x;
};
struct __nv_bfloat16 {
  uint16_t x;
};
inline float cuda_emu_to_float(__nv_bfloat16 v) {
  const uint32_t u = static_cast<uint32_t>(v.x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float cuda_emu_to_float(__half v) {  // IEEE binary16 -> binary32, exact
  const uint32_t sign = (v.x & 0x8000u) ? 1u : 0u, exp = (v.x >> 10) & 0x1fu, man = v.x & 0x3ffu;
  float f;
  if (exp == 0) f = std::ldexp(static_cast<float>(man), -24);
  else if (exp == 31) f = man ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  else f = std::ldexp(static_cast<float>(man | 0x400u), static_cast<int>(exp) - 25);
  return sign ? -f : f;
}
inline void __trap() { cuda_emu::fail("__trap() reached"); }

namespace nvcuda {
namespace wmma {
struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static constexpr int rows = std::is_same<Use, matrix_b>::value ? K : M;
  static constexpr int cols = std::is_same<Use, matrix_a>::value ? K : N;
  float v[rows * cols];
};

inline void emu_check_ptr(const void* p, unsigned ldm, size_t elem, const char* what) {
  cuda_emu::check_in_kernel(what);
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0)
    cuda_emu::fail("%s: pointer %p is not 32-byte aligned (wmma needs 256-bit alignment)", what, p);
  if ((ldm * elem) % 16 != 0) cuda_emu::fail("%s: ldm = %u elements is not a multiple of 16 bytes", what, ldm);
}

template <typename Use, int M, int N, int K, typename T, typename L>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, float value) {
  for (float& x : f.v) x = value;
}

template <typename Use, int M, int N, int K, typename T, typename L>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const T* p, unsigned ldm) {
  static_assert(std::is_same<L, row_major>::value || std::is_same<L, col_major>::value,
                "load_matrix_sync without a layout is for accumulators");
  emu_check_ptr(p, ldm, sizeof(T), "wmma::load_matrix_sync");
  using F = fragment<Use, M, N, K, T, L>;
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c)
      f.v[r * F::cols + c] = cuda_emu_to_float(std::is_same<L, row_major>::value ? p[r * ldm + c] : p[c * ldm + r]);
}

template <int M, int N, int K, typename Ta, typename La, typename Tb, typename Lb>
inline void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, Ta, La>& a,
                     const fragment<matrix_b, M, N, K, Tb, Lb>& b, const fragment<accumulator, M, N, K, float>& c) {
  static_assert(std::is_same<Ta, Tb>::value, "wmma::mma_sync: A and B must have the same element type");
  cuda_emu::check_in_kernel("wmma::mma_sync");
  float tmp[M * N];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float acc = c.v[i * N + j];
      for (int k = 0; k < K; ++k) acc += a.v[i * K + k] * b.v[k * N + j];
      tmp[i * N + j] = acc;
    }
  std::memcpy(d.v, tmp, sizeof(tmp));  // d may be c
}

template <int M, int N, int K>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t layout) {
  emu_check_ptr(p, ldm, sizeof(float), "wmma::store_matrix_sync");
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) p[layout == mem_row_major ? i * ldm + j : j * ldm + i] = f.v[i * N + j];
}
}  // namespace wmma
}  // namespace nvcuda
