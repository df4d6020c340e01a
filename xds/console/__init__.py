"""The read-only web console on the admin port (docs/console.md, issue 14 item 1)."""
