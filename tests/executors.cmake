# Included from tests/CMakeLists.txt (after the loop that builds every
# tests/test-*.c): test-executor.c is one executor-generic suite, run once
# per executor kind, which it reads from CF_TEST_EXECUTOR.
foreach(kind thread process)
  add_test(NAME test-executor-${kind} COMMAND test-executor)
  set_tests_properties(test-executor-${kind} PROPERTIES
    ENVIRONMENT CF_TEST_EXECUTOR=${kind}
    TIMEOUT 300)
endforeach()
