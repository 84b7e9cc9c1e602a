#!/usr/bin/env bash
# Fails when a C++ file of the project differs from what clang-format (the repo's .clang-format; Debian 12's
# clang-format 14, installed by scripts/install-deps.sh) makes of it, and names every such file.
# Usage: check_format.sh [SOURCE_ROOT]
set -euo pipefail
root=${1:-$(dirname "$0")/../..}
cd "$root"
if ! command -v clang-format >/dev/null 2>&1; then
  echo "check_format: clang-format not found; run scripts/install-deps.sh" >&2
  exit 1
fi
mapfile -t files < <(find include src tools tests bench fuzz examples -type f \( -name '*.h' -o -name '*.cc' -o -name '*.c' \) \
                       2>/dev/null | sort)
# One clang-format run for the whole tree; it names each differing file in its diagnostics.
mapfile -t unformatted < <(clang-format --dry-run --Werror "${files[@]}" 2>&1 |
                             sed -n 's/^\([^:]*\):[0-9]*:[0-9]*: error:.*/\1/p' | sort -u)
bad=${#unformatted[@]}
for file in "${unformatted[@]}"; do
  echo "$file: not formatted (clang-format -i $file)"
done
if [ "$bad" -gt 0 ]; then
  echo "check_format: $bad of ${#files[@]} files need clang-format" >&2
  exit 1
fi
echo "check_format: ${#files[@]} files formatted"
