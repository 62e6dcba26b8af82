"""Implementation of :mod:`otelkit.pipeline` (carriers, propagation, scopes, metrics, queue probes)."""
