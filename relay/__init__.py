"""erp-relay: relays ERP business events to signed webhooks, durably and in order."""

__version__ = "0.1.0"
