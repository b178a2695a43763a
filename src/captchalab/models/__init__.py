"""Pure networks, looked up by name. Each maps an image batch (n, h, w, 1) to logits."""
