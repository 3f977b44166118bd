"""The control operations behind every door (the HTTP API, the `baton` CLI, var/control.json):
the halt protocol, slot edits, worker lifecycle, the audit stream and the read model."""
