/*
 * mpi_pingpong.c -- the physical floor of mpi_submit_result: rank 0 sends
 * one int64 to a worker rank (the workers in turn), which answers with
 * item + 1; one request in flight.  Run with 3 ranks (1 + 2 workers):
 *
 *   mpirun -np 3 mpi_pingpong N
 *
 * Rank 0 prints "RESULT mpi_submit_result mpi_pingpong <n> <ns> ns/task".
 */
#include <mpi.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

enum { TAG_WORK = 1, TAG_STOP = 2 };

static void pingpong(int nworkers, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int dest = 1 + (int)(i % (size_t)nworkers);
        int64_t v = (int64_t)i;
        MPI_Send(&v, 1, MPI_INT64_T, dest, TAG_WORK, MPI_COMM_WORLD);
        MPI_Recv(&v, 1, MPI_INT64_T, dest, TAG_WORK, MPI_COMM_WORLD,
                 MPI_STATUS_IGNORE);
        if (v != (int64_t)i + 1) {
            fprintf(stderr, "mpi_pingpong: WRONG result at %zu\n", i);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
    }
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 100000;
    if (size < 2 || n == 0) {
        if (rank == 0)
            fprintf(stderr, "usage: mpirun -np 3 mpi_pingpong N\n");
        MPI_Finalize();
        return 2;
    }
    if (rank == 0) {
        pingpong(size - 1, n < 1000 ? n : 1000);
        double t0 = MPI_Wtime();
        pingpong(size - 1, n);
        double t1 = MPI_Wtime();
        int64_t stop = 0;
        for (int r = 1; r < size; r++)
            MPI_Send(&stop, 1, MPI_INT64_T, r, TAG_STOP, MPI_COMM_WORLD);
        printf("RESULT mpi_submit_result mpi_pingpong %zu %.6g ns/task\n", n,
               (t1 - t0) * 1e9 / (double)n);
        fflush(stdout);
    } else {
        for (;;) {
            int64_t v;
            MPI_Status st;
            MPI_Recv(&v, 1, MPI_INT64_T, 0, MPI_ANY_TAG, MPI_COMM_WORLD, &st);
            if (st.MPI_TAG == TAG_STOP)
                break;
            v += 1;
            MPI_Send(&v, 1, MPI_INT64_T, 0, TAG_WORK, MPI_COMM_WORLD);
        }
    }
    MPI_Finalize();
    return 0;
}
