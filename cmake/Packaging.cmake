# Packaging.cmake -- what makes an installed cfutures findable, and `make docs`.
#
# Included from the top-level CMakeLists.txt once the library targets exist
# (cfutures, cfutures_static, and cfutures_mpi / cfutures_mpi_static when
# MPI is built), after their install(TARGETS ... EXPORT cfuturesTargets)
# rule, which must list every one of them.  It adds:
#
#   - the CMake package, under <libdir>/cmake/cfutures:
#       find_package(cfutures CONFIG REQUIRED)
#       target_link_libraries(app PRIVATE cfutures::cfutures)  # shared
#       # or cfutures::cfutures_static; with MPI (COMPONENTS mpi):
#       # cfutures::mpi, cfutures::mpi_static
#   - the pkg-config files <libdir>/pkgconfig/cfutures.pc (and
#     cfutures-mpi.pc with MPI), written with the prefix given at install
#     time (`cmake --install --prefix P` works without reconfiguring;
#     DESTDIR stages without changing it);
#   - the `docs` target: Doxygen reference of include/*.h into
#     <build>/docs/html.

include(CMakePackageConfigHelpers)

set(CF_CMAKE_PACKAGE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/cfutures)

# Build-tree aliases, so code inside this project and consumers of the
# installed package spell the targets the same way.
if(NOT TARGET cfutures::cfutures_static)
  add_library(cfutures::cfutures_static ALIAS cfutures_static)
endif()

# --- The MPI part, when it is built ---------------------------------------
# cfutures_mpi (shared) and cfutures_mpi_static contain the core too: a
# program links one of them instead of cfutures.  The top-level install
# rule puts them in the export set; here they get their package names,
# cfutures::mpi and cfutures::mpi_static.
set(CF_PACKAGE_HAS_MPI OFF)
if(TARGET cfutures_mpi)
  set(CF_PACKAGE_HAS_MPI ON)
  set_target_properties(cfutures_mpi PROPERTIES EXPORT_NAME mpi)
  if(NOT TARGET cfutures::mpi)
    add_library(cfutures::mpi ALIAS cfutures_mpi)
  endif()
endif()
if(TARGET cfutures_mpi_static)
  set_target_properties(cfutures_mpi_static PROPERTIES EXPORT_NAME mpi_static)
  if(NOT TARGET cfutures::mpi_static)
    add_library(cfutures::mpi_static ALIAS cfutures_mpi_static)
  endif()
endif()

# --- CMake package ---------------------------------------------------------
install(EXPORT cfuturesTargets
  NAMESPACE cfutures::
  FILE cfuturesTargets.cmake
  DESTINATION ${CF_CMAKE_PACKAGE_DIR})

configure_package_config_file(
  ${CMAKE_CURRENT_LIST_DIR}/cfuturesConfig.cmake.in
  ${PROJECT_BINARY_DIR}/cfuturesConfig.cmake
  INSTALL_DESTINATION ${CF_CMAKE_PACKAGE_DIR})
write_basic_package_version_file(
  ${PROJECT_BINARY_DIR}/cfuturesConfigVersion.cmake
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMajorVersion)
install(FILES
  ${PROJECT_BINARY_DIR}/cfuturesConfig.cmake
  ${PROJECT_BINARY_DIR}/cfuturesConfigVersion.cmake
  DESTINATION ${CF_CMAKE_PACKAGE_DIR})

# The build tree is a package too: -Dcfutures_DIR=<build> uses it uninstalled.
export(EXPORT cfuturesTargets
  NAMESPACE cfutures::
  FILE ${PROJECT_BINARY_DIR}/cfuturesTargets.cmake)

# --- pkg-config --------------------------------------------------------------
# The prefix written into cfutures.pc is the one the tree is installed to,
# which `cmake --install --prefix P` (and `make install PREFIX=P`) can change
# after configuring: the file is configured in two steps, the second one at
# install time.  DESTDIR is (rightly) not part of it.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(CF_PC_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
else()
  set(CF_PC_LIBDIR "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
endif()
if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(CF_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
else()
  set(CF_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
set(CF_PC_LIBS_PRIVATE "-lpthread -lm")
foreach(lib ${CMAKE_DL_LIBS})
  string(APPEND CF_PC_LIBS_PRIVATE " -l${lib}")
endforeach()
set(CF_PC_PREFIX "@CF_PC_INSTALL_PREFIX@") # filled in at install time
configure_file(${CMAKE_CURRENT_LIST_DIR}/cfutures.pc.in
  ${PROJECT_BINARY_DIR}/cfutures.pc.stage @ONLY)
install(CODE "
  set(CF_PC_INSTALL_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
  configure_file(\"${PROJECT_BINARY_DIR}/cfutures.pc.stage\"
                 \"${PROJECT_BINARY_DIR}/cfutures.pc\" @ONLY)
")
install(FILES ${PROJECT_BINARY_DIR}/cfutures.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# cfutures-mpi.pc: -lcfutures_mpi (core included) plus the MPI flags CMake
# found (FindMPI), so a plain compiler works; mpicc works too.
if(TARGET cfutures_mpi)
  set(CF_PC_MPI_CFLAGS "")
  foreach(dir ${MPI_C_INCLUDE_DIRS})
    string(APPEND CF_PC_MPI_CFLAGS " -I${dir}")
  endforeach()
  set(CF_PC_MPI_LIBS "")
  foreach(lib ${MPI_C_LIBRARIES})
    if(lib MATCHES "^/.*/lib([^/]*)\\.so$")
      get_filename_component(dir "${lib}" DIRECTORY)
      string(APPEND CF_PC_MPI_LIBS " -L${dir} -l${CMAKE_MATCH_1}")
    else() # a static archive's path, or a linker flag: as it is
      string(APPEND CF_PC_MPI_LIBS " ${lib}")
    endif()
  endforeach()
  configure_file(${CMAKE_CURRENT_LIST_DIR}/cfutures-mpi.pc.in
    ${PROJECT_BINARY_DIR}/cfutures-mpi.pc.stage @ONLY)
  install(CODE "
    set(CF_PC_INSTALL_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
    configure_file(\"${PROJECT_BINARY_DIR}/cfutures-mpi.pc.stage\"
                   \"${PROJECT_BINARY_DIR}/cfutures-mpi.pc\" @ONLY)
  ")
  install(FILES ${PROJECT_BINARY_DIR}/cfutures-mpi.pc
    DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endif()

# --- Reference documentation: `make docs` / cmake --build <b> --target docs ---
find_package(Doxygen QUIET)
if(DOXYGEN_FOUND)
  set(CF_DOCS_OUTPUT_DIR ${PROJECT_BINARY_DIR}/docs)
  # The front page: what to open first (the headers' own comments are the
  # reference; the guides are Markdown files of the source tree).
  set(CF_DOCS_MAINPAGE ${PROJECT_BINARY_DIR}/docs-mainpage.md)
  string(CONCAT cf_mainpage "cfutures {#mainpage}\n========\n\n"
    "Python's `concurrent.futures` for C (C17), version ${PROJECT_VERSION}.\n\n"
    "- @ref cfutures.h -- the whole core API: futures, executors (thread "
    "and process pools), wait, as_completed, map, continuations, "
    "cancellation, statistics, the timeline.\n")
  if(EXISTS ${PROJECT_SOURCE_DIR}/include/cfutures_mpi.h)
    string(APPEND cf_mainpage
      "- @ref cfutures_mpi.h -- the MPI executor (library cfutures_mpi).\n")
  endif()
  string(APPEND cf_mainpage "\n"
    "Start with the conventions at the top of cfutures.h (status codes, "
    "timeouts, ownership, threads).  The user guide (docs/guide.md) and the "
    "Python to C mapping (docs/python-mapping.md) are in the source tree.\n")
  file(CONFIGURE OUTPUT ${CF_DOCS_MAINPAGE} CONTENT "${cf_mainpage}" @ONLY)
  configure_file(${CMAKE_CURRENT_LIST_DIR}/Doxyfile.in
    ${PROJECT_BINARY_DIR}/Doxyfile @ONLY)
  add_custom_target(docs
    COMMAND ${CMAKE_COMMAND} -E make_directory ${CF_DOCS_OUTPUT_DIR}
    COMMAND Doxygen::doxygen ${PROJECT_BINARY_DIR}/Doxyfile
    COMMAND ${CMAKE_COMMAND} -E echo
            "docs: ${CF_DOCS_OUTPUT_DIR}/html/index.html"
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    COMMENT "Doxygen: the reference of include/*.h"
    VERBATIM)
else()
  add_custom_target(docs
    COMMAND ${CMAKE_COMMAND} -E echo
            "docs: Doxygen not found (Debian: apt-get install doxygen), then re-run cmake"
    COMMAND ${CMAKE_COMMAND} -E false
    VERBATIM)
endif()
