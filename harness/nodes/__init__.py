"""One layer for commands, processes and state on a node, used by targets and sensors."""
