// nested_onetbb.cpp -- peer of the nested_* benches: oneTBB's task_group
// (2 threads, global_control) through the adapter of nested_kernels.h:
// spawn = task_group::run, join = task_group::wait.
//
//   peer_nested_onetbb BENCH N
#include <tbb/global_control.h>
#include <tbb/task_group.h>

static const char *nk_impl = "onetbb_task_group";
#define NK_GROUP tbb::task_group
#define NK_INIT(g) (void)0
#define NK_SPAWN(g, f, a)                                                   \
    do {                                                                    \
        void (*f_)(void *) = (f);                                           \
        void *a_ = (a);                                                     \
        (g).run([f_, a_] { f_(a_); });                                      \
    } while (0)
#define NK_WAIT(g) (g).wait()
#include "nested_kernels.h"

static void nk_run_root(void (*root)(void *), void *frame)
{
    tbb::task_group g;
    g.run([root, frame] { root(frame); });
    g.wait();
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    tbb::global_control gc(tbb::global_control::max_allowed_parallelism, 2);
    return nk_main(argv[1], std::strtoull(argv[2], nullptr, 10));
}
