"""Onboarding a connection: discovery with a mapping draft, dry runs by key, drift and source health rules."""
