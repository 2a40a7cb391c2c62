"""Escenario: real-time collaborative audio server."""
