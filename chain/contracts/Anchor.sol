// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title Anchor: publishes Merkle roots of provenance batches as logs.
/// @notice Stores nothing: the log (root, leaf count, block time) is the evidence, and logs
///         are the cheapest durable record an EVM chain offers. Who anchored is the
///         transaction's sender, which verifiers can check against a published address.
contract Anchor {
    event Anchored(bytes32 indexed root, uint256 leafCount);

    function anchor(bytes32 root, uint256 leafCount) external {
        emit Anchored(root, leafCount);
    }
}
