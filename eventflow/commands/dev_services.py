"""``eventflow dev push-service`` and ``eventflow dev mail-server``: local stand-ins for a browser's push service
and an SMTP relay, so a newcomer sees real web pushes and HTML email leave the worker (README.md, "HTML email
through a local SMTP server" and "Push notifications").

Both serve in the foreground on loopback (ports ``EVENTFLOW_DEV_PUSH_PORT``, 8095, and
``EVENTFLOW_DEV_SMTP_PORT``, 2525) until SIGTERM or SIGINT, print what arrives, and keep it in the
folder they are given; ``show`` prints what a folder holds, waiting for ``--expect`` arrivals.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from core.settings import DevStackSettings
from devstack import mail, webpush

_HOST = "127.0.0.1"


def _say(text: str = "") -> None:
    print(text, flush=True)


def _until_signalled(serve: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(stop)

    asyncio.run(run())
    return 0


# -- push service ------------------------------------------------------------------------------------

def _push_base_url() -> str:
    return f"http://{_HOST}:{DevStackSettings.load().push_port}"


def _describe(prepared: webpush.DevPushFolder) -> None:
    _say(f"VAPID key for the worker (made here, for development only; never use it elsewhere):\n"
         f"  EVENTFLOW_VAPID_PRIVATE_KEY_FILE={prepared.vapid_key_file}\n"
         f"  its public key, a site's applicationServerKey: {prepared.application_server_key}")
    _say("browsers subscribed with it (device API request bodies: POST /customers/ID/devices):")
    for path in prepared.device_files:
        _say(f"  {path}")


def _push_init(args: argparse.Namespace) -> int:
    _describe(webpush.prepare(Path(args.folder), _push_base_url()))
    return 0


def _show_push(record: dict[str, Any]) -> None:
    _say(f"[{record['browser']}] web push, TTL {record['ttl']} s, urgency {record['urgency']}, decrypted:")
    _say(f"  {json.dumps(record['payload'], ensure_ascii=False)}")


def _push_serve(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    port = DevStackSettings.load().push_port

    def ready(prepared: webpush.DevPushFolder) -> None:
        _describe(prepared)
        _say(f"push service on {prepared.base_url}: VAPID checked, payloads decrypted into "
             f"{folder / webpush.RECEIVED_FILE} (stop with Ctrl-C)")

    def refused(reason: str) -> None:
        print(f"refused a push: {reason}", file=sys.stderr, flush=True)

    return _until_signalled(lambda stop: webpush.serve(folder, port, stop, host=_HOST, on_push=_show_push,
                                                       on_refusal=refused, on_ready=ready))


def _push_show(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    found = webpush.wait_for_pushes(folder, args.expect, args.timeout)
    for record in found:
        _show_push(record)
    for refusal in webpush.refusals(folder):
        _say(f"refused at {refusal['at']}: {refusal['reason']}")
    _say(f"{len(found)} web push(es) in {folder / webpush.RECEIVED_FILE}")
    if len(found) < args.expect:
        print(f"eventflow: expected {args.expect} within {args.timeout:g} s", file=sys.stderr)
        return 1
    return 0


# -- mail server -------------------------------------------------------------------------------------

def _show_message(record: dict[str, Any]) -> None:
    _say(f"#{record['number']} from {record['from']} to {record['to']}: {record['subject']}")
    _say(f"  Message-ID: {record['message_id']}")
    if record["list_unsubscribe"]:
        _say(f"  List-Unsubscribe: {record['list_unsubscribe']}")
    _say(f"  {record['structure']}")
    for kind in ("text", "html"):
        if record[kind] is not None:
            _say(f"  --- {kind} part ---")
            for line in str(record[kind]).rstrip("\n").splitlines():
                _say(f"  {line}")
    _say(f"  (the whole message: {record['file']})")


def _mail_serve(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    port = DevStackSettings.load().smtp_port

    def ready() -> None:
        _say(f"SMTP server on {_HOST}:{port} (no TLS, no AUTH: EVENTFLOW_SMTP_SECURITY=none); each message kept in "
             f"{folder} (stop with Ctrl-C)")

    return _until_signalled(lambda stop: mail.serve(folder, port, stop, host=_HOST, on_message=_show_message,
                                                    on_ready=ready))


def _mail_show(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    found = mail.wait_for_messages(folder, args.expect, args.timeout)
    for record in found:
        _show_message(record)
    _say(f"{len(found)} message(s) in {folder / mail.RECEIVED_FILE}")
    if len(found) < args.expect:
        print(f"eventflow: expected {args.expect} within {args.timeout:g} s", file=sys.stderr)
        return 1
    return 0


def _show_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--expect", type=int, default=0, metavar="N",
                        help=f"wait until at least N {what} have arrived; exit 1 if fewer did")
    parser.add_argument("--timeout", type=float, default=90.0, metavar="SECONDS",
                        help="how long --expect waits (default 90)")


def register(dev: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``dev push-service init|serve|show`` and ``dev mail-server serve|show``."""
    push = dev.add_parser("push-service", help="a local Web Push service that checks VAPID and decrypts each push "
                                               "(init, serve, show)")
    _commands(push, "push_action", "the service's folder (keys, browsers, pushes)", "pushes", (
        ("init", _push_init, "make the folder's dev VAPID key and browsers (kept if present); print the files"),
        ("serve", _push_serve, "serve on 127.0.0.1:EVENTFLOW_DEV_PUSH_PORT (8095) until stopped, "
                               "printing each decrypted push"),
        ("show", _push_show, "print the pushes the folder's service took")))
    smtp = dev.add_parser("mail-server", help="a local SMTP server that keeps every message (serve, show)")
    _commands(smtp, "mail_action", "where the messages are kept", "messages", (
        ("serve", _mail_serve, "serve SMTP on 127.0.0.1:EVENTFLOW_DEV_SMTP_PORT (2525) until stopped, "
                               "printing each message"),
        ("show", _mail_show, "print the messages the folder's server kept")))


def _commands(parser: argparse.ArgumentParser, dest: str, folder_help: str, shown: str,
              commands: tuple[tuple[str, Any, str], ...]) -> None:
    """One service's subcommands, each on a folder; ``show`` also takes the options of `_show_options`."""
    actions = parser.add_subparsers(dest=dest, title="commands", metavar="COMMAND")
    for name, handler, text in commands:
        command = actions.add_parser(name, help=text)
        command.add_argument("folder", metavar="DIR", help=folder_help)
        if name == "show":
            _show_options(command, shown)
        command.set_defaults(handler=handler)
