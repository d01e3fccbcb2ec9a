"""Federation: relays that home some feeds and mirror the others (docs/federation.md)."""
