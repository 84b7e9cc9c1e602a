# Transactions, planning with guarded inverses, Firewall (queries, Commit, Restore, Open).
list(APPEND IPTKIT_TXN_SRCS
  ${CMAKE_CURRENT_SOURCE_DIR}/planner.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/firewall.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/firewall_open.cc)

iptkit_test(txn_test
  SRCS ${CMAKE_CURRENT_SOURCE_DIR}/planner_test.cc
       ${CMAKE_CURRENT_SOURCE_DIR}/firewall_test.cc
  DEPS iptkit_txn)
