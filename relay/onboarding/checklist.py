"""Pure rules of the permissions checklist of `relay check-config --probe`: what each resource needs granted."""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["Verdict", "checklist_line", "grant_needed", "verdict"]

Verdict = Literal["answered", "refused", "missing", "failed"]


def grant_needed(source: Any, resource: Any) -> str:
    """The exact name an administrator grants for one polled resource of `source` (a SourceConfig)."""
    if source.kind == "x3":
        cfg = next(r for r in source.resources if r.class_ == resource.name)
        if source.api == "graphql":
            from relay.poll.x3 import CLASSES

            known = CLASSES.get(cfg.class_)
            node = cfg.node or (known.node if known else None) or cfg.class_
            return f"GraphQL node {node} (folder {source.folder}) for the connected application's user"
        representation = cfg.representation or cfg.class_
        return f"class {cfg.class_}, representation {representation} (folder {source.folder}) for the web-service user"
    if source.kind == "sxe":
        feed = resource.options.get("feed")
        table = getattr(feed, "table", None)
        if table:
            return f"ION API {source.fetchwhere_path} (SX.e table {table}) for the .ionapi service account"
        operation = getattr(feed, "operation", resource.name)
        return f"ION API {source.service_path.rstrip('/')}/{operation} for the .ionapi service account"
    return f"GET {resource.options.get('url', resource.name)} for the configured credentials"


def verdict(status: int | None, permission: bool) -> Verdict:
    """answered, refused (401/403), missing (404: the class, table or endpoint is not there) or failed."""
    if permission or status in (401, 403):
        return "refused"
    if status == 404:
        return "missing"
    return "failed"


def checklist_line(source: str, resource: str, outcome: Verdict, grant: str, detail: str = "") -> str:
    """One checklist line: `[answered]`, `[refused]` with what to grant, `[missing]`, `[failed]` and why."""
    if outcome == "answered":
        return f"{source} {resource}: [answered] {grant}{f' ({detail})' if detail else ''}"
    if outcome == "refused":
        return f"{source} {resource}: [refused] permission denied: grant {grant}{f' — {detail}' if detail else ''}"
    if outcome == "missing":
        return f"{source} {resource}: [missing] {grant} does not exist{f' — {detail}' if detail else ''}"
    return f"{source} {resource}: [failed] {grant} — {detail}"
