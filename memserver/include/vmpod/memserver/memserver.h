// The memory pod daemon as a library: a PageStore served over a control
// socket (regions, stats) and a fabric endpoint (pages). `vmpod memserver`
// is a thin wrapper; tests start it in-process.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <vmpod/base/result.h>
#include <vmpod/memserver/page_store.h>
#include <vmpod/net/fabric.h>
#include <vmpod/net/socket.h>

namespace vmpod::memserver {

struct MemserverConfig {
  std::string pod_id = "mem0";
  net::SocketAddress control;  // where podfs and the vmm connect
  net::FabricConfig fabric;
  uint64_t capacity_bytes = 1ull << 30;
};

class Memserver {
 public:
  static Result<std::unique_ptr<Memserver>> start(const MemserverConfig& config);
  ~Memserver();  // stops serving; every client sees its connection close

  const net::SocketAddress& control_address() const;
  PageStore& store();

 private:
  struct Impl;
  explicit Memserver(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vmpod::memserver
