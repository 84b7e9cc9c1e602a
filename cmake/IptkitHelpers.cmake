# iptkit_library(NAME SRCS ... DEPS ...): one folder = one static library target.
function(iptkit_library name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  if(NOT ARG_SRCS)
    # A folder whose sources have not landed yet: keep the tree configurable.
    add_library(${name} INTERFACE)
    target_include_directories(${name} INTERFACE ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR})
    target_link_libraries(${name} INTERFACE ${ARG_DEPS})
    return()
  endif()
  add_library(${name} STATIC ${ARG_SRCS})
  # Every library also goes into libiptkit.so (the C ABI, src/capi): position-independent code. (Executables and
  # tests keep the compiler's default.)
  set_target_properties(${name} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  target_compile_features(${name} PUBLIC cxx_std_20)
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
  iptkit_warnings(${name})
endfunction()

# iptkit_test(NAME SRCS ... DEPS ... [LABELS ...] [SERIAL]): a GoogleTest binary registered with ctest.
# SERIAL: its tests never run beside others (traffic tests whose timing a loaded CPU would disturb).
function(iptkit_test name)
  if(NOT IPTKIT_BUILD_TESTS)
    return()
  endif()
  cmake_parse_arguments(ARG "SERIAL" "" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SRCS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  target_compile_definitions(${name} PRIVATE IPTKIT_CORPUS_DIR="${IPTKIT_CORPUS_DIR}"
                                             IPTKIT_BINARY_DIR="${PROJECT_BINARY_DIR}")
  iptkit_warnings(${name})
  if(NOT ARG_LABELS)
    set(ARG_LABELS unit)
  endif()
  set(serial FALSE)
  if(ARG_SERIAL)
    set(serial TRUE)
  endif()
  gtest_discover_tests(${name} PROPERTIES LABELS "${ARG_LABELS}" RUN_SERIAL ${serial} DISCOVERY_TIMEOUT 60)
endfunction()

function(iptkit_warnings name)
  # -Wno-restrict: GCC 12 reports false positives inside std::string at -O3 (GCC bug 105329).
  target_compile_options(${name} PRIVATE -Wall -Wextra -Wno-unused-parameter
                                         $<$<CXX_COMPILER_ID:GNU>:-Wno-restrict>)
  if(IPTKIT_WERROR)
    target_compile_options(${name} PRIVATE -Werror)
  endif()
endfunction()
