"""Bridges to external training frameworks (verl). Nothing here is imported by the core package."""
