"""The network: the search space (search_space, no jax), the grid ResNet (network) and its convolution
lowerings (conv, winograd)."""
