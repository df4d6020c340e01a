"""An Envoy xDS control plane.

The `xds-protos` distribution also installs a top-level ``xds`` package (the CNCF ``xds.core``/``xds.type``
protos that Envoy's generated code imports). Extending ``__path__`` lets both live under one name: our
modules and theirs never share a sub-package name (tests/unit/test_packaging.py checks that).
"""

import pkgutil

__path__ = pkgutil.extend_path(__path__, __name__)
