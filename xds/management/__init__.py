"""The project's own management API (protos/xds/management), generated Python code by API version.

Named so that it never collides with the sub-packages xds-protos installs under the shared top-level
``xds`` package (annotations, core, data, service, type); see xds/__init__.py.
"""
