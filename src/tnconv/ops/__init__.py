"""One module per family of operations: network builders plus evaluated functions."""
