// rvaser_thread_pool.cpp -- peer of thread_submit_result: rvaser's
// thread_pool (Debian libthread-pool-dev), 2 threads.  Submit returns a
// std::future: submit N trivial tasks (argument + 1), then get() each in
// order, exactly as cfutures' bench.
//
//   peer_rvaser_thread_pool N
#include <thread_pool/thread_pool.hpp>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <vector>

static int64_t inc(int64_t x) { return x + 1; }

static void run(thread_pool::ThreadPool &pool, size_t n)
{
    std::vector<std::future<int64_t>> fs;
    fs.reserve(n);
    for (size_t i = 0; i < n; i++)
        fs.emplace_back(pool.Submit(inc, (int64_t)i));
    for (size_t i = 0; i < n; i++)
        if (fs[i].get() != (int64_t)i + 1) {
            std::fprintf(stderr, "rvaser: WRONG result at %zu\n", i);
            std::exit(1);
        }
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 200000;
    if (n == 0)
        return 2;
    thread_pool::ThreadPool pool(2);
    run(pool, n); // warm-up: the same N (bench/README.md)
    auto t0 = std::chrono::steady_clock::now();
    run(pool, n);
    auto t1 = std::chrono::steady_clock::now();
    double ns = std::chrono::duration<double, std::nano>(t1 - t0).count();
    std::printf("RESULT thread_submit_result rvaser_thread_pool %zu %.6g ns/task\n",
                n, ns / (double)n);
    return 0;
}
