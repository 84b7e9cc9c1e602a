#!/usr/bin/env bash
# docs/openapi.yaml through a standard OpenAPI linter: Redocly CLI's `redocly lint` (npm @redocly/cli, installed by
# scripts/install-deps.sh) with its recommended rules. Fails on any error: a value cut at a comma of a YAML flow
# mapping (`{description: a, b}` makes `b` a property), a property where none may be, a broken $ref, an invalid
# schema. Warnings are printed and allowed. Usage: openapi_lint.sh docs/openapi.yaml
set -euo pipefail
spec=${1:?usage: openapi_lint.sh SPEC}
if ! command -v redocly >/dev/null 2>&1; then
  echo "openapi_lint: redocly not found; run scripts/install-deps.sh (npm install -g @redocly/cli)" >&2
  exit 1
fi
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true NO_UPDATE_NOTIFIER=1
exec redocly lint --format=stylish "$spec"
