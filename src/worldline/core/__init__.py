"""Contracts, config system, errors and atomic IO shared by every part of worldline."""
