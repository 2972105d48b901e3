#!/usr/bin/env bash
# Fails when gen/ does not match what proto/ generates (generated code is committed).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
npx buf generate --output "$tmp"
if ! diff -r "$tmp/gen" gen >/dev/null; then
  echo "gen/ is out of date with proto/: run 'npm run generate' and commit the result" >&2
  diff -r "$tmp/gen" gen | head -20 >&2
  exit 1
fi
echo "gen/ matches proto/"
