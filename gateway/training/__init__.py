"""Federated training on the gateway side: Flower ServerApp, deployment, job API (no rows)."""
