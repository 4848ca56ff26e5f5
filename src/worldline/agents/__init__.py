"""Agents that learn inside world models, and the gymnasium environment any world model becomes."""
