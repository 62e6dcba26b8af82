"""PLACEHOLDER (owner: logs/console/span/testing). pytest11 plugin: fixtures for users and our tests."""
