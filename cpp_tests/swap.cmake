# C++ tests of the KV swap engine (csrc/swap). Included from cpp_tests/CMakeLists.txt.
find_package(GTest REQUIRED)
include(GoogleTest)
add_executable(test_swap ${CMAKE_CURRENT_LIST_DIR}/test_swap.cpp)
target_link_libraries(test_swap PRIVATE lamps_swap lamps_warnings GTest::gtest_main)
gtest_discover_tests(test_swap DISCOVERY_TIMEOUT 60)
