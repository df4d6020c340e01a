"""The control plane's own load report API (protos/xds/load, issue 10), generated Python code by API version.

Named, like xds.management, so that it never collides with the sub-packages xds-protos installs under the
shared top-level ``xds`` package (see xds/__init__.py).
"""
