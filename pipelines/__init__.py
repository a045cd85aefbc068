"""Orchestration on Ray: build (train bundles into the store); later metrics, fit, evaluate."""
