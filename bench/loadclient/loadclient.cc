// A compiled gRPC load client for any unary method, in the spirit of ghz: it sends
// pre-serialized request messages through grpc::GenericStub (no generated code, so one
// binary serves every service) and prints latency percentiles as one JSON line.
//
// Why it exists: on one machine a Python client spends a few hundred microseconds of CPU
// per call itself, which a backend's compiled stub does not; the service-overhead targets
// (docs/benchmarks.md) are about the service, so they are measured from here too.
//
// Requests file: records of a 4-byte little-endian length followed by that many bytes of a
// serialized request message (bench/common.py writes it); calls cycle through them.
//
// Exit status: 0 when at least one call succeeded (failed calls are counted in the JSON),
// 1 when none did or the target cannot be reached, 2 for bad arguments.
//
// Build: make loadclient (needs Debian's libgrpc++-dev and pkg-config).
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Options {
  std::string target;
  std::string method;
  std::string requests_path;
  long calls = 1000;
  long warmup = 50;
  int concurrency = 1;
  long timeout_ms = 10000;
  // Spin on the completion queue instead of sleeping in it: the calling thread (and its
  // CPU) never idles while a call is out, so a reply is not delayed by waking it up.
  bool busy_poll = false;
};

[[noreturn]] void Usage(const char* error) {
  std::fprintf(stderr,
               "loadclient: %s\n"
               "usage: loadclient --target HOST:PORT --method /pkg.Service/Method "
               "--requests FILE [--calls N] [--warmup N] [--concurrency C] "
               "[--timeout-ms MS] [--busy-poll]\n",
               error);
  std::exit(2);
}

long ParsePositive(const char* flag, const char* value, long minimum) {
  char* end = nullptr;
  long parsed = std::strtol(value, &end, 10);
  if (end == value || *end != '\0' || parsed < minimum) {
    std::string message = std::string(flag) + " needs an integer >= " + std::to_string(minimum);
    Usage(message.c_str());
  }
  return parsed;
}

Options ParseArgs(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "--busy-poll") {
      options.busy_poll = true;
      continue;
    }
    if (i + 1 >= argc) Usage(("missing value after " + flag).c_str());
    const char* value = argv[++i];
    if (flag == "--target") {
      options.target = value;
    } else if (flag == "--method") {
      options.method = value;
    } else if (flag == "--requests") {
      options.requests_path = value;
    } else if (flag == "--calls") {
      options.calls = ParsePositive("--calls", value, 1);
    } else if (flag == "--warmup") {
      options.warmup = ParsePositive("--warmup", value, 0);
    } else if (flag == "--concurrency") {
      options.concurrency = static_cast<int>(ParsePositive("--concurrency", value, 1));
    } else if (flag == "--timeout-ms") {
      options.timeout_ms = ParsePositive("--timeout-ms", value, 1);
    } else {
      Usage(("unknown flag " + flag).c_str());
    }
  }
  if (options.target.empty() || options.method.empty() || options.requests_path.empty()) {
    Usage("--target, --method and --requests are required");
  }
  if (options.busy_poll && options.concurrency > 1) {
    Usage("--busy-poll spins one thread per call in flight: use it with --concurrency 1");
  }
  return options;
}

std::vector<grpc::ByteBuffer> ReadRequests(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Usage(("cannot read " + path).c_str());
  std::vector<grpc::ByteBuffer> requests;
  unsigned char header[4];
  while (in.read(reinterpret_cast<char*>(header), 4)) {
    uint32_t size = header[0] | (header[1] << 8) | (header[2] << 16) |
                    (static_cast<uint32_t>(header[3]) << 24);
    std::string body(size, '\0');
    if (size > 0 && !in.read(body.data(), size)) Usage("truncated requests file");
    grpc::Slice slice(body);
    requests.emplace_back(&slice, 1);
  }
  if (requests.empty()) Usage("requests file holds no request");
  return requests;
}

// One blocking unary call over the async API (a completion queue per worker thread).
grpc::StatusCode Call(grpc::GenericStub& stub, grpc::CompletionQueue& queue,
                      const Options& options, const grpc::ByteBuffer& request) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(options.timeout_ms));
  auto call = stub.PrepareUnaryCall(&context, options.method, request, &queue);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  if (options.busy_poll) {
    grpc::CompletionQueue::NextStatus next;
    do {  // a deadline in the past: AsyncNext returns at once, event or not
      next = queue.AsyncNext(&tag, &ok, std::chrono::system_clock::time_point());
    } while (next == grpc::CompletionQueue::TIMEOUT);
    if (next != grpc::CompletionQueue::GOT_EVENT || !ok) return grpc::StatusCode::UNKNOWN;
  } else if (!queue.Next(&tag, &ok) || !ok) {
    return grpc::StatusCode::UNKNOWN;
  }
  return status.error_code();
}

// Nearest-rank percentile of sorted samples (p99 of 100 calls is the 99th, not the max).
double Percentile(const std::vector<double>& sorted, double q) {
  size_t rank = static_cast<size_t>(std::ceil(q * sorted.size()));
  return sorted[std::min(sorted.size(), std::max<size_t>(rank, 1)) - 1];
}

// The median as statistics.median computes it (the mean of the two middle samples when
// their number is even), so it compares like for like with the Python side.
double Median(const std::vector<double>& sorted) {
  size_t n = sorted.size();
  return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0;
}

}  // namespace

int main(int argc, char** argv) {
  Options options = ParseArgs(argc, argv);
  std::vector<grpc::ByteBuffer> requests = ReadRequests(options.requests_path);
  auto channel = grpc::CreateChannel(options.target, grpc::InsecureChannelCredentials());
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    std::fprintf(stderr, "loadclient: cannot connect to %s\n", options.target.c_str());
    return 1;
  }
  grpc::GenericStub stub(channel);

  std::atomic<long> next_call{0};
  std::mutex results_lock;
  std::vector<double> latencies_ms;
  std::map<int, long> codes;
  latencies_ms.reserve(options.calls);

  auto worker = [&]() {
    grpc::CompletionQueue queue;
    std::vector<double> mine;
    std::map<int, long> my_codes;
    for (long i = next_call++; i < options.calls; i = next_call++) {
      const grpc::ByteBuffer& request = requests[i % requests.size()];
      auto started = std::chrono::steady_clock::now();
      grpc::StatusCode code = Call(stub, queue, options, request);
      std::chrono::duration<double, std::milli> took = std::chrono::steady_clock::now() - started;
      my_codes[static_cast<int>(code)]++;
      if (code == grpc::StatusCode::OK) mine.push_back(took.count());
    }
    queue.Shutdown();
    void* tag;
    bool ok;
    while (queue.Next(&tag, &ok)) {
    }
    std::lock_guard<std::mutex> guard(results_lock);
    latencies_ms.insert(latencies_ms.end(), mine.begin(), mine.end());
    for (auto& [code, count] : my_codes) codes[code] += count;
  };

  // Warm-up calls on one thread first (connection, server caches), neither timed nor counted.
  {
    grpc::CompletionQueue queue;
    for (long w = 0; w < options.warmup; ++w) {
      Call(stub, queue, options, requests[w % requests.size()]);
    }
    queue.Shutdown();
    void* tag;
    bool ok;
    while (queue.Next(&tag, &ok)) {
    }
  }
  auto measured_start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < options.concurrency; ++t) threads.emplace_back(worker);
  for (auto& thread : threads) thread.join();
  std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - measured_start;

  std::sort(latencies_ms.begin(), latencies_ms.end());
  long errors = 0;
  std::string code_json;
  for (auto& [code, count] : codes) {
    if (code != 0) errors += count;
    code_json += (code_json.empty() ? "" : ", ") + std::string("\"") + std::to_string(code) +
                 "\": " + std::to_string(count);
  }
  if (latencies_ms.empty()) {
    std::printf("{\"calls\": %ld, \"ok\": 0, \"errors\": %ld, \"codes\": {%s}}\n", options.calls,
                errors, code_json.c_str());
    return 1;
  }
  std::printf(
      "{\"calls\": %ld, \"ok\": %zu, \"errors\": %ld, \"codes\": {%s}, \"concurrency\": %d, "
      "\"p50_ms\": %.4f, \"p90_ms\": %.4f, \"p99_ms\": %.4f, \"p999_ms\": %.4f, "
      "\"max_ms\": %.4f, \"rps\": %.1f}\n",
      options.calls, latencies_ms.size(), errors, code_json.c_str(), options.concurrency,
      Median(latencies_ms), Percentile(latencies_ms, 0.9), Percentile(latencies_ms, 0.99),
      Percentile(latencies_ms, 0.999), latencies_ms.back(), latencies_ms.size() / elapsed.count());
  return 0;  // failed calls are in "errors" and "codes": shedding is a result too
}
