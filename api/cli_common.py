"""What the ``semrec`` commands share: the user-error type and its one-line exit, the port
check, the pseudonym key, the repository's data folder."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

import typer

REPO_DATA = Path(__file__).resolve().parent.parent / "data"
IndexOpt = Annotated[Path, typer.Option("--index", "-i", help="index directory")]


class UserError(Exception):
    """A mistake the user can fix; the message says how."""


def user_errors() -> tuple[type[Exception], ...]:
    """Exception types that always mean the input was wrong (imported only when something failed)."""
    from indexer.schema import CatalogFormatError, UnknownNameError
    from indexer.store import IndexMismatchError, IndexNotFoundError
    from ranker.artifacts import ModelsLoadError

    return UserError, CatalogFormatError, UnknownNameError, IndexNotFoundError, IndexMismatchError, ModelsLoadError


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _check_port(host: str, port: int) -> None:
    """UserError unless ``host:port`` can be listened on (uvicorn would only log and exit 1)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port} ({e.strerror}): choose another --port") from None


def _pseudonym_key(given: str | None) -> str:
    """The pseudonym key from the option, else the settings (SEMREC_PSEUDONYM_KEY / .env); none is
    a one-line error (user ids are stored only as a keyed hash of it)."""
    from pydantic import ValidationError

    from .settings import cli_settings

    try:
        return cli_settings(pseudonym_key=given).pseudonym_key
    except ValidationError as e:
        raise typer.BadParameter(e.errors()[0]["msg"].removeprefix("Value error, "),
                                 param_hint="--pseudonym-key") from None


def _print_rows(idx, labels, scores) -> None:
    for label, score in zip(labels, scores):
        if label >= 0:
            rec = idx.table.records[label]
            typer.echo(f"  {score:6.3f}  {rec['item_id']:<12} {rec['title'][:70]}")
