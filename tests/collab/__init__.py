"""Tests of the agent SDK (``collab``): protocol core, client, documents and replay."""
