# What `cmake --install` puts in place: the headers, libiptkit.so.1 (the C ABI) and libiptkit.a (the same, static),
# libiptkit++.a (the C++ API, no ABI promise), iptkit.pc, and (from their own folders) the CLI, the daemon, the man
# pages and the bash completion; bindings/python installs the Python package.
include(GNUInstallDirs)

# The static libraries every C++ user of include/iptkit/*.h needs, in link order.
set(IPTKIT_CXX_ARCHIVES iptkit_txn iptkit_json iptkit_ipset iptkit_backend iptkit_dialect iptkit_model iptkit_base)
# Paths joined with "|" (a ";" list would be split into separate arguments of the command).
set(cxx_inputs "")
foreach(lib IN LISTS IPTKIT_CXX_ARCHIVES)
  string(APPEND cxx_inputs "|$<TARGET_FILE:${lib}>")
endforeach()
set(IPTKIT_CXX_ARCHIVE ${PROJECT_BINARY_DIR}/libiptkit++.a)
set(IPTKIT_C_ARCHIVE ${PROJECT_BINARY_DIR}/libiptkit.a)
add_custom_command(OUTPUT ${IPTKIT_CXX_ARCHIVE}
  COMMAND ${CMAKE_COMMAND} -DOUTPUT=${IPTKIT_CXX_ARCHIVE} "-DINPUTS=${cxx_inputs}" -DAR=${CMAKE_AR}
          -P ${PROJECT_SOURCE_DIR}/cmake/merge_archives.cmake
  DEPENDS ${IPTKIT_CXX_ARCHIVES} ${PROJECT_SOURCE_DIR}/cmake/merge_archives.cmake
  COMMENT "libiptkit++.a: the C++ API as one static library" VERBATIM)
add_custom_command(OUTPUT ${IPTKIT_C_ARCHIVE}
  COMMAND ${CMAKE_COMMAND} -DOUTPUT=${IPTKIT_C_ARCHIVE} "-DINPUTS=$<TARGET_FILE:iptkit_c_static>${cxx_inputs}"
          -DAR=${CMAKE_AR} -P ${PROJECT_SOURCE_DIR}/cmake/merge_archives.cmake
  DEPENDS iptkit_c_static ${IPTKIT_CXX_ARCHIVES} ${PROJECT_SOURCE_DIR}/cmake/merge_archives.cmake
  COMMENT "libiptkit.a: the C ABI as one static library" VERBATIM)
add_custom_target(iptkit_archives ALL DEPENDS ${IPTKIT_CXX_ARCHIVE} ${IPTKIT_C_ARCHIVE})

set(IPTKIT_C_ABI_MAJOR 1)
file(RELATIVE_PATH IPTKIT_PC_UP "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
configure_file(${PROJECT_SOURCE_DIR}/cmake/iptkit.pc.in ${PROJECT_BINARY_DIR}/iptkit.pc @ONLY)

install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/iptkit DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.h")
install(TARGETS iptkit_c LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(FILES ${IPTKIT_C_ARCHIVE} ${IPTKIT_CXX_ARCHIVE} DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(FILES ${PROJECT_BINARY_DIR}/iptkit.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
install(FILES ${PROJECT_SOURCE_DIR}/docs/c-api.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
