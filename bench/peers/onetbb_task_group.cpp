// onetbb_task_group.cpp -- peer of thread_submit_result: oneTBB's
// task_group, limited to 2 threads (global_control), runs N trivial tasks
// (each stores its argument + 1 in its own slot), then wait() and the
// results are read in order.  task_group gives no per-task future: the
// peer does strictly less than cfutures does per task.
//
//   peer_onetbb_task_group N
#include <tbb/global_control.h>
#include <tbb/task_group.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <vector>

static void run(tbb::task_group &g, std::vector<int64_t> &out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        g.run([&out, i] { out[i] = (int64_t)i + 1; });
    g.wait();
    for (size_t i = 0; i < n; i++)
        if (out[i] != (int64_t)i + 1) {
            std::fprintf(stderr, "onetbb: WRONG result at %zu\n", i);
            std::exit(1);
        }
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 200000;
    if (n == 0)
        return 2;
    tbb::global_control gc(tbb::global_control::max_allowed_parallelism, 2);
    tbb::task_group g;
    std::vector<int64_t> out(n);
    run(g, out, n); // warm-up: the same N (bench/README.md)
    auto t0 = std::chrono::steady_clock::now();
    run(g, out, n);
    auto t1 = std::chrono::steady_clock::now();
    double ns = std::chrono::duration<double, std::nano>(t1 - t0).count();
    std::printf("RESULT thread_submit_result onetbb_task_group %zu %.6g ns/task\n",
                n, ns / (double)n);
    return 0;
}
