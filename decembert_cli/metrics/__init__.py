"""Metrics of the downstream tasks: retrieval ranks, classification accuracy, caption scores."""
