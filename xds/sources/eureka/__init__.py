"""The Eureka source: the instances of a Eureka (Spring Cloud Netflix) registry, issue 13 section 2.

Split by role like the Consul source: `client` does the HTTP with failover between servers, `parse` maps
Eureka's JSON to a registry copy and the model without any I/O (and applies deltas), `watcher` runs the poll
loop. docs/eureka.md is the operator's view.
"""
