# Included from tests/CMakeLists.txt (after the loop that builds every
# tests/test-*.c): test-executor.c is one executor-generic suite, run once
# per executor kind, which it reads from CF_TEST_EXECUTOR.
foreach(kind thread process)
  add_test(NAME test-executor-${kind} COMMAND test-executor)
  set_tests_properties(test-executor-${kind} PROPERTIES
    ENVIRONMENT CF_TEST_EXECUTOR=${kind}
    TIMEOUT 300)
endforeach()

# The third run, on the MPI executor (SPMD under mpirun: rank 0 runs the
# suite, the other WORKERS ranks serve; test-executor.c, CF_TEST_MPI).
# Not in sanitizer builds (Open MPI itself is not clean under them).
if(TARGET cfutures_mpi_static AND CF_SANITIZE STREQUAL "")
  add_executable(test-executor-mpi-bin test-executor.c)
  set_target_properties(test-executor-mpi-bin PROPERTIES
    OUTPUT_NAME test-executor-mpi)
  target_compile_definitions(test-executor-mpi-bin PRIVATE CF_TEST_MPI)
  target_link_libraries(test-executor-mpi-bin PRIVATE cfutures_mpi_static)
  add_test(NAME test-executor-mpi
    COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe ${MPIEXEC_NUMPROC_FLAG} 3
            -x CF_TEST_EXECUTOR $<TARGET_FILE:test-executor-mpi-bin>)
  set_tests_properties(test-executor-mpi PROPERTIES
    ENVIRONMENT "CF_TEST_EXECUTOR=mpi;OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1"
    TIMEOUT 300 RUN_SERIAL TRUE)
endif()
