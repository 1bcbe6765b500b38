"""The central gateway: accounts, projects, query fan-out, combination. Never sees a row."""
