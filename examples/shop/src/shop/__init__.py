"""The example shop: a tiny HTTP app that reports its release on /health."""
