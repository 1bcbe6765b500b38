"""Federated training at a site: the Flower ClientApp and everything it needs that sees rows."""
