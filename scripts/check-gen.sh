#!/usr/bin/env bash
# Fails when gen/ does not match what proto/ generates (generated code is committed): the
# protoc-gen-es output file by file, and gen/tenantd.binpb (the descriptor set with comments that
# the OpenAPI document reads) byte for byte. `buf build` writes it deterministically (files in
# dependency order, no timestamps), so equal sources give equal bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
npx buf generate --output "$tmp"
# The same command as `npm run generate:descriptors`, into the temporary tree.
npx buf build proto --exclude-imports --as-file-descriptor-set -o "$tmp/gen/tenantd.binpb"
if ! diff -r "$tmp/gen" gen >/dev/null; then
  echo "gen/ is out of date with proto/: run 'npm run generate' and commit the result" >&2
  diff -r "$tmp/gen" gen | head -20 >&2
  exit 1
fi
echo "gen/ matches proto/"
