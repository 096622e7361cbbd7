"""`.ionapi` files: what is accepted, and how every problem is reported at once without leaking secrets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from relay.auth.ionapi import IonApiCredentials, IonApiError, load_ionapi, parse_ionapi

SECRET = "cs-0123456789-very-secret"
SERVICE_SECRET = "sask-abcdefghij-very-secret"


def ionapi(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "ti": "HALLORAN_PRD",
        "cn": "erp-relay",
        "dt": "12",
        "ci": "HALLORAN_PRD~abc123",
        "cs": SECRET,
        "iu": "https://mingle-ionapi.example.com",
        "pu": "https://mingle-sso.example.com:443/HALLORAN_PRD/as/",
        "oa": "authorization.oauth2",
        "ot": "token.oauth2",
        "or": "revoke_token.oauth2",
        "saak": "HALLORAN_PRD#key",
        "sask": SERVICE_SECRET,
        "sc": ["Infor-ION"],
        "ev": "V1480769020",
        "v": "1.0",
    }
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def parse(doc: dict[str, Any]) -> IonApiCredentials:
    return parse_ionapi(json.dumps(doc), origin="halloran.ionapi")


def test_a_complete_file() -> None:
    creds = parse(ionapi())
    assert creds.ti == "HALLORAN_PRD"
    assert creds.or_ == "revoke_token.oauth2"
    assert creds.sc == ["Infor-ION"]
    assert creds.token_url == "https://mingle-sso.example.com:443/HALLORAN_PRD/as/token.oauth2"
    assert creds.revoke_url == "https://mingle-sso.example.com:443/HALLORAN_PRD/as/revoke_token.oauth2"
    assert creds.gateway_base == "https://mingle-ionapi.example.com/HALLORAN_PRD"
    assert creds.gateway_url("/SX/rest/sxapirestservice/op") == (
        "https://mingle-ionapi.example.com/HALLORAN_PRD/SX/rest/sxapirestservice/op"
    )
    assert creds.grant == "password"


def test_pu_without_trailing_slash_still_joins() -> None:
    creds = parse(ionapi(pu="https://sso.example.com/T/as", iu="https://gw.example.com/"))
    assert creds.token_url == "https://sso.example.com/T/as/token.oauth2"
    assert creds.gateway_base == "https://gw.example.com/HALLORAN_PRD"


def test_without_a_service_account_the_file_is_refused_with_how_to_get_one() -> None:
    # The ION API has no client-credentials grant: such a file cannot be used unattended.
    with pytest.raises(IonApiError) as info:
        parse(ionapi(saak=None, sask=None))
    message = str(info.value)
    assert "no service account ('saak'/'sask')" in message
    assert "download the file with 'Create Service Account' checked" in message


def test_a_windows_bom_is_fine() -> None:
    assert parse_ionapi("\ufeff" + json.dumps(ionapi()), origin="x.ionapi").ti == "HALLORAN_PRD"


def test_missing_ot() -> None:
    with pytest.raises(IonApiError) as info:
        parse(ionapi(ot=None))
    assert str(info.value) == "halloran.ionapi: missing key 'ot' (token path)"


def test_not_json() -> None:
    with pytest.raises(IonApiError, match=r"^halloran\.ionapi: not valid JSON: .* at line 1, column \d+$"):
        parse_ionapi("{'ti': 'single quotes'}", origin="halloran.ionapi")
    with pytest.raises(
        IonApiError, match=r"^halloran\.ionapi: not valid \.ionapi: expected a JSON object, got an array"
    ):
        parse_ionapi("[1, 2]", origin="halloran.ionapi")


def test_bad_url() -> None:
    with pytest.raises(IonApiError) as info:
        parse(ionapi(iu="mingle-ionapi.example.com"))
    assert str(info.value) == "halloran.ionapi: 'iu' is not a URL"


def test_every_problem_in_one_message() -> None:
    with pytest.raises(IonApiError) as info:
        parse(ionapi(ot=None, iu="not a url", ti="", ci=42, sask=None, sc="Infor-ION extra"))
    message = str(info.value)
    assert message.startswith("halloran.ionapi: ")
    for part in (
        "missing key 'ot' (token path)",
        "'iu' is not a URL",
        "'ti' (tenant id) is empty",
        "'ci' (client id) must be a string, not a number",
        "'saak' without 'sask'",
    ):
        assert part in message
    assert message.count(";") == 4
    assert SECRET not in message


def test_scopes_as_a_string_are_split() -> None:
    assert parse(ionapi(sc="Infor-ION Infor-IDM")).sc == ["Infor-ION", "Infor-IDM"]


def test_masked_output() -> None:
    masked = parse(ionapi()).masked()
    assert masked["cs"] == "cs…"
    assert masked["sask"] == "sa…"
    assert masked["ci"] == "HALLORAN_PRD~abc123"
    assert masked["or"] == "revoke_token.oauth2"
    assert masked["sc"] == ["Infor-ION"]
    assert SECRET not in json.dumps(masked, ensure_ascii=False)
    assert SERVICE_SECRET not in json.dumps(masked, ensure_ascii=False)
    assert parse(ionapi(cs="short")).masked()["cs"] == "…"


def test_repr_shows_no_secrets() -> None:
    creds = parse(ionapi())
    for text in (repr(creds), str(creds), f"{creds}", repr([creds])):
        assert SECRET not in text
        assert SERVICE_SECRET not in text
        assert "HALLORAN_PRD~abc123" in text


def test_load_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "halloran.ionapi"
    path.write_text(json.dumps(ionapi()), encoding="utf-8-sig")
    assert load_ionapi(path).ci == "HALLORAN_PRD~abc123"
    path.write_text(json.dumps(ionapi(pu=None)))
    with pytest.raises(IonApiError, match=r"halloran\.ionapi: missing key 'pu' \(authorization server URL\)"):
        load_ionapi(path)
    with pytest.raises(IonApiError, match="cannot read"):
        load_ionapi(tmp_path / "absent.ionapi")
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(IonApiError, match="not UTF-8"):
        load_ionapi(path)
