# Fake (in-memory) and fault-injection backends, and the table semantics they share with the txn planner.
list(APPEND IPTKIT_BACKEND_SRCS
  ${CMAKE_CURRENT_SOURCE_DIR}/fake/table_sim.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/fake/fake_backend.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/fake/fault_backend.cc)

iptkit_test(fake_backend_test
  SRCS ${CMAKE_CURRENT_SOURCE_DIR}/fake/fake_backend_test.cc
       ${CMAKE_CURRENT_SOURCE_DIR}/fake/fault_backend_test.cc
  DEPS iptkit_backend)
