# Included from tests/CMakeLists.txt: fixed-point and accumulation tests.
tern_add_test(test_accumulation test_accumulation.cpp)
tern_add_test(test_fixed_point test_fixed_point.cpp)
