"""Plots for inspecting trained models: attention maps, WAL weights, DGF edge weights, code embeddings."""
