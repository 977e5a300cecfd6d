#!/bin/sh
# Rebuild chain/contracts/Anchor.json from Anchor.sol with solc-js 0.8.30 (npm); the output is
# committed, so the service never compiles anything. Needs node >= 18 and npm.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tools=${SOLC_TOOLS_DIR:-"${TMPDIR:-/tmp}/anchor-solc-0.8.30"}
if [ ! -d "$tools/node_modules/solc" ]; then
    mkdir -p "$tools"
    npm install --silent --no-audit --no-fund --prefix "$tools" solc@0.8.30
fi
SOLC_MODULE_PATH="$tools/node_modules" node "$here/build.mjs"
