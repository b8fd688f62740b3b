/*
 * deepkin_local.cpp - the in-process backend of the deepkin client library: the TorchScript file
 * of `deepkin export MODEL -o FILE` (kinetics/step/compiled_step.py) loaded by libtorch and called
 * with the caller's arrays, no server and no Python.
 *
 * Build against the libtorch of the torch wheel that wrote the file
 * (TORCH=$(python -c "import torch, os; print(os.path.dirname(torch.__file__))")):
 *
 *   c++ -std=c++20 -O2 -D_GLIBCXX_USE_CXX11_ABI=1 -I$TORCH/include \
 *       -I$TORCH/include/torch/csrc/api/include -c deepkin_local.cpp
 *   cc -O2 -DDEEPKIN_WITH_LIBTORCH -c deepkin_client.c
 *   c++ app.o deepkin_client.o deepkin_local.o -L$TORCH/lib -Wl,-rpath,$TORCH/lib \
 *       -Wl,--no-as-needed -ltorch -ltorch_cpu -lc10 -lcurl -lm
 *
 * (-D_GLIBCXX_USE_CXX11_ABI takes torch._C._GLIBCXX_USE_CXX11_ABI.) libtorch's intra-op threads
 * follow OMP_NUM_THREADS (all cores otherwise) or deepkin_set_threads; a solver with one MPI rank
 * per core sets them to 1.
 *
 * A file steps on the device it was exported for: `deepkin export MODEL -o FILE --device cuda`
 * writes one that runs on the GPU (cells copied there and back each call) with a CUDA build of
 * torch; link also -ltorch_cuda -lc10_cuda (inside the same -Wl,--no-as-needed, which keeps
 * libtorch's CUDA backend registered). Opening it where CUDA is unusable is DEEPKIN_ERROR_MODEL
 * with that reason.
 */
#include "deepkin_local.h"

#include "deepkin_client.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <cfenv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

struct deepkin_local {
    torch::jit::script::Module module;
    torch::Device device{torch::kCPU};
    int64_t ns = 0;
};

namespace {

/* Floating-point traps off while libtorch runs, restored after: a host that traps them (OpenFOAM
 * with FOAM_SIGFPE, its default) would die on the masked arithmetic of the step (an inf or NaN
 * computed for a lane that a mask then drops). libtorch's worker threads are started inside a
 * hold, so they inherit the non-stop mode. */
class FpHold {
  public:
    FpHold() { std::feholdexcept(&saved_); }
    ~FpHold() {
        std::feclearexcept(FE_ALL_EXCEPT);
        std::fesetenv(&saved_);
    }
    FpHold(const FpHold &) = delete;
    FpHold &operator=(const FpHold &) = delete;

  private:
    std::fenv_t saved_;
};

/* The first line of an exception's text (libtorch's carry a C++ backtrace after it). */
std::string first_line(const std::exception &e) {
    std::string text = e.what();
    const size_t end = text.find('\n');
    return end == std::string::npos ? text : text.substr(0, end);
}

void set_err(char *err, size_t size, const std::string &text) {
    if (err && size) std::snprintf(err, size, "%s", text.c_str());
}

char *dup(const std::string &s) {
    char *d = static_cast<char *>(std::malloc(s.size() + 1));
    if (d) std::memcpy(d, s.c_str(), s.size() + 1);
    return d;
}

/* A step allocates its temporaries afresh each call (tens of kB to MB a tensor at 10^3 cells).
 * glibc hands a freed block above its mmap threshold back to the kernel and trims the heap's top
 * above its trim threshold, so in a solver's process those blocks were mapped and faulted in
 * again every call: page faults, malloc and free were 15-20 % of a 1,000-cell step
 * (benchmarks/openfoam_chemistry.py --malloc-baseline). Once per process, raise both thresholds
 * so that freed blocks stay in the heap for the next call (what the process holds is the step's
 * own working set, which every call needs again), unless the process chose its allocator settings
 * itself (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ or GLIBC_TUNABLES set) or
 * DEEPKIN_MALLOC=system asks to leave them as they are. */
void keep_step_memory() {
    static std::once_flag once;
    std::call_once(once, [] {
#if defined(__GLIBC__)
        const char *choice = std::getenv("DEEPKIN_MALLOC");
        if (choice && std::strcmp(choice, "system") == 0) return;
        if (std::getenv("MALLOC_MMAP_THRESHOLD_") || std::getenv("MALLOC_TRIM_THRESHOLD_") ||
            std::getenv("GLIBC_TUNABLES"))
            return;
        mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest on 64-bit (32 MiB)
        mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
    });
}

}  // namespace

extern "C" int deepkin_local_open(const char *path, deepkin_local **local, char ***species, int *ns,
                                  double *dt_s, char *sha256, size_t sha256_size, char *err,
                                  size_t err_size) {
    *local = nullptr;
    *species = nullptr;
    FpHold hold;
    keep_step_memory();
    deepkin_local *l = nullptr;
    try {
        l = new deepkin_local();
        l->module = torch::jit::load(path);
        l->module.eval();
        // The networks' weights into oneDNN's layout once (a file holds them plain: TorchScript
        // cannot save that layout): the same kernels and bits, less time per call.
        if (auto prepack = l->module.find_method("prepack")) (*prepack)({});
    } catch (const std::exception &e) {
        delete l;
        // A file of `deepkin export --device cuda` holds its tensors on the GPU: without CUDA,
        // libtorch's text names an operator and a backend, not the cause.
        const std::string why = first_line(e);
        if (why.find("'CUDA' backend") != std::string::npos && !torch::cuda::is_available()) {
            set_err(err, err_size, std::string("model file ") + path + " was exported for CUDA " +
                                       "(deepkin export --device cuda), and CUDA is not available " +
                                       "to this process (no GPU, a CPU-only libtorch, or not " +
                                       "linked with -ltorch_cuda -lc10_cuda); export it with " +
                                       "--device cpu");
            return DEEPKIN_ERROR_MODEL;
        }
        set_err(err, err_size, std::string("model file ") + path + ": libtorch cannot load it (" +
                                   why + "); write it with `deepkin export`");
        return DEEPKIN_ERROR_MODEL;
    }
    try {
        const auto names = l->module.attr("species").toList();
        l->ns = static_cast<int64_t>(names.size());
        *dt_s = l->module.attr("dt_s").toDouble();
        std::snprintf(sha256, sha256_size, "%s", l->module.attr("mechanism_sha256").toStringRef().c_str());
        l->device = l->module.attr("powers").toTensor().device();
        char **out = static_cast<char **>(std::calloc(static_cast<size_t>(l->ns) + 1, sizeof(char *)));
        if (!out) throw std::bad_alloc();
        for (int64_t k = 0; k < l->ns; k++) {
            out[k] = dup(names.get(static_cast<size_t>(k)).toStringRef());
            if (!out[k]) {
                for (int64_t j = 0; j < k; j++) std::free(out[j]);
                std::free(out);
                throw std::bad_alloc();
            }
        }
        *species = out;
    } catch (const std::bad_alloc &) {
        delete l;
        set_err(err, err_size, "deepkin_open: out of memory");
        return DEEPKIN_ERROR_MEMORY;
    } catch (const std::exception &e) {
        delete l;
        set_err(err, err_size, std::string("model file ") + path + ": not a deepkin step (" +
                                   first_line(e) + "); write it with `deepkin export`");
        return DEEPKIN_ERROR_MODEL;
    }
    *ns = static_cast<int>(l->ns);
    *local = l;
    return DEEPKIN_OK;
}

extern "C" int deepkin_local_step(deepkin_local *l, long n_cells, const double *states,
                                  long n_substeps, double *advanced, signed char *flags, char *err,
                                  size_t err_size) {
    const int64_t n = n_cells, width = 2 + l->ns;
    FpHold hold;
    try {
        c10::InferenceMode guard;
        // The module never writes into its input: the caller's array is borrowed, not copied.
        torch::Tensor x = torch::from_blob(const_cast<double *>(states), {n, width},
                                           torch::TensorOptions().dtype(torch::kFloat64));
        if (l->device != torch::kCPU) x = x.to(l->device);
        const auto result = l->module.forward({x, static_cast<int64_t>(n_substeps)}).toTuple();
        const torch::Tensor out = result->elements()[0].toTensor().to(torch::kCPU).contiguous();
        const torch::Tensor flag = result->elements()[1].toTensor().to(torch::kCPU).contiguous();
        if (out.numel() != n * width || flag.numel() != n) {
            set_err(err, err_size, "model file: the step returned the wrong shape");
            return DEEPKIN_ERROR_MODEL;
        }
        std::memmove(advanced, out.data_ptr<double>(), static_cast<size_t>(n * width) * sizeof(double));
        std::memcpy(flags, flag.data_ptr<int8_t>(), static_cast<size_t>(n));
    } catch (const std::bad_alloc &) {
        set_err(err, err_size, "deepkin_step: out of memory");
        return DEEPKIN_ERROR_MEMORY;
    } catch (const std::exception &e) {
        set_err(err, err_size, std::string("deepkin_step: the model's step failed (") + first_line(e) + ")");
        return DEEPKIN_ERROR_MODEL;
    }
    return DEEPKIN_OK;
}

extern "C" void deepkin_local_set_threads(int n_threads) {
    FpHold hold;
    at::set_num_threads(n_threads);
}

extern "C" void deepkin_local_close(deepkin_local *l) { delete l; }
