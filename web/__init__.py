"""The browser viewer: static files served by the relay at ``/`` (no build step)."""
