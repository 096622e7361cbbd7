"""The operator console: server-rendered pages under `/ui/` on the relay's own listener (`relay.console.routes`)."""
