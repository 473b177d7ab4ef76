# Included from tests/CMakeLists.txt: distributed training tests.
tern_add_test(test_adacomp test_adacomp.cpp)
target_link_libraries(test_adacomp PRIVATE tern_dist)
tern_add_test(test_gradient_exchange test_gradient_exchange.cpp)
target_link_libraries(test_gradient_exchange PRIVATE tern_dist)

# Two ranks under mpirun (a plain program: exit status 0 = pass). The timeout test is a script that
# bounds the whole job and checks the surviving rank's message. TERN_MPIEXEC_FLAGS: src/dist/dist.cmake.
if(TERN_WITH_MPI)
  add_executable(mpi_exchange_test mpi_exchange_test.cpp)
  target_link_libraries(mpi_exchange_test PRIVATE tern_dist)
  add_test(NAME mpi_exchange
           COMMAND ${MPIEXEC_EXECUTABLE} ${TERN_MPIEXEC_FLAGS} ${MPIEXEC_NUMPROC_FLAG} 2
                   $<TARGET_FILE:mpi_exchange_test>)
  set_tests_properties(mpi_exchange PROPERTIES TIMEOUT 60)
  add_test(NAME mpi_timeout
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/mpi_timeout_test.sh $<TARGET_FILE:mpi_exchange_test>
                   ${MPIEXEC_EXECUTABLE} ${TERN_MPIEXEC_FLAGS})
  set_tests_properties(mpi_timeout PROPERTIES TIMEOUT 120)
endif()

# Data-parallel training (libtorch): 2 ranks equal one process; a dead rank ends the job.
if(TERN_WITH_MPI AND TERN_WITH_TORCH)
  add_executable(mpi_train_test mpi_train_test.cpp)
  target_include_directories(mpi_train_test PRIVATE ${CMAKE_CURRENT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(mpi_train_test PRIVATE tern_test_support tern_train tern_dist nlohmann_json::nlohmann_json)
  target_compile_options(mpi_train_test PRIVATE -Wno-unused-parameter)
  add_test(NAME mpi_train
           COMMAND ${MPIEXEC_EXECUTABLE} ${TERN_MPIEXEC_FLAGS} ${MPIEXEC_NUMPROC_FLAG} 2 $<TARGET_FILE:mpi_train_test>)
  set_tests_properties(mpi_train PROPERTIES TIMEOUT 120)
  add_test(NAME mpi_train_fault
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/mpi_train_fault_test.sh $<TARGET_FILE:tern_cli>
                   ${PROJECT_SOURCE_DIR}/models/lenet5.onnx ${MPIEXEC_EXECUTABLE} ${TERN_MPIEXEC_FLAGS})
  set_tests_properties(mpi_train_fault PROPERTIES TIMEOUT 120)
endif()
