// CPU emulator harness of graphsmile's CUDA kernels: includes the real kernels/*.cuh (through
// cuda_emu.h, no change to the device code) and runs them with the launch sequences of the
// host launchers csrc/cuda/window_propagate_cuda.cu and csrc/cuda/shift_pair_cuda.cu, which it
// mirrors by hand: a change to a launcher (grid shape, kernel order, temp buffers, zeroing)
// must be repeated in the run_* functions below.
//
//   emu_main IN OUT POLICIES
//
// IN holds jobs (written by tests/test_cuda_emulated.py):
//   job NAME OP DTYPE            OP: window_norm | window_norm_backward | window_spmm |
//   int KEY VALUE                    window_spmm_backward | shift_pair_sum | shift_pair_sum_backward |
//                                    shift_pair_nll | upload_by_value | rows_auto_split (DTYPE ignored
//                                    by the last two)
//   arr KEY TYPE COUNT\n<bytes>  DTYPE / TYPE: f32 | f64 | bf16 | i64 (little endian)
//   end
// Every job runs once per scheduling policy of the comma-separated list POLICIES (cuda_emu.h);
// OUT gets, per job, "job NAME" then the outputs as "arr P.KEY TYPE COUNT\n<bytes>" (P the policy)
// and "end". Device buffers the launchers allocate with at::empty (outputs, temp buffers) start
// filled with NaN here, so an element a kernel should write and does not shows up.
#include "cuda_emu.h"

#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>

#include "shift_pair.cuh"
#include "window_propagate.cuh"

using namespace graphsmile;

// bfloat16 with c10::BFloat16's conversions (round to nearest even, NaN kept), for the
// scalar_t = bf16, acc_t = float instantiation the launchers dispatch to.
struct BF16 {
  uint16_t x;
  BF16() = default;
  BF16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if (std::isnan(f)) x = 0x7fc0;
    else x = static_cast<uint16_t>((u + (((u >> 16) & 1u) + 0x7fffu)) >> 16);
  }
  operator float() const {
    const uint32_t u = static_cast<uint32_t>(x) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

namespace {

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "emu_main: %s\n", msg.c_str());
  std::exit(2);
}

struct Array {
  std::string type;
  int64_t count = 0;
  std::vector<unsigned char> bytes;
};

struct Job {
  std::string name, op, dtype;
  std::map<std::string, int64_t> ints;
  std::map<std::string, Array> arrs;
};

using Outputs = std::vector<std::pair<std::string, Array>>;

size_t type_size(const std::string& t) {
  if (t == "f32") return 4;
  if (t == "f64" || t == "i64") return 8;
  if (t == "bf16") return 2;
  die("unknown type " + t);
}

template <typename T>
const char* type_name();
template <>
const char* type_name<float>() { return "f32"; }
template <>
const char* type_name<double>() { return "f64"; }
template <>
const char* type_name<BF16>() { return "bf16"; }
template <>
const char* type_name<int64_t>() { return "i64"; }

template <typename T>
T poison() {
  if constexpr (std::is_same_v<T, int64_t>) return int64_t(-0x5a5a5a5a5a5a5a5a);
  else return T(std::numeric_limits<float>::quiet_NaN());
}

std::vector<Job> read_jobs(const char* path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) die(std::string("cannot open ") + path);
  std::vector<Job> jobs;
  std::string line;
  Job* cur = nullptr;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::istringstream ls(line);
    std::string kind;
    ls >> kind;
    if (kind == "job") {
      jobs.emplace_back();
      cur = &jobs.back();
      ls >> cur->name >> cur->op >> cur->dtype;
    } else if (cur == nullptr) {
      die("input: '" + kind + "' before any job");
    } else if (kind == "int") {
      std::string k;
      int64_t v;
      ls >> k >> v;
      cur->ints[k] = v;
    } else if (kind == "arr") {
      std::string k;
      Array a;
      ls >> k >> a.type >> a.count;
      a.bytes.resize(static_cast<size_t>(a.count) * type_size(a.type));
      if (!a.bytes.empty()) in.read(reinterpret_cast<char*>(a.bytes.data()), static_cast<std::streamsize>(a.bytes.size()));
      if (!in) die("input: truncated array " + k);
      cur->arrs[k] = std::move(a);
    } else if (kind == "end") {
      cur = nullptr;
    } else {
      die("input: unknown line '" + line + "'");
    }
  }
  return jobs;
}

int64_t geti(const Job& j, const std::string& k) {
  auto it = j.ints.find(k);
  if (it == j.ints.end()) die("job " + j.name + ": missing int " + k);
  return it->second;
}

int64_t geti(const Job& j, const std::string& k, int64_t fallback) {
  auto it = j.ints.find(k);
  return it == j.ints.end() ? fallback : it->second;
}

// A fresh heap copy of an input array (one allocation per array: out-of-bounds reads are seen by ASan).
template <typename T>
std::vector<T> geta(const Job& j, const std::string& k) {
  auto it = j.arrs.find(k);
  if (it == j.arrs.end()) die("job " + j.name + ": missing array " + k);
  const Array& a = it->second;
  if (a.type != type_name<T>()) die("job " + j.name + ": array " + k + " is " + a.type + ", expected " + type_name<T>());
  std::vector<T> v(static_cast<size_t>(a.count));
  if (!v.empty()) std::memcpy(v.data(), a.bytes.data(), a.bytes.size());
  return v;
}

template <typename T>
void put(Outputs& out, const std::string& k, const std::vector<T>& v) {
  Array a;
  a.type = type_name<T>();
  a.count = static_cast<int64_t>(v.size());
  a.bytes.resize(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(a.bytes.data(), v.data(), a.bytes.size());
  out.emplace_back(k, std::move(a));
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// As the launchers on an sm_80+ GPU: 16-bit storage runs the tensor-core kernels unless
// GRAPHSMILE_CUDA_TENSOR_CORES=0.
bool tensor_cores() {
  const char* e = std::getenv("GRAPHSMILE_CUDA_TENSOR_CORES");
  return !(e && std::strcmp(e, "0") == 0);
}
// As the launchers' env_int: the integer in `name`, `fallback` when unset or empty.
int64_t env_int(const char* name, int64_t fallback, int64_t lo, int64_t hi) {
  const char* e = std::getenv(name);
  if (e == nullptr || *e == '\0') return fallback;
  const long long v = std::strtoll(e, nullptr, 10);
  if (v < lo || v > hi) die(std::string(name) + " must be " + std::to_string(lo) + " to " + std::to_string(hi));
  return v;
}
// As the launchers: feature tiles per block of the tensor-core forward, of the staged fp32/fp64
// forward and pass A (0: the original FFMA kernels), and the split pass B's 32-feature steps per
// block (0: unsplit).
int64_t tc_feature_tiles() { return env_int("GRAPHSMILE_CUDA_TC_DTILES", gpu::kTcDTiles, 1, 64); }
int64_t ffma_feature_tiles() { return env_int("GRAPHSMILE_CUDA_FFMA_DTILES", 0, 0, 64); }
int64_t rows_feature_split(int64_t row_tiles, int64_t D) {
  const char* e = std::getenv("GRAPHSMILE_CUDA_ROWS_FSPLIT");
  if (e != nullptr && std::strcmp(e, "auto") == 0) return gpu::rows_auto_feature_steps(row_tiles, D);
  return env_int("GRAPHSMILE_CUDA_ROWS_FSPLIT", 0, 0, 1024);
}
// The emulated storage types with a wmma fragment type (the launchers' TensorCoreType).
template <typename scalar_t>
constexpr bool kTensorCoreType = std::is_same<scalar_t, BF16>::value;

unsigned grid_x(int64_t blocks) {
  if (blocks > INT32_MAX) die("grid.x too large");
  return static_cast<unsigned>(blocks);
}
unsigned grid_y(int64_t blocks) {
  if (blocks > 65535) die("grid.y too large");
  return static_cast<unsigned>(blocks);
}

// ---- window ops: mirror of csrc/window_common.h (make_window_meta) and
// csrc/cuda/window_propagate_cuda.cu ----------------------------------------------------------------

struct WindowMetaEmu {
  int64_t B = 0, N = 0, E = 0;
  // Separate allocations (the launcher packs them into one tensor): an index past one array is
  // an ASan error here instead of a silent read of the next one.
  std::vector<int64_t> start, length, band, edge_base;
  gpu::WindowArgs args{};
};

WindowMetaEmu window_meta(const Job& j) {
  WindowMetaEmu m;
  const std::vector<int64_t> lens = geta<int64_t>(j, "lengths");
  const int64_t M = geti(j, "M"), wp = geti(j, "wp"), wf = geti(j, "wf"), mode = geti(j, "mode");
  m.B = static_cast<int64_t>(lens.size());
  for (int64_t b = 0; b < m.B; ++b) {
    if (lens[b] < 1) die("lengths must be >= 1");
    m.start.push_back(m.N);
    m.length.push_back(lens[b]);
    m.band.push_back(window_band_count(lens[b], wp, wf));
    m.edge_base.push_back(m.E);
    m.N += lens[b];
    m.E += M * (M - 1) * m.band.back();
  }
  m.args.start = m.start.data();
  m.args.length = m.length.data();
  m.args.band = m.band.data();
  m.args.edge_base = m.edge_base.data();
  m.args.B = m.B;
  m.args.N = m.N;
  m.args.M = M;
  m.args.wp = wp;
  m.args.wf = wf;
  m.args.mode = mode;
  return m;
}

template <typename scalar_t, typename acc_t, typename Edges>
void launch_relative_reduce(const Edges& edges, scalar_t* out, const gpu::WindowArgs& args, int64_t entries) {
  cuda_emu::launch("relative_reduce_kernel", dim3(grid_x(entries)), dim3(gpu::kReduceThreads),
                   [&] { gpu::relative_reduce_kernel<scalar_t, acc_t, Edges>(edges, out, args); });
}

template <typename scalar_t, typename acc_t>
void run_window_norm(const Job& j, Outputs& out) {
  WindowMetaEmu meta = window_meta(j);
  const std::vector<scalar_t> w = geta<scalar_t>(j, "w");
  const int64_t rows = meta.args.M * meta.N;
  std::vector<scalar_t> s(static_cast<size_t>(rows), poison<scalar_t>());
  const unsigned blocks = grid_x(ceil_div(rows, gpu::kNormWarps));
  cuda_emu::launch("window_norm_kernel", dim3(blocks), dim3(gpu::kNormWarps * 32),
                   [&] { gpu::window_norm_kernel<scalar_t, acc_t>(w.data(), s.data(), meta.args); });
  put(out, "s", s);
}

template <typename scalar_t, typename acc_t>
void run_window_norm_backward(const Job& j, Outputs& out) {
  WindowMetaEmu meta = window_meta(j);
  const std::vector<scalar_t> w = geta<scalar_t>(j, "w"), s = geta<scalar_t>(j, "s"), gs = geta<scalar_t>(j, "gs");
  const int64_t rows = meta.args.M * meta.N, mode = meta.args.mode;
  std::vector<scalar_t> gw(w.size(), poison<scalar_t>());
  if (mode == kPerEdge && static_cast<int64_t>(gw.size()) > meta.E)
    std::fill(gw.begin() + meta.E, gw.end(), scalar_t(0.0f));  // unused entries
  const unsigned blocks = grid_x(ceil_div(rows, gpu::kNormWarps));
  if (mode == kPerEdge) {
    cuda_emu::launch("window_norm_grad_per_edge_kernel", dim3(blocks), dim3(gpu::kNormWarps * 32), [&] {
      gpu::window_norm_grad_per_edge_kernel<scalar_t, acc_t>(gs.data(), s.data(), w.data(), gw.data(), meta.args);
    });
  } else if constexpr (gpu::kRecomputeNorm<scalar_t, acc_t>) {
    std::vector<acc_t> s_acc(static_cast<size_t>(rows), poison<acc_t>());
    if (rows > 0) {
      cuda_emu::launch("window_norm_kernel", dim3(blocks), dim3(gpu::kNormWarps * 32),
                       [&] { gpu::window_norm_kernel<scalar_t, acc_t, acc_t>(w.data(), s_acc.data(), meta.args); });
    }
    gpu::NormGradEdges<scalar_t, acc_t, acc_t> edges{s_acc.data(), gs.data()};
    launch_relative_reduce<scalar_t, acc_t>(edges, gw.data(), meta.args, static_cast<int64_t>(gw.size()));
  } else {
    gpu::NormGradEdges<scalar_t, acc_t> edges{s.data(), gs.data()};
    launch_relative_reduce<scalar_t, acc_t>(edges, gw.data(), meta.args, static_cast<int64_t>(gw.size()));
  }
  put(out, "gw", gw);
}

template <typename scalar_t, typename acc_t>
void run_window_spmm(const Job& j, Outputs& out) {
  WindowMetaEmu meta = window_meta(j);
  const std::vector<scalar_t> x = geta<scalar_t>(j, "x"), w = geta<scalar_t>(j, "w"), s = geta<scalar_t>(j, "s");
  const int64_t N = meta.N, D = geti(j, "D"), M = meta.args.M;
  if (static_cast<int64_t>(x.size()) != M * N * D) die("x has the wrong size");
  std::vector<scalar_t> y(x.size(), poison<scalar_t>());
  if (!y.empty()) {
    const dim3 grid(grid_x(M * ceil_div(N, gpu::kTileRows)), grid_y(ceil_div(D, gpu::kTileD)));
    const bool tc = kTensorCoreType<scalar_t> && tensor_cores();
    if constexpr (kTensorCoreType<scalar_t>) {
      if (tc) {
        const int64_t d_tiles = tc_feature_tiles();
        const dim3 tc_grid(grid.x, grid_y(ceil_div(D, gpu::kTileD * d_tiles)));
        cuda_emu::launch("window_spmm_forward_tc_kernel", tc_grid, dim3(gpu::kSpmmThreads), [&] {
          gpu::window_spmm_forward_tc_kernel<scalar_t, __nv_bfloat16>(x.data(), w.data(), s.data(), y.data(), meta.args, D,
                                                                      d_tiles);
        });
      }
    }
    bool staged = false;
    if constexpr (std::is_same<scalar_t, acc_t>::value) {
      const int64_t d_tiles = ffma_feature_tiles();
      if (!tc && d_tiles > 0) {
        staged = true;
        const dim3 st_grid(grid.x, grid_y(ceil_div(D, gpu::kTileD * d_tiles)));
        const bool vec = D % 4 == 0 && reinterpret_cast<uintptr_t>(x.data()) % 16 == 0;
        cuda_emu::launch("window_spmm_forward_staged_kernel", st_grid, dim3(gpu::kSpmmThreads), [&] {
          gpu::window_spmm_forward_staged_kernel<scalar_t>(x.data(), w.data(), s.data(), y.data(), meta.args, D, d_tiles,
                                                           vec);
        });
      }
    }
    if (!tc && !staged) {
      cuda_emu::launch("window_spmm_forward_kernel", grid, dim3(gpu::kSpmmThreads), [&] {
        gpu::window_spmm_forward_kernel<scalar_t, acc_t>(x.data(), w.data(), s.data(), y.data(), meta.args, D);
      });
    }
  }
  put(out, "y", y);
}

template <typename scalar_t, typename acc_t>
void run_window_spmm_backward(const Job& j, Outputs& out) {
  WindowMetaEmu meta = window_meta(j);
  const std::vector<scalar_t> g = geta<scalar_t>(j, "g"), x = geta<scalar_t>(j, "x"), w = geta<scalar_t>(j, "w"),
                              s = geta<scalar_t>(j, "s");
  const int64_t N = meta.N, D = geti(j, "D"), M = meta.args.M, rows = M * N, mode = meta.args.mode;
  const bool need_gx = geti(j, "need_gx") != 0, need_gw = geti(j, "need_gw") != 0, need_gs = geti(j, "need_gs") != 0;
  std::vector<scalar_t> gx, gw, gs;
  if (need_gx) gx.assign(x.size(), poison<scalar_t>());
  if (need_gw) gw.assign(w.size(), poison<scalar_t>());
  if (need_gs) gs.assign(static_cast<size_t>(rows), poison<scalar_t>());
  if (need_gx || need_gw || need_gs) {
    if (need_gw && mode == kPerEdge && static_cast<int64_t>(gw.size()) > meta.E)
      std::fill(gw.begin() + meta.E, gw.end(), scalar_t(0.0f));  // unused entries
    const int64_t n_dtiles = ceil_div(D, gpu::kTileD);
    std::vector<acc_t> colpart, edge_tmp;
    const bool has_colpart = need_gs && n_dtiles > 0;
    if (has_colpart) colpart.assign(static_cast<size_t>(n_dtiles * rows), poison<acc_t>());
    const bool has_tmp = need_gw && mode == kRelative;
    if (has_tmp) edge_tmp.assign(static_cast<size_t>(std::max<int64_t>(meta.E, 1)), poison<acc_t>());
    const unsigned row_tiles = grid_x(M * ceil_div(N, gpu::kTileRows));
    const bool tc = kTensorCoreType<scalar_t> && tensor_cores();  // as the launcher on an sm_80+ GPU
    acc_t* colpart_ptr = has_colpart ? colpart.data() : nullptr;
    // Pass A (columns): grad_x and the column part of grad_norm.
    if ((need_gx || need_gs) && D > 0) {
      const dim3 grid(row_tiles, grid_y(n_dtiles));
      if constexpr (kTensorCoreType<scalar_t>) {
        if (tc) {
          cuda_emu::launch("window_spmm_cols_tc_kernel", grid, dim3(gpu::kSpmmThreads), [&] {
            gpu::window_spmm_cols_tc_kernel<scalar_t, __nv_bfloat16>(g.data(), x.data(), w.data(), s.data(),
                                                                     need_gx ? gx.data() : nullptr, colpart_ptr,
                                                                     meta.args, D);
          });
        }
      }
      bool staged = false;
      if constexpr (std::is_same<scalar_t, acc_t>::value) {
        const int64_t d_tiles = ffma_feature_tiles();
        if (!tc && d_tiles > 0) {
          staged = true;
          const dim3 st_grid(row_tiles, grid_y(ceil_div(D, gpu::kTileD * d_tiles)));
          const bool vec = D % 4 == 0 && reinterpret_cast<uintptr_t>(g.data()) % 16 == 0;
          cuda_emu::launch("window_spmm_cols_staged_kernel", st_grid, dim3(gpu::kSpmmThreads), [&] {
            gpu::window_spmm_cols_staged_kernel<scalar_t>(g.data(), x.data(), w.data(), s.data(),
                                                          need_gx ? gx.data() : nullptr, colpart_ptr, meta.args, D,
                                                          d_tiles, vec);
          });
        }
      }
      if (!tc && !staged) {
        cuda_emu::launch("window_spmm_cols_kernel", grid, dim3(gpu::kSpmmThreads), [&] {
          gpu::window_spmm_cols_kernel<scalar_t, acc_t>(g.data(), x.data(), w.data(), s.data(),
                                                        need_gx ? gx.data() : nullptr, colpart_ptr, meta.args, D);
        });
      }
    }
    // Pass B (rows): per-edge dots -> grad_edge_weight and the row part of grad_norm.
    if (need_gw || need_gs) {
      scalar_t* gw_ptr = need_gw && mode == kPerEdge ? gw.data() : nullptr;
      acc_t* tmp_ptr = has_tmp ? edge_tmp.data() : nullptr;
      if constexpr (kTensorCoreType<scalar_t>) {
        if (tc) {
          cuda_emu::launch("window_spmm_rows_tc_kernel", dim3(row_tiles), dim3(gpu::kSpmmThreads), [&] {
            gpu::window_spmm_rows_tc_kernel<scalar_t, __nv_bfloat16>(g.data(), x.data(), w.data(), s.data(), gw_ptr,
                                                                     tmp_ptr, colpart_ptr, has_colpart ? n_dtiles : 0,
                                                                     need_gs ? gs.data() : nullptr, meta.args, D);
          });
        }
      }
      bool staged = false;
      if constexpr (std::is_same<scalar_t, acc_t>::value) {
        const int64_t f_steps = tc || D == 0 ? 0 : rows_feature_split(row_tiles, D);
        if (f_steps > 0) {
          staged = true;
          const int64_t splits = ceil_div(D, f_steps * gpu::kDotD);
          const int64_t E = std::max<int64_t>(meta.E, 1);
          std::vector<acc_t> part(static_cast<size_t>(splits * E), poison<acc_t>());
          const bool vec = D % 4 == 0 && reinterpret_cast<uintptr_t>(g.data()) % 16 == 0 &&
                           reinterpret_cast<uintptr_t>(x.data()) % 16 == 0;
          cuda_emu::launch("window_spmm_rows_split_kernel", dim3(row_tiles, grid_y(splits)), dim3(gpu::kDotThreads), [&] {
            gpu::window_spmm_rows_split_kernel<scalar_t>(g.data(), x.data(), part.data(), E, meta.args, D, f_steps, vec);
          });
          cuda_emu::launch("window_spmm_rows_finish_kernel", dim3(grid_x(ceil_div(rows, gpu::kNormWarps))),
                           dim3(gpu::kNormWarps * 32), [&] {
            gpu::window_spmm_rows_finish_kernel<scalar_t>(part.data(), splits, E, w.data(), s.data(), gw_ptr, tmp_ptr,
                                                          colpart_ptr, has_colpart ? n_dtiles : 0,
                                                          need_gs ? gs.data() : nullptr, meta.args);
          });
        }
      }
      if constexpr (std::is_same<scalar_t, acc_t>::value) {
        if (!tc && !staged && ffma_feature_tiles() > 0) {
          staged = true;
          const bool vec = D % 4 == 0 && reinterpret_cast<uintptr_t>(g.data()) % 16 == 0 &&
                           reinterpret_cast<uintptr_t>(x.data()) % 16 == 0;
          cuda_emu::launch("window_spmm_rows_staged_kernel", dim3(row_tiles), dim3(gpu::kDotThreads), [&] {
            gpu::window_spmm_rows_staged_kernel<scalar_t>(g.data(), x.data(), w.data(), s.data(), gw_ptr, tmp_ptr,
                                                          colpart_ptr, has_colpart ? n_dtiles : 0,
                                                          need_gs ? gs.data() : nullptr, meta.args, D, vec);
          });
        }
      }
      if (!tc && !staged) {
        cuda_emu::launch("window_spmm_rows_kernel", dim3(row_tiles), dim3(gpu::kDotThreads), [&] {
          gpu::window_spmm_rows_kernel<scalar_t, acc_t>(g.data(), x.data(), w.data(), s.data(), gw_ptr, tmp_ptr,
                                                        colpart_ptr, has_colpart ? n_dtiles : 0,
                                                        need_gs ? gs.data() : nullptr, meta.args, D);
        });
      }
    }
    if (need_gw && mode == kRelative) {
      gpu::BufferedEdges<acc_t> edges{edge_tmp.data()};
      launch_relative_reduce<scalar_t, acc_t>(edges, gw.data(), meta.args, static_cast<int64_t>(gw.size()));
    }
  }
  if (need_gx) put(out, "gx", gx);
  if (need_gw) put(out, "gw", gw);
  if (need_gs) put(out, "gs", gs);
}

// ---- shift pairs: mirror of make_shift_meta and csrc/cuda/shift_pair_cuda.cu ---------------------

struct ShiftMetaEmu {
  int64_t N = 0, P = 0;
  std::vector<int64_t> start, length, pair_base;
  gpu::ShiftArgs args{};
};

// As the launcher's column_segments: the kColSeg-row segments of the batch's largest chunk.
int64_t column_segments(const ShiftMetaEmu& meta, int64_t shift_win) {
  int64_t max_chunk = 0;
  for (int64_t L : meta.length) max_chunk = std::max(max_chunk, std::min(shift_chunk(L, shift_win), L));
  return ceil_div(max_chunk, gpu::kColSeg);
}

// C < 0: from the job's int C.
ShiftMetaEmu shift_meta(const Job& j, int64_t C = -1) {
  ShiftMetaEmu m;
  const std::vector<int64_t> lens = geta<int64_t>(j, "lengths");
  const int64_t sw = geti(j, "shift_win");
  if (C < 0) C = geti(j, "C");
  if (!(sw == -1 || sw > 0)) die("bad shift_win");
  for (int64_t L : lens) {
    if (L < 1) die("lengths must be >= 1");
    m.start.push_back(m.N);
    m.length.push_back(L);
    m.pair_base.push_back(m.P);
    m.N += L;
    m.P += shift_pair_count(L, sw);
  }
  m.args.start = m.start.data();
  m.args.length = m.length.data();
  m.args.pair_base = m.pair_base.data();
  m.args.B = static_cast<int64_t>(lens.size());
  m.args.N = m.N;
  m.args.shift_win = sw;
  m.args.C = C;
  return m;
}

template <typename scalar_t, typename acc_t>
void run_shift_pair_sum(const Job& j, Outputs& out) {
  ShiftMetaEmu meta = shift_meta(j);
  const std::vector<scalar_t> a = geta<scalar_t>(j, "a"), b = geta<scalar_t>(j, "b");
  const int64_t C = meta.args.C;
  if (static_cast<int64_t>(a.size()) != meta.N * C || b.size() != a.size()) die("a, b must be [N, C]");
  std::vector<scalar_t> o(static_cast<size_t>(meta.P * C), poison<scalar_t>());
  if (!o.empty()) {
    const unsigned blocks = grid_x(ceil_div(meta.N, gpu::kShiftWarps));
    cuda_emu::launch("shift_pair_sum_kernel", dim3(blocks), dim3(gpu::kShiftWarps * 32),
                     [&] { gpu::shift_pair_sum_kernel<scalar_t, acc_t>(a.data(), b.data(), o.data(), meta.args); });
  }
  put(out, "out", o);
}

template <typename scalar_t, typename acc_t>
void run_shift_pair_sum_backward(const Job& j, Outputs& out) {
  ShiftMetaEmu meta = shift_meta(j);
  const std::vector<scalar_t> grad = geta<scalar_t>(j, "grad");
  const int64_t C = meta.args.C, N = meta.N, sw = meta.args.shift_win;
  if (static_cast<int64_t>(grad.size()) != meta.P * C) die("grad must be [P, C]");
  const bool mask_a = geti(j, "need_ga") != 0, mask_b = geti(j, "need_gb") != 0;
  std::vector<scalar_t> ga, gb;
  if (mask_a) ga.assign(static_cast<size_t>(N * C), poison<scalar_t>());
  if (mask_b) gb.assign(static_cast<size_t>(N * C), poison<scalar_t>());
  if ((mask_a || mask_b) && C != 0) {
    const int64_t nseg = column_segments(meta, sw);
    std::vector<acc_t> partial;
    if (mask_b && nseg > 1) partial.assign(static_cast<size_t>(nseg * N * C), poison<acc_t>());
    if (mask_a) {
      const unsigned blocks = grid_x(ceil_div(N, gpu::kShiftWarps));
      cuda_emu::launch("shift_pair_rows_kernel", dim3(blocks), dim3(gpu::kShiftWarps * 32),
                       [&] { gpu::shift_pair_rows_kernel<scalar_t, acc_t>(grad.data(), ga.data(), meta.args); });
    }
    if (mask_b) {
      const unsigned bx = grid_x(ceil_div(N * C, gpu::kShiftThreads));
      const dim3 grid(bx, grid_y(nseg));
      acc_t* partial_ptr = partial.empty() ? nullptr : partial.data();
      cuda_emu::launch("shift_pair_cols_kernel", grid, dim3(gpu::kShiftThreads), [&] {
        gpu::shift_pair_cols_kernel<scalar_t, acc_t>(grad.data(), gb.data(), partial_ptr, meta.args);
      });
      if (partial_ptr != nullptr) {
        cuda_emu::launch("shift_pair_cols_combine_kernel", dim3(bx), dim3(gpu::kShiftThreads), [&] {
          gpu::shift_pair_cols_combine_kernel<scalar_t, acc_t>(partial_ptr, gb.data(), meta.args);
        });
      }
    }
  }
  if (mask_a) put(out, "ga", ga);
  if (mask_b) put(out, "gb", gb);
}

// shift_pair_nll (csrc/cuda/shift_pair_cuda.cu, shift_pair_nll_cuda). Job int "kernel": 0 the
// two-pass kernels (the rows kernel, then with with_grad the columns kernel + combine), 1 the
// tiled kernel + its combine, 2 the same with kFast (float only; the intrinsics are the accurate
// functions here). "min_bands" (default kNllMinBands, the launcher's) lets the tests reach the
// larger squares on small chunks. The launcher's torch reductions (loss = sum
// of row_loss, confusion = column sums of counts) are done here in index order: their bits are
// not what is under test (torch's sum has its own order), their inputs are.
template <typename scalar_t, typename acc_t>
void run_shift_pair_nll(const Job& j, Outputs& out) {
  ShiftMetaEmu meta = shift_meta(j, /*C=*/1);  // as the launcher: one value per utterance
  const std::vector<scalar_t> a = geta<scalar_t>(j, "a"), b = geta<scalar_t>(j, "b");
  const std::vector<int64_t> sent = geta<int64_t>(j, "sentiment");
  const int64_t N = meta.N, sw = meta.args.shift_win, B = meta.args.B;
  if (static_cast<int64_t>(a.size()) != 2 * N || b.size() != a.size()) die("a, b must be [N, 2]");
  if (static_cast<int64_t>(sent.size()) != N) die("sentiment must be [N]");
  const bool with_grad = geti(j, "with_grad") != 0;
  const int64_t kernel = geti(j, "kernel", 0);
  if (kernel < 0 || kernel > 2) die("kernel must be 0, 1 or 2");
  std::vector<acc_t> row_r(static_cast<size_t>(with_grad ? N : 0), poison<acc_t>());
  std::vector<acc_t> col_r(static_cast<size_t>(with_grad ? N : 0), poison<acc_t>());
  std::vector<acc_t> row_loss(static_cast<size_t>(N), poison<acc_t>());
  std::vector<int64_t> counts(static_cast<size_t>(4 * N), poison<int64_t>());
  std::vector<int64_t> spans;  // the square side of every dialogue (tiled)
  if (N > 0 && kernel != 0) {
    const int64_t min_bands = geti(j, "min_bands", gpu::kNllMinBands);
    for (int64_t L : meta.length) spans.push_back(gpu::nll_span(std::min(shift_chunk(L, sw), L), min_bands));
    std::vector<int64_t> tile_base(static_cast<size_t>(B)), part_base(static_cast<size_t>(B));
    const gpu::NllTilingCounts n = gpu::nll_tiling(meta.length.data(), B, sw, min_bands, tile_base.data(),
                                                   part_base.data());
    gpu::NllTileArgs ta{tile_base.data(), part_base.data(), min_bands, n.parts};
    const size_t Q = static_cast<size_t>(n.parts);
    std::vector<acc_t> part_loss(Q, poison<acc_t>()), part_r(with_grad ? Q : 0, poison<acc_t>()),
        part_col(with_grad ? Q : 0, poison<acc_t>());
    std::vector<int32_t> part_cnt(3 * Q, int32_t(-0x3a5a5a5a));  // poison: an unwritten count is seen
    acc_t* pr = with_grad ? part_r.data() : nullptr;
    acc_t* pc = with_grad ? part_col.data() : nullptr;
    // with_grad and kFast as template flags, as the launcher (kFast: float only)
    auto launch = [&](auto fast_c) {
      auto go = [&](auto grad_c) {
        gpu::shift_pair_nll_tiled_kernel<scalar_t, acc_t, decltype(grad_c)::value, decltype(fast_c)::value>(
            a.data(), b.data(), sent.data(), part_loss.data(), pr, part_cnt.data(), pc, meta.args, ta);
      };
      with_grad ? go(std::true_type{}) : go(std::false_type{});
    };
    cuda_emu::launch("shift_pair_nll_tiled_kernel", dim3(grid_x(n.blocks)), dim3(gpu::kNllThreads), [&] {
      if constexpr (std::is_same_v<acc_t, float>) kernel == 2 ? launch(std::true_type{}) : launch(std::false_type{});
      else launch(std::false_type{});
    });
    cuda_emu::launch("shift_pair_nll_combine_kernel", dim3(grid_x(ceil_div(N, gpu::kShiftThreads))),
                     dim3(gpu::kShiftThreads), [&] {
                       gpu::shift_pair_nll_combine_kernel<acc_t>(part_loss.data(), pr, part_cnt.data(), pc,
                                                                 row_loss.data(), with_grad ? row_r.data() : nullptr,
                                                                 counts.data(), with_grad ? col_r.data() : nullptr,
                                                                 meta.args, ta);
                     });
  } else if (N > 0) {
    const int64_t nseg = column_segments(meta, sw);
    std::vector<acc_t> partial;
    if (with_grad && nseg > 1) partial.assign(static_cast<size_t>(nseg * N), poison<acc_t>());
    const unsigned blocks = grid_x(ceil_div(N, gpu::kShiftWarps));
    cuda_emu::launch("shift_pair_nll_rows_kernel", dim3(blocks), dim3(gpu::kShiftWarps * 32), [&] {
      gpu::shift_pair_nll_rows_kernel<scalar_t, acc_t>(a.data(), b.data(), sent.data(), row_loss.data(),
                                                       with_grad ? row_r.data() : nullptr, counts.data(), meta.args);
    });
    if (with_grad) {
      const unsigned bx = grid_x(ceil_div(N, gpu::kShiftThreads));
      const dim3 grid(bx, grid_y(nseg));
      acc_t* partial_ptr = partial.empty() ? nullptr : partial.data();
      cuda_emu::launch("shift_pair_nll_cols_kernel", grid, dim3(gpu::kShiftThreads), [&] {
        gpu::shift_pair_nll_cols_kernel<scalar_t, acc_t>(a.data(), b.data(), sent.data(), col_r.data(), partial_ptr,
                                                         meta.args);
      });
      if (partial_ptr != nullptr) {
        cuda_emu::launch("shift_pair_cols_combine_kernel", dim3(bx), dim3(gpu::kShiftThreads), [&] {
          gpu::shift_pair_cols_combine_kernel<acc_t, acc_t>(partial_ptr, col_r.data(), meta.args);
        });
      }
    }
  }
  acc_t loss = acc_t(0);
  for (acc_t v : row_loss) loss += v;
  std::vector<int64_t> confusion(4, 0);
  for (int64_t t = 0; t < N; ++t)
    for (int q = 0; q < 4; ++q) confusion[q] += counts[4 * t + q];
  put(out, "loss", std::vector<acc_t>{loss});
  put(out, "confusion", confusion);
  put(out, "row_loss", row_loss);
  put(out, "counts", counts);
  put(out, "row_r", row_r);
  put(out, "col_r", col_r);
  put(out, "spans", spans);
}

// ---- the by-value upload -----------------------------------------------------------------------------

// As cuda_host::write_by_value (csrc/cuda/cuda_utils.h), which upload_meta and the op
// upload_by_value call: gpu::for_each_param_chunk, one write_param_chunk_kernel block per chunk,
// into a poisoned buffer of exactly n values (its own allocation: ASan sees a write past it).
void run_upload_by_value(const Job& j, Outputs& out) {
  const std::vector<int64_t> values = geta<int64_t>(j, "values");
  const int64_t n = static_cast<int64_t>(values.size());
  std::vector<int64_t> dev(values.size(), poison<int64_t>());
  int64_t launches = 0;
  gpu::for_each_param_chunk(values.data(), n, [&](const gpu::ParamChunk& chunk, int64_t offset) {
    ++launches;
    cuda_emu::launch("write_param_chunk_kernel", dim3(1), dim3(gpu::kParamChunkThreads),
                     [&] { gpu::write_param_chunk_kernel<>(chunk, dev.data() + offset); });
  });
  put(out, "out", dev);
  put(out, "launches", std::vector<int64_t>{launches});
}

// ---- GRAPHSMILE_CUDA_ROWS_FSPLIT=auto ---------------------------------------------------------------

// gpu::rows_auto_feature_steps (the launcher's choice) for each (row_tiles[i], D[i]).
void run_rows_auto_split(const Job& j, Outputs& out) {
  const std::vector<int64_t> tiles = geta<int64_t>(j, "row_tiles"), dims = geta<int64_t>(j, "D");
  if (tiles.size() != dims.size()) die("rows_auto_split: row_tiles and D differ in length");
  std::vector<int64_t> steps;
  for (size_t i = 0; i < tiles.size(); ++i) steps.push_back(gpu::rows_auto_feature_steps(tiles[i], dims[i]));
  put(out, "f_steps", steps);
}

// ---- dispatch ---------------------------------------------------------------------------------------

template <typename scalar_t, typename acc_t>
void run_typed(const Job& j, Outputs& out) {
  if (j.op == "window_norm") run_window_norm<scalar_t, acc_t>(j, out);
  else if (j.op == "window_norm_backward") run_window_norm_backward<scalar_t, acc_t>(j, out);
  else if (j.op == "window_spmm") run_window_spmm<scalar_t, acc_t>(j, out);
  else if (j.op == "window_spmm_backward") run_window_spmm_backward<scalar_t, acc_t>(j, out);
  else if (j.op == "shift_pair_sum") run_shift_pair_sum<scalar_t, acc_t>(j, out);
  else if (j.op == "shift_pair_sum_backward") run_shift_pair_sum_backward<scalar_t, acc_t>(j, out);
  else if (j.op == "shift_pair_nll") run_shift_pair_nll<scalar_t, acc_t>(j, out);
  else die("unknown op " + j.op);
}

void run_job(const Job& j, Outputs& out) {
  if (j.op == "upload_by_value") return run_upload_by_value(j, out);
  if (j.op == "rows_auto_split") return run_rows_auto_split(j, out);
  // acc_t = at::opmath_type<scalar_t>: double for double, float otherwise.
  if (j.dtype == "f64") run_typed<double, double>(j, out);
  else if (j.dtype == "f32") run_typed<float, float>(j, out);
  else if (j.dtype == "bf16") run_typed<BF16, float>(j, out);
  else die("unknown dtype " + j.dtype);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) die("usage: emu_main IN OUT POLICIES (e.g. 0,1,7)");
  std::vector<int> policies;
  {
    std::istringstream ps(argv[3]);
    std::string tok;
    while (std::getline(ps, tok, ',')) policies.push_back(std::stoi(tok));
  }
  if (policies.empty()) die("no policy");
  const std::vector<Job> jobs = read_jobs(argv[1]);
  std::ofstream o(argv[2], std::ios::binary);
  if (!o) die(std::string("cannot write ") + argv[2]);
  for (const Job& j : jobs) {
    o << "job " << j.name << "\n";
    for (int p : policies) {
      cuda_emu::set_policy(p);
      Outputs out;
      run_job(j, out);
      for (const auto& kv : out) {
        o << "arr " << p << "." << kv.first << " " << kv.second.type << " " << kv.second.count << "\n";
        o.write(reinterpret_cast<const char*>(kv.second.bytes.data()), static_cast<std::streamsize>(kv.second.bytes.size()));
        o << "\n";
      }
    }
    o << "end\n";
  }
  const cuda_emu::Stats& st = cuda_emu::S().stats;
  std::fprintf(stderr,
               "emu_main: %zu jobs x %zu policies: %llu launches, %llu blocks, %llu threads, %llu switches; "
               "%zu __shared__ arrays (%zu bytes) poisoned per block\n",
               jobs.size(), policies.size(), static_cast<unsigned long long>(st.launches),
               static_cast<unsigned long long>(st.blocks), static_cast<unsigned long long>(st.threads),
               static_cast<unsigned long long>(st.switches), cuda_emu::shared_arrays().size(),
               cuda_emu::shared_bytes());
  return 0;
}
