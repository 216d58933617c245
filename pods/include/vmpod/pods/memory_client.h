// A client of one memory pod: regions over its control socket, pages over
// the fabric. Used by podfs (the page path) and the vmm (placement, stats).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <vmpod/base/result.h>
#include <vmpod/net/fabric.h>
#include <vmpod/net/socket.h>
#include <vmpod/pods/memory_stats.h>
#include <vmpod/pods/page_protocol.h>
#include <vmpod/pods/protocol.h>
#include <vmpod/pods/region_control.h>

namespace vmpod::pods {

class MemoryPodClient {
 public:
  struct Options {
    net::FabricConfig fabric;
    std::chrono::milliseconds connect_timeout{5000};
    std::chrono::milliseconds io_timeout{10000};
    // A pod that does not answer a heartbeat for this long is lost.
    std::chrono::milliseconds heartbeat_interval{1000};
  };

  // A page read or write whose request is on its way (see start_read()).
  class PendingPageIo {
   private:
    friend class MemoryPodClient;
    PendingPageIo(net::FabricClient::PendingCall call, uint32_t read_length)
        : call_(std::move(call)), read_length_(read_length) {}
    net::FabricClient::PendingCall call_;
    uint32_t read_length_;  // data bytes a read expects back
  };

  static Result<std::unique_ptr<MemoryPodClient>> connect(const net::SocketAddress& control,
                                                          const Options& options);
  ~MemoryPodClient();

  const std::string& pod_id() const { return pod_id_; }
  const net::SocketAddress& control_address() const { return control_address_; }

  // RegionControl's calls, over this client's control connection; they
  // fail at once once the pod is lost.
  Result<RegionHandle> create_region(uint64_t size, const std::string& owner);
  Status resize_region(const RegionHandle& region, uint64_t size);
  Status delete_region(const RegionHandle& region);
  Result<VersionDescription> freeze_region(const RegionHandle& region);
  Result<RegionHandle> fork_region(const VersionHandle& version, const std::string& owner);
  Status release_version(const VersionHandle& version);
  Result<VersionDescription> describe_version(const VersionHandle& version);
  Result<MemoryPodStats> stats(std::span<const RegionHandle> regions = {});

  // Page I/O over the fabric; offset and length in bytes, at most kMaxPageIo.
  Status read(const RegionHandle& region, uint64_t offset, std::span<std::byte> out);
  Status write(const RegionHandle& region, uint64_t offset, std::span<const std::byte> data);
  Status discard(const RegionHandle& region, uint64_t offset, uint64_t length);

  // The same in two halves, so that one thread keeps several pods busy:
  // start_read()/start_write() send the request and return at once;
  // finish_read() waits for a read's data and returns it in place, valid
  // while `io` lives (no copy); finish() waits for a write. Both at most
  // kMaxPageIo bytes. Every PendingPageIo must be destroyed before the
  // client; destroying one that was not finished abandons it.
  Result<PendingPageIo> start_read(const RegionHandle& region, uint64_t offset, uint64_t length);
  Result<PendingPageIo> start_write(const RegionHandle& region, uint64_t offset,
                                    std::span<const iovec> data);
  Result<std::span<const std::byte>> finish_read(PendingPageIo& io);
  Status finish(PendingPageIo& io);

  // False once the pod is lost (control connection closed or heartbeat
  // missed); every later call then fails at once with kUnavailable.
  bool alive() const { return !lost_.load(); }
  std::string lost_reason() const;

 private:
  MemoryPodClient() = default;
  Result<PendingPageIo> start_page_call(PageOp op, const RegionHandle& region, uint64_t offset,
                                        uint64_t length, std::span<const iovec> data);
  Status check_alive() const;
  template <class T>
  Result<T> with_pod(Result<T> result) const {
    if (!result) return fail(result.error().context("memory pod " + pod_id_));
    return result;
  }
  void watch();
  void mark_lost(std::string reason);

  Options options_;
  net::SocketAddress control_address_;
  std::string pod_id_;
  std::unique_ptr<net::RpcClient> control_;
  std::unique_ptr<RegionControl> regions_;  // over control_
  std::unique_ptr<net::FabricClient> fabric_;
  std::atomic<bool> lost_{false};
  std::atomic<bool> stopping_{false};
  mutable std::mutex lost_mutex_;
  std::string lost_reason_;
  std::thread watcher_;
};

}  // namespace vmpod::pods
