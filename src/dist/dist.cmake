# Included from src/CMakeLists.txt (owned by the distributed-training work).
# tern_dist: the communicators (single-process; MPI when TERN_WITH_MPI), the AdaComp codec and the
# gradient exchange. No libtorch; the trainer links it.
set(TERN_MPI AUTO CACHE STRING "Build the MPI communicator: AUTO (when MPI is found), ON (required), OFF")
set_property(CACHE TERN_MPI PROPERTY STRINGS AUTO ON OFF)

set(TERN_WITH_MPI OFF)
if(NOT TERN_MPI STREQUAL "OFF")
  set(MPI_CXX_SKIP_MPICXX ON)  # the C API only; the deprecated C++ bindings are not needed
  if(TERN_MPI STREQUAL "ON")
    find_package(MPI REQUIRED COMPONENTS CXX)
  else()
    find_package(MPI QUIET COMPONENTS CXX)
  endif()
  if(MPI_CXX_FOUND)
    set(TERN_WITH_MPI ON)
  endif()
endif()
# For tests/distributed.cmake: OpenMPI's mpirun refuses root (CI containers) and more ranks than cores.
set(TERN_MPIEXEC_FLAGS)
if(TERN_WITH_MPI AND MPIEXEC_EXECUTABLE)
  execute_process(COMMAND ${MPIEXEC_EXECUTABLE} --version OUTPUT_VARIABLE _tern_mpiexec_version ERROR_QUIET)
  if(_tern_mpiexec_version MATCHES "Open MPI|OpenRTE")
    set(TERN_MPIEXEC_FLAGS --allow-run-as-root --oversubscribe)
  endif()
endif()
set(TERN_WITH_MPI ${TERN_WITH_MPI} PARENT_SCOPE)
set(TERN_MPIEXEC_FLAGS ${TERN_MPIEXEC_FLAGS} PARENT_SCOPE)
message(STATUS "tern: MPI communicator: ${TERN_WITH_MPI}")

add_library(tern_dist
  dist/communicator.cpp
  dist/adacomp.cpp
  dist/gradient_exchange.cpp)
target_link_libraries(tern_dist PUBLIC tern)
if(TERN_WITH_MPI)
  target_sources(tern_dist PRIVATE dist/mpi_communicator.cpp)
  target_compile_definitions(tern_dist PUBLIC TERN_HAVE_MPI)
  target_link_libraries(tern_dist PRIVATE MPI::MPI_CXX)
endif()
