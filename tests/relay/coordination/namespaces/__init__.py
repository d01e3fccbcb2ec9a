"""Tests of relay/coordination/namespaces: each built-in plug-in against a real relay."""
