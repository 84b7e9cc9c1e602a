# Declarative apply (owner: declarative). Included by src/txn/CMakeLists.txt.
list(APPEND IPTKIT_TXN_SRCS
  ${CMAKE_CURRENT_SOURCE_DIR}/declarative.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/firewall_apply.cc)
iptkit_test(declarative_test
  SRCS ${CMAKE_CURRENT_SOURCE_DIR}/declarative_test.cc
  DEPS iptkit_txn iptkit_backend iptkit_dialect)
