// Large buffers kept for reuse. The fused recurrent layers allocate the same sequence-sized
// buffers every training step (x W_ih^T over T x B rows, saved activations, gate gradients: ~300 MB
// for an LSTM at B=100, T=200, H=256). Fresh pages cost ~0.45 ms/MB to first touch on the VMs
// measured, against ~0.09 ms/MB to rewrite warm ones: ~10% of a step. Torch's CPU allocator hands
// such sizes to mmap every time; this pool hands back the pages of the previous step instead.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>

#include <cstdlib>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

namespace rnnlab_gemm {

class BufferPool {
 public:
  static constexpr size_t kMinBytes = size_t{1} << 20;  // smaller blocks: the heap reuses them already
  static constexpr size_t kMaxCachedBytes = size_t{1} << 30;

  void* take(size_t bytes) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      std::vector<void*>& blocks = free_[bytes];
      if (!blocks.empty()) {
        void* block = blocks.back();
        blocks.pop_back();
        cached_ -= bytes;
        return block;
      }
    }
    void* block = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (block == nullptr) throw std::bad_alloc();
    return block;
  }

  void give(void* block, size_t bytes) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (cached_ + bytes <= kMaxCachedBytes) {
        free_[bytes].push_back(block);
        cached_ += bytes;
        return;
      }
    }
    std::free(block);
  }

 private:
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t cached_ = 0;
};

// Never destroyed: a tensor may give its block back during static destruction.
inline BufferPool& buffer_pool() {
  static auto* pool = new BufferPool();
  return *pool;
}

// A contiguous uninitialised tensor, from the pool when it is large.
inline at::Tensor pooled_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  size_t bytes = options.dtype().itemsize();
  for (const int64_t size : sizes) bytes *= static_cast<size_t>(size);
  if (bytes < BufferPool::kMinBytes) return at::empty(sizes, options);
  void* block = buffer_pool().take(bytes);
  return at::from_blob(block, sizes, [bytes](void* data) { buffer_pool().give(data, bytes); }, options);
}

inline at::Tensor pooled_contiguous(const at::Tensor& t) {
  return t.is_contiguous() ? t : pooled_empty(t.sizes(), t.options()).copy_(t);
}

}  // namespace rnnlab_gemm
