"""The data plane: Triton serving of the model repository, the runtimes the graph calls."""
