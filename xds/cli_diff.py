"""`xds diff` (issue 14 item 5): what candidate catalog/policy files would change, per node group and type,
against what the running server serves now (its management API's GetSnapshot) or against other files.

Exit codes (docs/operations.md "xds diff"): 0 no change, 1 changes, 2 error, so a CI step can gate on it.
The comparison itself is xds/diff.py; this module only obtains the two views.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from xds import settings as defaults
from xds.cli_output import add_output_argument, dump
from xds.cli_secrets import add_management_client_arguments, client_token
from xds.diff import GroupDiff, View, diff_group, diffs_to_dict, format_diffs, has_changes
from xds.translate.delivery import DEFAULT_XDS_CLUSTER
from xds.typeurls import PUSH_ORDER, SECRET, short_name

if TYPE_CHECKING:  # the pipeline is imported when a diff runs, not when any `xds` command parses its flags
    from xds.pipeline import World

EXIT_SAME = 0
EXIT_CHANGED = 1
EXIT_ERROR = 2

TYPE_ORDER = tuple(short_name(t) for t in PUSH_ORDER)
# Secrets are compared by name only: workload certificates are issued per process (by the server's CA, and
# by a throwaway CA here), and private keys are redacted on both sides (docs/security.md).
OPAQUE = frozenset({short_name(SECRET)})


class DiffError(Exception):
    """Something made the comparison impossible: a file that does not load, an unreachable server."""


def add_diff_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser],
                    env: dict[str, str]) -> None:
    diff = commands.add_parser(
        "diff", help="show what candidate files would change against the running server (or --against)",
        description="Exit status: 0 no change, 1 changes, 2 error (docs/operations.md \"xds diff\").")
    diff.add_argument("--config", action="append", type=Path, required=True, metavar="FILE",
                      help="candidate catalog/policy file (repeatable; together they are the whole "
                           "configuration, as `xds serve --config` reads it)")
    diff.add_argument("--against", action="append", type=Path, metavar="FILE",
                      help="compare against these files (repeatable) instead of the running server")
    diff.add_argument("--group", action="append", metavar="GROUP",
                      help="node group to compare (repeatable); default: every group with a connected "
                           "proxy (server) — required with --against")
    diff.add_argument("--type", action="append", choices=TYPE_ORDER, dest="types", metavar="TYPE",
                      help=f"compare only these types ({', '.join(TYPE_ORDER)}; repeatable), e.g. leave out "
                           "eds when the server's endpoints come from a registry")
    diff.add_argument("--xds-cluster-name", default=env.get("xds_cluster_name", DEFAULT_XDS_CLUSTER),
                      metavar="NAME", help="as the server's --xds-cluster-name, for the single-type and gRPC "
                                           f"snapshot variants (env {defaults.ENV_XDS_CLUSTER_NAME})")
    diff.add_argument("--summary", action="store_true", help="table output without the unified diffs")
    add_output_argument(diff)
    add_management_client_arguments(diff, env)


def load_world(paths: Sequence[Path], *, xds_cluster: str = DEFAULT_XDS_CLUSTER) -> World:
    """The World the server would build from `paths`, as `xds render` builds it.

    Workload certificates come from a throwaway development CA (they are never compared, OPAQUE).
    Raises PolicyError, OSError or ValueError naming the file.
    """
    from xds.model.catalog import merge_catalogs
    from xds.pipeline import World, with_tls_material
    from xds.pki.ca import generate_ca
    from xds.pki.workload import WorkloadIdentities
    from xds.policy.load import load_file
    from xds.policy.schema import merge_policies
    from xds.sources.tls_files import TlsFiles

    loaded = [load_file(path) for path in paths]
    world = World(catalog=merge_catalogs([c for c, _ in loaded]),
                  policy=merge_policies([p for _, p in loaded]),
                  workload=WorkloadIdentities(generate_ca("xds.local")), xds_cluster=xds_cluster)
    return with_tls_material(world, TlsFiles())


def view_of_world(world: World, key: str) -> View:
    """What the group (store key, cache/node.py) would be served from `world`, as canonical JSON."""
    from xds.pipeline import build_snapshot
    from xds.server.management import resource_json

    snapshot = build_snapshot(world, key)
    return {short_name(t): {name: resource_json(r) for name, r in snapshot.of_type(t).items()}
            for t in snapshot.versions}


async def _server_views(address: str, token: str | None, groups: Sequence[str] | None
                        ) -> dict[str, View]:
    from xds.status_view import GroupNotFoundError, ManagementQueryError, fetch_proxies, fetch_snapshot

    try:
        if not groups:
            # Store keys of live streams (group, client kind, locality: cache/node.py), in a stable order.
            groups = sorted({p.group for p in (await fetch_proxies(address, token=token)).proxies})
            if not groups:
                raise DiffError(f"no proxy is connected to the server at {address}: name the node group "
                                "to compare with --group")
        views: dict[str, View] = {}
        for group in groups:
            resp = await fetch_snapshot(address, group, token=token)
            view: dict[str, dict[str, str]] = {}
            for v in resp.versions:
                view.setdefault(short_name(v.type_url), {})
            for r in resp.resources:
                view.setdefault(short_name(r.type_url), {})[r.name] = r.json
            views[group] = view
    except GroupNotFoundError as exc:
        raise DiffError(f"management API at {address}: {exc}") from exc
    except ManagementQueryError as exc:
        raise DiffError(str(exc)) from exc
    return views


def _only(view: View, types: Sequence[str] | None) -> View:
    return view if not types else {t: v for t, v in view.items() if t in types}


def compute(args: argparse.Namespace, env: dict[str, str]) -> list[GroupDiff]:
    from xds.policy.errors import PolicyError

    try:
        candidate = load_world(args.config, xds_cluster=args.xds_cluster_name)
        if args.against:
            if not args.group:
                raise DiffError("--against needs the node groups to compare: give --group GROUP")
            current_world = load_world(args.against, xds_cluster=args.xds_cluster_name)
            current = {g: view_of_world(current_world, g) for g in args.group}
        else:
            current = asyncio.run(_server_views(args.management_address, client_token(args, env), args.group))
        return [diff_group(g, _only(view, args.types), _only(view_of_world(candidate, g), args.types),
                           type_order=TYPE_ORDER, opaque=OPAQUE)
                for g, view in current.items()]
    except PolicyError as exc:
        raise DiffError(str(exc)) from exc
    except (OSError, ValueError) as exc:
        raise DiffError(f"xds: error: {exc}") from exc


def run(args: argparse.Namespace, env: dict[str, str]) -> int:
    try:
        diffs = compute(args, env)
    except DiffError as exc:
        text = str(exc)
        print(text if text.startswith("xds") else f"xds: error: {text}", file=sys.stderr)
        return EXIT_ERROR
    if args.output == "table":
        print(format_diffs(diffs, summary_only=args.summary))
    else:
        sys.stdout.write(dump(diffs_to_dict(diffs), args.output))
    return EXIT_CHANGED if has_changes(diffs) else EXIT_SAME
