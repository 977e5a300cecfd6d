// Rebuilds Anchor.json (ABI + bytecode) from Anchor.sol with a pinned solc (solc-js, offline
// once the npm package is cached). Run: ./build.sh. Nothing is compiled at run time.
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(process.env.SOLC_MODULE_PATH + "/");
const solc = require("solc");
const here = dirname(fileURLToPath(import.meta.url));
const source = readFileSync(join(here, "Anchor.sol"), "utf8");
const input = {
  language: "Solidity",
  sources: { "Anchor.sol": { content: source } },
  settings: {
    // Paris (no PUSH0): runs on every EVM chain and on py-evm's embedded chain alike.
    evmVersion: "paris",
    optimizer: { enabled: true, runs: 200 },
    metadata: { bytecodeHash: "none" },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
if (errors.length) {
  console.error(errors.map((e) => e.formattedMessage).join("\n"));
  process.exit(1);
}
const contract = output.contracts["Anchor.sol"].Anchor;
const artifact = {
  contractName: "Anchor",
  compiler: { name: "solc", version: solc.version() },
  settings: { evmVersion: input.settings.evmVersion, optimizer: input.settings.optimizer },
  abi: contract.abi,
  bytecode: "0x" + contract.evm.bytecode.object,
  deployedBytecode: "0x" + contract.evm.deployedBytecode.object,
};
writeFileSync(join(here, "Anchor.json"), JSON.stringify(artifact, null, 2) + "\n");
console.log(`Anchor.json written by solc ${solc.version()}`);
