// Scratch: late replies to timed-out calls must not wedge the endpoint.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>
#include <vmpod/net/fabric.h>
using namespace vmpod::net;
using namespace std::chrono_literals;
static size_t handler(uint64_t, std::span<const std::byte> req, std::span<std::byte> rep) {
  uint64_t w, slow; std::memcpy(&w, req.data(), 8); std::memcpy(&slow, req.data() + 8, 8);
  if (slow) std::this_thread::sleep_for(std::chrono::milliseconds(slow));
  size_t n = std::min<size_t>(w, rep.size());
  std::memset(rep.data(), 7, n); return n;
}
int main(int argc, char** argv) {
  FabricConfig cfg; cfg.provider = *parse_fabric_provider(argc > 1 ? argv[1] : "tcp");
  size_t sz = argc > 2 ? atol(argv[2]) : (1u << 20);
  int rounds = argc > 3 ? atoi(argv[3]) : 40;
  auto server = std::move(*FabricServer::start(cfg, handler));
  auto c = std::move(*FabricClient::create(cfg));
  auto h = *server->add_peer(c->local_address());
  (void)c->connect(server->local_address(), h);
  std::vector<std::byte> r(sz);
  int timeouts = 0, ok = 0, bad = 0; double worst = 0;
  for (int i = 0; i < rounds; ++i) {
    uint64_t req[2] = {sz, 20}; iovec iov{req, 16};
    auto n = c->call(std::span<const iovec>(&iov, 1), r, 5ms);
    if (!n) timeouts++;
    std::this_thread::sleep_for(30ms);  // the late reply arrives meanwhile
    uint64_t req2[2] = {sz, 0}; iovec iov2{req2, 16};
    auto t0 = std::chrono::steady_clock::now();
    auto m = c->call(std::span<const iovec>(&iov2, 1), r, 3s);
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    worst = std::max(worst, ms);
    if (m && *m == sz) ok++; else { bad++; printf("round %d: %s\n", i, m ? "short" : m.error().message().c_str()); if (bad > 3) break; }
  }
  printf("size %zu: timeouts=%d ok=%d bad=%d worst follow-up %.1f ms\n", sz, timeouts, ok, bad, worst);
}
