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
  # Each function in a section of its own, so that the iptkit CLI's link can place the functions its commands run
  # next to each other (tools/iptkit/CMakeLists.txt, cmake/iptkit_cli.order); other programs link as before.
  target_compile_options(${name} PRIVATE -ffunction-sections)
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

# iptkit_prefer_static(IMPORTED_TARGET LIBNAME [EXTRA...]): an executable with the target property
# IPTKIT_STATIC_DEPS set links lib<LIBNAME>.a (plus EXTRA, what the archive needs) in place of the shared library
# behind the pkg-config target IMPORTED_TARGET, when the system has the archive; every other target keeps the
# shared library. For the one-command CLI, where each shared library loaded and relocated at start-up costs more
# than its code saves (tools/iptkit/CMakeLists.txt).
function(iptkit_prefer_static imported lib)
  find_library(IPTKIT_STATIC_${lib} NAMES lib${lib}.a NO_CACHE)
  if(NOT IPTKIT_STATIC_${lib})
    return()
  endif()
  get_target_property(shared ${imported} INTERFACE_LINK_LIBRARIES)
  set(static_wanted "$<BOOL:$<TARGET_PROPERTY:IPTKIT_STATIC_DEPS>>")
  set(libs "")
  foreach(item IN LISTS shared)
    list(APPEND libs "$<$<NOT:${static_wanted}>:${item}>")
  endforeach()
  list(APPEND libs "$<${static_wanted}:${IPTKIT_STATIC_${lib}}>")
  foreach(item IN LISTS ARGN)
    list(APPEND libs "$<${static_wanted}:${item}>")
  endforeach()
  set_property(TARGET ${imported} PROPERTY INTERFACE_LINK_LIBRARIES "${libs}")
endfunction()
