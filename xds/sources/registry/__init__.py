"""The registry-source engine (issue 13 section 1): what every watching registry source shares.

`engine` runs a registry (watch loops, publisher, outage and grace bookkeeping), `status` is the
SourceStatus every source reports, `documents` keeps the last valid version of each policy document.
A new registry is one package implementing `Registry` plus one row in xds/source_kinds.py.
"""

from xds.sources.registry.documents import PolicyDocuments
from xds.sources.registry.engine import Candidate, EngineConfig, Registry, RegistryEngine
from xds.sources.registry.status import Detail, ReportsStatus, SourceStatus

__all__ = ["Candidate", "Detail", "EngineConfig", "PolicyDocuments", "Registry", "RegistryEngine",
           "ReportsStatus", "SourceStatus"]
