"""Wire protocols the graph is served over, kept apart from the servers that speak them so each
codec can be tested against the real client libraries without a network."""
