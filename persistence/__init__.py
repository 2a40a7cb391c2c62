"""Storage backends behind the `Store` port."""
