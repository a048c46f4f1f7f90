"""The running node (L3), split into components; ``meshchat.node.Node`` wires them."""
