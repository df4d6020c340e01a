"""The live demo behind `make demo`: a canary of `web` shifted from v1 to v2 by editing a catalog file.

Theory of operation: everything the demo starts is real and talks over loopback only. Three upstream HTTP
servers (`web-v1`, `web-v2`, `api`) run in this process; the control plane runs as a child process serving
`.demo/catalog.yaml`; two Envoys in two node groups (`edge-1`, `edge-2`) bootstrap against it. Steady load
goes through both Envoys while the demo rewrites the catalog's route weights, exactly as an operator would
with an editor, and watches each Envoy's admin interface until it runs the new weights. The gap between the
file edit and the moment both Envoys hold the new route is the user-visible convergence time.

One thread (the caller's) does all the watching and drawing, in a single bounded loop of short ticks; the
harness's own threads send the load and serve the upstreams. Load runs in segments of at most `SEGMENT_S`
seconds, each tallied into per-phase counts when it ends, so memory stays flat however long the demo runs.

The package is split by role: `catalog` (the file the demo edits), `controlplane` and `envoys` (the
processes and what each one runs), `upstreams` (the three HTTP upstreams; also `python -m harness.demo
upstreams` on the fixed ports of examples/catalog.yaml, for the README tour), `traffic` (the load),
`ledger` (phases and counts), `screen` (the view), `summary` (the closing table and JSON line), `runner`
(the `Demo` that owns it all) and `__main__`.

The last line of output is always `DEMO-SUMMARY <json>`, so scripts and tests can read the outcome.
"""

from harness.demo.constants import SUMMARY_MARKER, WORKDIR_NAME
from harness.demo.runner import Demo, Options

__all__ = ["SUMMARY_MARKER", "WORKDIR_NAME", "Demo", "Options"]
