#!/usr/bin/env bash
# The dashboard puts data on the page as text only (docs/dashboard.md "Security"): no HTML sinks, no inline
# script or style in its HTML, no eval. Usage: check_text_only.sh UI_DIR
set -euo pipefail
dir=${1:?usage: check_text_only.sh UI_DIR}
status=0
if grep -rnE 'innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function|setAttribute\(.(style|on[a-z]+)' \
     --include='*.js' "$dir"; then
  echo "check_text_only: HTML sinks or eval in $dir (build nodes with dom.js h() and text)" >&2
  status=1
fi
if grep -nP '<script(?![^>]*\bsrc=)|\sstyle=|\son[a-z]+=' "$dir"/*.html; then
  echo "check_text_only: inline script, style or event handler in $dir/*.html (the CSP forbids them)" >&2
  status=1
fi
exit $status
